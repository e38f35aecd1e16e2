/* The CPU backend's M2-BERT long convolution: hyena_filter (the implicit
 * filter as a spectrum) and hyena_mix (short convolution, gates and the two
 * long convolutions of a Monarch Mixer layer), see kernels/backend.h.
 *
 * Both work a tile of channels per task, along the sequence, in FFTW's
 * batched in-place layout: a channel's row holds N reals (the transform
 * length, N >= 2T) in cdist(N) complex values. The spectrum hyena_filter
 * writes is D such rows (the transform of each channel's kernel, divided by
 * N), which is the layout hyena_mix multiplies by, tile by tile. Tiles are
 * fixed (never cut by the thread count), so results are bit-identical for
 * any number of threads. Plans come from mix_cpu.c's bounded cache. */
#include <cblas.h>
#include <limits.h>
#include <math.h>
#include <stdio.h>
#include <string.h>

#include "kernels/cpu/cpu_internal.h"

/* glibc >= 2.35 has vector sin and expf in libmvec but declares them only
 * under -ffast-math (linear_cpu.c does the same for erff): with the SIMD
 * clones declared, the filter's loops below call them several lanes at a
 * time; one scalar sin per element cost as much as the MLP's GEMMs. */
#if defined(__GNUC__) && !defined(__clang__) && defined(__x86_64__) && defined(__GLIBC__) && \
    (__GLIBC__ > 2 || (__GLIBC__ == 2 && __GLIBC_MINOR__ >= 35)) && !defined(__FAST_MATH__)
double sin(double) __attribute__((__simd__("notinbranch")));
float expf(float) __attribute__((__simd__("notinbranch")));
#define SP_SIMD_MATH 1
#endif
/* Built for AVX2 too (chosen at load time): 4 double or 8 float lanes. */
#if defined(__GNUC__) && defined(__x86_64__) && defined(__GLIBC__) && !defined(__clang__) && \
    !defined(__SANITIZE_ADDRESS__) && !defined(__SANITIZE_THREAD__)
#define SP_VECTOR_CLONES __attribute__((target_clones("avx2", "default")))
#else
#define SP_VECTOR_CLONES
#endif

/* Channels per task: 16 floats are one cache line of a strided gather. */
#define SP_HYENA_TILE 16
/* Rows per task of the filter's MLP. */
#define SP_HYENA_ROWS 128

static size_t aligned(int64_t bytes) { return (size_t)sp_cpu_round_up(bytes, SP_CPU_ALIGN); }

/* Whether FFTW has codelets for every prime factor of n. */
static int smooth13(int64_t n) {
    static const int primes[] = {2, 3, 5, 7, 11, 13};
    for (int i = 0; i < 6; i++)
        while (n % primes[i] == 0) n /= primes[i];
    return n == 1;
}

/* The transform length for T tokens: 2T as the reference computes, or, when
 * 2T has a prime factor FFTW has no codelet for (a prime T, say), the next
 * length with only 2, 3, 5 and 7: any N >= 2T gives the same linear
 * convolution (the reverse kernel sits at the end of the N-long row). */
int64_t sp_cpu_hyena_n(int64_t T) {
    if (smooth13(2 * T)) return 2 * T;
    for (int64_t n = 2 * T;; n++) {
        int64_t r = n;
        for (int p = 2; p <= 7; p++)
            while (r % p == 0) r /= p;
        if (r == 1) return n;
    }
}


size_t sp_cpu_hyena_spectrum_size(sp_backend *be, int64_t T, int64_t D) {
    (void)be;
    if (T <= 0 || D <= 0 || T > INT_MAX / 4) return 0;
    return (size_t)D * (size_t)sp_cpu_fft_cdist(sp_cpu_hyena_n(T)) * sizeof(fftwf_complex);
}

/* ------------------------------------------------------------ hyena_filter */

/* The Sin MLP runs in double precision: each layer's derivative is w_mod *
 * freq (~10 in the published models), so float32 rounding grows ~1000-fold
 * over three layers (measured: 2-6e-4 relative error in the model's output
 * against a float64 reference, 1e-6 with the MLP in double). Its last
 * activations are rounded to float for the large W_out product.
 *
 * Workspace: the weights in double (per direction W_in, W_mid[0..1], b_in,
 * b_mid[0..1], w_mod * freq), the last Sin activations of both directions
 * (T x order floats each), then one slot per task in flight: the MLP's two
 * intermediate tiles in double, or a tile of the reverse kernel and the
 * decay of one channel ((tile + 1) x T). */
