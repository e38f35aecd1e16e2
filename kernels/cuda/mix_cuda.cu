/* The spectralmlp token mixing on the GPU, spectral_mix and mix_block (see
 * docs/cuda.md for the maths and the path heuristic). Three implementations
 * of spectral_mix:
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
 * path; a forced path that cannot take a shape falls back to cufft, or fails
 * with SPECTRAL_CUDA_STRICT=1 (so that a test of a path proves it ran). */
#include "kernels/cuda/cuda_internal.cuh"

#include <pthread.h>
#include <stdint.h>
#include <stdio.h>

/* ------------------------------------------------------------ parameters */

/* auto picks dftgemm for k <= this (when fused cannot run) ... */
#define DFTGEMM_AUTO_KMAX 32
/* ... and when its twiddle table (T x 2k floats) is at most this many bytes. */
#define DFTGEMM_AUTO_TW_BYTES ((int64_t)128 << 20)
/* A forced dftgemm falls back to cufft above this twiddle size: the tables
 * live outside the arena, in the backend's bounded cache (TW_CACHE_BYTES). */
#define DFTGEMM_FORCED_TW_BYTES ((int64_t)TW_CACHE_BYTES)
/* cufft path: channels per chunk are chosen so that the spectrum and the
 * real temp of one chunk fit in about this many bytes. */
#define CUFFT_CHUNK_BYTES ((int64_t)256 << 20)

/* --------------------------------------------------------------- kernels */

/* h[t, d] += bias[d] (the k = 0 mixing). */
__global__ void k_add_bias_rows(float *h, const float *__restrict__ bias, int64_t T, int64_t D) {
    ROWS_COLS(t, d, T, D) { h[t * D + d] += bias[d]; }
}

/* cufft path: scale the R2C spectrum (T/2+1 rows x nc channels, row-major)
 * into the half spectrum whose C2R is the mixing output:
 * G_0 = Re(W_0)/T (real), G_f = W_f/(2T) for 1 <= f < k, 0 above. */
