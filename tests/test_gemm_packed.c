/* The CPU backend's packed GEMMs (kernels/cpu/packed_cpu.c, gemm_*.c):
 *
 * - dispatch: the kernel level each compute type gets from CPUID and from
 *   SPECTRAL_CPU_ISA, and which levels this machine runs;
 * - exactness: every level that runs here (portable C, AVX2, AVX-512 when
 *   the CPU has it, and the AVX-512 code emulated in C everywhere) against
 *   an independent reference of backend.h's arithmetic, written below from
 *   its statement: bit for bit, for F32, INT8 (Q8_0 and Q4_0 weights) and
 *   BF16, on shapes with ragged rows, ragged output panels and inner
 *   dimensions longer than one chunk, alone and accumulating;
 * - tolerance: INT8 and BF16 against the exact product (double) within the
 *   bounds docs/precision.md states, F32 against OpenBLAS;
 * - the ops: linear_packed and ffn_block_packed equal to the same steps
 *   done one by one, bit-identical for 1 and 3 threads and for documents
 *   packed together or alone, at every level; bad arguments refused. */
#define _POSIX_C_SOURCE 200809L
#include "formats/gguf.h"
#include "formats/quant.h"
#include "kernels/backend.h"
#include "kernels/cpu/cpu_internal.h"
#include "kernels/cpu/packed_cpu.h"

#include <cblas.h>
#include <float.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "check.h"

static const sp_kernel_level k_levels[] = {SP_KERNEL_C, SP_KERNEL_AVX2, SP_KERNEL_AVX512,
                                           SP_KERNEL_AVX512_EMULATED};
#define N_LEVELS 4

static sp_backend *backend(int n_threads) {
    char err[256] = "";
    sp_backend *be = sp_backend_cpu_create(n_threads, err, sizeof err);
    CHECK(be, "create: %s", err);
    return be;
}

/* ------------------------------------------------------ the references */

/* backend.h's INT8 activation quantizer, written from its statement. */
static void ref_quantize(const float *x, int64_t IN, int8_t *q, float *dx) {
    for (int64_t b = 0; b < IN / 32; b++) {
        float a = 0.0f;
        for (int k = 0; k < 32; k++)
            if (fabsf(x[32 * b + k]) > a) a = fabsf(x[32 * b + k]);
        const float d = a / 127.0f;
        float inv = d != 0.0f ? 1.0f / d : 0.0f;
        if (inv == INFINITY) inv = 0.0f;
        dx[b] = d;
        for (int k = 0; k < 32; k++) {
            float v = nearbyintf(x[32 * b + k] * inv);
            q[32 * b + k] = (int8_t)(v > 127.0f ? 127.0f : v < -127.0f ? -127.0f : v);
        }
    }
}

/* IEEE half to float (the Q8_0/Q4_0 scales), from the format's definition. */
static float ref_half(uint16_t h) {
    const int e = (h >> 10) & 31, m = h & 1023;
    const float v = e == 0 ? ldexpf((float)m, -24) : e == 31 ? (m ? NAN : INFINITY) : ldexpf((float)(m | 1024), e - 25);
    return (h & 0x8000) ? -v : v;
}

/* A stored Q8_0/Q4_0 row's integers and scales (ggml's block layouts). */
static void ref_blocks(sp_weight_type t, const uint8_t *row, int64_t IN, int8_t *q, float *d) {
    for (int64_t b = 0; b < IN / 32; b++) {
        const uint8_t *blk = row + b * (t == SP_WEIGHT_Q8_0 ? 34 : 18);
        d[b] = ref_half((uint16_t)(blk[0] | blk[1] << 8));
        for (int k = 0; k < 32; k++)
            q[32 * b + k] = t == SP_WEIGHT_Q8_0 ? (int8_t)blk[2 + k]
                                                : (int8_t)((k < 16 ? blk[2 + k] & 15 : blk[2 + k - 16] >> 4) - 8);
    }
}

static float ref_flush(float v) { return fabsf(v) < FLT_MIN ? copysignf(0.0f, v) : v; }
static uint16_t ref_bf16(float f) {
    uint32_t u;
    memcpy(&u, &f, 4);
    if (isnan(f)) return (uint16_t)((u >> 16) | 0x40);
    if (fabsf(f) < FLT_MIN) return (uint16_t)((u >> 16) & 0x8000);
    const uint32_t lsb = (u >> 16) & 1;
    return (uint16_t)((u + 0x7fff + lsb) >> 16);
}
static float ref_f32(uint16_t b) {
    uint32_t u = (uint32_t)b << 16;
    float f;
    memcpy(&f, &u, 4);
    return f;
}

