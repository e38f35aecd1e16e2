/* The CPU backend's spectral mixing, along the sequence of each document.
 *
 * Two routes to the same maths (see "the job" below for which one runs):
 * FFTW real transforms a tile of channels at a time — gather the channels
 * (applying the pre-LayerNorm on the fly in mix_block) into contiguous rows,
 * a batched in-place r2c, the filter on the first k bins, an in-place c2r,
 * and a scatter-add (with the bias) back into h — or, for short and
 * FFT-unfriendly lengths, the k kept bins as two GEMMs against a cos/sin
 * table. Tasks write disjoint parts of h, so they run in any order on any
 * thread with the same result. */
#include <cblas.h>
#include <limits.h>
#include <math.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* OpenBLAS's cblas.h pulls in <complex.h>; keep fftwf_complex a float[2]. */
#define FFTW_NO_Complex
#include <fftw3.h>

#include "kernels/cpu/cpu_internal.h"

/* Rows per block of the gather / scatter transposes: 16 strided source lines
 * stay in L1 (a 1 KiB stride maps 64 rows onto too few L1 sets). */
#define SP_MIX_TB 16
/* Plans kept at once, and their summed lengths (a plan's memory, mostly
 * twiddle tables, grows with its length, ~9 bytes per row for the r2c + c2r
 * pair: 2^18 rows keep under 4 MiB between passes): past either bound the
 * least recently used idle plans go. */
#define SP_FFT_CACHE_MAX 64
#define SP_FFT_CACHE_ROWS (INT64_C(1) << 18)

static size_t aligned(int64_t bytes) { return (size_t)sp_cpu_round_up(bytes, SP_CPU_ALIGN); }

/* ------------------------------------------------------ FFTW plan cache */

pthread_mutex_t sp_fft_mutex = PTHREAD_MUTEX_INITIALIZER;
static sp_fft_plan **sp_fft_cache;
static int sp_fft_n, sp_fft_cap;
static uint64_t sp_fft_tick;

int64_t sp_cpu_fft_cdist(int64_t n) {
    return sp_cpu_round_up(n / 2 + 1, SP_CPU_ALIGN / (int64_t)sizeof(fftwf_complex));
}

static void fft_plan_destroy(sp_fft_plan *p) {
    if (p->r2c) fftwf_destroy_plan(p->r2c);
    if (p->c2r) fftwf_destroy_plan(p->c2r);
    free(p);
}

static int64_t sp_fft_rows; /* sum of n over the cache */

/* Drops least recently used idle plans until a plan of `adding` elements
 * fits both bounds (or no idle plan is left: the cache then runs over until
 * the busy ones are released). */
static void fft_cache_trim(int64_t adding) {
    while (sp_fft_n >= SP_FFT_CACHE_MAX || (sp_fft_n && sp_fft_rows + adding > SP_FFT_CACHE_ROWS)) {
        int victim = -1;
        for (int i = 0; i < sp_fft_n; i++)
            if (!sp_fft_cache[i]->refs &&
                (victim < 0 || sp_fft_cache[i]->last_use < sp_fft_cache[victim]->last_use))
                victim = i;
        if (victim < 0) return;
        sp_fft_rows -= sp_fft_cache[victim]->n;
        fft_plan_destroy(sp_fft_cache[victim]);
        sp_fft_cache[victim] = sp_fft_cache[--sp_fft_n];
        /* FFTW's planner also remembers every problem it has solved (its
         * wisdom), which grows with each new length; plans live on without it. */
        fftwf_forget_wisdom();
    }
}

/* FFTW's plans for a length n keep twiddle tables of their own, outside any
 * workspace: measured ~9 bytes per row for the r2c + c2r pair at n = 2^20
 * (peak RSS over the arena), so 16 bytes per row of the longest document
 * bounds what one pass adds; plans of other lengths stay within the cache's
 * bound below. */
size_t sp_cpu_external_memory(sp_backend *be, int64_t T_max) {
    (void)be;
    return T_max > 0 ? (size_t)T_max * 16 : 0;
}

int sp_cpu_fft_plans_cached(int64_t *rows) {
    pthread_mutex_lock(&sp_fft_mutex);
    const int n = sp_fft_n;
    if (rows) *rows = sp_fft_rows;
    pthread_mutex_unlock(&sp_fft_mutex);
    return n;
}

