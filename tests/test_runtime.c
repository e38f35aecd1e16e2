/* The runtime through the public API: arena limits, planning, errors,
 * batch streaming, and one model shared by contexts on several threads.
 * Numerical parity against numpy lives in tests/parity.py. */
#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#include "formats/gguf.h"
#include "runtime/arena.h"
#include "spectral.h"
#include "tiny_model.h"
#include "check.h"

static char model_path[256];

static int32_t *make_tokens(int64_t n, unsigned seed) {
    int32_t *t = malloc((size_t)n * sizeof *t);
    for (int64_t i = 0; i < n; i++) {
        seed = seed * 1103515245u + 12345u;
        t[i] = (int32_t)((seed >> 16) & 255);
    }
    return t;
}

static void test_arena_unit(void) {
    sp_arena m;
    sp_arena_init_measure(&m);
    void *a = sp_arena_alloc(&m, 10), *b = sp_arena_alloc(&m, 0), *c = sp_arena_alloc(&m, 300);
    CHECK(a && b && c && a != b && b != c, "measure mode hands out distinct placeholders");
    CHECK(m.used == 256 + 256 + 512, "measured %zu", m.used);

    static _Alignas(256) char buf[1024];
    sp_arena r;
    sp_arena_init(&r, buf, sizeof buf);
    CHECK(sp_arena_alloc(&r, 1000) == buf, "first block at the base");
    CHECK(sp_arena_alloc(&r, 24) == NULL, "a full arena refuses");
    sp_arena_reset(&r);
    CHECK(sp_arena_alloc(&r, 1024) == buf, "exact fit");
    CHECK(sp_arena_alloc(&r, 1) == NULL && r.failed, "one byte over fails");
    sp_arena_reset(&r);
    CHECK(sp_arena_alloc(&r, (size_t)-1) == NULL, "huge request fails without overflow");
}

static void test_memory_limit(spectral_model *model) {
    const int64_t T = 777;
    int32_t *tok = make_tokens(T, 7);
    spectral_context_params p = spectral_context_default_params();
    p.n_threads = 2;
    spectral_context *ctx = NULL;
    CHECK(spectral_context_create(model, p, &ctx) == SPECTRAL_OK, "%s", spectral_last_error());
    size_t need = spectral_context_memory_needed(ctx, T);
    CHECK(need > 0, "plan");
    CHECK(spectral_encode(ctx, tok, T) == SPECTRAL_OK, "%s", spectral_last_error());
    CHECK(spectral_context_peak_memory(ctx) == need, "peak %zu == plan %zu",
          spectral_context_peak_memory(ctx), need);
    float ref[64];
    memcpy(ref, spectral_get_embedding(ctx), sizeof(float) * (size_t)spectral_model_n_pooled(model));
    const size_t least = spectral_context_memory_minimum(ctx, T);
    CHECK(least > 0 && least < need, "one tile at a time needs less: %zu < %zu", least, need);
    spectral_context_free(ctx);

    /* exact fit succeeds */
    p.mem_limit = need;
    CHECK(spectral_context_create(model, p, &ctx) == SPECTRAL_OK, "%s", spectral_last_error());
    CHECK(spectral_encode(ctx, tok, T) == SPECTRAL_OK, "exact fit: %s", spectral_last_error());
    CHECK(spectral_context_peak_memory(ctx) <= need, "never past the cap");
    const float *e = spectral_get_embedding(ctx);
    CHECK(e && !memcmp(e, ref, sizeof(float) * (size_t)spectral_model_n_pooled(model)),
          "same result under a limit");
    spectral_context_free(ctx);

    /* below the full plan: fewer tiles in flight, same result bit for bit */
    const size_t limits[2] = {need - 1, least};
    for (int i = 0; i < 2; i++) {
        p.mem_limit = limits[i];
        CHECK(spectral_context_create(model, p, &ctx) == SPECTRAL_OK, "%s", spectral_last_error());
        CHECK(spectral_encode(ctx, tok, T) == SPECTRAL_OK, "limit %zu: %s", limits[i],
              spectral_last_error());
        CHECK(spectral_context_peak_memory(ctx) <= limits[i], "peak %zu within the cap %zu",
              spectral_context_peak_memory(ctx), limits[i]);
        e = spectral_get_embedding(ctx);
        CHECK(e && !memcmp(e, ref, sizeof(float) * (size_t)spectral_model_n_pooled(model)),
              "same result with fewer tiles in flight");
        if (i == 0) spectral_context_free(ctx);
    }
    /* a longer document no longer fits: refused with how much it needs */
    int32_t *tok2 = make_tokens(T + 100, 9);
    CHECK(spectral_encode(ctx, tok2, T + 100) == SPECTRAL_ERR_MEMORY_LIMIT, "longer doc refused");
    CHECK(strstr(spectral_last_error(), "needs") && strstr(spectral_last_error(), "limit"),
          "message says how much: %s", spectral_last_error());
    CHECK(spectral_get_embedding(ctx) == NULL, "no stale output after a failure");
    /* and the context still works afterwards */
    CHECK(spectral_encode(ctx, tok, T) == SPECTRAL_OK, "usable after refusal");
    /* the cap changed on a live context: lowered below its arena, the arena goes
     * (and with it the last outputs); raised again, the same bits come back */
    CHECK(spectral_context_set_mem_limit(ctx, 4096) == SPECTRAL_OK, "set_mem_limit");
    CHECK(spectral_get_embedding(ctx) == NULL, "outputs gone with the arena");
    CHECK(spectral_encode(ctx, tok, T) == SPECTRAL_ERR_MEMORY_LIMIT, "lowered cap refuses");
    CHECK(spectral_context_set_mem_limit(ctx, SPECTRAL_MEM_UNLIMITED) == SPECTRAL_OK, "no cap");
    CHECK(spectral_encode(ctx, tok, T) == SPECTRAL_OK && spectral_context_peak_memory(ctx) == need,
          "uncapped again: the full plan (%zu)", spectral_context_peak_memory(ctx));
    e = spectral_get_embedding(ctx);
    CHECK(e && !memcmp(e, ref, sizeof(float) * (size_t)spectral_model_n_pooled(model)), "same bits");
    CHECK(spectral_context_set_mem_limit(NULL, 1) == SPECTRAL_ERR_INVALID_ARGUMENT, "NULL context");
    /* a cap of 0 bytes (a caller's remainder that came out at 0) is a cap:
     * it refuses, it does not switch the cap off */
    CHECK(spectral_context_set_mem_limit(ctx, 0) == SPECTRAL_OK, "set_mem_limit 0");
    CHECK(spectral_encode(ctx, tok, T) == SPECTRAL_ERR_MEMORY_LIMIT, "a cap of 0 refuses");
    spectral_context_free(ctx);
    p.mem_limit = 0;
    CHECK(spectral_context_create(model, p, &ctx) == SPECTRAL_OK, "%s", spectral_last_error());
    CHECK(spectral_encode(ctx, tok, T) == SPECTRAL_ERR_MEMORY_LIMIT && spectral_context_peak_memory(ctx) == 0,
          "mem_limit 0 at creation refuses too");
    spectral_context_free(ctx);

    /* one byte short of the minimum fails cleanly */
    p.mem_limit = least - 1;
    CHECK(spectral_context_create(model, p, &ctx) == SPECTRAL_OK, "%s", spectral_last_error());
    CHECK(spectral_encode(ctx, tok, T) == SPECTRAL_ERR_MEMORY_LIMIT, "one byte short");
    CHECK(spectral_context_peak_memory(ctx) == 0, "nothing allocated when refused");
    spectral_context_free(ctx);
    free(tok);
    free(tok2);
}

