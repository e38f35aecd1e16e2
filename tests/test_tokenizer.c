/* Tokenizers against ids from the reference libraries (sentencepiece,
 * HF tokenizers), committed as fixtures by tests/fixtures/make_tokenizer_fixtures.py;
 * plus the bytes tokenizer, output truncation, bad keys, random bytes, and
 * a hand-made SentencePiece charsmap (normalizer rules), valid and broken;
 * a vocabulary with one 1 MB token (lookups must not cost its length);
 * and token pieces (detokenization), end tokens and control tokens. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "formats/gguf.h"
#include "formats/tok_internal.h"
#include "formats/tokenizer.h"
#include "check.h"

#ifndef TOK_DATA_DIR
#define TOK_DATA_DIR "tests/data/tokenizer"
#endif

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

/* ---- a hand-made precompiled_charsmap: one rule "A" -> "x" ------------
 * darts-clone layout (see formats/tok_spm.c): 512 units. The root (unit 0)
 * has base 256; its child for 'A' is unit 256 ^ 'A' = 321, with a leaf and
 * base 321 ^ 449 = 128, whose unit 128 holds the leaf value: offset 0 into
 * the strings "x\0". Variants break one thing each. */
enum { CM_UNITS = 512, CM_BYTES = 4 + 4 * CM_UNITS + 2 };

static void cm_put32(unsigned char *p, uint32_t v) {
    p[0] = (unsigned char)v;
    p[1] = (unsigned char)(v >> 8);
    p[2] = (unsigned char)(v >> 16);
    p[3] = (unsigned char)(v >> 24);
}

static int cm_bad; /* which variant f_cm_* writes */
enum { CM_OK, CM_SHORT_HEADER, CM_SIZE_BIG, CM_SIZE_ODD, CM_ROOT_RANGE, CM_CHILD_RANGE, CM_VALUE_RANGE,
       CM_NO_NUL, CM_CYCLE, CM_INT8, CM_EMPTY, CM_INT32 };

static void cm_fill(unsigned char *b, uint64_t *n) {
    memset(b, 0, CM_BYTES);
    cm_put32(b, 4 * CM_UNITS);
    uint32_t root = 256u << 10, child = 'A' | 1u << 8 | (321u ^ 128u) << 10, leaf = 1u << 31 | 0u;
    if (cm_bad == CM_ROOT_RANGE) root = 1024u << 10;                    /* block past the end */
    if (cm_bad == CM_CHILD_RANGE) child = 'A' | 1u << 8 | (321u ^ 640u) << 10; /* base 640 */
    if (cm_bad == CM_CYCLE) child = 'A' | (321u ^ 256u) << 10;          /* back to the root */
    if (cm_bad == CM_VALUE_RANGE) leaf = 1u << 31 | 2u;                 /* strings are 2 bytes */
    cm_put32(b + 4 + 4 * 0, root);
    cm_put32(b + 4 + 4 * 321, child);
    cm_put32(b + 4 + 4 * 128, leaf);
    b[4 + 4 * CM_UNITS] = 'x';
    b[4 + 4 * CM_UNITS + 1] = cm_bad == CM_NO_NUL ? 'y' : '\0';
    *n = CM_BYTES;
    if (cm_bad == CM_SHORT_HEADER) *n = 3;
    if (cm_bad == CM_SIZE_BIG) cm_put32(b, 4 * CM_UNITS + 4);
    if (cm_bad == CM_SIZE_ODD) cm_put32(b, 4 * CM_UNITS - 2);
}

static const char *cm_toks[] = {"<unk>", "<s>", "</s>", "\342\226\201x", "x", "\342\226\201", "y", "AA"};
static const float cm_scores[] = {0, 0, 0, -1, -2, -3, -2, -1};
static const int32_t cm_types[] = {2, 3, 3, 1, 1, 1, 1, 4}; /* "AA": user-defined */