static sp_fft_plan *fft_plan_make(int64_t n, int howmany, unsigned flags) {
    sp_fft_plan *p = calloc(1, sizeof *p);
    if (!p) return NULL;
    const int64_t cdist = sp_cpu_fft_cdist(n);
    /* Plan on private scratch with the workspace's alignment (FFTW_MEASURE
     * overwrites its arrays; new-array execution needs equal alignment). */
    void *raw = fftwf_malloc((size_t)(cdist * howmany) * sizeof(fftwf_complex) + SP_CPU_ALIGN);
    if (!raw) {
        free(p);
        return NULL;
    }
    fftwf_complex *c = sp_cpu_align(raw);
    float *r = (float *)c;
    int ni = (int)n;
    p->n = n;
    p->howmany = howmany;
    p->flags = flags;
    p->cdist = cdist;
    p->r2c = fftwf_plan_many_dft_r2c(1, &ni, howmany, r, NULL, 1, (int)(2 * cdist), c, NULL, 1,
                                     (int)cdist, flags);
    p->c2r = fftwf_plan_many_dft_c2r(1, &ni, howmany, c, NULL, 1, (int)cdist, r, NULL, 1,
                                     (int)(2 * cdist), flags | FFTW_DESTROY_INPUT);
    fftwf_free(raw);
    if (!p->r2c || !p->c2r) {
        fft_plan_destroy(p);
        return NULL;
    }
    return p;
}

sp_fft_plan *sp_cpu_fft_acquire(int64_t n, int howmany, unsigned flags) {
    sp_fft_plan *found = NULL;
    pthread_mutex_lock(&sp_fft_mutex);
    for (int i = 0; i < sp_fft_n; i++) {
        sp_fft_plan *p = sp_fft_cache[i];
        if (p->n == n && p->howmany == howmany && p->flags == flags) {
            found = p;
            break;
        }
    }
    if (!found) {
        fft_cache_trim(n);
        if (sp_fft_n == sp_fft_cap) {
            int cap = sp_fft_cap ? 2 * sp_fft_cap : 64;
            sp_fft_plan **nc = realloc(sp_fft_cache, (size_t)cap * sizeof *nc);
            if (nc) {
                sp_fft_cache = nc;
                sp_fft_cap = cap;
            }
        }
        if (sp_fft_n < sp_fft_cap && (found = fft_plan_make(n, howmany, flags))) {
            sp_fft_cache[sp_fft_n++] = found;
            sp_fft_rows += n;
        }
    }
    if (found) {
        found->refs++;
        found->last_use = ++sp_fft_tick;
    }
    pthread_mutex_unlock(&sp_fft_mutex);
    return found;
}

void sp_cpu_fft_release(sp_fft_plan *p) {
    if (!p) return;
    pthread_mutex_lock(&sp_fft_mutex);
    p->refs--;
    pthread_mutex_unlock(&sp_fft_mutex);
}

/* ------------------------------------------------------------- the job */

/* Two ways to one result, chosen per document from T alone (so the choice,
 * like the result, never depends on the thread count):
 *  - FFT: batched FFTW transforms, a tile of channels per task. The fastest
 *    where FFTW has codelets for every prime factor of T (measured: 512 and
 *    1024 tokens 12-18% faster than the DFT below), but FFTW_ESTIMATE still
 *    spends 3-20 ms planning each new length, and lengths with a large prime
 *    factor run ~10x slower: together they took half the time on a corpus of
 *    short files of many lengths (and planning every 13-smooth length still
 *    cost 20% there).
 *  - DFT: only k of T/2 bins are kept, so the transforms are two GEMMs with a
 *    2k x T table of cos and sin rows B: [Re U; -Im U] = B u, and
 *    y = Re(IFFT(Z)) = B^T [Re Z; -Im Z] / T (the bins T-f are zero in the
 *    maths: no doubling here, unlike c2r's Hermitian half spectrum).
 *    4 T k D flops at sgemm speed and nothing to plan.
 *  - Long DFT: the same GEMMs for longer FFT-unfriendly lengths, with B made
 *    a tile of rows at a time from the cos/sin table instead of held whole
 *    (2k x T floats would be 4 GiB at T = 4M): FFTW took 7x longer on a prime
 *    length of 4M than on 4,000,000, and Rader's algorithm needs buffers of
 *    its own. 8 T k D flops a layer at sgemm speed, a quarter of the MLP's at
 *    k = 128 and F = 4 D, and memory of 2 T + 2 k D floats per document; for
 *    k above SP_DFT_LONG_K_MAX the FFT is kept (the cost grows with k). */
#define SP_DFT_T_SHORT 1024  /* see mix_mode */
#define SP_DFT_T_MAX 16384   /* above it, the long DFT (the table B grows as k x T) */
#define SP_DFT_COLS 64       /* channels per forward DFT task */
#define SP_DFT_LONG_K_MAX 256
#define SP_DFT_LONG_ROWS 512 /* rows of B made at a time by a long forward task */
#define SP_DFT_LONG_COLS 32  /* channels per long forward task (fixed: results
                                must not depend on the thread count) */
enum { MIX_FFT = 0, MIX_DFT = 1, MIX_DFT_LONG = 2 };

