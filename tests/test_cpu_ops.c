/* Tests of the CPU backend's ops against naive double-precision references.
 *
 * Accuracy criterion everywhere: max |got - ref| / max |ref| <= 1e-5 (float32
 * kernels against float64 references; FFT round-off at T = 4097 is ~1e-6). */
#define _POSIX_C_SOURCE 200809L
#include "kernels/backend.h"
#include "kernels/cpu/cpu_internal.h"

#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "check.h"

#define TOL 1e-5
#define SP_TWO_PI 6.283185307179586476925


static double rel_err(const float *got, const double *ref, int64_t n) {
    double e = 0.0, m = 0.0;
    for (int64_t i = 0; i < n; i++) {
        double d = fabs((double)got[i] - ref[i]);
        if (!(d <= e)) e = d; /* catches NaN */
        if (fabs(ref[i]) > m) m = fabs(ref[i]);
    }
    return m > 0 ? e / m : e;
}

static sp_backend *make_backend(int n_threads, const char *tile) {
    char err[256] = "";
    if (tile)
        setenv("SPECTRAL_CPU_MIX_TILE", tile, 1);
    else
        unsetenv("SPECTRAL_CPU_MIX_TILE");
    sp_backend *be = sp_backend_cpu_create(n_threads, err, sizeof err);
    if (!be) {
        fprintf(stderr, "FAIL create: %s\n", err);
        check_failures++;
    }
    return be;
}

/* ------------------------------------------------------------- mixing */

/* Naive reference: the DFT of each channel by definition, keep bins f < k
 * multiplied by W (the rest are zero, so the inverse DFT only sums f < k),
 * inverse DFT with 1/T, real part; h_ref = h0 + that + bias. */
static void ref_mix(const float *u, const float *filt, const float *bias, int64_t K, int64_t T,
                    int64_t D, const float *h0, double *out) {
    int64_t k = K < T / 2 ? K : T / 2;
    double *cs = malloc(sizeof(double) * (size_t)T), *sn = malloc(sizeof(double) * (size_t)T);
    double *zr = malloc(sizeof(double) * (size_t)(k + 1)), *zi = malloc(sizeof(double) * (size_t)(k + 1));
    for (int64_t m = 0; m < T; m++) {
        cs[m] = cos(SP_TWO_PI * (double)m / (double)T);
        sn[m] = sin(SP_TWO_PI * (double)m / (double)T);
    }
    for (int64_t d = 0; d < D; d++) {
        for (int64_t f = 0; f < k; f++) {
            double ur = 0, ui = 0; /* U_f = sum_t u_t e^{-2 pi i f t / T} */
            for (int64_t t = 0; t < T; t++) {
                int64_t m = (f * t) % T;
                ur += u[t * D + d] * cs[m];
                ui -= u[t * D + d] * sn[m];
            }
            double wr = filt[(d * K + f) * 2], wi = filt[(d * K + f) * 2 + 1];
            zr[f] = ur * wr - ui * wi;
            zi[f] = ur * wi + ui * wr;
        }
        for (int64_t t = 0; t < T; t++) {
            double y = 0; /* Re(sum_f Z_f e^{+2 pi i f t / T}) / T */
            for (int64_t f = 0; f < k; f++) {
                int64_t m = (f * t) % T;
                y += zr[f] * cs[m] - zi[f] * sn[m];
            }
            out[t * D + d] = (double)h0[t * D + d] + y / (double)T + (bias ? bias[d] : 0.0);
        }
    }
    free(cs);
    free(sn);
    free(zr);
    free(zi);
}

/* Runs spectral_mix with a workspace of exactly the advertised size, placed
 * off the 256-byte boundary and followed by a canary, so an overrun fails
 * even without ASan. */