/* y[r, o] per backend.h, acc starting at y0 (or 0). Weights as floats for
 * F32 / BF16, as stored rows for INT8. */
static void ref_gemm(sp_compute c, sp_weight_type t, const void *W, int64_t OUT, int64_t IN,
                     const float *x, int64_t rows, const float *y0, float *y) {
    const int64_t nb = IN / 32, rb = (int64_t)sp_quant_row_bytes(t == SP_WEIGHT_Q4_0 ? SP_TENSOR_Q4_0 : SP_TENSOR_Q8_0, IN);
    int8_t *qx = malloc((size_t)IN), *qw = malloc((size_t)IN);
    float *dx = malloc((size_t)(nb + 1) * sizeof(float)), *dw = malloc((size_t)(nb + 1) * sizeof(float));
    for (int64_t r = 0; r < rows; r++) {
        const float *xr = x + r * IN;
        if (c == SP_COMPUTE_INT8) ref_quantize(xr, IN, qx, dx);
        for (int64_t o = 0; o < OUT; o++) {
            float acc = y0 ? y0[r * OUT + o] : 0.0f;
            if (c == SP_COMPUTE_F32) {
                for (int64_t k = 0; k < IN; k++) acc = fmaf(xr[k], ((const float *)W)[o * IN + k], acc);
            } else if (c == SP_COMPUTE_INT8) {
                ref_blocks(t, (const uint8_t *)W + o * rb, IN, qw, dw);
                for (int64_t b = 0; b < nb; b++) {
                    int32_t s = 0;
                    for (int k = 0; k < 32; k++) s += qx[32 * b + k] * qw[32 * b + k];
                    acc = fmaf((float)s, dw[b] * dx[b], acc);
                }
            } else {
                const float *w = (const float *)W + o * IN;
                acc = ref_flush(acc);
                for (int64_t i = 0; 2 * i < IN; i++) {
                    const float xe = ref_f32(ref_bf16(xr[2 * i])), we = ref_f32(ref_bf16(w[2 * i]));
                    const float xo = 2 * i + 1 < IN ? ref_f32(ref_bf16(xr[2 * i + 1])) : 0.0f;
                    const float wo = 2 * i + 1 < IN ? ref_f32(ref_bf16(w[2 * i + 1])) : 0.0f;
                    acc = ref_flush(fmaf(ref_flush(xo), ref_flush(wo), acc));
                    acc = ref_flush(fmaf(ref_flush(xe), ref_flush(we), acc));
                }
            }
            y[r * OUT + o] = acc;
        }
    }
    free(qx);
    free(qw);
    free(dx);
    free(dw);
}

/* ---------------------------------------------------------- dispatch */