typedef struct {
    size_t dw, act, slot;
    int slots;
} filter_layout;

/* Doubles of one direction's weights (see above). */
static int64_t dir_doubles(int64_t E, int64_t O) { return O * E + 2 * O * O + 3 * O + 3 * O; }

static filter_layout filter_layout_of(const sp_backend *be, int64_t T, int64_t D, int64_t E,
                                      int64_t order) {
    filter_layout L;
    L.dw = aligned(2 * dir_doubles(E, order) * 8);
    L.act = aligned(T * order * 4);
    const int64_t w = order > E ? order : E; /* the tiles also hold z's rows */
    const int64_t mlp = 2 * aligned(SP_HYENA_ROWS * w * 8), rev = aligned((SP_HYENA_TILE + 1) * T * 4);
    L.slot = (size_t)(mlp > rev ? mlp : rev);
    const int64_t tasks_mlp = 2 * ((T + SP_HYENA_ROWS - 1) / SP_HYENA_ROWS);
    const int64_t tasks_fft = (D + SP_HYENA_TILE - 1) / SP_HYENA_TILE;
    L.slots = sp_cpu_slots(be, tasks_mlp > tasks_fft ? tasks_mlp : tasks_fft);
    return L;
}

size_t sp_cpu_hyena_filter_workspace_size(sp_backend *be, int64_t T, int64_t D, int64_t E,
                                          int64_t order) {
    if (T <= 0 || D <= 0 || E <= 0 || order <= 0) return 0;
    const filter_layout L = filter_layout_of(be, T, D, E, order);
    return SP_CPU_ALIGN + L.dw + 2 * L.act + (size_t)L.slots * L.slot;
}

/* One direction's weights in double, carved from the workspace. */
typedef struct {
    double *W_in, *W_mid[2], *b[3], *wf[3]; /* wf[i] = w_mod * freq[i] */
} dir_weights;

typedef struct {
    const sp_hyena_filter *f;
    int64_t T, D, N, cdist;
    dir_weights dw[2];
    float *act[2]; /* a3 of the forward and reverse MLPs, T x order */
    char *slots;
    size_t slot;
    fftwf_complex *spec;
    sp_fft_plan *full, *last;
} filter_job;

/* Carves one direction's double weights from mem and fills them. */
static double *dir_weights_fill(const sp_hyena_filter *f, int dir, double *mem, dir_weights *dw) {
    const int64_t E = f->E, O = f->order;
    const float *src[3] = {f->dir[dir].W_in, f->dir[dir].W_mid[0], f->dir[dir].W_mid[1]};
    const float *bias[3] = {f->dir[dir].b_in, f->dir[dir].b_mid[0], f->dir[dir].b_mid[1]};
    double **dst[3] = {&dw->W_in, &dw->W_mid[0], &dw->W_mid[1]};
    for (int i = 0; i < 3; i++) {
        const int64_t n = O * (i ? O : E);
        *dst[i] = mem;
        for (int64_t k = 0; k < n; k++) mem[k] = src[i][k];
        mem += n;
    }
    for (int i = 0; i < 3; i++) {
        dw->b[i] = mem;
        for (int64_t k = 0; k < O; k++) mem[k] = bias[i][k];
        mem += O;
        dw->wf[i] = mem;
        /* the reference's argument is (w_mod * freq) * (x W^T + b) */
        for (int64_t k = 0; k < O; k++) mem[k] = (double)f->w_mod * f->dir[dir].freq[i * O + k];
        mem += O;
    }
    return mem;
}

/* o = sin(wf * (o + b)) over rows x n. */
SP_VECTOR_CLONES static void bias_sin(double *o, int64_t rows, int64_t n, const double *b,
                                      const double *wf) {
    for (int64_t r = 0; r < rows; r++) {
        double *x = o + r * n;
#ifdef SP_SIMD_MATH
#pragma omp simd
#endif
        for (int64_t j = 0; j < n; j++) x[j] = sin(wf[j] * (x[j] + b[j]));
    }
}

