/* The runtime around M2-BERT: the derived-table cache (runtime/tables.c),
 * padding to the model's length, and --mem-limit with both.
 *
 *   test_m2bert_runtime tests/data/m2bert/tiny
 *
 * The cache alone: the answers of a measure pass and of the run agree, a
 * budget is never exceeded, other lengths go first, a failed pass leaves
 * nothing behind. Through the API with the tiny fixture model (2 layers,
 * two filters each: four spectra of 128 positions): a second pass reuses
 * the spectra (same bits; the peak is the first pass's minus the scratch it
 * no longer needs, plus the four tables), a mem_limit equal to
 * spectral_context_memory_needed runs without any table and gives the same
 * bits, one byte less is refused, and padding costs what the model's
 * length costs; an adapter set after a pass (on a filter weight, which the
 * cached spectra derive from) gives what a fresh context with it gives. */
#define _POSIX_C_SOURCE 200809L /* mkstemp */
#include "spectral.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "check.h"
#include "formats/gguf.h"
#include "kernels/backend.h"
#include "models/model.h"
#include "runtime/arena.h"
#include "runtime/tables.h"

static void test_tables_unit(void) {
    char err[256];
    sp_backend *be = sp_backend_cpu_create(1, err, sizeof err);
    CHECK(be != NULL, "%s", err);
    if (!be) return;
    sp_tables *t = sp_tables_new(be);
    sp_arena a;
    sp_arena_init_measure(&a);
    a.tables = t;
    int fill[3];
    void *m[3], *r[3];
    sp_tables_set_budget(t, 10, 1000);
    /* measure: two of 400 fit the budget, the third does not */
    sp_tables_begin(t, 10, 1);
    for (int i = 0; i < 3; i++) m[i] = sp_arena_table(&a, 10, i, 400, &fill[i]);
    CHECK(m[0] && m[1] && !m[2] && fill[0] && fill[1]);
    CHECK(!sp_arena_table(&a, 11, 0, 400, &fill[0]), "another length than the pass's");
    sp_tables_end(t, 1);
    CHECK(sp_tables_resident(t) == 0, "measure mode allocated");
    /* the run answers the same, with real buffers */
    char mem[64];
    sp_arena_init(&a, mem, sizeof mem);
    a.tables = t;
    sp_tables_begin(t, 10, 0);
    for (int i = 0; i < 3; i++) r[i] = sp_arena_table(&a, 10, i, 400, &fill[i]);
    CHECK(r[0] && r[1] && !r[2] && fill[0] && fill[1]);
    sp_tables_end(t, 1);
    CHECK(sp_tables_resident(t) == 800);
    /* the next pass at that length finds them */
    sp_tables_begin(t, 10, 0);
    void *h0 = sp_arena_table(&a, 10, 0, 400, &fill[0]);
    CHECK(h0 == r[0] && fill[0] == 0, "not a hit");
    void *h1 = sp_arena_table(&a, 10, 1, 400, &fill[1]);
    CHECK(h1 == r[1] && fill[1] == 0);
    sp_tables_end(t, 1);
    /* another length: the old tables make room */
    sp_tables_begin(t, 20, 0);
    void *n0 = sp_arena_table(&a, 20, 0, 600, &fill[0]);
    CHECK(n0 && fill[0] == 1 && sp_tables_resident(t) <= 1000, "resident %zu", sp_tables_resident(t));
    sp_tables_end(t, 1);
    CHECK(sp_tables_resident(t) == 1000, "resident %zu", sp_tables_resident(t));
    /* a failed pass leaves nothing it reserved */
    sp_tables_set_budget(t, 30, 1000);
    sp_tables_begin(t, 30, 0);
    CHECK(sp_arena_table(&a, 30, 0, 500, &fill[0]) && fill[0] == 1);
    sp_tables_end(t, 0);
    sp_tables_begin(t, 30, 0);
    CHECK(sp_arena_table(&a, 30, 0, 500, &fill[0]) && fill[0] == 1, "a failed pass's table was kept");
    sp_tables_end(t, 1);
    /* a lower budget trims at once */
    sp_tables_set_budget(t, 30, 100);
    CHECK(sp_tables_resident(t) == 0, "resident %zu over a budget of 100", sp_tables_resident(t));
    sp_tables_free(t);
    be->ops->destroy(be);
}

typedef struct {
    spectral_context *ctx;
    float emb[64];
    float *states;
    int64_t n;
} run;

