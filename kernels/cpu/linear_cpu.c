/* The CPU backend's GEMM ops: linear, and the fused MLP sub-block.
 *
 * Rows are cut into fixed tiles of SP_CPU_ROW_TILE; each tile is one task of
 * the pool and calls a single-threaded sgemm, then applies bias and
 * activation while the tile is still in cache. The MLP runs LayerNorm, the
 * up projection, bias + GELU, the down projection and the residual add on
 * one tile before the next, so its hidden activation never leaves L2 and is
 * never T x F in memory. */
#include <cblas.h>
#include <limits.h>
#include <math.h>
#include <string.h>

#include "kernels/cpu/cpu_internal.h"

/* glibc >= 2.35 ships vector erff variants in libmvec (linked through libm's
 * linker script) but declares them only under -ffast-math. Declaring the
 * SIMD clone here lets the GELU loop below call erff several lanes at a time;
 * the scalar call cost as much as the sgemm it follows. */
#if defined(__GNUC__) && !defined(__clang__) && defined(__x86_64__) && defined(__GLIBC__) && \
    (__GLIBC__ > 2 || (__GLIBC__ == 2 && __GLIBC_MINOR__ >= 35)) && !defined(__FAST_MATH__)
float erff(float) __attribute__((__simd__("notinbranch")));
#define SP_SIMD_ERFF 1
#endif

void sp_cpu_row_stats(const float *x, int64_t D, float eps, double *mean_out, double *rstd_out) {
    /* Two passes in double: exact enough that the result does not depend on
     * D or on the magnitude of the mean. The simd reductions fix one order of
     * the additions per build, the same for every row and thread count. */
    double s = 0.0;
#pragma omp simd reduction(+ : s)
    for (int64_t d = 0; d < D; d++) s += x[d];
    const double mean = s / (double)D;
    double v = 0.0;
#pragma omp simd reduction(+ : v)
    for (int64_t d = 0; d < D; d++) {
        const double c = x[d] - mean;
        v += c * c;
    }
    *mean_out = mean;
    *rstd_out = 1.0 / sqrt(v / (double)D + (double)eps);
}

void sp_cpu_layer_norm_row(const float *x, const float *w, const float *b, float eps, int64_t D,
                           float *y) {
    double mean, rstd;
    sp_cpu_row_stats(x, D, eps, &mean, &rstd);
    /* Centre in double: a float mean rounded near a large offset would shift
     * every output by up to half an ulp of the offset. */
#pragma omp simd
    for (int64_t d = 0; d < D; d++) y[d] = (float)((x[d] - mean) * rstd) * w[d] + b[d];
}

/* o[j] = act(o[j] + b[j]) over one row of n. Built for AVX2 too (chosen at
 * load time): the GELU's vector erff then runs 8 lanes instead of 4. */
#if defined(__GNUC__) && defined(__x86_64__) && defined(__GLIBC__) && !defined(__clang__) && \
    !defined(__SANITIZE_ADDRESS__) && !defined(__SANITIZE_THREAD__) /* resolvers run before the sanitizer runtime */
__attribute__((target_clones("avx2", "default")))
#endif
static void bias_act_row(float *o, const float *b, int64_t n, sp_act act) {
    switch (act) {
    case SP_ACT_NONE:
        if (b)
            for (int64_t j = 0; j < n; j++) o[j] += b[j];
        break;
    case SP_ACT_GELU:
        if (b) {
#ifdef SP_SIMD_ERFF
#pragma omp simd
#endif
            for (int64_t j = 0; j < n; j++) {
                const float v = o[j] + b[j];
                o[j] = 0.5f * v * (1.0f + erff(v * 0.70710678118654752f));
            }
        } else {
#ifdef SP_SIMD_ERFF
#pragma omp simd
#endif
            for (int64_t j = 0; j < n; j++)
                o[j] = 0.5f * o[j] * (1.0f + erff(o[j] * 0.70710678118654752f));
        }
        break;
    case SP_ACT_GELU_TANH:
        for (int64_t j = 0; j < n; j++) {
            const float v = o[j] + (b ? b[j] : 0.0f);
            o[j] = 0.5f * v * (1.0f + tanhf(0.79788456080286536f * (v + 0.044715f * v * v * v)));
        }
        break;
    case SP_ACT_TANH:
        for (int64_t j = 0; j < n; j++) o[j] = tanhf(o[j] + (b ? b[j] : 0.0f));
        break;
    }
}

