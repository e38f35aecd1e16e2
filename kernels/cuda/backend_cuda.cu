/* The CUDA backend: device memory, one stream per backend instance, cuBLAS
 * for the linears and three implementations of the spectral mixing (see
 * docs/cuda.md for the maths and the path heuristic):
 *
 *   fused    one thread block per tile of channels: the whole sequence sits in
 *            shared memory, two real channels packed into one complex FFT
 *            (radix-2 DIT forward, filter, radix-2 DIF inverse). Power-of-two
 *            T up to what shared memory holds (16384 on H100).
 *   dftgemm  the k non-zero bins as two GEMMs against a cached cos/sin table
 *            (T x 2k): S = Tw^T u, filter, h += Tw S. Cheap when k is small.
 *   cufft    cuFFT R2C (strided, batched over channels) -> filter -> C2R ->
 *            add. Any T. Channels are processed in chunks so the scratch stays
 *            bounded; cuFFT's work area comes from the caller's workspace.
 *
 * SPECTRAL_CUDA_MIX=auto|fused|dftgemm|cufft (read at create time) forces a
 * path; a forced path that cannot take a shape falls back to cufft.
 * SPECTRAL_CUDA_TF32=1 lets cuBLAS use TF32 tensor cores (default: FP32).
 *
 * Only the extern "C" functions of kernels/backend.h are exported. Nothing
 * here exits or aborts: every CUDA / cuFFT / cuBLAS status is checked and
 * turned into a non-zero return with a message in be->err. */
#include "kernels/backend.h"

#include <climits>
#include <cublas_v2.h>
#include <cuda_runtime.h>
#include <cufft.h>

#include <math.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ------------------------------------------------------------ parameters */

enum { MIX_AUTO = 0, MIX_FUSED = 1, MIX_DFTGEMM = 2, MIX_CUFFT = 3 };

/* auto picks dftgemm for k <= this (when fused cannot run) ... */
#define DFTGEMM_AUTO_KMAX 32
/* ... and when its twiddle table (T x 2k floats) is at most this many bytes. */
#define DFTGEMM_AUTO_TW_BYTES ((int64_t)128 << 20)
/* A forced dftgemm falls back to cufft above this twiddle size. */
#define DFTGEMM_FORCED_TW_BYTES ((int64_t)1 << 30)
/* cufft path: channels per chunk are chosen so that the spectrum and the
 * real temp of one chunk fit in about this many bytes. */
#define CUFFT_CHUNK_BYTES ((int64_t)256 << 20)
#define PLAN_CACHE 8
#define WS_ALIGN 256

struct fft_plan {
    int valid;
    int64_t T, D, nc; /* length, row stride of u, channels in the batch */
    cufftHandle r2c, c2r;
    size_t work; /* max work-area bytes of the two plans */
};

/* 2-D R2C plans for FNet's fourier2d_real. */
#define F2D_PLAN_CACHE 4
struct f2d_plan {
    int valid;
    int64_t T, D;
    cufftHandle r2c;
    size_t work;
};

struct cuda_impl {
    int device;
    cudaStream_t stream;
    cublasHandle_t blas;
    int mix_mode;
    int fused_max_T; /* largest power-of-two T the fused kernel takes, 0 if none */
    int smem_optin;
    int fused_smem_set; /* dynamic smem bytes already allowed on the fused kernel */
    struct fft_plan plans[PLAN_CACHE];
    int plan_next;
    struct f2d_plan f2d[F2D_PLAN_CACHE];
    int f2d_next;
    /* dftgemm twiddle table cache */
    float *tw;
    int64_t tw_T, tw_k;
    size_t tw_bytes;
    /* small scratch for pooling */
    void *scratch;
    size_t scratch_bytes;
};

static struct cuda_impl *IMPL(sp_backend *be) { return (struct cuda_impl *)be->impl; }

/* ---------------------------------------------------------------- errors */

static int set_err(sp_backend *be, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(be->err, sizeof be->err, fmt, ap);
    va_end(ap);
    return -1;
}