static void test_dispatch(void) {
    const sp_cpu_features *f = sp_cpu_features_get();
    char flags[256];
    sp_cpu_features_string(flags, sizeof flags);
    printf("cpu flags: %s\n", flags);
    unsetenv("SPECTRAL_CPU_ISA");
    const sp_kernel_level cap = sp_cpu_kernel_cap();
    const int avx2 = f->avx2 && f->fma;
    CHECK(cap == (avx2 ? (f->avx512f && f->avx512bw && f->avx512vl ? SP_KERNEL_AVX512 : SP_KERNEL_AVX2)
                       : SP_KERNEL_C));
    const int want_q8 = avx2 && f->avx512f && f->avx512bw && f->avx512vl && f->avx512_vnni ? SP_KERNEL_AVX512
                        : avx2                                                              ? SP_KERNEL_AVX2
                                                                                            : SP_KERNEL_C;
    const int want_bf = avx2 && f->avx512f && f->avx512bw && f->avx512vl && f->avx512_bf16 ? SP_KERNEL_AVX512
                        : avx2                                                              ? SP_KERNEL_AVX2
                                                                                            : SP_KERNEL_C;
    CHECK(sp_packed_level_for(SP_COMPUTE_INT8, cap) == want_q8);
    CHECK(sp_packed_level_for(SP_COMPUTE_BF16, cap) == want_bf);
    CHECK(sp_packed_level_for(SP_COMPUTE_F32, cap) == (avx2 ? SP_KERNEL_AVX2 : -1));
    printf("kernels here: int8 %s, bf16 %s, f32 %s\n", sp_kernel_level_name((sp_kernel_level)want_q8),
           sp_kernel_level_name((sp_kernel_level)want_bf), avx2 ? "avx2" : "OpenBLAS");
    /* the cap never raises a level, and c switches every packed kernel to C */
    setenv("SPECTRAL_CPU_ISA", "c", 1);
    CHECK(sp_cpu_kernel_cap() == SP_KERNEL_C);
    CHECK(sp_packed_level_for(SP_COMPUTE_INT8, sp_cpu_kernel_cap()) == SP_KERNEL_C);
    CHECK(sp_packed_level_for(SP_COMPUTE_F32, sp_cpu_kernel_cap()) == -1);
    sp_backend *be = backend(1);
    float w[16 * 32];
    test_fill(w, 16 * 32, 1.0f, 0.0f);
    sp_packed *rows = be ? be->ops->pack_weight(be, SP_WEIGHT_F32, w, 16, 32, SP_COMPUTE_F32) : NULL;
    CHECK(rows && rows->rows_layout && rows->w == (void *)w && !rows->owns_w,
          "F32 without the AVX2 kernel: the caller's rows, for OpenBLAS");
    CHECK(be && be->ops->packed_size(be, SP_WEIGHT_F32, 16, 32, SP_COMPUTE_F32) < 256, "nothing copied");
    CHECK(be && be->ops->packed_size(be, SP_WEIGHT_Q8_0, 16, 32, SP_COMPUTE_INT8) > 0);
    if (rows) be->ops->packed_free(be, rows);
    if (be) be->ops->destroy(be);
    setenv("SPECTRAL_CPU_ISA", "avx2", 1);
    CHECK(sp_cpu_kernel_cap() == (avx2 ? SP_KERNEL_AVX2 : SP_KERNEL_C));
    setenv("SPECTRAL_CPU_ISA", "avx512", 1);
    CHECK(sp_cpu_kernel_cap() == cap, "a cap above the CPU changes nothing");
    unsetenv("SPECTRAL_CPU_ISA");
    CHECK(sp_packed_level_available(SP_COMPUTE_INT8, SP_KERNEL_AVX512_EMULATED));
    CHECK(sp_packed_level_available(SP_COMPUTE_BF16, SP_KERNEL_AVX512_EMULATED));
    CHECK(!sp_packed_level_available(SP_COMPUTE_F32, SP_KERNEL_C));
    CHECK(sp_packed_level_available(SP_COMPUTE_INT8, SP_KERNEL_AVX512) == (want_q8 == SP_KERNEL_AVX512));
    CHECK(sp_packed_level_available(SP_COMPUTE_BF16, SP_KERNEL_AVX512) == (want_bf == SP_KERNEL_AVX512));
    if (want_q8 != SP_KERNEL_AVX512 || want_bf != SP_KERNEL_AVX512)
        printf("note: the AVX-512 VNNI / BF16 instructions are not on this CPU: their code ran emulated only\n");
}

/* ---------------------------------------------------- kernels, exactly */

typedef struct {
    int64_t rows, OUT, IN;
} shape;

/* Random weights of a type: floats, and the stored form (Q8_0/Q4_0 rows). */
static void *make_weights(sp_weight_type t, int64_t OUT, int64_t IN, float *wf) {
    test_fill(wf, OUT * IN, 0.5f, 0.0f);
    for (int64_t i = 0; i < OUT * IN; i += 7) wf[i] *= 3.0f; /* uneven magnitudes */
    if (t == SP_WEIGHT_F32) return wf;
    const int tt = t == SP_WEIGHT_Q8_0 ? SP_TENSOR_Q8_0 : SP_TENSOR_Q4_0;
    const size_t rb = sp_quant_row_bytes(tt, IN);
    uint8_t *q = malloc(rb * (size_t)OUT);
    for (int64_t o = 0; o < OUT; o++) sp_quantize_row(tt, wf + o * IN, q + rb * (size_t)o, IN);
    /* wf becomes the decoded weights: the model's actual values */
    for (int64_t o = 0; o < OUT; o++) sp_dequantize_row(tt, q + rb * (size_t)o, wf + o * IN, IN);
    return q;
}

static int bits_equal(const float *a, const float *b, int64_t n) { return !memcmp(a, b, (size_t)n * sizeof(float)); }

