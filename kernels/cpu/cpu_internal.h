/* Shared by the CPU backend's files (backend_cpu.c, linear_cpu.c,
 * mix_cpu.c, fourier2d_cpu.c); not part of the backend interface. */
#ifndef SP_CPU_INTERNAL_H
#define SP_CPU_INTERNAL_H

#include <pthread.h>
#include <stddef.h>
#include <stdint.h>

/* fftwf_complex as float[2] (OpenBLAS's cblas.h pulls in <complex.h>). */
#ifndef FFTW_NO_Complex
#define FFTW_NO_Complex
#endif
#include <fftw3.h>

#include "kernels/backend.h"
#include "kernels/cpu/cpu_features.h"
#include "kernels/cpu/threadpool.h"

/* Rows per GEMM task. Fixed, never derived from the thread count, so every
 * row meets the same sgemm calls whatever the number of threads (results are
 * bit-identical), and 128 rows is where single-threaded sgemm reaches its
 * peak here while the MLP's hidden tile (128 x F) stays in L2. */
#ifndef SP_CPU_ROW_TILE
#define SP_CPU_ROW_TILE 128
#endif
/* Channels per FFT mixing tile: 16 floats fill a 64-byte cache line on the
 * strided gather; SPECTRAL_CPU_MIX_TILE (1..64) overrides it for benchmarks. */
#define SP_MIX_TILE_DEFAULT 16
#define SP_MIX_TILE_MAX 64
/* Alignment of every workspace slice. */
#define SP_CPU_ALIGN 64

typedef struct {
    sp_pool *pool;
    int tile;           /* channels per mixing tile */
    unsigned fft_flags; /* FFTW_ESTIMATE, or FFTW_MEASURE on request */
    sp_kernel_level kernels; /* the packed GEMMs' cap: sp_cpu_kernel_cap() */
} sp_cpu_impl;

