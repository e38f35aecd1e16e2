/* The AVX2 + FMA micro-kernels of the packed GEMMs (layouts in
 * packed_cpu.h, arithmetic in backend.h). Compiled for AVX2 by function
 * attribute, so the library still runs on any x86-64: the backend calls
 * them only when CPUID says AVX2 and FMA are there.
 *
 * Each kernel keeps MR rows x 16 outputs in registers, one variable per
 * row (GCC keeps an array of vectors in memory, which halved the speed),
 * and runs one row count per instantiation (MR is a constant after
 * inlining). */
#include "kernels/cpu/packed_cpu.h"

#if defined(__x86_64__) && defined(__GNUC__)
#include <immintrin.h>
#include <string.h>

#define AVX2 __attribute__((target("avx2,fma")))
#define INLINE static inline __attribute__((always_inline)) AVX2
#define ROWS6(X) X(0) X(1) X(2) X(3) X(4) X(5)
#define ROWS4(X) X(0) X(1) X(2) X(3)

/* -------------------------------------------------------------- F32 */

/* 6 x 16: 12 accumulators, two weight vectors, one broadcast. */
INLINE void f32_tile(const int MR, const sp_gemm_args *a, int64_t r0, int64_t p, int64_t u0,
                     int64_t u1, float *y, int64_t ldy, int first) {
    const int64_t ldx = a->ldx;
    const float *x = (const float *)a->x + r0 * ldx;
    const float *w = (const float *)a->W->w + (p * a->W->cols + u0) * SP_PACK_NR;
#define DECL(r) __m256 lo##r = _mm256_setzero_ps(), hi##r = _mm256_setzero_ps();
    ROWS6(DECL)
#define LOAD(r)                                                                                   \
    if (r < MR && !first) {                                                                       \
        lo##r = _mm256_loadu_ps(y + r * ldy);                                                     \
        hi##r = _mm256_loadu_ps(y + r * ldy + 8);                                                 \
    }
    ROWS6(LOAD)
    for (int64_t k = u0; k < u1; k++, w += SP_PACK_NR) {
        const __m256 w0 = _mm256_load_ps(w), w1 = _mm256_load_ps(w + 8);
#define STEP(r)                                                                                   \
    if (r < MR) {                                                                                 \
        const __m256 b = _mm256_broadcast_ss(x + r * ldx + k);                                    \
        lo##r = _mm256_fmadd_ps(b, w0, lo##r);                                                    \
        hi##r = _mm256_fmadd_ps(b, w1, hi##r);                                                    \
    }
        ROWS6(STEP)
    }
#define STORE(r)                                                                                  \
    if (r < MR) {                                                                                 \
        _mm256_storeu_ps(y + r * ldy, lo##r);                                                     \
        _mm256_storeu_ps(y + r * ldy + 8, hi##r);                                                 \
    }
    ROWS6(STORE)
#undef DECL
#undef STEP
}

__attribute__((noinline)) AVX2 static void f32_avx2(const sp_gemm_args *a, int mr, int64_t r0,
                                                    int64_t p, int64_t u0, int64_t u1, float *y,
                                                    int64_t ldy, int first) {
    switch (mr) {
    case 6: f32_tile(6, a, r0, p, u0, u1, y, ldy, first); break;
    case 5: f32_tile(5, a, r0, p, u0, u1, y, ldy, first); break;
    case 4: f32_tile(4, a, r0, p, u0, u1, y, ldy, first); break;
    case 3: f32_tile(3, a, r0, p, u0, u1, y, ldy, first); break;
    case 2: f32_tile(2, a, r0, p, u0, u1, y, ldy, first); break;
    default: f32_tile(1, a, r0, p, u0, u1, y, ldy, first); break;
    }
}

/* ------------------------------------------------------------- INT8 */

/* 4 x 16 per 32-block: VPMADDUBSW takes an unsigned and a signed byte, so
 * the weight gives its magnitude (|q| <= 128 fits a byte) and its sign
 * moves onto the activation (|q_x| <= 127): a pair sums to at most
 * 2 * 128 * 127 = 32512, never saturating 16 bits, so the int32 block sum
 * is exact. Then the float step of backend.h, once per block. */
INLINE void q8_tile(const int MR, const sp_gemm_args *a, int64_t r0, int64_t p, int64_t u0,
                    int64_t u1, float *y, int64_t ldy, int first) {
    const sp_q8_view view = sp_q8_at(a, r0, p, u0);
    const int64_t nb = view.nb, ldx = view.ldx;
    const int8_t *x = view.x, *w = view.w;
    const float *dx = view.dx, *scale = view.scale;
    const __m256i ones = _mm256_set1_epi16(1);
#define DECL(r) __m256 lo##r = _mm256_setzero_ps(), hi##r = _mm256_setzero_ps();
    ROWS4(DECL)
    ROWS4(LOAD)
    for (int64_t b = u0; b < u1; b++, w += SP_Q8_BLOCK * SP_PACK_NR, scale += SP_PACK_NR) {
#define ZERO(r) __m256i slo##r = _mm256_setzero_si256(), shi##r = _mm256_setzero_si256();
        ROWS4(ZERO)
        for (int s = 0; s < SP_Q8_BLOCK / 4; s++) {
            const __m256i w0 = _mm256_load_si256((const __m256i *)(w + s * 64));
            const __m256i w1 = _mm256_load_si256((const __m256i *)(w + s * 64 + 32));
            const __m256i m0 = _mm256_abs_epi8(w0), m1 = _mm256_abs_epi8(w1);
#define STEP(r)                                                                                   \
    if (r < MR) {                                                                                 \
        int32_t v;                                                                                \
        memcpy(&v, x + r * ldx + b * SP_Q8_BLOCK + s * 4, 4);                                     \
        const __m256i xb = _mm256_set1_epi32(v);                                                  \
        slo##r = _mm256_add_epi32(                                                                \
            slo##r, _mm256_madd_epi16(_mm256_maddubs_epi16(m0, _mm256_sign_epi8(xb, w0)), ones)); \
        shi##r = _mm256_add_epi32(                                                                \
            shi##r, _mm256_madd_epi16(_mm256_maddubs_epi16(m1, _mm256_sign_epi8(xb, w1)), ones)); \
    }
            ROWS4(STEP)
        }
        const __m256 s0 = _mm256_load_ps(scale), s1 = _mm256_load_ps(scale + 8);
#define SCALE(r)                                                                                  \
    if (r < MR) {                                                                                 \
        const __m256 d = _mm256_broadcast_ss(dx + r * nb + b);                                    \
        lo##r = _mm256_fmadd_ps(_mm256_cvtepi32_ps(slo##r), _mm256_mul_ps(s0, d), lo##r);         \
        hi##r = _mm256_fmadd_ps(_mm256_cvtepi32_ps(shi##r), _mm256_mul_ps(s1, d), hi##r);         \
    }
        ROWS4(SCALE)
    }
    ROWS4(STORE)
#undef DECL
#undef ZERO
#undef STEP
#undef SCALE
}

__attribute__((noinline)) AVX2 static void q8_avx2(const sp_gemm_args *a, int mr, int64_t r0,
                                                   int64_t p, int64_t u0, int64_t u1, float *y,
                                                   int64_t ldy, int first) {
    switch (mr) {
    case 4: q8_tile(4, a, r0, p, u0, u1, y, ldy, first); break;
    case 3: q8_tile(3, a, r0, p, u0, u1, y, ldy, first); break;
    case 2: q8_tile(2, a, r0, p, u0, u1, y, ldy, first); break;
    default: q8_tile(1, a, r0, p, u0, u1, y, ldy, first); break;
    }
}

/* ------------------------------------------------------------- BF16 */

/* VDPBF16PS emulated: a bfloat16 is the top half of a float, so a pair
 * splits into two floats by a shift and a mask, and the two FMAs run as
 * the SDM orders them, odd element first. MXCSR's DAZ and FTZ give the
 * instruction's denormal rules for the time of the call. */
INLINE void bf16_tile(const int MR, const sp_gemm_args *a, int64_t r0, int64_t p, int64_t u0,
                      int64_t u1, float *y, int64_t ldy, int first) {
    const sp_packed *W = a->W;
    const int64_t pairs = W->cols_pad / 2, ldx = a->ldx;
    const uint16_t *x = (const uint16_t *)a->x + r0 * ldx;
    const uint16_t *w = (const uint16_t *)W->w + (p * pairs + u0) * (2 * SP_PACK_NR);
    const __m256i high = _mm256_set1_epi32((int)0xffff0000u);
    const unsigned csr = _mm_getcsr();
    _mm_setcsr(csr | 0x8040); /* FTZ | DAZ */
#define DECL(r) __m256 lo##r = _mm256_setzero_ps(), hi##r = _mm256_setzero_ps();
    ROWS4(DECL)
    ROWS4(LOAD)
    for (int64_t i = u0; i < u1; i++, w += 2 * SP_PACK_NR) {
        const __m256i v0 = _mm256_load_si256((const __m256i *)w);
        const __m256i v1 = _mm256_load_si256((const __m256i *)(w + 16));
        const __m256 e0 = _mm256_castsi256_ps(_mm256_slli_epi32(v0, 16));
        const __m256 o0 = _mm256_castsi256_ps(_mm256_and_si256(v0, high));
        const __m256 e1 = _mm256_castsi256_ps(_mm256_slli_epi32(v1, 16));
        const __m256 o1 = _mm256_castsi256_ps(_mm256_and_si256(v1, high));
#define STEP(r)                                                                                   \
    if (r < MR) {                                                                                 \
        int32_t v;                                                                                \
        memcpy(&v, x + r * ldx + 2 * i, 4);                                                       \
        const __m256i xb = _mm256_set1_epi32(v);                                                  \
        const __m256 xe = _mm256_castsi256_ps(_mm256_slli_epi32(xb, 16));                         \
        const __m256 xo = _mm256_castsi256_ps(_mm256_and_si256(xb, high));                        \
        lo##r = _mm256_fmadd_ps(xe, e0, _mm256_fmadd_ps(xo, o0, lo##r));                          \
        hi##r = _mm256_fmadd_ps(xe, e1, _mm256_fmadd_ps(xo, o1, hi##r));                          \
    }
        ROWS4(STEP)
    }
    ROWS4(STORE)
    _mm_setcsr(csr);
#undef DECL
#undef STEP
#undef LOAD
#undef STORE
}

__attribute__((noinline)) AVX2 static void bf16_avx2(const sp_gemm_args *a, int mr, int64_t r0,
                                                     int64_t p, int64_t u0, int64_t u1, float *y,
                                                     int64_t ldy, int first) {
    switch (mr) {
    case 4: bf16_tile(4, a, r0, p, u0, u1, y, ldy, first); break;
    case 3: bf16_tile(3, a, r0, p, u0, u1, y, ldy, first); break;
    case 2: bf16_tile(2, a, r0, p, u0, u1, y, ldy, first); break;
    default: bf16_tile(1, a, r0, p, u0, u1, y, ldy, first); break;
    }
}

const sp_micro sp_micro_f32_avx2 = {f32_avx2, 6}, sp_micro_q8_avx2 = {q8_avx2, 4},
               sp_micro_bf16_avx2 = {bf16_avx2, 4};

/* sp_q8_quantize_rows with the same operations 8 lanes at a time (the C
 * one's max reduction and byte packing did not vectorize): MINPS / MAXPS
 * return their second operand for a NaN, as the C comparisons do, and
 * VROUNDPS rounds to nearest even as rintf does. */
AVX2 void sp_q8_quantize_rows_avx2(int64_t rows, int64_t IN, const float *x, int64_t ldx, int8_t *q,
                                   float *dx) {
    const int64_t nb = IN / SP_Q8_BLOCK;
    const __m256 sign = _mm256_set1_ps(-0.0f), hi = _mm256_set1_ps(127.0f), lo = _mm256_set1_ps(-127.0f);
    /* PACKS interleaves 128-bit lanes; this puts the 8 dwords back in order */
    const __m256i order = _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7);
    for (int64_t r = 0; r < rows; r++) {
        for (int64_t b = 0; b < nb; b++) {
            const float *v = x + r * ldx + b * SP_Q8_BLOCK;
            const __m256 v0 = _mm256_loadu_ps(v), v1 = _mm256_loadu_ps(v + 8), v2 = _mm256_loadu_ps(v + 16),
                         v3 = _mm256_loadu_ps(v + 24);
            /* |v| > m ? |v| : m, as the C reduction: MAXPS(|v|, m) keeps m for a NaN */
            __m256 m = _mm256_setzero_ps();
            m = _mm256_max_ps(_mm256_andnot_ps(sign, v0), m);
            m = _mm256_max_ps(_mm256_andnot_ps(sign, v1), m);
            m = _mm256_max_ps(_mm256_andnot_ps(sign, v2), m);
            m = _mm256_max_ps(_mm256_andnot_ps(sign, v3), m);
            __m128 m4 = _mm_max_ps(_mm256_castps256_ps128(m), _mm256_extractf128_ps(m, 1));
            m4 = _mm_max_ps(m4, _mm_movehl_ps(m4, m4));
            m4 = _mm_max_ss(m4, _mm_shuffle_ps(m4, m4, 1));
            const float a = _mm_cvtss_f32(m4), d = a / 127.0f;
            float id = d != 0.0f ? 1.0f / d : 0.0f;
            if (id == __builtin_inff()) id = 0.0f;
            dx[r * nb + b] = d;
            const __m256 s = _mm256_set1_ps(id);
#define QUANT(v)                                                                                  \
    _mm256_cvtps_epi32(_mm256_round_ps(_mm256_max_ps(_mm256_min_ps(_mm256_mul_ps(v, s), hi), lo), \
                                       _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC))
            const __m256i w01 = _mm256_packs_epi32(QUANT(v0), QUANT(v1)), w23 = _mm256_packs_epi32(QUANT(v2), QUANT(v3));
#undef QUANT
            const __m256i bytes = _mm256_permutevar8x32_epi32(_mm256_packs_epi16(w01, w23), order);
            _mm256_storeu_si256((__m256i *)(q + r * IN + b * SP_Q8_BLOCK), bytes);
        }
    }
}
#else
const sp_micro sp_micro_f32_avx2 = {0, 0}, sp_micro_q8_avx2 = {0, 0}, sp_micro_bf16_avx2 = {0, 0};
void sp_q8_quantize_rows_avx2(int64_t rows, int64_t IN, const float *x, int64_t ldx, int8_t *q,
                              float *dx) {
    sp_q8_quantize_rows(rows, IN, x, ldx, q, dx);
}
#endif
