/* M2-BERT's backend ops (kernels/backend.h: add_row, hyena_filter,
 * hyena_mix, glu_ffn_block) against naive double-precision references: the
 * implicit filter evaluated directly, the long convolution as the O(T^2)
 * sum of its definition (no FFT), the block-diagonal GLU MLP as loops.
 * Criterion: max |got - ref| / max |ref| <= 1e-5.
 *
 *   test_m2bert_ops            the CPU backend; also bit-identical results
 *                              for 1 and 3 threads, exact workspace sizes,
 *                              bad arguments refused with a message
 *   test_m2bert_ops --cuda     the same references through the CUDA backend
 *                              (exit 77, skipped, without a device) */
#include "kernels/backend.h"
#include "kernels/cpu/cpu_internal.h"
#include "kernels/cpu/packed_cpu.h"

#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "check.h"
#include "formats/gguf.h"
#include "formats/quant.h"

#define TOL 1e-5
#define SKIP 77

static double rel_err(const float *got, const double *ref, int64_t n) {
    double e = 0.0, m = 0.0;
    for (int64_t i = 0; i < n; i++) {
        const double d = fabs((double)got[i] - ref[i]);
        if (!(d <= e)) e = d; /* NaN too */
        if (fabs(ref[i]) > m) m = fabs(ref[i]);
    }
    return m > 0 ? e / m : e;
}

static float *frand_array(int64_t n, float scale, float offset) {
    float *p = malloc((size_t)n * sizeof *p);
    if (p) test_fill(p, n, scale, offset);
    return p;
}

/* ----------------------------------------------------------- device copies */

/* Host arrays mirrored in the backend's memory (the same pointers on the CPU). */
static sp_backend *g_be;
static void *dev_copy(const void *host, size_t bytes) {
    if (g_be->host_memory) return (void *)host;
    void *d = g_be->ops->buffer_alloc(g_be, bytes ? bytes : 1);
    if (d && bytes && g_be->ops->upload(g_be, d, host, bytes)) return NULL;
    return d;
}
static void dev_free(void *d) {
    if (!g_be->host_memory && d) g_be->ops->buffer_free(g_be, d);
}
static void *dev_buffer(size_t bytes) { return g_be->ops->buffer_alloc(g_be, bytes ? bytes : 1); }
static int to_host(float *host, const void *dev, size_t bytes) {
    if (g_be->host_memory) {
        if (host != dev) memcpy(host, dev, bytes);
        return 0;
    }
    return g_be->ops->download(g_be, host, dev, bytes);
}

/* ------------------------------------------------------------- the filter */

typedef struct {
    int64_t E, O, D;
    float w_mod;
    float *z, *t, *decay; /* l_max x E, l_max, D */
    float *W_in[2], *b_in[2], *W_mid[2][2], *b_mid[2][2], *freq[2], *W_out[2];
} filter_host;

static void filter_make(filter_host *f, int64_t l_max, int64_t E, int64_t O, int64_t D) {
    memset(f, 0, sizeof *f);
    f->E = E;
    f->O = O;
    f->D = D;
    f->w_mod = 1.5f;
    f->z = frand_array(l_max * E, 1.0f, 0.0f);
    f->t = malloc((size_t)l_max * sizeof(float));
    for (int64_t i = 0; i < l_max; i++) f->t[i] = (float)i / (float)(l_max > 1 ? l_max - 1 : 1);
    f->decay = frand_array(D, 5.0f, -8.0f);
    for (int r = 0; r < 2; r++) {
        f->W_in[r] = frand_array(O * E, 1.0f / sqrtf((float)E), 0.0f);
        f->b_in[r] = frand_array(O, 0.2f, 0.0f);
        for (int i = 0; i < 2; i++) {
            f->W_mid[r][i] = frand_array(O * O, 1.0f / sqrtf((float)O), 0.0f);
            f->b_mid[r][i] = frand_array(O, 0.2f, 0.0f);
        }
        f->freq[r] = frand_array(3 * O, 1.0f, 3.0f);
        f->W_out[r] = frand_array(D * O, 1.0f / sqrtf((float)O), 0.0f);
    }
}

