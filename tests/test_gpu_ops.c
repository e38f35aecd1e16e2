/* The CUDA backend's ops against the CPU backend.
 *
 * Exits 77 (ctest SKIP) when no CUDA device is visible. Otherwise every op is
 * run on both backends with the same inputs and compared with
 *   max |gpu - cpu| / max |cpu| <= 1e-4
 * (exact equality for get_rows and first/last pooling). The mixing is run
 * with each path forced through SPECTRAL_CUDA_MIX (auto, fused, dftgemm,
 * cufft; a forced path that cannot take a shape falls back to cufft, which is
 * then what gets checked), over T in {1, 2, 3, 7, 8, ..., 65536} and one
 * 1,048,576-token sequence. Every mixing run also checks that u is left
 * unchanged. FNet's 2-D Fourier op is compared the same way (input unchanged
 * too), and the linear op with every activation. The fused sub-blocks
 * mix_block (several documents packed in one h, under auto, dftgemm and
 * cufft) and ffn_block (several documents, one to three row chunks) are
 * compared with the CPU backend's, and their argument checks exercised.
 * Issue 12's cases: forced paths under SPECTRAL_CUDA_STRICT=1 (no silent
 * fallback), two live backends alternating fused lengths, odd widths, cuFFT
 * chunking, fifty distinct lengths, argument checks of add / get_rows /
 * fourier2d_real, an allocation failure followed by an op, TF32, elementwise
 * add above 2^28 elements and sampled channels of T x D > 2^31 mixes.
 * SPECTRAL_GPU_TEST_QUICK=1 runs a reduced matrix (for compute-sanitizer).
 * When nvidia-smi lists a GPU that the backend cannot use, it fails rather
 * than skips.
 *
 * Built with -DSPECTRAL_GPU_STUB_TEST (CUDA-less builds) it instead checks
 * that the stub constructor fails cleanly. */
#define _POSIX_C_SOURCE 200809L /* setenv */
#include "kernels/backend.h"

#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include "check.h"

#define TOL 1e-4

/* SPECTRAL_GPU_TEST_QUICK=1: a reduced matrix (for compute-sanitizer, which
 * runs kernels 10-100x slower): short lengths, no 2^20-token cases. */
static int g_quick;

#ifdef SPECTRAL_GPU_STUB_TEST
int main(void) {
    char err[512] = "";
    CHECK(sp_backend_cuda_device_count() == 0, "stub reports devices");
    sp_backend *be = sp_backend_cuda_create(0, err, sizeof err);
    CHECK(be == NULL, "stub created a backend");
    CHECK(strstr(err, "no CUDA backend") != NULL, "stub message: '%s'", err);
    return check_report("test_gpu_stub");
}
#else

static void *xmalloc(size_t n) {
    void *p = malloc(n ? n : 1);
    if (!p) {
        fprintf(stderr, "out of host memory (%zu bytes)\n", n);
        exit(2);
    }
    return p;
}

/* max |got - ref| / max |ref| (absolute when ref is all zero); NaN -> inf */
static double rel_err(const float *got, const float *ref, int64_t n) {
    double e = 0.0, m = 0.0;
    for (int64_t i = 0; i < n; i++) {
        double d = fabs((double)got[i] - (double)ref[i]);
        if (!(d <= e)) e = isnan(d) ? INFINITY : d;
        if (fabs((double)ref[i]) > m) m = fabs((double)ref[i]);
    }
    return m > 0 ? e / m : e;
}

static sp_backend *g_cpu;

static sp_backend *make_gpu(const char *mix) {
    char err[512] = "";
    if (mix)
        setenv("SPECTRAL_CUDA_MIX", mix, 1);
    else
        unsetenv("SPECTRAL_CUDA_MIX");
    sp_backend *be = sp_backend_cuda_create(0, err, sizeof err);
    if (!be) {
        fprintf(stderr, "FAIL create cuda (mix=%s): %s\n", mix ? mix : "-", err);
        check_failures++;
    }
    return be;
}

/* A buffer on backend be holding a copy of host[n floats] (or n zeros). */
static void *to_be(sp_backend *be, const void *host, size_t bytes) {
    void *p = be->ops->buffer_alloc(be, bytes ? bytes : 4);
    if (!p) {
        fprintf(stderr, "FAIL %s alloc %zu: %s\n", be->ops->name, bytes, be->err);
        check_failures++;
        return NULL;
    }
    if (host && bytes && be->ops->upload(be, p, host, bytes)) {
        fprintf(stderr, "FAIL %s upload: %s\n", be->ops->name, be->err);
        check_failures++;
    }
    return p;
}

static int from_be(sp_backend *be, void *host, const void *p, size_t bytes) {
    if (be->ops->download(be, host, p, bytes)) {
        fprintf(stderr, "FAIL %s download: %s\n", be->ops->name, be->err);
        check_failures++;
        return 1;
    }
    return 0;
}

/* ------------------------------------------------------------------ mixing */

/* h_out = h0 mixed with u on backend be; checks u is unchanged. 0 on success. */
static int run_mix(sp_backend *be, const float *u, const float *filt, const float *bias, int64_t K,
                   int64_t T, int64_t D, const float *h0, float *h_out) {
    const size_t nu = (size_t)(T * D) * sizeof(float);
    const size_t nf = (size_t)(D * K * 2) * sizeof(float);
    int rc = 1;
    float *du = to_be(be, u, nu), *dh = to_be(be, h0, nu);
    float *df = K > 0 ? to_be(be, filt, nf) : NULL;
    float *db = bias ? to_be(be, bias, (size_t)D * sizeof(float)) : NULL;
    size_t ws = be->ops->mix_workspace_size(be, T, D);
    void *dw = to_be(be, NULL, ws ? ws : 256);
    if (!du || !dh || (K > 0 && !df) || (bias && !db) || !dw) goto done;
    if (be->ops->spectral_mix(be, du, df, db, K, T, D, dw, dh)) {
        fprintf(stderr, "FAIL %s spectral_mix T=%lld D=%lld K=%lld: %s\n", be->ops->name,
                (long long)T, (long long)D, (long long)K, be->err);
        check_failures++;
        goto done;
    }
    if (be->ops->synchronize(be)) {
        fprintf(stderr, "FAIL %s synchronize: %s\n", be->ops->name, be->err);
        check_failures++;
        goto done;
    }
    if (from_be(be, h_out, dh, nu)) goto done;
    if (!be->host_memory) {
        float *u2 = xmalloc(nu);
        if (!from_be(be, u2, du, nu))
            CHECK(memcmp(u2, u, nu) == 0, "%s spectral_mix modified u (T=%lld D=%lld)",
                  be->ops->name, (long long)T, (long long)D);
        free(u2);
    }
    rc = 0;
done:
    be->ops->buffer_free(be, du);
    be->ops->buffer_free(be, dh);
    be->ops->buffer_free(be, df);
    be->ops->buffer_free(be, db);
    be->ops->buffer_free(be, dw);
    return rc;
}

/* with_state: h0 and bias random (else h0 = 0, bias NULL, so the error is
 * measured on the mixing output alone). */