/* Runs the packed GEMM of one level as the tile code does. */
static void run_level(sp_kernel_level level, const sp_packed *P, const float *x, int64_t rows,
                      float *y, int accumulate) {
    const int64_t IN = P->cols;
    sp_gemm_args a = {P, x, IN, NULL};
    int8_t *q = NULL;
    float *dx = NULL;
    uint16_t *xb = NULL;
    if (P->compute == SP_COMPUTE_INT8) {
        q = malloc((size_t)(rows * IN));
        dx = malloc((size_t)(rows * (IN / 32)) * sizeof(float));
        sp_q8_quantize_rows(rows, IN, x, IN, q, dx);
        a.x = q;
        a.dx = dx;
    } else if (P->compute == SP_COMPUTE_BF16) {
        xb = malloc((size_t)(rows * P->cols_pad) * sizeof(uint16_t));
        sp_bf16_convert_rows(rows, IN, x, IN, xb);
        a.x = xb;
        a.ldx = P->cols_pad;
    }
    sp_packed_gemm(level, &a, rows, y, P->rows, accumulate);
    free(q);
    free(dx);
    free(xb);
}

static void test_exact(sp_compute c, sp_weight_type t) {
    static const shape shapes[] = {{1, 16, 32}, {7, 33, 64}, {13, 50, 544}, {128, 40, 288}, {5, 17, 1056}};
    sp_backend *be = backend(1);
    if (!be) return;
    for (size_t si = 0; si < sizeof shapes / sizeof shapes[0]; si++) {
        const int64_t rows = shapes[si].rows, OUT = shapes[si].OUT;
        /* BF16 also on an odd inner dimension (the zero pad) */
        const int64_t IN = c == SP_COMPUTE_BF16 && t == SP_WEIGHT_F32 && si == 1 ? 63 : shapes[si].IN;
        float *wf = malloc((size_t)(OUT * IN) * sizeof(float));
        void *W = make_weights(t, OUT, IN, wf);
        float *x = malloc((size_t)(rows * IN) * sizeof(float));
        test_fill(x, rows * IN, 1.0f, 0.0f);
        for (int64_t i = 0; i < rows * IN; i += 11) x[i] *= 9.0f;
        if (rows > 3) memset(x + 2 * IN, 0, (size_t)IN * sizeof(float)); /* an all-zero row */
        float *y0 = malloc((size_t)(rows * OUT) * sizeof(float)), *ref = malloc((size_t)(rows * OUT) * sizeof(float));
        float *ref_acc = malloc((size_t)(rows * OUT) * sizeof(float)), *got = malloc((size_t)(rows * OUT) * sizeof(float));
        test_fill(y0, rows * OUT, 2.0f, 0.0f);
        ref_gemm(c, t, c == SP_COMPUTE_INT8 ? W : wf, OUT, IN, x, rows, NULL, ref);
        ref_gemm(c, t, c == SP_COMPUTE_INT8 ? W : wf, OUT, IN, x, rows, y0, ref_acc);
        sp_packed *P = be->ops->pack_weight(be, t, W, OUT, IN, c);
        CHECK(P, "pack: %s", be->err);
        for (int li = 0; P && !P->rows_layout && li < N_LEVELS; li++) {
            if (!sp_packed_level_available(c, k_levels[li])) continue;
            for (int acc = 0; acc < 2; acc++) {
                if (acc) memcpy(got, y0, (size_t)(rows * OUT) * sizeof(float));
                else for (int64_t i = 0; i < rows * OUT; i++) got[i] = NAN; /* every output written */
                run_level(k_levels[li], P, x, rows, got, acc);
                CHECK(bits_equal(got, acc ? ref_acc : ref, rows * OUT),
                      "compute %d type %d level %s shape %lld x %lld x %lld%s: not bit-identical to the reference",
                      (int)c, (int)t, sp_kernel_level_name(k_levels[li]), (long long)rows, (long long)OUT,
                      (long long)IN, acc ? " accumulating" : "");
            }
        }
        if (P) be->ops->packed_free(be, P);
        if (W != wf) free(W);
        free(wf);
        free(x);
        free(y0);
        free(ref);
        free(ref_acc);
        free(got);
    }
    be->ops->destroy(be);
}

/* Extreme activations: a block with one huge value (others round to 0), a
 * block of tiny values near the float minimum, infinities kept out. */