static int act_valid(sp_act act) {
    return act == SP_ACT_NONE || act == SP_ACT_GELU || act == SP_ACT_GELU_TANH || act == SP_ACT_TANH;
}

/* ------------------------------------------------------------------ linear */

typedef struct {
    const float *x, *W, *b;
    int64_t T, IN, OUT;
    sp_act act;
    float beta;
    float *out;
} linear_job;

static void linear_task(void *arg, int64_t task, int worker) {
    (void)worker;
    const linear_job *j = arg;
    const int64_t r0 = task * SP_CPU_ROW_TILE;
    const int64_t rows = j->T - r0 < SP_CPU_ROW_TILE ? j->T - r0 : SP_CPU_ROW_TILE;
    float *o = j->out + r0 * j->OUT;
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, (int)rows, (int)j->OUT, (int)j->IN, 1.0f,
                j->x + r0 * j->IN, (int)j->IN, j->W, (int)j->IN, j->beta, o, (int)j->OUT);
    if (j->b || j->act != SP_ACT_NONE)
        for (int64_t r = 0; r < rows; r++) bias_act_row(o + r * j->OUT, j->b, j->OUT, j->act);
}

int sp_cpu_linear(sp_backend *be, const float *x, const float *W, const float *b, int64_t T,
                  int64_t IN, int64_t OUT, sp_act act, int accumulate, float *out) {
    if (T < 0 || IN <= 0 || OUT <= 0 || T > INT_MAX || IN > INT_MAX || OUT > INT_MAX) {
        if (T == 0 && IN >= 0 && OUT >= 0) return 0;
        sp_cpu_set_err(be, "cpu linear: bad shape T=%lld IN=%lld OUT=%lld", (long long)T,
                       (long long)IN, (long long)OUT);
        return 1;
    }
    if (T == 0) return 0;
    if (!act_valid(act)) {
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
    linear_job j = {x, W, b, T, IN, OUT, act, accumulate ? 1.0f : 0.0f, out};
    const int64_t n_tiles = (T + SP_CPU_ROW_TILE - 1) / SP_CPU_ROW_TILE;
    sp_pool_run(sp_cpu_pool(be), n_tiles, sp_cpu_slots(be, n_tiles), linear_task, &j);
    return 0;
}

/* --------------------------------------------------------------- ffn_block */

/* Per-thread scratch: the normalized tile (ROW_TILE x D) and the hidden tile
 * (ROW_TILE x F), each on its own aligned slice. */
static size_t ffn_slot_bytes(int64_t D, int64_t F) {
    return (size_t)sp_cpu_round_up(SP_CPU_ROW_TILE * D * (int64_t)sizeof(float), SP_CPU_ALIGN) +
           (size_t)sp_cpu_round_up(SP_CPU_ROW_TILE * F * (int64_t)sizeof(float), SP_CPU_ALIGN);
}

int64_t sp_cpu_doc_tiles(const int64_t *offsets, int64_t n_docs, int64_t rows, int64_t *tile_start) {
    int64_t n = 0;
    for (int64_t d = 0; d < n_docs; d++)
        for (int64_t r = offsets[d]; r < offsets[d + 1]; r += rows) {
            if (tile_start) tile_start[n] = r;
            n++;
        }
    if (tile_start) tile_start[n] = offsets[n_docs];
    return n;
}

/* Tiles in flight: one per thread, but never more scratch than
 * max(T x D floats, 32 MiB), so memory does not grow with the thread count
 * beyond a bounded amount. */
static int ffn_slots(sp_backend *be, int64_t n_tiles, int64_t T, int64_t D, int64_t F) {
    int slots = sp_cpu_slots(be, n_tiles);
    const int64_t budget = T * D * (int64_t)sizeof(float) > (INT64_C(32) << 20)
                               ? T * D * (int64_t)sizeof(float)
                               : (INT64_C(32) << 20);
    const int64_t cap = budget / (int64_t)ffn_slot_bytes(D, F);
    if (cap < slots) slots = cap < 1 ? 1 : (int)cap;
    return slots;
}

/* The workspace: the tile starts, then one scratch slot per tile in flight. */
static size_t ffn_starts_bytes(int64_t n_tiles) {
    return (size_t)sp_cpu_round_up((n_tiles + 1) * (int64_t)sizeof(int64_t), SP_CPU_ALIGN);
}

size_t sp_cpu_ffn_block_workspace_size(sp_backend *be, const int64_t *offsets, int64_t n_docs,
                                       int64_t D, int64_t F) {
    if (!offsets || n_docs < 1 || D <= 0 || F <= 0 || offsets[n_docs] <= 0) return 0;
    const int64_t n_tiles = sp_cpu_doc_tiles(offsets, n_docs, SP_CPU_ROW_TILE, NULL);
    return ffn_starts_bytes(n_tiles) +
           (size_t)ffn_slots(be, n_tiles, offsets[n_docs], D, F) * ffn_slot_bytes(D, F) +
           SP_CPU_ALIGN;
}

typedef struct {
    float *h;
    const float *ln_w, *ln_b, *W_up, *b_up, *W_down, *b_down;
    float eps;
    sp_act act;
    int64_t D, F;
    const int64_t *tile_start;
    char *ws;
    size_t slot;
} ffn_job;

static void ffn_task(void *arg, int64_t task, int worker) {
    const ffn_job *j = arg;
    const int64_t D = j->D, F = j->F;
    const int64_t r0 = j->tile_start[task], rows = j->tile_start[task + 1] - r0;
    float *x = (float *)(j->ws + (size_t)worker * j->slot);
    float *hid = x + sp_cpu_round_up(SP_CPU_ROW_TILE * D, SP_CPU_ALIGN / sizeof(float));
    float *h = j->h + r0 * D;
    for (int64_t r = 0; r < rows; r++)
        sp_cpu_layer_norm_row(h + r * D, j->ln_w, j->ln_b, j->eps, D, x + r * D);
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, (int)rows, (int)F, (int)D, 1.0f, x,
                (int)D, j->W_up, (int)D, 0.0f, hid, (int)F);
    for (int64_t r = 0; r < rows; r++) bias_act_row(hid + r * F, j->b_up, F, j->act);
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, (int)rows, (int)D, (int)F, 1.0f, hid,
                (int)F, j->W_down, (int)F, 1.0f, h, (int)D);
    if (j->b_down)
        for (int64_t r = 0; r < rows; r++)
            for (int64_t d = 0; d < D; d++) h[r * D + d] += j->b_down[d];
}

