/* The CPU backend: host memory, OpenBLAS for the linears, FFTW3f for the
 * spectral mixing, OpenMP for the element-wise passes.
 *
 * Threading: our own loops use be->n_threads OpenMP threads. OpenBLAS keeps
 * its own pool whose size is process-wide; sp_backend_cpu_create sets it to
 * n_threads (the last backend created wins). */
#define _POSIX_C_SOURCE 200809L /* sysconf */
#include "kernels/backend.h"

#include <cblas.h>
/* OpenBLAS's cblas.h pulls in <complex.h>; keep fftwf_complex a float[2]. */
#define FFTW_NO_Complex
#include <fftw3.h>
#include <limits.h>
#include <math.h>
#include <omp.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* glibc >= 2.35 ships vector erff variants in libmvec (linked through libm's
 * linker script) but declares them only under -ffast-math. Declaring the
 * SIMD clone here lets the GELU loop below call erff 4 lanes at a time; the
 * scalar call cost as much as the sgemm it follows. */
#if defined(__GNUC__) && !defined(__clang__) && defined(__x86_64__) && defined(__GLIBC__) && \
    (__GLIBC__ > 2 || (__GLIBC__ == 2 && __GLIBC_MINOR__ >= 35)) && !defined(__FAST_MATH__)
float erff(float) __attribute__((__simd__("notinbranch")));
#define SP_SIMD_ERFF 1
#endif

/* Channels per mixing tile; overridable (1..64) via SPECTRAL_CPU_MIX_TILE for
 * benchmarking. 16 floats fill a 64-byte cache line on the strided gather. */
#define SP_MIX_TILE_DEFAULT 16
#define SP_MIX_TILE_MAX 64
/* Alignment of every workspace row; the FFTW plans are made on scratch with
 * the same alignment so new-array execution is valid. */
#define SP_ALIGN 64
/* Rows per block of the gather / scatter transposes: 16 strided source lines
 * stay in L1 (a 1 KiB stride maps 64 rows onto too few L1 sets). */
#define SP_MIX_TB 16

typedef struct {
    int tile;           /* channels per mixing tile */
    unsigned fft_flags; /* FFTW_ESTIMATE, or FFTW_MEASURE on request */
} sp_cpu_impl;

static void sp_cpu_set_err(sp_backend *be, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(be->err, sizeof be->err, fmt, ap);
    va_end(ap);
}

/* ------------------------------------------------------------------ memory */

static void *cpu_buffer_alloc(sp_backend *be, size_t bytes) {
    /* aligned_alloc wants a multiple of the alignment and a non-zero size. */
    size_t n = (bytes + 255) / 256 * 256;
    if (n == 0) n = 256;
    if (n < bytes) {
        sp_cpu_set_err(be, "cpu: allocation of %zu bytes overflows", bytes);
        return NULL;
    }
    void *p = aligned_alloc(256, n);
    if (!p) sp_cpu_set_err(be, "cpu: out of memory allocating %zu bytes", bytes);
    return p;
}

static void cpu_buffer_free(sp_backend *be, void *p) {
    (void)be;
    free(p);
}

static int cpu_upload(sp_backend *be, void *dst, const void *src, size_t bytes) {
    if (bytes && (!dst || !src)) {
        sp_cpu_set_err(be, "cpu: upload with a NULL pointer");
        return 1;
    }
    if (bytes) memmove(dst, src, bytes);
    return 0;
}

static int cpu_download(sp_backend *be, void *dst, const void *src, size_t bytes) {
    if (bytes && (!dst || !src)) {
        sp_cpu_set_err(be, "cpu: download with a NULL pointer");
        return 1;
    }
    if (bytes) memmove(dst, src, bytes);
    return 0;
}

static int cpu_synchronize(sp_backend *be) {
    (void)be;
    return 0;
}

/* --------------------------------------------------------------- get_rows */

