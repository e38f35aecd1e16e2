/* Tokenizer dispatch, the byte tokenizer, and what the vocabulary-based
 * tokenizers share (vocabulary + hash index, UTF-8, key helpers).
 *
 * GGUF keys read (llama.cpp's names unless noted):
 *   tokenizer.ggml.model          "bytes" | "bert" | "llama"
 *   tokenizer.ggml.tokens         string array (required for bert/llama;
 *                                 for bytes it only sets n_vocab, >= 256)
 *   tokenizer.ggml.scores         f32 array, same length (required for llama)
 *   tokenizer.ggml.token_type     i32 array, same length (optional)
 * The bert and llama specific keys are listed in tok_wordpiece.c and
 * tok_spm.c. */
#include "formats/tokenizer.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "formats/tok_internal.h"

enum { SP_TOK_BYTES, SP_TOK_BERT, SP_TOK_LLAMA };

struct sp_tokenizer {
    char model[32];
    int kind;
    int64_t n_vocab;
    void *state;
};

/* ---- UTF-8 ---------------------------------------------------------- */

uint32_t sp_utf8_next(const unsigned char *s, size_t len, size_t i, size_t *adv) {
    unsigned c = s[i];
    if (c < 0x80) {
        *adv = 1;
        return c;
    }
    size_t need;
    uint32_t cp;
    unsigned lo = 0x80, hi = 0xBF; /* allowed range of the next byte */
    if (c >= 0xC2 && c <= 0xDF) {
        need = 1;
        cp = c & 0x1F;
    } else if (c >= 0xE0 && c <= 0xEF) {
        need = 2;
        cp = c & 0x0F;
        if (c == 0xE0) lo = 0xA0; /* no overlongs */
        if (c == 0xED) hi = 0x9F; /* no surrogates */
    } else if (c >= 0xF0 && c <= 0xF4) {
        need = 3;
        cp = c & 0x07;
        if (c == 0xF0) lo = 0x90;
        if (c == 0xF4) hi = 0x8F; /* <= U+10FFFF */
    } else {
        *adv = 1;
        return UINT32_MAX;
    }
    size_t k = 1;
    for (; k <= need; k++) {
        if (i + k >= len) break;
        unsigned b = s[i + k];
        if (b < lo || b > hi) break;
        lo = 0x80;
        hi = 0xBF;
        cp = (cp << 6) | (b & 0x3F);
    }
    if (k <= need) {
        *adv = k;
        return UINT32_MAX;
    }
    *adv = need + 1;
    return cp;
}

int sp_utf8_put(uint32_t cp, char *buf) {
    unsigned char *b = (unsigned char *)buf;
    if (cp < 0x80) {
        b[0] = (unsigned char)cp;
        return 1;
    }
    if (cp < 0x800) {
        b[0] = (unsigned char)(0xC0 | (cp >> 6));
        b[1] = (unsigned char)(0x80 | (cp & 0x3F));
        return 2;
    }
    if (cp < 0x10000) {
        b[0] = (unsigned char)(0xE0 | (cp >> 12));
        b[1] = (unsigned char)(0x80 | ((cp >> 6) & 0x3F));
        b[2] = (unsigned char)(0x80 | (cp & 0x3F));
        return 3;
    }
    b[0] = (unsigned char)(0xF0 | (cp >> 18));
    b[1] = (unsigned char)(0x80 | ((cp >> 12) & 0x3F));
    b[2] = (unsigned char)(0x80 | ((cp >> 6) & 0x3F));
    b[3] = (unsigned char)(0x80 | (cp & 0x3F));
    return 4;
}

/* ---- keys ----------------------------------------------------------- */

int sp_tok_get_id(const sp_gguf *g, const char *key, int64_t n_vocab, int32_t *id, char *err,
                  size_t err_len) {
    uint64_t v;
    int rc = sp_gguf_get_uint(g, key, &v);
    if (rc == -1) return 0;
    if (rc != 0) {
        snprintf(err, err_len, "%s must be a non-negative integer", key);
        return -1;
    }
    if (v >= (uint64_t)n_vocab) {
        snprintf(err, err_len, "%s = %llu is out of range (vocabulary has %lld tokens)", key,
                 (unsigned long long)v, (long long)n_vocab);
        return -1;
    }
    *id = (int32_t)v;
    return 0;
}

int sp_tok_get_bool(const sp_gguf *g, const char *key, int *v, char *err, size_t err_len) {
    int64_t k = sp_gguf_find_key(g, key);
    if (k < 0) return 0;
    if (sp_gguf_kv_type(g, k) != SP_GGUF_TYPE_BOOL) {
        snprintf(err, err_len, "%s must be a bool", key);
        return -1;
    }
    *v = sp_gguf_get_bool(g, k) != 0;
    return 0;
}