int sp_cpu_ffn_block(sp_backend *be, float *h, const float *ln_w, const float *ln_b, float eps,
                     const float *W_up, const float *b_up, sp_act act, const float *W_down,
                     const float *b_down, int64_t D, int64_t F, const int64_t *offsets,
                     int64_t n_docs, void *workspace) {
    if (D <= 0 || F <= 0 || D > INT_MAX || F > INT_MAX) {
        sp_cpu_set_err(be, "cpu ffn_block: bad shape D=%lld F=%lld", (long long)D, (long long)F);
        return 1;
    }
    if (!offsets || n_docs < 1 || offsets[0] != 0) {
        sp_cpu_set_err(be, "cpu ffn_block: bad document offsets");
        return 1;
    }
    for (int64_t i = 0; i < n_docs; i++)
        if (offsets[i + 1] <= offsets[i]) {
            sp_cpu_set_err(be, "cpu ffn_block: document %lld is empty or out of order", (long long)i);
            return 1;
        }
    if (!act_valid(act)) {
        sp_cpu_set_err(be, "cpu ffn_block: unknown activation %d", (int)act);
        return 1;
    }
    if (!h || !ln_w || !ln_b || !W_up || !W_down || !workspace) {
        sp_cpu_set_err(be, "cpu ffn_block: NULL argument");
        return 1;
    }
    char *ws = sp_cpu_align(workspace);
    int64_t *tile_start = (int64_t *)ws;
    const int64_t n_tiles = sp_cpu_doc_tiles(offsets, n_docs, SP_CPU_ROW_TILE, tile_start);
    ffn_job j = {h,    ln_w, ln_b, W_up, b_up, W_down, b_down, eps,
                 act,  D,    F,    tile_start, ws + ffn_starts_bytes(n_tiles), ffn_slot_bytes(D, F)};
    sp_pool_run(sp_cpu_pool(be), n_tiles, ffn_slots(be, n_tiles, offsets[n_docs], D, F), ffn_task, &j);
    return 0;
}