/* Whether FFTW has direct codelets for every prime factor of n. */
static int fft_friendly(int64_t n) {
    static const int primes[] = {2, 3, 5, 7, 11, 13};
    for (int i = 0; i < 6; i++)
        while (n % primes[i] == 0) n /= primes[i];
    return n == 1;
}

/* Short documents of many lengths would each pay FFTW's planning: below
 * SP_DFT_T_SHORT only powers of two (few lengths, FFTW's fastest case) take
 * the FFT. Longer ones take it whenever FFTW has codelets for T. */
static int mix_mode(int64_t T, int64_t k) {
    if (k == 0) return MIX_FFT;
    if (T <= SP_DFT_T_SHORT) return (T & (T - 1)) != 0 ? MIX_DFT : MIX_FFT;
    if (fft_friendly(T)) return MIX_FFT;
    if (T <= SP_DFT_T_MAX) return MIX_DFT;
    return k <= SP_DFT_LONG_K_MAX ? MIX_DFT_LONG : MIX_FFT;
}

typedef struct {
    int64_t r0, T, k;         /* first row in h, length, bins kept */
    int mode;                 /* MIX_FFT, MIX_DFT or MIX_DFT_LONG */
    sp_fft_plan *full, *last; /* FFT: plans for a full tile and the last tile */
    float *table;             /* DFT: cos, sin of 2 pi j / T, j < T */
    float *B;                 /* DFT: 2k x T, rows cos(2 pi f t/T) then sin
                                 (long DFT: none, made per tile) */
    float *Z;                 /* DFT: 2k x D filtered spectrum, scaled for the inverse */
    /* First task of this document in each phase, numbered across documents
     * (a document with no task in a phase gets the running count). */
    int64_t fblock0; /* phase 0: DFT table rows, SP_DFT_FBLOCK frequencies a task */
    int64_t task0;   /* phase 1: FFT channel tiles or DFT column blocks */
    int64_t tile0;   /* phase 2: DFT inverse, row tiles */
} mix_doc;

typedef struct mix_job mix_job;
struct mix_job {
    /* source of the mixing input: u, or h normalized on the fly with stats */
    const float *u;
    const double *stats; /* mean, rstd per row of h (mix_block) */
    const float *ln_w, *ln_b;
    const float *filter, *bias;
    float *h;
    int64_t K, D;
    int tile;
    int64_t n_tiles; /* FFT channel tiles per document */
    int64_t n_cols;  /* DFT column blocks per document */
    mix_doc *docs;
    int64_t n_docs;
    char *ws;
    size_t slot;
};

/* The mixing input at row `row` (of h), channel d. */
static inline float mix_input(const mix_job *j, int64_t row, int64_t d) {
    if (!j->stats) return j->u[row * j->D + d];
    /* The pre-LayerNorm, bit for bit as the layer_norm op computes it. */
    const double *st = j->stats + 2 * row;
    return (float)((j->h[row * j->D + d] - st[0]) * st[1]) * j->ln_w[d] + j->ln_b[d];
}

/* Channel d0+j of the input becomes contiguous row j, SP_MIX_TB rows at a
 * time so the strided source lines stay in L1. */
static void mix_gather(const mix_job *j, const mix_doc *doc, int64_t d0, int m, float *rb,
                       int64_t rdist) {
    const int64_t T = doc->T;
    for (int64_t t0 = 0; t0 < T; t0 += SP_MIX_TB) {
        const int64_t tn = T - t0 < SP_MIX_TB ? T - t0 : SP_MIX_TB;
        for (int c = 0; c < m; c++) {
            float *dst = rb + c * rdist + t0;
            for (int64_t t = 0; t < tn; t++) dst[t] = mix_input(j, doc->r0 + t0 + t, d0 + c);
        }
    }
}