static void test_bad_arguments(spectral_model *model) {
    spectral_context *ctx = NULL;
    spectral_context_params p = spectral_context_default_params();
    CHECK(spectral_context_create(model, p, &ctx) == SPECTRAL_OK, "%s", spectral_last_error());
    int32_t bad[3] = {1, 256, 3};
    CHECK(spectral_encode(ctx, bad, 3) == SPECTRAL_ERR_INVALID_ARGUMENT, "out-of-vocab id");
    CHECK(strstr(spectral_last_error(), "vocabulary"), "%s", spectral_last_error());
    bad[1] = -1;
    CHECK(spectral_encode(ctx, bad, 3) == SPECTRAL_ERR_INVALID_ARGUMENT, "negative id");
    CHECK(spectral_encode(ctx, bad, 0) == SPECTRAL_ERR_INVALID_ARGUMENT, "empty doc");
    CHECK(spectral_encode(ctx, NULL, 5) == SPECTRAL_ERR_INVALID_ARGUMENT, "NULL tokens");
    CHECK(spectral_encode(NULL, bad, 1) == SPECTRAL_ERR_INVALID_ARGUMENT, "NULL ctx");
    p.pooling = (spectral_pooling)42;
    spectral_context *c2 = NULL;
    CHECK(spectral_context_create(model, p, &c2) == SPECTRAL_ERR_INVALID_ARGUMENT && !c2,
          "bad pooling");
    p = spectral_context_default_params();
    p.backend = SPECTRAL_BACKEND_CUDA;
    if (!spectral_backend_available(SPECTRAL_BACKEND_CUDA)) {
        CHECK(spectral_context_create(model, p, &c2) != SPECTRAL_OK && !c2, "no CUDA here");
        CHECK(strstr(spectral_last_error(), "CUDA"), "%s", spectral_last_error());
    }
    spectral_context_free(ctx);

    spectral_model *m = NULL;
    CHECK(spectral_model_load("/nonexistent/model.gguf", spectral_model_default_params(), &m) ==
              SPECTRAL_ERR_IO && !m, "missing file");
    const char junk[] = "definitely not a gguf file";
    CHECK(spectral_model_load_from_memory(junk, sizeof junk, spectral_model_default_params(), &m) ==
              SPECTRAL_ERR_FORMAT && !m, "junk");

    int32_t tk[8];
    CHECK(spectral_tokenize(model, "hello", 5, NULL, 0) == 5, "count only");
    CHECK(spectral_tokenize(model, "hello", 5, tk, 3) == 5 && tk[0] == 'h' && tk[2] == 'l',
          "truncated fill");
    CHECK(spectral_tokenize(model, "\xff\x00", 2, tk, 8) == 2 && tk[0] == 255 && tk[1] == 0,
          "bytes");
    /* a text of whitespace alone has nothing to embed: no tokens, for every
     * tokenizer (the bytes one would give the spaces themselves) */
    const char *blank[] = {"", " ", "  \t\n\r\v\f ", "\xc2\xa0\xe3\x80\x80\xe2\x80\xa8\xc2\x85"};
    for (size_t i = 0; i < sizeof blank / sizeof blank[0]; i++)
        CHECK(spectral_tokenize(model, blank[i], strlen(blank[i]), tk, 8) == 0, "blank text %zu", i);
    CHECK(spectral_tokenize(model, " a ", 3, tk, 8) == 3 && tk[1] == 'a', "text around spaces");
    CHECK(spectral_tokenize(model, "\xc2", 1, tk, 8) == 1, "a stray byte is not blank");
}

/* Every entry point takes NULL handles without crashing: getters give 0 /
 * NULL / "" / UNSPECIFIED, calls with a status give INVALID_ARGUMENT. */
static void test_null_handles(void) {
    CHECK(spectral_model_arch(NULL) != NULL && !spectral_model_arch(NULL)[0], "arch");
    CHECK(spectral_model_name(NULL) != NULL && !spectral_model_name(NULL)[0], "name");
    CHECK(spectral_model_n_embd(NULL) == 0 && spectral_model_n_pooled(NULL) == 0 &&
              spectral_model_n_layer(NULL) == 0 && spectral_model_n_vocab(NULL) == 0 &&
              spectral_model_n_ctx_train(NULL) == 0 && spectral_model_max_tokens(NULL) == 0 &&
              spectral_model_n_params(NULL) == 0 && spectral_model_n_lexical(NULL) == 0 &&
              spectral_model_lexical_scale(NULL) == 0.0f && spectral_model_dense_prefixes(NULL, NULL, 0) == 0,
          "sizes of no model are 0");
    CHECK(spectral_model_pooling(NULL) == SPECTRAL_POOLING_UNSPECIFIED, "model pooling");
    CHECK(spectral_context_pooling(NULL) == SPECTRAL_POOLING_UNSPECIFIED, "context pooling");
    CHECK(spectral_tokenize(NULL, "a", 1, NULL, 0) == -1, "tokenize");
    CHECK(spectral_context_memory_needed(NULL, 10) == 0 && spectral_context_memory_minimum(NULL, 10) == 0 &&
              spectral_context_peak_memory(NULL) == 0,
          "memory");
    int64_t T = 7;
    CHECK(spectral_get_embedding(NULL) == NULL && spectral_get_token_states(NULL, &T) == NULL && T == 0,
          "outputs");
    CHECK(spectral_encode_batch(NULL, NULL, NULL, 0, NULL, NULL) == SPECTRAL_ERR_INVALID_ARGUMENT, "batch");
    CHECK(spectral_context_set_adapters(NULL, NULL, NULL, 0) == SPECTRAL_ERR_INVALID_ARGUMENT, "adapters");
    CHECK(spectral_adapter_n_targets(NULL) == 0 && !spectral_adapter_name(NULL)[0], "adapter getters");
    spectral_adapter *ad = NULL;
    CHECK(spectral_adapter_load(NULL, "x.gguf", &ad) == SPECTRAL_ERR_INVALID_ARGUMENT && !ad, "adapter load");
    spectral_context *c = NULL;
    CHECK(spectral_context_create(NULL, spectral_context_default_params(), &c) == SPECTRAL_ERR_INVALID_ARGUMENT &&
              !c,
          "context of no model");
    CHECK(spectral_model_quantize(NULL, NULL, NULL) == SPECTRAL_ERR_INVALID_ARGUMENT, "quantize");
    spectral_model_free(NULL);
    spectral_context_free(NULL);
    spectral_adapter_free(NULL);
}