/* ----------------------------------------------------------- glu_ffn_block */

/* Rows per task: the block GEMMs' inner dimension is D/nb (192 in the
 * published models), short enough that OpenBLAS packing each tile's
 * weights again cost ~15% at 128 rows (measured with perf); twice as many
 * rows halve that. */
#ifndef SP_GLU_ROWS
#define SP_GLU_ROWS 256
#endif

/* Per-thread scratch: the gate tile (GLU_ROWS x 2F) and the output tile
 * (GLU_ROWS x D). */
static size_t glu_slot_bytes(int64_t D, int64_t F) {
    return (size_t)sp_cpu_round_up(SP_GLU_ROWS * 2 * F * (int64_t)sizeof(float), SP_CPU_ALIGN) +
           (size_t)sp_cpu_round_up(SP_GLU_ROWS * D * (int64_t)sizeof(float), SP_CPU_ALIGN);
}

static int glu_slots(sp_backend *be, int64_t n_tiles, int64_t T, int64_t D, int64_t F) {
    /* as ffn_slots: no more scratch than max(T x D floats, 32 MiB) */
    int slots = sp_cpu_slots(be, n_tiles);
    const int64_t budget = T * D * (int64_t)sizeof(float) > (INT64_C(32) << 20)
                               ? T * D * (int64_t)sizeof(float)
                               : (INT64_C(32) << 20);
    const int64_t cap = budget / (int64_t)glu_slot_bytes(D, F);
    if (cap < slots) slots = cap < 1 ? 1 : (int)cap;
    return slots;
}

size_t sp_cpu_glu_ffn_block_workspace_size(sp_backend *be, const int64_t *offsets, int64_t n_docs,
                                           int64_t D, int64_t F, int64_t n_blocks) {
    if (!offsets || n_docs < 1 || D <= 0 || F <= 0 || n_blocks <= 0 || offsets[n_docs] <= 0) return 0;
    const int64_t n_tiles = sp_cpu_doc_tiles(offsets, n_docs, SP_GLU_ROWS, NULL);
    return ffn_starts_bytes(n_tiles) +
           (size_t)glu_slots(be, n_tiles, offsets[n_docs], D, F) * glu_slot_bytes(D, F) + SP_CPU_ALIGN;
}

typedef struct {
    float *h;
    const float *W_gate, *W_down, *b_down, *ln_w, *ln_b;
    float eps;
    int64_t D, F, nb;
    const int64_t *tile_start;
    char *ws;
    size_t slot;
} glu_job;