static void f_cm(sp_gguf_writer *w) {
    static unsigned char b[CM_BYTES];
    uint64_t n;
    cm_fill(b, &n);
    sp_gguf_writer_set_str(w, "tokenizer.ggml.model", "llama");
    sp_gguf_writer_set_arr_str(w, "tokenizer.ggml.tokens", cm_toks, 8);
    sp_gguf_writer_set_arr(w, "tokenizer.ggml.scores", SP_GGUF_TYPE_FLOAT32, cm_scores, 8);
    sp_gguf_writer_set_arr(w, "tokenizer.ggml.token_type", SP_GGUF_TYPE_INT32, cm_types, 8);
    if (cm_bad == CM_INT32)
        sp_gguf_writer_set_arr(w, "tokenizer.ggml.precompiled_charsmap", SP_GGUF_TYPE_INT32, b, n / 4);
    else if (cm_bad != CM_EMPTY)
        sp_gguf_writer_set_arr(w, "tokenizer.ggml.precompiled_charsmap",
                               cm_bad == CM_INT8 ? SP_GGUF_TYPE_INT8 : SP_GGUF_TYPE_UINT8, b, n);
}
static void f_cm_ws(sp_gguf_writer *w) {
    f_cm(w);
    sp_gguf_writer_set_bool(w, "tokenizer.ggml.remove_extra_whitespaces", 1);
}
static void f_cm_noprefix(sp_gguf_writer *w) {
    f_cm_ws(w);
    sp_gguf_writer_set_bool(w, "tokenizer.ggml.add_space_prefix", 0);
}
static void f_cm_prefix_str(sp_gguf_writer *w) {
    f_cm(w);
    sp_gguf_writer_set_str(w, "tokenizer.ggml.add_space_prefix", "yes");
}
static void f_cm_ws_int(sp_gguf_writer *w) {
    f_cm(w);
    sp_gguf_writer_set_u32(w, "tokenizer.ggml.remove_extra_whitespaces", 1);
}
static void f_cm_scalar(sp_gguf_writer *w) {
    f_cm(w);
    sp_gguf_writer_set_u32(w, "tokenizer.ggml.precompiled_charsmap", 7);
}

/* Tokenizes text (NUL-terminated) and compares with want[] (ends at -1). */
static void expect_ids(sp_tokenizer *t, const char *text, const int32_t *want, const char *what) {
    int32_t got[64];
    int nw = 0;
    while (want[nw] >= 0) nw++;
    int64_t n = sp_tokenize(t, text, strlen(text), 0, got, 64);
    int ok = n == nw && memcmp(got, want, (size_t)nw * sizeof *got) == 0;
    CHECK(ok, "charsmap: %s: ids differ", what);
    if (!ok) {
        print_ids("want", want, nw);
        print_ids("got ", got, n < 0 ? 0 : n);
    }
}