/* ---- vocabulary ----------------------------------------------------- */

static uint64_t hash_bytes(const char *s, size_t len) {
    uint64_t h = 1469598103934665603ull; /* FNV-1a */
    for (size_t i = 0; i < len; i++) {
        h ^= (unsigned char)s[i];
        h *= 1099511628211ull;
    }
    return h;
}

int32_t sp_vocab_find(const sp_vocab *v, const char *s, size_t len) {
    if (!v->cap) return -1;
    uint64_t mask = v->cap - 1;
    for (uint64_t h = hash_bytes(s, len) & mask;; h = (h + 1) & mask) {
        int32_t id = v->index[h];
        if (id < 0) return -1;
        uint64_t tl = v->off[id + 1] - v->off[id];
        if (tl == len && memcmp(v->blob + v->off[id], s, len) == 0) return id;
    }
}

void sp_vocab_free(sp_vocab *v) {
    free(v->blob);
    free(v->off);
    free(v->index);
    free(v->scores);
    free(v->types);
    memset(v, 0, sizeof *v);
}

/* Finds an array key of element type et with n elements (n < 0: any).
 * Returns its index, -1 when absent, -2 (message set) when malformed. */
static int64_t find_array(const sp_gguf *g, const char *key, sp_gguf_type et, int64_t n,
                          char *err, size_t err_len) {
    int64_t k = sp_gguf_find_key(g, key);
    if (k < 0) return -1;
    if (sp_gguf_kv_type(g, k) != SP_GGUF_TYPE_ARRAY || sp_gguf_arr_type(g, k) != et) {
        snprintf(err, err_len, "%s must be an array of %s", key, sp_gguf_type_name(et));
        return -2;
    }
    if (n >= 0 && sp_gguf_arr_n(g, k) != (uint64_t)n) {
        snprintf(err, err_len, "%s has %llu entries but tokenizer.ggml.tokens has %lld", key,
                 (unsigned long long)sp_gguf_arr_n(g, k), (long long)n);
        return -2;
    }
    return k;
}

int sp_vocab_load(sp_vocab *v, const sp_gguf *g, char *err, size_t err_len) {
    memset(v, 0, sizeof *v);
    int64_t kt = find_array(g, "tokenizer.ggml.tokens", SP_GGUF_TYPE_STRING, -1, err, err_len);
    if (kt == -1) snprintf(err, err_len, "missing key tokenizer.ggml.tokens");
    if (kt < 0) return -1;
    uint64_t n = sp_gguf_arr_n(g, kt);
    if (n == 0 || n > INT32_MAX / 2) {
        snprintf(err, err_len, "tokenizer.ggml.tokens has %llu entries (need 1 .. %d)",
                 (unsigned long long)n, INT32_MAX / 2);
        return -1;
    }
    int64_t ks = find_array(g, "tokenizer.ggml.scores", SP_GGUF_TYPE_FLOAT32, (int64_t)n, err, err_len);
    if (ks == -2) return -1;
    int64_t ky = find_array(g, "tokenizer.ggml.token_type", SP_GGUF_TYPE_INT32, (int64_t)n, err, err_len);
    if (ky == -2) return -1;

    uint64_t total = 0;
    for (uint64_t i = 0; i < n; i++) {
        sp_gguf_str s = sp_gguf_arr_str(g, kt, i);
        if (s.len > SIZE_MAX / 4 || total + s.len < total) {
            snprintf(err, err_len, "tokenizer.ggml.tokens is too large");
            return -1;
        }
        total += s.len;
    }
    v->n = (int64_t)n;
    uint64_t cap = 16;
    while (cap < 2 * n) cap *= 2;
    v->cap = cap;
    v->blob = malloc(total ? total : 1);
    v->off = malloc((n + 1) * sizeof *v->off);
    v->index = malloc(cap * sizeof *v->index);
    if (ks >= 0) v->scores = malloc(n * sizeof *v->scores);
    if (ky >= 0) v->types = malloc(n * sizeof *v->types);
    if (!v->blob || !v->off || !v->index || (ks >= 0 && !v->scores) || (ky >= 0 && !v->types)) {
        sp_vocab_free(v);
        snprintf(err, err_len, "out of memory loading the vocabulary");
        return -1;
    }
    memset(v->index, 0xff, cap * sizeof *v->index);
    uint64_t pos = 0;
    for (uint64_t i = 0; i < n; i++) {
        sp_gguf_str s = sp_gguf_arr_str(g, kt, i);
        v->off[i] = pos;
        if (s.len) memcpy(v->blob + pos, s.ptr, s.len);
        pos += s.len;
        if (s.len > v->max_len) v->max_len = s.len;
    }
    v->off[n] = pos;
    for (uint64_t i = 0; i < n; i++) {
        const char *s = v->blob + v->off[i];
        size_t len = v->off[i + 1] - v->off[i];
        if (sp_vocab_find(v, s, len) >= 0) continue; /* duplicate: the first id wins */
        uint64_t h = hash_bytes(s, len) & (cap - 1);
        while (v->index[h] >= 0) h = (h + 1) & (cap - 1);
        v->index[h] = (int32_t)i;
    }
    /* Array payloads are little-endian and may be unaligned in the mapping. */
    if (ks >= 0) memcpy(v->scores, sp_gguf_arr_data(g, ks), n * sizeof *v->scores);
    if (ky >= 0) memcpy(v->types, sp_gguf_arr_data(g, ky), n * sizeof *v->types);
    return 0;
}