static spectral_status encode(spectral_model *model, size_t mem_limit, int no_pad, const int32_t *ids,
                              int64_t n, int passes, run *out) {
    spectral_context_params cp = spectral_context_default_params();
    cp.n_threads = 2;
    cp.mem_limit = mem_limit ? mem_limit : SPECTRAL_MEM_UNLIMITED; /* 0: no cap */
    cp.no_pad = no_pad;
    cp.pooling = SPECTRAL_POOLING_CLS;
    memset(out, 0, sizeof *out);
    spectral_status s = spectral_context_create(model, cp, &out->ctx);
    for (int p = 0; p < passes && s == SPECTRAL_OK; p++) s = spectral_encode(out->ctx, ids, n);
    /* zeros when the encode failed, so the comparisons after it fail instead of crashing */
    out->states = calloc(128 * 64, sizeof(float));
    if (s == SPECTRAL_OK && out->states) {
        memcpy(out->emb, spectral_get_embedding(out->ctx), sizeof out->emb);
        const float *st = spectral_get_token_states(out->ctx, &out->n);
        memcpy(out->states, st, (size_t)(out->n < 128 ? out->n : 128) * 64 * sizeof(float));
    }
    return s;
}

static void done(run *r) {
    spectral_context_free(r->ctx);
    free(r->states);
}

/* A FourierFT adapter (docs/adapters.md) on blk.0.hyena.fwd_out.weight
 * (64 x 16) of the tiny model: three coefficients. */
static int write_filter_adapter(const char *path) {
    sp_gguf_writer *w = sp_gguf_writer_new();
    if (!w) return -1;
    const char *target = "blk.0.hyena.fwd_out.weight";
    const uint32_t shapes[2] = {64, 16};
    const float spec[3] = {40.0f, -25.0f, 30.0f};
    const int32_t loc[6] = {1, 5, 60, 2, 9, 15}; /* rows, then columns */
    int rc = sp_gguf_writer_set_str(w, "general.architecture", "m2bert");
    rc |= sp_gguf_writer_set_str(w, "general.type", "adapter");
    rc |= sp_gguf_writer_set_str(w, "adapter.type", "fourierft");
    rc |= sp_gguf_writer_set_f32(w, "adapter.fourierft.scaling", 1.0f);
    rc |= sp_gguf_writer_set_i64(w, "adapter.fourierft.random_loc_seed", 1);
    rc |= sp_gguf_writer_set_arr_str(w, "adapter.fourierft.targets", &target, 1);
    rc |= sp_gguf_writer_set_arr(w, "adapter.fourierft.shapes", SP_GGUF_TYPE_UINT32, shapes, 2);
    int64_t ne[2] = {3, 1};
    rc |= sp_gguf_writer_add_tensor(w, "blk.0.hyena.fwd_out.weight.fourierft_spectrum", SP_TENSOR_F32, 1,
                                    ne, spec);
    ne[1] = 2;
    rc |= sp_gguf_writer_add_tensor(w, "blk.0.hyena.fwd_out.weight.fourierft_indices", SP_TENSOR_I32, 2,
                                    ne, loc);
    char err[256];
    if (!rc) rc = sp_gguf_writer_write(w, path, err, sizeof err);
    sp_gguf_writer_free(w);
    return rc;
}

static void test_adapter_on_filter(spectral_model *model, const int32_t *ids, int64_t n) {
    char path[] = "/tmp/m2bert-adapter-XXXXXX";
    const int fd = mkstemp(path);
    if (fd < 0 || write_filter_adapter(path)) {
        CHECK(0, "cannot write the adapter");
        return;
    }
    close(fd);
    spectral_adapter *ad = NULL;
    if (spectral_adapter_load(model, path, &ad)) {
        CHECK(0, "adapter: %s", spectral_last_error());
        unlink(path);
        return;
    }
    unlink(path);
    const float scale = 1.0f;
    run base, later, fresh;
    /* a pass without it (the spectra cached), then with it */
    CHECK(encode(model, 0, 0, ids, n, 1, &base) == SPECTRAL_OK);
    CHECK(spectral_context_set_adapters(base.ctx, &ad, &scale, 1) == SPECTRAL_OK);
    CHECK(spectral_encode(base.ctx, ids, n) == SPECTRAL_OK);
    const float *e = spectral_get_embedding(base.ctx);
    memset(later.emb, 0, sizeof later.emb);
    if (e) memcpy(later.emb, e, sizeof later.emb);
    /* with it from the start */
    spectral_context_params cp = spectral_context_default_params();
    cp.n_threads = 2;
    cp.pooling = SPECTRAL_POOLING_CLS;
    CHECK(spectral_context_create(model, cp, &fresh.ctx) == SPECTRAL_OK);
    CHECK(spectral_context_set_adapters(fresh.ctx, &ad, &scale, 1) == SPECTRAL_OK);
    CHECK(spectral_encode(fresh.ctx, ids, n) == SPECTRAL_OK);
    const float *fe = spectral_get_embedding(fresh.ctx);
    CHECK(fe && !memcmp(later.emb, fe, sizeof later.emb),
          "an adapter set after a pass used the filters' spectra of the base weights");
    CHECK(memcmp(later.emb, base.emb, sizeof base.emb) != 0, "the adapter changed nothing");
    fresh.states = NULL;
    done(&base);
    done(&fresh);
    spectral_adapter_free(ad);
}