/* ---- truncation, pieces, normalize switch ---- */
static void test_tokens_and_pieces(spectral_model *model) {
    spectral_tokenize_params tp = spectral_tokenize_default_params();
    CHECK(tp.add_special && tp.max_tokens == 0, "defaults: specials, no truncation");
    int32_t tk[8] = {0};
    tp.max_tokens = 3;
    CHECK(spectral_tokenize_with(model, "hello", 5, tp, NULL, 0) == 3, "truncated count");
    CHECK(spectral_tokenize_with(model, "hello", 5, tp, tk, 8) == 3 && tk[0] == 'h' && tk[2] == 'l' && tk[3] == 0,
          "the first 3 tokens (a byte model has no end token to keep)");
    CHECK(spectral_tokenize_with(model, "hi", 2, tp, tk, 8) == 2, "shorter than max_tokens: all of it");
    tp.max_tokens = -1;
    CHECK(spectral_tokenize_with(model, "hi", 2, tp, tk, 8) == -1, "negative max_tokens refused");
    char piece[4];
    CHECK(spectral_token_to_piece(model, 'h', piece, 4) == 1 && piece[0] == 'h', "byte piece");
    CHECK(spectral_token_to_piece(model, 256, piece, 4) == -1 && spectral_token_to_piece(model, -1, piece, 4) == -1,
          "ids outside the vocabulary");
    CHECK(spectral_token_to_piece(NULL, 1, piece, 4) == -1 && spectral_token_to_piece(model, 1, NULL, 4) == -1,
          "bad arguments");
    CHECK(!spectral_token_is_control(model, 'h') && !spectral_token_is_control(NULL, 1), "no control tokens");

    /* normalize switched between passes: the same vector, unit length or not */
    spectral_context_params p = spectral_context_default_params();
    p.n_threads = 1;
    spectral_context *c = NULL;
    CHECK(spectral_context_create(model, p, &c) == SPECTRAL_OK, "%s", spectral_last_error());
    const int32_t doc[5] = {1, 2, 3, 4, 5};
    float unit[24], raw[24];
    CHECK(c && spectral_encode(c, doc, 5) == SPECTRAL_OK, "%s", spectral_last_error());
    if (c) memcpy(unit, spectral_get_embedding(c), sizeof unit);
    CHECK(spectral_context_set_normalize(c, false) == SPECTRAL_OK && spectral_encode(c, doc, 5) == SPECTRAL_OK, "raw");
    if (c) memcpy(raw, spectral_get_embedding(c), sizeof raw);
    double ss = 0, worst = 0;
    for (int i = 0; i < 24; i++) ss += (double)raw[i] * raw[i];
    for (int i = 0; i < 24; i++) worst = fmax(worst, fabs(raw[i] / sqrt(ss) - unit[i]));
    CHECK(fabs(ss - 1) > 1e-3 && worst < 1e-6, "unnormalized: |v|^2 %g, v/|v| off by %g", ss, worst);
    CHECK(spectral_context_set_normalize(c, true) == SPECTRAL_OK && spectral_encode(c, doc, 5) == SPECTRAL_OK &&
              !memcmp(spectral_get_embedding(c), unit, sizeof unit),
          "normalized again: bit for bit the first vector");
    CHECK(spectral_context_set_normalize(NULL, true) == SPECTRAL_ERR_INVALID_ARGUMENT, "NULL context");
    spectral_context_free(c);
}

/* ---- batch streaming ---- */
typedef struct {
    int64_t seen[8];
    spectral_status status[8];
    int n;
} batch_log;

static int on_doc(spectral_context *ctx, int64_t i, spectral_status s, void *user) {
    batch_log *log = user;
    log->seen[log->n] = i;
    log->status[log->n++] = s;
    if (s == SPECTRAL_OK) CHECK(spectral_get_embedding(ctx) != NULL, "output readable in callback");
    else CHECK(spectral_get_embedding(ctx) == NULL && spectral_get_token_states(ctx, NULL) == NULL,
               "no stale output in the callback of failed document %lld", (long long)i);
    return 0;
}

static int stop_after_first(spectral_context *ctx, int64_t i, spectral_status s, void *user) {
    (void)ctx;
    (void)s;
    ++*(int *)user;
    return i == 0; /* stop after document 0 */
}

static void test_batch(spectral_model *model) {
    spectral_context_params p = spectral_context_default_params();
    p.n_threads = 1;
    spectral_context *probe = NULL;
    CHECK(spectral_context_create(model, p, &probe) == SPECTRAL_OK, "%s", spectral_last_error());
    p.mem_limit = spectral_context_memory_needed(probe, 300);
    spectral_context_free(probe);
    spectral_context *ctx = NULL;
    CHECK(spectral_context_create(model, p, &ctx) == SPECTRAL_OK, "%s", spectral_last_error());
    int32_t *a = make_tokens(100, 1), *b = make_tokens(5000, 2), *c = make_tokens(300, 3);
    const int32_t *docs[4] = {a, b, c, a};
    int64_t lens[4] = {100, 5000, 300, 0};
    batch_log log = {0};
    spectral_status s = spectral_encode_batch(ctx, docs, lens, 4, on_doc, &log);
    CHECK(s == SPECTRAL_ERR_MEMORY_LIMIT, "first failure reported, got %d", (int)s);
    CHECK(log.n == 4, "every document reported (%d)", log.n);
    for (int i = 0; i < log.n; i++) CHECK(log.seen[i] == i, "in order");
    CHECK(log.status[0] == SPECTRAL_OK && log.status[1] == SPECTRAL_ERR_MEMORY_LIMIT &&
              log.status[2] == SPECTRAL_OK && log.status[3] == SPECTRAL_ERR_INVALID_ARGUMENT,
          "per-document statuses");
    /* stopped by the callback: a status of its own, not OK (documents were skipped) */
    int calls = 0;
    const int32_t *good[3] = {a, c, a};
    const int64_t good_lens[3] = {100, 300, 100};
    s = spectral_encode_batch(ctx, good, good_lens, 3, stop_after_first, &calls);
    CHECK(s == SPECTRAL_ERR_STOPPED && calls == 1, "a stopped batch says so: status %d, %d calls", (int)s, calls);
    spectral_context_free(ctx);
    free(a);
    free(b);
    free(c);
}

/* ---- results do not depend on the thread count or on packing ---- */

/* Encodes docs with n_threads and batch_tokens; fills emb (n x E) and the
 * token states of every document, concatenated (sum of lens x E). */
typedef struct {
    float *emb, *states;
    int64_t E, row;
    int n, errors;
    const int64_t *lens;
} collect;

static int on_collect(spectral_context *ctx, int64_t i, spectral_status s, void *user) {
    collect *c = user;
    int64_t T = 0;
    const float *st = s == SPECTRAL_OK ? spectral_get_token_states(ctx, &T) : NULL;
    const float *e = s == SPECTRAL_OK ? spectral_get_embedding(ctx) : NULL;
    if (!st || !e || T != c->lens[i] || i != c->n) {
        c->errors++;
        return 0;
    }
    memcpy(c->emb + i * c->E, e, (size_t)c->E * sizeof(float));
    memcpy(c->states + c->row * c->E, st, (size_t)(T * c->E) * sizeof(float));
    c->row += T;
    c->n++;
    return 0;
}