/* FFT path, one tile of channels of one document. */
static void fft_task(const mix_job *j, const mix_doc *doc, int64_t it, int worker) {
    const int64_t D = j->D, T = doc->T, K = j->K, k = doc->k;
    const int64_t d0 = it * j->tile;
    const int m = (int)(D - d0 < j->tile ? D - d0 : j->tile);
    float *hd = j->h + doc->r0 * D;
    if (k == 0) { /* too short for any bin: the bias alone */
        if (j->bias)
            for (int64_t t = 0; t < T; t++)
                for (int c = 0; c < m; c++) hd[t * D + d0 + c] += j->bias[d0 + c];
        return;
    }
    const sp_fft_plan *p = m == j->tile ? doc->full : doc->last;
    const int64_t cdist = p->cdist, rdist = 2 * cdist, nc = T / 2 + 1;
    fftwf_complex *cb = (fftwf_complex *)(j->ws + (size_t)worker * j->slot);
    float *rb = (float *)cb;
    mix_gather(j, doc, d0, m, rb, rdist);
    fftwf_execute_dft_r2c(p->r2c, rb, cb);
    /* c2r is unnormalized: fold 1/T into the filter. The DC bin is real
     * (U_0 is real, Re(U_0 W_0) = U_0 Re W_0); the other kept bins f < k
     * <= T/2 stand for f and T-f, and c2r doubles them, so halve. */
    const float s0 = (float)(1.0 / (double)T), s1 = (float)(0.5 / (double)T);
    for (int c = 0; c < m; c++) {
        fftwf_complex *z = cb + c * cdist;
        const float *w = j->filter + (d0 + c) * K * 2;
        z[0][0] *= w[0] * s0;
        z[0][1] = 0.0f;
        for (int64_t f = 1; f < k; f++) {
            const float ur = z[f][0], ui = z[f][1];
            const float wr = w[2 * f] * s1, wi = w[2 * f + 1] * s1;
            z[f][0] = ur * wr - ui * wi;
            z[f][1] = ur * wi + ui * wr;
        }
        memset(z + k, 0, (size_t)(nc - k) * sizeof(fftwf_complex));
    }
    fftwf_execute_dft_c2r(p->c2r, cb, rb);
    /* Scatter-add back into the strided channels, with the bias. */
    float bj[SP_MIX_TILE_MAX];
    for (int c = 0; c < m; c++) bj[c] = j->bias ? j->bias[d0 + c] : 0.0f;
    for (int64_t t0 = 0; t0 < T; t0 += SP_MIX_TB) {
        const int64_t tn = T - t0 < SP_MIX_TB ? T - t0 : SP_MIX_TB;
        for (int c = 0; c < m; c++) {
            float *dst = hd + t0 * D + d0 + c;
            const float *src = rb + c * rdist + t0;
            const float bv = bj[c];
            for (int64_t t = 0; t < tn; t++) dst[t * D] += src[t] + bv;
        }
    }
}

static void dft_filter(const mix_job *j, const mix_doc *doc, int64_t d0, int m);

/* DFT path, forward: Z[:, block] = filter(B u[:, block]) for one block of
 * SP_DFT_COLS channels. */
static void dft_forward_task(const mix_job *j, const mix_doc *doc, int64_t ib, int worker) {
    const int64_t D = j->D, T = doc->T, k = doc->k;
    const int64_t d0 = ib * SP_DFT_COLS;
    const int m = (int)(D - d0 < SP_DFT_COLS ? D - d0 : SP_DFT_COLS);
    float *ub = (float *)(j->ws + (size_t)worker * j->slot); /* T x m */
    for (int64_t t = 0; t < T; t++)
        for (int c = 0; c < m; c++) ub[t * m + c] = mix_input(j, doc->r0 + t, d0 + c);
    float *Z = doc->Z + d0;
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, (int)(2 * k), m, (int)T, 1.0f, doc->B,
                (int)T, ub, m, 0.0f, Z, (int)D);
    dft_filter(j, doc, d0, m);
}

/* Row r < rows of B (2k x rows, leading dimension ld) for sequence positions
 * t0 .. t0+rows-1: cos(2 pi f t/T) in row f, sin in row k+f. */
static void dft_make_b(const mix_doc *doc, int64_t t0, int64_t rows, float *Bt, int64_t ld) {
    const int64_t T = doc->T, k = doc->k;
    const float *tc = doc->table, *ts = doc->table + T;
    for (int64_t f = 0; f < k; f++) {
        float *bc = Bt + f * ld, *bs = Bt + (k + f) * ld;
        int64_t idx = f * t0 % T; /* f t mod T, exactly */
        for (int64_t r = 0; r < rows; r++) {
            bc[r] = tc[idx];
            bs[r] = ts[idx];
            idx += f;
            if (idx >= T) idx -= T;
        }
    }
}

/* Long DFT, forward, one block of SP_DFT_LONG_COLS channels: Z[:, block] =
 * filter(sum over row tiles of B_tile u_tile). Each tile's product is added
 * into a double accumulator, so the rounding does not grow with T / tile. */