static void run_mix(sp_backend *be, const float *u, const float *filt, const float *bias,
                    int64_t K, int64_t T, int64_t D, const float *h0, const double *ref,
                    const char *what) {
    size_t ws = be->ops->mix_workspace_size(be, T, D);
    const size_t off = 32, canary = 64;
    unsigned char *base = NULL;
    if (posix_memalign((void **)&base, 256, off + ws + canary) != 0) {
        CHECK(0, "posix_memalign");
        return;
    }
    memset(base, 0xA5, off + ws + canary);
    float *h = malloc(sizeof(float) * (size_t)(T * D));
    memcpy(h, h0, sizeof(float) * (size_t)(T * D));
    int rc = be->ops->spectral_mix(be, u, filt, bias, K, T, D, ws ? base + off : NULL, h);
    CHECK(rc == 0, "%s: spectral_mix rc=%d: %s", what, rc, be->err);
    int ok_canary = 1;
    for (size_t i = 0; i < off; i++) ok_canary &= base[i] == 0xA5;
    for (size_t i = 0; i < canary; i++) ok_canary &= base[off + ws + i] == 0xA5;
    CHECK(ok_canary, "%s: workspace overrun (ws=%zu)", what, ws);
    double e = rel_err(h, ref, T * D);
    CHECK(e <= TOL, "%s: rel err %.3g", what, e);
    free(h);
    free(base);
}

static void test_mix(sp_backend **bes, const char **names, int nbe) {
    static const int64_t Ts[] = {1, 2, 3, 7, 8, 100, 1000, 4097};
    static const struct {
        int64_t D, K;
    } cfg[] = {{1, 1}, {5, 3}, {16, 64}, {37, 10}, {17, 5000}};
    for (size_t ti = 0; ti < sizeof Ts / sizeof Ts[0]; ti++) {
        for (size_t ci = 0; ci < sizeof cfg / sizeof cfg[0]; ci++) {
            int64_t T = Ts[ti], D = cfg[ci].D, K = cfg[ci].K;
            if (T == 4097 && K == 5000) D = 9; /* keeps the O(T^2) reference short */
            float *u = malloc(sizeof(float) * (size_t)(T * D));
            float *h0 = malloc(sizeof(float) * (size_t)(T * D));
            float *filt = malloc(sizeof(float) * (size_t)(D * K * 2));
            float *bias = malloc(sizeof(float) * (size_t)D);
            double *ref = malloc(sizeof(double) * (size_t)(T * D));
            test_fill(u, T * D, 1.0f, 0.3f); /* a non-zero mean exercises the DC bin */
            test_fill(filt, D * K * 2, 1.0f, 0.0f);
            test_fill(bias, D, 0.5f, 0.0f);
            /* Alternate: h0 = 0 with bias, h0 random without bias. */
            int acc = (int)((ti + ci) % 2);
            if (acc)
                test_fill(h0, T * D, 1.0f, 0.0f);
            else
                memset(h0, 0, sizeof(float) * (size_t)(T * D));
            const float *b = acc ? NULL : bias;
            ref_mix(u, filt, b, K, T, D, h0, ref);
            for (int i = 0; i < nbe; i++) {
                char what[160];
                snprintf(what, sizeof what, "mix T=%lld D=%lld K=%lld %s %s", (long long)T,
                         (long long)D, (long long)K, b ? "bias" : "acc", names[i]);
                run_mix(bes[i], u, filt, b, K, T, D, h0, ref, what);
            }
            free(u);
            free(h0);
            free(filt);
            free(bias);
            free(ref);
        }
    }
}

/* ------------------------------------------------- fused sub-blocks */

/* LayerNorm in double, the reference for the fused ops' pre-norm. */
static void ref_layer_norm(const float *x, const float *w, const float *b, double eps, int64_t T,
                           int64_t D, float *out) {
    for (int64_t t = 0; t < T; t++) {
        double m = 0, v = 0;
        for (int64_t d = 0; d < D; d++) m += x[t * D + d];
        m /= (double)D;
        for (int64_t d = 0; d < D; d++) v += (x[t * D + d] - m) * (x[t * D + d] - m);
        const double r = 1.0 / sqrt(v / (double)D + eps);
        for (int64_t d = 0; d < D; d++) out[t * D + d] = (float)((x[t * D + d] - m) * r * w[d] + b[d]);
    }
}