static void check_mix(sp_backend *gpu, const char *mix, int64_t T, int64_t D, int64_t K,
                      int with_state) {
    const int64_t n = T * D;
    float *u = xmalloc((size_t)n * sizeof(float));
    float *filt = xmalloc((size_t)(D * K * 2 + 1) * sizeof(float));
    float *bias = xmalloc((size_t)D * sizeof(float));
    float *h0 = xmalloc((size_t)n * sizeof(float));
    float *hc = xmalloc((size_t)n * sizeof(float));
    float *hg = xmalloc((size_t)n * sizeof(float));
    test_fill(u, n, 1.0f, 0.25f); /* a DC offset exercises bin 0 */
    test_fill(filt, D * K * 2, 1.0f, 0.0f);
    test_fill(bias, D, 1.0f, 0.0f);
    if (with_state)
        test_fill(h0, n, 0.1f, 0.0f);
    else
        memset(h0, 0, (size_t)n * sizeof(float));
    const float *b = with_state ? bias : NULL;
    if (!run_mix(g_cpu, u, filt, b, K, T, D, h0, hc) && !run_mix(gpu, u, filt, b, K, T, D, h0, hg)) {
        double e = rel_err(hg, hc, n);
        CHECK(e <= TOL, "spectral_mix mix=%s T=%lld D=%lld K=%lld state=%d: rel err %.3g", mix,
              (long long)T, (long long)D, (long long)K, with_state, e);
    }
    free(u);
    free(filt);
    free(bias);
    free(h0);
    free(hc);
    free(hg);
}

static void test_mix(void) {
    static const char *modes[] = {"auto", "fused", "dftgemm", "cufft"};
    static const int64_t Ts_all[] = {1,    2,    3,    7,    8,    64,    100,
                                     1000, 1024, 4096, 4097, 8192, 16384, 65536};
    static const int64_t Ts_quick[] = {1, 3, 8, 100, 1024, 4097};
    const int64_t *Ts = g_quick ? Ts_quick : Ts_all;
    const size_t nT = g_quick ? sizeof Ts_quick / sizeof *Ts_quick : sizeof Ts_all / sizeof *Ts_all;
    for (size_t m = 0; m < sizeof modes / sizeof *modes; m++) {
        sp_backend *gpu = make_gpu(modes[m]);
        if (!gpu) continue;
        int fails_before = check_failures;
        for (size_t ti = 0; ti < nT; ti++) {
            const int64_t T = Ts[ti];
            const int64_t Ds_small[] = {1, 3, 64, 768}, Ds_big[] = {3, 64};
            const int64_t *Ds = T <= 8192 ? Ds_small : Ds_big;
            const int nD = T <= 8192 ? 4 : 2;
            for (int di = 0; di < nD; di++) {
                const int64_t D = Ds[di];
                /* K = 0, small, medium, and above T/2 (k clamps to T/2) */
                int64_t Ks[] = {0, 1, 3, 32, 100, T / 2 + 1};
                for (size_t ki = 0; ki < sizeof Ks / sizeof *Ks; ki++) {
                    const int64_t K = Ks[ki];
                    if (D * K > (int64_t)8 << 20) continue; /* filter size */
                    if (ki > 0 && Ks[ki] == Ks[ki - 1]) continue;
                    check_mix(gpu, modes[m], T, D, K, 0);
                    if (K == 3 || K == 0) check_mix(gpu, modes[m], T, D, K, 1);
                }
            }
        }
        printf("spectral_mix mix=%s: %s\n", modes[m], check_failures == fails_before ? "ok" : "FAILED");
        gpu->ops->destroy(gpu);
    }
}

/* One long document: 1,048,576 tokens. */
static void test_mix_long(void) {
    static const char *modes[] = {"auto", "dftgemm", "cufft"};
    for (size_t m = 0; m < sizeof modes / sizeof *modes; m++) {
        sp_backend *gpu = make_gpu(modes[m]);
        if (!gpu) continue;
        check_mix(gpu, modes[m], (int64_t)1 << 20, 4, 16, 0);
        check_mix(gpu, modes[m], (int64_t)1 << 20, 4, 1000, 1);
        gpu->ops->destroy(gpu);
    }
    printf("spectral_mix T=1048576: done\n");
}

/* --------------------------------------------------------------- other ops */

static void test_get_rows(sp_backend *gpu) {
    const int64_t V = 50;
    const int64_t Ds[] = {1, 7, 768}, Ts[] = {1, 100, 1000};
    for (int di = 0; di < 3; di++)
        for (int ti = 0; ti < 3; ti++) {
            const int64_t D = Ds[di], T = Ts[ti];
            float *table = xmalloc((size_t)(V * D) * sizeof(float));
            int32_t *ids = xmalloc((size_t)T * sizeof(int32_t));
            float *oc = xmalloc((size_t)(T * D) * sizeof(float));
            float *og = xmalloc((size_t)(T * D) * sizeof(float));
            test_fill(table, V * D, 1.0f, 0.0f);
            for (int64_t t = 0; t < T; t++) ids[t] = (int32_t)((test_frand() + 1.0f) * 0.5f * (float)V) % (int32_t)V;
            sp_backend *bes[2] = {g_cpu, gpu};
            float *outs[2] = {oc, og};
            for (int i = 0; i < 2; i++) {
                sp_backend *be = bes[i];
                float *dt = to_be(be, table, (size_t)(V * D) * sizeof(float));
                int32_t *di_ = to_be(be, ids, (size_t)T * sizeof(int32_t));
                float *dout = to_be(be, NULL, (size_t)(T * D) * sizeof(float));
                if (dt && di_ && dout) {
                    if (be->ops->get_rows(be, dt, D, di_, T, dout)) {
                        fprintf(stderr, "FAIL %s get_rows: %s\n", be->ops->name, be->err);
                        check_failures++;
                    } else {
                        from_be(be, outs[i], dout, (size_t)(T * D) * sizeof(float));
                    }
                }
                be->ops->buffer_free(be, dt);
                be->ops->buffer_free(be, di_);
                be->ops->buffer_free(be, dout);
            }
            CHECK(memcmp(oc, og, (size_t)(T * D) * sizeof(float)) == 0, "get_rows T=%lld D=%lld",
                  (long long)T, (long long)D);
            free(table);
            free(ids);
            free(oc);
            free(og);
        }
    printf("get_rows: done\n");
}