static void dft_long_forward_task(const mix_job *j, const mix_doc *doc, int64_t ib, int worker) {
    const int64_t D = j->D, T = doc->T, k = doc->k, R = SP_DFT_LONG_ROWS;
    const int64_t d0 = ib * SP_DFT_LONG_COLS;
    const int m = (int)(D - d0 < SP_DFT_LONG_COLS ? D - d0 : SP_DFT_LONG_COLS);
    char *slot = j->ws + (size_t)worker * j->slot;
    double *acc = (double *)slot;                           /* 2k x m */
    float *zt = (float *)(slot + aligned(2 * k * m * 8));   /* 2k x m */
    float *ub = zt + sp_cpu_round_up(2 * k * m, 16);        /* R x m */
    float *Bt = ub + R * m;                                 /* 2k x R */
    memset(acc, 0, (size_t)(2 * k * m) * sizeof *acc);
    for (int64_t t0 = 0; t0 < T; t0 += R) {
        const int64_t rows = T - t0 < R ? T - t0 : R;
        for (int64_t t = 0; t < rows; t++)
            for (int c = 0; c < m; c++) ub[t * m + c] = mix_input(j, doc->r0 + t0 + t, d0 + c);
        dft_make_b(doc, t0, rows, Bt, R);
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, (int)(2 * k), m, (int)rows, 1.0f,
                    Bt, (int)R, ub, m, 0.0f, zt, m);
        for (int64_t i = 0; i < 2 * k * m; i++) acc[i] += zt[i];
    }
    float *Z = doc->Z + d0;
    for (int64_t f = 0; f < 2 * k; f++)
        for (int c = 0; c < m; c++) Z[f * D + c] = (float)acc[f * m + c];
    dft_filter(j, doc, d0, m);
}

/* Bytes of a long forward task's slot (see dft_long_forward_task). */
static int64_t dft_long_slot(int64_t k) {
    const int64_t m = SP_DFT_LONG_COLS, R = SP_DFT_LONG_ROWS;
    const int64_t fwd = (int64_t)aligned(2 * k * m * 8) + 4 * (sp_cpu_round_up(2 * k * m, 16) + R * m + 2 * k * R);
    const int64_t inv = 4 * 2 * k * SP_CPU_ROW_TILE;
    return fwd > inv ? fwd : inv;
}

/* The filter on a DFT document's bins, for channels d0 .. d0+m-1 of Z. */
static void dft_filter(const mix_job *j, const mix_doc *doc, int64_t d0, int m) {
    const int64_t D = j->D, T = doc->T, K = j->K, k = doc->k;
    float *Z = doc->Z + d0;
    /* Rows f: Re U_f = sum u cos; rows k+f: S_f = sum u sin = -Im U_f.
     * Z = U W, stored as Re Z_f / T and -Im Z_f / T for the inverse; the DC
     * bin is real (Re(U_0 W_0) with U_0 real). */
    const float a0 = (float)(1.0 / (double)T), a1 = a0;
    for (int c = 0; c < m; c++) {
        const float *w = j->filter + (d0 + c) * K * 2;
        Z[c] *= w[0] * a0;
        Z[k * D + c] = 0.0f;
        for (int64_t f = 1; f < k; f++) {
            const float ur = Z[f * D + c], sf = Z[(k + f) * D + c];
            const float wr = w[2 * f], wi = w[2 * f + 1];
            Z[f * D + c] = (ur * wr + sf * wi) * a1;
            Z[(k + f) * D + c] = (sf * wr - ur * wi) * a1;
        }
    }
}

/* DFT path, inverse: h[rows] += B[:, rows]^T Z + bias for one row tile (the
 * long DFT makes those columns of B in the worker's slot first). */
static void dft_inverse_task(const mix_job *j, const mix_doc *doc, int64_t it, int worker) {
    const int64_t D = j->D, T = doc->T, k = doc->k;
    const int64_t t0 = it * SP_CPU_ROW_TILE;
    const int64_t rows = T - t0 < SP_CPU_ROW_TILE ? T - t0 : SP_CPU_ROW_TILE;
    float *hd = j->h + (doc->r0 + t0) * D;
    const float *B = doc->B + t0;
    int64_t ld = T;
    if (doc->mode == MIX_DFT_LONG) {
        float *Bt = (float *)(j->ws + (size_t)worker * j->slot);
        dft_make_b(doc, t0, rows, Bt, SP_CPU_ROW_TILE);
        B = Bt;
        ld = SP_CPU_ROW_TILE;
    }
    cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, (int)rows, (int)D, (int)(2 * k), 1.0f,
                B, (int)ld, doc->Z, (int)D, 1.0f, hd, (int)D);
    if (j->bias)
        for (int64_t r = 0; r < rows; r++)
            for (int64_t d = 0; d < D; d++) hd[r * D + d] += j->bias[d];
}

/* Phase 0: a DFT document's table B, a block of 16 frequencies per task. */
#define SP_DFT_FBLOCK 16
static void dft_table_task(const mix_job *j, const mix_doc *doc, int64_t fb) {
    const int64_t T = doc->T, k = doc->k;
    const float *tc = doc->table, *ts = doc->table + T;
    const int64_t f1 = (fb + 1) * SP_DFT_FBLOCK < k ? (fb + 1) * SP_DFT_FBLOCK : k;
    for (int64_t f = fb * SP_DFT_FBLOCK; f < f1; f++) {
        float *bc = doc->B + f * T, *bs = doc->B + (k + f) * T;
        int64_t idx = 0; /* f t mod T, exactly */
        for (int64_t t = 0; t < T; t++) {
            bc[t] = tc[idx];
            bs[t] = ts[idx];
            idx += f;
            if (idx >= T) idx -= T;
        }
    }
}

