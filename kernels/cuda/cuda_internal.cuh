/* Shared by the CUDA backend's files (backend_cuda.cu, linear_cuda.cu,
 * mix_cuda.cu, fourier2d_cuda.cu), which are built together into the module
 * libspectral-cuda.so; not part of the backend interface. Everything here
 * has hidden visibility in the module (only cuda_module.h's functions are
 * exported). */
#ifndef SP_CUDA_INTERNAL_CUH
#define SP_CUDA_INTERNAL_CUH

#include "kernels/backend.h"

#include <cublas_v2.h>
#include <cuda_runtime.h>
#include <cufft.h>

#include <stddef.h>
#include <stdint.h>

/* Mixing paths (SPECTRAL_CUDA_MIX). */
enum { MIX_AUTO = 0, MIX_FUSED = 1, MIX_DFTGEMM = 2, MIX_CUFFT = 3 };

/* cuFFT plan caches: LRU, bounded by entries and by the summed transform
 * length x batch of the plans they hold (cuFFT keeps per-plan device data,
 * twiddles and the like, roughly proportional to it; the work areas are the
 * caller's). A hit costs a scan, never a synchronize; an eviction waits for
 * the stream (the plan may be in use by queued work). */
#define PLAN_CACHE 256
#define F2D_PLAN_CACHE 64
#define PLAN_CACHE_ELEMS ((int64_t)1 << 28)
/* dftgemm twiddle tables: LRU, at most this many and this many bytes. */
#define TW_CACHE 64
#define TW_CACHE_BYTES ((size_t)128 << 20)
/* Alignment of every workspace slice (cudaMalloc's, and the arena's). */
#define WS_ALIGN 256

/* Cached cuFFT plan pair of the cufft mixing path. */
struct fft_plan {
    int valid;
    uint64_t used; /* LRU stamp */
    int64_t T, D, nc; /* length, row stride of u, channels in the batch */
    cufftHandle r2c, c2r;
    size_t work; /* max work-area bytes of the two plans */
};

/* 2-D R2C plans for FNet's fourier2d_real. */
struct f2d_plan {
    int valid;
    uint64_t used;
    int64_t T, D;
    cufftHandle r2c;
    size_t work;
};

/* Memo of the cufft path's work-area bound for (T, D, nc), found without
 * planning (cufftGetSizeMany64), raised to a real plan's need when one was made. */
struct ws_memo {
    int valid;
    uint64_t used;
    int64_t T, D, nc;
    size_t work;
};

/* A cached dftgemm twiddle table (device memory). */
struct tw_table {
    float *p; /* NULL: free slot */
    int64_t T, k;
    size_t bytes;
    uint64_t used;
};

/* M2-BERT's long-convolution plans (hyena_cuda.cu): R2C and C2R of length N
 * over `batch` interleaved channels, work areas left to the caller. */
#define HYENA_PLAN_CACHE 8
struct hyena_plan {
    int valid;
    uint64_t used;
    int64_t N, batch;
    cufftHandle r2c, c2r;
    size_t work; /* the larger work area of the two */
};

struct cuda_impl {
    int device;
    cudaStream_t stream;
    cublasHandle_t blas;
    int mix_mode;
    int fused_max_T; /* largest power-of-two T the fused kernel takes, 0 if none */
    int smem_optin;
    int strict; /* SPECTRAL_CUDA_STRICT=1: a forced path that cannot run fails */
    int last_path; /* MIX_* of the last spectral_mix with k >= 1 (-1: none yet) */
    uint64_t clock; /* LRU stamps */
    struct fft_plan plans[PLAN_CACHE];
    int64_t plans_elems; /* summed T x nc of the valid entries */
    struct ws_memo memo[PLAN_CACHE];
    struct f2d_plan f2d[F2D_PLAN_CACHE];
    int64_t f2d_elems;
    struct tw_table tw[TW_CACHE];
    size_t tw_total;
    struct hyena_plan hyena[HYENA_PLAN_CACHE];
    /* small scratch for pooling and get_rows' id check */
    void *scratch;
    size_t scratch_bytes;
};

static inline struct cuda_impl *IMPL(sp_backend *be) { return (struct cuda_impl *)be->impl; }

static inline unsigned grid_for(int64_t n, int threads) {
    int64_t b = (n + threads - 1) / threads;
    if (b < 1) b = 1;
    if (b > (1 << 20)) b = 1 << 20; /* kernels use grid-stride loops */
    return (unsigned)b;
}