static void filter_free(filter_host *f) {
    free(f->z);
    free(f->t);
    free(f->decay);
    for (int r = 0; r < 2; r++) {
        free(f->W_in[r]);
        free(f->b_in[r]);
        for (int i = 0; i < 2; i++) {
            free(f->W_mid[r][i]);
            free(f->b_mid[r][i]);
        }
        free(f->freq[r]);
        free(f->W_out[r]);
    }
}

/* k_r (T x D) in double, by the definition in backend.h. */
static void filter_kernels(const filter_host *f, int64_t T, double *k[2]) {
    const int64_t E = f->E, O = f->O, D = f->D;
    double *a = malloc((size_t)O * sizeof *a), *b = malloc((size_t)O * sizeof *b);
    for (int r = 0; r < 2; r++)
        for (int64_t t = 0; t < T; t++) {
            for (int64_t j = 0; j < O; j++) {
                double s = f->b_in[r][j];
                for (int64_t e = 0; e < E; e++) s += (double)f->W_in[r][j * E + e] * f->z[t * E + e];
                a[j] = sin((double)f->w_mod * f->freq[r][j] * s);
            }
            for (int i = 0; i < 2; i++) {
                for (int64_t j = 0; j < O; j++) {
                    double s = f->b_mid[r][i][j];
                    for (int64_t q = 0; q < O; q++) s += (double)f->W_mid[r][i][j * O + q] * a[q];
                    b[j] = sin((double)f->w_mod * f->freq[r][(i + 1) * O + j] * s);
                }
                memcpy(a, b, (size_t)O * sizeof *a);
            }
            for (int64_t d = 0; d < D; d++) {
                double s = 0.0;
                for (int64_t q = 0; q < O; q++) s += (double)f->W_out[r][d * O + q] * a[q];
                k[r][t * D + d] = s * exp(-(double)f->t[t] * fabs((double)f->decay[d]));
            }
        }
    free(a);
    free(b);
}

/* conv(x) of backend.h's definition, O(T^2 D). */
static void ref_conv(const double *x, const double *const k[2], int64_t T, int64_t D, double *y) {
    for (int64_t t = 0; t < T; t++)
        for (int64_t d = 0; d < D; d++) {
            double s = 0.0;
            for (int64_t q = 0; q <= t; q++) s += k[0][(t - q) * D + d] * x[q * D + d];
            for (int64_t q = t + 1; q < T; q++) s += k[1][(q - t - 1) * D + d] * x[q * D + d];
            y[t * D + d] = s;
        }
}

typedef struct {
    sp_hyena_filter f;
    void *mem[32];
    int n;
} filter_dev;

static const float *up(filter_dev *fd, const float *host, int64_t n) {
    void *d = dev_copy(host, (size_t)n * sizeof(float));
    if (!g_be->host_memory) fd->mem[fd->n++] = d;
    return d;
}

static void filter_upload(const filter_host *h, int64_t l_max, filter_dev *fd) {
    memset(fd, 0, sizeof *fd);
    const int64_t E = h->E, O = h->O, D = h->D;
    fd->f.E = E;
    fd->f.order = O;
    fd->f.w_mod = h->w_mod;
    fd->f.z = up(fd, h->z, l_max * E);
    fd->f.t = up(fd, h->t, l_max);
    fd->f.decay = up(fd, h->decay, D);
    for (int r = 0; r < 2; r++) {
        fd->f.dir[r].W_in = up(fd, h->W_in[r], O * E);
        fd->f.dir[r].b_in = up(fd, h->b_in[r], O);
        for (int i = 0; i < 2; i++) {
            fd->f.dir[r].W_mid[i] = up(fd, h->W_mid[r][i], O * O);
            fd->f.dir[r].b_mid[i] = up(fd, h->b_mid[r][i], O);
        }
        fd->f.dir[r].freq = up(fd, h->freq[r], 3 * O);
        fd->f.dir[r].W_out = up(fd, h->W_out[r], D * O);
    }
}

static void filter_dev_free(filter_dev *fd) {
    for (int i = 0; i < fd->n; i++) dev_free(fd->mem[i]);
}

/* hyena_filter + hyena_mix for one (T, D) against the O(T^2) reference;
 * *out (T x D, malloc'd) gets the backend's y for the caller's comparisons. */