/* mix_block on packed documents of lengths that take every path (FFT for
 * long lengths FFTW handles well, the DFT GEMMs for short or awkward ones,
 * the long DFT for awkward lengths past 16384: 20011 is prime, 20014 =
 * 2 x 10007) against LN then the naive DFT reference, one document at a time. */
static void test_mix_block(sp_backend *be, const char *name) {
    static const int64_t lens[] = {1, 3, 7, 100, 1000, 1025, 1536, 4097, 20011, 2, 20014};
    const int64_t n_docs = sizeof lens / sizeof lens[0], D = 37, K = 40;
    int64_t offsets[sizeof lens / sizeof lens[0] + 1] = {0};
    for (int64_t i = 0; i < n_docs; i++) offsets[i + 1] = offsets[i] + lens[i];
    const int64_t T = offsets[n_docs];
    float *h = malloc(sizeof(float) * (size_t)(T * D)), *h0 = malloc(sizeof(float) * (size_t)(T * D));
    float *u = malloc(sizeof(float) * (size_t)(T * D)), *filt = malloc(sizeof(float) * (size_t)(D * K * 2));
    float *lw = malloc(sizeof(float) * (size_t)D), *lb = malloc(sizeof(float) * (size_t)D);
    float *bias = malloc(sizeof(float) * (size_t)D);
    double *ref = malloc(sizeof(double) * (size_t)(T * D));
    test_fill(h0, T * D, 1.0f, 0.2f);
    test_fill(filt, D * K * 2, 1.0f, 0.0f);
    test_fill(lw, D, 0.5f, 1.0f);
    test_fill(lb, D, 0.3f, 0.0f);
    test_fill(bias, D, 0.5f, 0.0f);
    ref_layer_norm(h0, lw, lb, 1e-5, T, D, u);
    for (int64_t i = 0; i < n_docs; i++)
        ref_mix(u + offsets[i] * D, filt, bias, K, lens[i], D, h0 + offsets[i] * D, ref + offsets[i] * D);
    const size_t ws = be->ops->mix_block_workspace_size(be, offsets, n_docs, D, K);
    unsigned char *base = NULL;
    const size_t canary = 64;
    CHECK(posix_memalign((void **)&base, 256, ws + canary) == 0, "posix_memalign");
    memset(base, 0xA5, ws + canary);
    memcpy(h, h0, sizeof(float) * (size_t)(T * D));
    int rc = be->ops->mix_block(be, h, lw, lb, 1e-5f, filt, bias, K, D, offsets, n_docs, base);
    CHECK(rc == 0, "mix_block %s: rc %d: %s", name, rc, be->err);
    int ok_canary = 1;
    for (size_t i = 0; i < canary; i++) ok_canary &= base[ws + i] == 0xA5;
    CHECK(ok_canary, "mix_block %s: workspace overrun (ws=%zu)", name, ws);
    for (int64_t i = 0; i < n_docs; i++) {
        double e = rel_err(h + offsets[i] * D, ref + offsets[i] * D, lens[i] * D);
        CHECK(e <= TOL, "mix_block %s: document of T=%lld: rel err %.3g", name, (long long)lens[i], e);
    }
    /* bad offsets are refused */
    int64_t bad[3] = {0, 5, 5};
    CHECK(be->ops->mix_block(be, h, lw, lb, 1e-5f, filt, bias, K, D, bad, 2, base) != 0,
          "empty document refused");
    free(base);
    free(h);
    free(h0);
    free(u);
    free(filt);
    free(lw);
    free(lb);
    free(bias);
    free(ref);
}

