/* The CPU backend's GEMM ops: linear, and the fused MLP sub-block, each
 * with plain float weights (OpenBLAS) or packed ones (packed_cpu.c).
 *
 * Rows are cut into fixed tiles of SP_CPU_ROW_TILE; each tile is one task of
 * the pool and calls one single-threaded GEMM (sp_cpu_tile_gemm), then
 * applies bias and activation while the tile is still in cache. The MLP runs LayerNorm, the
 * up projection, bias + GELU, the down projection and the residual add on
 * one tile before the next, so its hidden activation never leaves L2 and is
 * never T x F in memory. */
#include <cblas.h>
#include <limits.h>
#include <math.h>
#include <string.h>

#include "kernels/cpu/cpu_internal.h"
#include "kernels/cpu/packed_cpu.h"

/* glibc >= 2.35 ships vector erff variants in libmvec (linked through libm's
 * linker script) but declares them only under -ffast-math. Declaring the
 * SIMD clone here lets the GELU loop below call erff several lanes at a time;
 * the scalar call cost as much as the sgemm it follows. */
#if defined(__GNUC__) && !defined(__clang__) && defined(__x86_64__) && defined(__GLIBC__) && \
    (__GLIBC__ > 2 || (__GLIBC__ == 2 && __GLIBC_MINOR__ >= 35)) && !defined(__FAST_MATH__)
float erff(float) __attribute__((__simd__("notinbranch")));
#define SP_SIMD_ERFF 1
#endif

/* Sum of f(x[d]) in 8 interleaved partial sums added pairwise at the end:
 * the order of the additions is written here, so it is the same for every
 * compiler and optimization level, and compilers vectorize it unasked (it
 * was an omp simd reduction: its order was the compiler's choice, and
 * clang at -O1, which the sanitizer builds use, warned it could not
 * vectorize it). */
#define LANES 8
#define LANE_SUM(out, D, term)                                                                        do {                                                                                                  double p_[LANES] = {0};                                                                           int64_t d = 0;                                                                                    for (; d + LANES <= (D); d += LANES)                                                                  for (int l = 0; l < LANES; l++) p_[l] += (term(d + l));                                       for (int l = 0; d < (D); d++, l++) p_[l] += (term(d));                                            (out) = ((p_[0] + p_[1]) + (p_[2] + p_[3])) + ((p_[4] + p_[5]) + (p_[6] + p_[7]));            } while (0)

void sp_cpu_row_stats(const float *x, int64_t D, float eps, double *mean_out, double *rstd_out) {
    /* Two passes in double: exact enough that the result does not depend on
     * D or on the magnitude of the mean. */
    double s, v;
#define VALUE(i) (double)x[i]
    LANE_SUM(s, D, VALUE);
    const double mean = s / (double)D;
#define SQUARE(i) (((double)x[i] - mean) * ((double)x[i] - mean))
    LANE_SUM(v, D, SQUARE);
#undef VALUE
#undef SQUARE
    *mean_out = mean;
    *rstd_out = 1.0 / sqrt(v / (double)D + (double)eps);
}