static double mix_case(int64_t T, int64_t D, int64_t E, int64_t O, float **out) {
    const sp_backend_ops *op = g_be->ops;
    const int64_t l_max = T + 5; /* the filter reads only its first T rows */
    filter_host fh[2];
    filter_make(&fh[0], l_max, E, O, D);
    filter_make(&fh[1], l_max, E, O, D);
    float *a = frand_array(T * 3 * D, 1.0f, 0.0f), *u = frand_array(T * D, 1.0f, 0.0f);
    float *cw = frand_array(3 * D * 3, 0.6f, 0.0f), *cb = frand_array(3 * D, 0.2f, 0.0f);
    float *bias = frand_array(D, 1.0f, 0.0f), *bias_res = frand_array(D, 1.0f, 0.0f);
    /* the reference */
    double *k[2][2], *v = malloc((size_t)(T * D) * sizeof(double)), *x2 = malloc((size_t)(T * D) * sizeof(double));
    double *ud = malloc((size_t)(T * D) * sizeof(double)), *c1 = malloc((size_t)(T * D) * sizeof(double));
    double *c2 = malloc((size_t)(T * D) * sizeof(double)), *ref = malloc((size_t)(T * D) * sizeof(double));
    for (int f = 0; f < 2; f++) {
        k[f][0] = malloc((size_t)(T * D) * sizeof(double));
        k[f][1] = malloc((size_t)(T * D) * sizeof(double));
        filter_kernels(&fh[f], T, k[f]);
    }
    for (int64_t t = 0; t < T; t++)
        for (int64_t j = 0; j < 3 * D; j++) {
            double c = cb[j] + (double)cw[3 * j + 2] * a[t * 3 * D + j];
            if (t >= 1) c += (double)cw[3 * j + 1] * a[(t - 1) * 3 * D + j];
            if (t >= 2) c += (double)cw[3 * j] * a[(t - 2) * 3 * D + j];
            const int64_t d = j % D;
            if (j < D) v[t * D + d] = c;              /* x1 for now */
            else if (j < 2 * D) x2[t * D + d] = c;
            else v[t * D + d] *= c;                   /* v * x1 */
        }
    for (int64_t i = 0; i < T * D; i++) ud[i] = u[i];
    ref_conv(v, (const double *const *)k[0], T, D, c1);
    ref_conv(ud, (const double *const *)k[1], T, D, c2);
    for (int64_t t = 0; t < T; t++)
        for (int64_t d = 0; d < D; d++) {
            const int64_t i = t * D + d;
            ref[i] = (c1[i] + v[i] * bias[d]) * x2[i] + (c2[i] + ud[i] * bias_res[d]);
        }
    /* the backend */
    filter_dev fd[2];
    filter_upload(&fh[0], l_max, &fd[0]);
    filter_upload(&fh[1], l_max, &fd[1]);
    const size_t sb = op->hyena_spectrum_size(g_be, T, D);
    const size_t wf = op->hyena_filter_workspace_size(g_be, T, D, E, O);
    const size_t wm = op->hyena_mix_workspace_size(g_be, T, D);
    void *spec[2] = {dev_buffer(sb), dev_buffer(sb)}, *ws = dev_buffer(wf > wm ? wf : wm);
    float *da = dev_copy(a, (size_t)(T * 3 * D) * 4), *du = dev_copy(u, (size_t)(T * D) * 4);
    float *dcw = dev_copy(cw, (size_t)(9 * D) * 4), *dcb = dev_copy(cb, (size_t)(3 * D) * 4);
    float *db = dev_copy(bias, (size_t)D * 4), *dbr = dev_copy(bias_res, (size_t)D * 4);
    float *dy = dev_buffer((size_t)(T * D) * 4), *y = malloc((size_t)(T * D) * 4);
    double err = INFINITY;
    CHECK(sb > 0 && spec[0] && spec[1] && ws && dy && y);
    int rc = op->hyena_filter(g_be, &fd[0].f, T, D, ws, spec[0]) ||
             op->hyena_filter(g_be, &fd[1].f, T, D, ws, spec[1]) ||
             op->hyena_mix(g_be, da, dcw, dcb, du, spec[0], db, spec[1], dbr, T, D, ws, dy) ||
             to_host(y, dy, (size_t)(T * D) * 4);
    CHECK(rc == 0, "T=%lld D=%lld: %s", (long long)T, (long long)D, g_be->err);
    if (rc == 0) err = rel_err(y, ref, T * D);
    CHECK(err <= TOL, "hyena T=%lld D=%lld E=%lld order=%lld: rel err %.3g", (long long)T, (long long)D,
          (long long)E, (long long)O, err);
    *out = y;
    g_be->ops->buffer_free(g_be, spec[0]);
    g_be->ops->buffer_free(g_be, spec[1]);
    g_be->ops->buffer_free(g_be, ws);
    g_be->ops->buffer_free(g_be, dy);
    dev_free(da), dev_free(du), dev_free(dcw), dev_free(dcb), dev_free(db), dev_free(dbr);
    filter_dev_free(&fd[0]);
    filter_dev_free(&fd[1]);
    for (int f = 0; f < 2; f++) {
        free(k[f][0]);
        free(k[f][1]);
        filter_free(&fh[f]);
    }
    free(a), free(u), free(cw), free(cb), free(bias), free(bias_res);
    free(v), free(x2), free(ud), free(c1), free(c2), free(ref);
    return err;
}