/* ffn_block on packed documents against a double-precision reference. */
static void test_ffn_block(sp_backend *be, const char *name) {
    static const int64_t lens[] = {1, 127, 128, 129, 300};
    const int64_t n_docs = 5, D = 24, F = 40;
    int64_t offsets[6] = {0};
    for (int64_t i = 0; i < n_docs; i++) offsets[i + 1] = offsets[i] + lens[i];
    const int64_t T = offsets[n_docs];
    float *h = malloc(sizeof(float) * (size_t)(T * D)), *x = malloc(sizeof(float) * (size_t)(T * D));
    float *wu = malloc(sizeof(float) * (size_t)(F * D)), *bu = malloc(sizeof(float) * (size_t)F);
    float *wd = malloc(sizeof(float) * (size_t)(D * F)), *bd = malloc(sizeof(float) * (size_t)D);
    float *lw = malloc(sizeof(float) * (size_t)D), *lb = malloc(sizeof(float) * (size_t)D);
    double *ref = malloc(sizeof(double) * (size_t)(T * D));
    test_fill(h, T * D, 1.0f, 0.1f);
    test_fill(wu, F * D, 0.3f, 0.0f);
    test_fill(bu, F, 0.2f, 0.0f);
    test_fill(wd, D * F, 0.3f, 0.0f);
    test_fill(bd, D, 0.2f, 0.0f);
    test_fill(lw, D, 0.5f, 1.0f);
    test_fill(lb, D, 0.3f, 0.0f);
    ref_layer_norm(h, lw, lb, 1e-5, T, D, x);
    for (int64_t t = 0; t < T; t++)
        for (int64_t d = 0; d < D; d++) {
            double y = h[t * D + d] + bd[d];
            for (int64_t f = 0; f < F; f++) {
                double a = bu[f];
                for (int64_t i = 0; i < D; i++) a += (double)x[t * D + i] * wu[f * D + i];
                y += 0.5 * a * (1.0 + erf(a / sqrt(2.0))) * wd[d * F + f];
            }
            ref[t * D + d] = y;
        }
    const size_t ws = be->ops->ffn_block_workspace_size(be, offsets, n_docs, D, F);
    void *w = malloc(ws ? ws : 1);
    int rc = be->ops->ffn_block(be, h, lw, lb, 1e-5f, wu, bu, SP_ACT_GELU, wd, bd, D, F, offsets,
                                n_docs, w);
    CHECK(rc == 0, "ffn_block %s: rc %d: %s", name, rc, be->err);
    double e = rel_err(h, ref, T * D);
    CHECK(e <= TOL, "ffn_block %s: rel err %.3g", name, e);
    free(w);
    free(h);
    free(x);
    free(wu);
    free(bu);
    free(wd);
    free(bd);
    free(lw);
    free(lb);
    free(ref);
}

/* The FFTW plan cache stays bounded over many distinct lengths (a server
 * sees thousands), and evicted lengths plan again correctly. */
static void test_plan_cache_bound(sp_backend *be) {
    const int64_t D = 1, K = 1;
    float u[600], h[600], filt[2] = {1.0f, 0.0f};
    unsigned char ws[65536] __attribute__((aligned(256)));
    for (int64_t i = 0; i < 600; i++) u[i] = (float)(i % 7) - 3.0f;
    int peak = 0;
    for (int64_t T = 2; T < 2 + 300; T++) {
        memset(h, 0, sizeof h);
        CHECK(be->ops->mix_workspace_size(be, T, D) <= sizeof ws, "workspace fits");
        CHECK(be->ops->spectral_mix(be, u, filt, NULL, K, T, D, ws, h) == 0, "mix T=%lld", (long long)T);
        /* k = 1 keeps the mean: every output is mean(u) */
        double mean = 0;
        for (int64_t t = 0; t < T; t++) mean += u[t];
        mean /= (double)T;
        CHECK(fabs(h[T - 1] - mean) < 1e-5, "T=%lld: got %g, mean %g", (long long)T, h[T - 1], mean);
        const int n = sp_cpu_fft_plans_cached(NULL);
        if (n > peak) peak = n;
    }
    CHECK(peak <= 64, "the plan cache grew to %d plans over 300 lengths (bound 64)", peak);
    CHECK(peak >= 60, "the plan cache kept only %d plans (it should fill before evicting)", peak);
    /* long lengths: their summed rows stay under 2^18 (~4 MiB of FFTW tables) */
    static const int64_t longs[] = {200000, 150000, 131072, 250000};
    float *lu = calloc(250000, sizeof *lu), *lh = calloc(250000, sizeof *lh);
    void *lws = malloc(be->ops->mix_workspace_size(be, 250000, D) + 256);
    CHECK(lu && lh && lws, "alloc");
    for (int i = 0; i < 4 && lu && lh && lws; i++) {
        CHECK(be->ops->spectral_mix(be, lu, filt, NULL, K, longs[i], D, lws, lh) == 0, "mix T=%lld",
              (long long)longs[i]);
        int64_t rows = 0;
        sp_cpu_fft_plans_cached(&rows);
        CHECK(rows <= (1 << 18), "plans of %lld rows kept after T=%lld (bound 262144)", (long long)rows,
              (long long)longs[i]);
    }
    free(lu);
    free(lh);
    free(lws);
}