static void test_layer_norm(sp_backend *gpu) {
    const int64_t Ts[] = {1, 5, 1000}, Ds[] = {1, 7, 768, 1024, 4096};
    for (int ti = 0; ti < 3; ti++)
        for (int di = 0; di < 5; di++)
            for (int inplace = 0; inplace < 2; inplace++) {
                const int64_t T = Ts[ti], D = Ds[di], n = T * D;
                float *x = xmalloc((size_t)n * sizeof(float));
                float *w = xmalloc((size_t)D * sizeof(float)), *b = xmalloc((size_t)D * sizeof(float));
                float *oc = xmalloc((size_t)n * sizeof(float)), *og = xmalloc((size_t)n * sizeof(float));
                test_fill(x, n, 2.0f, 3.0f); /* offset: a one-pass variance would lose digits */
                test_fill(w, D, 1.0f, 1.0f);
                test_fill(b, D, 1.0f, 0.0f);
                sp_backend *bes[2] = {g_cpu, gpu};
                float *outs[2] = {oc, og};
                for (int i = 0; i < 2; i++) {
                    sp_backend *be = bes[i];
                    float *dx = to_be(be, x, (size_t)n * sizeof(float));
                    float *dw = to_be(be, w, (size_t)D * sizeof(float));
                    float *db = to_be(be, b, (size_t)D * sizeof(float));
                    float *dout = inplace ? dx : to_be(be, NULL, (size_t)n * sizeof(float));
                    if (dx && dw && db && dout) {
                        if (be->ops->layer_norm(be, dx, dw, db, 1e-5f, T, D, dout)) {
                            fprintf(stderr, "FAIL %s layer_norm: %s\n", be->ops->name, be->err);
                            check_failures++;
                        } else {
                            from_be(be, outs[i], dout, (size_t)n * sizeof(float));
                        }
                    }
                    be->ops->buffer_free(be, dx);
                    be->ops->buffer_free(be, dw);
                    be->ops->buffer_free(be, db);
                    if (!inplace) be->ops->buffer_free(be, dout);
                }
                double e = rel_err(og, oc, n);
                CHECK(e <= TOL, "layer_norm T=%lld D=%lld inplace=%d: rel err %.3g", (long long)T,
                      (long long)D, inplace, e);
                free(x);
                free(w);
                free(b);
                free(oc);
                free(og);
            }
    printf("layer_norm: done\n");
}

static void test_linear(sp_backend *gpu) {
    struct { int64_t T, IN, OUT; } shapes[] = {{1, 1, 1}, {1, 64, 96}, {17, 768, 3072}, {512, 768, 768}, {300, 3072, 768}};
    for (size_t s = 0; s < sizeof shapes / sizeof *shapes; s++)
        for (int variant = 0; variant < 6; variant++) {
            /* 0: none + bias, 1: gelu + bias, 2: none no bias, 3: accumulate + bias,
             * 4: gelu_tanh + bias, 5: tanh + bias */
            const int64_t T = shapes[s].T, IN = shapes[s].IN, OUT = shapes[s].OUT;
            const sp_act act = variant == 1   ? SP_ACT_GELU
                               : variant == 4 ? SP_ACT_GELU_TANH
                               : variant == 5 ? SP_ACT_TANH
                                              : SP_ACT_NONE;
            const int acc = variant == 3, has_b = variant != 2;
            float *x = xmalloc((size_t)(T * IN) * sizeof(float));
            float *W = xmalloc((size_t)(IN * OUT) * sizeof(float));
            float *b = xmalloc((size_t)OUT * sizeof(float));
            float *o0 = xmalloc((size_t)(T * OUT) * sizeof(float));
            float *oc = xmalloc((size_t)(T * OUT) * sizeof(float));
            float *og = xmalloc((size_t)(T * OUT) * sizeof(float));
            test_fill(x, T * IN, 1.0f, 0.0f);
            test_fill(W, IN * OUT, 1.0f / sqrtf((float)IN), 0.0f);
            test_fill(b, OUT, 1.0f, 0.0f);
            test_fill(o0, T * OUT, 1.0f, 0.0f);
            sp_backend *bes[2] = {g_cpu, gpu};
            float *outs[2] = {oc, og};
            for (int i = 0; i < 2; i++) {
                sp_backend *be = bes[i];
                float *dx = to_be(be, x, (size_t)(T * IN) * sizeof(float));
                float *dW = to_be(be, W, (size_t)(IN * OUT) * sizeof(float));
                float *db = has_b ? to_be(be, b, (size_t)OUT * sizeof(float)) : NULL;
                float *dout = to_be(be, o0, (size_t)(T * OUT) * sizeof(float));
                if (dx && dW && dout && (!has_b || db)) {
                    if (be->ops->linear(be, dx, dW, db, T, IN, OUT, act, acc, dout)) {
                        fprintf(stderr, "FAIL %s linear: %s\n", be->ops->name, be->err);
                        check_failures++;
                    } else {
                        from_be(be, outs[i], dout, (size_t)(T * OUT) * sizeof(float));
                    }
                }
                be->ops->buffer_free(be, dx);
                be->ops->buffer_free(be, dW);
                be->ops->buffer_free(be, db);
                be->ops->buffer_free(be, dout);
            }
            double e = rel_err(og, oc, T * OUT);
            CHECK(e <= TOL, "linear T=%lld IN=%lld OUT=%lld variant=%d: rel err %.3g", (long long)T,
                  (long long)IN, (long long)OUT, variant, e);
            free(x);
            free(W);
            free(b);
            free(o0);
            free(oc);
            free(og);
        }
    printf("linear: done\n");
}

static void test_pool(sp_backend *gpu) {
    struct { int64_t T, D; } shapes[] = {{1, 1}, {3, 5}, {1000, 768}, {100000, 8}, {70001, 33}};
    for (size_t s = 0; s < sizeof shapes / sizeof *shapes; s++)
        for (int op = SP_POOL_MEAN; op <= SP_POOL_LAST; op++) {
            const int64_t T = shapes[s].T, D = shapes[s].D;
            float *x = xmalloc((size_t)(T * D) * sizeof(float));
            float *oc = xmalloc((size_t)D * sizeof(float)), *og = xmalloc((size_t)D * sizeof(float));
            test_fill(x, T * D, 1.0f, 0.5f);
            sp_backend *bes[2] = {g_cpu, gpu};
            float *outs[2] = {oc, og};
            for (int i = 0; i < 2; i++) {
                sp_backend *be = bes[i];
                float *dx = to_be(be, x, (size_t)(T * D) * sizeof(float));
                if (dx && be->ops->pool(be, dx, T, D, (sp_pool_op)op, outs[i])) {
                    fprintf(stderr, "FAIL %s pool: %s\n", be->ops->name, be->err);
                    check_failures++;
                }
                be->ops->buffer_free(be, dx);
            }
            double e = rel_err(og, oc, D);
            CHECK(op == SP_POOL_MEAN ? e <= TOL : e == 0.0, "pool op=%d T=%lld D=%lld: rel err %.3g",
                  op, (long long)T, (long long)D, e);
            free(x);
            free(oc);
            free(og);
        }
    printf("pool: done\n");
}

/* FNet's Re(FFT2(x)): cuFFT 2-D R2C + Hermitian expansion vs FFTW's. */
static void test_fourier2d(sp_backend *gpu) {
    struct { int64_t T, D; } shapes[] = {{1, 1}, {1, 8}, {2, 3}, {7, 5}, {64, 64}, {128, 768},
                                         {1000, 768}, {4097, 33}, {512, 4096}, {5, 1},
                                         {4097, 1}};
    for (size_t s = 0; s < sizeof shapes / sizeof *shapes; s++) {
        const int64_t T = shapes[s].T, D = shapes[s].D;
        const size_t bytes = (size_t)(T * D) * sizeof(float);
        float *x = xmalloc(bytes), *oc = xmalloc(bytes), *og = xmalloc(bytes), *xb = xmalloc(bytes);
        test_fill(x, T * D, 1.0f, 0.0f);
        sp_backend *bes[2] = {g_cpu, gpu};
        float *outs[2] = {oc, og};
        for (int i = 0; i < 2; i++) {
            sp_backend *be = bes[i];
            size_t wsb = be->ops->fourier2d_workspace_size(be, T, D);
            float *dx = to_be(be, x, bytes);
            float *dout = be->ops->buffer_alloc(be, bytes);
            void *ws = be->ops->buffer_alloc(be, wsb ? wsb : 1);
            if (!dx || !dout || !ws || be->ops->fourier2d_real(be, dx, T, D, ws, dout) ||
                from_be(be, outs[i], dout, bytes) || from_be(be, xb, dx, bytes)) {
                fprintf(stderr, "FAIL %s fourier2d T=%lld D=%lld: %s\n", be->ops->name,
                        (long long)T, (long long)D, be->err);
                check_failures++;
            } else {
                CHECK(memcmp(xb, x, bytes) == 0, "%s fourier2d T=%lld D=%lld changed its input",
                      be->ops->name, (long long)T, (long long)D);
            }
            be->ops->buffer_free(be, dx);
            be->ops->buffer_free(be, dout);
            be->ops->buffer_free(be, ws);
        }
        double e = rel_err(og, oc, T * D);
        CHECK(e <= TOL, "fourier2d T=%lld D=%lld: rel err %.3g", (long long)T, (long long)D, e);
        free(x);
        free(oc);
        free(og);
        free(xb);
    }
    printf("fourier2d: done\n");
}

