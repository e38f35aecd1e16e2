/* The CUDA backend: device memory, one stream per backend instance, cuBLAS
 * for the linears and our own kernels for the rest (see docs/cuda.md). One op
 * family per file, as ggml-cuda does:
 *
 *   backend_cuda.cu    create / destroy, memory, get_rows, layer_norm, pool,
 *                      add, the op table and the module's exported functions
 *   linear_cuda.cu     linear, ffn_block
 *   mix_cuda.cu        spectral_mix (fused, dftgemm, cufft paths), mix_block
 *   fourier2d_cuda.cu  fourier2d_real (FNet)
 *   hyena_cuda.cu      add_row, hyena_filter, hyena_mix, glu_ffn_block (M2-BERT)
 *   cuda_internal.cuh  what they share
 *
 * They are built into the module libspectral-cuda.so, which libspectral.a
 * loads on first use (cuda_module.h, backend_cuda_loader.c). Only the three
 * sp_cuda_module_* functions are exported.
 *
 * SPECTRAL_CUDA_MIX=auto|fused|dftgemm|cufft (read at create time) forces a
 * mixing path (SPECTRAL_CUDA_STRICT=1: a forced path that cannot take a
 * shape fails instead of falling back to cufft); SPECTRAL_CUDA_TF32=1 lets
 * cuBLAS use TF32 tensor cores (default: FP32).
 *
 * Nothing here exits or aborts: every CUDA / cuFFT / cuBLAS status is checked
 * and turned into a non-zero return with a message in be->err. */
#include "kernels/cuda/cuda_internal.cuh"
#include "kernels/cuda/cuda_module.h"

#include <climits>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define SP_CUDA_EXPORT extern "C" __attribute__((visibility("default")))

/* ---------------------------------------------------------------- errors */

int sp_cuda_set_err(sp_backend *be, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(be->err, sizeof be->err, fmt, ap);
    va_end(ap);
    return -1;
}

const char *sp_cuda_cufft_str(cufftResult r) {
    switch (r) {
    case CUFFT_SUCCESS: return "CUFFT_SUCCESS";
    case CUFFT_INVALID_PLAN: return "CUFFT_INVALID_PLAN";
    case CUFFT_ALLOC_FAILED: return "CUFFT_ALLOC_FAILED";
    case CUFFT_INVALID_TYPE: return "CUFFT_INVALID_TYPE";
    case CUFFT_INVALID_VALUE: return "CUFFT_INVALID_VALUE";
    case CUFFT_INTERNAL_ERROR: return "CUFFT_INTERNAL_ERROR";
    case CUFFT_EXEC_FAILED: return "CUFFT_EXEC_FAILED";
    case CUFFT_SETUP_FAILED: return "CUFFT_SETUP_FAILED";
    case CUFFT_INVALID_SIZE: return "CUFFT_INVALID_SIZE";
    case CUFFT_INVALID_DEVICE: return "CUFFT_INVALID_DEVICE";
    case CUFFT_NO_WORKSPACE: return "CUFFT_NO_WORKSPACE";
    case CUFFT_NOT_IMPLEMENTED: return "CUFFT_NOT_IMPLEMENTED";
    case CUFFT_NOT_SUPPORTED: return "CUFFT_NOT_SUPPORTED";
    default: return "cuFFT error";
    }
}

/* Every entry point selects the backend's device on the calling thread. */
int sp_cuda_enter(sp_backend *be) {
    /* Clear a stale non-sticky error (say, a failed cudaMalloc already
     * reported) so the launch checks below only see this op's errors. A
     * sticky error (a faulted kernel) is returned again by the next call. */
    (void)cudaGetLastError();
    CU_CHECK(be, cudaSetDevice(IMPL(be)->device));
    return 0;
}

/* The longest document, or -1 when the offsets are bad: *bad is then the
 * first bad document, or -1 when offsets, n_docs or offsets[0] are. */