/* ------------------------------------------------------------- linear */

static void test_linear(sp_backend *be, const char *name) {
    static const struct {
        int64_t T, IN, OUT;
    } cfg[] = {{1, 1, 1}, {3, 5, 7}, {17, 64, 33}, {64, 48, 130}};
    for (size_t ci = 0; ci < sizeof cfg / sizeof cfg[0]; ci++) {
        int64_t T = cfg[ci].T, IN = cfg[ci].IN, OUT = cfg[ci].OUT;
        float *x = malloc(sizeof(float) * (size_t)(T * IN));
        float *W = malloc(sizeof(float) * (size_t)(OUT * IN));
        float *b = malloc(sizeof(float) * (size_t)OUT);
        float *o0 = malloc(sizeof(float) * (size_t)(T * OUT));
        float *o = malloc(sizeof(float) * (size_t)(T * OUT));
        double *ref = malloc(sizeof(double) * (size_t)(T * OUT));
        test_fill(x, T * IN, 2.0f, 0.0f);
        test_fill(W, OUT * IN, 0.5f, 0.0f);
        test_fill(b, OUT, 1.0f, 0.0f);
        test_fill(o0, T * OUT, 1.0f, 0.0f);
        /* mode 0: GELU + bias; 1: no act, no bias; 2: accumulate + bias;
         * 3: GELU, no bias; 4: accumulate, no bias; 5: tanh GELU + bias. */
        for (int mode = 0; mode < 6; mode++) {
            const float *bb = (mode == 0 || mode == 2 || mode == 5) ? b : NULL;
            int gelu = mode == 0 || mode == 3, acc = mode == 2 || mode == 4, gtanh = mode == 5;
            for (int64_t t = 0; t < T; t++)
                for (int64_t j = 0; j < OUT; j++) {
                    double s = 0;
                    for (int64_t i = 0; i < IN; i++) s += (double)x[t * IN + i] * W[j * IN + i];
                    if (bb) s += bb[j];
                    if (gelu) s = 0.5 * s * (1.0 + erf(s / sqrt(2.0)));
                    if (gtanh)
                        s = 0.5 * s * (1.0 + tanh(sqrt(2.0 / 3.14159265358979323846) *
                                                  (s + 0.044715 * s * s * s)));
                    if (acc) s += o0[t * OUT + j];
                    ref[t * OUT + j] = s;
                }
            memcpy(o, o0, sizeof(float) * (size_t)(T * OUT));
            sp_act act = gelu ? SP_ACT_GELU : gtanh ? SP_ACT_GELU_TANH : SP_ACT_NONE;
            int rc = be->ops->linear(be, x, W, bb, T, IN, OUT, act, acc, o);
            CHECK(rc == 0, "linear rc=%d: %s", rc, be->err);
            double e = rel_err(o, ref, T * OUT);
            CHECK(e <= TOL, "linear %s T=%lld IN=%lld OUT=%lld mode=%d rel err %.3g", name,
                  (long long)T, (long long)IN, (long long)OUT, mode, e);
        }
        free(x);
        free(W);
        free(b);
        free(o0);
        free(o);
        free(ref);
    }
    /* accumulate with an activation is refused, with a message */
    float x = 1, W = 1, o = 0;
    be->err[0] = 0;
    int rc = be->ops->linear(be, &x, &W, NULL, 1, 1, 1, SP_ACT_GELU, 1, &o);
    CHECK(rc != 0 && be->err[0], "linear accumulate+GELU must fail");
}