static const char *cufft_str(cufftResult r) {
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

#define CU_CHECK(be, call)                                                                         \
    do {                                                                                           \
        cudaError_t e_ = (call);                                                                   \
        if (e_ != cudaSuccess)                                                                     \
            return set_err((be), "cuda: %s failed: %s (%s:%d)", #call, cudaGetErrorString(e_),     \
                           __FILE__, __LINE__);                                                    \
    } while (0)

#define FFT_CHECK(be, call)                                                                        \
    do {                                                                                           \
        cufftResult r_ = (call);                                                                   \
        if (r_ != CUFFT_SUCCESS)                                                                   \
            return set_err((be), "cuda: %s failed: %s (%d) (%s:%d)", #call, cufft_str(r_),        \
                           (int)r_, __FILE__, __LINE__);                                           \
    } while (0)

#define BLAS_CHECK(be, call)                                                                       \
    do {                                                                                           \
        cublasStatus_t s_ = (call);                                                                \
        if (s_ != CUBLAS_STATUS_SUCCESS)                                                           \
            return set_err((be), "cuda: %s failed: %s (%s:%d)", #call, cublasGetStatusString(s_), \
                           __FILE__, __LINE__);                                                    \
    } while (0)

/* After a kernel launch: launch-configuration errors show up here; faults
 * inside kernels surface at the next synchronizing call. */
#define LAUNCH_CHECK(be, what)                                                                     \
    do {                                                                                           \
        cudaError_t e_ = cudaGetLastError();                                                       \
        if (e_ != cudaSuccess)                                                                     \
            return set_err((be), "cuda: kernel %s failed: %s", (what), cudaGetErrorString(e_));    \
    } while (0)

/* Every entry point selects the backend's device on the calling thread. */
static int enter(sp_backend *be) {
    /* Clear a stale non-sticky error (say, a failed cudaMalloc already
     * reported) so the launch checks below only see this op's errors. A
     * sticky error (a faulted kernel) is returned again by the next call. */
    (void)cudaGetLastError();
    CU_CHECK(be, cudaSetDevice(IMPL(be)->device));
    return 0;
}

static unsigned grid_for(int64_t n, int threads) {
    int64_t b = (n + threads - 1) / threads;
    if (b < 1) b = 1;
    if (b > (1 << 20)) b = 1 << 20; /* kernels use grid-stride loops */
    return (unsigned)b;
}

static size_t align_up(size_t x) { return (x + WS_ALIGN - 1) / WS_ALIGN * WS_ALIGN; }

/* --------------------------------------------------------------- kernels */

#define GRID_STRIDE(i, n)                                                                          \
    for (int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; i < (n);                     \
         i += (int64_t)gridDim.x * blockDim.x)

__device__ __forceinline__ float2 cmul(float2 a, float2 b) {
    return make_float2(a.x * b.x - a.y * b.y, a.x * b.y + a.y * b.x);
}

__global__ void k_get_rows(const float *__restrict__ table, int64_t D,
                           const int32_t *__restrict__ ids, int64_t T, float *__restrict__ out) {
    GRID_STRIDE(i, T * D) {
        int64_t t = i / D, d = i - t * D;
        out[i] = table[(int64_t)ids[t] * D + d];
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

/* out[t, o] = act(out[t, o] + b[o]), act an sp_act */
__global__ void k_bias_act(float *out, const float *__restrict__ b, int64_t T, int64_t OUT,
                           int act) {
    GRID_STRIDE(i, T * OUT) {
        float v = out[i];
        if (b) v += b[i % OUT];
        if (act == SP_ACT_GELU) v = 0.5f * v * (1.0f + erff(v * 0.70710678118654752440f));
        else if (act == SP_ACT_GELU_TANH)
            v = 0.5f * v * (1.0f + tanhf(0.79788456080286536f * (v + 0.044715f * v * v * v)));
        else if (act == SP_ACT_TANH) v = tanhf(v);
        out[i] = v;
    }
}

/* h[t, d] += bias[d] (the k = 0 mixing). */
__global__ void k_add_bias_rows(float *h, const float *__restrict__ bias, int64_t T, int64_t D) {
    GRID_STRIDE(i, T * D) { h[i] += bias[i % D]; }
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

/* cufft path: scale the R2C spectrum (T/2+1 rows x nc channels, row-major)
 * into the half spectrum whose C2R is the mixing output:
 * G_0 = Re(W_0)/T (real), G_f = W_f/(2T) for 1 <= f < k, 0 above. */
__global__ void k_cufft_filter(float2 *spec, const float *__restrict__ filter, int64_t K, int64_t k,
                               int64_t nbins, int64_t nc, int64_t c0, float invT) {
    GRID_STRIDE(i, nbins * nc) {
        const int64_t f = i / nc, c = i - f * nc;
        float2 r = make_float2(0.0f, 0.0f);
        if (f < k) {
            const float *wp = filter + ((c0 + c) * K + f) * 2;
            const float2 x = spec[i];
            if (f == 0) {
                r = make_float2(x.x * wp[0] * invT, 0.0f);
            } else {
                const float s = 0.5f * invT;
                r = cmul(x, make_float2(wp[0] * s, wp[1] * s));
            }
        }
        spec[i] = r;
    }
}

/* cufft path: h[t, c0 + c] += y[t, c] + bias[c0 + c] */
__global__ void k_cufft_add(float *h, const float *__restrict__ y, const float *__restrict__ bias,
                            int64_t T, int64_t D, int64_t nc, int64_t c0) {
    GRID_STRIDE(i, T * nc) {
        const int64_t t = i / nc, c = i - t * nc;
        float v = y[i];
        if (bias) v += bias[c0 + c];
        h[t * D + c0 + c] += v;
    }
}

/* dftgemm: tw[t, f] = cos(2 pi f t / T), tw[t, k + f] = sin(2 pi f t / T),
 * row-major T x 2k. The angle is reduced exactly ((f t) mod T) and evaluated
 * in double, so every entry is correctly rounded to about 1 ulp. */
__global__ void k_twiddles(float *tw, int64_t T, int64_t k) {
    GRID_STRIDE(i, T * k) {
        const int64_t t = i / k, f = i - t * k;
        const int64_t r = (f * t) % T;
        double s, c;
        sincospi(2.0 * (double)r / (double)T, &s, &c);
        tw[t * 2 * k + f] = (float)c;
        tw[t * 2 * k + k + f] = (float)s;
    }
}

/* dftgemm: S rows 0..k-1 hold A_f = sum u cos, rows k..2k-1 hold
 * B_f = sum u sin, so U_f = A_f - i B_f. Replace them with Z such that
 * y = Tw Z: Z_f = Re(V_f), Z_{k+f} = -Im(V_f), V_f = U_f W_f / T, and the
 * bias folded into the f = 0 cosine row (Tw[t, 0] = 1 exactly). */
__global__ void k_dft_filter(float *S, const float *__restrict__ filter,
                             const float *__restrict__ bias, int64_t K, int64_t k, int64_t D,
                             float invT) {
    GRID_STRIDE(i, k * D) {
        const int64_t f = i / D, d = i - f * D;
        const float A = S[f * D + d], B = S[(k + f) * D + d];
        const float wr = filter[(d * K + f) * 2], wi = filter[(d * K + f) * 2 + 1];
        float zr = (A * wr + B * wi) * invT;
        const float zi = (B * wr - A * wi) * invT;
        if (f == 0 && bias) zr += bias[d];
        S[f * D + d] = zr;
        S[(k + f) * D + d] = zi;
    }
}

/* The fused kernel. Block b owns channels [2P b, 2P b + 2P): P pairs, each
 * pair packed as z = u_a + i u_b into one complex length-T buffer in shared
 * memory, followed by the T/2 twiddles exp(-2 pi i j / T).
 *   1. load (coalesced along d) into bit-reversed positions
 *   2. radix-2 DIT forward FFT (natural-order output)
 *   3. split the packed spectrum, multiply each channel by its filter
 *      (Hermitian, scaled by 1/T), re-pack
 *   4. radix-2 DIF inverse FFT (bit-reversed output)
 *   5. h += Re/Im parts + bias (coalesced along d). */
__global__ void k_fused_mix(const float *__restrict__ u, const float *__restrict__ filter,
                            const float *__restrict__ bias, float *__restrict__ h, int64_t K,
                            int k, int T, int logT, int64_t D, int P) {
    extern __shared__ float2 sm[];
    float2 *buf = sm;
    float2 *tw = sm + (size_t)P * T;
    const int half = T >> 1;
    const int nch = 2 * P;
    const int64_t d0 = (int64_t)blockIdx.x * nch;
    const float invT = 1.0f / (float)T;

    for (int j = threadIdx.x; j < half; j += blockDim.x) {
        float s, c;
        sincospif(-2.0f * (float)j / (float)T, &s, &c); /* exact argument for power-of-two T */
        tw[j] = make_float2(c, s);
    }
    float *bufs = (float *)buf;
    for (int i = threadIdx.x; i < T * nch; i += blockDim.x) {
        const int t = i / nch, c = i - t * nch;
        const int64_t d = d0 + c;
        const float v = d < D ? u[(int64_t)t * D + d] : 0.0f;
        const int r = (int)(__brev((unsigned)t) >> (32 - logT));
        bufs[2 * ((c >> 1) * T + r) + (c & 1)] = v;
    }
    __syncthreads();

    const int nb = P * half; /* butterflies per stage */
    /* forward: decimation in time, half-span m = 1, 2, ..., T/2 */
    for (int lm = 0; lm < logT; lm++) {
        const int m = 1 << lm;
        const int tstride = half >> lm; /* T / (2m) */
        for (int j = threadIdx.x; j < nb; j += blockDim.x) {
            const int p = j / half, jj = j - p * half;
            const int pos = jj & (m - 1), grp = jj >> lm;
            const int i0 = p * T + (grp << (lm + 1)) + pos, i1 = i0 + m;
            const float2 a = buf[i0];
            const float2 bw = cmul(buf[i1], tw[pos * tstride]);
            buf[i0] = make_float2(a.x + bw.x, a.y + bw.y);
            buf[i1] = make_float2(a.x - bw.x, a.y - bw.y);
        }
        __syncthreads();
    }

    /* filter: each (pair, f) with 0 <= f <= T/2 owns bins f and T - f */
    for (int j = threadIdx.x; j < P * (half + 1); j += blockDim.x) {
        const int p = j / (half + 1), f = j - p * (half + 1);
        const int fm = (T - f) & (T - 1);
        float2 *x = buf + (size_t)p * T;
        float2 of = make_float2(0.0f, 0.0f), om = make_float2(0.0f, 0.0f);
        if (f < k) {
            const float2 Zf = x[f], Zm = x[fm];
            /* U_a = (Z_f + conj Z_-f) / 2, U_b = (Z_f - conj Z_-f) / (2i) */
            const float2 Ua = make_float2(0.5f * (Zf.x + Zm.x), 0.5f * (Zf.y - Zm.y));
            const float2 Ub = make_float2(0.5f * (Zf.y + Zm.y), 0.5f * (Zm.x - Zf.x));
            const int64_t da = d0 + 2 * p, db = da + 1;
            float2 Wa = make_float2(0.0f, 0.0f), Wb = make_float2(0.0f, 0.0f);
            if (da < D) Wa = make_float2(filter[(da * K + f) * 2], filter[(da * K + f) * 2 + 1]);
            if (db < D) Wb = make_float2(filter[(db * K + f) * 2], filter[(db * K + f) * 2 + 1]);
            float2 Ya, Yb;
            if (f == 0) {
                Ya = make_float2(Ua.x * Wa.x * invT, 0.0f);
                Yb = make_float2(Ub.x * Wb.x * invT, 0.0f);
            } else {
                const float s = 0.5f * invT;
                Ya = cmul(Ua, make_float2(Wa.x * s, Wa.y * s));
                Yb = cmul(Ub, make_float2(Wb.x * s, Wb.y * s));
            }
            /* packed Hermitian spectra: X_f = Ya + i Yb, X_-f = conj Ya + i conj Yb */
            of = make_float2(Ya.x - Yb.y, Ya.y + Yb.x);
            om = make_float2(Ya.x + Yb.y, Yb.x - Ya.y);
        }
        x[f] = of;
        if (fm != f) x[fm] = om;
    }
    __syncthreads();

    /* inverse: decimation in frequency, half-span m = T/2, ..., 1, conj twiddles */
    for (int lm = logT - 1; lm >= 0; lm--) {
        const int m = 1 << lm;
        const int tstride = half >> lm;
        for (int j = threadIdx.x; j < nb; j += blockDim.x) {
            const int p = j / half, jj = j - p * half;
            const int pos = jj & (m - 1), grp = jj >> lm;
            const int i0 = p * T + (grp << (lm + 1)) + pos, i1 = i0 + m;
            const float2 a = buf[i0], b = buf[i1];
            const float2 w = tw[pos * tstride];
            buf[i0] = make_float2(a.x + b.x, a.y + b.y);
            buf[i1] = cmul(make_float2(a.x - b.x, a.y - b.y), make_float2(w.x, -w.y));
        }
        __syncthreads();
    }

    for (int i = threadIdx.x; i < T * nch; i += blockDim.x) {
        const int t = i / nch, c = i - t * nch;
        const int64_t d = d0 + c;
        if (d >= D) continue;
        const int r = (int)(__brev((unsigned)t) >> (32 - logT));
        float v = bufs[2 * ((c >> 1) * T + r) + (c & 1)];
        if (bias) v += bias[d];
        h[(int64_t)t * D + d] += v;
    }
}

/* ---------------------------------------------------------------- memory */

static void *cuda_buffer_alloc(sp_backend *be, size_t bytes) {
    if (enter(be)) return NULL;
    void *p = NULL;
    cudaError_t e = cudaMalloc(&p, bytes ? bytes : WS_ALIGN);
    if (e != cudaSuccess) {
        (void)cudaGetLastError();
        set_err(be, "cuda: cudaMalloc of %zu bytes failed: %s", bytes, cudaGetErrorString(e));
        return NULL;
    }
    return p;
}

static void cuda_buffer_free(sp_backend *be, void *p) {
    if (!p || enter(be)) return;
    cudaFree(p); /* synchronizes with outstanding work */
}

static int cuda_upload(sp_backend *be, void *dst, const void *src, size_t bytes) {
    if (bytes == 0) return 0;
    if (enter(be)) return -1;
    /* Synchronous like the CPU backend's: the caller may free or reuse src
     * as soon as this returns, whether it is pageable or pinned. */
    CU_CHECK(be, cudaMemcpyAsync(dst, src, bytes, cudaMemcpyHostToDevice, IMPL(be)->stream));
    CU_CHECK(be, cudaStreamSynchronize(IMPL(be)->stream));
    return 0;
}

static int cuda_download(sp_backend *be, void *dst, const void *src, size_t bytes) {
    if (bytes == 0) return 0;
    if (enter(be)) return -1;
    CU_CHECK(be, cudaMemcpyAsync(dst, src, bytes, cudaMemcpyDeviceToHost, IMPL(be)->stream));
    CU_CHECK(be, cudaStreamSynchronize(IMPL(be)->stream));
    return 0;
}

static int cuda_synchronize(sp_backend *be) {
    if (enter(be)) return -1;
    CU_CHECK(be, cudaStreamSynchronize(IMPL(be)->stream));
    return 0;
}

/* ------------------------------------------------------------------- ops */

static int cuda_get_rows(sp_backend *be, const float *table, int64_t D, const int32_t *ids,
                         int64_t T, float *out) {
    if (T < 0 || D < 0) return set_err(be, "cuda get_rows: bad shape");
    if (T == 0 || D == 0) return 0;
    if (!table || !ids || !out) return set_err(be, "cuda get_rows: NULL argument");
    if (enter(be)) return -1;
    k_get_rows<<<grid_for(T * D, 256), 256, 0, IMPL(be)->stream>>>(table, D, ids, T, out);
    LAUNCH_CHECK(be, "get_rows");
    return 0;
}

static int cuda_layer_norm(sp_backend *be, const float *x, const float *w, const float *b,
                           float eps, int64_t T, int64_t D, float *out) {
    if (T == 0) return 0;
    if (T < 0 || D <= 0) return set_err(be, "cuda layer_norm: bad shape T=%lld D=%lld",
                                         (long long)T, (long long)D);
    if (!x || !w || !b || !out) return set_err(be, "cuda layer_norm: NULL argument");
    if (enter(be)) return -1;
    const int threads = D >= 1024 ? 256 : 128;
    const unsigned grid = (unsigned)(T < (1 << 20) ? T : (1 << 20));
    k_layer_norm<<<grid, threads, 0, IMPL(be)->stream>>>(x, w, b, eps, T, D, out);
    LAUNCH_CHECK(be, "layer_norm");
    return 0;
}

static int cuda_linear(sp_backend *be, const float *x, const float *W, const float *b, int64_t T,
                       int64_t IN, int64_t OUT, sp_act act, int accumulate, float *out) {
    if (T == 0 && IN >= 0 && OUT >= 0) return 0;
    if (T < 0 || IN <= 0 || OUT <= 0 || T > INT32_MAX || IN > INT32_MAX || OUT > INT32_MAX)
        return set_err(be, "cuda linear: bad shape T=%lld IN=%lld OUT=%lld", (long long)T,
                       (long long)IN, (long long)OUT);
    if (accumulate && act != SP_ACT_NONE)
        return set_err(be, "cuda linear: accumulate needs act NONE");
    if (act != SP_ACT_NONE && act != SP_ACT_GELU && act != SP_ACT_GELU_TANH && act != SP_ACT_TANH)
        return set_err(be, "cuda linear: unknown activation %d", (int)act);
    if (!x || !W || !out) return set_err(be, "cuda linear: NULL argument");
    if (enter(be)) return -1;
    struct cuda_impl *im = IMPL(be);
    const float one = 1.0f, beta = accumulate ? 1.0f : 0.0f;
    /* row-major out[T, OUT] = x[T, IN] W^T  <=>  column-major out^T = W x^T,
     * W^T in column-major being the row-major W with ld IN. */
    BLAS_CHECK(be, cublasSgemm(im->blas, CUBLAS_OP_T, CUBLAS_OP_N, (int)OUT, (int)T, (int)IN, &one,
                               W, (int)IN, x, (int)IN, &beta, out, (int)OUT));
    if (b || act != SP_ACT_NONE) {
        k_bias_act<<<grid_for(T * OUT, 256), 256, 0, im->stream>>>(out, b, T, OUT, (int)act);
        LAUNCH_CHECK(be, "bias_act");
    }
    return 0;
}

static int ensure_scratch(sp_backend *be, size_t bytes) {
    struct cuda_impl *im = IMPL(be);
    if (im->scratch_bytes >= bytes) return 0;
    if (im->scratch) {
        CU_CHECK(be, cudaStreamSynchronize(im->stream));
        cudaFree(im->scratch);
        im->scratch = NULL;
        im->scratch_bytes = 0;
    }
    CU_CHECK(be, cudaMalloc(&im->scratch, bytes));
    im->scratch_bytes = bytes;
    return 0;
}

static int cuda_pool(sp_backend *be, const float *x, int64_t T, int64_t D, sp_pool_op op,
                     float *out_host) {
    if (T > 0 && D == 0) return 0;
    if (T <= 0 || D <= 0) return set_err(be, "cuda pool: bad shape T=%lld D=%lld", (long long)T,
                                         (long long)D);
    if (!x || !out_host) return set_err(be, "cuda pool: NULL argument");
    if (enter(be)) return -1;
    struct cuda_impl *im = IMPL(be);
    if (op == SP_POOL_FIRST || op == SP_POOL_LAST) {
        const float *row = x + (op == SP_POOL_FIRST ? 0 : (T - 1) * D);
        CU_CHECK(be, cudaMemcpyAsync(out_host, row, (size_t)D * sizeof(float),
                                     cudaMemcpyDeviceToHost, im->stream));
        CU_CHECK(be, cudaStreamSynchronize(im->stream));
        return 0;
    }
    if (op != SP_POOL_MEAN) return set_err(be, "cuda pool: unknown op %d", (int)op);
    int64_t nch = (T + 63) / 64;
    if (nch > 256) nch = 256;
    const int64_t ngrid_x = (D + 31) / 32;
    if (ngrid_x > INT32_MAX) return set_err(be, "cuda pool: D too large");
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

/* ------------------------------------------------------------ mixing: paths */

static int is_pow2(int64_t x) { return x > 0 && (x & (x - 1)) == 0; }

/* Pairs of channels per fused block: 4 pairs (8 floats = one 32-byte sector
 * per row) while that keeps the block's buffer at 64 KiB. */
static int fused_pairs(int64_t T) { return T <= 2048 ? 4 : (T == 4096 ? 2 : 1); }

static size_t fused_smem(int64_t T) {
    return (size_t)fused_pairs(T) * (size_t)T * sizeof(float2) + (size_t)(T / 2) * sizeof(float2);
}

static int fused_ok(struct cuda_impl *im, int64_t T) {
    return T >= 2 && is_pow2(T) && T <= im->fused_max_T;
}

static int64_t dft_kcap(int64_t T, int64_t tw_bytes) {
    return tw_bytes / ((int64_t)T * 2 * (int64_t)sizeof(float));
}

/* Path for a shape with k >= 1 bins (see docs/cuda.md). */
static int choose_path(struct cuda_impl *im, int64_t T, int64_t D, int64_t k) {
    (void)D;
    switch (im->mix_mode) {
    case MIX_FUSED: return fused_ok(im, T) ? MIX_FUSED : MIX_CUFFT;
    case MIX_DFTGEMM:
        return (k <= dft_kcap(T, DFTGEMM_FORCED_TW_BYTES) && T <= INT32_MAX) ? MIX_DFTGEMM
                                                                             : MIX_CUFFT;
    case MIX_CUFFT: return MIX_CUFFT;
    default:
        if (fused_ok(im, T)) return MIX_FUSED;
        if (k <= DFTGEMM_AUTO_KMAX && k <= dft_kcap(T, DFTGEMM_AUTO_TW_BYTES) && T <= INT32_MAX)
            return MIX_DFTGEMM;
        return MIX_CUFFT;
    }
}

/* The cufft path's chunking: nchunks chunks of nc channels, the last one nlast. */
static void cufft_chunks(int64_t T, int64_t D, int64_t *nc, int64_t *nlast) {
    const int64_t per = (T / 2 + 1) * 8 + T * 4;
    int64_t c = CUFFT_CHUNK_BYTES / per;
    if (c < 1) c = 1;
    if (c >= D) {
        *nc = *nlast = D;
        return;
    }
    /* chunk starts 128-byte aligned when chunks are wide, at least 8-byte
     * aligned (complex-sized) otherwise */
    c = c >= 32 ? c / 32 * 32 : (c >= 2 ? c / 2 * 2 : 2);
    if (c >= D) c = D;
    const int64_t n = (D + c - 1) / c;
    *nc = c;
    *nlast = D - (n - 1) * c;
}

/* One cuFFT plan for the backend's stream, with the work area left to the
 * caller (it comes from the arena): cufftPlanMany64's layout arguments. On
 * failure nothing is left allocated and *what names the failing call. */
static cufftResult make_plan(cudaStream_t stream, int rank, long long *n, long long *inembed,
                             long long istride, long long idist, long long *onembed,
                             long long ostride, long long odist, cufftType type, long long batch,
                             cufftHandle *out, size_t *work, const char **what) {
    cufftHandle h = 0;
    cufftResult r;
    *what = "cufftCreate";
    if ((r = cufftCreate(&h)) != CUFFT_SUCCESS) return r;
    *what = "cufftSetAutoAllocation";
    if ((r = cufftSetAutoAllocation(h, 0)) == CUFFT_SUCCESS) {
        *what = type == CUFFT_R2C ? "cufftMakePlanMany64(R2C)" : "cufftMakePlanMany64(C2R)";
        if ((r = cufftMakePlanMany64(h, rank, n, inembed, istride, idist, onembed, ostride, odist,
                                     type, batch, work)) == CUFFT_SUCCESS) {
            *what = "cufftSetStream";
            r = cufftSetStream(h, stream);
        }
    }
    if (r != CUFFT_SUCCESS) {
        cufftDestroy(h);
        return r;
    }
    *out = h;
    return CUFFT_SUCCESS;
}

/* Cached cuFFT plan pair for (T, row stride D, batch nc); NULL + err on failure. */
static struct fft_plan *get_plan(sp_backend *be, int64_t T, int64_t D, int64_t nc) {
    struct cuda_impl *im = IMPL(be);
    for (int i = 0; i < PLAN_CACHE; i++) {
        struct fft_plan *p = &im->plans[i];
        if (p->valid && p->T == T && p->D == D && p->nc == nc) return p;
    }
    struct fft_plan *p = &im->plans[im->plan_next];
    im->plan_next = (im->plan_next + 1) % PLAN_CACHE;
    if (p->valid) {
        cudaStreamSynchronize(im->stream); /* the plan may still be in use */
        cufftDestroy(p->r2c);
        cufftDestroy(p->c2r);
        p->valid = 0;
    }
    cufftHandle r2c = 0, c2r = 0;
    cufftResult r;
    size_t w1 = 0, w2 = 0;
    long long n[1] = {(long long)T};
    long long emb_real[1] = {(long long)T};
    long long emb_cplx[1] = {(long long)(T / 2 + 1)};
    const char *what;
    /* in: u[t * D + c], out: spec[f * nc + c] */
    if ((r = make_plan(im->stream, 1, n, emb_real, (long long)D, 1, emb_cplx, (long long)nc, 1,
                       CUFFT_R2C, (long long)nc, &r2c, &w1, &what)) != CUFFT_SUCCESS)
        goto fail;
    /* in: spec[f * nc + c], out: y[t * nc + c] */
    if ((r = make_plan(im->stream, 1, n, emb_cplx, (long long)nc, 1, emb_real, (long long)nc, 1,
                       CUFFT_C2R, (long long)nc, &c2r, &w2, &what)) != CUFFT_SUCCESS) {
        cufftDestroy(r2c);
        goto fail;
    }
    p->valid = 1;
    p->T = T;
    p->D = D;
    p->nc = nc;
    p->r2c = r2c;
    p->c2r = c2r;
    p->work = w1 > w2 ? w1 : w2;
    return p;
fail:
    set_err(be, "cuda spectral_mix: %s failed for T=%lld batch=%lld: %s (%d)", what, (long long)T,
            (long long)nc, cufft_str(r), (int)r);
    return NULL;
}

/* Workspace of the cufft path: spectrum, real temp, cuFFT work area. Returns
 * non-zero (message in err) if a plan cannot be made. */
static int cufft_ws(sp_backend *be, int64_t T, int64_t D, size_t *spec_b, size_t *tmp_b,
                    size_t *work_b) {
    int64_t nc, nlast;
    cufft_chunks(T, D, &nc, &nlast);
    *spec_b = align_up((size_t)(T / 2 + 1) * (size_t)nc * sizeof(float2));
    *tmp_b = align_up((size_t)T * (size_t)nc * sizeof(float));
    struct fft_plan *p = get_plan(be, T, D, nc);
    if (!p) return -1;
    size_t w = p->work;
    if (nlast != nc) {
        struct fft_plan *q = get_plan(be, T, D, nlast);
        if (!q) return -1;
        if (q->work > w) w = q->work;
    }
    *work_b = align_up(w);
    return 0;
}

static size_t dft_ws(int64_t k, int64_t D) {
    return align_up((size_t)(2 * k) * (size_t)D * sizeof(float));
}

static size_t cuda_mix_workspace_size(sp_backend *be, int64_t T, int64_t D) {
    if (T < 2 || D <= 0) return 0;
    if (enter(be)) return 0;
    struct cuda_impl *im = IMPL(be);
    const int64_t kmax = T / 2;
    size_t need = 0;
    int may_cufft = 0;
    /* the largest need over every k the op may be called with */
    switch (im->mix_mode) {
    case MIX_FUSED: may_cufft = !fused_ok(im, T); break;
    case MIX_CUFFT: may_cufft = 1; break;
    case MIX_DFTGEMM: {
        int64_t kc = dft_kcap(T, DFTGEMM_FORCED_TW_BYTES);
        if (kc > kmax) kc = kmax;
        need = dft_ws(kc, D);
        may_cufft = kc < kmax || T > INT32_MAX;
        break;
    }
    default:
        if (!fused_ok(im, T)) {
            int64_t kc = dft_kcap(T, DFTGEMM_AUTO_TW_BYTES);
            if (kc > DFTGEMM_AUTO_KMAX) kc = DFTGEMM_AUTO_KMAX;
            if (kc > kmax) kc = kmax;
            need = dft_ws(kc, D);
            may_cufft = kc < kmax || T > INT32_MAX;
        }
        break;
    }
    if (may_cufft) {
        size_t s, t, w;
        if (cufft_ws(be, T, D, &s, &t, &w)) {
            /* Plans failed; spectral_mix will report it. Return a guess. */
            w = s;
        }
        if (s + t + w > need) need = s + t + w;
    }
    return need;
}

static int mix_fused(sp_backend *be, const float *u, const float *filter, const float *bias,
                     int64_t K, int64_t k, int64_t T, int64_t D, float *h) {
    struct cuda_impl *im = IMPL(be);
    const int P = fused_pairs(T);
    const size_t smem = fused_smem(T);
    int logT = 0;
    while ((1LL << logT) < T) logT++;
    if ((int)smem > im->fused_smem_set) {
        CU_CHECK(be, cudaFuncSetAttribute(k_fused_mix, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                          (int)smem));
        im->fused_smem_set = (int)smem;
    }
    const int64_t nblocks = (D + 2 * P - 1) / (2 * P);
    if (nblocks > INT32_MAX) return set_err(be, "cuda spectral_mix: D too large");
    int threads = P * (int)(T / 2);
    threads = threads >= 512 ? 512 : (threads + 31) / 32 * 32;
    k_fused_mix<<<(unsigned)nblocks, threads, smem, im->stream>>>(u, filter, bias, h, K, (int)k,
                                                                  (int)T, logT, D, P);
    LAUNCH_CHECK(be, "fused_mix");
    return 0;
}

static int ensure_twiddles(sp_backend *be, int64_t T, int64_t k) {
    struct cuda_impl *im = IMPL(be);
    if (im->tw && im->tw_T == T && im->tw_k == k) return 0;
    const size_t bytes = (size_t)T * (size_t)(2 * k) * sizeof(float);
    if (im->tw_bytes < bytes) {
        if (im->tw) {
            CU_CHECK(be, cudaStreamSynchronize(im->stream));
            cudaFree(im->tw);
            im->tw = NULL;
            im->tw_bytes = 0;
        }
        CU_CHECK(be, cudaMalloc((void **)&im->tw, bytes));
        im->tw_bytes = bytes;
    }
    im->tw_T = im->tw_k = 0;
    k_twiddles<<<grid_for(T * k, 256), 256, 0, im->stream>>>(im->tw, T, k);
    LAUNCH_CHECK(be, "twiddles");
    im->tw_T = T;
    im->tw_k = k;
    return 0;
}

static int mix_dftgemm(sp_backend *be, const float *u, const float *filter, const float *bias,
                       int64_t K, int64_t k, int64_t T, int64_t D, void *ws, float *h) {
    struct cuda_impl *im = IMPL(be);
    if (D > INT32_MAX || 2 * k > INT32_MAX || T > INT32_MAX)
        return set_err(be, "cuda spectral_mix: shape too large for dftgemm");
    if (!ws) return set_err(be, "cuda spectral_mix: NULL workspace");
    if (ensure_twiddles(be, T, k)) return -1;
    float *S = (float *)ws; /* 2k x D row-major */
    const float one = 1.0f, zero = 0.0f;
    const int iD = (int)D, iT = (int)T, k2 = (int)(2 * k);
    /* S^T (D x 2k, col-major) = u^T (D x T) * Tw (T x 2k); Tw is stored as
     * a column-major 2k x T matrix (ld 2k), hence OP_T. */
    BLAS_CHECK(be, cublasSgemm(im->blas, CUBLAS_OP_N, CUBLAS_OP_T, iD, k2, iT, &one, u, iD, im->tw,
                               k2, &zero, S, iD));
    k_dft_filter<<<grid_for(k * D, 256), 256, 0, im->stream>>>(S, filter, bias, K, k, D,
                                                               1.0f / (float)T);
    LAUNCH_CHECK(be, "dft_filter");
    /* h^T (D x T) += Z^T (D x 2k) * Tw^T (2k x T) */
    BLAS_CHECK(be, cublasSgemm(im->blas, CUBLAS_OP_N, CUBLAS_OP_N, iD, iT, k2, &one, S, iD, im->tw,
                               k2, &one, h, iD));
    return 0;
}

static int mix_cufft(sp_backend *be, const float *u, const float *filter, const float *bias,
                     int64_t K, int64_t k, int64_t T, int64_t D, void *ws, float *h) {
    struct cuda_impl *im = IMPL(be);
    if (!ws) return set_err(be, "cuda spectral_mix: NULL workspace");
    size_t spec_b, tmp_b, work_b;
    if (cufft_ws(be, T, D, &spec_b, &tmp_b, &work_b)) return -1;
    int64_t nc, nlast;
    cufft_chunks(T, D, &nc, &nlast);
    float2 *spec = (float2 *)ws;
    float *tmp = (float *)((char *)ws + spec_b);
    void *work = work_b ? (void *)((char *)ws + spec_b + tmp_b) : NULL;
    const int64_t nbins = T / 2 + 1;
    for (int64_t c0 = 0; c0 < D; c0 += nc) {
        const int64_t n = (D - c0) < nc ? (D - c0) : nc;
        /* get_plan hits the cache filled by cufft_ws above */
        struct fft_plan *p = get_plan(be, T, D, n);
        if (!p) return -1;
        if (work) {
            FFT_CHECK(be, cufftSetWorkArea(p->r2c, work));
            FFT_CHECK(be, cufftSetWorkArea(p->c2r, work));
        }
        /* out-of-place R2C leaves its input intact (u is const for us) */
        FFT_CHECK(be, cufftExecR2C(p->r2c, (cufftReal *)(u + c0), (cufftComplex *)spec));
        k_cufft_filter<<<grid_for(nbins * n, 256), 256, 0, im->stream>>>(spec, filter, K, k, nbins,
                                                                         n, c0, 1.0f / (float)T);
        LAUNCH_CHECK(be, "cufft_filter");
        FFT_CHECK(be, cufftExecC2R(p->c2r, (cufftComplex *)spec, (cufftReal *)tmp));
        k_cufft_add<<<grid_for(T * n, 256), 256, 0, im->stream>>>(h, tmp, bias, T, D, n, c0);
        LAUNCH_CHECK(be, "cufft_add");
    }
    return 0;
}

static int cuda_spectral_mix(sp_backend *be, const float *u, const float *filter,
                             const float *bias, int64_t K, int64_t T, int64_t D, void *workspace,
                             float *h) {
    if (T < 0 || D < 0 || K < 0)
        return set_err(be, "cuda spectral_mix: bad shape T=%lld D=%lld K=%lld", (long long)T,
                       (long long)D, (long long)K);
    if (T == 0 || D == 0) return 0;
    if (!u || !h || (K > 0 && !filter)) return set_err(be, "cuda spectral_mix: NULL argument");
    if (enter(be)) return -1;
    struct cuda_impl *im = IMPL(be);
    const int64_t k = K < T / 2 ? K : T / 2;
    if (k == 0) {
        if (bias) {
            k_add_bias_rows<<<grid_for(T * D, 256), 256, 0, im->stream>>>(h, bias, T, D);
            LAUNCH_CHECK(be, "add_bias");
        }
        return 0;
    }
    switch (choose_path(im, T, D, k)) {
    case MIX_FUSED: return mix_fused(be, u, filter, bias, K, k, T, D, h);
    case MIX_DFTGEMM: return mix_dftgemm(be, u, filter, bias, K, k, T, D, workspace, h);
    default: return mix_cufft(be, u, filter, bias, K, k, T, D, workspace, h);
    }
}

/* ------------------------------------------------------- create / destroy */

static void cuda_destroy(sp_backend *be) {
    if (!be) return;
    struct cuda_impl *im = IMPL(be);
    if (im) {
        cudaSetDevice(im->device);
        if (im->stream) cudaStreamSynchronize(im->stream);
        for (int i = 0; i < PLAN_CACHE; i++)
            if (im->plans[i].valid) {
                cufftDestroy(im->plans[i].r2c);
                cufftDestroy(im->plans[i].c2r);
            }
        for (int i = 0; i < F2D_PLAN_CACHE; i++)
            if (im->f2d[i].valid) cufftDestroy(im->f2d[i].r2c);
        if (im->blas) cublasDestroy(im->blas);
        if (im->tw) cudaFree(im->tw);
        if (im->scratch) cudaFree(im->scratch);
        if (im->stream) cudaStreamDestroy(im->stream);
        free(im);
    }
    free(be);
}

/* FNet's 2-D Fourier mixing: out = Re(FFT2(x)) over (sequence, hidden).
 * One cuFFT 2-D real-to-complex transform of the row-major T x D array gives
 * Y[t][k] for k <= D/2 (T x (D/2+1) complex, in the workspace); k_f2d_expand
 * fills the other half from Hermitian symmetry, Re X[t][k] = Re Y[(T-t)%T][D-k],
 * as kernels/cpu/fourier2d_cpu.c does. cuFFT's work area comes from the
 * workspace too, so the arena accounts for every byte. When T or D is 1 the
 * 2-D transform is the 1-D one of the n = T * D vector, planned as such (no
 * degenerate dimension handed to cuFFT): Re X[i] = Re Z[min(i, n - i)]. */
__global__ void k_f2d_expand(const float2 *__restrict__ Y, int64_t T, int64_t D,
                             float *__restrict__ out) {
    const int64_t nc = D / 2 + 1;
    GRID_STRIDE(i, T * D) {
        const int64_t t = i / D, k = i % D;
        out[i] = k < nc ? Y[t * nc + k].x : Y[((T - t) % T) * nc + (D - k)].x;
    }
}

__global__ void k_f2d_expand_1d(const float2 *__restrict__ Z, int64_t n, float *__restrict__ out) {
    GRID_STRIDE(i, n) { out[i] = Z[i <= n / 2 ? i : n - i].x; }
}

/* Cached 2-D plan for (T, D); NULL + err on failure. */
static struct f2d_plan *get_f2d_plan(sp_backend *be, int64_t T, int64_t D) {
    struct cuda_impl *im = IMPL(be);
    for (int i = 0; i < F2D_PLAN_CACHE; i++) {
        struct f2d_plan *p = &im->f2d[i];
        if (p->valid && p->T == T && p->D == D) return p;
    }
    struct f2d_plan *p = &im->f2d[im->f2d_next];
    im->f2d_next = (im->f2d_next + 1) % F2D_PLAN_CACHE;
    if (p->valid) {
        cudaStreamSynchronize(im->stream); /* the plan may still be in use */
        cufftDestroy(p->r2c);
        p->valid = 0;
    }
    cufftHandle h = 0;
    cufftResult r;
    size_t work = 0;
    const int rank = (T == 1 || D == 1) ? 1 : 2;
    long long n[2] = {(long long)T, (long long)D};
    if (rank == 1) n[0] = (long long)(T * D);
    const char *what;
    if ((r = make_plan(im->stream, rank, n, NULL, 1, 0, NULL, 1, 0, CUFFT_R2C, 1, &h, &work,
                       &what)) != CUFFT_SUCCESS) {
        set_err(be, "cuda fourier2d_real: %s failed for T=%lld D=%lld (rank %d): %s (%d)", what,
                (long long)T, (long long)D, rank, cufft_str(r), (int)r);
        return NULL;
    }
    p->valid = 1;
    p->T = T;
    p->D = D;
    p->r2c = h;
    p->work = work;
    return p;
}

static size_t f2d_spec_bytes(int64_t T, int64_t D) {
    return align_up((size_t)T * (size_t)(D / 2 + 1) * sizeof(float2));
}

static size_t cuda_fourier2d_workspace_size(sp_backend *be, int64_t T, int64_t D) {
    if (T <= 0 || D <= 0 || enter(be)) return 0;
    if (T * D == 1) return f2d_spec_bytes(1, 1); /* unused: a copy, no plan */
    struct f2d_plan *p = get_f2d_plan(be, T, D);
    /* A failed plan is reported by fourier2d_real; size the spectrum anyway. */
    return f2d_spec_bytes(T, D) + (p ? align_up(p->work) : 0);
}

static int cuda_fourier2d_real(sp_backend *be, const float *x, int64_t T, int64_t D, void *ws,
                               float *out) {
    if (T == 0 && D >= 0) return 0; /* as the CPU op */
    if (T <= 0 || D <= 0 || T > INT32_MAX || D > INT32_MAX)
        return set_err(be, "cuda fourier2d_real: bad shape T=%lld D=%lld", (long long)T,
                       (long long)D);
    if (!x || !ws || !out) return set_err(be, "cuda fourier2d_real: NULL argument");
    if (x == out) return set_err(be, "cuda fourier2d_real: out must not alias x");
    if (enter(be)) return -1;
    struct cuda_impl *im = IMPL(be);
    if (T * D == 1) { /* the DFT of one value is itself */
        CU_CHECK(be, cudaMemcpyAsync(out, x, sizeof(float), cudaMemcpyDeviceToDevice, im->stream));
        return 0;
    }
    struct f2d_plan *p = get_f2d_plan(be, T, D);
    if (!p) return -1;
    float2 *spec = (float2 *)ws;
    void *work = (char *)ws + f2d_spec_bytes(T, D);
    FFT_CHECK(be, cufftSetWorkArea(p->r2c, work));
    /* An out-of-place R2C leaves its input intact (only C2R overwrites it). */
    FFT_CHECK(be, cufftExecR2C(p->r2c, (cufftReal *)x, (cufftComplex *)spec));
    if (T == 1 || D == 1)
        k_f2d_expand_1d<<<grid_for(T * D, 256), 256, 0, im->stream>>>(spec, T * D, out);
    else
        k_f2d_expand<<<grid_for(T * D, 256), 256, 0, im->stream>>>(spec, T, D, out);
    LAUNCH_CHECK(be, "f2d_expand");
    return 0;
}

static int cuda_add(sp_backend *be, const float *x, int64_t n, float *y) {
    if (enter(be)) return -1; /* the device, as every other entry point */
    struct cuda_impl *im = IMPL(be);
    const float one = 1.0f;
    /* cublasSaxpy takes an int count: go in chunks. */
    for (int64_t i = 0; i < n; i += INT_MAX) {
        int m = (int)(n - i < INT_MAX ? n - i : INT_MAX);
        BLAS_CHECK(be, cublasSaxpy(im->blas, m, &one, x + i, 1, y + i, 1));
    }
    return 0;
}

static const sp_backend_ops cuda_ops = {
    "cuda",
    cuda_destroy,
    cuda_buffer_alloc,
    cuda_buffer_free,
    cuda_upload,
    cuda_download,
    cuda_synchronize,
    cuda_get_rows,
    cuda_layer_norm,
    cuda_linear,
    cuda_mix_workspace_size,
    cuda_spectral_mix,
    cuda_pool,
    cuda_fourier2d_workspace_size,
    cuda_fourier2d_real,
    cuda_add,
};

extern "C" int sp_backend_cuda_device_count(void) {
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

extern "C" sp_backend *sp_backend_cuda_create(int device, char *err, size_t err_len) {
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
    be->impl = im;
    im->device = device;
    im->mix_mode = mode;

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
    im->fused_max_T = 0;
    for (int64_t T = 2; T <= (1 << 20); T *= 2)
        if (fused_smem(T) <= (size_t)optin) im->fused_max_T = (int)T;
    im->fused_smem_set = 48 * 1024; /* allowed without opting in */
    return be;
}
