/* FourierFT adapters through the C API (runtime/adapter.c).
 *
 *   test_adapter                 unit tests on a random tiny spectralmlp model and
 *                                adapters written here with the C GGUF writer:
 *                                delta_W against a float64 direct sum, contexts of one
 *                                model with and without adapters, also from two threads
 *                                at once (bit-exact where the maths is exact), and
 *                                every refusal with its message
 *   test_adapter dump MODEL IDS.txt [--adapter FILE[:SCALE]]... [--pooled] [--backend cpu|cuda]
 *                                token states (or CLS-pooled, unnormalised) of the ids
 *                                with the adapters set, printed as "T E" then T rows
 *                                (tests/test_adapter.py compares them with peft); exit 77
 *                                when --backend cuda is asked for and not available
 *   test_adapter bench           delta_W for n = 1000 coefficients on 768 x 768 and
 *                                3072 x 768: the runtime's FFT (spectral_adapter_load)
 *                                against the direct sum over the coefficients; prints
 *                                times, asserts nothing (docs/adapters.md)
 *
 * Exit status 0 when every check passes, 1 otherwise, 2 on usage errors, 77 (skip). */
#define _POSIX_C_SOURCE 200809L
#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "runtime/adapter.h"
#include "spectral.h"
#include "tiny_model.h"
#include "check.h"

#ifndef M_PI
#define M_PI 3.14159265358979323846
#endif

/* ---- writing adapters ------------------------------------------------------ */

typedef struct {
    const char *name;
    int64_t rows, cols, n;
    int32_t *loc; /* 2n: rows, then columns */
    float *spec;
} target;

/* What a written adapter gets wrong on purpose (all zero: a good file). */
typedef struct {
    const char *arch, *gtype, *atype; /* NULL: spectralmlp, adapter, fourierft; "" drops the key */
    int no_scaling;
    int64_t shape_rows0;      /* overrides target 0's declared rows when > 0 */
    int64_t index_ne0_delta;  /* target 0's indices tensor gets n + this entries */
    int list_only_first;      /* targets lists target 0 only (tensors for all are written) */
} variant;

static unsigned rng_state = 12345u;
static uint32_t rnd(void) {
    rng_state = rng_state * 1664525u + 1013904223u;
    return rng_state >> 8;
}

/* n distinct random locations and N(0,1)-ish coefficients. */
static target make_target(const char *name, int64_t rows, int64_t cols, int64_t n) {
    target t = {name, rows, cols, n, malloc((size_t)(2 * n) * sizeof(int32_t)),
                malloc((size_t)n * sizeof(float))};
    int64_t N = rows * cols;
    int64_t *perm = malloc((size_t)N * sizeof *perm);
    for (int64_t i = 0; i < N; i++) perm[i] = i;
    for (int64_t i = 0; i < n; i++) {
        int64_t z = i + (int64_t)(rnd() % (uint32_t)(N - i));
        int64_t v = perm[z];
        perm[z] = perm[i];
        perm[i] = v;
        t.loc[i] = (int32_t)(v / cols);
        t.loc[n + i] = (int32_t)(v % cols);
        t.spec[i] = ((float)(rnd() % 20001) - 10000.0f) / 5000.0f;
    }
    free(perm);
    return t;
}

static void free_target(target *t) {
    free(t->loc);
    free(t->spec);
}

