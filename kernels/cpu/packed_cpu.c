/* Packed weights on the CPU: which kernel level runs each compute type,
 * the packing itself (layouts in packed_cpu.h), the loop every packed GEMM
 * runs around its micro-kernel, and the one-tile GEMM the row-tile loops of
 * linear_cpu.c call for a plain float matrix (OpenBLAS) or a packed one.
 *
 * Why our own kernels next to OpenBLAS: OpenBLAS packs its operands into
 * its blocked layout inside every call, and the CPU backend makes one call
 * per tile of 128 rows, so the same weights were repacked for every tile
 * (about 10% of a pass, measured); it has no API to keep a packed copy. And
 * no BLAS computes ggml's Q8_0 blocks or bfloat16 with these roundings.
 * oneDNN 2.6 was measured first (docs/precision.md): its f32 matmul on
 * AVX2 repacks per call as OpenBLAS does, its int8 has no per-32-block
 * scales and saturates on AVX2, its bf16 needs AVX-512, and it brings an
 * OpenMP runtime of its own. */
#include <cblas.h>
#include <stdlib.h>
#include <string.h>

#include "kernels/cpu/cpu_internal.h"
#include "kernels/cpu/packed_cpu.h"

/* Inner units per pass over the panels: F32 256 values (a 16 KB panel
 * slice stays in L1 while every row group of the tile uses it), INT8 8
 * blocks (256 values, 4 KB), BF16 128 pairs (8 KB). Fixed: the cut does
 * not change any result (each output's operations run in order across
 * cuts), only where the data sits. */
#define F32_CHUNK 256
#define Q8_CHUNK 8
#define BF16_CHUNK 128
#define MR_MAX 8
/* A tile's activations up to this size stay in L2 (of 512 KB here) while
 * the panels go by. */
#define ACT_L2_BYTES (192 * 1024)

int sp_packed_level_available(sp_compute compute, sp_kernel_level level) {
    const sp_cpu_features *f = sp_cpu_features_get();
    const int avx2 = f->avx2 && f->fma, avx512 = avx2 && f->avx512f && f->avx512bw && f->avx512vl;
    switch (level) {
    case SP_KERNEL_C:
    case SP_KERNEL_AVX512_EMULATED: return compute != SP_COMPUTE_F32;
    case SP_KERNEL_AVX2: return avx2 && sp_micro_q8_avx2.fn;
    case SP_KERNEL_AVX512:
        if (!sp_micro_q8_avx512.fn) return 0;
        return compute == SP_COMPUTE_INT8   ? avx512 && f->avx512_vnni
               : compute == SP_COMPUTE_BF16 ? avx512 && f->avx512_bf16
                                            : 0;
    }
    return 0;
}

int sp_packed_level_for(sp_compute compute, sp_kernel_level cap) {
    if (cap == SP_KERNEL_AVX512_EMULATED) {
        if (compute != SP_COMPUTE_F32) return SP_KERNEL_AVX512_EMULATED;
        cap = SP_KERNEL_AVX512;
    }
    for (int l = cap; l >= SP_KERNEL_C; l--)
        if (sp_packed_level_available(compute, (sp_kernel_level)l)) return l;
    return -1;
}

static const sp_micro *micro_for(sp_compute compute, sp_kernel_level level) {
    static const sp_micro *const table[3][4] = {
        [SP_COMPUTE_F32] = {NULL, &sp_micro_f32_avx2, NULL, NULL},
        [SP_COMPUTE_INT8] = {&sp_micro_q8_c, &sp_micro_q8_avx2, &sp_micro_q8_avx512,
                             &sp_micro_q8_avx512_emulated},
        [SP_COMPUTE_BF16] = {&sp_micro_bf16_c, &sp_micro_bf16_avx2, &sp_micro_bf16_avx512,
                             &sp_micro_bf16_avx512_emulated},
    };
    return table[compute][level];
}