static void test_q8_edges(void) {
    const int64_t IN = 96, OUT = 16, rows = 3;
    float wf[16 * 96], x[3 * 96], ref[48], got[48];
    test_fill(wf, OUT * IN, 1.0f, 0.0f);
    void *W = make_weights(SP_WEIGHT_Q8_0, OUT, IN, wf);
    test_fill(x, rows * IN, 1.0f, 0.0f);
    x[5] = 1e30f;
    for (int k = 32; k < 64; k++) x[k] = 1e-38f * (float)(k - 48);
    for (int k = 96; k < 128; k++) x[k] = -x[k];
    ref_gemm(SP_COMPUTE_INT8, SP_WEIGHT_Q8_0, W, OUT, IN, x, rows, NULL, ref);
    sp_backend *be = backend(1);
    sp_packed *P = be ? be->ops->pack_weight(be, SP_WEIGHT_Q8_0, W, OUT, IN, SP_COMPUTE_INT8) : NULL;
    for (int li = 0; P && li < N_LEVELS; li++) {
        if (!sp_packed_level_available(SP_COMPUTE_INT8, k_levels[li])) continue;
        run_level(k_levels[li], P, x, rows, got, 0);
        CHECK(bits_equal(got, ref, rows * OUT), "edge activations, level %s", sp_kernel_level_name(k_levels[li]));
        for (int i = 0; i < rows * OUT; i++) CHECK(isfinite(got[i]));
    }
    if (P) be->ops->packed_free(be, P);
    if (be) be->ops->destroy(be);
    free(W);
}

/* The activation quantizers: C and AVX2 give the same bytes and scales,
 * NaN, infinities, signed zeros and tiny blocks included, and equal the
 * reference on finite rows. */
static void test_quantizers(void) {
    enum { IN = 256, ROWS = 6 };
    static float x[ROWS * IN];
    static int8_t qc[ROWS * IN], qa[ROWS * IN], qr[IN];
    float dc[ROWS * IN / 32], da[ROWS * IN / 32], dr[IN / 32];
    test_fill(x, ROWS * IN, 3.0f, 0.0f);
    for (int k = 0; k < IN; k += 5) x[k] = (float)(k % 7) - 3.0f; /* exact ties after scaling, some */
    x[IN + 3] = NAN;
    x[IN + 40] = INFINITY;
    x[IN + 70] = -INFINITY;
    for (int k = 0; k < 32; k++) x[2 * IN + k] = -0.0f;
    for (int k = 32; k < 64; k++) x[2 * IN + k] = 1e-39f * (float)(k - 40);
    for (int k = 64; k < 96; k++) x[2 * IN + k] = 3e38f * (k & 1 ? 1.0f : -1.0f);
    sp_q8_quantize_rows(ROWS, IN, x, IN, qc, dc);
    if (sp_packed_level_available(SP_COMPUTE_INT8, SP_KERNEL_AVX2)) {
        sp_q8_quantize_rows_avx2(ROWS, IN, x, IN, qa, da);
        CHECK(!memcmp(qc, qa, sizeof qc) && !memcmp(dc, da, sizeof dc), "C and AVX2 quantizers differ");
    }
    for (int r = 0; r < ROWS; r++) {
        if (r == 1) continue; /* NaN and infinities: no reference */
        ref_quantize(x + r * IN, IN, qr, dr);
        CHECK(!memcmp(qr, qc + r * IN, IN) && !memcmp(dr, dc + r * (IN / 32), sizeof dr), "row %d vs the reference", r);
    }
}

/* BF16 denormals: inputs that round to denormals read as 0, results below
 * the float minimum flushed to 0, the conversion's rounding and NaN. */
static void test_bf16_rules(void) {
    CHECK(sp_bf16_from_f32(1.0f) == 0x3f80);
    CHECK(sp_bf16_from_f32(1.00390625f) == 0x3f80, "a tie rounds to even");
    CHECK(sp_bf16_from_f32(1.01171875f) == 0x3f82, "a tie rounds to even (up)");
    CHECK(sp_bf16_from_f32(1e-39f) == 0x0000 && sp_bf16_from_f32(-1e-39f) == 0x8000, "denormals to signed zero");
    CHECK((sp_bf16_from_f32(NAN) & 0x7fc0) == 0x7fc0, "NaN stays a quiet NaN");
    CHECK(sp_bf16_from_f32(3.4e38f) == 0x7f80, "past the largest bfloat16: infinity");
    const uint16_t tiny = 0x0080; /* 2^-126, the smallest normal */
    CHECK(sp_bf16_dot2(0.0f, tiny, 0, tiny, 0) == 0.0f, "2^-252 flushes to zero");
    CHECK(sp_bf16_dot2(1e-39f, 0, 0, 0, 0) == 0.0f, "a denormal accumulator reads as zero");
    CHECK(sp_bf16_dot2(1.0f, 0x3f80, 0x4000, 0x4000, 0x3f80) == 5.0f, "1 + 2*1 + 1*2");
}

