/* Tokenizers against ids from the reference libraries (sentencepiece,
 * HF tokenizers), committed as fixtures by tools/make_tokenizer_fixtures.py;
 * plus the bytes tokenizer, output truncation, bad keys, and random bytes. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "formats/gguf.h"
#include "formats/tokenizer.h"

#ifndef TOK_DATA_DIR
#define TOK_DATA_DIR "tests/data/tokenizer"
#endif

static int failures = 0;
#define CHECK(c, ...)                                            \
    do {                                                         \
        if (!(c)) {                                              \
            failures++;                                          \
            fprintf(stderr, "FAIL %s:%d: ", __FILE__, __LINE__); \
            fprintf(stderr, __VA_ARGS__);                        \
            fprintf(stderr, "\n");                               \
        }                                                        \
    } while (0)

static int hexval(int c) {
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return -1;
}

/* "1 2 3" or "-" -> ids; returns count. */
static int parse_ids(const char *s, int32_t *ids, int max) {
    int n = 0;
    if (strcmp(s, "-") == 0) return 0;
    while (*s) {
        char *end;
        long v = strtol(s, &end, 10);
        if (end == s) break;
        if (n < max) ids[n] = (int32_t)v;
        n++;
        s = end;
    }
    return n;
}

static void print_ids(const char *what, const int32_t *ids, int64_t n) {
    fprintf(stderr, "  %s:", what);
    for (int64_t i = 0; i < n; i++) fprintf(stderr, " %d", ids[i]);
    fprintf(stderr, "\n");
}

static sp_tokenizer *load_file(const char *path) {
    char err[256] = "";
    sp_gguf *g = NULL;
    if (sp_gguf_open(path, &g, err, sizeof err) != 0) {
        CHECK(0, "open %s: %s", path, err);
        return NULL;
    }
    sp_tokenizer *t = NULL;
    int rc = sp_tokenizer_load(g, &t, err, sizeof err);
    sp_gguf_close(g); /* the tokenizer must not keep g */
    CHECK(rc == 0, "load %s: %s", path, err);
    return rc == 0 ? t : NULL;
}

enum { MAXIDS = 4096 };

static void run_fixture(const char *name, const char *model) {
    char path[1024];
    snprintf(path, sizeof path, "%s/%s.gguf", TOK_DATA_DIR, name);
    sp_tokenizer *t = load_file(path);
    if (!t) return;
    CHECK(strcmp(sp_tokenizer_model(t), model) == 0, "%s: model %s", name, sp_tokenizer_model(t));
    snprintf(path, sizeof path, "%s/%s.expected", TOK_DATA_DIR, name);
    FILE *f = fopen(path, "r");
    CHECK(f != NULL, "cannot open %s", path);
    if (!f) {
        sp_tokenizer_free(t);
        return;
    }
    static char line[65536];
    static char text[32768];
    static int32_t want[MAXIDS], got[MAXIDS];
    int n_cases = 0, n_bad = 0;
    while (fgets(line, sizeof line, f)) {
        if (line[0] == '#') continue;
        line[strcspn(line, "\r\n")] = '\0';
        char *c1 = strchr(line, '\t');
        char *c2 = c1 ? strchr(c1 + 1, '\t') : NULL;
        if (!c1 || !c2) continue;
        *c1 = *c2 = '\0';
        size_t tl = 0;
        for (char *h = line; h[0] && h[1]; h += 2) text[tl++] = (char)(hexval(h[0]) * 16 + hexval(h[1]));
        for (int sp = 0; sp < 2; sp++) {
            int nw = parse_ids(sp ? c2 + 1 : c1 + 1, want, MAXIDS);
            int64_t ng = sp_tokenize(t, text, tl, sp, got, MAXIDS);
            int ok = ng == nw && memcmp(got, want, (size_t)nw * sizeof *got) == 0;
            n_cases++;
            if (!ok) {
                n_bad++;
                CHECK(0, "%s: text %s (add_special=%d) differs", name, line, sp);
                print_ids("want", want, nw);
                print_ids("got ", got, ng < 0 ? 0 : ng);
            }
            /* Counting without an output buffer and truncated output. */
            int64_t nc = sp_tokenize(t, text, tl, sp, NULL, 0);
            CHECK(nc == ng, "%s: count-only %lld vs %lld", name, (long long)nc, (long long)ng);
            if (ng > 1) {
                int32_t part[MAXIDS];
                int64_t half = ng / 2;
                for (int64_t i = 0; i < ng; i++) part[i] = -7;
                int64_t nt = sp_tokenize(t, text, tl, sp, part, half);
                CHECK(nt == ng && memcmp(part, got, (size_t)half * sizeof *part) == 0 && part[half] == -7,
                      "%s: truncated output wrong", name);
            }
        }
    }
    fclose(f);
    printf("%s: %d/%d cases match\n", name, n_cases - n_bad, n_cases);
    CHECK(n_cases >= 40, "%s: only %d cases", name, n_cases);

    /* Random bytes: no crash, sane counts (ASan/UBSan builds check memory). */
    unsigned x = 12345;
    char buf[512];
    for (int it = 0; it < 300; it++) {
        size_t n = (size_t)(it * 7 % 500);
        for (size_t i = 0; i < n; i++) {
            x = x * 1103515245u + 12345u;
            unsigned r = x >> 16;
            /* mostly ASCII letters/space, some high bytes */
            buf[i] = (char)((r & 3) == 0 ? (r >> 2) & 0xff : (r & 4) ? ' ' + (r >> 3) % 95 : 'a' + (r >> 3) % 26);
        }
        int64_t ng = sp_tokenize(t, buf, n, it & 1, got, MAXIDS);
        CHECK(ng >= 0 && ng <= MAXIDS, "%s: random input gave %lld", name, (long long)ng);
        for (int64_t i = 0; i < ng && i < MAXIDS; i++)
            CHECK(got[i] >= 0 && got[i] < sp_tokenizer_n_vocab(t), "%s: id %d out of range", name, got[i]);
    }
    sp_tokenizer_free(t);
}