/* Finds the document and its local index for a task numbered across all
 * documents (first task of each document in `first_of`). */
static const mix_doc *doc_of(const mix_job *j, int64_t task, size_t first_of, int64_t *local) {
    int64_t lo = 0, hi = j->n_docs - 1;
    while (lo < hi) { /* last document whose first task <= task */
        const int64_t mid = (lo + hi + 1) / 2;
        if (*(const int64_t *)((const char *)&j->docs[mid] + first_of) <= task) lo = mid;
        else hi = mid - 1;
    }
    *local = task - *(const int64_t *)((const char *)&j->docs[lo] + first_of);
    return &j->docs[lo];
}

static void phase0_task(void *arg, int64_t task, int worker) {
    (void)worker;
    const mix_job *j = arg;
    int64_t fb;
    const mix_doc *doc = doc_of(j, task, offsetof(mix_doc, fblock0), &fb);
    dft_table_task(j, doc, fb);
}

static void phase1_task(void *arg, int64_t task, int worker) {
    const mix_job *j = arg;
    int64_t local;
    const mix_doc *doc = doc_of(j, task, offsetof(mix_doc, task0), &local);
    if (doc->mode == MIX_DFT) dft_forward_task(j, doc, local, worker);
    else if (doc->mode == MIX_DFT_LONG) dft_long_forward_task(j, doc, local, worker);
    else fft_task(j, doc, local, worker);
}

static void phase2_task(void *arg, int64_t task, int worker) {
    const mix_job *j = arg;
    int64_t local;
    const mix_doc *doc = doc_of(j, task, offsetof(mix_doc, tile0), &local);
    dft_inverse_task(j, doc, local, worker);
}

/* ----------------------------------------------------------- sizes */

static int mix_tile(const sp_backend *be) { return ((const sp_cpu_impl *)be->impl)->tile; }

/* Everything one call needs, laid out the same way by the size query and the
 * run: [stats][per DFT document: table, B, Z][one scratch slot per task in
 * flight]. Slots: at most one per thread and never more than the tasks, so
 * all of one document's channels in flight is the most the mixing holds. */
typedef struct {
    size_t stats, docs, slot, total;
    int slots;
    int64_t n_phase1;
    int64_t n_long_tiles; /* phase-2 tasks of long-DFT documents (each uses a slot) */
} mix_layout;


/* A DFT document's memory: the cos/sin table (2T floats), B (2k x T; none
 * for the long DFT) and Z (2k x D), each aligned. Points d's arrays into mem
 * when given; returns the bytes, so the size query and the run carve the
 * same way. */
static size_t dft_doc_carve(int64_t T, int64_t k, int64_t D, int mode, char *mem, mix_doc *d) {
    const size_t table = aligned(2 * T * 4), Z = aligned(2 * k * D * 4);
    const size_t B = mode == MIX_DFT ? aligned(2 * k * T * 4) : 0;
    if (mem && d) {
        d->table = (float *)mem;
        d->B = (float *)(mem + table);
        d->Z = (float *)(mem + table + B);
    }
    return table + B + Z;
}

static mix_layout layout(const sp_backend *be, const int64_t *offsets, int64_t n_docs, int64_t D,
                         int64_t K, int with_stats) {
    mix_layout L = {0};
    const int tile = mix_tile(be);
    const int64_t n_tiles = (D + tile - 1) / tile, n_cols = (D + SP_DFT_COLS - 1) / SP_DFT_COLS;
    int64_t slot = 0;
    for (int64_t i = 0; i < n_docs; i++) {
        const int64_t T = offsets[i + 1] - offsets[i], k = K < T / 2 ? K : T / 2;
        const int mode = mix_mode(T, k);
        if (mode == MIX_DFT_LONG) {
            L.docs += dft_doc_carve(T, k, D, mode, NULL, NULL);
            L.n_phase1 += (D + SP_DFT_LONG_COLS - 1) / SP_DFT_LONG_COLS;
            L.n_long_tiles += (T + SP_CPU_ROW_TILE - 1) / SP_CPU_ROW_TILE;
            if (dft_long_slot(k) > slot) slot = dft_long_slot(k);
        } else if (mode == MIX_DFT) {
            L.docs += dft_doc_carve(T, k, D, mode, NULL, NULL);
            L.n_phase1 += n_cols;
            if (T * SP_DFT_COLS * 4 > slot) slot = T * SP_DFT_COLS * 4;
        } else {
            L.n_phase1 += n_tiles;
            if (k && tile * sp_cpu_fft_cdist(T) * 8 > slot) slot = tile * sp_cpu_fft_cdist(T) * 8;
        }
    }
    L.stats = with_stats ? aligned(2 * offsets[n_docs] * (int64_t)sizeof(double)) : 0;
    L.slot = aligned(slot);
    L.slots = sp_cpu_slots(be, L.n_phase1 > L.n_long_tiles ? L.n_phase1 : L.n_long_tiles);
    L.total = SP_CPU_ALIGN + L.stats + L.docs + (size_t)L.slots * L.slot;
    return L;
}