/* ---------------------------------------------------------------- the MLP */

/* The MLP in double precision: ref[T, D] from h[T, D]. */
static void glu_reference(const float *h, const float *Wg, const float *Wd, const float *bd,
                          const float *lw, const float *lb, float eps, int64_t T, int64_t D, int64_t F,
                          int64_t nb, double *ref) {
    const int64_t Db = D / nb, Gb = 2 * F / nb, Fb = F / nb;
    double *g = malloc((size_t)(2 * F) * sizeof(double)), *z = malloc((size_t)D * sizeof(double));
    for (int64_t t = 0; t < T; t++) {
        const float *x = h + t * D;
        for (int64_t b = 0; b < nb; b++)
            for (int64_t o = 0; o < Gb; o++) {
                double s = 0.0;
                for (int64_t i = 0; i < Db; i++) s += (double)Wg[(b * Gb + o) * Db + i] * x[b * Db + i];
                g[b * Gb + o] = s;
            }
        for (int64_t i = 0; i < F; i++) g[i] = 0.5 * g[i] * (1.0 + erf(g[i] / sqrt(2.0))) * g[F + i];
        double mean = 0.0, var = 0.0;
        for (int64_t b = 0; b < nb; b++)
            for (int64_t o = 0; o < Db; o++) {
                double s = 0.0;
                for (int64_t i = 0; i < Fb; i++) s += (double)Wd[(b * Db + o) * Fb + i] * g[b * Fb + i];
                z[b * Db + o] = s + bd[b * Db + o] + x[b * Db + o];
                mean += z[b * Db + o];
            }
        mean /= (double)D;
        for (int64_t d = 0; d < D; d++) var += (z[d] - mean) * (z[d] - mean);
        var /= (double)D;
        for (int64_t d = 0; d < D; d++) ref[t * D + d] = (z[d] - mean) / sqrt(var + eps) * lw[d] + lb[d];
    }
    free(g), free(z);
}

