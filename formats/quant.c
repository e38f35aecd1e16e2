/* ggml's Q8_0 and Q4_0 reference encoders and their decoders. Bytes are
 * written and read one at a time, so the code is endian-independent and
 * never does an unaligned load from a memory-mapped tensor (a block is 34 or
 * 18 bytes, so blocks are not 2-byte aligned in general). */
#include "formats/quant.h"

#include <math.h>

#include "formats/gguf.h"

int sp_quant_is_block_type(int type) { return type == SP_TENSOR_Q8_0 || type == SP_TENSOR_Q4_0; }

size_t sp_quant_row_bytes(int type, int64_t n) {
    if (n < 0 || n % SP_QK) return 0;
    if (type == SP_TENSOR_Q8_0) return (size_t)(n / SP_QK) * SP_Q8_0_BLOCK_BYTES;
    if (type == SP_TENSOR_Q4_0) return (size_t)(n / SP_QK) * SP_Q4_0_BLOCK_BYTES;
    return 0;
}

static void put_f16(uint8_t *p, float v) {
    const uint16_t h = sp_f32_to_fp16(v);
    p[0] = (uint8_t)(h & 0xff);
    p[1] = (uint8_t)(h >> 8);
}

static float get_f16(const uint8_t *p) { return sp_fp16_to_f32((uint16_t)(p[0] | (p[1] << 8))); }

/* quantize_row_q8_0_ref: d = max|x| / 127, q = roundf(x / d) using the
 * float reciprocal of the unrounded d, as ggml does. */
static void q8_0_block(const float *x, uint8_t *b) {
    float amax = 0.0f;
    for (int j = 0; j < SP_QK; j++) amax = fmaxf(amax, fabsf(x[j]));
    const float d = amax / 127.0f;
    const float id = d != 0.0f ? 1.0f / d : 0.0f;
    put_f16(b, d);
    for (int j = 0; j < SP_QK; j++) b[2 + j] = (uint8_t)(int8_t)roundf(x[j] * id);
}

/* quantize_row_q4_0_ref: the signed value of largest magnitude (the first
 * one on ties) maps to -8, d = max / -8. */
static void q4_0_block(const float *x, uint8_t *b) {
    float amax = 0.0f, max = 0.0f;
    for (int j = 0; j < SP_QK; j++) {
        if (amax < fabsf(x[j])) {
            amax = fabsf(x[j]);
            max = x[j];
        }
    }
    const float d = max / -8.0f;
    const float id = d != 0.0f ? 1.0f / d : 0.0f;
    put_f16(b, d);
    for (int j = 0; j < SP_QK / 2; j++) {
        const float x0 = x[j] * id, x1 = x[SP_QK / 2 + j] * id;
        int q0 = (int8_t)(x0 + 8.5f), q1 = (int8_t)(x1 + 8.5f);
        q0 = q0 < 15 ? q0 : 15;
        q1 = q1 < 15 ? q1 : 15;
        b[2 + j] = (uint8_t)(q0 | (q1 << 4));
    }
}

int sp_quantize_row(int type, const float *x, void *q, int64_t n) {
    if (!sp_quant_row_bytes(type, n) && n != 0) return -1;
    uint8_t *b = q;
    const size_t bb = type == SP_TENSOR_Q8_0 ? SP_Q8_0_BLOCK_BYTES : SP_Q4_0_BLOCK_BYTES;
    for (int64_t i = 0; i < n / SP_QK; i++) {
        if (type == SP_TENSOR_Q8_0) q8_0_block(x + i * SP_QK, b + (size_t)i * bb);
        else q4_0_block(x + i * SP_QK, b + (size_t)i * bb);
    }
    return 0;
}

int sp_dequantize_row(int type, const void *q, float *y, int64_t n) {
    if (!sp_quant_row_bytes(type, n) && n != 0) return -1;
    const uint8_t *b = q;
    for (int64_t i = 0; i < n / SP_QK; i++, y += SP_QK) {
        if (type == SP_TENSOR_Q8_0) {
            const float d = get_f16(b);
            for (int j = 0; j < SP_QK; j++) y[j] = d * (float)(int8_t)b[2 + j];
            b += SP_Q8_0_BLOCK_BYTES;
        } else {
            const float d = get_f16(b);
            for (int j = 0; j < SP_QK / 2; j++) {
                y[j] = d * (float)((b[2 + j] & 0x0f) - 8);
                y[j + SP_QK / 2] = d * (float)((b[2 + j] >> 4) - 8);
            }
            b += SP_Q4_0_BLOCK_BYTES;
        }
    }
    return 0;
}