static int cpu_get_rows(sp_backend *be, const float *table, int64_t D, const int32_t *ids,
                        int64_t T, float *out) {
    if (T < 0 || D < 0) {
        sp_cpu_set_err(be, "cpu get_rows: negative shape T=%lld D=%lld", (long long)T, (long long)D);
        return 1;
    }
    if (T == 0 || D == 0) return 0;
    if (!table || !ids || !out) {
        sp_cpu_set_err(be, "cpu get_rows: NULL argument");
        return 1;
    }
    /* The vocabulary size is unknown here (the caller checked ids < V); a
     * negative id is still caught rather than read before the table. */
    for (int64_t t = 0; t < T; t++) {
        if (ids[t] < 0) {
            sp_cpu_set_err(be, "cpu get_rows: negative id %d at row %lld", (int)ids[t], (long long)t);
            return 1;
        }
    }
    for (int64_t t = 0; t < T; t++)
        memcpy(out + t * D, table + (int64_t)ids[t] * D, (size_t)D * sizeof(float));
    return 0;
}

/* ------------------------------------------------------------- layer_norm */

static int cpu_layer_norm(sp_backend *be, const float *x, const float *w, const float *b,
                          float eps, int64_t T, int64_t D, float *out) {
    if (T < 0 || D <= 0) {
        if (T == 0) return 0;
        sp_cpu_set_err(be, "cpu layer_norm: bad shape T=%lld D=%lld", (long long)T, (long long)D);
        return 1;
    }
    if (T == 0) return 0;
    if (!x || !w || !b || !out) {
        sp_cpu_set_err(be, "cpu layer_norm: NULL argument");
        return 1;
    }
#pragma omp parallel for num_threads(be->n_threads) schedule(static)
    for (int64_t t = 0; t < T; t++) {
        const float *xr = x + t * D;
        float *yr = out + t * D;
        /* Two passes in double: exact enough that the result does not
         * depend on D or on the magnitude of the mean. */
        double s = 0.0;
        for (int64_t d = 0; d < D; d++) s += xr[d];
        const double mean = s / (double)D;
        double v = 0.0;
        for (int64_t d = 0; d < D; d++) {
            const double c = xr[d] - mean;
            v += c * c;
        }
        const double rstd = 1.0 / sqrt(v / (double)D + (double)eps);
        /* Centre in double: a float mean rounded near a large offset would
         * shift every output by up to half an ulp of the offset. */
        for (int64_t d = 0; d < D; d++) yr[d] = (float)((xr[d] - mean) * rstd) * w[d] + b[d];
    }
    return 0;
}

/* ----------------------------------------------------------------- linear */

static int cpu_linear(sp_backend *be, const float *x, const float *W, const float *b, int64_t T,
                      int64_t IN, int64_t OUT, sp_act act, int accumulate, float *out) {
    if (T < 0 || IN <= 0 || OUT <= 0 || T > INT_MAX || IN > INT_MAX || OUT > INT_MAX) {
        if (T == 0 && IN >= 0 && OUT >= 0) return 0;
        sp_cpu_set_err(be, "cpu linear: bad shape T=%lld IN=%lld OUT=%lld", (long long)T,
                       (long long)IN, (long long)OUT);
        return 1;
    }
    if (T == 0) return 0;
    if (act != SP_ACT_NONE && act != SP_ACT_GELU && act != SP_ACT_GELU_TANH && act != SP_ACT_TANH) {
        sp_cpu_set_err(be, "cpu linear: unknown activation %d", (int)act);
        return 1;
    }
    if (accumulate && act != SP_ACT_NONE) {
        sp_cpu_set_err(be, "cpu linear: accumulate needs act NONE");
        return 1;
    }
    if (!x || !W || !out) {
        sp_cpu_set_err(be, "cpu linear: NULL argument");
        return 1;
    }
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, (int)T, (int)OUT, (int)IN, 1.0f, x,
                (int)IN, W, (int)IN, accumulate ? 1.0f : 0.0f, out, (int)OUT);
    if (!b && act == SP_ACT_NONE) return 0;
    /* Bias and activation in one pass over the output while it is warm. */
    const int gelu = act == SP_ACT_GELU, gelu_tanh = act == SP_ACT_GELU_TANH;