/* ------------------------------------------------------- fused sub-blocks */

/* h_out = mix_block(h0) on backend be, documents at offsets. 0 on success. */
static int run_mix_block(sp_backend *be, const float *h0, const float *lnw, const float *lnb,
                         const float *filt, const float *bias, int64_t K, int64_t D,
                         const int64_t *offsets, int64_t n_docs, float *h_out) {
    const int64_t T = offsets[n_docs];
    const size_t nh = (size_t)(T * D) * sizeof(float);
    int rc = 1;
    float *dh = to_be(be, h0, nh);
    float *dw = to_be(be, lnw, (size_t)D * sizeof(float));
    float *db = to_be(be, lnb, (size_t)D * sizeof(float));
    float *df = K > 0 ? to_be(be, filt, (size_t)(D * K * 2) * sizeof(float)) : NULL;
    float *dbias = bias ? to_be(be, bias, (size_t)D * sizeof(float)) : NULL;
    const size_t ws = be->ops->mix_block_workspace_size(be, offsets, n_docs, D, K);
    void *dws = to_be(be, NULL, ws ? ws : 256);
    if (!dh || !dw || !db || (K > 0 && !df) || (bias && !dbias) || !dws) goto done;
    if (be->ops->mix_block(be, dh, dw, db, 1e-5f, df, dbias, K, D, offsets, n_docs, dws)) {
        fprintf(stderr, "FAIL %s mix_block T=%lld docs=%lld D=%lld K=%lld: %s\n", be->ops->name,
                (long long)T, (long long)n_docs, (long long)D, (long long)K, be->err);
        check_failures++;
        goto done;
    }
    if (from_be(be, h_out, dh, nh)) goto done;
    rc = 0;
done:
    be->ops->buffer_free(be, dh);
    be->ops->buffer_free(be, dw);
    be->ops->buffer_free(be, db);
    be->ops->buffer_free(be, df);
    be->ops->buffer_free(be, dbias);
    be->ops->buffer_free(be, dws);
    return rc;
}

/* Documents of the given lengths packed in one h, against the CPU backend. */
static void check_mix_block(sp_backend *gpu, const char *mix, const int64_t *lens, int64_t n_docs,
                            int64_t D, int64_t K, int with_bias) {
    int64_t *offsets = xmalloc((size_t)(n_docs + 1) * sizeof(int64_t));
    offsets[0] = 0;
    for (int64_t i = 0; i < n_docs; i++) offsets[i + 1] = offsets[i] + lens[i];
    const int64_t n = offsets[n_docs] * D;
    float *h0 = xmalloc((size_t)n * sizeof(float));
    float *hc = xmalloc((size_t)n * sizeof(float)), *hg = xmalloc((size_t)n * sizeof(float));
    float *lnw = xmalloc((size_t)D * sizeof(float)), *lnb = xmalloc((size_t)D * sizeof(float));
    float *filt = xmalloc((size_t)(D * K * 2 + 1) * sizeof(float));
    float *bias = xmalloc((size_t)D * sizeof(float));
    test_fill(h0, n, 2.0f, 0.5f); /* an offset, so the LayerNorm has a mean to remove */
    test_fill(lnw, D, 0.5f, 1.0f);
    test_fill(lnb, D, 0.5f, 0.0f);
    test_fill(filt, D * K * 2, 1.0f, 0.0f);
    test_fill(bias, D, 1.0f, 0.0f);
    const float *b = with_bias ? bias : NULL;
    if (!run_mix_block(g_cpu, h0, lnw, lnb, filt, b, K, D, offsets, n_docs, hc) &&
        !run_mix_block(gpu, h0, lnw, lnb, filt, b, K, D, offsets, n_docs, hg)) {
        double e = rel_err(hg, hc, n);
        CHECK(e <= TOL, "mix_block mix=%s docs=%lld T=%lld D=%lld K=%lld bias=%d: rel err %.3g",
              mix, (long long)n_docs, (long long)offsets[n_docs], (long long)D, (long long)K,
              with_bias, e);
    }
    free(offsets);
    free(h0);
    free(hc);
    free(hg);
    free(lnw);
    free(lnb);
    free(filt);
    free(bias);
}

static void test_mix_block(void) {
    if (!g_cpu->ops->mix_block || !g_cpu->ops->mix_block_workspace_size) {
        fprintf(stderr, "FAIL the CPU backend has no mix_block to compare with\n");
        check_failures++;
        return;
    }
    static const char *modes[] = {"auto", "dftgemm", "cufft"};
    /* one document; lengths 1 (bias only), 2, odd, powers of two and not;
     * a long non-power-of-two document between short ones */
    static const int64_t one[] = {100}, mixed[] = {1, 2, 7, 64, 1000, 1024, 5},
                         longs[] = {3, 4097, 8192, 1};
    for (size_t m = 0; m < sizeof modes / sizeof *modes; m++) {
        sp_backend *gpu = make_gpu(modes[m]);
        if (!gpu) continue;
        int fails_before = check_failures;
        static const int64_t Ks[] = {0, 3, 100};
        for (int ki = 0; ki < 3; ki++) {
            check_mix_block(gpu, modes[m], one, 1, 64, Ks[ki], 1);
            check_mix_block(gpu, modes[m], mixed, 7, 64, Ks[ki], ki != 1);
            check_mix_block(gpu, modes[m], mixed, 7, 3, Ks[ki], 1);
        }
        check_mix_block(gpu, modes[m], longs, 4, 16, 32, 1);
        static const int64_t wide[] = {128, 300, 77};
        check_mix_block(gpu, modes[m], wide, 3, 768, 64, 1);
        printf("mix_block mix=%s: %s\n", modes[m], check_failures == fails_before ? "ok" : "FAILED");
        gpu->ops->destroy(gpu);
    }
}