static int write_adapter(const char *path, const target *t, int nt, float scaling, variant v) {
    sp_gguf_writer *w = sp_gguf_writer_new();
    int rc = 0;
    const char *arch = v.arch ? v.arch : "spectralmlp", *gt = v.gtype ? v.gtype : "adapter",
               *at = v.atype ? v.atype : "fourierft";
    if (arch[0]) rc |= sp_gguf_writer_set_str(w, "general.architecture", arch);
    if (gt[0]) rc |= sp_gguf_writer_set_str(w, "general.type", gt);
    rc |= sp_gguf_writer_set_str(w, "general.name", "test adapter");
    if (at[0]) rc |= sp_gguf_writer_set_str(w, "adapter.type", at);
    if (!v.no_scaling) rc |= sp_gguf_writer_set_f32(w, "adapter.fourierft.scaling", scaling);
    const int listed = v.list_only_first ? 1 : nt;
    const char *names[8];
    uint32_t shapes[16];
    for (int i = 0; i < listed; i++) {
        names[i] = t[i].name;
        shapes[2 * i] = (uint32_t)(i == 0 && v.shape_rows0 > 0 ? v.shape_rows0 : t[i].rows);
        shapes[2 * i + 1] = (uint32_t)t[i].cols;
    }
    rc |= sp_gguf_writer_set_arr_str(w, "adapter.fourierft.targets", names, (uint64_t)listed);
    rc |= sp_gguf_writer_set_arr(w, "adapter.fourierft.shapes", SP_GGUF_TYPE_UINT32, shapes,
                                 (uint64_t)(2 * listed));
    for (int i = 0; i < nt; i++) {
        char tn[256];
        int64_t n = t[i].n, ne[2] = {n, 2};
        snprintf(tn, sizeof tn, "%s.fourierft_spectrum", t[i].name);
        rc |= sp_gguf_writer_add_tensor(w, tn, SP_TENSOR_F32, 1, ne, t[i].spec);
        snprintf(tn, sizeof tn, "%s.fourierft_indices", t[i].name);
        int32_t *loc = t[i].loc;
        int32_t *tmp = NULL;
        if (i == 0 && v.index_ne0_delta) {
            ne[0] = n + v.index_ne0_delta;
            tmp = calloc((size_t)(2 * ne[0]), sizeof *tmp);
            for (int64_t k = 0; k < n && k < ne[0]; k++) {
                tmp[k] = loc[k];
                tmp[ne[0] + k] = loc[n + k];
            }
            loc = tmp;
        }
        rc |= sp_gguf_writer_add_tensor(w, tn, SP_TENSOR_I32, 2, ne, loc);
        free(tmp);
    }
    char err[256] = "";
    if (!rc) rc = sp_gguf_writer_write(w, path, err, sizeof err);
    if (rc) fprintf(stderr, "write_adapter(%s) failed: %s\n", path, err);
    sp_gguf_writer_free(w);
    return rc;
}

/* ---- references ------------------------------------------------------------ */

/* delta[p][q] = scaling / (R C) * sum_k s_k cos(2 pi (r_k p / R + c_k q / C)), in float64. */
static double *direct_delta(const target *t, double scaling) {
    const int64_t R = t->rows, C = t->cols;
    double *d = calloc((size_t)(R * C), sizeof *d);
    for (int64_t k = 0; k < t->n; k++) {
        const int64_t r = t->loc[k], c = t->loc[t->n + k];
        for (int64_t p = 0; p < R; p++)
            for (int64_t q = 0; q < C; q++) {
                /* reduce the phase exactly in integers first */
                const double ph = (double)((r * p) % R) / (double)R + (double)((c * q) % C) / (double)C;
                d[p * C + q] += t->spec[k] * cos(2.0 * M_PI * ph);
            }
    }
    for (int64_t i = 0; i < R * C; i++) d[i] *= scaling / (double)(R * C);
    return d;
}

static const float *encode_states(spectral_context *ctx, const int32_t *tok, int64_t T) {
    if (spectral_encode(ctx, tok, T) != SPECTRAL_OK) return NULL;
    int64_t n = 0;
    return spectral_get_token_states(ctx, &n);
}

static double max_rel_diff(const float *a, const float *b, int64_t n) {
    double m = 0, r = 0;
    for (int64_t i = 0; i < n; i++) {
        m = fmax(m, fabs((double)a[i] - b[i]));
        r = fmax(r, fabs((double)b[i]));
    }
    return r > 0 ? m / r : m;
}

/* ---- unit tests ------------------------------------------------------------- */

/* A plain context encoding over and over on one thread while another thread
 * loads adapters and sets them on a second context of the same model. */
typedef struct {
    spectral_context *ctx;
    const int32_t *tok;
    int64_t T;
    const float *base;
    size_t bytes;
    int mismatches;
} plain_job;

static void *plain_loop(void *p) {
    plain_job *j = p;
    for (int i = 0; i < 30; i++) {
        const float *st = encode_states(j->ctx, j->tok, j->T);
        if (!st || memcmp(st, j->base, j->bytes)) j->mismatches++;
    }
    return NULL;
}