#pragma omp parallel for num_threads(be->n_threads) schedule(static)
    for (int64_t t = 0; t < T; t++) {
        float *o = out + t * OUT;
        if (b)
            for (int64_t j = 0; j < OUT; j++) o[j] += b[j];
        if (gelu) {
#ifdef SP_SIMD_ERFF
#pragma omp simd
#endif
            for (int64_t j = 0; j < OUT; j++)
                o[j] = 0.5f * o[j] * (1.0f + erff(o[j] * 0.70710678118654752f));
        }
        if (gelu_tanh)
            for (int64_t j = 0; j < OUT; j++) {
                const float v = o[j];
                o[j] = 0.5f * v * (1.0f + tanhf(0.79788456080286536f * (v + 0.044715f * v * v * v)));
            }
        if (act == SP_ACT_TANH)
            for (int64_t j = 0; j < OUT; j++) o[j] = tanhf(o[j]);
    }
    return 0;
}

/* ---------------------------------------------------------- FFTW plan cache */

/* A process-wide cache of batched real FFT plans, one entry per
 * (T, howmany, flags). FFTW's planner is not thread-safe, so planning and the
 * cache itself are guarded by one mutex; fftwf_execute_dft_* on a cached plan
 * is thread-safe. The entries live for the process (reachable from the static
 * head, so leak checkers do not flag them); documents of many lengths cost a
 * few KiB of plan each. */
typedef struct sp_fft_plan {
    struct sp_fft_plan *next;
    int64_t n;
    int howmany;
    unsigned flags;
    int64_t rdist, cdist; /* row distances in floats / complex values */
    fftwf_plan r2c, c2r;
} sp_fft_plan;

/* Not static: kernels/cpu/fourier2d_cpu.c plans under the same mutex. */
pthread_mutex_t sp_fft_mutex = PTHREAD_MUTEX_INITIALIZER;
static sp_fft_plan *sp_fft_plans;

static int64_t sp_round_up(int64_t v, int64_t m) { return (v + m - 1) / m * m; }

/* Row distances: each row starts on a SP_ALIGN boundary, so every row of the
 * workspace has the alignment the plan was made for. The extra 16 floats keep
 * power-of-two T from putting every row in the same cache set (measured 5x
 * slower gathers at T = 4096). */
static int64_t sp_mix_rdist(int64_t T) {
    return sp_round_up(T, SP_ALIGN / sizeof(float)) + SP_ALIGN / sizeof(float);
}
static int64_t sp_mix_cdist(int64_t T) {
    return sp_round_up(T / 2 + 1, SP_ALIGN / sizeof(fftwf_complex));
}

static const sp_fft_plan *sp_fft_get(int64_t n, int howmany, unsigned flags, char *err,
                                     size_t err_len) {
    const sp_fft_plan *found = NULL;
    pthread_mutex_lock(&sp_fft_mutex);
    for (sp_fft_plan *p = sp_fft_plans; p; p = p->next)
        if (p->n == n && p->howmany == howmany && p->flags == flags) {
            found = p;
            break;
        }
    if (!found) {
        sp_fft_plan *p = calloc(1, sizeof *p);
        const int64_t rdist = sp_mix_rdist(n), cdist = sp_mix_cdist(n);
        /* Plan on private scratch: FFTW_MEASURE overwrites its arrays. */
        float *r = fftwf_malloc((size_t)(rdist * howmany) * sizeof(float) + SP_ALIGN);
        fftwf_complex *c =
            fftwf_malloc((size_t)(cdist * howmany) * sizeof(fftwf_complex) + SP_ALIGN);
        if (p && r && c) {
            /* fftwf_malloc's alignment may be less than SP_ALIGN; align by hand. */
            float *ra = (float *)(((uintptr_t)r + SP_ALIGN - 1) & ~(uintptr_t)(SP_ALIGN - 1));
            fftwf_complex *ca =
                (fftwf_complex *)(((uintptr_t)c + SP_ALIGN - 1) & ~(uintptr_t)(SP_ALIGN - 1));
            int ni = (int)n;
            p->n = n;
            p->howmany = howmany;
            p->flags = flags;
            p->rdist = rdist;
            p->cdist = cdist;
            p->r2c = fftwf_plan_many_dft_r2c(1, &ni, howmany, ra, NULL, 1, (int)rdist, ca, NULL,
                                             1, (int)cdist, flags | FFTW_DESTROY_INPUT);
            p->c2r = fftwf_plan_many_dft_c2r(1, &ni, howmany, ca, NULL, 1, (int)cdist, ra, NULL,
                                             1, (int)rdist, flags | FFTW_DESTROY_INPUT);
            if (p->r2c && p->c2r) {
                p->next = sp_fft_plans;
                sp_fft_plans = p;
                found = p;
            } else {
                if (p->r2c) fftwf_destroy_plan(p->r2c);
                if (p->c2r) fftwf_destroy_plan(p->c2r);
                snprintf(err, err_len, "cpu spectral_mix: FFTW could not plan n=%lld x %d",
                         (long long)n, howmany);
                free(p);
            }
        } else {
            snprintf(err, err_len, "cpu spectral_mix: out of memory planning n=%lld",
                     (long long)n);
            free(p);
        }
        fftwf_free(r);
        fftwf_free(c);
    }
    pthread_mutex_unlock(&sp_fft_mutex);
    return found;
}