static double glu_case(const int64_t *offsets, int64_t n_docs, int64_t D, int64_t F, int64_t nb,
                       float **out) {
    const int64_t T = offsets[n_docs], Db = D / nb, Fb = F / nb;
    /* the weights first: the same seed gives the same weights for any T */
    float *Wg = frand_array(2 * F * Db, 1.0f / sqrtf((float)Db), 0.0f);
    float *Wd = frand_array(D * Fb, 1.0f / sqrtf((float)Fb), 0.0f), *bd = frand_array(D, 0.3f, 0.0f);
    float *lw = frand_array(D, 0.3f, 1.0f), *lb = frand_array(D, 0.3f, 0.0f);
    float *h = frand_array(T * D, 1.0f, 0.0f);
    const float eps = 1e-12f;
    double *ref = malloc((size_t)(T * D) * sizeof(double));
    glu_reference(h, Wg, Wd, bd, lw, lb, eps, T, D, F, nb, ref);
    const size_t ws_bytes = g_be->ops->glu_ffn_block_workspace_size(g_be, offsets, n_docs, D, F, nb);
    void *ws = dev_buffer(ws_bytes);
    float *dh = dev_copy(h, (size_t)(T * D) * 4), *dWg = dev_copy(Wg, (size_t)(2 * F * Db) * 4);
    float *dWd = dev_copy(Wd, (size_t)(D * Fb) * 4), *dbd = dev_copy(bd, (size_t)D * 4);
    float *dlw = dev_copy(lw, (size_t)D * 4), *dlb = dev_copy(lb, (size_t)D * 4);
    double err = INFINITY;
    CHECK(ws_bytes > 0 && ws);
    int rc = g_be->ops->glu_ffn_block(g_be, dh, dWg, dWd, dbd, dlw, dlb, eps, D, F, nb, offsets,
                                      n_docs, ws) ||
             to_host(h, dh, (size_t)(T * D) * 4);
    CHECK(rc == 0, "glu T=%lld: %s", (long long)T, g_be->err);
    if (rc == 0) err = rel_err(h, ref, T * D);
    CHECK(err <= TOL, "glu_ffn_block T=%lld D=%lld F=%lld nb=%lld: rel err %.3g", (long long)T,
          (long long)D, (long long)F, (long long)nb, err);
    g_be->ops->buffer_free(g_be, ws);
    if (!g_be->host_memory) dev_free(dh), dev_free(dWg), dev_free(dWd), dev_free(dbd), dev_free(dlw), dev_free(dlb);
    free(Wg), free(Wd), free(bd), free(lw), free(lb), free(ref);
    *out = h;
    return err;
}

static sp_backend *cpu(int n_threads);

/* A packed weight of rows x cols for compute c from float32 W: INT8 from
 * its Q8_0 blocks, W replaced by their decoded values (what the kernel
 * multiplies, so the reference sees the same weights). */
static sp_packed *pack(sp_backend *be, float *W, int64_t rows, int64_t cols, sp_compute c) {
    if (c != SP_COMPUTE_INT8) return be->ops->pack_weight(be, SP_WEIGHT_F32, W, rows, cols, c);
    const size_t rb = sp_quant_row_bytes(SP_TENSOR_Q8_0, cols);
    uint8_t *q = malloc(rb * (size_t)rows);
    for (int64_t r = 0; r < rows; r++) {
        sp_quantize_row(SP_TENSOR_Q8_0, W + r * cols, q + r * rb, cols);
        sp_dequantize_row(SP_TENSOR_Q8_0, q + r * rb, W + r * cols, cols);
    }
    sp_packed *P = be->ops->pack_weight(be, SP_WEIGHT_Q8_0, q, rows, cols, c);
    free(q);
    return P;
}

/* glu_ffn_block_packed (CPU) for compute c against the reference, and the
 * same bits on 1 and 3 threads. Tolerances (max error over max |ref|):
 * float32 TOL; bf16 and int8 round the operands (bf16: 8 bits of mantissa;
 * int8: activations to 8 bits per block of 32): measured 1.0e-3 and 3.7e-3
 * here, bounded at 1e-2. */