static char dir[256], model_path[300], model2_path[300], ad_path[300], bad_path[300];

static void expect_refused(spectral_model *m, const char *what, spectral_status want, const char *msg) {
    spectral_adapter *a = NULL;
    spectral_status s = spectral_adapter_load(m, bad_path, &a);
    CHECK(s == want && a == NULL && strstr(spectral_last_error(), msg),
          "%s: status %d (want %d), message '%s' (want '%s')", what, (int)s, (int)want,
          spectral_last_error(), msg);
    spectral_adapter_free(a);
}

static void test_refusals(spectral_model *m, target *t, int nt) {
    variant v;
#define BAD(what, status, msg, ...)                                             \
    do {                                                                        \
        v = (variant){__VA_ARGS__};                                             \
        CHECK(write_adapter(bad_path, t, nt, 2.0f, v) == 0, "writing %s", what); \
        expect_refused(m, what, status, msg);                                   \
    } while (0)
    BAD("other architecture", SPECTRAL_ERR_MODEL, "is for architecture 'fnet', the model is 'spectralmlp'",
        .arch = "fnet");
    BAD("no general.type", SPECTRAL_ERR_MODEL, "not an adapter", .gtype = "");
    BAD("a model, not an adapter", SPECTRAL_ERR_MODEL, "not an adapter (general.type is 'model'", .gtype = "model");
    BAD("lora", SPECTRAL_ERR_MODEL, "adapter.type 'lora' is not supported", .atype = "lora");
    BAD("no scaling", SPECTRAL_ERR_FORMAT, "adapter.fourierft.scaling", .no_scaling = 1);
    BAD("other shape", SPECTRAL_ERR_MODEL, "but the model's is 64 x 32: not the base model",
        .shape_rows0 = 65);
    BAD("indices count", SPECTRAL_ERR_FORMAT, "must be I32 of shape [40, 2]", .index_ne0_delta = -1);
    BAD("tensors not listed", SPECTRAL_ERR_FORMAT, "4 tensors for 1 targets", .list_only_first = 1);
    v = (variant){0};

    /* per-value problems, one at a time on a copy of target 0 */
    target c = t[0];
    int32_t *loc = malloc((size_t)(2 * c.n) * sizeof *loc);
    float *spec = malloc((size_t)c.n * sizeof *spec);
    c.loc = loc;
    c.spec = spec;
    target both[2] = {c, t[1]};
    struct {
        const char *what, *msg;
        int k, field; /* field 0: row, 1: column, 2: coefficient, 3: duplicate of location 0 */
        double value;
    } cases[] = {
        {"row out of range", "location 5 is (64, ", 5, 0, 64},
        {"negative column", "outside the 64 x 32 matrix", 7, 1, -1},
        {"column out of range", "outside the 64 x 32 matrix", 0, 1, 32},
        {"duplicate location", "appears twice", 9, 3, 0},
        {"NaN coefficient", "coefficient 3 is not finite", 3, 2, NAN},
        {"infinite coefficient", "is not finite", 4, 2, INFINITY},
    };
    /* coefficients finite one by one, whose delta overflows float32 */
    memcpy(loc, t[0].loc, (size_t)(2 * c.n) * sizeof *loc);
    for (int64_t k = 0; k < c.n; k++) spec[k] = 3e38f;
    CHECK(write_adapter(bad_path, both, 2, 2.0f, v) == 0, "writing");
    expect_refused(m, "overflowing delta", SPECTRAL_ERR_FORMAT, "overflows float32");
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        memcpy(loc, t[0].loc, (size_t)(2 * c.n) * sizeof *loc);
        memcpy(spec, t[0].spec, (size_t)c.n * sizeof *spec);
        const int k = cases[i].k;
        if (cases[i].field == 0) loc[k] = (int32_t)cases[i].value;
        if (cases[i].field == 1) loc[c.n + k] = (int32_t)cases[i].value;
        if (cases[i].field == 2) spec[k] = (float)cases[i].value;
        if (cases[i].field == 3) loc[k] = loc[0], loc[c.n + k] = loc[c.n];
        CHECK(write_adapter(bad_path, both, 2, 2.0f, v) == 0, "writing %s", cases[i].what);
        expect_refused(m, cases[i].what, SPECTRAL_ERR_FORMAT, cases[i].msg);
    }
    /* a target the model does not have */
    c = t[0];
    c.name = "blk.7.ffn_up.weight";
    CHECK(write_adapter(bad_path, &c, 1, 2.0f, v) == 0, "writing");
    expect_refused(m, "missing target", SPECTRAL_ERR_MODEL,
                   "targets tensor blk.7.ffn_up.weight, which the spectralmlp model does not have");
    c.name = "blk.0.mix_norm.weight"; /* exists, but is not 64 x 32 */
    CHECK(write_adapter(bad_path, &c, 1, 2.0f, v) == 0, "writing");
    expect_refused(m, "vector target", SPECTRAL_ERR_MODEL, "not the base model");
    /* the mixing filter [2, K, D]: its values line up as 256 x 2, but it is 3-D,
     * which is the reason to give (it said "made for 256 x 2, but the model's is 256 x 2") */
    target filt = make_target("blk.0.mix_filter.weight", 8 * 32, 2, 10);
    CHECK(write_adapter(bad_path, &filt, 1, 2.0f, v) == 0, "writing");
    expect_refused(m, "3-D target", SPECTRAL_ERR_MODEL, "blk.0.mix_filter.weight is a 3-D tensor [2, 8, 32]");
    free_target(&filt);
    free(loc);
    free(spec);

    /* not a GGUF file, a truncated one, none at all, the model itself */
    FILE *f = fopen(bad_path, "wb");
    fputs("not a gguf file at all", f);
    fclose(f);
    expect_refused(m, "garbage", SPECTRAL_ERR_FORMAT, bad_path);
    f = fopen(ad_path, "rb");
    char buf[200];
    size_t got = fread(buf, 1, sizeof buf, f);
    fclose(f);
    f = fopen(bad_path, "wb");
    fwrite(buf, 1, got, f);
    fclose(f);
    expect_refused(m, "truncated", SPECTRAL_ERR_FORMAT, bad_path);
    unlink(bad_path);
    expect_refused(m, "no file", SPECTRAL_ERR_IO, "cannot open adapter");
    spectral_adapter *a = NULL;
    CHECK(spectral_adapter_load(m, model_path, &a) == SPECTRAL_ERR_MODEL &&
              strstr(spectral_last_error(), "not an adapter"),
          "the model loaded as an adapter: %s", spectral_last_error());
    CHECK(spectral_adapter_load(m, dir, &a) == SPECTRAL_ERR_IO, "a directory: %s", spectral_last_error());
    CHECK(spectral_adapter_load(NULL, ad_path, &a) == SPECTRAL_ERR_INVALID_ARGUMENT, "NULL model");