void sp_packed_gemm(sp_kernel_level level, const sp_gemm_args *a, int64_t rows, float *y,
                    int64_t ldy, int accumulate) {
    const sp_packed *W = a->W;
    const sp_micro *m = micro_for(W->compute, level);
    const int64_t units = W->compute == SP_COMPUTE_F32    ? W->cols
                          : W->compute == SP_COMPUTE_INT8 ? W->cols / SP_Q8_BLOCK
                                                          : W->cols_pad / 2;
    const int64_t chunk = W->compute == SP_COMPUTE_F32    ? F32_CHUNK
                          : W->compute == SP_COMPUTE_INT8 ? Q8_CHUNK
                                                          : BF16_CHUNK;
    /* Chunks outside panels keeps a chunk of the activations in cache while
     * every panel reads it; panels outside chunks keeps a panel's outputs in
     * L1 across the chunks instead, better when all the activations fit in
     * L2 anyway (an output tile of many columns does not). */
    const int64_t elem = W->compute == SP_COMPUTE_F32 ? 4 : W->compute == SP_COMPUTE_BF16 ? 2 : 1;
    const int panels_outside = rows * W->cols_pad * elem <= ACT_L2_BYTES;
    const int64_t n_chunks = (units + chunk - 1) / chunk;
    for (int64_t i = 0; i < n_chunks * W->panels; i++) {
        const int64_t c = panels_outside ? i % n_chunks : i / W->panels;
        const int64_t p = panels_outside ? i / n_chunks : i % W->panels;
        const int64_t u0 = c * chunk, u1 = u0 + chunk < units ? u0 + chunk : units;
        const int first = !accumulate && u0 == 0;
        const int64_t o0 = p * SP_PACK_NR;
        const int64_t n = W->rows - o0 < SP_PACK_NR ? W->rows - o0 : SP_PACK_NR;
        for (int64_t r0 = 0; r0 < rows; r0 += m->mr) {
            const int mr = rows - r0 < m->mr ? (int)(rows - r0) : m->mr;
            float *yt = y + r0 * ldy + o0;
            if (n == SP_PACK_NR) {
                m->fn(a, mr, r0, p, u0, u1, yt, ldy, first);
                continue;
            }
            /* the last panel's padding lanes go to a scratch tile */
            float t[MR_MAX * SP_PACK_NR] = {0};
            for (int r = 0; r < mr && !first; r++) memcpy(t + r * SP_PACK_NR, yt + r * ldy, (size_t)n * sizeof(float));
            m->fn(a, mr, r0, p, u0, u1, t, SP_PACK_NR, first);
            for (int r = 0; r < mr; r++) memcpy(yt + r * ldy, t + r * SP_PACK_NR, (size_t)n * sizeof(float));
        }
    }
}

/* ---------------------------------------------------------------- packing */

static size_t align64(size_t n) { return (n + 63) & ~(size_t)63; }

/* Sizes of the parts: the struct, the weights, and for INT8 the scales
 * and corrections. 0 when the shape or type cannot be packed. */
static size_t packed_parts(sp_weight_type type, int64_t OUT, int64_t IN, sp_compute compute,
                           int rows_layout, size_t *w_bytes, size_t *aux_bytes) {
    if (OUT <= 0 || IN <= 0 || OUT > (INT64_C(1) << 31) || IN > (INT64_C(1) << 31)) return 0;
    if (type != SP_WEIGHT_F32 && type != SP_WEIGHT_Q8_0 && type != SP_WEIGHT_Q4_0) return 0;
    const int64_t panels = (OUT + SP_PACK_NR - 1) / SP_PACK_NR;
    *aux_bytes = 0;
    switch (compute) {
    case SP_COMPUTE_F32:
        /* plain rows of a float32 weight are the weight itself: nothing copied */
        *w_bytes = rows_layout ? (type == SP_WEIGHT_F32 ? 0 : (size_t)(OUT * IN) * sizeof(float))
                               : (size_t)(panels * SP_PACK_NR * IN) * sizeof(float);
        break;
    case SP_COMPUTE_BF16:
        *w_bytes = (size_t)(panels * SP_PACK_NR * (IN + (IN & 1))) * sizeof(uint16_t);
        break;
    case SP_COMPUTE_INT8:
        if (type == SP_WEIGHT_F32 || IN % SP_Q8_BLOCK) return 0;
        *w_bytes = (size_t)(panels * SP_PACK_NR * IN);
        *aux_bytes = align64((size_t)(panels * SP_PACK_NR * (IN / SP_Q8_BLOCK)) * sizeof(float));
        break;
    default: return 0;
    }
    *w_bytes = align64(*w_bytes);
    return align64(sizeof(sp_packed)) + *w_bytes + 2 * *aux_bytes;
}

/* Bytes of a stored row of IN values. */
static size_t row_bytes(sp_weight_type type, int64_t IN) {
    return type == SP_WEIGHT_F32    ? (size_t)IN * sizeof(float)
           : type == SP_WEIGHT_Q8_0 ? (size_t)(IN / SP_Q8_BLOCK) * 34
                                    : (size_t)(IN / SP_Q8_BLOCK) * 18;
}