static void glu_packed_case(sp_compute c, sp_kernel_level level, int64_t T, int64_t D, int64_t F, int64_t nb,
                            float **out) {
    sp_backend *one = cpu(1), *three = cpu(3);
    *out = NULL;
    if (!one || !three) return;
    /* packed at this level: float32 without a kernel of ours there is rows for OpenBLAS */
    sp_cpu_set_kernel_level(one, level);
    sp_cpu_set_kernel_level(three, level);
    test_rng = 11;
    const int64_t Db = D / nb, Fb = F / nb, off[2] = {0, T};
    float *Wg = frand_array(2 * F * Db, 1.0f / sqrtf((float)Db), 0.0f);
    float *Wd = frand_array(D * Fb, 1.0f / sqrtf((float)Fb), 0.0f), *bd = frand_array(D, 0.3f, 0.0f);
    float *lw = frand_array(D, 0.3f, 1.0f), *lb = frand_array(D, 0.3f, 0.0f);
    float *h0 = frand_array(T * D, 1.0f, 0.0f);
    /* rows of different sizes, so that a block read with another's scales shows */
    for (int64_t r = 0; r < 2 * F; r++)
        for (int64_t i = 0; i < Db; i++) Wg[r * Db + i] *= 0.25f + 0.5f * (float)(r % 5);
    for (int64_t r = 0; r < D; r++)
        for (int64_t i = 0; i < Fb; i++) Wd[r * Fb + i] *= 0.25f + 0.5f * (float)(r % 3);
    sp_packed *Pg = pack(one, Wg, 2 * F, Db, c), *Pd = pack(one, Wd, D, Fb, c);
    double *ref = malloc((size_t)(T * D) * sizeof(double));
    glu_reference(h0, Wg, Wd, bd, lw, lb, 1e-12f, T, D, F, nb, ref);
    float *h[2] = {malloc((size_t)(T * D) * 4), malloc((size_t)(T * D) * 4)};
    sp_backend *bes[2] = {one, three};
    CHECK(Pg && Pd, "pack: %s", one->err);
    for (int i = 0; i < 2 && Pg && Pd; i++) {
        sp_backend *be = bes[i];
        memcpy(h[i], h0, (size_t)(T * D) * 4);
        void *ws = malloc(be->ops->glu_ffn_block_packed_workspace_size(be, Pg, Pd, off, 1, nb));
        CHECK(ws && be->ops->glu_ffn_block_packed(be, h[i], Pg, Pd, bd, lw, lb, 1e-12f, nb, off, 1, ws) == 0,
              "glu_ffn_block_packed: %s", be->err);
        free(ws);
    }
    const double err = rel_err(h[0], ref, T * D), tol = c == SP_COMPUTE_F32 ? TOL : 1e-2;
    printf("glu packed compute %d level %d%s T=%lld D=%lld F=%lld nb=%lld: rel err %.3g\n", (int)c, (int)level,
           Pg && Pg->rows_layout ? " (rows)" : "", (long long)T, (long long)D, (long long)F, (long long)nb, err);
    CHECK(err <= tol, "glu packed compute %d level %d: rel err %.3g > %.3g", (int)c, (int)level, err, tol);
    CHECK(!memcmp(h[0], h[1], (size_t)(T * D) * 4), "glu packed compute %d level %d: 1 and 3 threads differ",
          (int)c, (int)level);
    /* blocks that are not whole panels (D 48 in 4 blocks: 12 rows) are refused by name */
    if (c == SP_COMPUTE_F32) {
        sp_packed *g12 = one->ops->pack_weight(one, SP_WEIGHT_F32, Wg, 192, 12, c),
                  *d12 = one->ops->pack_weight(one, SP_WEIGHT_F32, Wd, 48, 24, c);
        CHECK(g12 && d12 &&
                  one->ops->glu_ffn_block_packed(one, h[1], g12, d12, bd, lw, lb, 1e-12f, 4, off, 1, h[0]) != 0 &&
                  strstr(one->err, "panels"), "%s", one->err);
        one->ops->packed_free(one, g12);
        one->ops->packed_free(one, d12);
    }
    one->ops->packed_free(one, Pg);
    one->ops->packed_free(one, Pd);
    free(Wg), free(Wd), free(bd), free(lw), free(lb), free(h0), free(ref), free(h[1]);
    *out = h[0];
    one->ops->destroy(one);
    three->ops->destroy(three);
}

static void add_row_case(int64_t T, int64_t D) {
    float *y = frand_array(T * D, 1.0f, 0.0f), *row = frand_array(D, 1.0f, 0.0f);
    double *ref = malloc((size_t)(T * D) * sizeof(double));
    for (int64_t t = 0; t < T; t++)
        for (int64_t d = 0; d < D; d++) ref[t * D + d] = (double)y[t * D + d] + row[d];
    float *dy = dev_copy(y, (size_t)(T * D) * 4), *dr = dev_copy(row, (size_t)D * 4);
    const int rc = g_be->ops->add_row(g_be, dr, T, D, dy) || to_host(y, dy, (size_t)(T * D) * 4);
    CHECK(rc == 0 && rel_err(y, ref, T * D) <= 1e-7, "add_row T=%lld D=%lld", (long long)T, (long long)D);
    if (!g_be->host_memory) dev_free(dy), dev_free(dr);
    free(y), free(row), free(ref);
}

/* ------------------------------------------------------------ CPU extras */