static void run_docs(spectral_model *model, int n_threads, int64_t batch_tokens,
                     const int32_t *const *docs, const int64_t *lens, int n, collect *out) {
    spectral_context_params p = spectral_context_default_params();
    p.n_threads = n_threads;
    p.batch_tokens = batch_tokens;
    spectral_context *ctx = NULL;
    CHECK(spectral_context_create(model, p, &ctx) == SPECTRAL_OK, "%s", spectral_last_error());
    if (!ctx) return;
    out->row = 0;
    out->n = 0;
    out->errors = 0;
    out->lens = lens;
    CHECK(spectral_encode_batch(ctx, docs, lens, n, on_collect, out) == SPECTRAL_OK, "%s",
          spectral_last_error());
    CHECK(out->errors == 0 && out->n == n, "batch outputs (%d errors, %d docs)", out->errors, out->n);
    spectral_context_free(ctx);
}

static void test_deterministic(spectral_model *model) {
    enum { N = 7 };
    const int64_t lens[N] = {1, 3, 130, 257, 1000, 129, 3000};
    int32_t *docs[N];
    int64_t rows = 0;
    for (int i = 0; i < N; i++) {
        docs[i] = make_tokens(lens[i], 40 + i);
        rows += lens[i];
    }
    const int64_t E = spectral_model_n_embd(model);
    collect ref = {malloc((size_t)(N * E) * sizeof(float)), malloc((size_t)(rows * E) * sizeof(float)), E};
    collect got = {malloc((size_t)(N * E) * sizeof(float)), malloc((size_t)(rows * E) * sizeof(float)), E};
    run_docs(model, 1, 1, (const int32_t *const *)docs, lens, N, &ref);
    /* any thread count, one document per pass: bit-identical */
    const int threads[3] = {2, 3, 8};
    for (int k = 0; k < 3; k++) {
        run_docs(model, threads[k], 1, (const int32_t *const *)docs, lens, N, &got);
        CHECK(!memcmp(ref.emb, got.emb, (size_t)(N * E) * sizeof(float)) &&
                  !memcmp(ref.states, got.states, (size_t)(rows * E) * sizeof(float)),
              "%d threads give the 1-thread result bit for bit", threads[k]);
    }
    /* packed passes too: every document meets the same GEMM row tiles */
    const int64_t budgets[2] = {0, 2000};
    for (int k = 0; k < 2; k++) {
        run_docs(model, 3, budgets[k], (const int32_t *const *)docs, lens, N, &got);
        CHECK(!memcmp(ref.emb, got.emb, (size_t)(N * E) * sizeof(float)) &&
                  !memcmp(ref.states, got.states, (size_t)(rows * E) * sizeof(float)),
              "packed (budget %lld) gives the one-at-a-time result bit for bit",
              (long long)budgets[k]);
    }
    for (int i = 0; i < N; i++) free(docs[i]);
    free(ref.emb);
    free(ref.states);
    free(got.emb);
    free(got.states);
}

/* ---- memory does not grow with the thread count ---- */
static void test_memory_vs_threads(spectral_model *model) {
    const int64_t T = 100000, D = spectral_model_n_embd(model);
    size_t need[2] = {0, 0};
    const int threads[2] = {1, 64};
    for (int k = 0; k < 2; k++) {
        spectral_context_params p = spectral_context_default_params();
        p.n_threads = threads[k];
        spectral_context *ctx = NULL;
        CHECK(spectral_context_create(model, p, &ctx) == SPECTRAL_OK, "%s", spectral_last_error());
        if (!ctx) return;
        need[k] = spectral_context_memory_needed(ctx, T);
        spectral_context_free(ctx);
    }
    /* The documented bound: all of one document's channels in flight in the
     * mixing (about T x D floats) plus the MLP's tiles, at most
     * max(T x D floats, 32 MiB). */
    const size_t bound = need[0] + 2 * (size_t)(T * D) * sizeof(float) + ((size_t)32 << 20);
    CHECK(need[1] <= bound, "64 threads need %zu bytes, more than 1 thread's %zu + the bound", need[1],
          need[0]);
}

/* ---- a thread that cannot be created is an error, not an exit ---- */
#if defined(__SANITIZE_ADDRESS__)
#define SP_NO_RLIMIT_TEST 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define SP_NO_RLIMIT_TEST 1
#endif
#endif

static void test_thread_create_failure(spectral_model *model) {
#ifdef SP_NO_RLIMIT_TEST
    (void)model;
    printf("test_runtime: thread-creation failure check skipped under AddressSanitizer\n");
#else
    fflush(NULL);
    pid_t pid = fork();
    if (pid == 0) {
        /* Address space for no more than a few 8 MiB thread stacks. */
        struct rlimit rl;
        getrlimit(RLIMIT_AS, &rl);
        FILE *f = fopen("/proc/self/statm", "r");
        unsigned long pages = 0;
        if (!f || fscanf(f, "%lu", &pages) != 1) _exit(3);
        fclose(f);
        rl.rlim_cur = (rlim_t)pages * (rlim_t)sysconf(_SC_PAGESIZE) + ((rlim_t)48 << 20);
        if (setrlimit(RLIMIT_AS, &rl)) _exit(3);
        spectral_context_params p = spectral_context_default_params();
        p.n_threads = 256;
        spectral_context *ctx = NULL;
        spectral_status s = spectral_context_create(model, p, &ctx);
        if (s == SPECTRAL_OK) _exit(4);
        if (s != SPECTRAL_ERR_BACKEND || !strstr(spectral_last_error(), "thread")) _exit(5);
        /* still usable with what the machine allows */
        p.n_threads = 1;
        if (spectral_context_create(model, p, &ctx) != SPECTRAL_OK) _exit(6);
        int32_t tok[5] = {1, 2, 3, 4, 5};
        if (spectral_encode(ctx, tok, 5) != SPECTRAL_OK) _exit(7);
        spectral_context_free(ctx);
        _exit(0);
    }
    int st = 0;
    waitpid(pid, &st, 0);
    CHECK(WIFEXITED(st) && WEXITSTATUS(st) == 0, "thread-creation failure: child status %d (%s)",
          WIFEXITED(st) ? WEXITSTATUS(st) : -1, WIFSIGNALED(st) ? "signal" : "exit");
#endif
}

/* ---- one model, several threads ---- */
#define N_THREADS 4
#define N_DOCS 6
typedef struct {
    spectral_model *model;
    int32_t *docs[N_DOCS];
    int64_t lens[N_DOCS];
    float *expected[N_DOCS];
    int thread_index;
    int mismatches;
    int errors;
} thread_job;