/* ------------------------------------------------------- tolerances */

/* INT8 against the exact product of x and the (dequantized) weights: each
 * activation moves by at most half its block's step dx / 2, so
 *   |y - y_exact| <= sum_b dx_b / 2 * sum_{k in b} |W[o][k]| + rounding,
 * rounding <= (nb + 1) * 2^-24 * sum_k |x_k W[o][k]| (float steps). BF16:
 * each operand moves by at most 2^-9 relative, so
 *   |y - y_exact| <= (2^-8 + 2^-18 + (IN + 2) * 2^-24) * sum_k |x_k W[o][k]|.
 * F32: (IN + 1) * 2^-24 * sum |x_k W[o][k]|, and against OpenBLAS twice that. */
static void test_tolerance(void) {
    const int64_t rows = 64, OUT = 48, IN = 1024;
    float *wf = malloc((size_t)(OUT * IN) * sizeof(float)), *x = malloc((size_t)(rows * IN) * sizeof(float));
    float *got = malloc((size_t)(rows * OUT) * sizeof(float)), *blas = malloc((size_t)(rows * OUT) * sizeof(float));
    test_fill(x, rows * IN, 1.0f, 0.2f);
    sp_backend *be = backend(1);
    for (int ci = 0; be && ci < 3; ci++) {
        const sp_compute c = (sp_compute)ci;
        const sp_weight_type t = c == SP_COMPUTE_INT8 ? SP_WEIGHT_Q8_0 : SP_WEIGHT_F32;
        void *W = make_weights(t, OUT, IN, wf);
        sp_packed *P = be->ops->pack_weight(be, t, W, OUT, IN, c);
        CHECK(P, "pack: %s", be->err);
        if (!P || P->rows_layout) { /* OpenBLAS rows: nothing of ours to bound */
            if (P) be->ops->packed_free(be, P);
            if (W != wf) free(W);
            continue;
        }
        run_level((sp_kernel_level)sp_packed_level_for(c, sp_cpu_kernel_level(be)), P, x, rows, got, 0);
        double worst = 0.0;
        for (int64_t r = 0; r < rows; r++) {
            int8_t q[1024];
            float dx[32];
            ref_quantize(x + r * IN, IN, q, dx);
            for (int64_t o = 0; o < OUT; o++) {
                double exact = 0.0, mag = 0.0, quant = 0.0;
                for (int64_t k = 0; k < IN; k++) {
                    exact += (double)x[r * IN + k] * wf[o * IN + k];
                    mag += fabs((double)x[r * IN + k] * wf[o * IN + k]);
                    quant += 0.5 * dx[k / 32] * fabs((double)wf[o * IN + k]);
                }
                const double bound = c == SP_COMPUTE_INT8 ? quant + (IN / 32 + 1) * 0x1p-24 * mag
                                     : c == SP_COMPUTE_BF16 ? (0x1p-8 + 0x1p-18 + (IN + 2) * 0x1p-24) * mag
                                                            : (IN + 1) * 0x1p-24 * mag;
                const double err = fabs(got[r * OUT + o] - exact);
                CHECK(err <= bound, "compute %d: |y - exact| = %g over the bound %g", ci, err, bound);
                if (err / bound > worst) worst = err / bound;
            }
        }
        printf("compute %d: worst error %.3f of the stated bound\n", ci, worst);
        if (c == SP_COMPUTE_F32) {
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, (int)rows, (int)OUT, (int)IN, 1.0f, x,
                        (int)IN, wf, (int)IN, 0.0f, blas, (int)OUT);
            for (int64_t r = 0; r < rows; r++)
                for (int64_t o = 0; o < OUT; o++) {
                    double mag = 0.0;
                    for (int64_t k = 0; k < IN; k++) mag += fabs((double)x[r * IN + k] * wf[o * IN + k]);
                    CHECK(fabs(got[r * OUT + o] - blas[r * OUT + o]) <= 2 * (IN + 1) * 0x1p-24 * mag);
                }
        }
        be->ops->packed_free(be, P);
        if (W != wf) free(W);
    }
    if (be) be->ops->destroy(be);
    free(wf);
    free(x);
    free(got);
    free(blas);
}