/* h_out = ffn_block(h0) on backend be, documents at offsets. 0 on success. */
static int run_ffn_block(sp_backend *be, const float *h0, const float *lnw, const float *lnb,
                         const float *Wu, const float *bu, sp_act act, const float *Wd,
                         const float *bd, int64_t D, int64_t F, const int64_t *offsets,
                         int64_t n_docs, float *h_out) {
    const int64_t T = offsets[n_docs];
    const size_t nh = (size_t)(T * D) * sizeof(float), nw = (size_t)(D * F) * sizeof(float);
    int rc = 1;
    float *dh = to_be(be, h0, nh);
    float *dlw = to_be(be, lnw, (size_t)D * sizeof(float));
    float *dlb = to_be(be, lnb, (size_t)D * sizeof(float));
    float *dWu = to_be(be, Wu, nw), *dWd = to_be(be, Wd, nw);
    float *dbu = bu ? to_be(be, bu, (size_t)F * sizeof(float)) : NULL;
    float *dbd = bd ? to_be(be, bd, (size_t)D * sizeof(float)) : NULL;
    const size_t ws = be->ops->ffn_block_workspace_size(be, offsets, n_docs, D, F);
    void *dws = to_be(be, NULL, ws ? ws : 256);
    if (!dh || !dlw || !dlb || !dWu || !dWd || (bu && !dbu) || (bd && !dbd) || !dws) goto done;
    if (be->ops->ffn_block(be, dh, dlw, dlb, 1e-5f, dWu, dbu, act, dWd, dbd, D, F, offsets, n_docs,
                           dws)) {
        fprintf(stderr, "FAIL %s ffn_block T=%lld docs=%lld D=%lld F=%lld: %s\n", be->ops->name,
                (long long)T, (long long)n_docs, (long long)D, (long long)F, be->err);
        check_failures++;
        goto done;
    }
    if (from_be(be, h_out, dh, nh)) goto done;
    rc = 0;
done:
    be->ops->buffer_free(be, dh);
    be->ops->buffer_free(be, dlw);
    be->ops->buffer_free(be, dlb);
    be->ops->buffer_free(be, dWu);
    be->ops->buffer_free(be, dWd);
    be->ops->buffer_free(be, dbu);
    be->ops->buffer_free(be, dbd);
    be->ops->buffer_free(be, dws);
    return rc;
}

static void test_ffn_block(sp_backend *gpu) {
    if (!g_cpu->ops->ffn_block || !g_cpu->ops->ffn_block_workspace_size) {
        fprintf(stderr, "FAIL the CPU backend has no ffn_block to compare with\n");
        check_failures++;
        return;
    }
    /* one row; two documents in one chunk; a chunk (2048 rows) and a bit, the
     * chunk boundary inside a document; three chunks; BERT-base widths */
    static const int64_t o1[] = {0, 1}, o2[] = {0, 30, 100}, o3[] = {0, 2000, 2049},
                         o4[] = {0, 1, 4099, 4100}, o5[] = {0, 300};
    struct {
        const int64_t *offsets;
        int64_t n_docs, D, F;
    } shapes[] = {{o1, 1, 8, 32}, {o2, 2, 64, 256}, {o3, 2, 64, 128}, {o4, 3, 128, 512},
                  {o5, 1, 768, 3072}};
    for (size_t s = 0; s < sizeof shapes / sizeof *shapes; s++)
        for (int variant = 0; variant < 3; variant++) {
            /* 0: gelu + biases, 1: gelu_tanh + biases, 2: gelu, no biases */
            const int64_t *off = shapes[s].offsets, nd = shapes[s].n_docs;
            const int64_t T = off[nd], D = shapes[s].D, F = shapes[s].F;
            const sp_act act = variant == 1 ? SP_ACT_GELU_TANH : SP_ACT_GELU;
            const int has_b = variant != 2;
            float *h0 = xmalloc((size_t)(T * D) * sizeof(float));
            float *hc = xmalloc((size_t)(T * D) * sizeof(float));
            float *hg = xmalloc((size_t)(T * D) * sizeof(float));
            float *lnw = xmalloc((size_t)D * sizeof(float));
            float *lnb = xmalloc((size_t)D * sizeof(float));
            float *Wu = xmalloc((size_t)(D * F) * sizeof(float));
            float *Wd = xmalloc((size_t)(D * F) * sizeof(float));
            float *bu = xmalloc((size_t)F * sizeof(float));
            float *bd = xmalloc((size_t)D * sizeof(float));
            test_fill(h0, T * D, 2.0f, 0.5f);
            test_fill(lnw, D, 0.5f, 1.0f);
            test_fill(lnb, D, 0.5f, 0.0f);
            test_fill(Wu, D * F, 1.0f / sqrtf((float)D), 0.0f);
            test_fill(Wd, D * F, 1.0f / sqrtf((float)F), 0.0f);
            test_fill(bu, F, 0.5f, 0.0f);
            test_fill(bd, D, 0.5f, 0.0f);
            const float *pbu = has_b ? bu : NULL, *pbd = has_b ? bd : NULL;
            if (!run_ffn_block(g_cpu, h0, lnw, lnb, Wu, pbu, act, Wd, pbd, D, F, off, nd, hc) &&
                !run_ffn_block(gpu, h0, lnw, lnb, Wu, pbu, act, Wd, pbd, D, F, off, nd, hg)) {
                double e = rel_err(hg, hc, T * D);
                CHECK(e <= TOL, "ffn_block T=%lld docs=%lld D=%lld F=%lld variant=%d: rel err %.3g",
                      (long long)T, (long long)nd, (long long)D, (long long)F, variant, e);
            }
            free(h0);
            free(hc);
            free(hg);
            free(lnw);
            free(lnb);
            free(Wu);
            free(Wd);
            free(bu);
            free(bd);
        }
    printf("ffn_block: done\n");
}

/* The sub-blocks' argument checks: each bad call fails with a message. */
static int fails_with_message(sp_backend *be, int rc) { return rc != 0 && be->err[0] != '\0'; }