#undef BAD
}

static int run_unit_tests(void) {
    snprintf(dir, sizeof dir, "/tmp/test_adapter_XXXXXX");
    if (!mkdtemp(dir)) {
        perror("mkdtemp");
        return 1;
    }
    snprintf(model_path, sizeof model_path, "%s/model.gguf", dir);
    snprintf(model2_path, sizeof model2_path, "%s/model2.gguf", dir);
    snprintf(ad_path, sizeof ad_path, "%s/adapter.gguf", dir);
    snprintf(bad_path, sizeof bad_path, "%s/bad.gguf", dir);
    const int64_t D = 32, F = 64;
    if (write_tiny_model(model_path, D, F, 8, 2, 7u) || write_tiny_model(model2_path, D, F, 8, 2, 8u))
        return 1;
    target t[2] = {make_target("blk.0.ffn_up.weight", F, D, 40),
                   make_target("blk.1.ffn_down.weight", D, F, 64)};
    const float scaling = 3.0f;
    if (write_adapter(ad_path, t, 2, scaling, (variant){0})) return 1;

    spectral_model *m = NULL, *m2 = NULL;
    spectral_adapter *a = NULL, *a2 = NULL;
    CHECK(spectral_model_load(model_path, spectral_model_default_params(), &m) == SPECTRAL_OK, "%s",
          spectral_last_error());
    CHECK(spectral_model_load(model2_path, spectral_model_default_params(), &m2) == SPECTRAL_OK, "%s",
          spectral_last_error());
    CHECK(spectral_adapter_load(m, ad_path, &a) == SPECTRAL_OK, "%s", spectral_last_error());
    CHECK(spectral_adapter_load(m2, ad_path, &a2) == SPECTRAL_OK, "%s", spectral_last_error());
    if (!m || !m2 || !a || !a2) return 1;
    CHECK(spectral_adapter_n_targets(a) == 2, "n_targets %d", (int)spectral_adapter_n_targets(a));
    CHECK(!strcmp(spectral_adapter_name(a), "test adapter"), "name '%s'", spectral_adapter_name(a));

    /* delta_W (single-precision FFT) against the float64 direct sum */
    for (int i = 0; i < 2; i++) {
        const char *name;
        int64_t R, C;
        const float *d = sp_adapter_delta(a, i, &name, &R, &C);
        double *ref = direct_delta(&t[i], scaling);
        double err = 0, mx = 0;
        for (int64_t j = 0; j < R * C; j++) {
            err = fmax(err, fabs(d[j] - ref[j]));
            mx = fmax(mx, fabs(ref[j]));
        }
        printf("delta_W %s (%lld x %lld, n = %lld): max |fft - direct| / max |direct| = %.3g\n", name,
               (long long)R, (long long)C, (long long)t[i].n, err / mx);
        CHECK(!strcmp(name, t[i].name) && R == t[i].rows && C == t[i].cols, "target %d", i);
        CHECK(err <= 1e-6 * mx, "delta_W of %s off by %.3g (max %.3g)", name, err, mx);
        free(ref);
    }

    /* contexts of one model: with and without the adapter */
    const int64_t T = 37;
    int32_t tok[37];
    for (int64_t i = 0; i < T; i++) tok[i] = (int32_t)(rnd() % 256);
    spectral_context_params cp = spectral_context_default_params();
    cp.n_threads = 2;
    cp.pooling = SPECTRAL_POOLING_NONE;
    spectral_context *plain = NULL, *ad = NULL, *other = NULL;
    CHECK(spectral_context_create(m, cp, &plain) == SPECTRAL_OK, "%s", spectral_last_error());
    CHECK(spectral_context_create(m, cp, &ad) == SPECTRAL_OK, "%s", spectral_last_error());
    CHECK(spectral_context_create(m2, cp, &other) == SPECTRAL_OK, "%s", spectral_last_error());
    if (!plain || !ad || !other) return 1;
    const size_t bytes = (size_t)(T * D) * sizeof(float);
    float *base = malloc(bytes), *with = malloc(bytes), *tmp = malloc(bytes);
    memcpy(base, encode_states(plain, tok, T), bytes);

    const float one = 1.0f;
    CHECK(spectral_context_set_adapters(ad, &a, &one, 1) == SPECTRAL_OK, "%s", spectral_last_error());
    memcpy(with, encode_states(ad, tok, T), bytes);
    const double moved = max_rel_diff(with, base, T * D);
    printf("the adapter moves the token states by %.3g (max abs diff / max abs)\n", moved);
    CHECK(moved > 1e-3, "the adapter changed nothing (%.3g)", moved);
    CHECK(!memcmp(encode_states(plain, tok, T), base, bytes), "the plain context changed");
    /* the adapter may be freed once set: the context keeps its merged copy */
    spectral_adapter *a_again = NULL;
    CHECK(spectral_adapter_load(m, ad_path, &a_again) == SPECTRAL_OK, "%s", spectral_last_error());
    spectral_adapter_free(a);
    a = a_again;
    CHECK(!memcmp(encode_states(ad, tok, T), with, bytes), "freeing the adapter changed the context");
    /* the same adapter twice at 0.5 adds up to the adapter at 1 (up to rounding) */
    spectral_adapter *two[2] = {a, a};
    const float halves[2] = {0.5f, 0.5f};
    CHECK(spectral_context_set_adapters(ad, two, halves, 2) == SPECTRAL_OK, "%s", spectral_last_error());
    double e = max_rel_diff(encode_states(ad, tok, T), with, T * D);
    CHECK(e < 1e-5, "0.5 + 0.5 vs 1: %.3g", e);
    /* scale 0 is exactly the base; n = 0 restores the base */
    const float zero = 0.0f;
    CHECK(spectral_context_set_adapters(ad, &a, &zero, 1) == SPECTRAL_OK, "%s", spectral_last_error());
    CHECK(!memcmp(encode_states(ad, tok, T), base, bytes), "scale 0 is not the base");
    CHECK(spectral_context_set_adapters(ad, &a, &one, 1) == SPECTRAL_OK, "%s", spectral_last_error());
    CHECK(!memcmp(encode_states(ad, tok, T), with, bytes), "setting again is not reproducible");
    /* refused sets leave the previous one */
    const float nan = NAN;
    CHECK(spectral_context_set_adapters(ad, &a, &nan, 1) == SPECTRAL_ERR_INVALID_ARGUMENT &&
              strstr(spectral_last_error(), "non-finite scale"),
          "NaN scale: %s", spectral_last_error());
    CHECK(spectral_context_set_adapters(ad, &a2, &one, 1) == SPECTRAL_ERR_INVALID_ARGUMENT &&
              strstr(spectral_last_error(), "another model"),
          "adapter of another model: %s", spectral_last_error());
    CHECK(spectral_context_set_adapters(ad, NULL, &one, 1) == SPECTRAL_ERR_INVALID_ARGUMENT, "NULL list");
    CHECK(spectral_context_set_adapters(ad, &a, &one, -1) == SPECTRAL_ERR_INVALID_ARGUMENT, "n < 0");
    CHECK(spectral_context_set_adapters(NULL, &a, &one, 1) == SPECTRAL_ERR_INVALID_ARGUMENT, "NULL ctx");
    /* finite scales whose merge overflows float32 (issue 21, item 7): an
     * adapter file's scaling 1e30, set at 1e30, is refused by the set (one
     * that overflows only in the forward pass fails its documents:
     * test_runtime's test_nonfinite_output, test_cli's adapter at 1e30) */
    char big_path[320];
    snprintf(big_path, sizeof big_path, "%s/big.gguf", dir);
    spectral_adapter *big = NULL;
    const float huge = 1e30f;
    CHECK(write_adapter(big_path, t, 2, 1e30f, (variant){0}) == 0 && spectral_adapter_load(m, big_path, &big) == SPECTRAL_OK,
          "%s", spectral_last_error());
    CHECK(spectral_context_set_adapters(ad, &big, &huge, 1) == SPECTRAL_ERR_INVALID_ARGUMENT &&
              strstr(spectral_last_error(), "overflows"),
          "merge overflows: %s", spectral_last_error());
    spectral_adapter_free(big);
    CHECK(!memcmp(encode_states(ad, tok, T), with, bytes), "a refused set changed the context");
    /* the same adapter file on another model (same shapes) works there, independently */
    CHECK(spectral_context_set_adapters(other, &a2, &one, 1) == SPECTRAL_OK, "%s", spectral_last_error());
    CHECK(encode_states(other, tok, T) != NULL, "%s", spectral_last_error());
    CHECK(spectral_context_set_adapters(ad, NULL, NULL, 0) == SPECTRAL_OK, "%s", spectral_last_error());
    CHECK(!memcmp(encode_states(ad, tok, T), base, bytes), "n = 0 did not restore the base");
    /* packed batches see the adapter too */
    CHECK(spectral_context_set_adapters(ad, &a, &one, 1) == SPECTRAL_OK, "%s", spectral_last_error());
    const int32_t *docs[2] = {tok, tok};
    const int64_t lens[2] = {T, T};
    CHECK(spectral_encode_batch(ad, docs, lens, 2, NULL, NULL) == SPECTRAL_OK, "%s", spectral_last_error());
    int64_t n = 0;
    const float *last = spectral_get_token_states(ad, &n);
    CHECK(n == T && last && !memcmp(last, with, bytes), "batched encode differs with the adapter");
    memcpy(tmp, encode_states(plain, tok, T), bytes);
    CHECK(!memcmp(tmp, base, bytes), "the plain context changed at the end");

    /* concurrently: the plain context never sees another context's adapters */
    plain_job job = {plain, tok, T, base, bytes, 0};
    pthread_t th;
    CHECK(pthread_create(&th, NULL, plain_loop, &job) == 0, "pthread_create");
    for (int i = 0; i < 10; i++) {
        spectral_adapter *x = NULL;
        CHECK(spectral_adapter_load(m, ad_path, &x) == SPECTRAL_OK, "%s", spectral_last_error());
        const float sc = (float)i / 4.0f;
        CHECK(spectral_context_set_adapters(ad, &x, &sc, 1) == SPECTRAL_OK, "%s", spectral_last_error());
        CHECK(encode_states(ad, tok, T) != NULL, "%s", spectral_last_error());
        spectral_adapter_free(x);
    }
    pthread_join(th, NULL);
    CHECK(job.mismatches == 0, "the plain context changed %d times while adapters were set elsewhere",
          job.mismatches);

    test_refusals(m, t, 2);

    spectral_context_free(plain);
    spectral_context_free(ad); /* frees its merged weights; the adapter is still loaded */
    spectral_context_free(other);
    spectral_adapter_free(a);
    spectral_adapter_free(a2);
    spectral_model_free(m);
    spectral_model_free(m2);
    free(base);
    free(with);
    free(tmp);
    free_target(&t[0]);
    free_target(&t[1]);
    unlink(model_path);
    unlink(model2_path);
    unlink(ad_path);
    rmdir(dir);
    return check_report("test_adapter");
}