static void test_api(const char *dir) {
    char path[1024];
    snprintf(path, sizeof path, "%s/model.gguf", dir);
    spectral_model *model = NULL;
    if (spectral_model_load(path, spectral_model_default_params(), &model)) {
        CHECK(0, "load %s: %s", path, spectral_last_error());
        return;
    }
    CHECK(spectral_model_max_tokens(model) == 128 && !strcmp(spectral_model_arch(model), "m2bert"));
    const int32_t ids[7] = {2, 299, 17, 40, 5, 6, 3};
    char err[256];
    sp_backend *be = sp_backend_cpu_create(1, err, sizeof err);
    const size_t S = be->ops->hyena_spectrum_size(be, 128, 64); /* one filter's table */
    be->ops->destroy(be);

    run one, two, fit, own;
    CHECK(encode(model, 0, 0, ids, 7, 1, &one) == SPECTRAL_OK, "%s", spectral_last_error());
    const size_t need = spectral_context_memory_needed(one.ctx, 7);
    CHECK(need == spectral_context_memory_needed(one.ctx, 128), "padding: 7 tokens cost what 128 do");
    CHECK(one.n == 7, "token states for the real tokens only (%lld rows)", (long long)one.n);
    /* the first pass kept all four tables instead of two in scratch */
    CHECK(spectral_context_peak_memory(one.ctx) == need + 2 * S, "peak %zu, need %zu, table %zu",
          spectral_context_peak_memory(one.ctx), need, S);
    CHECK(encode(model, 0, 0, ids, 7, 2, &two) == SPECTRAL_OK);
    CHECK(!memcmp(one.emb, two.emb, sizeof one.emb) && !memcmp(one.states, two.states, 7 * 64 * 4),
          "a pass from cached tables differs");
    CHECK(spectral_context_peak_memory(two.ctx) == need + 2 * S);
    /* exactly the working memory: no room for tables, the same bits */
    CHECK(encode(model, need, 0, ids, 7, 2, &fit) == SPECTRAL_OK, "%s", spectral_last_error());
    CHECK(!memcmp(one.emb, fit.emb, sizeof one.emb), "the uncached pass differs");
    CHECK(spectral_context_peak_memory(fit.ctx) <= need);
    /* a limit that holds two of the four tables: still the same */
    done(&fit);
    CHECK(encode(model, need + 2 * S, 0, ids, 7, 3, &fit) == SPECTRAL_OK, "%s", spectral_last_error());
    CHECK(!memcmp(one.emb, fit.emb, sizeof one.emb), "the partly cached pass differs");
    CHECK(spectral_context_peak_memory(fit.ctx) <= need + 2 * S);
    done(&fit);
    run under;
    CHECK(encode(model, need - 1, 0, ids, 7, 1, &under) == SPECTRAL_ERR_MEMORY_LIMIT,
          "one byte under the need: %s", spectral_last_error());
    done(&under);
    /* the document's own length: less memory, another embedding */
    CHECK(encode(model, 0, 1, ids, 7, 1, &own) == SPECTRAL_OK);
    CHECK(spectral_context_memory_needed(own.ctx, 7) < need);
    CHECK(memcmp(one.emb, own.emb, sizeof one.emb) != 0, "no_pad gave the padded embedding");
    done(&one);
    done(&two);
    done(&own);
    test_adapter_on_filter(model, ids, 7);
    /* bf16 runs the two projections packed in bfloat16: close to float32, not equal */
    spectral_context_params cp = spectral_context_default_params();
    cp.dtype = SPECTRAL_DTYPE_BF16;
    cp.pooling = SPECTRAL_POOLING_CLS;
    spectral_context *bf16 = NULL;
    if (spectral_context_create(model, cp, &bf16) == SPECTRAL_OK && spectral_encode(bf16, ids, 7) == SPECTRAL_OK) {
        const float *e = spectral_get_embedding(bf16);
        double dot = 0, n1 = 0, n2 = 0;
        for (int i = 0; i < 64; i++) {
            dot += (double)e[i] * one.emb[i];
            n1 += (double)e[i] * e[i];
            n2 += (double)one.emb[i] * one.emb[i];
        }
        const double cos = dot / sqrt(n1 * n2);
        CHECK(cos >= 0.999 && memcmp(e, one.emb, sizeof one.emb) != 0, "bf16 vs f32: cosine %.6f", cos);
        CHECK(spectral_context_weight_memory(bf16) > 0, "no packed weights in a bf16 context");
    } else {
        CHECK(0, "dtype bf16 on m2bert: %s", spectral_last_error());
    }
    spectral_context_free(bf16);
    spectral_model_free(model);
}

int main(int argc, char **argv) {
    if (argc < 2) {
        fprintf(stderr, "usage: test_m2bert_runtime DATA_DIR (tests/data/m2bert/tiny)\n");
        return 2;
    }
    test_tables_unit();
    test_api(argv[1]);
    return check_report("test_m2bert_runtime");
}