static void block_errors(sp_backend *gpu, float *h, float *w, void *ws) {
    const int64_t D = 4, K = 2;
    static const int64_t start1[] = {1, 5}, empty[] = {0, 5, 5}, down[] = {0, 5, 3},
                         ok[] = {0, 3, 10};
    struct {
        const int64_t *offsets;
        int64_t n_docs;
        const char *what;
    } bad[] = {
        {start1, 1, "offsets[0] != 0"}, {empty, 2, "an empty document"},
        {down, 2, "decreasing offsets"}, {ok, 0, "n_docs = 0"},
        {NULL, 1, "NULL offsets"},
    };
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        gpu->err[0] = '\0';
        int rc = gpu->ops->mix_block(gpu, h, w, w, 1e-5f, w, NULL, K, D, bad[i].offsets,
                                     bad[i].n_docs, ws);
        CHECK(fails_with_message(gpu, rc), "mix_block with %s should fail", bad[i].what);
        CHECK(gpu->ops->mix_block_workspace_size(gpu, bad[i].offsets, bad[i].n_docs, D, K) == 0,
              "mix_block_workspace_size with %s should be 0", bad[i].what);
        gpu->err[0] = '\0';
        rc = gpu->ops->ffn_block(gpu, h, w, w, 1e-5f, w, NULL, SP_ACT_GELU, w, NULL, D, 8,
                                 bad[i].offsets, bad[i].n_docs, ws);
        CHECK(fails_with_message(gpu, rc), "ffn_block with %s should fail", bad[i].what);
        CHECK(gpu->ops->ffn_block_workspace_size(gpu, bad[i].offsets, bad[i].n_docs, D, 8) == 0,
              "ffn_block_workspace_size with %s should be 0", bad[i].what);
    }
    gpu->err[0] = '\0';
    int rc = gpu->ops->mix_block(gpu, h, w, w, 1e-5f, NULL, NULL, K, D, ok, 2, ws);
    CHECK(fails_with_message(gpu, rc), "mix_block with a NULL filter should fail");
    gpu->err[0] = '\0';
    rc = gpu->ops->mix_block(gpu, h, w, w, 1e-5f, w, NULL, K, D, ok, 2, NULL);
    CHECK(fails_with_message(gpu, rc), "mix_block with a NULL workspace should fail");
    gpu->err[0] = '\0';
    rc = gpu->ops->mix_block(gpu, h, w, w, 1e-5f, w, NULL, K, 0, ok, 2, ws);
    CHECK(fails_with_message(gpu, rc), "mix_block with D = 0 should fail");
    gpu->err[0] = '\0';
    rc = gpu->ops->ffn_block(gpu, h, w, w, 1e-5f, w, NULL, SP_ACT_GELU, w, NULL, D, 8, ok, 2, NULL);
    CHECK(fails_with_message(gpu, rc), "ffn_block with a NULL workspace should fail");
    gpu->err[0] = '\0';
    rc = gpu->ops->ffn_block(gpu, h, w, w, 1e-5f, w, NULL, (sp_act)99, w, NULL, D, 8, ok, 2, ws);
    CHECK(fails_with_message(gpu, rc), "ffn_block with an unknown activation should fail");
    gpu->err[0] = '\0';
    rc = gpu->ops->ffn_block(gpu, h, w, w, 1e-5f, w, NULL, SP_ACT_GELU, w, NULL, D, 0, ok, 2, ws);
    CHECK(fails_with_message(gpu, rc), "ffn_block with F = 0 should fail");
    CHECK(gpu->ops->synchronize(gpu) == 0, "synchronize after the failed calls: %s", gpu->err);
}

static void test_block_errors(sp_backend *gpu) {
    float *h = to_be(gpu, NULL, 64 * 4 * sizeof(float));
    float *w = to_be(gpu, NULL, 4096 * sizeof(float));
    void *ws = to_be(gpu, NULL, (size_t)1 << 20);
    if (h && w && ws) block_errors(gpu, h, w, ws);
    gpu->ops->buffer_free(gpu, h);
    gpu->ops->buffer_free(gpu, w);
    gpu->ops->buffer_free(gpu, ws);
    printf("block errors: done\n");
}

static void test_errors(void) {
    char err[512] = "";
    sp_backend *be = sp_backend_cuda_create(-1, err, sizeof err);
    CHECK(!be && err[0], "create(-1) should fail with a message");
    err[0] = '\0';
    be = sp_backend_cuda_create(1 << 20, err, sizeof err);
    CHECK(!be && err[0], "create(huge device) should fail with a message");
    err[0] = '\0';
    setenv("SPECTRAL_CUDA_MIX", "bogus", 1);
    be = sp_backend_cuda_create(0, err, sizeof err);
    CHECK(!be && strstr(err, "SPECTRAL_CUDA_MIX"), "bad SPECTRAL_CUDA_MIX: '%s'", err);
    unsetenv("SPECTRAL_CUDA_MIX");
    sp_backend *gpu = make_gpu(NULL);
    if (gpu) {
        CHECK(gpu->host_memory == 0, "cuda host_memory");
        CHECK(strcmp(gpu->ops->name, "cuda") == 0, "cuda name");
        void *p = gpu->ops->buffer_alloc(gpu, (size_t)1 << 60);
        CHECK(p == NULL && gpu->err[0], "2^60-byte alloc should fail with a message");
        CHECK(gpu->ops->linear(gpu, NULL, NULL, NULL, 1, 1, 1, SP_ACT_GELU, 1, NULL) != 0,
              "linear accumulate+gelu should fail");
        gpu->ops->destroy(gpu);
    }
    printf("errors: done\n");
}

/* -------------------------------------------- issue 12: paths and limits */

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

/* SPECTRAL_CUDA_STRICT=1: a forced path that cannot take a shape fails
 * instead of falling back, so a passing check of a forced path proves that
 * path ran. */
static void test_strict(void) {
    setenv("SPECTRAL_CUDA_STRICT", "1", 1);
    sp_backend *gpu = make_gpu("fused");
    if (gpu) {
        int before = check_failures;
        check_mix(gpu, "fused(strict)", 4096, 64, 32, 1);
        check_mix(gpu, "fused(strict)", 16384, 64, 100, 0);
        CHECK(check_failures == before, "strict fused failed on shapes it takes");
        float *d = to_be(gpu, NULL, 100 * 4 * sizeof(float) + 4096);
        if (d) {
            gpu->err[0] = '\0';
            int rc = gpu->ops->spectral_mix(gpu, d, d, NULL, 2, 100, 4, d, d);
            CHECK(rc != 0 && strstr(gpu->err, "STRICT"), "strict fused took T=100: '%s'",
                  gpu->err);
            CHECK(gpu->ops->synchronize(gpu) == 0, "synchronize after the refusal: %s", gpu->err);
        }
        gpu->ops->buffer_free(gpu, d);
        gpu->ops->destroy(gpu);
    }
    gpu = make_gpu("dftgemm");
    if (gpu) {
        int before = check_failures;
        check_mix(gpu, "dftgemm(strict)", 1000, 64, 3, 1);
        check_mix(gpu, "dftgemm(strict)", 4097, 768, 100, 0);
        CHECK(check_failures == before, "strict dftgemm failed on shapes it takes");
        gpu->ops->destroy(gpu);
    }
    unsetenv("SPECTRAL_CUDA_STRICT");
    printf("strict: done\n");
}

/* Two live backends on one device alternating fused T = 16384 and 2048: the
 * shared-memory opt-in belongs to the device, not to one backend. */
static void test_two_backends(void) {
    setenv("SPECTRAL_CUDA_STRICT", "1", 1);
    sp_backend *a = make_gpu("fused"), *b = make_gpu("fused");
    if (a && b) {
        check_mix(a, "fused A", 16384, 64, 100, 1);
        check_mix(b, "fused B", 2048, 64, 100, 1);
        check_mix(a, "fused A", 16384, 64, 100, 1);
        check_mix(b, "fused B", 16384, 64, 100, 0);
        check_mix(a, "fused A", 2048, 64, 100, 0);
    }
    if (a) a->ops->destroy(a);
    if (b) b->ops->destroy(b);
    unsetenv("SPECTRAL_CUDA_STRICT");
    printf("two backends: done\n");
}

/* D not a multiple of the fused kernel's channel packing (8, 4, 2 channels
 * a block); cuFFT chunking (several chunks, an odd last one). */
static void test_odd_widths(void) {
    static const int64_t Ds[] = {771, 1023}, Ts[] = {1024, 4096, 16384};
    sp_backend *gpu = make_gpu(NULL);
    if (!gpu) return;
    for (int di = 0; di < 2; di++)
        for (int ti = 0; ti < 3; ti++) check_mix(gpu, "auto", Ts[ti], Ds[di], 100, 1);
    gpu->ops->destroy(gpu);
    gpu = g_quick ? NULL : make_gpu("cufft");
    if (gpu) {
        check_mix(gpu, "cufft", 65537, 768, 100, 1);
        check_mix(gpu, "cufft", ((int64_t)1 << 20) + 1, 64, 16, 0);
        gpu->ops->destroy(gpu);
    }
    printf("odd widths and chunking: done\n");
}