static sp_backend *cpu(int n_threads) {
    char err[256] = "";
    sp_backend *be = sp_backend_cpu_create(n_threads, err, sizeof err);
    CHECK(be != NULL, "%s", err);
    return be;
}

/* The same case on 1 and 3 threads, and with one tile in flight: the same bits. */
static void cpu_determinism(void) {
    sp_backend *one = cpu(1), *three = cpu(3);
    if (!one || !three) return;
    float *y1, *y3, *y3b;
    g_be = one;
    test_rng = 42;
    mix_case(300, 40, 5, 16, &y1);
    g_be = three;
    test_rng = 42;
    mix_case(300, 40, 5, 16, &y3);
    three->max_parallel = 1;
    test_rng = 42;
    mix_case(300, 40, 5, 16, &y3b);
    three->max_parallel = 0;
    CHECK(!memcmp(y1, y3, 300 * 40 * 4), "hyena: 1 and 3 threads differ");
    CHECK(!memcmp(y1, y3b, 300 * 40 * 4), "hyena: max_parallel 1 differs");
    free(y1), free(y3), free(y3b);
    const int64_t off[2] = {0, 333};
    g_be = one;
    test_rng = 7;
    glu_case(off, 1, 48, 96, 4, &y1);
    g_be = three;
    test_rng = 7;
    glu_case(off, 1, 48, 96, 4, &y3);
    CHECK(!memcmp(y1, y3, 333 * 48 * 4), "glu: 1 and 3 threads differ");
    free(y1), free(y3);
    /* packed documents: each row as when alone */
    const int64_t packed[3] = {0, 130, 333}, first[2] = {0, 130};
    test_rng = 9;
    glu_case(packed, 2, 48, 96, 4, &y1);
    test_rng = 9;
    glu_case(first, 1, 48, 96, 4, &y3);
    CHECK(!memcmp(y1, y3, 130 * 48 * 4), "glu: a packed document differs from itself alone");
    free(y1), free(y3);
    /* the workspace sizes follow max_parallel (fewer slots, less scratch) */
    three->max_parallel = 1;
    const size_t m1 = three->ops->hyena_mix_workspace_size(three, 4096, 64);
    const size_t f1 = three->ops->hyena_filter_workspace_size(three, 4096, 64, 5, 64);
    three->max_parallel = 0;
    CHECK(m1 < three->ops->hyena_mix_workspace_size(three, 4096, 64));
    CHECK(f1 < three->ops->hyena_filter_workspace_size(three, 4096, 64, 5, 64));
    one->ops->destroy(one);
    three->ops->destroy(three);
}

static void cpu_bad_arguments(void) {
    sp_backend *be = cpu(2);
    if (!be) return;
    const sp_backend_ops *op = be->ops;
    float x[64] = {0};
    sp_hyena_filter f = {0};
    f.E = 3;
    f.order = 4;
    CHECK(op->hyena_filter(be, &f, 4, 4, x, x) != 0 && strstr(be->err, "NULL"), "%s", be->err);
    CHECK(op->hyena_filter(be, NULL, 4, 4, x, x) != 0 && be->err[0]);
    CHECK(op->hyena_filter(be, &f, 0, 4, x, x) != 0 && strstr(be->err, "bad shape"), "%s", be->err);
    CHECK(op->hyena_mix(be, x, x, x, x, x, x, x, x, -1, 4, x, x) != 0 && strstr(be->err, "bad shape"));
    CHECK(op->hyena_mix(be, x, NULL, x, x, x, x, x, x, 4, 4, x, x) != 0 && strstr(be->err, "NULL"));
    const int64_t off[2] = {0, 4}, bad[2] = {0, 0};
    CHECK(op->glu_ffn_block(be, x, x, x, x, x, x, 1e-5f, 6, 8, 4, off, 1, x) != 0 &&
          strstr(be->err, "bad shape"), "%s", be->err); /* 4 blocks do not divide 6 */
    CHECK(op->glu_ffn_block(be, x, x, x, x, x, x, 1e-5f, 4, 8, 2, bad, 1, x) != 0 &&
          strstr(be->err, "empty"), "%s", be->err);
    CHECK(op->glu_ffn_block(be, x, x, NULL, x, x, x, 1e-5f, 4, 8, 2, off, 1, x) != 0 &&
          strstr(be->err, "NULL"), "%s", be->err);
    CHECK(op->add_row(be, NULL, 4, 4, x) != 0);
    CHECK(op->hyena_spectrum_size(be, 0, 4) == 0 && op->hyena_mix_workspace_size(be, 4, 0) == 0);
    be->ops->destroy(be);
}

