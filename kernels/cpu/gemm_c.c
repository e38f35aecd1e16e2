/* The portable C micro-kernels of the packed GEMMs (INT8, BF16), the
 * activation conversions every level shares, and the BF16 lane step.
 * These are the arithmetic of backend.h written plainly: the AVX2 and
 * AVX-512 kernels must give the same bits (tests/test_gemm_packed.c). */
#include <float.h>
#include <math.h>
#include <string.h>

#include "kernels/cpu/packed_cpu.h"

/* Built for AVX2 too (chosen at load time): the quantizer runs on every
 * tile of a quantized model. Only IEEE operations with one rounding each,
 * so the clone and the default give the same bytes. */
#if defined(__GNUC__) && defined(__x86_64__) && defined(__GLIBC__) && !defined(__clang__) && \
    !defined(__SANITIZE_ADDRESS__) && !defined(__SANITIZE_THREAD__)
#define SP_CLONES __attribute__((target_clones("avx2", "default")))
#else
#define SP_CLONES
#endif

SP_CLONES
void sp_q8_quantize_rows(int64_t rows, int64_t IN, const float *x, int64_t ldx, int8_t *q, float *dx) {
    const int64_t nb = IN / SP_Q8_BLOCK;
    for (int64_t r = 0; r < rows; r++) {
        const float *xr = x + r * ldx;
        for (int64_t b = 0; b < nb; b++) {
            const float *v = xr + b * SP_Q8_BLOCK;
            /* comparisons rather than fmaxf / fminf, which GCC calls out of
             * line (their NaN rules are not MAXPS's): these vectorize */
            float m[8] = {0};
            for (int j = 0; j < SP_Q8_BLOCK; j += 8)
                for (int l = 0; l < 8; l++) m[l] = fabsf(v[j + l]) > m[l] ? fabsf(v[j + l]) : m[l];
            float a = 0.0f;
            for (int l = 0; l < 8; l++) a = m[l] > a ? m[l] : a;
            const float d = a / 127.0f;
            float id = d != 0.0f ? 1.0f / d : 0.0f;
            if (isinf(id)) id = 0.0f; /* a block below 1e-37: zeros, not NaNs */
            dx[r * nb + b] = d;
            int8_t *o = q + r * IN + b * SP_Q8_BLOCK;
            /* clamped before rounding: a NaN becomes 127, never an
             * out-of-range conversion */
            for (int j = 0; j < SP_Q8_BLOCK; j++) {
                float t = v[j] * id;
                t = t < 127.0f ? t : 127.0f;
                t = t > -127.0f ? t : -127.0f;
                o[j] = (int8_t)rintf(t);
            }
        }
    }
}

uint16_t sp_bf16_from_f32(float f) {
    uint32_t u;
    memcpy(&u, &f, sizeof u);
    if ((u & 0x7fffffffu) > 0x7f800000u) return (uint16_t)((u >> 16) | 0x40); /* NaN, quiet */
    if ((u & 0x7f800000u) == 0) return (uint16_t)((u >> 16) & 0x8000);     /* zero, denormal */
    return (uint16_t)((u + 0x7fffu + ((u >> 16) & 1)) >> 16);
}

void sp_bf16_convert_rows(int64_t rows, int64_t IN, const float *x, int64_t ldx, uint16_t *xb) {
    const int64_t IN2 = IN + (IN & 1);
    for (int64_t r = 0; r < rows; r++) {
        for (int64_t k = 0; k < IN; k++) xb[r * IN2 + k] = sp_bf16_from_f32(x[r * ldx + k]);
        if (IN2 != IN) xb[r * IN2 + IN] = 0;
    }
}

static float flush(float v) { return fabsf(v) < FLT_MIN ? copysignf(0.0f, v) : v; }

float sp_bf16_dot2(float acc, uint16_t x_even, uint16_t x_odd, uint16_t w_even, uint16_t w_odd) {
    acc = flush(acc);
    acc = flush(fmaf(flush(sp_bf16_widen(x_odd)), flush(sp_bf16_widen(w_odd)), acc));
    return flush(fmaf(flush(sp_bf16_widen(x_even)), flush(sp_bf16_widen(w_even)), acc));
}

/* ------------------------------------------------------------- INT8 */

static void q8_c(const sp_gemm_args *a, int mr, int64_t r0, int64_t p, int64_t u0, int64_t u1,
                 float *y, int64_t ldy, int first) {
    const sp_packed *W = a->W;
    const int64_t nb = W->cols / SP_Q8_BLOCK;
    const int8_t *w = (const int8_t *)W->w + p * nb * (SP_Q8_BLOCK * SP_PACK_NR);
    const float *scale = W->scale + p * nb * SP_PACK_NR;
    for (int r = 0; r < mr; r++) {
        const int8_t *q = (const int8_t *)a->x + (r0 + r) * a->ldx;
        const float *dx = a->dx + (r0 + r) * nb;
        for (int j = 0; j < SP_PACK_NR; j++) {
            float acc = first ? 0.0f : y[r * ldy + j];
            for (int64_t b = u0; b < u1; b++) {
                const int8_t *wb = w + b * (SP_Q8_BLOCK * SP_PACK_NR) + j * 4;
                int32_t s = 0;
                for (int step = 0; step < SP_Q8_BLOCK / 4; step++)
                    for (int e = 0; e < 4; e++)
                        s += (int32_t)q[b * SP_Q8_BLOCK + step * 4 + e] *
                             (int32_t)wb[step * (4 * SP_PACK_NR) + e];
                acc = fmaf((float)s, scale[b * SP_PACK_NR + j] * dx[b], acc);
            }
            y[r * ldy + j] = acc;
        }
    }
}

const sp_micro sp_micro_q8_c = {q8_c, 4};

/* ------------------------------------------------------------- BF16 */

static void bf16_c(const sp_gemm_args *a, int mr, int64_t r0, int64_t p, int64_t u0, int64_t u1,
                   float *y, int64_t ldy, int first) {
    const sp_packed *W = a->W;
    const int64_t pairs = W->cols_pad / 2;
    const uint16_t *w = (const uint16_t *)W->w + p * pairs * (2 * SP_PACK_NR);
    for (int r = 0; r < mr; r++) {
        const uint16_t *x = (const uint16_t *)a->x + (r0 + r) * a->ldx;
        for (int j = 0; j < SP_PACK_NR; j++) {
            float acc = first ? 0.0f : y[r * ldy + j];
            for (int64_t i = u0; i < u1; i++) {
                const uint16_t *wp = w + i * (2 * SP_PACK_NR) + 2 * j;
                acc = sp_bf16_dot2(acc, x[2 * i], x[2 * i + 1], wp[0], wp[1]);
            }
            y[r * ldy + j] = acc;
        }
    }
}

const sp_micro sp_micro_bf16_c = {bf16_c, 4};