/* Fifty distinct lengths in a row on one backend: results, and what the
 * plan cache costs (a miss plans; the workspace query never does). */
static void test_many_lengths(void) {
    static const char *modes[] = {"cufft", "auto"};
    for (int m = 0; m < 2; m++) {
        sp_backend *gpu = make_gpu(modes[m]);
        if (!gpu) continue;
        double t0 = now_s();
        for (int i = 0; i < 50; i++) check_mix(gpu, modes[m], 1001 + 37 * i, 64, 40, i & 1);
        printf("50 lengths (mix=%s): %.3f s including the CPU reference\n", modes[m],
               now_s() - t0);
        t0 = now_s();
        size_t ws = 0;
        for (int i = 0; i < 1000; i++) {
            int64_t off[2] = {0, 20001 + i};
            ws += gpu->ops->mix_block_workspace_size(gpu, off, 1, 768, 128);
        }
        printf("1000 workspace queries of distinct lengths (mix=%s): %.3f s\n", modes[m],
               now_s() - t0);
        CHECK(ws > 0, "mix_block_workspace_size returned 0");
        gpu->ops->destroy(gpu);
    }
}

/* add, get_rows and fourier2d_real check their arguments as the CPU backend
 * does; an allocation failure leaves the backend usable. */
static void test_arg_checks(sp_backend *gpu) {
    float *x = to_be(gpu, NULL, 4096 * sizeof(float));
    float *y = to_be(gpu, NULL, 4096 * sizeof(float));
    int32_t ids[3] = {0, -1, 2};
    int32_t *dids = to_be(gpu, ids, sizeof ids);
    if (!x || !y || !dids) goto done;
    gpu->err[0] = '\0';
    CHECK(fails_with_message(gpu, gpu->ops->add(gpu, x, -1, y)), "add n=-1 should fail");
    gpu->err[0] = '\0';
    CHECK(fails_with_message(gpu, gpu->ops->add(gpu, NULL, 5, y)), "add NULL x should fail");
    CHECK(gpu->ops->add(gpu, NULL, 0, NULL) == 0, "add n=0 should succeed: %s", gpu->err);
    gpu->err[0] = '\0';
    int rc = gpu->ops->get_rows(gpu, x, 4, dids, 3, y);
    CHECK(fails_with_message(gpu, rc) && strstr(gpu->err, "negative id"),
          "get_rows with a negative id: '%s'", gpu->err);
    ids[1] = 1;
    CHECK(gpu->ops->upload(gpu, dids, ids, sizeof ids) == 0 &&
              gpu->ops->get_rows(gpu, x, 4, dids, 3, y) == 0,
          "get_rows after a refused call: %s", gpu->err);
    gpu->err[0] = '\0';
    rc = gpu->ops->fourier2d_real(gpu, x, 8, 8, y, x + 3);
    CHECK(fails_with_message(gpu, rc), "fourier2d_real with overlapping out should fail");
    CHECK(gpu->ops->fourier2d_real(gpu, x, 8, 0, y, y) == 0, "fourier2d_real D=0: %s", gpu->err);
    gpu->err[0] = '\0';
    rc = gpu->ops->fourier2d_real(gpu, x, -1, 8, y, y);
    CHECK(fails_with_message(gpu, rc), "fourier2d_real T=-1 should fail");
    CHECK(gpu->ops->mix_workspace_size(gpu, 1000, 64) > 0, "mix_workspace_size(1000, 64) = 0");
    void *huge = gpu->ops->buffer_alloc(gpu, (size_t)1 << 50);
    CHECK(huge == NULL && gpu->err[0], "2^50-byte alloc should fail with a message");
    CHECK(gpu->ops->add(gpu, x, 4096, y) == 0 && gpu->ops->synchronize(gpu) == 0,
          "add after a failed allocation: %s", gpu->err);
done:
    gpu->ops->buffer_free(gpu, x);
    gpu->ops->buffer_free(gpu, y);
    gpu->ops->buffer_free(gpu, dids);
    printf("argument checks: done\n");
}

/* SPECTRAL_CUDA_TF32=1: the linears on tensor cores, a looser bound. */
static void test_tf32(void) {
    setenv("SPECTRAL_CUDA_TF32", "1", 1);
    sp_backend *gpu = make_gpu(NULL);
    unsetenv("SPECTRAL_CUDA_TF32");
    if (!gpu) return;
    const int64_t T = 256, IN = 768, OUT = 768;
    float *x = xmalloc((size_t)(T * IN) * 4), *W = xmalloc((size_t)(IN * OUT) * 4);
    float *oc = xmalloc((size_t)(T * OUT) * 4), *og = xmalloc((size_t)(T * OUT) * 4);
    test_fill(x, T * IN, 1.0f, 0.0f);
    test_fill(W, IN * OUT, 0.05f, 0.0f);
    sp_backend *bes[2] = {g_cpu, gpu};
    float *outs[2] = {oc, og};
    int ok = 1;
    for (int i = 0; i < 2; i++) {
        sp_backend *be = bes[i];
        float *dx = to_be(be, x, (size_t)(T * IN) * 4), *dW = to_be(be, W, (size_t)(IN * OUT) * 4);
        float *dout = to_be(be, NULL, (size_t)(T * OUT) * 4);
        if (!dx || !dW || !dout ||
            be->ops->linear(be, dx, dW, NULL, T, IN, OUT, SP_ACT_NONE, 0, dout) ||
            from_be(be, outs[i], dout, (size_t)(T * OUT) * 4)) {
            fprintf(stderr, "FAIL %s tf32 linear: %s\n", be->ops->name, be->err);
            check_failures++;
            ok = 0;
        }
        be->ops->buffer_free(be, dx);
        be->ops->buffer_free(be, dW);
        be->ops->buffer_free(be, dout);
    }
    if (ok) {
        double e = rel_err(og, oc, T * OUT);
        CHECK(e <= 1e-2, "tf32 linear: rel err %.3g (bound 1e-2)", e);
        printf("tf32 linear: rel err %.3g\n", e);
    }
    free(x);
    free(W);
    free(oc);
    free(og);
    gpu->ops->destroy(gpu);
}

/* Beyond 32-bit element offsets. Elementwise add above 2^28 elements
 * (exact); then the mixing with T x D > 2^31 (cufft at T = 2^21 + 1,
 * D = 1025; dftgemm at T = 2^21, D = 1024, forced under strict mode), compared
 * on sampled channels (chunk edges, the last ones) whose rows straddle the
 * 2^31 element offset, against the CPU backend run on those channels alone.
 * h starts as u, so one host buffer of T x D floats suffices. */
