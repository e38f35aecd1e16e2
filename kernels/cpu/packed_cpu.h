/* Packed weights and the GEMM kernels that read them (internal to the CPU
 * backend). backend.h states the arithmetic of each compute type; this
 * header the layouts, shared by every kernel level, so one packed copy
 * serves whichever kernel the backend picks.
 *
 * A matrix W (OUT x IN) is cut into panels of SP_PACK_NR = 16 consecutive
 * outputs (the last one padded with zero weights). Within a panel:
 *   F32:  float    [IN][16]                    w[k][j] = W[16p + j][k]
 *   BF16: uint16_t [IN2 / 2][16][2]            the pair (W[o][2i], W[o][2i+1]) of
 *         output o = 16p + j as bfloat16; IN2 = IN rounded up to even (a zero pad)
 *   INT8: int8_t   [IN / 32][8][16][4]         per 32-block b, step s, output j:
 *         q[16p + j][32b + 4s .. 32b + 4s + 3]  (ggml's q, Q4_0 nibbles minus 8)
 *         plus float d[panel][IN / 32][16]     the block scales (f16 widened), and
 *         int32 sum128[panel][IN / 32][16]    128 * the block's sum of q (the AVX-512
 *         kernel feeds activations as unsigned bytes x + 128 and subtracts it)
 * 16 outputs of 4 bytes are one ZMM register, or two YMM: the AVX2 and
 * AVX-512 kernels read the same bytes.
 *
 * F32 on a CPU without the AVX2 kernel (or under SPECTRAL_CPU_ISA=c) is
 * laid out as plain rows instead, W itself, for OpenBLAS: pointing at the
 * caller's float32 data, or a decoded copy of Q8_0/Q4_0. */
#ifndef SP_PACKED_CPU_H
#define SP_PACKED_CPU_H

#include <stddef.h>
#include <stdint.h>

#include "kernels/backend.h"
#include "kernels/cpu/cpu_features.h"

#define SP_PACK_NR SP_PACKED_ROWS /* outputs per panel (backend.h) */
#define SP_Q8_BLOCK 32 /* values per block of Q8_0/Q4_0 and of quantized activations */

struct sp_packed {
    sp_compute compute;
    int rows_layout;    /* F32 only: plain OUT x IN rows for OpenBLAS, not panels */
    int owns_w;         /* w was allocated with the struct (not the caller's data) */
    int64_t rows, cols; /* OUT, IN */
    int64_t panels;     /* ceil(OUT / 16) */
    int64_t cols_pad;   /* IN, rounded up to even for BF16 */
    void *w;            /* the layout above */
    float *scale;       /* INT8 only */
    int32_t *sum128;    /* INT8 only */
    size_t bytes;       /* everything allocated for it, this struct included */
};

/* Rows [r0, r0 + n) of P as a packed weight of their own, sharing P's
 * memory (r0 a multiple of SP_PACK_NR; n too, or r0 + n = P->rows). */
sp_packed sp_packed_rows(const sp_packed *P, int64_t r0, int64_t n);

/* Activations of one tile as an INT8 kernel reads them: rows x IN signed
 * bytes (row-major, clamped to [-127, 127]) and rows x IN/32 scales
 * (backend.h: q = rne(x / dx)). */
void sp_q8_quantize_rows(int64_t rows, int64_t IN, const float *x, int64_t ldx, int8_t *q, float *dx);
/* The same bytes, AVX2 (gemm_avx2.c); only where the CPU has AVX2. */
void sp_q8_quantize_rows_avx2(int64_t rows, int64_t IN, const float *x, int64_t ldx, int8_t *q,
                              float *dx);
/* f32 -> bfloat16 as VCVTNEPS2BF16 does it: nearest-even, denormals to
 * signed zero, NaN kept quiet. */