size_t sp_cpu_mix_workspace_size(sp_backend *be, int64_t T, int64_t D) {
    if (T < 2 || D <= 0) return 0; /* k = 0: bias only, no transform */
    /* The generic op always takes the FFT path (its size knows no K). */
    const int tile = mix_tile(be), n_tiles = (int)((D + tile - 1) / tile);
    return SP_CPU_ALIGN + (size_t)sp_cpu_slots(be, n_tiles) * aligned(tile * sp_cpu_fft_cdist(T) * 8);
}

/* Checks offsets; returns the longest document, or -1 with a message. */
static int64_t check_offsets(sp_backend *be, const int64_t *offsets, int64_t n_docs) {
    if (!offsets || n_docs < 1 || offsets[0] != 0) {
        sp_cpu_set_err(be, "cpu mix_block: bad document offsets");
        return -1;
    }
    int64_t T_max = 0;
    for (int64_t i = 0; i < n_docs; i++) {
        const int64_t T = offsets[i + 1] - offsets[i];
        if (T <= 0 || T > INT_MAX / 2) {
            sp_cpu_set_err(be, "cpu mix_block: document %lld has bad length %lld", (long long)i,
                           (long long)T);
            return -1;
        }
        if (T > T_max) T_max = T;
    }
    return T_max;
}

size_t sp_cpu_mix_block_workspace_size(sp_backend *be, const int64_t *offsets, int64_t n_docs,
                                       int64_t D, int64_t K) {
    if (D <= 0 || K < 0 || !offsets || n_docs < 1) return 0;
    return layout(be, offsets, n_docs, D, K, 1).total;
}

/* ------------------------------------------------------------ running */

/* Plans (FFT documents), tables (DFT documents), then the phases. */
static int mix_run(sp_backend *be, mix_job *j, const mix_layout *L, char *doc_mem) {
    const unsigned flags = ((const sp_cpu_impl *)be->impl)->fft_flags;
    const int tile = j->tile;
    const int last = (int)(j->D - (j->n_tiles - 1) * tile);
    mix_doc *docs = j->docs;
    int rc = 0;
    int64_t n0 = 0, n1 = 0, n2 = 0;
    for (int64_t i = 0; i < j->n_docs; i++) {
        mix_doc *d = &docs[i];
        d->fblock0 = n0;
        d->task0 = n1;
        d->tile0 = n2;
        if (d->mode != MIX_FFT) {
            const int64_t T = d->T, k = d->k;
            doc_mem += dft_doc_carve(T, k, j->D, d->mode, doc_mem, d);
            for (int64_t t = 0; t < T; t++) {
                const double a = 6.283185307179586476925 * (double)t / (double)T;
                d->table[t] = (float)cos(a);
                d->table[T + t] = (float)sin(a);
            }
            if (d->mode == MIX_DFT) {
                n0 += (k + SP_DFT_FBLOCK - 1) / SP_DFT_FBLOCK;
                n1 += j->n_cols;
            } else {
                n1 += (j->D + SP_DFT_LONG_COLS - 1) / SP_DFT_LONG_COLS;
            }
            n2 += (T + SP_CPU_ROW_TILE - 1) / SP_CPU_ROW_TILE;
            continue;
        }
        n1 += j->n_tiles;
        if (!d->k || rc) continue;
        /* a full tile exists unless all channels fit in the last one */
        d->full = j->n_tiles > 1 || last == tile ? sp_cpu_fft_acquire(d->T, tile, flags) : NULL;
        d->last = last == tile ? d->full : sp_cpu_fft_acquire(d->T, last, flags);
        if ((!d->full && (j->n_tiles > 1 || last == tile)) || !d->last) {
            sp_cpu_set_err(be, "cpu spectral_mix: FFTW could not plan n=%lld", (long long)d->T);
            rc = 1;
        }
    }
    if (!rc && n0) sp_pool_run(sp_cpu_pool(be), n0, sp_cpu_slots(be, n0), phase0_task, j);
    if (!rc) sp_pool_run(sp_cpu_pool(be), n1, L->slots, phase1_task, j);
    /* long-DFT inverse tasks make B in a slot: no more workers than slots */
    if (!rc && n2)
        sp_pool_run(sp_cpu_pool(be), n2, L->n_long_tiles ? L->slots : sp_cpu_slots(be, n2),
                    phase2_task, j);
    for (int64_t i = 0; i < j->n_docs; i++) {
        if (docs[i].last && docs[i].last != docs[i].full) sp_cpu_fft_release(docs[i].last);
        if (docs[i].full) sp_cpu_fft_release(docs[i].full);
    }
    return rc;
}