int64_t sp_cuda_longest_doc(const int64_t *offsets, int64_t n_docs, int64_t D, int64_t *bad) {
    *bad = -1;
    if (!offsets || n_docs < 1 || offsets[0] != 0 || D <= 0) return -1;
    /* rows whose T x D floats still have a byte count that fits */
    const int64_t max_rows = INT64_MAX / (int64_t)sizeof(float) / D;
    int64_t T_max = 0;
    for (int64_t i = 0; i < n_docs; i++) {
        if (offsets[i + 1] <= offsets[i] || offsets[i + 1] > max_rows) {
            *bad = i;
            return -1;
        }
        const int64_t T = offsets[i + 1] - offsets[i];
        if (T > T_max) T_max = T;
    }
    return T_max;
}

int sp_cuda_check_docs(sp_backend *be, const char *op, const int64_t *offsets, int64_t n_docs,
                       int64_t D) {
    int64_t bad;
    if (sp_cuda_longest_doc(offsets, n_docs, D, &bad) >= 0) return 0;
    if (bad < 0) return sp_cuda_set_err(be, "cuda %s: bad document offsets", op);
    return sp_cuda_set_err(be, "cuda %s: document %lld has bad rows [%lld, %lld)", op,
                           (long long)bad, (long long)offsets[bad], (long long)offsets[bad + 1]);
}

/* --------------------------------------------------------------- kernels */

/* A negative id gives a zero row (never a read before the table) and
 * records the first such row in *bad (left at BAD_NONE when there is none). */
#define BAD_NONE 0x7f7f7f7f /* what cudaMemsetAsync(0x7f) leaves in an int */
__global__ void k_get_rows(const float *__restrict__ table, int64_t D,
                           const int32_t *__restrict__ ids, int64_t T, float *__restrict__ out,
                           int *bad) {
    ROWS_COLS(t, d, T, D) {
        const int32_t id = ids[t];
        if (id < 0) {
            out[t * D + d] = 0.0f;
            if (d == 0) atomicMin(bad, t < BAD_NONE ? (int)t : BAD_NONE - 1);
        } else {
            out[t * D + d] = table[(int64_t)id * D + d];
        }
    }
}

/* Sum over the block; blockDim.x is a multiple of 32, sh holds 32 floats. */
__device__ float block_sum(float v, float *sh) {
    for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
    const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31, nw = blockDim.x >> 5;
    __syncthreads(); /* sh may still be read from the previous call */
    if (lane == 0) sh[warp] = v;
    __syncthreads();
    v = lane < nw ? sh[lane] : 0.0f;
    for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
    return v;
}

/* One block per row; two passes (mean, then centred variance) in float. Safe
 * in place: all reads of a row finish (block_sum syncs) before the writes,
 * and each element is read and written by the same thread. */
__global__ void k_layer_norm(const float *x, const float *__restrict__ w,
                             const float *__restrict__ b, float eps, int64_t T, int64_t D,
                             float *out) {
    __shared__ float sh[32];
    for (int64_t row = blockIdx.x; row < T; row += gridDim.x) {
        const float *xr = x + row * D;
        float *orow = out + row * D;
        float s = 0.0f;
        for (int64_t i = threadIdx.x; i < D; i += blockDim.x) s += xr[i];
        const float mean = block_sum(s, sh) / (float)D;
        float v = 0.0f;
        for (int64_t i = threadIdx.x; i < D; i += blockDim.x) {
            float c = xr[i] - mean;
            v += c * c;
        }
        const float var = block_sum(v, sh) / (float)D;
        const float rstd = rsqrtf(var + eps);
        for (int64_t i = threadIdx.x; i < D; i += blockDim.x) {
            float y = (xr[i] - mean) * rstd;
            if (w) y *= w[i];
            if (b) y += b[i];
            orow[i] = y;
        }
        __syncthreads(); /* before the next row reuses sh */
    }
}

/* Pool mean, stage 1: partial[chunk, d] = sum of the rows of that chunk
 * (double). Block (32, 8): x along d (coalesced), y along rows. */
__global__ void k_pool_partial(const float *__restrict__ x, int64_t T, int64_t D,
                               double *__restrict__ partial) {
    __shared__ double sh[8][33];
    const int64_t d = (int64_t)blockIdx.x * 32 + threadIdx.x;
    double s = 0.0;
    if (d < D)
        for (int64_t t = (int64_t)blockIdx.y * 8 + threadIdx.y; t < T; t += (int64_t)gridDim.y * 8)
            s += x[t * D + d];
    sh[threadIdx.y][threadIdx.x] = s;
    __syncthreads();
    if (threadIdx.y == 0 && d < D) {
        double a = 0.0;
        for (int j = 0; j < 8; j++) a += sh[j][threadIdx.x];
        partial[(int64_t)blockIdx.y * D + d] = a;
    }
}