/* dec[t] = exp(-t_pos[t] * a): ExponentialModulation's decay (shift 0). */
SP_VECTOR_CLONES static void decay_row(const float *tpos, int64_t T, float a, float *dec) {
#ifdef SP_SIMD_MATH
#pragma omp simd
#endif
    for (int64_t t = 0; t < T; t++) dec[t] = expf(-tpos[t] * a);
}

/* Phase 1: the implicit MLP of one direction for one tile of rows. */
static void filter_mlp_task(void *arg, int64_t task, int worker) {
    const filter_job *j = arg;
    const sp_hyena_filter *f = j->f;
    const int64_t n_tiles = (j->T + SP_HYENA_ROWS - 1) / SP_HYENA_ROWS;
    const int dir = (int)(task / n_tiles);
    const int64_t r0 = (task % n_tiles) * SP_HYENA_ROWS;
    const int rows = (int)(j->T - r0 < SP_HYENA_ROWS ? j->T - r0 : SP_HYENA_ROWS);
    const int E = (int)f->E, O = (int)f->order;
    const dir_weights *dw = &j->dw[dir];
    double *t1 = (double *)(j->slots + (size_t)worker * j->slot);
    double *t2 = t1 + aligned(SP_HYENA_ROWS * (O > E ? O : E) * 8) / 8;
    for (int r = 0; r < rows; r++) /* z's rows, widened into t2 */
        for (int e = 0; e < E; e++) t2[r * E + e] = f->z[(r0 + r) * E + e];
    cblas_dgemm(CblasRowMajor, CblasNoTrans, CblasTrans, rows, O, E, 1.0, t2, E, dw->W_in, E, 0.0,
                t1, O);
    bias_sin(t1, rows, O, dw->b[0], dw->wf[0]);
    cblas_dgemm(CblasRowMajor, CblasNoTrans, CblasTrans, rows, O, O, 1.0, t1, O, dw->W_mid[0], O,
                0.0, t2, O);
    bias_sin(t2, rows, O, dw->b[1], dw->wf[1]);
    cblas_dgemm(CblasRowMajor, CblasNoTrans, CblasTrans, rows, O, O, 1.0, t2, O, dw->W_mid[1], O,
                0.0, t1, O);
    bias_sin(t1, rows, O, dw->b[2], dw->wf[2]);
    float *out = j->act[dir] + r0 * O;
    for (int64_t i = 0; i < (int64_t)rows * O; i++) out[i] = (float)t1[i];
}

/* Phase 2: one tile of channels: the kernels (a3 W_out^T, modulated), laid
 * out forward then reversed in N-long rows of the spectrum, transformed in
 * place and divided by N. */
static void filter_fft_task(void *arg, int64_t task, int worker) {
    const filter_job *j = arg;
    const sp_hyena_filter *f = j->f;
    const int64_t T = j->T, N = j->N, cd = j->cdist, rd = 2 * cd;
    const int64_t d0 = task * SP_HYENA_TILE;
    const int m = (int)(j->D - d0 < SP_HYENA_TILE ? j->D - d0 : SP_HYENA_TILE);
    const int O = (int)f->order;
    fftwf_complex *spec = j->spec + d0 * cd;
    float *rows = (float *)spec;
    float *rev = (float *)(j->slots + (size_t)worker * j->slot); /* m x T */
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, m, (int)T, O, 1.0f,
                f->dir[0].W_out + d0 * O, O, j->act[0], O, 0.0f, rows, (int)rd);
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, m, (int)T, O, 1.0f,
                f->dir[1].W_out + d0 * O, O, j->act[1], O, 0.0f, rev, (int)T);
    float *dec = rev + m * T; /* T floats after the tile's reverse kernels */
    for (int c = 0; c < m; c++) {
        float *row = rows + c * rd;
        const float *kr = rev + c * T;
        decay_row(f->t, T, fabsf(f->decay[d0 + c]), dec);
        for (int64_t t = 0; t < T; t++) row[t] *= dec[t];
        memset(row + T, 0, (size_t)(N - 2 * T) * sizeof(float));
        for (int64_t s = 0; s < T; s++) row[N - 1 - s] = kr[s] * dec[s];
    }
    const sp_fft_plan *p = m == SP_HYENA_TILE ? j->full : j->last;
    fftwf_execute_dft_r2c(p->r2c, rows, spec);
    /* torch divides the kernel's spectrum by the transform length */
    const float n = (float)N;
    for (int c = 0; c < m; c++)
        for (int64_t k = 0; k <= N / 2; k++) {
            spec[c * cd + k][0] /= n;
            spec[c * cd + k][1] /= n;
        }
}