/* ------------------------------------------------------------- the ops */

static void layer_norm_ref(const float *x, const float *w, const float *b, int64_t T, int64_t D, float *out) {
    sp_backend *be = backend(1);
    be->ops->layer_norm(be, x, w, b, 1e-5f, T, D, out);
    be->ops->destroy(be);
}

/* ffn_block_packed against its steps through the public ops, and its
 * invariance to threads, levels and packing of documents. */
static void test_ops(sp_compute c, sp_weight_type t) {
    const int64_t D = 96, F = 160;
    const int64_t offsets[4] = {0, 150, 151, 300}; /* three documents, one of one row */
    const int64_t T = offsets[3];
    float *wu = malloc((size_t)(F * D) * sizeof(float)), *wd = malloc((size_t)(D * F) * sizeof(float));
    void *Wu = make_weights(t, F, D, wu), *Wd = make_weights(t, D, F, wd);
    float ln_w[96], ln_b[96], b_up[160], b_down[96];
    test_fill(ln_w, D, 0.2f, 1.0f);
    test_fill(ln_b, D, 0.1f, 0.0f);
    test_fill(b_up, F, 0.1f, 0.0f);
    test_fill(b_down, D, 0.1f, 0.0f);
    float *h0 = malloc((size_t)(T * D) * sizeof(float)), *h = malloc((size_t)(T * D) * sizeof(float));
    float *want = malloc((size_t)(T * D) * sizeof(float)), *x = malloc((size_t)(T * D) * sizeof(float));
    float *hid = malloc((size_t)(T * F) * sizeof(float));
    test_fill(h0, T * D, 2.0f, 0.5f);

    sp_backend *be1 = backend(1), *be3 = backend(3);
    if (!be1 || !be3) return;

    sp_packed *up = be1->ops->pack_weight(be1, t, Wu, F, D, c), *down = be1->ops->pack_weight(be1, t, Wd, D, F, c);
    CHECK(up && down, "pack: %s", be1->err);
    if (!up || !down) return;
    CHECK(up->bytes == be1->ops->packed_size(be1, t, F, D, c));

    /* the steps one by one on one thread, at the backend's own level */
    layer_norm_ref(h0, ln_w, ln_b, T, D, x);
    size_t wsz = be1->ops->linear_packed_workspace_size(be1, up, T);
    if (be1->ops->linear_packed_workspace_size(be1, down, T) > wsz) wsz = be1->ops->linear_packed_workspace_size(be1, down, T);
    void *lws = malloc(wsz + 1);
    memcpy(want, h0, (size_t)(T * D) * sizeof(float));
    for (int i = 0; i < 3; i++) {
        const int64_t r0 = offsets[i], n = offsets[i + 1] - r0;
        CHECK(be1->ops->linear_packed(be1, x + r0 * D, up, b_up, n, SP_ACT_GELU, 0, lws, hid + r0 * F) == 0, "%s", be1->err);
        CHECK(be1->ops->linear_packed(be1, hid + r0 * F, down, b_down, n, SP_ACT_NONE, 1, lws, want + r0 * D) == 0, "%s", be1->err);
    }
    sp_backend *bes[2] = {be1, be3};
    for (int bi = 0; bi < 2; bi++) {
        sp_backend *be = bes[bi];
        const sp_kernel_level own = sp_cpu_kernel_level(be);
        for (int li = 0; li < N_LEVELS; li++) {
            if (!sp_packed_level_available(c, k_levels[li])) continue;
            sp_cpu_set_kernel_level(be, k_levels[li]);
            /* packed together */
            const size_t ws_size = be->ops->ffn_block_packed_workspace_size(be, up, down, offsets, 3);
            void *ws = malloc(ws_size);
            memcpy(h, h0, (size_t)(T * D) * sizeof(float));
            CHECK(be->ops->ffn_block_packed(be, h, ln_w, ln_b, 1e-5f, up, b_up, SP_ACT_GELU, down, b_down,
                                            offsets, 3, ws) == 0, "%s", be->err);
            CHECK(bits_equal(h, want, T * D), "ffn_block_packed (compute %d, %d threads, level %s) differs from its steps",
                  (int)c, be->n_threads, sp_kernel_level_name(k_levels[li]));
            free(ws);
            /* each document alone */
            for (int i = 0; i < 3; i++) {
                const int64_t one[2] = {0, offsets[i + 1] - offsets[i]};
                void *w1 = malloc(be->ops->ffn_block_packed_workspace_size(be, up, down, one, 1));
                float *hi = h + offsets[i] * D;
                memcpy(hi, h0 + offsets[i] * D, (size_t)(one[1] * D) * sizeof(float));
                be->ops->ffn_block_packed(be, hi, ln_w, ln_b, 1e-5f, up, b_up, SP_ACT_GELU, down, b_down, one, 1, w1);
                free(w1);
            }
            CHECK(bits_equal(h, want, T * D), "documents alone differ from packed (compute %d)", (int)c);
        }
        sp_cpu_set_kernel_level(be, own);
    }
    /* refused: a shape that does not chain, NULL weights, a missing workspace */
    CHECK(be1->ops->ffn_block_packed(be1, h, ln_w, ln_b, 1e-5f, up, b_up, SP_ACT_GELU, up, b_down, offsets, 3, lws) != 0);
    CHECK(be1->ops->ffn_block_packed(be1, h, ln_w, ln_b, 1e-5f, NULL, b_up, SP_ACT_GELU, down, b_down, offsets, 3, lws) != 0);
    CHECK(be1->ops->linear_packed(be1, x, NULL, NULL, 4, SP_ACT_NONE, 0, lws, hid) != 0);
    if (c != SP_COMPUTE_F32)
        CHECK(be1->ops->linear_packed(be1, x, up, NULL, 4, SP_ACT_NONE, 0, NULL, hid) != 0, "no workspace");
    CHECK(be1->ops->linear_packed(be1, x, up, NULL, 4, SP_ACT_GELU, 1, lws, hid) != 0, "accumulate with GELU");
    be1->ops->packed_free(be1, up);
    be1->ops->packed_free(be1, down);
    be1->ops->destroy(be1);
    be3->ops->destroy(be3);
    free(lws);
    if (Wu != wu) free(Wu);
    if (Wd != wd) free(Wd);
    free(wu);
    free(wd);
    free(h0);
    free(h);
    free(want);
    free(x);
    free(hid);
}