/* Pool mean, stage 2: out[d] = sum over chunks / T. */
__global__ void k_pool_final(const double *__restrict__ partial, int nchunks, int64_t T,
                             int64_t D, float *__restrict__ out) {
    GRID_STRIDE(d, D) {
        double a = 0.0;
        for (int c = 0; c < nchunks; c++) a += partial[(int64_t)c * D + d];
        out[d] = (float)(a / (double)T);
    }
}

/* ---------------------------------------------------------------- memory */

static void *cuda_buffer_alloc(sp_backend *be, size_t bytes) {
    if (sp_cuda_enter(be)) return NULL;
    void *p = NULL;
    cudaError_t e = cudaMalloc(&p, bytes ? bytes : WS_ALIGN);
    if (e != cudaSuccess) {
        (void)cudaGetLastError();
        sp_cuda_set_err(be, "cuda: cudaMalloc of %zu bytes failed: %s", bytes,
                        cudaGetErrorString(e));
        return NULL;
    }
    return p;
}

static void cuda_buffer_free(sp_backend *be, void *p) {
    if (!p || sp_cuda_enter(be)) return;
    cudaFree(p); /* synchronizes with outstanding work */
}

/* Synchronous like the CPU backend's copies: the caller may free or reuse
 * the source as soon as this returns, whether it is pageable or pinned. */
static int copy_sync(sp_backend *be, void *dst, const void *src, size_t bytes, cudaMemcpyKind kind) {
    if (bytes == 0) return 0;
    if (sp_cuda_enter(be)) return -1;
    CU_CHECK(be, cudaMemcpyAsync(dst, src, bytes, kind, IMPL(be)->stream));
    CU_CHECK(be, cudaStreamSynchronize(IMPL(be)->stream));
    return 0;
}

static int cuda_upload(sp_backend *be, void *dst, const void *src, size_t bytes) {
    return copy_sync(be, dst, src, bytes, cudaMemcpyHostToDevice);
}

static int cuda_download(sp_backend *be, void *dst, const void *src, size_t bytes) {
    return copy_sync(be, dst, src, bytes, cudaMemcpyDeviceToHost);
}

int sp_cuda_evict_sync(sp_backend *be) {
    CU_CHECK(be, cudaStreamSynchronize(IMPL(be)->stream));
    return 0;
}

static int cuda_synchronize(sp_backend *be) {
    if (sp_cuda_enter(be)) return -1;
    CU_CHECK(be, cudaStreamSynchronize(IMPL(be)->stream));
    return 0;
}

/* ------------------------------------------------------------------- ops */

static int ensure_scratch(sp_backend *be, size_t bytes);

/* As the CPU op, a negative id is an error (ids >= the vocabulary are the
 * caller's to check: the table's height is not known here). The ids live on
 * the device, so the check costs one small download and a synchronize. */
static int cuda_get_rows(sp_backend *be, const float *table, int64_t D, const int32_t *ids,
                         int64_t T, float *out) {
    if (T < 0 || D < 0)
        return sp_cuda_set_err(be, "cuda get_rows: negative shape T=%lld D=%lld", (long long)T,
                               (long long)D);
    if (T == 0 || D == 0) return 0;
    if (!table || !ids || !out) return sp_cuda_set_err(be, "cuda get_rows: NULL argument");
    if (sp_cuda_enter(be)) return -1;
    struct cuda_impl *im = IMPL(be);
    if (ensure_scratch(be, sizeof(int))) return -1;
    int *bad = (int *)im->scratch;
    CU_CHECK(be, cudaMemsetAsync(bad, 0x7f, sizeof(int), im->stream));
    k_get_rows<<<grid2d(T, D, 256), 256, 0, im->stream>>>(table, D, ids, T, out, bad);
    LAUNCH_CHECK(be, "get_rows");
    int first = BAD_NONE;
    CU_CHECK(be, cudaMemcpyAsync(&first, bad, sizeof(int), cudaMemcpyDeviceToHost, im->stream));
    CU_CHECK(be, cudaStreamSynchronize(im->stream));
    if (first != BAD_NONE) {
        int32_t id = 0;
        CU_CHECK(be, cudaMemcpy(&id, ids + first, sizeof id, cudaMemcpyDeviceToHost));
        return sp_cuda_set_err(be, "cuda get_rows: negative id %d at row %d", (int)id, first);
    }
    return 0;
}