static void check_mix_sampled(const char *mix, int64_t T, int64_t D, int64_t K) {
    setenv("SPECTRAL_CUDA_STRICT", "1", 1);
    sp_backend *gpu = make_gpu(mix);
    unsetenv("SPECTRAL_CUDA_STRICT");
    if (!gpu) return;
    const int64_t want[] = {0, 1, 13, 14, 31, 32, 511, 512, D - 4, D - 3, D - 2, D - 1};
    int64_t ch[12];
    int nch = 0;
    for (int i = 0; i < 12; i++)
        if (want[i] >= 0 && want[i] < D && (nch == 0 || want[i] > ch[nch - 1])) ch[nch++] = want[i];
    const int64_t n = T * D;
    float *u = xmalloc((size_t)n * sizeof(float));
    float *filt = xmalloc((size_t)(D * K * 2) * sizeof(float));
    float *bias = xmalloc((size_t)D * sizeof(float));
    float *uc = xmalloc((size_t)(T * nch) * sizeof(float)), *hc = xmalloc((size_t)(T * nch) * 4);
    float *ref = xmalloc((size_t)(T * nch) * sizeof(float));
    float *fc = xmalloc((size_t)(nch * K * 2) * sizeof(float)), *bc = xmalloc((size_t)nch * 4);
    test_fill(u, n, 1.0f, 0.25f);
    test_fill(filt, D * K * 2, 1.0f, 0.0f);
    test_fill(bias, D, 1.0f, 0.0f);
    for (int j = 0; j < nch; j++) {
        for (int64_t t = 0; t < T; t++) uc[t * nch + j] = u[t * D + ch[j]];
        memcpy(fc + (int64_t)j * K * 2, filt + ch[j] * K * 2, (size_t)(K * 2) * sizeof(float));
        bc[j] = bias[ch[j]];
    }
    const double t0 = now_s();
    float *du = to_be(gpu, u, (size_t)n * 4), *dh = to_be(gpu, u, (size_t)n * 4);
    float *df = to_be(gpu, filt, (size_t)(D * K * 2) * 4), *db = to_be(gpu, bias, (size_t)D * 4);
    const size_t wsb = gpu->ops->mix_workspace_size(gpu, T, D);
    void *ws = to_be(gpu, NULL, wsb ? wsb : 256);
    int ok = du && dh && df && db && ws;
    if (ok && (gpu->ops->spectral_mix(gpu, du, df, db, K, T, D, ws, dh) ||
               gpu->ops->synchronize(gpu))) {
        fprintf(stderr, "FAIL spectral_mix mix=%s T=%lld D=%lld K=%lld: %s\n", mix, (long long)T,
                (long long)D, (long long)K, gpu->err);
        check_failures++;
        ok = 0;
    }
    if (ok && from_be(gpu, u, dh, (size_t)n * 4)) ok = 0;
    printf("mix=%s T=%lld D=%lld K=%lld on the GPU (with transfers): %.2f s\n", mix, (long long)T,
           (long long)D, (long long)K, now_s() - t0);
    if (ok && !run_mix(g_cpu, uc, fc, bc, K, T, nch, uc, ref)) {
        for (int j = 0; j < nch; j++)
            for (int64_t t = 0; t < T; t++) hc[t * nch + j] = u[t * D + ch[j]];
        double e = rel_err(hc, ref, T * nch);
        CHECK(e <= TOL, "sampled spectral_mix mix=%s T=%lld D=%lld K=%lld: rel err %.3g", mix,
              (long long)T, (long long)D, (long long)K, e);
    }
    gpu->ops->buffer_free(gpu, du);
    gpu->ops->buffer_free(gpu, dh);
    gpu->ops->buffer_free(gpu, df);
    gpu->ops->buffer_free(gpu, db);
    gpu->ops->buffer_free(gpu, ws);
    gpu->ops->destroy(gpu);
    free(u);
    free(filt);
    free(bias);
    free(uc);
    free(hc);
    free(ref);
    free(fc);
    free(bc);
}

static void test_big(void) {
    sp_backend *gpu = make_gpu(NULL);
    if (gpu) {
        const int64_t n = ((int64_t)1 << 28) + 3;
        float *x = xmalloc((size_t)n * sizeof(float)), *y = xmalloc((size_t)n * sizeof(float));
        test_fill(x, n, 1.0f, 0.0f);
        float *dx = to_be(gpu, x, (size_t)n * 4), *dy = to_be(gpu, x, (size_t)n * 4);
        if (dx && dy && !gpu->ops->add(gpu, dx, n, dy) && !from_be(gpu, y, dy, (size_t)n * 4)) {
            int64_t bad = -1;
            for (int64_t i = 0; i < n && bad < 0; i++)
                if (y[i] != 2.0f * x[i]) bad = i;
            CHECK(bad < 0, "add over 2^28 + 3 elements: wrong at %lld", (long long)bad);
        } else {
            CHECK(0, "add over 2^28 + 3 elements failed: %s", gpu->err);
        }
        gpu->ops->buffer_free(gpu, dx);
        gpu->ops->buffer_free(gpu, dy);
        free(x);
        free(y);
        gpu->ops->destroy(gpu);
    }
    check_mix_sampled("cufft", ((int64_t)1 << 21) + 1, 1025, 100);
    check_mix_sampled("dftgemm", (int64_t)1 << 21, 1024, 8);
    printf("beyond 2^31 elements: done\n");
}

/* When nvidia-smi lists a GPU, the runtime must be able to use it: an old

 * driver or a broken install fails the test instead of skipping it. */
static int smi_sees_gpu(void) {
    FILE *f = popen("nvidia-smi -L 2>/dev/null", "r");
    if (!f) return 0;
    char line[512];
    int seen = 0;
    while (fgets(line, sizeof line, f))
        if (!strncmp(line, "GPU ", 4)) seen = 1;
    pclose(f);
    return seen;
}

int main(void) {
    test_rng = 0x2545F4914F6CDD1Dull; /* this test's own data */

    int n = sp_backend_cuda_device_count();
    if (n == 0) {
        char err[512] = "";
        sp_backend *be = sp_backend_cuda_create(0, err, sizeof err);
        if (be || !err[0]) {
            fprintf(stderr, "FAIL: no device, yet create(0) %s\n",
                    be ? "succeeded" : "gave no message");
            return 1;
        }
        if (smi_sees_gpu()) {
            fprintf(stderr, "FAIL: nvidia-smi lists a GPU but the CUDA backend cannot use it: %s\n",
                    err);
            return 1;
        }
        printf("SKIP: no CUDA device (%s)\n", err);
        return 77;
    }
    unsetenv("SPECTRAL_CUDA_TF32"); /* FP32 GEMMs for the 1e-4 bound */
    unsetenv("SPECTRAL_CUDA_STRICT");
    const char *quick = getenv("SPECTRAL_GPU_TEST_QUICK");
    g_quick = quick && !strcmp(quick, "1");
    char err[512] = "";
    g_cpu = sp_backend_cpu_create(0, err, sizeof err);
    if (!g_cpu) {
        fprintf(stderr, "FAIL create cpu: %s\n", err);
        return 1;
    }
    test_errors();
    sp_backend *gpu = make_gpu(NULL);
    if (gpu) {
        test_get_rows(gpu);
        test_layer_norm(gpu);
        test_linear(gpu);
        test_pool(gpu);
        test_fourier2d(gpu);
        test_ffn_block(gpu);
        test_block_errors(gpu);
        test_arg_checks(gpu);
        gpu->ops->destroy(gpu);
    }
    test_strict();
    test_two_backends();
    test_odd_widths();
    if (!g_quick) test_many_lengths();
    test_tf32();
    test_mix();
    test_mix_block();
    if (!g_quick) test_mix_long();
    if (!g_quick) test_big();
    g_cpu->ops->destroy(g_cpu);
    return check_report("test_gpu_ops");
}
#endif