/* ---- in-memory GGUF files for the bytes model and error cases -------- */

static const char *tmp_path = "test_tokenizer_tmp.gguf";

typedef void (*fill_fn)(sp_gguf_writer *w);

/* Writes a GGUF filled by fn, loads it; returns the load rc, err filled. */
static int try_load(fill_fn fn, sp_tokenizer **out, char *err, size_t err_len) {
    sp_gguf_writer *w = sp_gguf_writer_new();
    fn(w);
    char werr[200];
    int rc = sp_gguf_writer_write(w, tmp_path, werr, sizeof werr);
    sp_gguf_writer_free(w);
    if (rc != 0) {
        snprintf(err, err_len, "writer: %s", werr);
        return -100;
    }
    sp_gguf *g = NULL;
    if (sp_gguf_open(tmp_path, &g, err, err_len) != 0) return -101;
    err[0] = '\0';
    *out = NULL;
    rc = sp_tokenizer_load(g, out, err, err_len);
    sp_gguf_close(g);
    remove(tmp_path);
    return rc;
}

static const char *small_toks[] = {"<unk>", "<s>", "</s>", "\342\226\201a", "b", "[CLS]", "[SEP]", "[UNK]"};
static const float small_scores[] = {0, 0, 0, -1, -2, 0, 0, 0};
static const int32_t small_types[] = {2, 3, 3, 1, 1, 3, 3, 2};