int sp_cuda_layer_norm(sp_backend *be, const float *x, const float *w, const float *b, float eps,
                       int64_t T, int64_t D, float *out) {
    if (T == 0) return 0;
    if (T < 0 || D <= 0)
        return sp_cuda_set_err(be, "cuda layer_norm: bad shape T=%lld D=%lld", (long long)T,
                               (long long)D);
    if (!x || !w || !b || !out) return sp_cuda_set_err(be, "cuda layer_norm: NULL argument");
    if (sp_cuda_enter(be)) return -1;
    const int threads = D >= 1024 ? 256 : 128;
    const unsigned grid = (unsigned)(T < (1 << 20) ? T : (1 << 20));
    k_layer_norm<<<grid, threads, 0, IMPL(be)->stream>>>(x, w, b, eps, T, D, out);
    LAUNCH_CHECK(be, "layer_norm");
    return 0;
}

static int ensure_scratch(sp_backend *be, size_t bytes) {
    struct cuda_impl *im = IMPL(be);
    if (im->scratch_bytes >= bytes) return 0;
    if (im->scratch) {
        if (sp_cuda_evict_sync(be)) return -1;
        cudaFree(im->scratch);
        im->scratch = NULL;
        im->scratch_bytes = 0;
    }
    void *p = NULL;
    cudaError_t e = cudaMalloc(&p, bytes);
    if (e != cudaSuccess) {
        (void)cudaGetLastError();
        return sp_cuda_set_err(be, "cuda: cudaMalloc of %zu bytes of scratch failed: %s", bytes,
                               cudaGetErrorString(e));
    }
    im->scratch = p;
    im->scratch_bytes = bytes;
    return 0;
}

static int cuda_pool(sp_backend *be, const float *x, int64_t T, int64_t D, sp_pool_op op,
                     float *out_host) {
    if (T > 0 && D == 0) return 0;
    if (T <= 0 || D <= 0)
        return sp_cuda_set_err(be, "cuda pool: bad shape T=%lld D=%lld", (long long)T,
                               (long long)D);
    if (!x || !out_host) return sp_cuda_set_err(be, "cuda pool: NULL argument");
    if (sp_cuda_enter(be)) return -1;
    struct cuda_impl *im = IMPL(be);
    if (op == SP_POOL_FIRST || op == SP_POOL_LAST) {
        const float *row = x + (op == SP_POOL_FIRST ? 0 : (T - 1) * D);
        CU_CHECK(be, cudaMemcpyAsync(out_host, row, (size_t)D * sizeof(float),
                                     cudaMemcpyDeviceToHost, im->stream));
        CU_CHECK(be, cudaStreamSynchronize(im->stream));
        return 0;
    }
    if (op != SP_POOL_MEAN) return sp_cuda_set_err(be, "cuda pool: unknown op %d", (int)op);
    int64_t nch = (T + 63) / 64;
    if (nch > 256) nch = 256;
    const int64_t ngrid_x = (D + 31) / 32;
    if (ngrid_x > INT32_MAX) return sp_cuda_set_err(be, "cuda pool: D too large");
    const size_t part_bytes = align_up((size_t)(nch * D) * sizeof(double));
    if (ensure_scratch(be, part_bytes + (size_t)D * sizeof(float))) return -1;
    double *partial = (double *)im->scratch;
    float *res = (float *)((char *)im->scratch + part_bytes);
    k_pool_partial<<<dim3((unsigned)ngrid_x, (unsigned)nch), dim3(32, 8), 0, im->stream>>>(
        x, T, D, partial);
    LAUNCH_CHECK(be, "pool_partial");
    k_pool_final<<<grid_for(D, 256), 256, 0, im->stream>>>(partial, (int)nch, T, D, res);
    LAUNCH_CHECK(be, "pool_final");
    CU_CHECK(be, cudaMemcpyAsync(out_host, res, (size_t)D * sizeof(float), cudaMemcpyDeviceToHost,
                                 im->stream));
    CU_CHECK(be, cudaStreamSynchronize(im->stream));
    return 0;
}