uint16_t sp_bf16_from_f32(float f);
static inline float sp_bf16_widen(uint16_t b) {
    union {
        uint32_t u;
        float f;
    } v = {(uint32_t)b << 16};
    return v.f;
}
/* Rows of x as bfloat16, IN2 = IN rounded up to even (the pad is 0). */
void sp_bf16_convert_rows(int64_t rows, int64_t IN, const float *x, int64_t ldx, uint16_t *xb);
/* One step of VDPBF16PS on one lane, as Intel's SDM states it: two FMAs,
 * the odd element first, each with denormal inputs read as zero and a
 * denormal result flushed to zero, round to nearest even. */
float sp_bf16_dot2(float acc, uint16_t x_even, uint16_t x_odd, uint16_t w_even, uint16_t w_odd);

/* What a micro-kernel reads: the packed weight and one tile's activations
 * in the form its compute type takes (float rows for F32, sp_q8_quantize_rows'
 * bytes and scales for INT8, sp_bf16_convert_rows' rows for BF16). */
typedef struct {
    const sp_packed *W;
    const void *x;
    int64_t ldx;     /* elements per row of x */
    const float *dx; /* INT8: IN / 32 scales per row */
} sp_gemm_args;
/* A micro-kernel: rows r0 .. r0 + mr - 1 (mr <= its MR) of panel p over
 * the inner units [u0, u1) (F32: values, INT8: 32-blocks, BF16: pairs),
 * into the 16 columns y (row stride ldy): acc starts at 0 when first is
 * set, at y otherwise. Each output's sequence of operations is the same
 * whatever mr, r0 or the cut into unit ranges, which is what makes every
 * level, tile and thread count give the same bits. */
/* Where an INT8 micro-kernel call's operands start: its first row's
 * quantized activations and scales, and its panel's weights, scales and
 * corrections at block u0. */
typedef struct {
    const int8_t *x, *w;
    const float *dx, *scale;
    const int32_t *sum128;
    int64_t nb, ldx; /* blocks per row, bytes per activation row */
} sp_q8_view;
static inline sp_q8_view sp_q8_at(const sp_gemm_args *a, int64_t r0, int64_t p, int64_t u0) {
    const sp_packed *W = a->W;
    const int64_t nb = W->cols / SP_Q8_BLOCK, at = (p * nb + u0) * SP_PACK_NR;
    const sp_q8_view v = {(const int8_t *)a->x + r0 * a->ldx, (const int8_t *)W->w + at * SP_Q8_BLOCK,
                          a->dx + r0 * nb, W->scale + at, W->sum128 + at, nb, a->ldx};
    return v;
}
typedef void (*sp_micro_fn)(const sp_gemm_args *a, int mr, int64_t r0, int64_t p, int64_t u0,
                            int64_t u1, float *y, int64_t ldy, int first);
typedef struct {
    sp_micro_fn fn;
    int mr; /* rows per call */
} sp_micro;

extern const sp_micro sp_micro_f32_avx2, sp_micro_q8_c, sp_micro_q8_avx2, sp_micro_q8_avx512,
    sp_micro_q8_avx512_emulated, sp_micro_bf16_c, sp_micro_bf16_avx2, sp_micro_bf16_avx512,
    sp_micro_bf16_avx512_emulated;

/* Whether this machine runs kernels of `level` for `compute` (F32 has
 * only AVX2; the emulated level runs everywhere). */
int sp_packed_level_available(sp_compute compute, sp_kernel_level level);
/* The level the backend uses for compute under cap: the best available
 * (F32 with no AVX2 kernel: -1, OpenBLAS on plain rows). */
int sp_packed_level_for(sp_compute compute, sp_kernel_level cap);
/* y[rows, OUT] (row stride ldy) = the packed GEMM of a's activations with
 * level's kernels, acc starting at y when accumulate is set. */
void sp_packed_gemm(sp_kernel_level level, const sp_gemm_args *a, int64_t rows, float *y,
                    int64_t ldy, int accumulate);

#endif
