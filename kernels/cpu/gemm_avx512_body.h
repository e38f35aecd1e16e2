/* The AVX-512 micro-kernels' code, written once against a few vector
 * operations that gemm_avx512.c defines twice: as the AVX-512 VNNI / BF16
 * intrinsics, and emulated lane by lane in C. The emulated build runs on
 * any machine, so these loops, offsets and the unsigned-activation
 * correction are tested everywhere; on a machine with the instructions the
 * same tests run the real build too.
 *
 * Expects: KERNEL(name) (a name suffix), ATTR (function attributes), the
 * types vint (16 x int32) and vflt (16 x float), and
 *   vi_zero() vi_load(p) vi_set1(int32) vi_xor(a, b) vi_sub(a, b)
 *   vi_dpbusd(acc, u8x4, s8x4)   acc[l] += sum_e u8[4l+e] * s8[4l+e]
 *   vf_zero() vf_loadu(p) vf_load(p) vf_storeu(p, v) vf_set1(f)
 *   vf_mul(a, b) vf_fma(a, b, c) = a * b + c, one rounding
 *   vf_cvt(vint)
 *   vf_dpbf16(acc, a, b)         VDPBF16PS on (even, odd) bfloat16 pairs */

#define ROWS8(X) X(0) X(1) X(2) X(3) X(4) X(5) X(6) X(7)

/* INT8: 8 rows x 16 outputs; VPDPBUSD multiplies unsigned by signed bytes,
 * so activations go in as x + 128 (XOR 0x80) and 128 * sum(q) comes off
 * each block sum before the float step of backend.h. */
static inline __attribute__((always_inline)) ATTR void KERNEL(q8_tile)(
    const int MR, const sp_gemm_args *a, int64_t r0, int64_t p, int64_t u0, int64_t u1, float *y,
    int64_t ldy, int first) {
    const sp_q8_view view = sp_q8_at(a, r0, p, u0);
    const int64_t nb = view.nb, ldx = view.ldx;
    const int8_t *x = view.x, *w = view.w;
    const float *dx = view.dx, *scale = view.scale;
    const int32_t *sum128 = view.sum128;
    const vint bias = vi_set1((int32_t)0x80808080u);
#define DECL(r) vflt acc##r = vf_zero();
    ROWS8(DECL)
#define LOAD(r)                                                                                   \
    if (r < MR && !first) acc##r = vf_loadu(y + r * ldy);
    ROWS8(LOAD)
    for (int64_t b = u0; b < u1; b++) {
#define ZERO(r) vint s##r = vi_zero();
        ROWS8(ZERO)
        for (int s = 0; s < SP_Q8_BLOCK / 4; s++) {
            const vint wv = vi_load(w + s * 64);
#define STEP(r)                                                                                   \
    if (r < MR) {                                                                                 \
        int32_t v;                                                                                \
        memcpy(&v, x + r * ldx + b * SP_Q8_BLOCK + s * 4, 4);                                     \
        s##r = vi_dpbusd(s##r, vi_xor(vi_set1(v), bias), wv);                                     \
    }
            ROWS8(STEP)
        }
        const vint corr = vi_load(sum128);
        const vflt sc = vf_load(scale);
#define SCALE(r)                                                                                  \
    if (r < MR)                                                                                   \
        acc##r = vf_fma(vf_cvt(vi_sub(s##r, corr)), vf_mul(sc, vf_set1(dx[r * nb + b])), acc##r);
        ROWS8(SCALE)
        w += SP_Q8_BLOCK * SP_PACK_NR;
        scale += SP_PACK_NR;
        sum128 += SP_PACK_NR;
    }
#define STORE(r)                                                                                  \
    if (r < MR) vf_storeu(y + r * ldy, acc##r);
    ROWS8(STORE)
#undef ZERO
#undef STEP
#undef SCALE
}

/* BF16: 8 rows x 16 outputs, one VDPBF16PS per row and pair. */
static inline __attribute__((always_inline)) ATTR void KERNEL(bf16_tile)(
    const int MR, const sp_gemm_args *a, int64_t r0, int64_t p, int64_t u0, int64_t u1, float *y,
    int64_t ldy, int first) {
    const sp_packed *W = a->W;
    const int64_t pairs = W->cols_pad / 2, ldx = a->ldx;
    const uint16_t *x = (const uint16_t *)a->x + r0 * ldx;
    const uint16_t *w = (const uint16_t *)W->w + (p * pairs + u0) * (2 * SP_PACK_NR);
    ROWS8(DECL)
    ROWS8(LOAD)
    for (int64_t i = u0; i < u1; i++, w += 2 * SP_PACK_NR) {
        const vint wv = vi_load(w);
#define STEP(r)                                                                                   \
    if (r < MR) {                                                                                 \
        int32_t v;                                                                                \
        memcpy(&v, x + r * ldx + 2 * i, 4);                                                       \
        acc##r = vf_dpbf16(acc##r, vi_set1(v), wv);                                               \
    }
        ROWS8(STEP)
    }
    ROWS8(STORE)
#undef STEP
#undef DECL
#undef LOAD
#undef STORE
}

#define SP_AVX512_DISPATCH(tile)                                                                  \
    static ATTR __attribute__((noinline)) void KERNEL(tile##_fn)(                                 \
        const sp_gemm_args *a, int mr, int64_t r0, int64_t p, int64_t u0, int64_t u1, float *y,   \
        int64_t ldy, int first) {                                                                 \
        switch (mr) {                                                                             \
        case 8: KERNEL(tile)(8, a, r0, p, u0, u1, y, ldy, first); break;                          \
        case 7: KERNEL(tile)(7, a, r0, p, u0, u1, y, ldy, first); break;                          \
        case 6: KERNEL(tile)(6, a, r0, p, u0, u1, y, ldy, first); break;                          \
        case 5: KERNEL(tile)(5, a, r0, p, u0, u1, y, ldy, first); break;                          \
        case 4: KERNEL(tile)(4, a, r0, p, u0, u1, y, ldy, first); break;                          \
        case 3: KERNEL(tile)(3, a, r0, p, u0, u1, y, ldy, first); break;                          \
        case 2: KERNEL(tile)(2, a, r0, p, u0, u1, y, ldy, first); break;                          \
        default: KERNEL(tile)(1, a, r0, p, u0, u1, y, ldy, first); break;                         \
        }                                                                                         \
    }
SP_AVX512_DISPATCH(q8_tile)
SP_AVX512_DISPATCH(bf16_tile)
#undef SP_AVX512_DISPATCH
#undef ROWS8