int main(int argc, char **argv) {
    const int cuda = argc > 1 && !strcmp(argv[1], "--cuda");
    char err[256] = "";
    if (cuda) {
        if (sp_backend_cuda_device_count() <= 0) {
            printf("SKIP: no CUDA device\n");
            return SKIP;
        }
        g_be = sp_backend_cuda_create(0, err, sizeof err);
    } else {
        g_be = sp_backend_cpu_create(2, err, sizeof err);
    }
    if (!g_be) {
        fprintf(stderr, "FAIL: backend: %s\n", err);
        return 1;
    }
    float *y;
    /* lengths: 1, 2, odd, 2T with a large prime (67: 134 = 2 x 67), a power
     * of two, past one tile; channels a whole tile, a partial one, fewer */
    static const int64_t shapes[][4] = {{1, 8, 3, 4},   {2, 20, 5, 8},   {7, 16, 3, 16},
                                        {67, 20, 5, 16}, {128, 5, 3, 8}, {257, 33, 5, 32},
                                        {1000, 17, 3, 8}};
    for (size_t i = 0; i < sizeof shapes / sizeof shapes[0]; i++) {
        const double e = mix_case(shapes[i][0], shapes[i][1], shapes[i][2], shapes[i][3], &y);
        printf("hyena T=%lld D=%lld: rel err %.3g\n", (long long)shapes[i][0], (long long)shapes[i][1], e);
        free(y);
    }
    static const int64_t glus[][4] = {{1, 8, 16, 1}, {129, 64, 128, 4}, {300, 48, 96, 2}};
    for (size_t i = 0; i < sizeof glus / sizeof glus[0]; i++) {
        const int64_t off[2] = {0, glus[i][0]};
        const double e = glu_case(off, 1, glus[i][1], glus[i][2], glus[i][3], &y);
        printf("glu T=%lld D=%lld F=%lld nb=%lld: rel err %.3g\n", (long long)glus[i][0],
               (long long)glus[i][1], (long long)glus[i][2], (long long)glus[i][3], e);
        free(y);
    }
    add_row_case(1, 7);
    add_row_case(700, 33);
    g_be->ops->destroy(g_be);
    if (!cuda) {
        cpu_determinism();
        cpu_bad_arguments();
        /* blocks of 64 x 32 and 32 x 64 (int8: whole 32-blocks); 300 rows: three tiles; every
         * kernel level this CPU runs or emulates (float32 at level C: OpenBLAS rows), int8 and
         * bf16 giving the same bits at every level */
        static const sp_kernel_level levels[] = {SP_KERNEL_C, SP_KERNEL_AVX2, SP_KERNEL_AVX512,
                                                 SP_KERNEL_AVX512_EMULATED};
        for (int c = SP_COMPUTE_F32; c <= SP_COMPUTE_BF16; c++) {
            float *first = NULL;
            for (size_t i = 0; i < sizeof levels / sizeof levels[0]; i++) {
                if (levels[i] > sp_cpu_kernel_cap() && levels[i] != SP_KERNEL_AVX512_EMULATED) continue;
                if (c == SP_COMPUTE_F32 && levels[i] == SP_KERNEL_AVX512_EMULATED) continue;
                if (c != SP_COMPUTE_F32 && !sp_packed_level_available((sp_compute)c, levels[i])) continue;
                float *y;
                glu_packed_case((sp_compute)c, levels[i], 300, 128, 128, 4, &y);
                if (c != SP_COMPUTE_F32 && first && y)
                    CHECK(!memcmp(first, y, 300 * 128 * 4), "glu packed compute %d: level %d differs from level C",
                          c, (int)levels[i]);
                if (!first) first = y;
                else free(y);
            }
            free(first);
        }
    }
    return check_report(cuda ? "test_m2bert_ops --cuda" : "test_m2bert_ops");
}