/* Plans for a full tile and the last (maybe narrower) tile of D channels;
 * 1 on failure. *last == *full when D is a multiple of the tile. */
static int tile_plans(sp_backend *be, int64_t N, int64_t D, sp_fft_plan **full, sp_fft_plan **last) {
    const unsigned flags = ((const sp_cpu_impl *)be->impl)->fft_flags;
    const int rem = (int)(D % SP_HYENA_TILE);
    *full = D >= SP_HYENA_TILE ? sp_cpu_fft_acquire(N, SP_HYENA_TILE, flags) : NULL;
    *last = rem ? sp_cpu_fft_acquire(N, rem, flags) : *full;
    if ((D >= SP_HYENA_TILE && !*full) || !*last) {
        if (*full) sp_cpu_fft_release(*full);
        if (rem && *last) sp_cpu_fft_release(*last);
        *full = *last = NULL;
        return 1;
    }
    return 0;
}

static void tile_plans_release(sp_fft_plan *full, sp_fft_plan *last) {
    if (last && last != full) sp_cpu_fft_release(last);
    if (full) sp_cpu_fft_release(full);
}

static int check_filter(sp_backend *be, const sp_hyena_filter *f, int64_t T, int64_t D) {
    if (!f || T <= 0 || D <= 0 || T > INT_MAX / 4 || D > INT_MAX || f->E <= 0 || f->order <= 0 ||
        f->E > INT_MAX || f->order > INT_MAX) {
        sp_cpu_set_err(be, "cpu hyena_filter: bad shape T=%lld D=%lld", (long long)T, (long long)D);
        return 1;
    }
    int ok = f->z && f->t && f->decay;
    for (int d = 0; d < 2; d++)
        ok = ok && f->dir[d].W_in && f->dir[d].b_in && f->dir[d].W_mid[0] && f->dir[d].b_mid[0] &&
             f->dir[d].W_mid[1] && f->dir[d].b_mid[1] && f->dir[d].freq && f->dir[d].W_out;
    if (!ok) {
        sp_cpu_set_err(be, "cpu hyena_filter: NULL argument");
        return 1;
    }
    return 0;
}

int sp_cpu_hyena_filter(sp_backend *be, const sp_hyena_filter *f, int64_t T, int64_t D,
                        void *workspace, void *spectrum) {
    if (check_filter(be, f, T, D)) return 1;
    if (!workspace || !spectrum) {
        sp_cpu_set_err(be, "cpu hyena_filter: NULL argument");
        return 1;
    }
    const filter_layout L = filter_layout_of(be, T, D, f->E, f->order);
    char *ws = sp_cpu_align(workspace);
    filter_job j = {.f = f, .T = T, .D = D, .N = sp_cpu_hyena_n(T)};
    j.cdist = sp_cpu_fft_cdist(j.N);
    dir_weights_fill(f, 1, dir_weights_fill(f, 0, (double *)ws, &j.dw[0]), &j.dw[1]);
    j.act[0] = (float *)(ws + L.dw);
    j.act[1] = (float *)(ws + L.dw + L.act);
    j.slots = ws + L.dw + 2 * L.act;
    j.slot = L.slot;
    j.spec = spectrum;
    if (tile_plans(be, j.N, D, &j.full, &j.last)) {
        sp_cpu_set_err(be, "cpu hyena_filter: FFTW could not plan n=%lld", (long long)j.N);
        return 1;
    }
    const int64_t n_mlp = 2 * ((T + SP_HYENA_ROWS - 1) / SP_HYENA_ROWS);
    const int64_t n_fft = (D + SP_HYENA_TILE - 1) / SP_HYENA_TILE;
    sp_pool_run(sp_cpu_pool(be), n_mlp, L.slots, filter_mlp_task, &j);
    sp_pool_run(sp_cpu_pool(be), n_fft, L.slots, filter_fft_task, &j);
    tile_plans_release(j.full, j.last);
    return 0;
}