static inline size_t align_up(size_t x) { return (x + WS_ALIGN - 1) / WS_ALIGN * WS_ALIGN; }
static inline void *align_ptr(void *p) {
    return (void *)(((uintptr_t)p + WS_ALIGN - 1) & ~(uintptr_t)(WS_ALIGN - 1));
}

/* ---------------------------------------------------------------- errors */

/* Writes the message into be->err and returns -1. */
int sp_cuda_set_err(sp_backend *be, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
const char *sp_cuda_cufft_str(cufftResult r);
/* Every entry point first selects the backend's device on the calling thread
 * (and clears a stale non-sticky error); non-zero + err on failure. */
int sp_cuda_enter(sp_backend *be);
/* Checks the document offsets of mix_block / ffn_block (n_docs >= 1,
 * offsets[0] = 0, strictly increasing, T x D floats addressable). Returns
 * the longest document, or -1 with *bad = the first bad document (-1 when
 * offsets, n_docs or offsets[0] are at fault). Sets no message. */
int64_t sp_cuda_longest_doc(const int64_t *offsets, int64_t n_docs, int64_t D, int64_t *bad);
/* The same check for an op's entry: 0, or non-zero with a message naming
 * op and the first bad document. */
int sp_cuda_check_docs(sp_backend *be, const char *op, const int64_t *offsets, int64_t n_docs,
                       int64_t D);

#define CU_CHECK(be, call)                                                                         \
    do {                                                                                           \
        cudaError_t e_ = (call);                                                                   \
        if (e_ != cudaSuccess)                                                                     \
            return sp_cuda_set_err((be), "cuda: %s failed: %s (%s:%d)", #call,                     \
                                   cudaGetErrorString(e_), __FILE__, __LINE__);                    \
    } while (0)

#define FFT_CHECK(be, call)                                                                        \
    do {                                                                                           \
        cufftResult r_ = (call);                                                                   \
        if (r_ != CUFFT_SUCCESS)                                                                   \
            return sp_cuda_set_err((be), "cuda: %s failed: %s (%d) (%s:%d)", #call,                \
                                   sp_cuda_cufft_str(r_), (int)r_, __FILE__, __LINE__);            \
    } while (0)

#define BLAS_CHECK(be, call)                                                                       \
    do {                                                                                           \
        cublasStatus_t s_ = (call);                                                                \
        if (s_ != CUBLAS_STATUS_SUCCESS)                                                           \
            return sp_cuda_set_err((be), "cuda: %s failed: %s (%s:%d)", #call,                     \
                                   cublasGetStatusString(s_), __FILE__, __LINE__);                 \
    } while (0)

/* After a kernel launch: launch-configuration errors show up here; faults
 * inside kernels surface at the next synchronizing call. */
#define LAUNCH_CHECK(be, what)                                                                     \
    do {                                                                                           \
        cudaError_t e_ = cudaGetLastError();                                                       \
        if (e_ != cudaSuccess)                                                                     \
            return sp_cuda_set_err((be), "cuda: kernel %s failed: %s", (what),                     \
                                   cudaGetErrorString(e_));                                        \
    } while (0)

/* --------------------------------------------------------------- kernels */

/* Row-by-column loops for elementwise kernels over a rows x cols matrix,
 * launched on grid2d(rows, cols, threads): no 64-bit division per element. */
#define ROWS_COLS(r, c, rows, cols)                                                                \
    for (int64_t r = blockIdx.y; r < (rows); r += gridDim.y)                                       \
        for (int64_t c = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; c < (cols);             \
             c += (int64_t)gridDim.x * blockDim.x)

static inline dim3 grid2d(int64_t rows, int64_t cols, int threads) {
    int64_t bx = (cols + threads - 1) / threads;
    if (bx < 1) bx = 1;
    if (bx > 4096) bx = 4096;
    int64_t by = rows < 1 ? 1 : rows;
    /* about 2^20 blocks in all at most; gridDim.y <= 65535 */
    int64_t ymax = ((int64_t)1 << 20) / bx;
    if (ymax > 65535) ymax = 65535;
    if (ymax < 1) ymax = 1;
    if (by > ymax) by = ymax;
    return dim3((unsigned)bx, (unsigned)by);
}

#define GRID_STRIDE(i, n)                                                                          \
    for (int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; i < (n);                     \
         i += (int64_t)gridDim.x * blockDim.x)

__device__ __forceinline__ float2 cmul(float2 a, float2 b) {
    return make_float2(a.x * b.x - a.y * b.y, a.x * b.y + a.y * b.x);
}

/* ------------------------------------------------- ops, one family a file */

/* backend_cuda.cu */
int sp_cuda_layer_norm(sp_backend *be, const float *x, const float *w, const float *b, float eps,
                       int64_t T, int64_t D, float *out);

/* linear_cuda.cu */
int sp_cuda_linear(sp_backend *be, const float *x, const float *W, const float *b, int64_t T,
                   int64_t IN, int64_t OUT, sp_act act, int accumulate, float *out);
size_t sp_cuda_ffn_block_workspace_size(sp_backend *be, const int64_t *offsets, int64_t n_docs,
                                        int64_t D, int64_t F);
int sp_cuda_ffn_block(sp_backend *be, float *h, const float *ln_w, const float *ln_b, float eps,
                      const float *W_up, const float *b_up, sp_act act, const float *W_down,
                      const float *b_down, int64_t D, int64_t F, const int64_t *offsets,
                      int64_t n_docs, void *workspace);

/* mix_cuda.cu */
size_t sp_cuda_mix_workspace_size(sp_backend *be, int64_t T, int64_t D);
int sp_cuda_spectral_mix(sp_backend *be, const float *u, const float *filter, const float *bias,
                         int64_t K, int64_t T, int64_t D, void *workspace, float *h);
size_t sp_cuda_mix_block_workspace_size(sp_backend *be, const int64_t *offsets, int64_t n_docs,
                                        int64_t D, int64_t K);
int sp_cuda_mix_block(sp_backend *be, float *h, const float *ln_w, const float *ln_b, float eps,
                      const float *filter, const float *bias, int64_t K, int64_t D,
                      const int64_t *offsets, int64_t n_docs, void *workspace);
/* Largest power-of-two T the fused mixing kernel takes with this much opt-in
 * shared memory per block (0 if none). */
int sp_cuda_fused_max_T(int smem_optin);
/* Allows the fused kernel the dynamic shared memory it needs at its longest
 * T on this device: once per device and process, thread-safe (the attribute
 * belongs to the kernel in the device's context, shared by every backend). */
int sp_cuda_fused_prepare(sp_backend *be);
/* Frees the backend's cached plans and tables (at destroy). */
void sp_cuda_mix_release(struct cuda_impl *im);
void sp_cuda_f2d_release(struct cuda_impl *im);
/* Waits for the backend's stream before a cached object is freed. */
int sp_cuda_evict_sync(sp_backend *be);
/* One cuFFT plan for the stream, with the work area left to the caller (it
 * comes from the arena): cufftMakePlanMany64's layout arguments. On failure
 * nothing is left allocated and *what names the failing call. */
cufftResult sp_cuda_make_plan(cudaStream_t stream, int rank, long long *n, long long *inembed,
                              long long istride, long long idist, long long *onembed,
                              long long ostride, long long odist, cufftType type, long long batch,
                              cufftHandle *out, size_t *work, const char **what);

/* hyena_cuda.cu: M2-BERT's ops */
int sp_cuda_add_row(sp_backend *be, const float *row, int64_t T, int64_t D, float *y);
size_t sp_cuda_hyena_spectrum_size(sp_backend *be, int64_t T, int64_t D);
size_t sp_cuda_hyena_filter_workspace_size(sp_backend *be, int64_t T, int64_t D, int64_t E,
                                           int64_t O);
int sp_cuda_hyena_filter(sp_backend *be, const sp_hyena_filter *f, int64_t T, int64_t D,
                         void *workspace, void *spectrum);
size_t sp_cuda_hyena_mix_workspace_size(sp_backend *be, int64_t T, int64_t D);
int sp_cuda_hyena_mix(sp_backend *be, const float *a, const float *conv_w, const float *conv_b,
                      const float *u, const void *spec, const float *bias, const void *spec_res,
                      const float *bias_res, int64_t T, int64_t D, void *workspace, float *y);
size_t sp_cuda_glu_ffn_block_workspace_size(sp_backend *be, const int64_t *offsets, int64_t n_docs,
                                            int64_t D, int64_t F, int64_t n_blocks);
int sp_cuda_glu_ffn_block(sp_backend *be, float *h, const float *W_gate, const float *W_down,
                          const float *b_down, const float *ln_w, const float *ln_b, float eps,
                          int64_t D, int64_t F, int64_t nb, const int64_t *offsets, int64_t n_docs,
                          void *workspace);
void sp_cuda_hyena_release(struct cuda_impl *im);

/* fourier2d_cuda.cu */
size_t sp_cuda_fourier2d_workspace_size(sp_backend *be, int64_t T, int64_t D);
int sp_cuda_fourier2d_real(sp_backend *be, const float *x, int64_t T, int64_t D, void *ws,
                           float *out);

#endif