void sp_cpu_set_err(sp_backend *be, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

/* backend.h's dequantize_rows (dequant_cpu.c). */
int sp_cpu_dequantize_rows(sp_backend *be, sp_weight_type type, const void *src, int64_t row_len,
                           const int32_t *ids, int64_t n_rows, float *dst);
/* One stored row of n values (Q8_0 or Q4_0, n a multiple of 32) as floats. */
void sp_cpu_decode_row(sp_weight_type type, const void *src, int64_t n, float *y);
/* One Q8_0 / Q4_0 block: its 32 integers (Q4_0: nibble - 8) into q, its
 * scale returned. */
float sp_cpu_block_decode(sp_weight_type type, const uint8_t *block, int8_t q[32]);

/* packed_cpu.c: backend.h's packed-weight ops, and the kernel level. */
size_t sp_cpu_packed_size(sp_backend *be, sp_weight_type type, int64_t OUT, int64_t IN,
                          sp_compute compute);
sp_packed *sp_cpu_pack_weight(sp_backend *be, sp_weight_type type, const void *W, int64_t OUT,
                              int64_t IN, sp_compute compute);
void sp_cpu_packed_free(sp_backend *be, sp_packed *W);
static inline sp_kernel_level sp_cpu_kernel_level(const sp_backend *be) {
    return ((const sp_cpu_impl *)be->impl)->kernels;
}
/* For tests and benchmarks: the cap of this backend's packed kernels
 * (SP_KERNEL_AVX512_EMULATED runs the AVX-512 code emulated). Weights
 * packed before stay valid: every level reads the same layout. */
void sp_cpu_set_kernel_level(sp_backend *be, sp_kernel_level level);

/* A GEMM operand as the row-tile loops see it: a float matrix (OpenBLAS)
 * or a packed weight, OUT x IN. */
typedef struct {
    const float *f32;
    const sp_packed *packed;
    int64_t rows, cols; /* OUT, IN */
} sp_cpu_weight;
/* Scratch one tile of up to SP_CPU_ROW_TILE rows needs for W (its
 * activations quantized or rounded for the kernel). */
size_t sp_cpu_tile_scratch(const sp_cpu_weight *W);
/* y[rows, OUT] (row stride ldy) = x[rows, IN] W^T, or y += with
 * accumulate, on the calling thread; rows <= SP_CPU_ROW_TILE. */
void sp_cpu_tile_gemm(sp_backend *be, const sp_cpu_weight *W, int64_t rows, const float *x,
                      int64_t ldx, float *y, int64_t ldy, int accumulate, void *scratch);

/* Threads to use for a job of n_tasks: min(n_threads, max_parallel, n_tasks), >= 1. */
int sp_cpu_slots(const sp_backend *be, int64_t n_tasks);

static inline sp_pool *sp_cpu_pool(const sp_backend *be) {
    return ((const sp_cpu_impl *)be->impl)->pool;
}

static inline int64_t sp_cpu_round_up(int64_t v, int64_t m) { return (v + m - 1) / m * m; }
static inline void *sp_cpu_align(void *p) {
    return (void *)(((uintptr_t)p + SP_CPU_ALIGN - 1) & ~(uintptr_t)(SP_CPU_ALIGN - 1));
}

/* FFTW's planner is not thread-safe: every plan is made under this mutex. */
extern pthread_mutex_t sp_fft_mutex;

/* linear_cpu.c */
int sp_cpu_linear(sp_backend *be, const float *x, const float *W, const float *b, int64_t T,
                  int64_t IN, int64_t OUT, sp_act act, int accumulate, float *out);
size_t sp_cpu_linear_packed_workspace_size(sp_backend *be, const sp_packed *W, int64_t T);
int sp_cpu_linear_packed(sp_backend *be, const float *x, const sp_packed *W, const float *b,
                         int64_t T, sp_act act, int accumulate, void *workspace, float *out);
size_t sp_cpu_ffn_block_workspace_size(sp_backend *be, const int64_t *offsets, int64_t n_docs,
                                       int64_t D, int64_t F);
int sp_cpu_ffn_block(sp_backend *be, float *h, const float *ln_w, const float *ln_b, float eps,
                     const float *W_up, const float *b_up, sp_act act, const float *W_down,
                     const float *b_down, int64_t D, int64_t F, const int64_t *offsets,
                     int64_t n_docs, void *workspace);
size_t sp_cpu_ffn_block_packed_workspace_size(sp_backend *be, const sp_packed *W_up,
                                              const sp_packed *W_down, const int64_t *offsets,
                                              int64_t n_docs);
int sp_cpu_ffn_block_packed(sp_backend *be, float *h, const float *ln_w, const float *ln_b,
                            float eps, const sp_packed *W_up, const float *b_up, sp_act act,
                            const sp_packed *W_down, const float *b_down, const int64_t *offsets,
                            int64_t n_docs, void *workspace);
size_t sp_cpu_glu_ffn_block_workspace_size(sp_backend *be, const int64_t *offsets, int64_t n_docs,
                                           int64_t D, int64_t F, int64_t n_blocks);
int sp_cpu_glu_ffn_block(sp_backend *be, float *h, const float *W_gate, const float *W_down,
                         const float *b_down, const float *ln_w, const float *ln_b, float eps,
                         int64_t D, int64_t F, int64_t n_blocks, const int64_t *offsets,
                         int64_t n_docs, void *workspace);
size_t sp_cpu_glu_ffn_block_packed_workspace_size(sp_backend *be, const sp_packed *W_gate,
                                                  const sp_packed *W_down, const int64_t *offsets,
                                                  int64_t n_docs, int64_t n_blocks);
int sp_cpu_glu_ffn_block_packed(sp_backend *be, float *h, const sp_packed *W_gate,
                                const sp_packed *W_down, const float *b_down, const float *ln_w,
                                const float *ln_b, float eps, int64_t n_blocks, const int64_t *offsets,
                                int64_t n_docs, void *workspace);
/* Row tiles of `rows` (SP_CPU_ROW_TILE for most ops) cut at document starts:
 * fills tile_start[] (n + 1 entries, may be NULL to count) and returns the
 * number of tiles. */
int64_t sp_cpu_doc_tiles(const int64_t *offsets, int64_t n_docs, int64_t rows, int64_t *tile_start);
/* A row's LayerNorm statistics (mean, 1/sqrt(var + eps)) in double. */
void sp_cpu_row_stats(const float *x, int64_t D, float eps, double *mean, double *rstd);
/* One row of LayerNorm, exactly as the layer_norm op computes it. */
void sp_cpu_layer_norm_row(const float *x, const float *w, const float *b, float eps, int64_t D,
                           float *y);

/* mix_cpu.c */
size_t sp_cpu_mix_workspace_size(sp_backend *be, int64_t T, int64_t D);
int sp_cpu_spectral_mix(sp_backend *be, const float *u, const float *filter, const float *bias,
                        int64_t K, int64_t T, int64_t D, void *workspace, float *h);
size_t sp_cpu_mix_block_workspace_size(sp_backend *be, const int64_t *offsets, int64_t n_docs,
                                       int64_t D, int64_t K);
int sp_cpu_mix_block(sp_backend *be, float *h, const float *ln_w, const float *ln_b, float eps,
                     const float *filter, const float *bias, int64_t K, int64_t D,
                     const int64_t *offsets, int64_t n_docs, void *workspace);

/* mix_cpu.c's bounded cache of batched in-place real FFT plans, one per
 * (n, howmany, flags): each row of the batch is cdist complex values long
 * (the padded in-place layout, sp_cpu_fft_cdist). FFTW's planner is not
 * thread-safe, so planning and the cache are guarded by sp_fft_mutex;
 * executing a plan on new arrays is thread-safe. Plans in use are counted
 * so that eviction never destroys one under a running task: every acquire
 * (NULL when FFTW cannot plan) is paired with a release. */
typedef struct {
    int64_t n;
    int howmany;
    unsigned flags;
    int64_t cdist;
    fftwf_plan r2c, c2r;
    uint64_t last_use;
    int refs;
} sp_fft_plan;
sp_fft_plan *sp_cpu_fft_acquire(int64_t n, int howmany, unsigned flags);
void sp_cpu_fft_release(sp_fft_plan *p);
/* Complex values per row: n/2+1 rounded to a whole cache line. */
int64_t sp_cpu_fft_cdist(int64_t n);
/* Plans in the cache, and their summed lengths (for tests). */
int sp_cpu_fft_plans_cached(int64_t *rows);
size_t sp_cpu_external_memory(sp_backend *be, int64_t T_max);

/* hyena_cpu.c: M2-BERT's long convolution (backend.h) */
int64_t sp_cpu_hyena_n(int64_t T);
size_t sp_cpu_hyena_spectrum_size(sp_backend *be, int64_t T, int64_t D);
size_t sp_cpu_hyena_filter_workspace_size(sp_backend *be, int64_t T, int64_t D, int64_t E,
                                          int64_t order);
int sp_cpu_hyena_filter(sp_backend *be, const sp_hyena_filter *f, int64_t T, int64_t D,
                        void *workspace, void *spectrum);
size_t sp_cpu_hyena_mix_workspace_size(sp_backend *be, int64_t T, int64_t D);
int sp_cpu_hyena_mix(sp_backend *be, const float *a, const float *conv_w, const float *conv_b,
                     const float *u, const void *spec, const float *bias, const void *spec_res,
                     const float *bias_res, int64_t T, int64_t D, void *workspace, float *y);

/* fourier2d_cpu.c */
size_t sp_cpu_fourier2d_workspace(int64_t T, int64_t D);
int sp_cpu_fourier2d_real(sp_backend *be, const float *x, int64_t T, int64_t D, void *workspace,
                          float *out);

#endif