/* ---- dispatch ------------------------------------------------------- */

int sp_tokenizer_load(const sp_gguf *g, sp_tokenizer **out, char *err, size_t err_len) {
    *out = NULL;
    int64_t ki = sp_gguf_find_key(g, "tokenizer.ggml.model");
    if (ki < 0) {
        snprintf(err, err_len, "missing key tokenizer.ggml.model");
        return -1;
    }
    if (sp_gguf_kv_type(g, ki) != SP_GGUF_TYPE_STRING) {
        snprintf(err, err_len, "tokenizer.ggml.model must be a string");
        return -1;
    }
    sp_gguf_str s = sp_gguf_get_str(g, ki);
    sp_tokenizer *t = calloc(1, sizeof *t);
    if (!t) {
        snprintf(err, err_len, "out of memory");
        return -1;
    }
    int rc;
    if (s.len == 5 && memcmp(s.ptr, "bytes", 5) == 0) {
        t->kind = SP_TOK_BYTES;
        t->n_vocab = 256;
        rc = 0;
        int64_t kt = find_array(g, "tokenizer.ggml.tokens", SP_GGUF_TYPE_STRING, -1, err, err_len);
        if (kt == -2) {
            rc = -1;
        } else if (kt >= 0) {
            /* A model may reserve ids above the bytes (padding, specials). */
            uint64_t n = sp_gguf_arr_n(g, kt);
            if (n < 256 || n > INT32_MAX) {
                snprintf(err, err_len, "tokenizer.ggml.tokens has %llu entries; the bytes model needs >= 256",
                         (unsigned long long)n);
                rc = -1;
            } else {
                t->n_vocab = (int64_t)n;
            }
        }
    } else if (s.len == 4 && memcmp(s.ptr, "bert", 4) == 0) {
        t->kind = SP_TOK_BERT;
        rc = sp_wpm_load(g, &t->state, &t->n_vocab, err, err_len);
    } else if (s.len == 5 && memcmp(s.ptr, "llama", 5) == 0) {
        t->kind = SP_TOK_LLAMA;
        rc = sp_spm_load(g, &t->state, &t->n_vocab, err, err_len);
    } else {
        snprintf(err, err_len, "unsupported tokenizer.ggml.model '%.*s' (supported: bytes, bert, llama)",
                 (int)(s.len > 64 ? 64 : s.len), s.ptr);
        rc = -1;
    }
    if (rc != 0) {
        free(t);
        return -1;
    }
    memcpy(t->model, s.ptr, s.len); /* s.len <= 5 here */
    t->model[s.len] = '\0';
    *out = t;
    return 0;
}

void sp_tokenizer_free(sp_tokenizer *tok) {
    if (!tok) return;
    if (tok->kind == SP_TOK_BERT) sp_wpm_free(tok->state);
    if (tok->kind == SP_TOK_LLAMA) sp_spm_free(tok->state);
    free(tok);
}

const char *sp_tokenizer_model(const sp_tokenizer *tok) { return tok->model; }

int64_t sp_tokenizer_n_vocab(const sp_tokenizer *tok) { return tok->n_vocab; }

int64_t sp_tokenize(const sp_tokenizer *tok, const char *text, size_t len, int add_special,
                    int32_t *out, int64_t n_max) {
    if (!tok || (!text && len) || n_max < 0 || (!out && n_max > 0)) return -1;
    if (tok->kind == SP_TOK_BYTES) {
        for (size_t i = 0; i < len && (int64_t)i < n_max; i++) out[i] = (unsigned char)text[i];
        return (int64_t)len;
    }
    sp_ids o = {out, n_max, 0};
    if (!text) text = "";
    int rc = tok->kind == SP_TOK_BERT ? sp_wpm_tokenize(tok->state, text, len, add_special, &o)
                                      : sp_spm_tokenize(tok->state, text, len, add_special, &o);
    return rc == 0 ? o.n : -1;
}