static void *worker(void *arg) {
    thread_job *j = arg;
    spectral_context_params p = spectral_context_default_params();
    p.n_threads = 1;
    spectral_context *ctx = NULL;
    if (spectral_context_create(j->model, p, &ctx) != SPECTRAL_OK) {
        j->errors++;
        return NULL;
    }
    const int64_t E = spectral_model_n_embd(j->model);
    for (int round = 0; round < 3; round++)
        for (int d = 0; d < N_DOCS; d++) {
            int k = (d + j->thread_index + round) % N_DOCS;
            if (spectral_encode(ctx, j->docs[k], j->lens[k]) != SPECTRAL_OK) {
                j->errors++;
                continue;
            }
            const float *e = spectral_get_embedding(ctx);
            for (int64_t i = 0; i < E; i++)
                if (fabsf(e[i] - j->expected[k][i]) > 1e-6f) {
                    j->mismatches++;
                    break;
                }
        }
    spectral_context_free(ctx);
    return NULL;
}

static void test_threads(spectral_model *model) {
    thread_job base = {.model = model};
    const int64_t E = spectral_model_n_embd(model);
    const int64_t lens[N_DOCS] = {1, 17, 256, 1000, 4097, 64};
    spectral_context_params p = spectral_context_default_params();
    p.n_threads = 1;
    spectral_context *ctx = NULL;
    CHECK(spectral_context_create(model, p, &ctx) == SPECTRAL_OK, "%s", spectral_last_error());
    for (int d = 0; d < N_DOCS; d++) {
        base.lens[d] = lens[d];
        base.docs[d] = make_tokens(lens[d], 100 + d);
        base.expected[d] = malloc((size_t)E * sizeof(float));
        CHECK(spectral_encode(ctx, base.docs[d], lens[d]) == SPECTRAL_OK, "%s", spectral_last_error());
        memcpy(base.expected[d], spectral_get_embedding(ctx), (size_t)E * sizeof(float));
    }
    spectral_context_free(ctx);
    thread_job jobs[N_THREADS];
    pthread_t th[N_THREADS];
    for (int t = 0; t < N_THREADS; t++) {
        jobs[t] = base;
        jobs[t].thread_index = t;
        pthread_create(&th[t], NULL, worker, &jobs[t]);
    }
    for (int t = 0; t < N_THREADS; t++) {
        pthread_join(th[t], NULL);
        CHECK(jobs[t].errors == 0 && jobs[t].mismatches == 0,
              "thread %d: %d errors, %d mismatches", t, jobs[t].errors, jobs[t].mismatches);
    }
    for (int d = 0; d < N_DOCS; d++) {
        free(base.docs[d]);
        free(base.expected[d]);
    }
}

/* Writes the tiny model with extra's keys or tensors (a variant) to path and
 * checks that loading it is refused with message in the error. */
static void check_refused(const char *path, int (*extra)(sp_gguf_writer *w, void *user), void *variant,
                          const char *what, const char *message) {
    if (write_tiny_model_with(path, 24, 48, 6, 2, 12345, extra, variant)) {
        CHECK(0, "cannot write the %s model", what);
        return;
    }
    spectral_model *m = NULL;
    const spectral_status s = spectral_model_load(path, spectral_model_default_params(), &m);
    CHECK(s == SPECTRAL_ERR_MODEL && !m && strstr(spectral_last_error(), message), "%s: status %d, '%s'", what,
          (int)s, spectral_last_error());
    spectral_model_free(m);
}

/* ---- the lexical sketch: loading checks, and what the runtime appends ---- */
typedef struct {
    int with_key, with_bucket, with_weight; /* parts written */
    uint32_t dims;
    int bad_bucket;      /* one bucket at dims (out of range) */
    int nan_weight;      /* one weight NaN */
    int bucket_as_f32;   /* lexical.bucket stored as F32 */
    int64_t n_values;    /* values per tensor (256 = one per byte token) */
    float weight_200;    /* when non-zero, token 200's weight */
} lexical_variant;

static int add_lexical(sp_gguf_writer *w, void *user) {
    const lexical_variant *v = user;
    const int64_t n = v->n_values;
    int32_t *bucket = malloc((size_t)n * sizeof *bucket);
    float *weight = malloc((size_t)n * sizeof *weight), *fbucket = malloc((size_t)n * sizeof *fbucket);
    int rc = !bucket || !weight || !fbucket;
    const int64_t mod = v->dims ? v->dims : 1;
    for (int64_t i = 0; !rc && i < n; i++) {
        bucket[i] = (int32_t)((i * 7) % mod);
        fbucket[i] = (float)bucket[i];
        weight[i] = (i % 3 ? 1.0f : -0.5f) * (float)(1 + i % 5);
    }
    if (!rc && v->bad_bucket) bucket[n / 2] = (int32_t)v->dims;
    if (!rc && v->nan_weight) weight[n / 3] = NAN;
    if (!rc && v->weight_200 != 0.0f && n > 200) weight[200] = v->weight_200;
    const int64_t ne[1] = {n};
    if (!rc && v->with_key) rc |= sp_gguf_writer_set_u32(w, "spectralmlp.lexical.dims", v->dims);
    if (!rc && v->with_key) rc |= sp_gguf_writer_set_f32(w, "spectralmlp.lexical.scale", 2.0f);
    if (!rc && v->with_bucket)
        rc |= v->bucket_as_f32 ? sp_gguf_writer_add_tensor(w, "lexical.bucket", SP_TENSOR_F32, 1, ne, fbucket)
                               : sp_gguf_writer_add_tensor(w, "lexical.bucket", SP_TENSOR_I32, 1, ne, bucket);
    if (!rc && v->with_weight) rc |= sp_gguf_writer_add_tensor(w, "lexical.weight", SP_TENSOR_F32, 1, ne, weight);
    free(bucket);
    free(weight);
    free(fbucket);
    return rc;
}

static int keep_embedding(spectral_context *c, int64_t i, spectral_status s, void *user) {
    float (*rows)[40] = user;
    if (s == SPECTRAL_OK) memcpy(rows[i], spectral_get_embedding(c), sizeof rows[i]);
    return 0;
}