int sp_cpu_spectral_mix(sp_backend *be, const float *u, const float *filter, const float *bias,
                        int64_t K, int64_t T, int64_t D, void *workspace, float *h) {
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
    if (k > 0 && !workspace) {
        sp_cpu_set_err(be, "cpu spectral_mix: NULL workspace");
        return 1;
    }
    const int tile = mix_tile(be);
    const int64_t n_tiles = (D + tile - 1) / tile;
    mix_doc doc = {.r0 = 0, .T = T, .k = k};
    mix_layout L = {.slot = aligned(tile * sp_cpu_fft_cdist(T) * 8), .slots = sp_cpu_slots(be, n_tiles)};
    mix_job j = {.u = u, .filter = filter, .bias = bias, .h = h, .K = K, .D = D, .tile = tile,
                 .n_tiles = n_tiles, .n_cols = (D + SP_DFT_COLS - 1) / SP_DFT_COLS, .docs = &doc,
                 .n_docs = 1, .ws = workspace ? sp_cpu_align(workspace) : NULL, .slot = L.slot};
    return mix_run(be, &j, &L, NULL);
}

typedef struct {
    const float *h;
    double *stats;
    float eps;
    int64_t T, D;
} stats_job;

#define SP_STATS_ROWS 256

static void stats_task(void *arg, int64_t task, int worker) {
    (void)worker;
    const stats_job *j = arg;
    const int64_t r1 = (task + 1) * SP_STATS_ROWS < j->T ? (task + 1) * SP_STATS_ROWS : j->T;
    for (int64_t r = task * SP_STATS_ROWS; r < r1; r++)
        /* The layer_norm op's statistics (sp_cpu_layer_norm_row). */
        sp_cpu_row_stats(j->h + r * j->D, j->D, j->eps, &j->stats[2 * r], &j->stats[2 * r + 1]);
}

int sp_cpu_mix_block(sp_backend *be, float *h, const float *ln_w, const float *ln_b, float eps,
                     const float *filter, const float *bias, int64_t K, int64_t D,
                     const int64_t *offsets, int64_t n_docs, void *workspace) {
    if (D <= 0 || K < 0) {
        sp_cpu_set_err(be, "cpu mix_block: bad shape D=%lld K=%lld", (long long)D, (long long)K);
        return 1;
    }
    const int64_t T_max = check_offsets(be, offsets, n_docs);
    if (T_max < 0) return 1;
    if (!h || !ln_w || !ln_b || (K > 0 && !filter) || !workspace) {
        sp_cpu_set_err(be, "cpu mix_block: NULL argument");
        return 1;
    }
    const int64_t T = offsets[n_docs];
    const mix_layout L = layout(be, offsets, n_docs, D, K, 1);
    char *ws = sp_cpu_align(workspace);
    double *stats = (double *)ws;
    stats_job sj = {h, stats, eps, T, D};
    const int64_t n_stats = (T + SP_STATS_ROWS - 1) / SP_STATS_ROWS;
    sp_pool_run(sp_cpu_pool(be), n_stats, sp_cpu_slots(be, n_stats), stats_task, &sj);

    mix_doc stack_docs[16];
    mix_doc *docs = n_docs <= 16 ? stack_docs : malloc((size_t)n_docs * sizeof *docs);
    if (!docs) {
        sp_cpu_set_err(be, "cpu mix_block: out of memory");
        return 1;
    }
    for (int64_t i = 0; i < n_docs; i++) {
        const int64_t Ti = offsets[i + 1] - offsets[i], k = K < Ti / 2 ? K : Ti / 2;
        docs[i] = (mix_doc){.r0 = offsets[i], .T = Ti, .k = k, .mode = mix_mode(Ti, k)};
    }
    const int tile = mix_tile(be);
    mix_job j = {.stats = stats, .ln_w = ln_w, .ln_b = ln_b, .filter = filter, .bias = bias,
                 .h = h, .K = K, .D = D, .tile = tile, .n_tiles = (D + tile - 1) / tile,
                 .n_cols = (D + SP_DFT_COLS - 1) / SP_DFT_COLS, .docs = docs, .n_docs = n_docs,
                 .ws = ws + L.stats + L.docs, .slot = L.slot};
    int rc = mix_run(be, &j, &L, ws + L.stats);
    if (docs != stack_docs) free(docs);
    return rc;
}