/* --------------------------------------------------------------- hyena_mix */

/* A slot: the transform rows (tile x 2 cdist floats), then the gate x2 and
 * the gated v of the tile (tile x T each). */
static size_t mix_slot(int64_t T) {
    return aligned(SP_HYENA_TILE * 2 * sp_cpu_fft_cdist(sp_cpu_hyena_n(T)) * 4) +
           2 * aligned(SP_HYENA_TILE * T * 4);
}

size_t sp_cpu_hyena_mix_workspace_size(sp_backend *be, int64_t T, int64_t D) {
    if (T <= 0 || D <= 0 || T > INT_MAX / 4) return 0;
    const int slots = sp_cpu_slots(be, (D + SP_HYENA_TILE - 1) / SP_HYENA_TILE);
    return SP_CPU_ALIGN + (size_t)slots * mix_slot(T);
}

typedef struct {
    const float *a, *conv_w, *conv_b, *u, *bias, *bias_res;
    const fftwf_complex *spec, *spec_res;
    float *y;
    int64_t T, D, N, cdist;
    char *slots;
    size_t slot;
    sp_fft_plan *full, *last;
} mix_job;

/* Rows of the gathers and scatters at a time: 16 strided lines stay in L1. */
#define SP_HYENA_TB 16

/* dst[c][t] = src[t * ld + c] for c < m, t < T (a column tile into rows). */
static void gather(const float *src, int64_t ld, int64_t T, int m, float *dst, int64_t rdist) {
    for (int64_t t0 = 0; t0 < T; t0 += SP_HYENA_TB) {
        const int64_t tn = T - t0 < SP_HYENA_TB ? T - t0 : SP_HYENA_TB;
        for (int c = 0; c < m; c++)
            for (int64_t t = 0; t < tn; t++) dst[c * rdist + t0 + t] = src[(t0 + t) * ld + c];
    }
}

/* The causal depthwise convolution of width 3 (Conv1d, padding 2, first T
 * outputs), in place: x[t] = w0 x[t-2] + w1 x[t-1] + w2 x[t] + b. */
static void short_conv(float *x, int64_t T, const float *w, float b) {
    for (int64_t t = T - 1; t >= 0; t--) {
        const float xm2 = t >= 2 ? x[t - 2] : 0.0f, xm1 = t >= 1 ? x[t - 1] : 0.0f;
        x[t] = w[0] * xm2 + w[1] * xm1 + w[2] * x[t] + b;
    }
}

/* rows[c] (the first T of N reals, the rest zero) convolved with spec row c:
 * r2c, times the spectrum, c2r; the first T reals of each row are the result. */
static void long_conv(const mix_job *j, const sp_fft_plan *p, float *rows, const fftwf_complex *spec,
                      int m) {
    const int64_t T = j->T, N = j->N, cd = j->cdist;
    fftwf_complex *z = (fftwf_complex *)rows;
    for (int c = 0; c < m; c++) memset(rows + 2 * cd * c + T, 0, (size_t)(N - T) * sizeof(float));
    fftwf_execute_dft_r2c(p->r2c, rows, z);
    for (int c = 0; c < m; c++) {
        fftwf_complex *zc = z + c * cd;
        const fftwf_complex *s = spec + c * cd;
        for (int64_t k = 0; k <= N / 2; k++) {
            const float ur = zc[k][0], ui = zc[k][1], sr = s[k][0], si = s[k][1];
            zc[k][0] = ur * sr - ui * si;
            zc[k][1] = ur * si + ui * sr;
        }
    }
    fftwf_execute_dft_c2r(p->c2r, z, rows);
}