/* ----------------------------------------------------------- spectral_mix */

static size_t sp_mix_thread_bytes(int64_t T, int tile) {
    return (size_t)tile * ((size_t)sp_mix_rdist(T) * sizeof(float) +
                           (size_t)sp_mix_cdist(T) * sizeof(fftwf_complex));
}

static size_t cpu_mix_workspace_size(sp_backend *be, int64_t T, int64_t D) {
    if (T < 2 || D <= 0) return 0; /* k = 0: bias only, no transform */
    const sp_cpu_impl *impl = be->impl;
    /* Slack so the first slice can be aligned whatever the arena gives. */
    return (size_t)be->n_threads * sp_mix_thread_bytes(T, impl->tile) + SP_ALIGN;
}

static void sp_mix_bias_only(sp_backend *be, const float *bias, int64_t T, int64_t D, float *h) {
    if (!bias) return;
#pragma omp parallel for num_threads(be->n_threads) schedule(static)
    for (int64_t t = 0; t < T; t++)
        for (int64_t d = 0; d < D; d++) h[t * D + d] += bias[d];
}

static int cpu_spectral_mix(sp_backend *be, const float *u, const float *filter,
                            const float *bias, int64_t K, int64_t T, int64_t D, void *workspace,
                            float *h) {
    if (T < 0 || D < 0 || K < 0) {
        sp_cpu_set_err(be, "cpu spectral_mix: bad shape T=%lld D=%lld K=%lld", (long long)T,
                       (long long)D, (long long)K);
        return 1;
    }
    if (T == 0 || D == 0) return 0;
    if (T > INT_MAX / 2) {
        sp_cpu_set_err(be, "cpu spectral_mix: T=%lld too long for FFTW", (long long)T);
        return 1;
    }
    if (!u || !h || (K > 0 && !filter)) {
        sp_cpu_set_err(be, "cpu spectral_mix: NULL argument");
        return 1;
    }
    const int64_t k = K < T / 2 ? K : T / 2;
    if (k == 0) {
        sp_mix_bias_only(be, bias, T, D, h);
        return 0;
    }
    if (!workspace) {
        sp_cpu_set_err(be, "cpu spectral_mix: NULL workspace");
        return 1;
    }
    const sp_cpu_impl *impl = be->impl;
    const int tile = impl->tile;
    const int64_t n_tiles = (D + tile - 1) / tile;
    const int last = (int)(D - (n_tiles - 1) * tile);
    char perr[256] = "";
    const sp_fft_plan *pf = sp_fft_get(T, tile, impl->fft_flags, perr, sizeof perr);
    const sp_fft_plan *pl = last == tile ? pf : sp_fft_get(T, last, impl->fft_flags, perr, sizeof perr);
    if (!pf || !pl) {
        sp_cpu_set_err(be, "%s", perr);
        return 1;
    }
    const int64_t rdist = pf->rdist, cdist = pf->cdist, nc = T / 2 + 1;
    const size_t slice = sp_mix_thread_bytes(T, tile); /* a multiple of SP_ALIGN */
    char *ws = (char *)(((uintptr_t)workspace + SP_ALIGN - 1) & ~(uintptr_t)(SP_ALIGN - 1));
    /* c2r is unnormalized: fold 1/T into the filter. The DC bin is real
     * (U_0 is real, Re(U_0 W_0) = U_0 Re W_0); the other kept bins f < k
     * <= T/2 stand for f and T-f, and c2r doubles them, so halve. */
    const float s0 = (float)(1.0 / (double)T), s1 = (float)(0.5 / (double)T);
    const int nt = be->n_threads;

#pragma omp parallel num_threads(nt)
    {
        const int ti = omp_get_thread_num();
        float *rb = (float *)(ws + (size_t)ti * slice);
        fftwf_complex *cb = (fftwf_complex *)(rb + (size_t)tile * rdist);
#pragma omp for schedule(dynamic, 1)
        for (int64_t it = 0; it < n_tiles; it++) {
            const int64_t d0 = it * tile;
            const int m = it == n_tiles - 1 ? last : tile;
            const sp_fft_plan *p = m == tile ? pf : pl;
            /* Gather: channel d0+j of u becomes contiguous row j. Blocks of
             * SP_MIX_TB rows keep the strided source lines in L1 while each
             * channel's destination is written contiguously. */
            for (int64_t t0 = 0; t0 < T; t0 += SP_MIX_TB) {
                const int64_t tn = T - t0 < SP_MIX_TB ? T - t0 : SP_MIX_TB;
                for (int j = 0; j < m; j++) {
                    const float *src = u + t0 * D + d0 + j;
                    float *dst = rb + j * rdist + t0;
                    for (int64_t t = 0; t < tn; t++) dst[t] = src[t * D];
                }
            }
            fftwf_execute_dft_r2c(p->r2c, rb, cb);
            for (int j = 0; j < m; j++) {
                fftwf_complex *c = cb + j * cdist;
                const float *w = filter + (d0 + j) * K * 2;
                /* DC: multiply by Re W_0 only; Im of bin 0 is ignored by c2r. */
                c[0][0] *= w[0] * s0;
                c[0][1] = 0.0f;
                for (int64_t f = 1; f < k; f++) {
                    const float ur = c[f][0], ui = c[f][1];
                    const float wr = w[2 * f] * s1, wi = w[2 * f + 1] * s1;
                    c[f][0] = ur * wr - ui * wi;
                    c[f][1] = ur * wi + ui * wr;
                }
                memset(c + k, 0, (size_t)(nc - k) * sizeof(fftwf_complex));
            }
            fftwf_execute_dft_c2r(p->c2r, cb, rb);
            /* Scatter-add back into the strided channels, with the bias. */
            float bj[SP_MIX_TILE_MAX];
            for (int j = 0; j < m; j++) bj[j] = bias ? bias[d0 + j] : 0.0f;
            for (int64_t t0 = 0; t0 < T; t0 += SP_MIX_TB) {
                const int64_t tn = T - t0 < SP_MIX_TB ? T - t0 : SP_MIX_TB;
                for (int j = 0; j < m; j++) {
                    float *dst = h + t0 * D + d0 + j;
                    const float *src = rb + j * rdist + t0;
                    const float bv = bj[j];
                    for (int64_t t = 0; t < tn; t++) dst[t * D] += src[t] + bv;
                }
            }
        }
    }
    return 0;
}