static void f_bytes(sp_gguf_writer *w) { sp_gguf_writer_set_str(w, "tokenizer.ggml.model", "bytes"); }
static void f_bytes_300(sp_gguf_writer *w) {
    static char names[300][16];
    const char *p[300];
    for (int i = 0; i < 300; i++) {
        snprintf(names[i], sizeof names[i], "t%d", i);
        p[i] = names[i];
    }
    sp_gguf_writer_set_str(w, "tokenizer.ggml.model", "bytes");
    sp_gguf_writer_set_arr_str(w, "tokenizer.ggml.tokens", p, 300);
}
static void f_bytes_short(sp_gguf_writer *w) {
    sp_gguf_writer_set_str(w, "tokenizer.ggml.model", "bytes");
    sp_gguf_writer_set_arr_str(w, "tokenizer.ggml.tokens", small_toks, 8);
}
static void f_no_model(sp_gguf_writer *w) { sp_gguf_writer_set_u32(w, "general.x", 1); }
static void f_model_int(sp_gguf_writer *w) { sp_gguf_writer_set_u32(w, "tokenizer.ggml.model", 1); }
static void f_model_unknown(sp_gguf_writer *w) { sp_gguf_writer_set_str(w, "tokenizer.ggml.model", "gpt2"); }
static void f_bert_no_tokens(sp_gguf_writer *w) { sp_gguf_writer_set_str(w, "tokenizer.ggml.model", "bert"); }
static void f_bert_tokens_int(sp_gguf_writer *w) {
    sp_gguf_writer_set_str(w, "tokenizer.ggml.model", "bert");
    sp_gguf_writer_set_arr(w, "tokenizer.ggml.tokens", SP_GGUF_TYPE_INT32, small_types, 8);
}
static void f_bert_ok(sp_gguf_writer *w) {
    sp_gguf_writer_set_str(w, "tokenizer.ggml.model", "bert");
    sp_gguf_writer_set_arr_str(w, "tokenizer.ggml.tokens", small_toks, 8);
}
static void f_bert_cls_range(sp_gguf_writer *w) {
    f_bert_ok(w);
    sp_gguf_writer_set_u32(w, "tokenizer.ggml.cls_token_id", 8);
}
static void f_bert_lower_str(sp_gguf_writer *w) {
    f_bert_ok(w);
    sp_gguf_writer_set_str(w, "tokenizer.ggml.do_lower_case", "yes");
}
static void f_llama_base(sp_gguf_writer *w) {
    sp_gguf_writer_set_str(w, "tokenizer.ggml.model", "llama");
    sp_gguf_writer_set_arr_str(w, "tokenizer.ggml.tokens", small_toks, 8);
}
static void f_llama_ok(sp_gguf_writer *w) {
    f_llama_base(w);
    sp_gguf_writer_set_arr(w, "tokenizer.ggml.scores", SP_GGUF_TYPE_FLOAT32, small_scores, 8);
    sp_gguf_writer_set_arr(w, "tokenizer.ggml.token_type", SP_GGUF_TYPE_INT32, small_types, 8);
}
static void f_llama_no_scores(sp_gguf_writer *w) { f_llama_base(w); }
static void f_llama_scores_short(sp_gguf_writer *w) {
    f_llama_base(w);
    sp_gguf_writer_set_arr(w, "tokenizer.ggml.scores", SP_GGUF_TYPE_FLOAT32, small_scores, 7);
}
static void f_llama_scores_int(sp_gguf_writer *w) {
    f_llama_base(w);
    sp_gguf_writer_set_arr(w, "tokenizer.ggml.scores", SP_GGUF_TYPE_INT32, small_types, 8);
}
static void f_llama_types_long(sp_gguf_writer *w) {
    f_llama_base(w);
    static const int32_t t9[9] = {2, 3, 3, 1, 1, 3, 3, 2, 1};
    sp_gguf_writer_set_arr(w, "tokenizer.ggml.scores", SP_GGUF_TYPE_FLOAT32, small_scores, 8);
    sp_gguf_writer_set_arr(w, "tokenizer.ggml.token_type", SP_GGUF_TYPE_INT32, t9, 9);
}
static void f_llama_bos_range(sp_gguf_writer *w) {
    f_llama_ok(w);
    sp_gguf_writer_set_u32(w, "tokenizer.ggml.bos_token_id", 1000);
}
static void f_llama_bos_neg(sp_gguf_writer *w) {
    f_llama_ok(w);
    sp_gguf_writer_set_i32(w, "tokenizer.ggml.bos_token_id", -1);
}

static void expect_error(fill_fn fn, const char *needle, const char *what) {
    char err[256];
    sp_tokenizer *t = NULL;
    int rc = try_load(fn, &t, err, sizeof err);
    CHECK(rc != 0 && rc > -100 && t == NULL, "%s: expected a load error (rc %d, %s)", what, rc, err);
    CHECK(strstr(err, needle) != NULL, "%s: error '%s' does not mention '%s'", what, err, needle);
    if (rc == 0) sp_tokenizer_free(t);
}

