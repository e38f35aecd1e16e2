/* The CPU backend's dequantize_rows op: ggml's Q8_0 and Q4_0 blocks decoded
 * to float32 (the layouts are stated in backend.h).
 *
 * Why the decoder is written here again rather than taken from
 * formats/quant.c: kernels depend on backend.h only (the layering rule), and
 * the decoder is a dozen lines whose result is fixed by the format — each
 * value is one float32 product d * q, with d an exactly converted f16 — so
 * this copy and formats/quant.c's give the same floats bit for bit (tested
 * end to end by tests/quantize.cmake's "compute" case against a float32
 * file written from formats/quant.c's decoding). A function pointer from
 * the runtime would have kept one copy but put a call per block in the loop
 * and a hook in the backend interface for a fixed format. */
#include <math.h>
#include <string.h>

#include "kernels/cpu/cpu_internal.h"

#define QK 32
#define Q8_0_BYTES 34
#define Q4_0_BYTES 18
/* Values decoded per task. Decoding runs at memory speed (measured on the
 * 2-core VM: a 1024 x 256 Q8_0 matrix in 0.04 ms on one thread, but 0.25 ms
 * when cut into 4 tasks over 2 threads: waking a worker costs more than the
 * work), so a task is large: the default model's matrices are one task on
 * the calling thread, and only matrices of millions of values spread. */
#define VALUES_PER_TASK (1 << 20)

/* IEEE half to float, exact (normals, subnormals, infinities, NaN). */
static float half_to_float(uint16_t h) {
    const uint32_t sign = (uint32_t)(h & 0x8000) << 16;
    const uint32_t exp = (h >> 10) & 0x1f, man = h & 0x3ff;
    uint32_t bits;
    if (exp == 0x1f) {
        bits = sign | 0x7f800000u | (man << 13);
    } else if (exp != 0) {
        bits = sign | ((exp + 112) << 23) | (man << 13);
    } else {
        /* zero or subnormal: man * 2^-24, exact in float */
        const float v = ldexpf((float)man, -24);
        memcpy(&bits, &v, sizeof bits);
        bits |= sign;
    }
    float f;
    memcpy(&f, &bits, sizeof f);
    return f;
}

/* Bytes are read one at a time: blocks are not 2-byte aligned. */
float sp_cpu_block_decode(sp_weight_type type, const uint8_t *b, int8_t q[QK]) {
    if (type == SP_WEIGHT_Q8_0) {
        memcpy(q, b + 2, QK);
    } else {
        for (int j = 0; j < QK / 2; j++) {
            q[j] = (int8_t)((b[2 + j] & 0x0f) - 8);
            q[j + QK / 2] = (int8_t)((b[2 + j] >> 4) - 8);
        }
    }
    return half_to_float((uint16_t)(b[0] | (b[1] << 8)));
}

/* The integers first, then one product per value: both loops vectorize
 * (Q4_0's floats straight from the nibbles ran 3x slower, measured). */
void sp_cpu_decode_row(sp_weight_type type, const void *src, int64_t n, float *y) {
    const uint8_t *b = src;
    for (int64_t i = 0; i < n / QK; i++, y += QK) {
        int8_t v[QK];
        const float d = sp_cpu_block_decode(type, b, v);
        for (int j = 0; j < QK; j++) y[j] = d * (float)v[j];
        b += type == SP_WEIGHT_Q8_0 ? Q8_0_BYTES : Q4_0_BYTES;
    }
}

typedef struct {
    sp_weight_type type;
    const uint8_t *src;
    size_t row_bytes;
    int64_t row_len, n_rows, rows_per_task;
    const int32_t *ids;
    float *dst;
} dq_job;

static void dq_task(void *arg, int64_t task, int worker) {
    (void)worker;
    const dq_job *j = arg;
    const int64_t r0 = task * j->rows_per_task;
    const int64_t r1 = r0 + j->rows_per_task < j->n_rows ? r0 + j->rows_per_task : j->n_rows;
    for (int64_t r = r0; r < r1; r++) {
        const int64_t row = j->ids ? (int64_t)j->ids[r] : r;
        sp_cpu_decode_row(j->type, j->src + (size_t)row * j->row_bytes, j->row_len, j->dst + r * j->row_len);
    }
}

int sp_cpu_dequantize_rows(sp_backend *be, sp_weight_type type, const void *src, int64_t row_len,
                           const int32_t *ids, int64_t n_rows, float *dst) {
    if (type != SP_WEIGHT_Q8_0 && type != SP_WEIGHT_Q4_0) {
        sp_cpu_set_err(be, "cpu dequantize_rows: unsupported weight type %d", (int)type);
        return 1;
    }
    if (row_len < 0 || n_rows < 0 || row_len % QK) {
        sp_cpu_set_err(be, "cpu dequantize_rows: bad shape row_len=%lld n_rows=%lld (row_len must be "
                           "a multiple of 32)", (long long)row_len, (long long)n_rows);
        return 1;
    }
    if (row_len == 0 || n_rows == 0) return 0;
    if (!src || !dst) {
        sp_cpu_set_err(be, "cpu dequantize_rows: NULL argument");
        return 1;
    }
    for (int64_t r = 0; ids && r < n_rows; r++) {
        if (ids[r] < 0) {
            sp_cpu_set_err(be, "cpu dequantize_rows: negative id %d at row %lld", (int)ids[r], (long long)r);
            return 1;
        }
    }
    dq_job j = {type, src, (size_t)(row_len / QK) * (type == SP_WEIGHT_Q8_0 ? Q8_0_BYTES : Q4_0_BYTES),
                row_len, n_rows, 0, ids, dst};
    j.rows_per_task = VALUES_PER_TASK / row_len > 0 ? VALUES_PER_TASK / row_len : 1;
    const int64_t tasks = (n_rows + j.rows_per_task - 1) / j.rows_per_task;
    sp_pool_run(sp_cpu_pool(be), tasks, sp_cpu_slots(be, tasks), dq_task, &j);
    return 0;
}