/* -------------------------------------------------------------------- add */

static int cpu_add(sp_backend *be, const float *x, int64_t n, float *y) {
    (void)be;
    /* cblas_saxpy takes an int count: go in chunks. */
    for (int64_t i = 0; i < n; i += INT_MAX) {
        int64_t m = n - i < INT_MAX ? n - i : INT_MAX;
        cblas_saxpy((int)m, 1.0f, x + i, 1, y + i, 1);
    }
    return 0;
}

/* ------------------------------------------------------------------- pool */

static int cpu_pool(sp_backend *be, const float *x, int64_t T, int64_t D, sp_pool_op op,
                    float *out_host) {
    if (T <= 0 || D < 0) {
        sp_cpu_set_err(be, "cpu pool: bad shape T=%lld D=%lld", (long long)T, (long long)D);
        return 1;
    }
    if (D == 0) return 0;
    if (!x || !out_host) {
        sp_cpu_set_err(be, "cpu pool: NULL argument");
        return 1;
    }
    switch (op) {
    case SP_POOL_FIRST:
        memcpy(out_host, x, (size_t)D * sizeof(float));
        return 0;
    case SP_POOL_LAST:
        memcpy(out_host, x + (T - 1) * D, (size_t)D * sizeof(float));
        return 0;
    case SP_POOL_MEAN: {
        double *acc = calloc((size_t)D, sizeof(double));
        if (!acc) {
            sp_cpu_set_err(be, "cpu pool: out of memory");
            return 1;
        }
        /* Row-wise sweep keeps the reads contiguous; double sums do not
         * drift over long documents. */
        for (int64_t t = 0; t < T; t++) {
            const float *xr = x + t * D;
            for (int64_t d = 0; d < D; d++) acc[d] += xr[d];
        }
        for (int64_t d = 0; d < D; d++) out_host[d] = (float)(acc[d] / (double)T);
        free(acc);
        return 0;
    }
    }
    sp_cpu_set_err(be, "cpu pool: unknown op %d", (int)op);
    return 1;
}