static void pack_row_f32(sp_packed *P, int64_t o, const float *v) {
    float *w = (float *)P->w + (o / SP_PACK_NR) * P->cols * SP_PACK_NR + o % SP_PACK_NR;
    for (int64_t k = 0; k < P->cols; k++) w[k * SP_PACK_NR] = v[k];
}

static void pack_row_bf16(sp_packed *P, int64_t o, const float *v) {
    uint16_t *w = (uint16_t *)P->w + (o / SP_PACK_NR) * P->cols_pad * SP_PACK_NR + 2 * (o % SP_PACK_NR);
    for (int64_t k = 0; k < P->cols; k++) w[(k / 2) * (2 * SP_PACK_NR) + (k & 1)] = sp_bf16_from_f32(v[k]);
}

/* One stored Q8_0 / Q4_0 row: its integers, scales and corrections. */
static void pack_row_q8(sp_packed *P, sp_weight_type type, int64_t o, const uint8_t *src) {
    const int64_t nb = P->cols / SP_Q8_BLOCK, p = o / SP_PACK_NR, j = o % SP_PACK_NR;
    int8_t *w = (int8_t *)P->w + p * nb * (SP_Q8_BLOCK * SP_PACK_NR) + j * 4;
    for (int64_t b = 0; b < nb; b++) {
        int8_t q[SP_Q8_BLOCK];
        const float d = sp_cpu_block_decode(type, src, q);
        src += type == SP_WEIGHT_Q8_0 ? 34 : 18;
        int32_t sum = 0;
        for (int k = 0; k < SP_Q8_BLOCK; k++) {
            w[b * (SP_Q8_BLOCK * SP_PACK_NR) + (k / 4) * (4 * SP_PACK_NR) + k % 4] = q[k];
            sum += q[k];
        }
        P->scale[(p * nb + b) * SP_PACK_NR + j] = d;
        P->sum128[(p * nb + b) * SP_PACK_NR + j] = 128 * sum;
    }
}

sp_packed sp_packed_rows(const sp_packed *P, int64_t r0, int64_t n) {
    sp_packed v = *P;
    const int64_t p0 = r0 / SP_PACK_NR;
    v.rows = n;
    v.panels = (n + SP_PACK_NR - 1) / SP_PACK_NR;
    v.owns_w = 0;
    v.bytes = 0;
    if (P->rows_layout) {
        v.w = (float *)P->w + r0 * P->cols;
        return v;
    }
    switch (P->compute) {
    case SP_COMPUTE_F32: v.w = (float *)P->w + p0 * P->cols * SP_PACK_NR; break;
    case SP_COMPUTE_BF16: v.w = (uint16_t *)P->w + p0 * P->cols_pad * SP_PACK_NR; break;
    case SP_COMPUTE_INT8: {
        const int64_t nb = P->cols / SP_Q8_BLOCK;
        v.w = (int8_t *)P->w + p0 * P->cols * SP_PACK_NR;
        v.scale = P->scale + p0 * nb * SP_PACK_NR;
        v.sum128 = P->sum128 + p0 * nb * SP_PACK_NR;
        break;
    }
    default: break;
    }
    return v;
}

/* F32 with no kernel of ours at this level: rows for OpenBLAS. */
static int rows_layout(sp_backend *be, sp_compute compute) {
    return compute == SP_COMPUTE_F32 && sp_packed_level_for(compute, sp_cpu_kernel_level(be)) < 0;
}

size_t sp_cpu_packed_size(sp_backend *be, sp_weight_type type, int64_t OUT, int64_t IN,
                          sp_compute compute) {
    size_t wb, ab;
    return packed_parts(type, OUT, IN, compute, rows_layout(be, compute), &wb, &ab);
}