/* --------------------------------------------------------- layer_norm */

static void test_layer_norm(sp_backend *be, const char *name) {
    static const struct {
        int64_t T, D;
        float offset;
    } cfg[] = {{1, 1, 0.0f}, {3, 7, 0.0f}, {33, 256, 0.5f}, {5, 1000, 1000.0f}};
    for (size_t ci = 0; ci < sizeof cfg / sizeof cfg[0]; ci++) {
        int64_t T = cfg[ci].T, D = cfg[ci].D;
        float *x = malloc(sizeof(float) * (size_t)(T * D));
        float *o = malloc(sizeof(float) * (size_t)(T * D));
        float *w = malloc(sizeof(float) * (size_t)D), *b = malloc(sizeof(float) * (size_t)D);
        double *ref = malloc(sizeof(double) * (size_t)(T * D));
        test_fill(x, T * D, 1.0f, cfg[ci].offset);
        test_fill(w, D, 1.0f, 1.0f);
        test_fill(b, D, 1.0f, 0.0f);
        const float eps = 1e-5f;
        for (int64_t t = 0; t < T; t++) {
            double m = 0, v = 0;
            for (int64_t d = 0; d < D; d++) m += x[t * D + d];
            m /= (double)D;
            for (int64_t d = 0; d < D; d++) v += (x[t * D + d] - m) * (x[t * D + d] - m);
            v /= (double)D;
            for (int64_t d = 0; d < D; d++)
                ref[t * D + d] = (x[t * D + d] - m) / sqrt(v + eps) * w[d] + b[d];
        }
        int rc = be->ops->layer_norm(be, x, w, b, eps, T, D, o);
        CHECK(rc == 0, "layer_norm rc=%d: %s", rc, be->err);
        double e = rel_err(o, ref, T * D);
        CHECK(e <= TOL, "layer_norm %s T=%lld D=%lld rel err %.3g", name, (long long)T,
              (long long)D, e);
        rc = be->ops->layer_norm(be, x, w, b, eps, T, D, x); /* in place */
        CHECK(rc == 0, "layer_norm in place rc=%d: %s", rc, be->err);
        e = rel_err(x, ref, T * D);
        CHECK(e <= TOL, "layer_norm in place %s T=%lld D=%lld rel err %.3g", name, (long long)T,
              (long long)D, e);
        free(x);
        free(o);
        free(w);
        free(b);
        free(ref);
    }
}

/* ------------------------------------------------ get_rows, pool, memory */