/* ---- dump -------------------------------------------------------------------- */

static int run_dump(int argc, char **argv) {
    if (argc < 4) return 2;
    spectral_context_params cp = spectral_context_default_params();
    cp.pooling = SPECTRAL_POOLING_NONE;
    cp.n_threads = 2;
    spectral_adapter *ads[8];
    float scales[8];
    int n_ad = 0;
    const char *paths[8];
    for (int i = 4; i < argc; i++) {
        if (!strcmp(argv[i], "--pooled")) {
            cp.pooling = SPECTRAL_POOLING_CLS;
            cp.normalize = false;
        } else if (!strcmp(argv[i], "--backend") && i + 1 < argc) {
            const char *be = argv[++i];
            if (!strcmp(be, "cuda")) cp.backend = SPECTRAL_BACKEND_CUDA;
            else if (strcmp(be, "cpu")) return 2;
            if (cp.backend == SPECTRAL_BACKEND_CUDA && !spectral_backend_available(SPECTRAL_BACKEND_CUDA)) {
                fprintf(stderr, "test_adapter dump: CUDA is not available\n");
                return 77;
            }
        } else if (!strcmp(argv[i], "--adapter") && i + 1 < argc && n_ad < 8) {
            char *p = argv[++i], *colon = strrchr(p, ':');
            scales[n_ad] = 1.0f;
            if (colon) {
                scales[n_ad] = strtof(colon + 1, NULL);
                *colon = 0;
            }
            paths[n_ad++] = p;
        } else {
            return 2;
        }
    }
    int32_t *ids = NULL;
    int64_t T = test_read_ids(argv[3], &ids);
    spectral_model *m = NULL;
    spectral_context *ctx = NULL;
    spectral_status s = T > 0 ? spectral_model_load(argv[2], spectral_model_default_params(), &m)
                              : SPECTRAL_ERR_IO;
    int loaded = 0;
    for (; s == SPECTRAL_OK && loaded < n_ad; loaded++)
        s = spectral_adapter_load(m, paths[loaded], &ads[loaded]);
    if (s == SPECTRAL_OK) s = spectral_context_create(m, cp, &ctx);
    if (s == SPECTRAL_OK && n_ad) s = spectral_context_set_adapters(ctx, ads, scales, n_ad);
    if (s == SPECTRAL_OK) s = spectral_encode(ctx, ids, T);
    int rc = 1;
    if (s != SPECTRAL_OK) {
        fprintf(stderr, "test_adapter dump: %s: %s\n", spectral_status_string(s), spectral_last_error());
    } else {
        const int64_t E = spectral_model_n_embd(m);
        int64_t n = 0;
        const float *v = spectral_get_token_states(ctx, &n);
        if (cp.pooling == SPECTRAL_POOLING_CLS) v = spectral_get_embedding(ctx), n = 1;
        printf("%lld %lld\n", (long long)n, (long long)E);
        for (int64_t t = 0; t < n; t++)
            for (int64_t d = 0; d < E; d++) printf("%.9g%c", v[t * E + d], d + 1 == E ? '\n' : ' ');
        rc = 0;
    }
    for (int i = 0; i < loaded; i++) spectral_adapter_free(ads[i]);
    spectral_context_free(ctx);
    spectral_model_free(m);
    free(ids);
    return rc;
}