static void test_refusals(void) {
    sp_backend *be = backend(1);
    if (!be) return;
    float w[64] = {0};
    CHECK(be->ops->packed_size(be, SP_WEIGHT_F32, 2, 32, SP_COMPUTE_INT8) == 0, "INT8 needs Q8_0/Q4_0 weights");
    CHECK(be->ops->pack_weight(be, SP_WEIGHT_F32, w, 2, 32, SP_COMPUTE_INT8) == NULL && be->err[0]);
    CHECK(be->ops->pack_weight(be, SP_WEIGHT_Q8_0, NULL, 2, 32, SP_COMPUTE_INT8) == NULL);
    CHECK(be->ops->packed_size(be, SP_WEIGHT_F32, 0, 32, SP_COMPUTE_BF16) == 0);
    CHECK(be->ops->packed_size(be, SP_WEIGHT_Q8_0, 2, 33, SP_COMPUTE_INT8) == 0, "not whole blocks");
    be->ops->destroy(be);
}

int main(void) {
    test_dispatch();
    const struct {
        sp_compute c;
        sp_weight_type t;
    } kinds[] = {{SP_COMPUTE_F32, SP_WEIGHT_F32}, {SP_COMPUTE_F32, SP_WEIGHT_Q8_0},
                 {SP_COMPUTE_INT8, SP_WEIGHT_Q8_0}, {SP_COMPUTE_INT8, SP_WEIGHT_Q4_0},
                 {SP_COMPUTE_BF16, SP_WEIGHT_F32}, {SP_COMPUTE_BF16, SP_WEIGHT_Q4_0}};
    for (size_t i = 0; i < sizeof kinds / sizeof kinds[0]; i++) {
        test_exact(kinds[i].c, kinds[i].t);
        test_ops(kinds[i].c, kinds[i].t);
    }
    test_q8_edges();
    test_quantizers();
    test_bf16_rules();
    test_tolerance();
    test_refusals();
    return check_report("test_gemm_packed");
}