static void test_misc(sp_backend *be) {
    const int64_t V = 11, D = 6, T = 5;
    float table[11 * 6], out[5 * 6];
    test_fill(table, V * D, 1.0f, 0.0f);
    int32_t ids[5] = {3, 0, 10, 3, 7};
    int rc = be->ops->get_rows(be, table, D, ids, T, out);
    CHECK(rc == 0, "get_rows rc=%d: %s", rc, be->err);
    int same = 1;
    for (int64_t t = 0; t < T; t++)
        for (int64_t d = 0; d < D; d++) same &= out[t * D + d] == table[ids[t] * D + d];
    CHECK(same, "get_rows copies the rows");
    int32_t bad[2] = {1, -1};
    be->err[0] = 0;
    rc = be->ops->get_rows(be, table, D, bad, 2, out);
    CHECK(rc != 0 && be->err[0], "get_rows must refuse a negative id");

    /* pool: mean / first / last, and a long T where float sums would drift */
    const int64_t PT = 100000, PD = 3;
    float *x = malloc(sizeof(float) * (size_t)(PT * PD));
    test_fill(x, PT * PD, 1.0f, 100.0f);
    double mean[3] = {0, 0, 0}, first[3], last[3];
    for (int64_t t = 0; t < PT; t++)
        for (int64_t d = 0; d < PD; d++) mean[d] += x[t * PD + d];
    for (int64_t d = 0; d < PD; d++) {
        mean[d] /= (double)PT;
        first[d] = x[d];
        last[d] = x[(PT - 1) * PD + d];
    }
    float o[3];
    rc = be->ops->pool(be, x, PT, PD, SP_POOL_MEAN, o);
    CHECK(rc == 0 && rel_err(o, mean, PD) <= 1e-6, "pool mean");
    rc = be->ops->pool(be, x, PT, PD, SP_POOL_FIRST, o);
    CHECK(rc == 0 && rel_err(o, first, PD) == 0, "pool first");
    rc = be->ops->pool(be, x, PT, PD, SP_POOL_LAST, o);
    CHECK(rc == 0 && rel_err(o, last, PD) == 0, "pool last");
    be->err[0] = 0;
    rc = be->ops->pool(be, x, PT, PD, (sp_pool_op)42, o);
    CHECK(rc != 0 && be->err[0], "pool must refuse an unknown op");
    free(x);

    /* memory: alignment, upload / download round trip */
    float *buf = be->ops->buffer_alloc(be, 1000);
    CHECK(buf && ((uintptr_t)buf % 256) == 0, "buffer_alloc aligned to 256");
    if (buf) {
        float src[250], dst[250];
        test_fill(src, 250, 1.0f, 0.0f);
        CHECK(be->ops->upload(be, buf, src, sizeof src) == 0, "upload");
        CHECK(be->ops->synchronize(be) == 0, "synchronize");
        CHECK(be->ops->download(be, dst, buf, sizeof dst) == 0, "download");
        CHECK(memcmp(src, dst, sizeof src) == 0, "upload/download round trip");
        be->ops->buffer_free(be, buf);
    }
    CHECK(be->host_memory == 1, "host_memory");
    CHECK(strcmp(be->ops->name, "cpu") == 0, "name");

    /* bad mixing shapes are refused, never crash */
    be->err[0] = 0;
    rc = be->ops->spectral_mix(be, table, table, NULL, -1, 4, 2, NULL, out);
    CHECK(rc != 0 && be->err[0], "spectral_mix must refuse K < 0");
    rc = be->ops->spectral_mix(be, table, table, NULL, 2, 4, 2, NULL, out);
    CHECK(rc != 0, "spectral_mix must refuse a NULL workspace when it needs one");
}

int main(void) {
    char err[256];
    CHECK(sp_backend_cpu_create(-1, err, sizeof err) == NULL, "negative n_threads refused");

    sp_backend *be0 = make_backend(0, NULL);
    if (be0) {
        CHECK(be0->n_threads >= 1, "n_threads 0 means all cores");
        be0->ops->destroy(be0);
    }

    /* Thread counts and tile widths: 1, 2, 3 threads; default tile, 8 and
     * 5 (a tile that does not divide D, and a partial last tile). */
    const char *names[] = {"1thr", "2thr", "3thr", "3thr/tile8", "2thr/tile5"};
    const int thr[] = {1, 2, 3, 3, 2};
    const char *tiles[] = {NULL, NULL, NULL, "8", "5"};
    enum { NBE = 5 };
    sp_backend *bes[NBE];
    for (int i = 0; i < NBE; i++) {
        bes[i] = make_backend(thr[i], tiles[i]);
        if (!bes[i]) return 1;
    }
    unsetenv("SPECTRAL_CPU_MIX_TILE");

    test_mix(bes, names, NBE);
    for (int i = 0; i < NBE; i++) {
        test_mix_block(bes[i], names[i]);
        if (i < 3) test_ffn_block(bes[i], names[i]);
    }
    for (int i = 0; i < 3; i++) {
        test_linear(bes[i], names[i]);
        test_layer_norm(bes[i], names[i]);
    }
    test_misc(bes[0]);
    test_plan_cache_bound(bes[0]);

    for (int i = 0; i < NBE; i++) bes[i]->ops->destroy(bes[i]);
    return check_report("test_cpu_ops");
}