static void test_lexical(spectral_model *plain) {
    char path[300];
    snprintf(path, sizeof path, "%s.lexical.gguf", model_path);
    const lexical_variant good = {1, 1, 1, 16, 0, 0, 0, 256};
    static const struct {
        const char *what, *message;
        lexical_variant v;
    } bad[] = {
        {"bucket out of range", "lexical.bucket[128] = 16 is outside [0, 16)", {1, 1, 1, 16, 1, 0, 0, 256}},
        {"NaN weight", "lexical.weight[85] is not finite", {1, 1, 1, 16, 0, 1, 0, 256}},
        {"tensors without the key", "needs the key spectralmlp.lexical.dims", {0, 1, 1, 16, 0, 0, 0, 256}},
        {"key without lexical.weight", "needs the key", {1, 1, 0, 16, 0, 0, 0, 256}},
        {"bucket stored as F32", "lexical.bucket must be I32", {1, 1, 1, 16, 0, 0, 1, 256}},
        {"one value short", "expected one per vocabulary entry (256)", {1, 1, 1, 16, 0, 0, 0, 255}},
        {"dims 0", "lexical.dims = 0 is out of range", {1, 1, 1, 0, 0, 0, 0, 256}},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        lexical_variant v = bad[i].v;
        check_refused(path, add_lexical, &v, bad[i].what, bad[i].message);
    }

    lexical_variant v = good;
    CHECK(!write_tiny_model_with(path, 24, 48, 6, 2, 12345, add_lexical, &v), "write the lexical model");
    spectral_model *m = NULL;
    CHECK(spectral_model_load(path, spectral_model_default_params(), &m) == SPECTRAL_OK, "%s",
          spectral_last_error());
    if (!m) {
        remove(path);
        return;
    }
    CHECK(spectral_model_n_embd(m) == 24 && spectral_model_n_pooled(m) == 24 + 16 &&
              spectral_model_n_pooled(plain) == 24,
          "n_pooled %d", spectral_model_n_pooled(m));
    CHECK(spectral_model_n_lexical(m) == 16 && spectral_model_lexical_scale(m) == 2.0f &&
              spectral_model_n_lexical(plain) == 0,
          "n_lexical %d, scale %g", spectral_model_n_lexical(m), (double)spectral_model_lexical_scale(m));
    /* Documents with repeats, packed into one pass and one at a time: the
     * sketch's scratch counts must start from zero for every document. */
    enum { N = 3 };
    const int64_t lens[N] = {40, 7, 300};
    int32_t *docs[N];
    for (int i = 0; i < N; i++) {
        docs[i] = make_tokens(lens[i], 7 + i);
        for (int64_t t = 0; t < lens[i]; t += 3) docs[i][t] = 5; /* token 5, many times */
    }
    spectral_context_params p = spectral_context_default_params();
    p.n_threads = 1;
    p.normalize = false;
    spectral_context *c = NULL, *cp = NULL;
    CHECK(spectral_context_create(m, p, &c) == SPECTRAL_OK && spectral_context_create(plain, p, &cp) == SPECTRAL_OK,
          "%s", spectral_last_error());
    float alone[N][40];
    for (int i = 0; c && cp && i < N; i++) {
        CHECK(spectral_encode(c, docs[i], lens[i]) == SPECTRAL_OK, "%s", spectral_last_error());
        memcpy(alone[i], spectral_get_embedding(c), sizeof alone[i]);
        /* the first 24 values: the plain model's embedding made unit length */
        CHECK(spectral_encode(cp, docs[i], lens[i]) == SPECTRAL_OK, "%s", spectral_last_error());
        const float *e = spectral_get_embedding(cp);
        double ss = 0, dense = 0, lex = 0, worst = 0;
        for (int j = 0; j < 24; j++) ss += (double)e[j] * e[j];
        for (int j = 0; j < 24; j++) {
            worst = fmax(worst, fabs(alone[i][j] - e[j] / sqrt(ss)));
            dense += (double)alone[i][j] * alone[i][j];
        }
        for (int j = 24; j < 40; j++) lex += (double)alone[i][j] * alone[i][j];
        CHECK(worst < 1e-6 && fabs(dense - 1) < 1e-5 && fabs(lex - 4) < 1e-4,
              "doc %d: dense part = the plain embedding, unit (%g, %g); sketch at scale 2 (|.|^2 %g)", i, worst,
              dense, lex);
    }
    float packed[N][40];
    memset(packed, 0, sizeof packed);
    CHECK(c && spectral_encode_batch(c, (const int32_t *const *)docs, lens, N, keep_embedding, packed) == SPECTRAL_OK,
          "%s", spectral_last_error());
    CHECK(!memcmp(packed, alone, sizeof alone), "packed batch: the same embeddings as one at a time");
    spectral_context_free(c);
    spectral_context_free(cp);
    for (int i = 0; i < N; i++) free(docs[i]);
    spectral_model_free(m);
    remove(path);
}

/* ---- the dense part's trained prefixes (key spectralmlp.dense.prefixes) ---- */
typedef struct {
    sp_gguf_type type; /* element type; SP_GGUF_TYPE_COUNT: a plain u32, not an array */
    int64_t values[4];
    int n;
} prefixes_variant;

static int add_prefixes(sp_gguf_writer *w, void *user) {
    const prefixes_variant *v = user;
    if (v->type == SP_GGUF_TYPE_COUNT) return sp_gguf_writer_set_u32(w, "spectralmlp.dense.prefixes", 8);
    unsigned char data[4 * 8];
    const size_t width = v->type == SP_GGUF_TYPE_INT8 ? 1 : v->type == SP_GGUF_TYPE_UINT32 ? 4 : 8;
    for (int i = 0; i < v->n; i++) memcpy(data + i * width, &v->values[i], width); /* little-endian host */
    return sp_gguf_writer_set_arr(w, "spectralmlp.dense.prefixes", v->type, data, (uint64_t)v->n);
}

static void test_dense_prefixes(spectral_model *plain) {
    char path[300];
    snprintf(path, sizeof path, "%s.prefixes.gguf", model_path);
    int32_t got[SPECTRAL_MAX_PREFIXES];
    CHECK(spectral_model_dense_prefixes(plain, got, SPECTRAL_MAX_PREFIXES) == 1 && got[0] == 24,
          "without the key: the whole dense part only");
    static const struct {
        const char *what, *message;
        prefixes_variant v;
    } bad[] = {
        {"descending", "value 4 (index 1) must be in [1, 24] and above the one before", {SP_GGUF_TYPE_UINT32, {8, 4}, 2}},
        {"zero", "value 0 (index 0)", {SP_GGUF_TYPE_UINT32, {0, 8}, 2}},
        {"longer than the dense part", "value 25 (index 1)", {SP_GGUF_TYPE_UINT32, {8, 25}, 2}},
        {"negative", "value -8 (index 0)", {SP_GGUF_TYPE_INT8, {-8}, 1}},
        {"empty", "has 0 values", {SP_GGUF_TYPE_UINT32, {0}, 0}},
        {"not an array", "must be an array of integers", {SP_GGUF_TYPE_COUNT, {0}, 0}},
        {"floats", "must be an array of integers", {SP_GGUF_TYPE_FLOAT64, {0}, 1}},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        prefixes_variant v = bad[i].v;
        check_refused(path, add_prefixes, &v, bad[i].what, bad[i].message);
    }
    static const prefixes_variant good[] = {
        {SP_GGUF_TYPE_UINT32, {4, 8, 16}, 3},     /* the whole length added */
        {SP_GGUF_TYPE_INT64, {4, 8, 16, 24}, 4},  /* already there: not twice */
    };
    for (size_t i = 0; i < sizeof good / sizeof good[0]; i++) {
        prefixes_variant v = good[i];
        spectral_model *m = NULL;
        CHECK(!write_tiny_model_with(path, 24, 48, 6, 2, 12345, add_prefixes, &v) &&
                  spectral_model_load(path, spectral_model_default_params(), &m) == SPECTRAL_OK,
              "%s", spectral_last_error());
        if (!m) continue;
        memset(got, 0, sizeof got);
        const int32_t n = spectral_model_dense_prefixes(m, got, 2); /* only 2 written, 4 counted */
        CHECK(n == 4 && got[0] == 4 && got[1] == 8 && got[2] == 0, "prefixes %d: %d %d %d", n, got[0], got[1], got[2]);
        CHECK(spectral_model_dense_prefixes(m, got, SPECTRAL_MAX_PREFIXES) == 4 && got[2] == 16 && got[3] == 24,
              "the whole dense part last");
        CHECK(spectral_model_n_lexical(m) == 0 && spectral_model_lexical_scale(m) == 0.0f, "no sketch");
        spectral_model_free(m);
    }
    remove(path);
}