sp_packed *sp_cpu_pack_weight(sp_backend *be, sp_weight_type type, const void *W, int64_t OUT,
                              int64_t IN, sp_compute compute) {
    size_t wb, ab;
    const int rows = rows_layout(be, compute);
    const size_t total = packed_parts(type, OUT, IN, compute, rows, &wb, &ab);
    if (!total) {
        sp_cpu_set_err(be, "cpu pack_weight: cannot pack a %lld x %lld weight of type %d for compute %d here",
                       (long long)OUT, (long long)IN, (int)type, (int)compute);
        return NULL;
    }
    if (!W) {
        sp_cpu_set_err(be, "cpu pack_weight: NULL weight");
        return NULL;
    }
    /* zeroed: the last panel's padding outputs are 0 */
    char *mem = aligned_alloc(64, total);
    float *row = compute != SP_COMPUTE_INT8 && type != SP_WEIGHT_F32 ? malloc((size_t)IN * sizeof(float)) : NULL;
    if (!mem || (compute != SP_COMPUTE_INT8 && type != SP_WEIGHT_F32 && !row)) {
        free(mem);
        free(row);
        sp_cpu_set_err(be, "cpu pack_weight: out of memory (%zu bytes)", total);
        return NULL;
    }
    memset(mem, 0, total);
    sp_packed *P = (sp_packed *)mem;
    P->compute = compute;
    P->rows = OUT;
    P->cols = IN;
    P->panels = (OUT + SP_PACK_NR - 1) / SP_PACK_NR;
    P->cols_pad = compute == SP_COMPUTE_BF16 ? IN + (IN & 1) : IN;
    P->w = mem + align64(sizeof(sp_packed));
    P->scale = ab ? (float *)((char *)P->w + wb) : NULL;
    P->sum128 = ab ? (int32_t *)((char *)P->w + wb + ab) : NULL;
    P->bytes = total;
    P->rows_layout = rows;
    P->owns_w = !(rows && type == SP_WEIGHT_F32);
    if (rows) {
        if (type == SP_WEIGHT_F32) P->w = (void *)W; /* the caller's rows, which outlive P */
        else sp_cpu_decode_row(type, W, OUT * IN, P->w);
        free(row);
        return P;
    }
    const uint8_t *src = W;
    for (int64_t o = 0; o < OUT; o++, src += row_bytes(type, IN)) {
        if (compute == SP_COMPUTE_INT8) {
            pack_row_q8(P, type, o, src);
            continue;
        }
        const float *v = (const float *)src;
        if (type != SP_WEIGHT_F32) {
            sp_cpu_decode_row(type, src, IN, row);
            v = row;
        }
        if (compute == SP_COMPUTE_F32) pack_row_f32(P, o, v);
        else pack_row_bf16(P, o, v);
    }
    free(row);
    return P;
}

void sp_cpu_packed_free(sp_backend *be, sp_packed *W) {
    (void)be;
    free(W);
}

/* ------------------------------------------------------- one tile's GEMM */

size_t sp_cpu_tile_scratch(const sp_cpu_weight *W) {
    if (!W->packed) return 0;
    const int64_t IN = W->packed->cols;
    switch (W->packed->compute) {
    case SP_COMPUTE_INT8:
        return (size_t)sp_cpu_round_up(SP_CPU_ROW_TILE * IN, SP_CPU_ALIGN) +
               (size_t)(SP_CPU_ROW_TILE * (IN / SP_Q8_BLOCK)) * sizeof(float);
    case SP_COMPUTE_BF16: return (size_t)(SP_CPU_ROW_TILE * (IN + (IN & 1))) * sizeof(uint16_t);
    default: return 0;
    }
}

void sp_cpu_tile_gemm(sp_backend *be, const sp_cpu_weight *W, int64_t rows, const float *x,
                      int64_t ldx, float *y, int64_t ldy, int accumulate, void *scratch) {
    if (!W->packed || W->packed->rows_layout) {
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, (int)rows, (int)W->rows, (int)W->cols,
                    1.0f, x, (int)ldx, W->packed ? W->packed->w : W->f32, (int)W->cols,
                    accumulate ? 1.0f : 0.0f, y, (int)ldy);
        return;
    }
    const sp_packed *P = W->packed;
    int level = sp_packed_level_for(P->compute, sp_cpu_kernel_level(be));
    /* F32 panels were packed on this CPU, so it has their AVX2 kernel, even
     * when this backend's cap (SPECTRAL_CPU_ISA) is lower */
    if (level < 0) level = SP_KERNEL_AVX2;
    sp_gemm_args a = {P, x, ldx, NULL};
    if (P->compute == SP_COMPUTE_INT8) {
        int8_t *q = scratch;
        float *dx = (float *)((char *)scratch + sp_cpu_round_up(SP_CPU_ROW_TILE * P->cols, SP_CPU_ALIGN));
        if (level >= SP_KERNEL_AVX2 && level != SP_KERNEL_AVX512_EMULATED)
            sp_q8_quantize_rows_avx2(rows, P->cols, x, ldx, q, dx);
        else
            sp_q8_quantize_rows(rows, P->cols, x, ldx, q, dx);
        a.x = q;
        a.ldx = P->cols;
        a.dx = dx;
    } else if (P->compute == SP_COMPUTE_BF16) {
        sp_bf16_convert_rows(rows, P->cols, x, ldx, scratch);
        a.x = scratch;
        a.ldx = P->cols_pad;
    }
    sp_packed_gemm((sp_kernel_level)level, &a, rows, y, ldy, accumulate);
}