static void test_small(void) {
    char err[256];
    sp_tokenizer *t = NULL;
    int32_t ids[16];

    CHECK(try_load(f_bytes, &t, err, sizeof err) == 0, "bytes: %s", err);
    if (t) {
        CHECK(strcmp(sp_tokenizer_model(t), "bytes") == 0 && sp_tokenizer_n_vocab(t) == 256, "bytes model");
        int64_t n = sp_tokenize(t, "A\xff\0z", 4, 1, ids, 16);
        CHECK(n == 4 && ids[0] == 65 && ids[1] == 255 && ids[2] == 0 && ids[3] == 'z', "bytes ids");
        CHECK(sp_tokenize(t, "abc", 3, 0, ids, 2) == 3 && ids[1] == 'b', "bytes truncation");
        CHECK(sp_tokenize(t, NULL, 0, 0, NULL, 0) == 0, "bytes empty");
        CHECK(sp_tokenize(t, NULL, 3, 0, ids, 16) == -1, "NULL text with a length");
        CHECK(sp_tokenize(t, "abc", 3, 0, NULL, 5) == -1, "NULL out with n_max > 0");
        sp_tokenizer_free(t);
    }
    CHECK(try_load(f_bytes_300, &t, err, sizeof err) == 0, "bytes 300: %s", err);
    if (t) {
        CHECK(sp_tokenizer_n_vocab(t) == 300, "bytes n_vocab from tokens: %lld", (long long)sp_tokenizer_n_vocab(t));
        sp_tokenizer_free(t);
    }
    /* A tiny llama vocab: "a a" -> ▁a ▁a; "ab" -> ▁a b; "x" -> <unk> */
    CHECK(try_load(f_llama_ok, &t, err, sizeof err) == 0, "llama small: %s", err);
    if (t) {
        int64_t n = sp_tokenize(t, "a ab", 4, 1, ids, 16);
        CHECK(n == 4 && ids[0] == 1 && ids[1] == 3 && ids[2] == 3 && ids[3] == 4, "llama small ids (n=%lld)",
              (long long)n);
        n = sp_tokenize(t, "axy", 3, 0, ids, 16);
        CHECK(n == 2 && ids[0] == 3 && ids[1] == 0, "llama unknown run merges (n=%lld)", (long long)n);
        sp_tokenizer_free(t);
    }
    /* bert without id keys finds [CLS]/[SEP]/[UNK] by spelling. */
    CHECK(try_load(f_bert_ok, &t, err, sizeof err) == 0, "bert small: %s", err);
    if (t) {
        int64_t n = sp_tokenize(t, "B b", 3, 1, ids, 16);
        CHECK(n == 4 && ids[0] == 5 && ids[1] == 4 && ids[2] == 4 && ids[3] == 6, "bert small ids (n=%lld)",
              (long long)n);
        n = sp_tokenize(t, "bx", 2, 0, ids, 16);
        CHECK(n == 1 && ids[0] == 7, "bert unmatched word -> [UNK]");
        sp_tokenizer_free(t);
    }

    expect_error(f_no_model, "tokenizer.ggml.model", "no model key");
    expect_error(f_model_int, "must be a string", "model not a string");
    expect_error(f_model_unknown, "unsupported", "unknown model");
    expect_error(f_bytes_short, ">= 256", "bytes with 8 tokens");
    expect_error(f_bert_no_tokens, "tokenizer.ggml.tokens", "bert without tokens");
    expect_error(f_bert_tokens_int, "must be an array of", "tokens of ints");
    expect_error(f_bert_cls_range, "out of range", "cls id out of range");
    expect_error(f_bert_lower_str, "do_lower_case", "do_lower_case not bool");
    expect_error(f_llama_no_scores, "tokenizer.ggml.scores", "llama without scores");
    expect_error(f_llama_scores_short, "has 7 entries", "scores length mismatch");
    expect_error(f_llama_scores_int, "tokenizer.ggml.scores must be an array", "scores of ints");
    expect_error(f_llama_types_long, "token_type has 9 entries", "token_type length mismatch");
    expect_error(f_llama_bos_range, "bos_token_id", "bos out of range");
    expect_error(f_llama_bos_neg, "bos_token_id", "negative bos");
}

int main(void) {
    test_small();
    run_fixture("bert_wordpiece", "bert");
    run_fixture("spm_unigram", "llama");
    run_fixture("spm_unigram_bf", "llama");
    if (failures) {
        fprintf(stderr, "%d failure(s)\n", failures);
        return 1;
    }
    printf("all tokenizer tests passed\n");
    return 0;
}