/* The model file in memory with tensor `name` set to +v, -v, +v, ... */
static char *model_with_tensor(const char *path, const char *name, float v, size_t *size) {
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    fseek(f, 0, SEEK_END);
    *size = (size_t)ftell(f);
    fseek(f, 0, SEEK_SET);
    char *buf = malloc(*size);
    const int ok = buf && fread(buf, 1, *size, f) == *size;
    fclose(f);
    sp_gguf *g = NULL;
    char err[256];
    if (!ok || sp_gguf_open_memory(buf, *size, &g, err, sizeof err)) {
        free(buf);
        return NULL;
    }
    const sp_gguf_tensor *t = sp_gguf_tensor_at(g, sp_gguf_find_tensor(g, name));
    float *x = (float *)(buf + ((const char *)t->data - buf));
    for (int64_t i = 0; i < t->ne[0] * t->ne[1]; i++) x[i] = i % 2 ? -v : v;
    sp_gguf_close(g);
    return buf;
}

typedef struct {
    spectral_status status[3];
    float first[3];
    int n;
} nonfinite_log;

static int on_nonfinite(spectral_context *ctx, int64_t i, spectral_status s, void *user) {
    nonfinite_log *log = user;
    log->status[i] = s;
    const float *e = spectral_get_embedding(ctx);
    log->first[i] = e ? e[0] : NAN;
    log->n++;
    return 0;
}

/* Issue 21, item 7: finite weights can still overflow (3e38 in a matrix, or
 * in one token's sketch weight). Such an output is an error for that
 * document, never NaN/Inf handed out as a result; the other documents of
 * the same packed pass are unaffected. */
static void test_nonfinite_output(void) {
    size_t size = 0;
    char *buf = model_with_tensor(model_path, "blk.0.ffn_up.weight", 3e38f, &size);
    spectral_model *m = NULL;
    CHECK(buf && spectral_model_load_from_memory(buf, size, spectral_model_default_params(), &m) == SPECTRAL_OK,
          "finite weights load: %s", spectral_last_error());
    int32_t *doc = make_tokens(50, 3);
    spectral_context_params p = spectral_context_default_params();
    p.n_threads = 2;
    for (int pooling = SPECTRAL_POOLING_NONE; m && pooling <= SPECTRAL_POOLING_MEAN; pooling++) {
        p.pooling = (spectral_pooling)pooling;
        spectral_context *ctx = NULL;
        CHECK(spectral_context_create(m, p, &ctx) == SPECTRAL_OK, "%s", spectral_last_error());
        const spectral_status s = spectral_encode(ctx, doc, 50);
        CHECK(s == SPECTRAL_ERR_NUMERIC && strstr(spectral_last_error(), "non-finite"),
              "pooling %d: overflowing weights: status %d, '%s'", pooling, (int)s, spectral_last_error());
        CHECK(spectral_get_embedding(ctx) == NULL && spectral_get_token_states(ctx, NULL) == NULL,
              "no output of a failed document");
        spectral_context_free(ctx);
    }
    spectral_model_free(m);
    free(buf);
    free(doc);

    /* per document: token 200's sketch weight overflows when it occurs 4 times */
    char path[300];
    snprintf(path, sizeof path, "%s.huge.gguf", model_path);
    lexical_variant v = {1, 1, 1, 16, 0, 0, 0, 256, 3e38f};
    m = NULL;
    CHECK(!write_tiny_model_with(path, 24, 48, 6, 2, 12345, add_lexical, &v) &&
              spectral_model_load(path, spectral_model_default_params(), &m) == SPECTRAL_OK,
          "%s", spectral_last_error());
    remove(path);
    if (!m) return;
    int32_t a[50], b[50], c[70];
    for (int i = 0; i < 50; i++) a[i] = b[i] = (int32_t)(i * 7 % 100);
    for (int i = 0; i < 70; i++) c[i] = (int32_t)(i * 3 % 100);
    b[3] = b[10] = b[20] = b[30] = 200;
    p.pooling = SPECTRAL_POOLING_MEAN;
    spectral_context *ctx = NULL;
    CHECK(spectral_context_create(m, p, &ctx) == SPECTRAL_OK, "%s", spectral_last_error());
    CHECK(spectral_encode(ctx, b, 50) == SPECTRAL_ERR_NUMERIC, "the sketch overflows: %s", spectral_last_error());
    float alone[2];
    CHECK(spectral_encode(ctx, a, 50) == SPECTRAL_OK, "%s", spectral_last_error());
    alone[0] = spectral_get_embedding(ctx)[0];
    CHECK(spectral_encode(ctx, c, 70) == SPECTRAL_OK, "%s", spectral_last_error());
    alone[1] = spectral_get_embedding(ctx)[0];
    const int32_t *docs[3] = {a, b, c};
    const int64_t lens[3] = {50, 50, 70};
    nonfinite_log log = {{SPECTRAL_OK}, {0}, 0};
    const spectral_status s = spectral_encode_batch(ctx, docs, lens, 3, on_nonfinite, &log);
    CHECK(s == SPECTRAL_ERR_NUMERIC && log.n == 3 && log.status[0] == SPECTRAL_OK &&
              log.status[1] == SPECTRAL_ERR_NUMERIC && log.status[2] == SPECTRAL_OK,
          "packed: per-document statuses %d %d %d", (int)log.status[0], (int)log.status[1], (int)log.status[2]);
    CHECK(log.first[0] == alone[0] && isnan(log.first[1]) && log.first[2] == alone[1],
          "packed: the others as alone, none for the failed one");
    spectral_context_free(ctx);
    spectral_model_free(m);
}


/* ---- the output projection (the arch's head) and the dtype ---- */

static int add_output(sp_gguf_writer *w, void *user) {
    (void)user;
    unsigned seed = 77;
    return tiny_tensor(w, "output_norm.weight", 1, 24, 1, 1, 1, 0.1f, &seed) |
           tiny_tensor(w, "output_norm.bias", 1, 24, 1, 1, 0, 0.1f, &seed) |
           tiny_tensor(w, "output.weight", 2, 24, 40, 1, 0, 0.2f, &seed) |
           tiny_tensor(w, "output.bias", 1, 40, 1, 1, 0, 0.1f, &seed);
}

typedef struct {
    spectral_context *none; /* the same model with pooling none: token states computed eagerly */
    const int32_t *const *docs;
    const int64_t *lens;
    int read_states; /* read the token states of every other document */
    int n, errors;
    double worst; /* largest |embedding - normalized mean of the states| */
} head_log;