static void mix_task(void *arg, int64_t task, int worker) {
    const mix_job *j = arg;
    const int64_t T = j->T, D = j->D, cd = j->cdist, rd = 2 * cd;
    const int64_t d0 = task * SP_HYENA_TILE;
    const int m = (int)(D - d0 < SP_HYENA_TILE ? D - d0 : SP_HYENA_TILE);
    const sp_fft_plan *p = m == SP_HYENA_TILE ? j->full : j->last;
    char *slot = j->slots + (size_t)worker * j->slot;
    float *rows = (float *)slot;
    float *x2 = (float *)(slot + aligned(SP_HYENA_TILE * rd * 4));
    float *v = x2 + aligned(SP_HYENA_TILE * T * 4) / 4;
    /* x1, x2, v: channels d, D + d, 2D + d of a, each through its short
     * convolution; v = v * x1 */
    gather(j->a + d0, 3 * D, T, m, rows, rd);
    gather(j->a + D + d0, 3 * D, T, m, x2, T);
    gather(j->a + 2 * D + d0, 3 * D, T, m, v, T);
    for (int c = 0; c < m; c++) {
        const int64_t d = d0 + c;
        float *x1r = rows + c * rd, *x2r = x2 + c * T, *vr = v + c * T;
        short_conv(x1r, T, j->conv_w + 3 * d, j->conv_b[d]);
        short_conv(x2r, T, j->conv_w + 3 * (D + d), j->conv_b[D + d]);
        short_conv(vr, T, j->conv_w + 3 * (2 * D + d), j->conv_b[2 * D + d]);
        for (int64_t t = 0; t < T; t++) vr[t] *= x1r[t];
        memcpy(x1r, vr, (size_t)T * sizeof(float));
    }
    /* x2 <- (conv(v) + v * bias) * x2 */
    long_conv(j, p, rows, j->spec + d0 * cd, m);
    for (int c = 0; c < m; c++) {
        const float b = j->bias[d0 + c];
        const float *yr = rows + c * rd, *vr = v + c * T;
        float *x2r = x2 + c * T;
        for (int64_t t = 0; t < T; t++) x2r[t] = (yr[t] + vr[t] * b) * x2r[t];
    }
    /* y = x2 + conv(u) + u * bias_res */
    gather(j->u + d0, D, T, m, rows, rd);
    long_conv(j, p, rows, j->spec_res + d0 * cd, m);
    for (int64_t t0 = 0; t0 < T; t0 += SP_HYENA_TB) {
        const int64_t tn = T - t0 < SP_HYENA_TB ? T - t0 : SP_HYENA_TB;
        for (int c = 0; c < m; c++) {
            const float b = j->bias_res[d0 + c];
            const float *yr = rows + c * rd, *x2r = x2 + c * T;
            for (int64_t t = t0; t < t0 + tn; t++) {
                const float uu = j->u[t * D + d0 + c];
                j->y[t * D + d0 + c] = x2r[t] + (yr[t] + uu * b);
            }
        }
    }
}

int sp_cpu_hyena_mix(sp_backend *be, const float *a, const float *conv_w, const float *conv_b,
                     const float *u, const void *spec, const float *bias, const void *spec_res,
                     const float *bias_res, int64_t T, int64_t D, void *workspace, float *y) {
    if (T <= 0 || D <= 0 || T > INT_MAX / 4 || D > INT_MAX / 3) {
        sp_cpu_set_err(be, "cpu hyena_mix: bad shape T=%lld D=%lld", (long long)T, (long long)D);
        return 1;
    }
    if (!a || !conv_w || !conv_b || !u || !spec || !bias || !spec_res || !bias_res || !workspace ||
        !y) {
        sp_cpu_set_err(be, "cpu hyena_mix: NULL argument");
        return 1;
    }
    mix_job j = {.a = a, .conv_w = conv_w, .conv_b = conv_b, .u = u, .bias = bias,
                 .bias_res = bias_res, .spec = spec, .spec_res = spec_res, .y = y, .T = T, .D = D,
                 .N = sp_cpu_hyena_n(T)};
    j.cdist = sp_cpu_fft_cdist(j.N);
    j.slots = sp_cpu_align(workspace);
    j.slot = mix_slot(T);
    if (tile_plans(be, j.N, D, &j.full, &j.last)) {
        sp_cpu_set_err(be, "cpu hyena_mix: FFTW could not plan n=%lld", (long long)j.N);
        return 1;
    }
    const int64_t n_tiles = (D + SP_HYENA_TILE - 1) / SP_HYENA_TILE;
    sp_pool_run(sp_cpu_pool(be), n_tiles, sp_cpu_slots(be, n_tiles), mix_task, &j);
    tile_plans_release(j.full, j.last);
    return 0;
}