/* ------------------------------------------------------- create / destroy */

static void cuda_destroy(sp_backend *be) {
    if (!be) return;
    struct cuda_impl *im = IMPL(be);
    if (im) {
        cudaSetDevice(im->device);
        if (im->stream) cudaStreamSynchronize(im->stream);
        sp_cuda_mix_release(im);
        sp_cuda_f2d_release(im);
        sp_cuda_hyena_release(im);
        if (im->blas) cublasDestroy(im->blas);
        if (im->scratch) cudaFree(im->scratch);
        if (im->stream) cudaStreamDestroy(im->stream);
        free(im);
    }
    free(be);
}

static int cuda_add(sp_backend *be, const float *x, int64_t n, float *y) {
    if (n < 0 || (n > 0 && (!x || !y)))
        return sp_cuda_set_err(be, "cuda add: bad arguments (n=%lld)", (long long)n);
    if (n == 0) return 0;
    if (sp_cuda_enter(be)) return -1; /* the device, as every other entry point */
    struct cuda_impl *im = IMPL(be);
    const float one = 1.0f;
    /* cublasSaxpy takes an int count: go in chunks. */
    for (int64_t i = 0; i < n; i += INT_MAX) {
        int m = (int)(n - i < INT_MAX ? n - i : INT_MAX);
        BLAS_CHECK(be, cublasSaxpy(im->blas, m, &one, x + i, 1, y + i, 1));
    }
    return 0;
}

/* In backend.h's order. */
static const sp_backend_ops cuda_ops = {
    "cuda",
    cuda_destroy,
    cuda_buffer_alloc,
    cuda_buffer_free,
    cuda_upload,
    cuda_download,
    cuda_synchronize,
    cuda_get_rows,
    sp_cuda_layer_norm,
    sp_cuda_linear,
    sp_cuda_mix_workspace_size,
    sp_cuda_spectral_mix,
    cuda_pool,
    sp_cuda_fourier2d_workspace_size,
    sp_cuda_fourier2d_real,
    cuda_add,
    sp_cuda_mix_block_workspace_size,
    sp_cuda_mix_block,
    sp_cuda_ffn_block_workspace_size,
    sp_cuda_ffn_block,
    NULL, /* external_memory: cuFFT's plans use the workspaces it is given */
    NULL, /* dequantize_rows: weights are dequantized at upload (runtime/spectral.c) */
    NULL, /* packed_size .. ffn_block_packed: no packed weights (float32 GEMMs in cuBLAS) */
    NULL,
    NULL,
    NULL,
    NULL,
    NULL,
    NULL,
    sp_cuda_add_row,
    sp_cuda_hyena_spectrum_size,
    sp_cuda_hyena_filter_workspace_size,
    sp_cuda_hyena_filter,
    sp_cuda_hyena_mix_workspace_size,
    sp_cuda_hyena_mix,
    sp_cuda_glu_ffn_block_workspace_size,
    sp_cuda_glu_ffn_block,
};

SP_CUDA_EXPORT int sp_cuda_module_device_count(void) {
    int n = 0;
    if (cudaGetDeviceCount(&n) != cudaSuccess) {
        cudaGetLastError(); /* clear the error so later calls are not confused */
        return 0;
    }
    return n;
}

static sp_backend *create_fail(sp_backend *be, char *err, size_t err_len, const char *fmt, ...) {
    if (err && err_len) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(err, err_len, fmt, ap);
        va_end(ap);
    }
    cuda_destroy(be);
    return NULL;
}