static int on_head(spectral_context *ctx, int64_t i, spectral_status s, void *user) {
    head_log *h = user;
    const float *e = s == SPECTRAL_OK ? spectral_get_embedding(ctx) : NULL;
    if (!e) {
        h->errors++;
        return 0;
    }
    h->n++;
    if (!h->read_states || i % 2) return 0;
    int64_t T = 0, T2 = 0;
    const float *st = spectral_get_token_states(ctx, &T);
    if (!st || T != h->lens[i] || spectral_encode(h->none, h->docs[i], h->lens[i]) != SPECTRAL_OK) {
        h->errors++;
        return 0;
    }
    const float *want = spectral_get_token_states(h->none, &T2);
    CHECK(want && T2 == T && !memcmp(st, want, (size_t)(T * 40) * sizeof(float)),
          "document %lld: the states after the head, run when read, equal those of a pooling-none context",
          (long long)i);
    /* the embedding came from the pooled row through the head: the same as
     * the mean of the states, up to rounding */
    double mean[40] = {0}, norm = 0;
    for (int64_t t = 0; t < T; t++)
        for (int k = 0; k < 40; k++) mean[k] += st[t * 40 + k] / (double)T;
    for (int k = 0; k < 40; k++) norm += mean[k] * mean[k];
    for (int k = 0; k < 40; k++) {
        const double d = fabs(e[k] - mean[k] / sqrt(norm));
        if (d > h->worst) h->worst = d;
    }
    return 0;
}

static void test_head_and_dtype(void) {
    char path[300];
    snprintf(path, sizeof path, "%s.head.gguf", model_path);
    spectral_model *model = NULL;
    if (write_tiny_model_with(path, 24, 48, 6, 2, 12345, add_output, NULL) ||
        spectral_model_load(path, spectral_model_default_params(), &model) != SPECTRAL_OK) {
        CHECK(0, "head model: %s", spectral_last_error());
        remove(path);
        return;
    }
    CHECK(spectral_model_n_embd(model) == 40);
    enum { N = 5 };
    const int64_t lens[N] = {3, 300, 1, 129, 40};
    int32_t *docs[N];
    for (int i = 0; i < N; i++) docs[i] = make_tokens(lens[i], 90 + i);
    spectral_context_params p = spectral_context_default_params();
    p.n_threads = 2;
    spectral_context *ctx = NULL, *none = NULL;
    CHECK(spectral_context_create(model, p, &ctx) == SPECTRAL_OK, "%s", spectral_last_error());
    p.pooling = SPECTRAL_POOLING_NONE;
    CHECK(spectral_context_create(model, p, &none) == SPECTRAL_OK, "%s", spectral_last_error());
    if (ctx && none) {
        /* packed passes, states read for some documents only */
        head_log h = {none, (const int32_t *const *)docs, lens, 1, 0, 0, 0};
        CHECK(spectral_encode_batch(ctx, (const int32_t *const *)docs, lens, N, on_head, &h) == SPECTRAL_OK);
        CHECK(h.n == N && h.errors == 0, "%d documents, %d errors", h.n, h.errors);
        CHECK(h.worst < 1e-6, "embedding vs the normalized mean of the states: %g", h.worst);
        /* the planned memory counts the head's output whether or not it runs */
        CHECK(spectral_context_memory_needed(ctx, 300) == spectral_context_memory_needed(none, 300));
    }
    spectral_context_free(ctx);
    spectral_context_free(none);
    test_deterministic(model); /* states read in every callback: the head per document */

    /* dtype: refused values, packed weights counted, bf16 close to f32 */
    p = spectral_context_default_params();
    p.n_threads = 1;
    p.dtype = (spectral_dtype)7;
    CHECK(spectral_context_create(model, p, &ctx) == SPECTRAL_ERR_INVALID_ARGUMENT);
    p.dtype = SPECTRAL_DTYPE_BF16;
    p.backend = SPECTRAL_BACKEND_CUDA;
    CHECK(spectral_context_create(model, p, &ctx) == SPECTRAL_ERR_UNSUPPORTED && strstr(spectral_last_error(), "bf16"));
    p.backend = SPECTRAL_BACKEND_CPU;
    float emb[2][40];
    for (int k = 0; k < 2; k++) {
        p.dtype = k ? SPECTRAL_DTYPE_BF16 : SPECTRAL_DTYPE_F32;
        ctx = NULL;
        CHECK(spectral_context_create(model, p, &ctx) == SPECTRAL_OK, "%s", spectral_last_error());
        if (!ctx) continue;
        const size_t wbytes = spectral_context_weight_memory(ctx);
        CHECK(wbytes > 0 && spectral_context_memory_needed(ctx, 300) > wbytes, "weights packed: %zu", wbytes);
        CHECK(spectral_encode(ctx, docs[1], lens[1]) == SPECTRAL_OK, "%s", spectral_last_error());
        memcpy(emb[k], spectral_get_embedding(ctx), sizeof emb[k]);
        /* a limit below the packed weights refuses every document */
        CHECK(spectral_context_set_mem_limit(ctx, wbytes) == SPECTRAL_OK);
        CHECK(spectral_encode(ctx, docs[2], 1) == SPECTRAL_ERR_MEMORY_LIMIT);
        spectral_context_free(ctx);
    }
    double dot = 0;
    for (int i = 0; i < 40; i++) dot += (double)emb[0][i] * emb[1][i];
    CHECK(dot > 0.999 && memcmp(emb[0], emb[1], sizeof emb[0]), "bf16 vs f32 embedding cosine %.6f", dot);
    for (int i = 0; i < N; i++) free(docs[i]);
    spectral_model_free(model);
    remove(path);
}

int main(void) {
    snprintf(model_path, sizeof model_path, "/tmp/spectral_test_runtime_%d.gguf", (int)getpid());
    if (write_tiny_model(model_path, 24, 48, 6, 2, 12345)) return 1;
    spectral_model *model = NULL;
    if (spectral_model_load(model_path, spectral_model_default_params(), &model) != SPECTRAL_OK) {
        fprintf(stderr, "load: %s\n", spectral_last_error());
        return 1;
    }
    CHECK(spectral_model_n_embd(model) == 24 && spectral_model_n_layer(model) == 2 &&
              spectral_model_n_vocab(model) == 256 && spectral_model_pooling(model) == SPECTRAL_POOLING_MEAN,
          "model info");
    test_arena_unit();
    test_null_handles();
    test_memory_limit(model);
    test_bad_arguments(model);
    test_tokens_and_pieces(model);
    test_batch(model);
    test_threads(model);
    test_deterministic(model);
    test_memory_vs_threads(model);
    test_thread_create_failure(model);
    test_lexical(model); /* the same weights without a sketch */
    test_dense_prefixes(model);
    test_nonfinite_output();
    spectral_model_free(model);
    test_head_and_dtype();

    /* use_mmap = false path gives the same model */
    spectral_model_params mp = spectral_model_default_params();
    mp.use_mmap = false;
    CHECK(spectral_model_load(model_path, mp, &model) == SPECTRAL_OK, "%s", spectral_last_error());
    spectral_model_free(model);
    remove(model_path);
    return check_report("test_runtime");
}