/* ---- bench ------------------------------------------------------------------- */

static double now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static int run_bench(void) {
    char d[] = "/tmp/test_adapter_bench_XXXXXX";
    if (!mkdtemp(d)) return 1;
    char mp[128], ap[128];
    snprintf(mp, sizeof mp, "%s/m.gguf", d);
    snprintf(ap, sizeof ap, "%s/a.gguf", d);
    const int64_t shapes[2][2] = {{768, 768}, {3072, 768}};
    for (int s = 0; s < 2; s++) {
        const int64_t R = shapes[s][0], C = shapes[s][1], n = 1000;
        if (write_tiny_model(mp, C, R, 8, 1, 3u)) return 1; /* ffn_up is F x D = R x C */
        target t = make_target("blk.0.ffn_up.weight", R, C, n);
        write_adapter(ap, &t, 1, 1.0f, (variant){0});
        spectral_model *m = NULL;
        spectral_adapter *a = NULL;
        if (spectral_model_load(mp, spectral_model_default_params(), &m)) return 1;
        double t0 = now(), best_fft = 1e9;
        for (int rep = 0; rep < 3; rep++) {
            t0 = now();
            if (spectral_adapter_load(m, ap, &a)) return 1;
            best_fft = fmin(best_fft, now() - t0);
            spectral_adapter_free(a);
        }
        /* direct sum, float32 accumulation, phase tables precomputed: the
         * cheapest form of sum_k s_k cos(2 pi (r_k p / R + c_k q / C)) */
        float *out = calloc((size_t)(R * C), sizeof *out), *cq = malloc((size_t)C * sizeof *cq),
              *sq = malloc((size_t)C * sizeof *sq);
        t0 = now();
        for (int64_t k = 0; k < n; k++) {
            const int64_t r = t.loc[k], c = t.loc[n + k];
            for (int64_t q = 0; q < C; q++) {
                const double ph = 2.0 * M_PI * (double)((c * q) % C) / (double)C;
                cq[q] = (float)cos(ph);
                sq[q] = (float)sin(ph);
            }
            for (int64_t p = 0; p < R; p++) {
                const double ph = 2.0 * M_PI * (double)((r * p) % R) / (double)R;
                const float a_ = t.spec[k] * (float)cos(ph), b_ = t.spec[k] * (float)sin(ph);
                float *row = out + p * C;
                for (int64_t q = 0; q < C; q++) row[q] += a_ * cq[q] - b_ * sq[q];
            }
        }
        const double direct = now() - t0;
        printf("delta_W %lld x %lld, n = %lld: runtime FFT (whole spectral_adapter_load) %.1f ms, "
               "direct sum %.1f ms (%.0fx)\n",
               (long long)R, (long long)C, (long long)n, 1e3 * best_fft, 1e3 * direct, direct / best_fft);
        free(out);
        free(cq);
        free(sq);
        free_target(&t);
        spectral_model_free(m);
    }
    unlink(mp);
    unlink(ap);
    rmdir(d);
    return 0;
}

int main(int argc, char **argv) {
    if (argc >= 2 && !strcmp(argv[1], "dump")) return run_dump(argc, argv);
    if (argc >= 2 && !strcmp(argv[1], "bench")) return run_bench();
    if (argc != 1) {
        fprintf(stderr, "usage: test_adapter [dump MODEL IDS [--adapter F[:S]]... [--pooled] [--backend B] | bench]\n");
        return 2;
    }
    return run_unit_tests();
}