static void test_charsmap(void) {
    char err[256];
    sp_tokenizer *t = NULL;
    /* ids: 3 "_x", 4 "x", 5 "_", 6 "y", 7 "AA" (user-defined), 0 <unk> */
    cm_bad = CM_OK;
    CHECK(try_load(f_cm, &t, err, sizeof err) == 0, "charsmap: %s", err);
    if (t) {
        /* "A" -> "x" by the rule; spaces kept as they are (no whitespace removal). */
        expect_ids(t, "A", (const int32_t[]){3, -1}, "A");
        expect_ids(t, "yA A", (const int32_t[]){5, 6, 4, 3, -1}, "yA A");
        expect_ids(t, " A  ", (const int32_t[]){5, 3, 5, 5, -1}, "spaces kept");
        /* Not a rule: "B" is copied and unknown. */
        expect_ids(t, "BA", (const int32_t[]){5, 0, 4, -1}, "BA");
        /* User-defined pieces are matched before the charsmap, verbatim:
         * "AAA" -> "AA" "x", not "xxx". */
        expect_ids(t, "AAA", (const int32_t[]){5, 7, 4, -1}, "user-defined");
        sp_tokenizer_free(t);
    }
    cm_bad = CM_INT8;
    CHECK(try_load(f_cm_ws, &t, err, sizeof err) == 0, "charsmap int8: %s", err);
    if (t) {
        /* remove_extra_whitespaces: leading/trailing dropped, runs collapsed. */
        expect_ids(t, "  A   A  ", (const int32_t[]){3, 3, -1}, "collapsed");
        expect_ids(t, "   ", (const int32_t[]){-1}, "whitespace only");
        expect_ids(t, "A \342\226\201 \342\226\201", (const int32_t[]){3, -1}, "trailing U+2581s");
        sp_tokenizer_free(t);
    }
    cm_bad = CM_OK;
    CHECK(try_load(f_cm_noprefix, &t, err, sizeof err) == 0, "charsmap no prefix: %s", err);
    if (t) {
        expect_ids(t, " A y ", (const int32_t[]){4, 5, 6, -1}, "no space prefix");
        sp_tokenizer_free(t);
    }
    cm_bad = CM_EMPTY; /* no charsmap: identity, and no user-defined matching needed */
    CHECK(try_load(f_cm_ws, &t, err, sizeof err) == 0, "no charsmap: %s", err);
    if (t) {
        expect_ids(t, " A ", (const int32_t[]){5, 0, -1}, "identity");
        sp_tokenizer_free(t);
    }

    static const struct {
        int bad;
        const char *needle, *what;
    } cases[] = {
        {CM_SHORT_HEADER, "truncated", "truncated size header"},
        {CM_SIZE_BIG, "exceeds", "trie size larger than the array"},
        {CM_SIZE_ODD, "multiple of 4", "trie size not a multiple of 4"},
        {CM_ROOT_RANGE, "out of range", "root index out of range"},
        {CM_CHILD_RANGE, "out of range", "trie index out of range"},
        {CM_VALUE_RANGE, "replacement offset", "replacement offset past the strings"},
        {CM_NO_NUL, "NUL", "strings not NUL-terminated"},
        {CM_CYCLE, "cycle", "trie cycle"},
        {CM_INT32, "uint8 or int8", "charsmap of int32"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        cm_bad = cases[i].bad;
        expect_error(f_cm, cases[i].needle, cases[i].what);
    }
    cm_bad = CM_EMPTY; /* f_cm_scalar writes the key itself */
    expect_error(f_cm_scalar, "uint8 or int8", "charsmap not an array");
    cm_bad = CM_OK;
    expect_error(f_cm_prefix_str, "add_space_prefix", "add_space_prefix not bool");
    expect_error(f_cm_ws_int, "remove_extra_whitespaces", "remove_extra_whitespaces not bool");
}

/* ---- a vocabulary holding one huge token ----------------------------
 * Candidates are looked up one trie step per byte, stopping where no token
 * has the prefix, so tokenizing costs the longest token prefix found in
 * the text, not the longest token. Before, one 1 MB token made this 200 KB
 * text take far longer than hours (llama tried every length up to the
 * longest token, hashing each: O(text x longest^2); with a charsmap the
 * user-defined piece matcher did the same per input byte). Text that does
 * match a very long token still costs O(text x match length), as in
 * sentencepiece and llama.cpp; that case is not what this tests.
 * Vocabularies: llama, llama with a charsmap and the long token
 * user-defined, bert; the long token is last, so dropping it keeps ids. */
enum { LONG_TOKEN = 1000000, LONG_TEXT = 200000 };
enum { LT_LLAMA, LT_LLAMA_CM, LT_BERT };
static int lt_mode, lt_with_long;
static char *lt_long;

static void f_long(sp_gguf_writer *w) {
    static const char *sp[13] = {"<unk>", "<s>", "</s>", "\342\226\201the", "\342\226\201cat",
                                 "\342\226\201sat", "\342\226\201on", "\342\226\201a", "\342\226\201mat",
                                 "\342\226\201", "x", "xx", "\342\226\201x"};
    static const float sc[14] = {0, 0, 0, -1, -1, -1, -1, -1, -1, -4, -3, -2, -2, -1};
    static const int32_t ty[14] = {2, 3, 3, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1};
    static const char *wp[14] = {"[PAD]", "[UNK]", "[CLS]", "[SEP]", "the", "cat", "sat",
                                 "on",    "a",     "mat",   "x",     "##x", "xx",  "##xx"};
    const char *toks[15];
    int32_t types[14];
    int n = lt_mode == LT_BERT ? 14 : 13;
    memcpy(toks, lt_mode == LT_BERT ? wp : sp, (size_t)n * sizeof *toks);
    memcpy(types, ty, sizeof types);
    toks[n] = lt_long;
    if (lt_mode == LT_LLAMA_CM) types[13] = 4; /* the long token, user-defined */
    n += lt_with_long;
    if (lt_mode == LT_BERT) {
        sp_gguf_writer_set_str(w, "tokenizer.ggml.model", "bert");
        sp_gguf_writer_set_arr_str(w, "tokenizer.ggml.tokens", toks, (uint64_t)n);
        return;
    }
    sp_gguf_writer_set_str(w, "tokenizer.ggml.model", "llama");
    sp_gguf_writer_set_arr_str(w, "tokenizer.ggml.tokens", toks, (uint64_t)n);
    sp_gguf_writer_set_arr(w, "tokenizer.ggml.scores", SP_GGUF_TYPE_FLOAT32, sc, (uint64_t)n);
    sp_gguf_writer_set_arr(w, "tokenizer.ggml.token_type", SP_GGUF_TYPE_INT32, types, (uint64_t)n);
    if (lt_mode == LT_LLAMA_CM) { /* the rule "A" -> "x" of test_charsmap */
        static unsigned char b[CM_BYTES];
        uint64_t nb;
        cm_bad = CM_OK;
        cm_fill(b, &nb);
        sp_gguf_writer_set_arr(w, "tokenizer.ggml.precompiled_charsmap", SP_GGUF_TYPE_UINT8, b, nb);
    }
}

/* Loads the vocabulary (mode, with or without the long token) and
 * tokenizes text into *ids (malloc'd); returns the count, -1 on failure. */
static int64_t long_tokenize(int mode, int with_long, const char *text, size_t len, int32_t **ids,
                             double *secs) {
    char err[256];
    sp_tokenizer *t = NULL;
    lt_mode = mode;
    lt_with_long = with_long;
    *ids = NULL;
    if (try_load(f_long, &t, err, sizeof err) != 0) {
        CHECK(0, "long token (mode %d, long %d): %s", mode, with_long, err);
        return -1;
    }
    int64_t cap = (int64_t)len + 2;
    *ids = malloc((size_t)cap * sizeof **ids);
    clock_t c0 = clock();
    int64_t n = *ids ? sp_tokenize(t, text, len, 0, *ids, cap) : -1;
    *secs = (double)(clock() - c0) / CLOCKS_PER_SEC;
    sp_tokenizer_free(t);
    CHECK(n >= 0 && n <= cap, "long token (mode %d): tokenize gave %lld", mode, (long long)n);
    return n >= 0 && n <= cap ? n : -1;
}

static void test_long_token(void) {
    lt_long = malloc(LONG_TOKEN + 1);
    char *text = malloc(LONG_TEXT + 1);
    if (!lt_long || !text) {
        CHECK(0, "out of memory");
        free(lt_long);
        free(text);
        return;
    }
    memset(lt_long, 'x', LONG_TOKEN);
    lt_long[LONG_TOKEN] = '\0';
    /* Per 25-byte repeat, hand-computed: llama "_the _cat _sat _on _a _mat
     * _x xx" (scores make "_x" "xx" the best split of "_xxx"), then the
     * final "_"; bert "the cat sat on a mat xx ##x". With the charsmap,
     * "A" -> "x" makes the same text. */
    static const char *pat[] = {"the cat sat on a mat xxx ", "the cat sat on a mat xxA ", "the cat sat on a mat xxx "};
    static const int32_t want_rep[][8] = {{3, 4, 5, 6, 7, 8, 12, 11}, {3, 4, 5, 6, 7, 8, 12, 11},
                                          {4, 5, 6, 7, 8, 9, 12, 11}};
    static const char *names[] = {"llama", "llama+charsmap", "bert"};
    enum { REPS = LONG_TEXT / 25 };
    for (int mode = LT_LLAMA; mode <= LT_BERT; mode++) {
        for (int i = 0; i < REPS; i++) memcpy(text + 25 * i, pat[mode], 25);
        int32_t *with = NULL, *without = NULL;
        double secs, secs0;
        int64_t n = long_tokenize(mode, 1, text, LONG_TEXT, &with, &secs);
        int64_t n0 = long_tokenize(mode, 0, text, LONG_TEXT, &without, &secs0);
        int64_t want_n = (int64_t)REPS * 8 + (mode != LT_BERT);
        CHECK(n == want_n, "long token %s: %lld ids, want %lld", names[mode], (long long)n, (long long)want_n);
        int bad = 0;
        for (int64_t i = 0; i < n && i < want_n && !bad; i++) {
            int32_t want = i < (int64_t)REPS * 8 ? want_rep[mode][i % 8] : 9;
            if (with[i] != want) {
                CHECK(0, "long token %s: id %lld is %d, want %d", names[mode], (long long)i, with[i], want);
                bad = 1;
            }
        }
        CHECK(n == n0 && n >= 0 && memcmp(with, without, (size_t)n * sizeof *with) == 0,
              "long token %s: ids differ from the vocabulary without it", names[mode]);
        printf("long token %s: %lld ids in %.3f s (%.3f s without it)\n", names[mode], (long long)n, secs,
               secs0);
        free(with);
        free(without);
    }
    /* Text along the long token's trie path: 3000 'x's walk 3000 deep at
     * each position (the O(text x match) case, kept small) and must split
     * as without the long token. */
    memset(text, 'x', 3000);
    for (int mode = LT_LLAMA; mode <= LT_LLAMA_CM; mode++) {
        int32_t *with = NULL, *without = NULL;
        double secs, secs0;
        int64_t n = long_tokenize(mode, 1, text, 3000, &with, &secs);
        int64_t n0 = long_tokenize(mode, 0, text, 3000, &without, &secs0);
        CHECK(n > 0 && n == n0 && memcmp(with, without, (size_t)n * sizeof *with) == 0,
              "long token %s: a run of x splits differently (%lld vs %lld ids)", names[mode], (long long)n,
              (long long)n0);
        free(with);
        free(without);
    }
    free(text);
    free(lt_long);
    lt_long = NULL;
}

/* ---- pieces, end tokens, control tokens -------------------------------- */

/* piece(id) equals want (length and bytes), also when the buffer is short. */
static void check_piece(const sp_tokenizer *t, int32_t id, const char *want, const char *what) {
    char buf[64];
    const int64_t n = sp_token_piece(t, id, buf, sizeof buf);
    const int64_t wl = (int64_t)strlen(want);
    CHECK(n == wl && !memcmp(buf, want, (size_t)wl), "%s: piece of %d is '%.*s' (%lld bytes), want '%s'", what, id,
          (int)(n > 0 && n < 64 ? n : 0), buf, (long long)n, want);
    char small[2] = {'?', '?'};
    CHECK(sp_token_piece(t, id, small, 1) == wl && (wl == 0 || small[0] == want[0]) && small[1] == '?',
          "%s: piece of %d into 1 byte", what, id);
    CHECK(sp_token_piece(t, id, NULL, 0) == wl, "%s: length of the piece of %d", what, id);
}

static void test_pieces(void) {
    char err[256];
    sp_tokenizer *t = NULL;
    CHECK(try_load(f_bytes_300, &t, err, sizeof err) == 0, "bytes 300: %s", err);
    if (t) {
        check_piece(t, 'A', "A", "bytes");
        char b[2];
        CHECK(sp_token_piece(t, 0, b, 2) == 1 && b[0] == 0, "bytes: id 0 is the byte 0");
        check_piece(t, 299, "", "bytes: a reserved id has no text");
        CHECK(sp_token_piece(t, 300, b, 2) == -1 && sp_token_piece(t, -1, b, 2) == -1, "bytes: ids out of range");
        CHECK(sp_tokenizer_end_token(t) == -1 && !sp_token_is_control(t, 'A'), "bytes: no end or control token");
        sp_tokenizer_free(t);
    }
    /* small_toks: <unk> <s> </s> ▁a b [CLS] [SEP] [UNK], types unk ctl ctl 1 1 ctl ctl unk */
    CHECK(try_load(f_llama_ok, &t, err, sizeof err) == 0, "llama small: %s", err);
    if (t) {
        check_piece(t, 3, " a", "llama: U+2581 is a space");
        check_piece(t, 4, "b", "llama: a piece inside a word");
        check_piece(t, 1, "<s>", "llama: a control token as spelled");
        check_piece(t, 0, "<unk>", "llama: the unknown token as spelled");
        CHECK(sp_tokenizer_end_token(t) == -1, "llama: no EOS added by default");
        CHECK(sp_token_is_control(t, 1) && sp_token_is_control(t, 2) && !sp_token_is_control(t, 3) &&
                  !sp_token_is_control(t, 0),
              "llama: control tokens by type");
        sp_tokenizer_free(t);
    }
    CHECK(try_load(f_bert_ok, &t, err, sizeof err) == 0, "bert small: %s", err);
    if (t) {
        check_piece(t, 4, " b", "bert: a word-initial piece starts with a space");
        check_piece(t, 5, "[CLS]", "bert: [CLS] as spelled");
        check_piece(t, 7, " [UNK]", "bert: [UNK] stands for a word");
        CHECK(sp_tokenizer_end_token(t) == 6, "bert: [SEP] ends a text");
        CHECK(sp_token_is_control(t, 5) && sp_token_is_control(t, 6) && !sp_token_is_control(t, 7) &&
                  !sp_token_is_control(t, 4),
              "bert: [CLS] and [SEP] are control tokens, [UNK] is not");
        sp_tokenizer_free(t);
    }
}

/* The fixture vocabularies: SentencePiece with byte fallback reproduces a
 * valid UTF-8 text exactly (after the space prefix); WordPiece marks the
 * "##" continuations and [SEP] ends a text. */
static void test_fixture_pieces(void) {
    char path[1024];
    snprintf(path, sizeof path, "%s/spm_unigram_bf.gguf", TOK_DATA_DIR);
    sp_tokenizer *t = load_file(path);
    snprintf(path, sizeof path, "%s/spm_unigram_bf.expected", TOK_DATA_DIR);
    FILE *f = t ? fopen(path, "r") : NULL;
    static char line[65536], text[32768], back[65536];
    static int32_t ids[MAXIDS];
    int n_cases = 0;
    while (f && fgets(line, sizeof line, f)) {
        if (line[0] == '#' || !strchr(line, '\t')) continue;
        *strchr(line, '\t') = '\0';
        size_t tl = 0;
        for (char *h = line; h[0] && h[1]; h += 2) text[tl++] = (char)(hexval(h[0]) * 16 + hexval(h[1]));
        size_t i = 0, adv;
        while (i < tl && sp_utf8_next((const unsigned char *)text, tl, i, &adv) != UINT32_MAX) i += adv;
        if (i < tl) continue; /* not UTF-8: its bytes became U+FFFD */
        const int64_t n = sp_tokenize(t, text, tl, 0, ids, MAXIDS);
        int64_t bl = 0;
        for (int64_t k = 0; k < n && k < MAXIDS; k++)
            bl += sp_token_piece(t, ids[k], back + bl, (int64_t)sizeof back - bl);
        const int ok = tl ? bl == (int64_t)tl + 1 && back[0] == ' ' && !memcmp(back + 1, text, tl) : bl == 0;
        CHECK(ok, "spm_unigram_bf: the pieces of '%s' do not give the text back", line);
        n_cases++;
    }
    if (f) fclose(f);
    CHECK(n_cases >= 20, "spm_unigram_bf: only %d round trips", n_cases);
    sp_tokenizer_free(t);

    snprintf(path, sizeof path, "%s/bert_wordpiece.gguf", TOK_DATA_DIR);
    t = load_file(path);
    if (t) {
        const int64_t n = sp_tokenize(t, "unaffable", 9, 1, ids, MAXIDS);
        int64_t bl = 0;
        for (int64_t k = 1; k + 1 < n; k++) bl += sp_token_piece(t, ids[k], back + bl, (int64_t)sizeof back - bl);
        CHECK(n >= 3 && ids[n - 1] == sp_tokenizer_end_token(t) && sp_token_is_control(t, ids[0]) &&
                  bl == 10 && !memcmp(back, " unaffable", 10),
              "bert_wordpiece: 'unaffable' in %lld tokens reads back as '%.*s'", (long long)n, (int)bl, back);
        sp_tokenizer_free(t);
    }
}

int main(void) {
    test_small();
    test_pieces();
    test_fixture_pieces();
    test_charsmap();
    test_long_token();
    run_fixture("bert_wordpiece", "bert");
    run_fixture("spm_unigram", "llama");
    run_fixture("spm_unigram_bf", "llama");
    run_fixture("spm_nfkc", "llama");
    return check_report("test_tokenizer");
}