/* ---------------------------------------------------------------- create */

static void cpu_destroy(sp_backend *be) {
    if (!be) return;
    free(be->impl);
    free(be);
}

/* FNet's 2-D Fourier mixing, in kernels/cpu/fourier2d_cpu.c. */
size_t sp_cpu_fourier2d_workspace(int64_t T, int64_t D);
int sp_cpu_fourier2d_real(sp_backend *be, const float *x, int64_t T, int64_t D, void *workspace,
                          float *out);
static size_t cpu_fourier2d_workspace_size(sp_backend *be, int64_t T, int64_t D) {
    (void)be;
    return sp_cpu_fourier2d_workspace(T, D);
}

static const sp_backend_ops sp_cpu_ops = {
    .name = "cpu",
    .destroy = cpu_destroy,
    .buffer_alloc = cpu_buffer_alloc,
    .buffer_free = cpu_buffer_free,
    .upload = cpu_upload,
    .download = cpu_download,
    .synchronize = cpu_synchronize,
    .get_rows = cpu_get_rows,
    .layer_norm = cpu_layer_norm,
    .linear = cpu_linear,
    .mix_workspace_size = cpu_mix_workspace_size,
    .spectral_mix = cpu_spectral_mix,
    .pool = cpu_pool,
    .fourier2d_workspace_size = cpu_fourier2d_workspace_size,
    .fourier2d_real = sp_cpu_fourier2d_real,
    .add = cpu_add,
};

sp_backend *sp_backend_cpu_create(int n_threads, char *err, size_t err_len) {
    if (n_threads < 0) {
        if (err && err_len) snprintf(err, err_len, "cpu: n_threads must be >= 0, got %d", n_threads);
        return NULL;
    }
    if (n_threads == 0) {
        long n = sysconf(_SC_NPROCESSORS_ONLN);
        n_threads = n > 0 ? (n > 1024 ? 1024 : (int)n) : 1;
    }
    sp_backend *be = calloc(1, sizeof *be);
    sp_cpu_impl *impl = calloc(1, sizeof *impl);
    if (!be || !impl) {
        free(be);
        free(impl);
        if (err && err_len) snprintf(err, err_len, "cpu: out of memory creating the backend");
        return NULL;
    }
    /* Documents arrive with many lengths: estimating is cheap, measuring
     * costs tens of ms per new length but can give faster plans. */
    const char *ms = getenv("SPECTRAL_FFTW_MEASURE");
    impl->fft_flags = (ms && ms[0] == '1') ? FFTW_MEASURE : FFTW_ESTIMATE;
    impl->tile = SP_MIX_TILE_DEFAULT;
    const char *ts = getenv("SPECTRAL_CPU_MIX_TILE");
    if (ts) {
        int v = atoi(ts);
        if (v >= 1 && v <= SP_MIX_TILE_MAX) impl->tile = v;
    }
    be->ops = &sp_cpu_ops;
    be->host_memory = 1;
    be->n_threads = n_threads;
    be->impl = impl;
    /* Process-wide: OpenBLAS has one thread pool for all callers. */
    openblas_set_num_threads(n_threads);
    return be;
}