void sp_cpu_layer_norm_row(const float *x, const float *w, const float *b, float eps, int64_t D,
                           float *y) {
    double mean, rstd;
    sp_cpu_row_stats(x, D, eps, &mean, &rstd);
    /* Centre in double: a float mean rounded near a large offset would shift
     * every output by up to half an ulp of the offset. */
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

/* Per-thread scratch of a tile: the weight's activation conversion. */
typedef struct {
    const float *x, *b;
    sp_cpu_weight W;
    int64_t T;
    sp_act act;
    int accumulate;
    float *out;
    char *ws;
    size_t slot;
    sp_backend *job_be;
} linear_job;

static void linear_task(void *arg, int64_t task, int worker) {
    const linear_job *j = arg;
    const int64_t r0 = task * SP_CPU_ROW_TILE;
    const int64_t rows = j->T - r0 < SP_CPU_ROW_TILE ? j->T - r0 : SP_CPU_ROW_TILE;
    const int64_t OUT = j->W.rows;
    float *o = j->out + r0 * OUT;
    sp_cpu_tile_gemm(j->job_be, &j->W, rows, j->x + r0 * j->W.cols, j->W.cols, o, OUT, j->accumulate,
                     j->ws ? j->ws + (size_t)worker * j->slot : NULL);
    if (j->b || j->act != SP_ACT_NONE)
        for (int64_t r = 0; r < rows; r++) bias_act_row(o + r * OUT, j->b, OUT, j->act);
}

/* A packed weight as the tile loops see it. */
static sp_cpu_weight packed_weight(const sp_packed *P) {
    return (sp_cpu_weight){NULL, P, P->rows, P->cols};
}

static int64_t row_tiles(int64_t T) { return (T + SP_CPU_ROW_TILE - 1) / SP_CPU_ROW_TILE; }

/* The checks and the tile loop of linear and linear_packed. */
static int run_linear(sp_backend *be, const char *op, const float *x, const sp_cpu_weight *W,
                      const float *b, int64_t T, sp_act act, int accumulate, void *workspace,
                      float *out) {
    const int64_t IN = W->cols, OUT = W->rows;
    if (T < 0 || IN <= 0 || OUT <= 0 || T > INT_MAX || IN > INT_MAX || OUT > INT_MAX) {
        if (T == 0 && IN >= 0 && OUT >= 0) return 0;
        sp_cpu_set_err(be, "cpu %s: bad shape T=%lld IN=%lld OUT=%lld", op, (long long)T,
                       (long long)IN, (long long)OUT);
        return 1;
    }
    if (T == 0) return 0;
    if (!act_valid(act)) {
        sp_cpu_set_err(be, "cpu %s: unknown activation %d", op, (int)act);
        return 1;
    }
    if (accumulate && act != SP_ACT_NONE) {
        sp_cpu_set_err(be, "cpu %s: accumulate needs act NONE", op);
        return 1;
    }
    const size_t slot = sp_cpu_tile_scratch(W);
    if (!x || !(W->f32 || W->packed) || !out || (slot && !workspace)) {
        sp_cpu_set_err(be, "cpu %s: NULL argument", op);
        return 1;
    }
    linear_job j = {x, b, *W, T, act, accumulate, out, slot ? sp_cpu_align(workspace) : NULL,
                    (size_t)sp_cpu_round_up((int64_t)slot, SP_CPU_ALIGN), be};
    const int64_t n_tiles = row_tiles(T);
    sp_pool_run(sp_cpu_pool(be), n_tiles, sp_cpu_slots(be, n_tiles), linear_task, &j);
    return 0;
}

int sp_cpu_linear(sp_backend *be, const float *x, const float *W, const float *b, int64_t T,
                  int64_t IN, int64_t OUT, sp_act act, int accumulate, float *out) {
    const sp_cpu_weight w = {W, NULL, OUT, IN};
    return run_linear(be, "linear", x, &w, b, T, act, accumulate, NULL, out);
}

size_t sp_cpu_linear_packed_workspace_size(sp_backend *be, const sp_packed *W, int64_t T) {
    if (!W || T <= 0) return 0;
    const sp_cpu_weight w = packed_weight(W);
    const size_t slot = sp_cpu_tile_scratch(&w);
    return slot ? (size_t)sp_cpu_slots(be, row_tiles(T)) * (size_t)sp_cpu_round_up((int64_t)slot, SP_CPU_ALIGN) +
                      SP_CPU_ALIGN
                : 0;
}

int sp_cpu_linear_packed(sp_backend *be, const float *x, const sp_packed *W, const float *b,
                         int64_t T, sp_act act, int accumulate, void *workspace, float *out) {
    if (!W) {
        sp_cpu_set_err(be, "cpu linear_packed: NULL weight");
        return 1;
    }
    const sp_cpu_weight w = packed_weight(W);
    return run_linear(be, "linear_packed", x, &w, b, T, act, accumulate, workspace, out);
}

/* --------------------------------------------------------------- ffn_block */

/* Per-thread scratch: the normalized tile (ROW_TILE x D), the hidden tile
 * (ROW_TILE x F) and the larger of the two GEMMs' activation conversions,
 * each on its own aligned slice. */
static size_t ffn_slot_bytes(const sp_cpu_weight *up, const sp_cpu_weight *down) {
    const int64_t D = up->cols, F = up->rows;
    const size_t conv = sp_cpu_tile_scratch(up) > sp_cpu_tile_scratch(down) ? sp_cpu_tile_scratch(up)
                                                                             : sp_cpu_tile_scratch(down);
    return (size_t)sp_cpu_round_up(SP_CPU_ROW_TILE * D * (int64_t)sizeof(float), SP_CPU_ALIGN) +
           (size_t)sp_cpu_round_up(SP_CPU_ROW_TILE * F * (int64_t)sizeof(float), SP_CPU_ALIGN) +
           (size_t)sp_cpu_round_up((int64_t)conv, SP_CPU_ALIGN);
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
static int ffn_slots(sp_backend *be, int64_t n_tiles, int64_t T, size_t slot_bytes, int64_t D) {
    int slots = sp_cpu_slots(be, n_tiles);
    const int64_t budget = T * D * (int64_t)sizeof(float) > (INT64_C(32) << 20)
                               ? T * D * (int64_t)sizeof(float)
                               : (INT64_C(32) << 20);
    const int64_t cap = budget / (int64_t)slot_bytes;
    if (cap < slots) slots = cap < 1 ? 1 : (int)cap;
    return slots;
}

/* The workspace: the tile starts, then one scratch slot per tile in flight. */
static size_t ffn_starts_bytes(int64_t n_tiles) {
    return (size_t)sp_cpu_round_up((n_tiles + 1) * (int64_t)sizeof(int64_t), SP_CPU_ALIGN);
}

static size_t ffn_workspace(sp_backend *be, const sp_cpu_weight *up, const sp_cpu_weight *down,
                            const int64_t *offsets, int64_t n_docs) {
    if (!offsets || n_docs < 1 || up->cols <= 0 || up->rows <= 0 || offsets[n_docs] <= 0) return 0;
    const int64_t n_tiles = sp_cpu_doc_tiles(offsets, n_docs, SP_CPU_ROW_TILE, NULL);
    const size_t slot = ffn_slot_bytes(up, down);
    return ffn_starts_bytes(n_tiles) + (size_t)ffn_slots(be, n_tiles, offsets[n_docs], slot, up->cols) * slot +
           SP_CPU_ALIGN;
}

size_t sp_cpu_ffn_block_workspace_size(sp_backend *be, const int64_t *offsets, int64_t n_docs,
                                       int64_t D, int64_t F) {
    const sp_cpu_weight up = {NULL, NULL, F, D}, down = {NULL, NULL, D, F};
    return ffn_workspace(be, &up, &down, offsets, n_docs);
}

size_t sp_cpu_ffn_block_packed_workspace_size(sp_backend *be, const sp_packed *W_up,
                                              const sp_packed *W_down, const int64_t *offsets,
                                              int64_t n_docs) {
    if (!W_up || !W_down) return 0;
    const sp_cpu_weight up = packed_weight(W_up), down = packed_weight(W_down);
    return ffn_workspace(be, &up, &down, offsets, n_docs);
}

typedef struct {
    sp_backend *be;
    float *h;
    const float *ln_w, *ln_b, *b_up, *b_down;
    sp_cpu_weight up, down;
    float eps;
    sp_act act;
    const int64_t *tile_start;
    char *ws;
    size_t slot;
} ffn_job;

static void ffn_task(void *arg, int64_t task, int worker) {
    const ffn_job *j = arg;
    const int64_t D = j->up.cols, F = j->up.rows;
    const int64_t r0 = j->tile_start[task], rows = j->tile_start[task + 1] - r0;
    float *x = (float *)(j->ws + (size_t)worker * j->slot);
    float *hid = x + sp_cpu_round_up(SP_CPU_ROW_TILE * D, SP_CPU_ALIGN / sizeof(float));
    void *conv = hid + sp_cpu_round_up(SP_CPU_ROW_TILE * F, SP_CPU_ALIGN / sizeof(float));
    float *h = j->h + r0 * D;
    for (int64_t r = 0; r < rows; r++)
        sp_cpu_layer_norm_row(h + r * D, j->ln_w, j->ln_b, j->eps, D, x + r * D);
    sp_cpu_tile_gemm(j->be, &j->up, rows, x, D, hid, F, 0, conv);
    for (int64_t r = 0; r < rows; r++) bias_act_row(hid + r * F, j->b_up, F, j->act);
    sp_cpu_tile_gemm(j->be, &j->down, rows, hid, F, h, D, 1, conv);
    if (j->b_down)
        for (int64_t r = 0; r < rows; r++)
            for (int64_t d = 0; d < D; d++) h[r * D + d] += j->b_down[d];
}

/* Offsets of n_docs documents, each non-empty, from row 0: else 1 with a message. */
static int doc_offsets_invalid(sp_backend *be, const char *op, const int64_t *offsets, int64_t n_docs) {
    if (!offsets || n_docs < 1 || offsets[0] != 0) {
        sp_cpu_set_err(be, "cpu %s: bad document offsets", op);
        return 1;
    }
    for (int64_t i = 0; i < n_docs; i++)
        if (offsets[i + 1] <= offsets[i]) {
            sp_cpu_set_err(be, "cpu %s: document %lld is empty or out of order", op, (long long)i);
            return 1;
        }
    return 0;
}

/* The checks and the tile loop of ffn_block and ffn_block_packed. */
static int run_ffn(sp_backend *be, const char *op, float *h, const float *ln_w, const float *ln_b,
                   float eps, const sp_cpu_weight *up, const float *b_up, sp_act act,
                   const sp_cpu_weight *down, const float *b_down, const int64_t *offsets,
                   int64_t n_docs, void *workspace) {
    const int64_t D = up->cols, F = up->rows;
    if (D <= 0 || F <= 0 || D > INT_MAX || F > INT_MAX || down->rows != D || down->cols != F) {
        sp_cpu_set_err(be, "cpu %s: bad shape D=%lld F=%lld (W_down %lld x %lld)", op, (long long)D,
                       (long long)F, (long long)down->rows, (long long)down->cols);
        return 1;
    }
    if (doc_offsets_invalid(be, op, offsets, n_docs)) return 1;
    if (!act_valid(act)) {
        sp_cpu_set_err(be, "cpu %s: unknown activation %d", op, (int)act);
        return 1;
    }
    if (!h || !ln_w || !ln_b || !(up->f32 || up->packed) || !(down->f32 || down->packed) || !workspace) {
        sp_cpu_set_err(be, "cpu %s: NULL argument", op);
        return 1;
    }
    char *ws = sp_cpu_align(workspace);
    int64_t *tile_start = (int64_t *)ws;
    const int64_t n_tiles = sp_cpu_doc_tiles(offsets, n_docs, SP_CPU_ROW_TILE, tile_start);
    const size_t slot = ffn_slot_bytes(up, down);
    ffn_job j = {be,  h,   ln_w, ln_b,       b_up, b_down, *up, *down, eps, act, tile_start,
                 ws + ffn_starts_bytes(n_tiles), slot};
    sp_pool_run(sp_cpu_pool(be), n_tiles, ffn_slots(be, n_tiles, offsets[n_docs], slot, D), ffn_task, &j);
    return 0;
}

int sp_cpu_ffn_block(sp_backend *be, float *h, const float *ln_w, const float *ln_b, float eps,
                     const float *W_up, const float *b_up, sp_act act, const float *W_down,
                     const float *b_down, int64_t D, int64_t F, const int64_t *offsets,
                     int64_t n_docs, void *workspace) {
    const sp_cpu_weight up = {W_up, NULL, F, D}, down = {W_down, NULL, D, F};
    return run_ffn(be, "ffn_block", h, ln_w, ln_b, eps, &up, b_up, act, &down, b_down, offsets,
                   n_docs, workspace);
}

int sp_cpu_ffn_block_packed(sp_backend *be, float *h, const float *ln_w, const float *ln_b,
                            float eps, const sp_packed *W_up, const float *b_up, sp_act act,
                            const sp_packed *W_down, const float *b_down, const int64_t *offsets,
                            int64_t n_docs, void *workspace) {
    if (!W_up || !W_down) {
        sp_cpu_set_err(be, "cpu ffn_block_packed: NULL weight");
        return 1;
    }
    const sp_cpu_weight up = packed_weight(W_up), down = packed_weight(W_down);
    return run_ffn(be, "ffn_block_packed", h, ln_w, ln_b, eps, &up, b_up, act, &down, b_down,
                   offsets, n_docs, workspace);
}

/* ----------------------------------------------------------- glu_ffn_block */

/* Rows per task with float32 weights through OpenBLAS: the block GEMMs'
 * inner dimension is D/nb (192 in the published models), short enough that
 * OpenBLAS packing each tile's weights again cost ~15% at 128 rows
 * (measured with perf); twice as many rows halve that. Packed weights are
 * never repacked: their tiles are SP_CPU_ROW_TILE, what their activation
 * scratch is sized for. */
#ifndef SP_GLU_ROWS
#define SP_GLU_ROWS 256
#endif

static int64_t glu_tile_rows(const sp_cpu_weight *gate) { return gate->packed ? SP_CPU_ROW_TILE : SP_GLU_ROWS; }

/* Block b of W's nb blocks of rows, a weight of its own (view: storage for
 * a packed one's). */
static sp_cpu_weight weight_block(const sp_cpu_weight *W, int64_t b, int64_t nb, sp_packed *view) {
    const int64_t n = W->rows / nb;
    if (!W->packed) return (sp_cpu_weight){W->f32 + b * n * W->cols, NULL, n, W->cols};
    *view = sp_packed_rows(W->packed, b * n, n);
    return (sp_cpu_weight){NULL, view, n, W->cols};
}

/* Per-thread scratch: the gate tile (rows x 2F), the output tile (rows x D)
 * and the larger of the two GEMMs' activation conversions. */
static size_t glu_slot_bytes(const sp_cpu_weight *gate, const sp_cpu_weight *down) {
    const int64_t rows = glu_tile_rows(gate), D = down->rows, F = gate->rows / 2;
    const size_t cg = sp_cpu_tile_scratch(gate), cd = sp_cpu_tile_scratch(down);
    return (size_t)sp_cpu_round_up(rows * 2 * F * (int64_t)sizeof(float), SP_CPU_ALIGN) +
           (size_t)sp_cpu_round_up(rows * D * (int64_t)sizeof(float), SP_CPU_ALIGN) +
           (size_t)sp_cpu_round_up((int64_t)(cg > cd ? cg : cd), SP_CPU_ALIGN);
}

static size_t glu_workspace(sp_backend *be, const sp_cpu_weight *gate, const sp_cpu_weight *down,
                            const int64_t *offsets, int64_t n_docs) {
    if (!offsets || n_docs < 1 || offsets[n_docs] <= 0) return 0;
    const int64_t n_tiles = sp_cpu_doc_tiles(offsets, n_docs, glu_tile_rows(gate), NULL);
    const size_t slot = glu_slot_bytes(gate, down);
    return ffn_starts_bytes(n_tiles) + (size_t)ffn_slots(be, n_tiles, offsets[n_docs], slot, down->rows) * slot +
           SP_CPU_ALIGN;
}

size_t sp_cpu_glu_ffn_block_workspace_size(sp_backend *be, const int64_t *offsets, int64_t n_docs,
                                           int64_t D, int64_t F, int64_t n_blocks) {
    if (D <= 0 || F <= 0 || n_blocks <= 0) return 0;
    const sp_cpu_weight gate = {NULL, NULL, 2 * F, D / n_blocks}, down = {NULL, NULL, D, F / n_blocks};
    return glu_workspace(be, &gate, &down, offsets, n_docs);
}

size_t sp_cpu_glu_ffn_block_packed_workspace_size(sp_backend *be, const sp_packed *W_gate,
                                                  const sp_packed *W_down, const int64_t *offsets,
                                                  int64_t n_docs, int64_t n_blocks) {
    if (!W_gate || !W_down || n_blocks <= 0) return 0;
    const sp_cpu_weight gate = packed_weight(W_gate), down = packed_weight(W_down);
    return glu_workspace(be, &gate, &down, offsets, n_docs);
}

typedef struct {
    sp_backend *be;
    float *h;
    sp_cpu_weight gate, down;
    const float *b_down, *ln_w, *ln_b;
    float eps;
    int64_t nb;
    const int64_t *tile_start;
    char *ws;
    size_t slot;
} glu_job;

static void glu_task(void *arg, int64_t task, int worker) {
    const glu_job *j = arg;
    const int64_t D = j->down.rows, F = j->gate.rows / 2, nb = j->nb, Db = D / nb, Gb = 2 * F / nb,
                  Fb = F / nb, tile = glu_tile_rows(&j->gate);
    const int64_t r0 = j->tile_start[task], rows = j->tile_start[task + 1] - r0;
    float *g = (float *)(j->ws + (size_t)worker * j->slot);
    float *z = g + sp_cpu_round_up(tile * 2 * F, SP_CPU_ALIGN / sizeof(float));
    void *conv = z + sp_cpu_round_up(tile * D, SP_CPU_ALIGN / sizeof(float));
    float *h = j->h + r0 * D;
    sp_packed view;
    /* g[:, block b] = h[:, block b of D] W_gate[block b]^T */
    for (int64_t b = 0; b < nb; b++) {
        const sp_cpu_weight Wb = weight_block(&j->gate, b, nb, &view);
        sp_cpu_tile_gemm(j->be, &Wb, rows, h + b * Db, D, g + b * Gb, 2 * F, 0, conv);
    }
    /* m = gelu(g[:, :F]) * g[:, F:], into g[:, :F] */
    for (int64_t r = 0; r < rows; r++) {
        float *gr = g + r * 2 * F;
        bias_act_row(gr, NULL, F, SP_ACT_GELU);
        for (int64_t i = 0; i < F; i++) gr[i] *= gr[F + i];
    }
    for (int64_t b = 0; b < nb; b++) {
        const sp_cpu_weight Wb = weight_block(&j->down, b, nb, &view);
        sp_cpu_tile_gemm(j->be, &Wb, rows, g + b * Fb, 2 * F, z + b * Db, D, 0, conv);
    }
    /* h = LN(z + b_down + h) */
    for (int64_t r = 0; r < rows; r++) {
        float *zr = z + r * D, *hr = h + r * D;
        for (int64_t d = 0; d < D; d++) zr[d] = (zr[d] + j->b_down[d]) + hr[d];
        sp_cpu_layer_norm_row(zr, j->ln_w, j->ln_b, j->eps, D, hr);
    }
}

/* The checks and the tile loop of glu_ffn_block and glu_ffn_block_packed. */
static int run_glu(sp_backend *be, const char *op, float *h, const sp_cpu_weight *gate,
                   const sp_cpu_weight *down, const float *b_down, const float *ln_w, const float *ln_b,
                   float eps, int64_t nb, const int64_t *offsets, int64_t n_docs, void *workspace) {
    const int64_t D = down->rows, F = gate->rows / 2;
    if (D <= 0 || F <= 0 || nb <= 0 || gate->rows != 2 * F || D % nb || F % nb || 2 * F > INT_MAX ||
        D > INT_MAX || gate->cols != D / nb || down->cols != F / nb) {
        sp_cpu_set_err(be, "cpu %s: bad shape D=%lld F=%lld blocks=%lld (W_gate %lld x %lld, W_down %lld x %lld)",
                       op, (long long)D, (long long)F, (long long)nb, (long long)gate->rows,
                       (long long)gate->cols, (long long)down->rows, (long long)down->cols);
        return 1;
    }
    if (gate->packed && ((gate->rows / nb) % SP_PACKED_ROWS || (D / nb) % SP_PACKED_ROWS)) {
        sp_cpu_set_err(be, "cpu %s: blocks of %lld and %lld rows are not whole panels of %d", op,
                       (long long)(gate->rows / nb), (long long)(D / nb), SP_PACKED_ROWS);
        return 1;
    }
    if (doc_offsets_invalid(be, op, offsets, n_docs)) return 1;
    if (!h || !b_down || !ln_w || !ln_b || !workspace) {
        sp_cpu_set_err(be, "cpu %s: NULL argument", op);
        return 1;
    }
    char *ws = sp_cpu_align(workspace);
    int64_t *tile_start = (int64_t *)ws;
    const int64_t n_tiles = sp_cpu_doc_tiles(offsets, n_docs, glu_tile_rows(gate), tile_start);
    const size_t slot = glu_slot_bytes(gate, down);
    glu_job j = {be, h, *gate, *down, b_down, ln_w, ln_b, eps, nb, tile_start,
                 ws + ffn_starts_bytes(n_tiles), slot};
    sp_pool_run(sp_cpu_pool(be), n_tiles, ffn_slots(be, n_tiles, offsets[n_docs], slot, D), glu_task, &j);
    return 0;
}

int sp_cpu_glu_ffn_block(sp_backend *be, float *h, const float *W_gate, const float *W_down,
                         const float *b_down, const float *ln_w, const float *ln_b, float eps,
                         int64_t D, int64_t F, int64_t n_blocks, const int64_t *offsets,
                         int64_t n_docs, void *workspace) {
    if (!W_gate || !W_down || n_blocks <= 0) {
        sp_cpu_set_err(be, "cpu glu_ffn_block: NULL weight or no blocks");
        return 1;
    }
    const sp_cpu_weight gate = {W_gate, NULL, 2 * F, D / n_blocks}, down = {W_down, NULL, D, F / n_blocks};
    return run_glu(be, "glu_ffn_block", h, &gate, &down, b_down, ln_w, ln_b, eps, n_blocks, offsets,
                   n_docs, workspace);
}

int sp_cpu_glu_ffn_block_packed(sp_backend *be, float *h, const sp_packed *W_gate,
                                const sp_packed *W_down, const float *b_down, const float *ln_w,
                                const float *ln_b, float eps, int64_t n_blocks, const int64_t *offsets,
                                int64_t n_docs, void *workspace) {
    if (!W_gate || !W_down) {
        sp_cpu_set_err(be, "cpu glu_ffn_block_packed: NULL weight");
        return 1;
    }
    const sp_cpu_weight gate = packed_weight(W_gate), down = packed_weight(W_down);
    return run_glu(be, "glu_ffn_block_packed", h, &gate, &down, b_down, ln_w, ln_b, eps, n_blocks,
                   offsets, n_docs, workspace);
}