static void glu_task(void *arg, int64_t task, int worker) {
    const glu_job *j = arg;
    const int64_t D = j->D, F = j->F, nb = j->nb, Db = D / nb, Gb = 2 * F / nb, Fb = F / nb;
    const int64_t r0 = j->tile_start[task], rows = j->tile_start[task + 1] - r0;
    float *g = (float *)(j->ws + (size_t)worker * j->slot);
    float *z = g + sp_cpu_round_up(SP_GLU_ROWS * 2 * F, SP_CPU_ALIGN / sizeof(float));
    float *h = j->h + r0 * D;
    /* g[:, block b] = h[:, block b of D] W_gate[block b]^T */
    for (int64_t b = 0; b < nb; b++)
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, (int)rows, (int)Gb, (int)Db, 1.0f,
                    h + b * Db, (int)D, j->W_gate + b * Gb * Db, (int)Db, 0.0f, g + b * Gb,
                    (int)(2 * F));
    /* m = gelu(g[:, :F]) * g[:, F:], into g[:, :F] */
    for (int64_t r = 0; r < rows; r++) {
        float *gr = g + r * 2 * F;
        bias_act_row(gr, NULL, F, SP_ACT_GELU);
        for (int64_t i = 0; i < F; i++) gr[i] *= gr[F + i];
    }
    for (int64_t b = 0; b < nb; b++)
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, (int)rows, (int)Db, (int)Fb, 1.0f,
                    g + b * Fb, (int)(2 * F), j->W_down + b * Db * Fb, (int)Fb, 0.0f, z + b * Db,
                    (int)D);
    /* h = LN(z + b_down + h) */
    for (int64_t r = 0; r < rows; r++) {
        float *zr = z + r * D, *hr = h + r * D;
        for (int64_t d = 0; d < D; d++) zr[d] = (zr[d] + j->b_down[d]) + hr[d];
        sp_cpu_layer_norm_row(zr, j->ln_w, j->ln_b, j->eps, D, hr);
    }
}

int sp_cpu_glu_ffn_block(sp_backend *be, float *h, const float *W_gate, const float *W_down,
                         const float *b_down, const float *ln_w, const float *ln_b, float eps,
                         int64_t D, int64_t F, int64_t n_blocks, const int64_t *offsets,
                         int64_t n_docs, void *workspace) {
    if (D <= 0 || F <= 0 || n_blocks <= 0 || D % n_blocks || F % n_blocks || 2 * F > INT_MAX ||
        D > INT_MAX) {
        sp_cpu_set_err(be, "cpu glu_ffn_block: bad shape D=%lld F=%lld blocks=%lld", (long long)D,
                       (long long)F, (long long)n_blocks);
        return 1;
    }
    if (!offsets || n_docs < 1 || offsets[0] != 0) {
        sp_cpu_set_err(be, "cpu glu_ffn_block: bad document offsets");
        return 1;
    }
    for (int64_t i = 0; i < n_docs; i++)
        if (offsets[i + 1] <= offsets[i]) {
            sp_cpu_set_err(be, "cpu glu_ffn_block: document %lld is empty or out of order", (long long)i);
            return 1;
        }
    if (!h || !W_gate || !W_down || !b_down || !ln_w || !ln_b || !workspace) {
        sp_cpu_set_err(be, "cpu glu_ffn_block: NULL argument");
        return 1;
    }
    char *ws = sp_cpu_align(workspace);
    int64_t *tile_start = (int64_t *)ws;
    const int64_t n_tiles = sp_cpu_doc_tiles(offsets, n_docs, SP_GLU_ROWS, tile_start);
    glu_job j = {h, W_gate, W_down, b_down, ln_w, ln_b, eps, D, F, n_blocks, tile_start,
                 ws + ffn_starts_bytes(n_tiles), glu_slot_bytes(D, F)};
    sp_pool_run(sp_cpu_pool(be), n_tiles, glu_slots(be, n_tiles, offsets[n_docs], D, F), glu_task, &j);
    return 0;
}