__global__ void k_cufft_filter(float2 *spec, const float *__restrict__ filter, int64_t K, int64_t k,
                               int64_t nbins, int64_t nc, int64_t c0, float invT) {
    ROWS_COLS(f, c, nbins, nc) {
        const int64_t i = f * nc + c;
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
    ROWS_COLS(t, c, T, nc) {
        float v = y[t * nc + c];
        if (bias) v += bias[c0 + c];
        h[t * D + c0 + c] += v;
    }
}

/* dftgemm: tw[t, f] = cos(2 pi f t / T), tw[t, k + f] = sin(2 pi f t / T),
 * row-major T x 2k. The angle is reduced exactly ((f t) mod T) and evaluated
 * in double, so every entry is correctly rounded to about 1 ulp. */
__global__ void k_twiddles(float *tw, int64_t T, int64_t k) {
    ROWS_COLS(t, f, T, k) {
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
    ROWS_COLS(f, d, k, D) {
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

/* ------------------------------------------------------------ mixing: paths */

static int is_pow2(int64_t x) { return x > 0 && (x & (x - 1)) == 0; }

/* Pairs of channels per fused block: 4 pairs (8 floats = one 32-byte sector
 * per row) while that keeps the block's buffer at 64 KiB. */
static int fused_pairs(int64_t T) { return T <= 2048 ? 4 : (T == 4096 ? 2 : 1); }

static size_t fused_smem(int64_t T) {
    return (size_t)fused_pairs(T) * (size_t)T * sizeof(float2) + (size_t)(T / 2) * sizeof(float2);
}

int sp_cuda_fused_max_T(int smem_optin) {
    int best = 0;
    for (int64_t T = 2; T <= (1 << 20); T *= 2)
        if (fused_smem(T) <= (size_t)smem_optin) best = (int)T;
    return best;
}

/* Process-wide: the largest dynamic shared memory already allowed on
 * k_fused_mix per device (the attribute lives in the device's primary
 * context, shared by every backend on it). */
#define FUSED_MAX_DEVICES 64
static pthread_mutex_t g_fused_lock = PTHREAD_MUTEX_INITIALIZER;
static int g_fused_smem[FUSED_MAX_DEVICES];

int sp_cuda_fused_prepare(sp_backend *be) {
    struct cuda_impl *im = IMPL(be);
    if (im->fused_max_T < 2) return 0;
    int need = 0; /* the largest over every T the kernel takes */
    for (int64_t T = 2; T <= im->fused_max_T; T *= 2)
        if ((int)fused_smem(T) > need) need = (int)fused_smem(T);
    if (need <= 48 * 1024) return 0; /* allowed without opting in */
    pthread_mutex_lock(&g_fused_lock);
    const int dev = im->device;
    cudaError_t e = cudaSuccess;
    if (dev >= FUSED_MAX_DEVICES || g_fused_smem[dev] < need) {
        /* Always the device's largest size, never lowered: any backend's
         * launch at any T then fits, whatever the order. */
        e = cudaFuncSetAttribute(k_fused_mix, cudaFuncAttributeMaxDynamicSharedMemorySize, need);
        if (e == cudaSuccess && dev < FUSED_MAX_DEVICES) g_fused_smem[dev] = need;
    }
    pthread_mutex_unlock(&g_fused_lock);
    if (e != cudaSuccess) {
        (void)cudaGetLastError();
        /* without the opt-in only what fits 48 KiB can run fused */
        im->fused_max_T = sp_cuda_fused_max_T(48 * 1024);
        return sp_cuda_set_err(be, "cuda: cudaFuncSetAttribute(fused_mix, %d bytes): %s", need,
                               cudaGetErrorString(e));
    }
    return 0;
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
 * failure nothing is left allocated and *what names the failing call. Also
 * used by fourier2d_cuda.cu. */
cufftResult sp_cuda_make_plan(cudaStream_t stream, int rank, long long *n, long long *inembed,
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

static void drop_plan(struct cuda_impl *im, struct fft_plan *p) {
    cufftDestroy(p->r2c);
    cufftDestroy(p->c2r);
    im->plans_elems -= p->T * p->nc;
    p->valid = 0;
}

void sp_cuda_mix_release(struct cuda_impl *im) {
    for (int i = 0; i < PLAN_CACHE; i++)
        if (im->plans[i].valid) drop_plan(im, &im->plans[i]);
    for (int i = 0; i < TW_CACHE; i++)
        if (im->tw[i].p) {
            cudaFree(im->tw[i].p);
            im->tw[i].p = NULL;
        }
    im->tw_total = 0;
}

/* Cached cuFFT plan pair for (T, row stride D, batch nc), LRU; NULL + err on
 * failure. A hit neither plans nor synchronizes. */
static struct fft_plan *get_plan(sp_backend *be, int64_t T, int64_t D, int64_t nc) {
    struct cuda_impl *im = IMPL(be);
    struct fft_plan *p = NULL;
    for (int i = 0; i < PLAN_CACHE; i++) {
        struct fft_plan *q = &im->plans[i];
        if (q->valid && q->T == T && q->D == D && q->nc == nc) {
            q->used = ++im->clock;
            return q;
        }
    }
    /* make room: a free slot, and the summed length x batch within bounds */
    int synced = 0;
    for (;;) {
        struct fft_plan *lru = NULL;
        p = NULL;
        for (int i = 0; i < PLAN_CACHE; i++) {
            struct fft_plan *q = &im->plans[i];
            if (!q->valid) p = p ? p : q;
            else if (!lru || q->used < lru->used) lru = q;
        }
        if (p && (im->plans_elems + T * nc <= PLAN_CACHE_ELEMS || !lru)) break;
        if (!synced) { /* an evicted plan may still be used by queued work */
            if (sp_cuda_evict_sync(be)) return NULL;
            synced = 1;
        }
        drop_plan(im, lru);
    }
    cufftHandle r2c = 0, c2r = 0;
    cufftResult r;
    size_t w1 = 0, w2 = 0;
    long long n[1] = {(long long)T};
    long long emb_real[1] = {(long long)T};
    long long emb_cplx[1] = {(long long)(T / 2 + 1)};
    const char *what;
    /* in: u[t * D + c], out: spec[f * nc + c] */
    if ((r = sp_cuda_make_plan(im->stream, 1, n, emb_real, (long long)D, 1, emb_cplx,
                               (long long)nc, 1, CUFFT_R2C, (long long)nc, &r2c, &w1, &what)) !=
        CUFFT_SUCCESS)
        goto fail;
    /* in: spec[f * nc + c], out: y[t * nc + c] */
    if ((r = sp_cuda_make_plan(im->stream, 1, n, emb_cplx, (long long)nc, 1, emb_real,
                               (long long)nc, 1, CUFFT_C2R, (long long)nc, &c2r, &w2, &what)) !=
        CUFFT_SUCCESS) {
        cufftDestroy(r2c);
        goto fail;
    }
    p->valid = 1;
    p->used = ++im->clock;
    p->T = T;
    p->D = D;
    p->nc = nc;
    p->r2c = r2c;
    p->c2r = c2r;
    p->work = w1 > w2 ? w1 : w2;
    im->plans_elems += T * nc;
    /* a later workspace query for this shape then asks at least this much */
    for (int i = 0; i < PLAN_CACHE; i++) {
        struct ws_memo *m = &im->memo[i];
        if (m->valid && m->T == T && m->D == D && m->nc == nc && m->work < p->work)
            m->work = p->work;
    }
    return p;
fail:
    sp_cuda_set_err(be, "cuda spectral_mix: %s failed for T=%lld batch=%lld: %s (%d)", what,
                    (long long)T, (long long)nc, sp_cuda_cufft_str(r), (int)r);
    return NULL;
}

/* The work area a plan pair for (T, D, nc) will want, found without making
 * a plan (cufftGetSizeMany64 on an unplanned handle: host work only), or a
 * cached plan's exact need, whichever is larger; memoized, LRU. The run
 * checks the real plan's need against it (mix_cufft). */
static int work_bound(sp_backend *be, int64_t T, int64_t D, int64_t nc, size_t *out) {
    struct cuda_impl *im = IMPL(be);
    struct ws_memo *m = NULL, *lru = NULL;
    for (int i = 0; i < PLAN_CACHE; i++) {
        struct ws_memo *q = &im->memo[i];
        if (q->valid && q->T == T && q->D == D && q->nc == nc) {
            q->used = ++im->clock;
            *out = q->work;
            return 0;
        }
        if (!q->valid) m = m ? m : q;
        else if (!lru || q->used < lru->used) lru = q;
    }
    if (!m) m = lru;
    long long n[1] = {(long long)T};
    long long emb_real[1] = {(long long)T};
    long long emb_cplx[1] = {(long long)(T / 2 + 1)};
    size_t w[2] = {0, 0};
    for (int j = 0; j < 2; j++) {
        cufftHandle h = 0;
        cufftResult r = cufftCreate(&h);
        if (r == CUFFT_SUCCESS) r = cufftSetAutoAllocation(h, 0);
        if (r == CUFFT_SUCCESS)
            r = j == 0 ? cufftGetSizeMany64(h, 1, n, emb_real, (long long)D, 1, emb_cplx,
                                            (long long)nc, 1, CUFFT_R2C, (long long)nc, &w[0])
                       : cufftGetSizeMany64(h, 1, n, emb_cplx, (long long)nc, 1, emb_real,
                                            (long long)nc, 1, CUFFT_C2R, (long long)nc, &w[1]);
        if (h) cufftDestroy(h);
        if (r != CUFFT_SUCCESS)
            return sp_cuda_set_err(be, "cuda spectral_mix: cufftGetSizeMany64 failed for T=%lld "
                                   "batch=%lld: %s (%d)", (long long)T, (long long)nc,
                                   sp_cuda_cufft_str(r), (int)r);
    }
    size_t work = w[0] > w[1] ? w[0] : w[1];
    for (int i = 0; i < PLAN_CACHE; i++) {
        struct fft_plan *p = &im->plans[i];
        if (p->valid && p->T == T && p->D == D && p->nc == nc && p->work > work) work = p->work;
    }
    m->valid = 1;
    m->used = ++im->clock;
    m->T = T;
    m->D = D;
    m->nc = nc;
    m->work = work;
    *out = work;
    return 0;
}

/* Workspace of the cufft path: spectrum, real temp, cuFFT work area (sized
 * without planning). Without the work bound (non-zero return, message in
 * err), *work_b is a guess as large as spectrum + temp, never 0. */
static int cufft_ws(sp_backend *be, int64_t T, int64_t D, size_t *spec_b, size_t *tmp_b,
                    size_t *work_b) {
    int64_t nc, nlast;
    cufft_chunks(T, D, &nc, &nlast);
    *spec_b = align_up((size_t)(T / 2 + 1) * (size_t)nc * sizeof(float2));
    *tmp_b = align_up((size_t)T * (size_t)nc * sizeof(float));
    *work_b = *spec_b + *tmp_b;
    size_t w = 0, w2 = 0;
    if (work_bound(be, T, D, nc, &w)) return -1;
    if (nlast != nc) {
        if (work_bound(be, T, D, nlast, &w2)) return -1;
        if (w2 > w) w = w2;
    }
    *work_b = align_up(w);
    return 0;
}

static size_t dft_ws(int64_t k, int64_t D) {
    return align_up((size_t)(2 * k) * (size_t)D * sizeof(float));
}

/* The cufft path's need when even the work bound is unknown: never 0. */
static size_t cufft_guess(int64_t T, int64_t D) {
    int64_t nc, nlast;
    cufft_chunks(T, D, &nc, &nlast);
    return 2 * (align_up((size_t)(T / 2 + 1) * (size_t)nc * sizeof(float2)) +
                align_up((size_t)T * (size_t)nc * sizeof(float)));
}

/* Scratch of spectral_mix for k >= 1 bins on the path it will take; plans
 * nothing. Non-zero (message in err) with *need a guess on failure. */
static int mix_ws_for(sp_backend *be, int64_t T, int64_t D, int64_t k, size_t *need);

size_t sp_cuda_mix_workspace_size(sp_backend *be, int64_t T, int64_t D) {
    if (T < 2 || D <= 0) return 0;
    if (sp_cuda_enter(be)) return cufft_guess(T, D); /* the op will fail and say why */
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
        (void)cufft_ws(be, T, D, &s, &t, &w); /* on failure w is a guess; the op reports it */
        if (s + t + w > need) need = s + t + w;
    }
    return need;
}

static int mix_ws_for(sp_backend *be, int64_t T, int64_t D, int64_t k, size_t *need) {
    *need = 0;
    switch (choose_path(IMPL(be), T, D, k)) {
    case MIX_FUSED: return 0;
    case MIX_DFTGEMM: *need = dft_ws(k, D); return 0;
    default: {
        size_t s, t, w;
        const int rc = cufft_ws(be, T, D, &s, &t, &w);
        *need = s + t + w;
        return rc;
    }
    }
}

static int mix_fused(sp_backend *be, const float *u, const float *filter, const float *bias,
                     int64_t K, int64_t k, int64_t T, int64_t D, float *h) {
    struct cuda_impl *im = IMPL(be);
    const int P = fused_pairs(T);
    const size_t smem = fused_smem(T);
    int logT = 0;
    while ((1LL << logT) < T) logT++;
    /* the shared-memory opt-in was set for the device's longest T at create
     * (sp_cuda_fused_prepare), once per device: nothing to set per launch */
    const int64_t nblocks = (D + 2 * P - 1) / (2 * P);
    if (nblocks > INT32_MAX) return sp_cuda_set_err(be, "cuda spectral_mix: D too large");
    int threads = P * (int)(T / 2);
    threads = threads >= 512 ? 512 : (threads + 31) / 32 * 32;
    k_fused_mix<<<(unsigned)nblocks, threads, smem, im->stream>>>(u, filter, bias, h, K, (int)k,
                                                                  (int)T, logT, D, P);
    LAUNCH_CHECK(be, "fused_mix");
    return 0;
}

/* The twiddle table for (T, k) from the LRU cache (at most TW_CACHE tables
 * and TW_CACHE_BYTES bytes), made on a miss; NULL + err on failure. A hit
 * neither allocates nor synchronizes. */
static float *get_twiddles(sp_backend *be, int64_t T, int64_t k) {
    struct cuda_impl *im = IMPL(be);
    for (int i = 0; i < TW_CACHE; i++) {
        struct tw_table *t = &im->tw[i];
        if (t->p && t->T == T && t->k == k) {
            t->used = ++im->clock;
            return t->p;
        }
    }
    const size_t bytes = (size_t)T * (size_t)(2 * k) * sizeof(float);
    if (bytes > TW_CACHE_BYTES) {
        sp_cuda_set_err(be, "cuda spectral_mix: twiddle table T=%lld k=%lld too large",
                        (long long)T, (long long)k);
        return NULL;
    }
    struct tw_table *slot;
    int synced = 0;
    for (;;) {
        struct tw_table *lru = NULL;
        slot = NULL;
        for (int i = 0; i < TW_CACHE; i++) {
            struct tw_table *t = &im->tw[i];
            if (!t->p) slot = slot ? slot : t;
            else if (!lru || t->used < lru->used) lru = t;
        }
        if (slot && (im->tw_total + bytes <= TW_CACHE_BYTES || !lru)) break;
        if (!synced) { /* queued GEMMs may still read the evicted table */
            if (sp_cuda_evict_sync(be)) return NULL;
            synced = 1;
        }
        cudaFree(lru->p);
        lru->p = NULL;
        im->tw_total -= lru->bytes;
    }
    float *p = NULL;
    cudaError_t e = cudaMalloc((void **)&p, bytes);
    if (e != cudaSuccess) {
        (void)cudaGetLastError();
        sp_cuda_set_err(be, "cuda spectral_mix: cudaMalloc of a %zu-byte twiddle table failed: %s",
                        bytes, cudaGetErrorString(e));
        return NULL; /* the slot stays free, the cache consistent */
    }
    k_twiddles<<<grid2d(T, k, 256), 256, 0, im->stream>>>(p, T, k);
    if ((e = cudaGetLastError()) != cudaSuccess) {
        cudaFree(p);
        sp_cuda_set_err(be, "cuda: kernel twiddles failed: %s", cudaGetErrorString(e));
        return NULL;
    }
    slot->p = p;
    slot->T = T;
    slot->k = k;
    slot->bytes = bytes;
    slot->used = ++im->clock;
    im->tw_total += bytes;
    return p;
}

static int mix_dftgemm(sp_backend *be, const float *u, const float *filter, const float *bias,
                       int64_t K, int64_t k, int64_t T, int64_t D, void *ws, float *h) {
    struct cuda_impl *im = IMPL(be);
    if (D > INT32_MAX || 2 * k > INT32_MAX || T > INT32_MAX)
        return sp_cuda_set_err(be, "cuda spectral_mix: shape too large for dftgemm");
    if (!ws) return sp_cuda_set_err(be, "cuda spectral_mix: NULL workspace");
    const float *tw = get_twiddles(be, T, k);
    if (!tw) return -1;
    float *S = (float *)ws; /* 2k x D row-major */
    const float one = 1.0f, zero = 0.0f;
    const int iD = (int)D, iT = (int)T, k2 = (int)(2 * k);
    /* S^T (D x 2k, col-major) = u^T (D x T) * Tw (T x 2k); Tw is stored as
     * a column-major 2k x T matrix (ld 2k), hence OP_T. */
    BLAS_CHECK(be, cublasSgemm(im->blas, CUBLAS_OP_N, CUBLAS_OP_T, iD, k2, iT, &one, u, iD, tw,
                               k2, &zero, S, iD));
    k_dft_filter<<<grid2d(k, D, 256), 256, 0, im->stream>>>(S, filter, bias, K, k, D,
                                                               1.0f / (float)T);
    LAUNCH_CHECK(be, "dft_filter");
    /* h^T (D x T) += Z^T (D x 2k) * Tw^T (2k x T) */
    BLAS_CHECK(be, cublasSgemm(im->blas, CUBLAS_OP_N, CUBLAS_OP_N, iD, iT, k2, &one, S, iD, tw,
                               k2, &one, h, iD));
    return 0;
}

static int mix_cufft(sp_backend *be, const float *u, const float *filter, const float *bias,
                     int64_t K, int64_t k, int64_t T, int64_t D, void *ws, float *h) {
    struct cuda_impl *im = IMPL(be);
    if (!ws) return sp_cuda_set_err(be, "cuda spectral_mix: NULL workspace");
    size_t spec_b, tmp_b, work_b;
    if (cufft_ws(be, T, D, &spec_b, &tmp_b, &work_b)) return -1;
    int64_t nc, nlast;
    cufft_chunks(T, D, &nc, &nlast);
    float2 *spec = (float2 *)ws;
    float *tmp = (float *)((char *)ws + spec_b);
    void *work = (char *)ws + spec_b + tmp_b;
    const int64_t nbins = T / 2 + 1;
    for (int64_t c0 = 0; c0 < D; c0 += nc) {
        const int64_t n = (D - c0) < nc ? (D - c0) : nc;
        /* get_plan hits the cache filled by cufft_ws above */
        struct fft_plan *p = get_plan(be, T, D, n);
        if (!p) return -1;
        if (p->work > work_b) /* cufftGetSizeMany64 underestimated: never overrun */
            return sp_cuda_set_err(be, "cuda spectral_mix: cuFFT wants a %zu-byte work area for "
                                   "T=%lld batch=%lld, the workspace was sized for %zu",
                                   p->work, (long long)T, (long long)n, work_b);
        FFT_CHECK(be, cufftSetWorkArea(p->r2c, work));
        FFT_CHECK(be, cufftSetWorkArea(p->c2r, work));
        /* out-of-place R2C leaves its input intact (u is const for us) */
        FFT_CHECK(be, cufftExecR2C(p->r2c, (cufftReal *)(u + c0), (cufftComplex *)spec));
        k_cufft_filter<<<grid2d(nbins, n, 256), 256, 0, im->stream>>>(spec, filter, K, k, nbins,
                                                                         n, c0, 1.0f / (float)T);
        LAUNCH_CHECK(be, "cufft_filter");
        FFT_CHECK(be, cufftExecC2R(p->c2r, (cufftComplex *)spec, (cufftReal *)tmp));
        k_cufft_add<<<grid2d(T, n, 256), 256, 0, im->stream>>>(h, tmp, bias, T, D, n, c0);
        LAUNCH_CHECK(be, "cufft_add");
    }
    return 0;
}

int sp_cuda_spectral_mix(sp_backend *be, const float *u, const float *filter, const float *bias,
                         int64_t K, int64_t T, int64_t D, void *workspace, float *h) {
    if (T < 0 || D < 0 || K < 0)
        return sp_cuda_set_err(be, "cuda spectral_mix: bad shape T=%lld D=%lld K=%lld",
                               (long long)T, (long long)D, (long long)K);
    if (T == 0 || D == 0) return 0;
    if (!u || !h || (K > 0 && !filter))
        return sp_cuda_set_err(be, "cuda spectral_mix: NULL argument");
    if (sp_cuda_enter(be)) return -1;
    struct cuda_impl *im = IMPL(be);
    const int64_t k = K < T / 2 ? K : T / 2;
    if (k == 0) {
        if (bias) {
            k_add_bias_rows<<<grid2d(T, D, 256), 256, 0, im->stream>>>(h, bias, T, D);
            LAUNCH_CHECK(be, "add_bias");
        }
        return 0;
    }
    const int path = choose_path(im, T, D, k);
    if (im->strict && im->mix_mode != MIX_AUTO && path != im->mix_mode)
        return sp_cuda_set_err(be, "cuda spectral_mix: SPECTRAL_CUDA_STRICT: the forced %s path "
                               "cannot take T=%lld D=%lld k=%lld",
                               im->mix_mode == MIX_FUSED ? "fused" : "dftgemm", (long long)T,
                               (long long)D, (long long)k);
    im->last_path = path;
    switch (path) {
    case MIX_FUSED: return mix_fused(be, u, filter, bias, K, k, T, D, h);
    case MIX_DFTGEMM: return mix_dftgemm(be, u, filter, bias, K, k, T, D, workspace, h);
    default: return mix_cufft(be, u, filter, bias, K, k, T, D, workspace, h);
    }
}

/* -------------------------------------------------------------- mix_block */

/* mix_block composes the ops above, document by document: layer_norm of the
 * document's rows into u, then spectral_mix(u) into those rows of h (the
 * mixing must not cross documents). Everything is queued on the backend's
 * one stream, so documents run one after another and u is reused. There are
 * no host threads or tiles in flight here, so be->max_parallel is ignored:
 * the workspace does not depend on it. The workspace holds u for a document,
 * then spectral_mix's scratch for that document's length:
 *   max over documents of align(T_i D floats) + align(mix_workspace_size(T_i, D)),
 * plus WS_ALIGN so that a caller's pointer can be aligned. */

/* Bytes of workspace for one document of T rows: u, then the mixing's
 * scratch for the path that K gives at this T (so nothing is planned: a
 * measuring pass over thousands of lengths costs no cuFFT plan). */
static size_t doc_workspace(sp_backend *be, int64_t T, int64_t D, int64_t K) {
    const int64_t k = K < T / 2 ? K : T / 2;
    size_t mix = 0;
    if (k >= 1) (void)mix_ws_for(be, T, D, k, &mix); /* a failure leaves a guess */
    return align_up((size_t)T * (size_t)D * sizeof(float)) + align_up(mix);
}

size_t sp_cuda_mix_block_workspace_size(sp_backend *be, const int64_t *offsets, int64_t n_docs,
                                        int64_t D, int64_t K) {
    int64_t bad;
    if (K < 0 || sp_cuda_longest_doc(offsets, n_docs, D, &bad) < 0)
        return 0; /* mix_block reports it */
    if (sp_cuda_enter(be)) return WS_ALIGN; /* mix_block will fail and say why */
    size_t need = 0;
    for (int64_t i = 0; i < n_docs; i++) {
        const int64_t T = offsets[i + 1] - offsets[i];
        /* the mixing's scratch is not monotonic in T (a power of two may need
         * none), so every length counts; a repeated one needs no new call */
        if (i > 0 && T == offsets[i] - offsets[i - 1]) continue;
        const size_t n = doc_workspace(be, T, D, K);
        if (n > need) need = n;
    }
    return need + WS_ALIGN;
}

int sp_cuda_mix_block(sp_backend *be, float *h, const float *ln_w, const float *ln_b, float eps,
                      const float *filter, const float *bias, int64_t K, int64_t D,
                      const int64_t *offsets, int64_t n_docs, void *workspace) {
    if (D <= 0 || K < 0)
        return sp_cuda_set_err(be, "cuda mix_block: bad shape D=%lld K=%lld", (long long)D,
                               (long long)K);
    if (sp_cuda_check_docs(be, "mix_block", offsets, n_docs, D)) return -1;
    if (!h || !ln_w || !ln_b || (K > 0 && !filter) || !workspace)
        return sp_cuda_set_err(be, "cuda mix_block: NULL argument");
    float *u = (float *)align_ptr(workspace);
    for (int64_t i = 0; i < n_docs; i++) {
        const int64_t T = offsets[i + 1] - offsets[i];
        float *hd = h + offsets[i] * D;
        void *mix_ws = (char *)u + align_up((size_t)T * (size_t)D * sizeof(float));
        if (sp_cuda_layer_norm(be, hd, ln_w, ln_b, eps, T, D, u) ||
            sp_cuda_spectral_mix(be, u, filter, bias, K, T, D, mix_ws, hd))
            return -1;
    }
    return 0;
}