SP_CUDA_EXPORT sp_backend *sp_cuda_module_create(int device, char *err, size_t err_len) {
    if (err && err_len) err[0] = '\0';
    int n = 0;
    cudaError_t e = cudaGetDeviceCount(&n);
    if (e != cudaSuccess) {
        cudaGetLastError();
        return create_fail(NULL, err, err_len, "cuda: no usable CUDA device (%s)",
                           cudaGetErrorString(e));
    }
    if (device < 0 || device >= n)
        return create_fail(NULL, err, err_len, "cuda: device %d does not exist (%d visible)",
                           device, n);
    int mode = MIX_AUTO;
    const char *env = getenv("SPECTRAL_CUDA_MIX");
    if (env && *env) {
        if (!strcmp(env, "auto")) mode = MIX_AUTO;
        else if (!strcmp(env, "fused")) mode = MIX_FUSED;
        else if (!strcmp(env, "dftgemm")) mode = MIX_DFTGEMM;
        else if (!strcmp(env, "cufft")) mode = MIX_CUFFT;
        else
            return create_fail(NULL, err, err_len,
                               "cuda: SPECTRAL_CUDA_MIX=%s (want auto, fused, dftgemm or cufft)",
                               env);
    }
    const char *tf32 = getenv("SPECTRAL_CUDA_TF32");
    const int use_tf32 = tf32 && !strcmp(tf32, "1");
    const char *strict = getenv("SPECTRAL_CUDA_STRICT");

    sp_backend *be = (sp_backend *)calloc(1, sizeof *be);
    struct cuda_impl *im = (struct cuda_impl *)calloc(1, sizeof *im);
    if (!be || !im) {
        free(im);
        free(be);
        return create_fail(NULL, err, err_len, "cuda: out of host memory");
    }
    be->ops = &cuda_ops;
    be->host_memory = 0;
    be->n_threads = 1;
    /* max_parallel is not used on CUDA: every op is queued on one stream and
     * no workspace size depends on how many work items are in flight. */
    be->max_parallel = 0;
    be->impl = im;
    im->device = device;
    im->mix_mode = mode;
    im->strict = strict && !strcmp(strict, "1");
    im->last_path = -1;

    if ((e = cudaSetDevice(device)) != cudaSuccess)
        return create_fail(be, err, err_len, "cuda: cudaSetDevice(%d): %s", device,
                           cudaGetErrorString(e));
    if ((e = cudaStreamCreateWithFlags(&im->stream, cudaStreamNonBlocking)) != cudaSuccess) {
        im->stream = NULL;
        return create_fail(be, err, err_len, "cuda: cudaStreamCreate: %s", cudaGetErrorString(e));
    }
    cublasStatus_t s = cublasCreate(&im->blas);
    if (s != CUBLAS_STATUS_SUCCESS) {
        im->blas = NULL;
        return create_fail(be, err, err_len, "cuda: cublasCreate: %s", cublasGetStatusString(s));
    }
    if ((s = cublasSetStream(im->blas, im->stream)) != CUBLAS_STATUS_SUCCESS ||
        (s = cublasSetMathMode(im->blas, use_tf32 ? CUBLAS_TF32_TENSOR_OP_MATH
                                                  : CUBLAS_DEFAULT_MATH)) != CUBLAS_STATUS_SUCCESS)
        return create_fail(be, err, err_len, "cuda: cuBLAS setup: %s", cublasGetStatusString(s));
    int optin = 0;
    if ((e = cudaDeviceGetAttribute(&optin, cudaDevAttrMaxSharedMemoryPerBlockOptin, device)) !=
        cudaSuccess)
        return create_fail(be, err, err_len, "cuda: cudaDeviceGetAttribute: %s",
                           cudaGetErrorString(e));
    im->smem_optin = optin;
    im->fused_max_T = sp_cuda_fused_max_T(optin);
    /* A device that refuses the opt-in runs fused only up to 48 KiB of
     * shared memory (fused_max_T is lowered); not a reason to fail. */
    if (sp_cuda_fused_prepare(be)) be->err[0] = '\0';
    return be;
}

SP_CUDA_EXPORT const sp_cuda_module_info *sp_cuda_module_get_info(void) {
    static const sp_cuda_module_info info = {SP_CUDA_MODULE_ABI, (uint32_t)sizeof(sp_backend_ops),
                                             (uint32_t)sizeof(sp_backend), SP_CUDA_MODULE_VERSION};
    return &info;
}
