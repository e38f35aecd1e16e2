/* Tokenizer dispatch, the byte tokenizer, and what the vocabulary-based
 * tokenizers share (vocabulary + prefix trie, UTF-8, key helpers).
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

int32_t sp_vocab_find(const sp_vocab *v, const char *s, size_t len) {
    if (!v->n_nodes) return -1;
    uint32_t nd = SP_TRIE_ROOT;
    for (size_t i = 0; i < len && nd != SP_TRIE_NONE; i++) nd = sp_vocab_next(v, nd, (unsigned char)s[i]);
    return nd == SP_TRIE_NONE ? -1 : v->tok[nd];
}

void sp_vocab_free(sp_vocab *v) {
    free(v->blob);
    free(v->off);
    free(v->scores);
    free(v->types);
    free(v->first);
    free(v->label);
    free(v->tok);
    memset(v, 0, sizeof *v);
}

/* malloc of n elements of size bytes; NULL when that exceeds what an
 * object may span. */
static void *alloc_n(uint64_t n, size_t size) {
    if (n > PTRDIFF_MAX / size) return NULL;
    return malloc(n ? (size_t)n * size : 1);
}

/* A token for sorting: key is its first 8 bytes big-endian, zero-padded,
 * so that most comparisons need no access to the blob. */
typedef struct {
    uint64_t key;
    uint32_t id, len;
} tok_rec;

/* memcmp order, a prefix first. Equal keys mean equal bytes up to the
 * shorter length when that is <= 8 (the padding of the shorter key then
 * matched zero bytes of the longer token). */
static int rec_less(const sp_vocab *v, const tok_rec *a, const tok_rec *b) {
    if (a->key != b->key) return a->key < b->key;
    uint32_t m = a->len < b->len ? a->len : b->len;
    if (m > 8) {
        int c = memcmp(v->blob + v->off[a->id] + 8, v->blob + v->off[b->id] + 8, m - 8);
        if (c != 0) return c < 0;
    }
    return a->len < b->len;
}

/* Stable bottom-up merge sort of r[0..n) (tmp: n more). A merge sort
 * because each comparison costs up to the shorter token: per pass that sums
 * to at most the vocabulary bytes, whatever the input, so the sort is
 * O(bytes log n) even for a crafted vocabulary. */
static void merge_sort(const sp_vocab *v, tok_rec *r, tok_rec *tmp, uint64_t n) {
    tok_rec *src = r, *dst = tmp;
    for (uint64_t w = 1; w < n; w *= 2) {
        for (uint64_t lo = 0; lo < n; lo += 2 * w) {
            uint64_t mid = lo + w < n ? lo + w : n, hi = lo + 2 * w < n ? lo + 2 * w : n;
            uint64_t i = lo, j = mid, k = lo;
            while (i < mid && j < hi) dst[k++] = rec_less(v, &src[j], &src[i]) ? src[j++] : src[i++];
            while (i < mid) dst[k++] = src[i++];
            while (j < hi) dst[k++] = src[j++];
        }
        tok_rec *t = src;
        src = dst;
        dst = t;
    }
    if (src != r) memcpy(r, src, (size_t)n * sizeof *r);
}

/* Sorts r[0..n) (tmp: n more) stably into rec_less order: an LSD radix
 * sort on the keys, which settles most tokens in 8 linear passes, then a
 * merge sort of each run of equal keys (tokens sharing their first 8
 * bytes). Stability keeps equal tokens in id order, so the lowest id of
 * duplicates comes first. */
static void sort_tokens(const sp_vocab *v, tok_rec *r, tok_rec *tmp, uint64_t n) {
    for (int shift = 0; shift < 64; shift += 8) {
        uint64_t cnt[256] = {0};
        for (uint64_t i = 0; i < n; i++) cnt[(r[i].key >> shift) & 0xFF]++;
        if (cnt[(r[0].key >> shift) & 0xFF] == n) continue; /* one byte value: nothing to do */
        uint64_t pos = 0;
        for (int b = 0; b < 256; b++) {
            uint64_t c = cnt[b];
            cnt[b] = pos;
            pos += c;
        }
        for (uint64_t i = 0; i < n; i++) tmp[cnt[(r[i].key >> shift) & 0xFF]++] = r[i];
        memcpy(r, tmp, (size_t)n * sizeof *r);
    }
    for (uint64_t a = 0, b; a < n; a = b) {
        for (b = a + 1; b < n && r[b].key == r[a].key; b++) {}
        if (b - a > 1) merge_sort(v, r + a, tmp, b - a);
    }
}

/* Builds the breadth-first trie (see tok_internal.h) in one pass over the
 * tokens in sorted order: token k adds a node at each depth d from
 * lcp[k] + 1 (its common prefix with the previous token) to its length.
 * Nodes of one depth are then made in byte order, which is their BFS
 * order, so counting them per depth first tells where each depth starts;
 * the children of a node are contiguous and in byte order. O(vocabulary
 * bytes) after the sort. */
static int build_trie(sp_vocab *v, char *err, size_t err_len) {
    uint64_t n = (uint64_t)v->n, max_len = 0, n_nodes = 1;
    uint32_t count = 0, start = 1;
    int rc = -1;
    uint32_t *lcp = NULL, *next = NULL, *path = NULL;
    tok_rec *r = alloc_n(n, sizeof *r), *tmp = alloc_n(n, sizeof *tmp);
    if (!r || !tmp) goto oom;
    for (uint64_t i = 0; i < n; i++) {
        const unsigned char *s = (const unsigned char *)v->blob + v->off[i];
        uint64_t len = v->off[i + 1] - v->off[i], key = 0;
        for (uint64_t b = 0; b < 8; b++) key = key << 8 | (b < len ? s[b] : 0u);
        r[i].key = key;
        r[i].id = (uint32_t)i;
        r[i].len = (uint32_t)len; /* sp_vocab_load bounds the lengths */
        if (len > max_len) max_len = len;
    }
    sort_tokens(v, r, tmp, n);
    free(tmp);
    tmp = NULL;
    lcp = alloc_n(n, sizeof *lcp);
    next = calloc((size_t)max_len + 2, sizeof *next);
    path = alloc_n(max_len + 1, sizeof *path);
    if (!lcp || !next || !path) goto oom;
    /* Distinct prefixes: 1 + the sum of (length - lcp) <= 1 + vocabulary
     * bytes < UINT32_MAX. next[] first counts the nodes of each depth. */
    for (uint64_t k = 0; k < n; k++) {
        uint32_t l = 0;
        if (k > 0) {
            uint32_t m = r[k - 1].len < r[k].len ? r[k - 1].len : r[k].len;
            uint64_t x = r[k - 1].key ^ r[k].key;
            if (x != 0) { /* they differ in the first 8 bytes, or one ends there */
                for (; !(x >> 56); x <<= 8) l++;
                if (l > m) l = m;
            } else {
                const char *a = v->blob + v->off[r[k - 1].id], *b = v->blob + v->off[r[k].id];
                l = m < 8 ? m : 8;
                while (l < m && a[l] == b[l]) l++;
            }
        }
        lcp[k] = l;
        n_nodes += r[k].len - l;
        if (l < r[k].len) {
            next[l + 1]++;
            next[r[k].len + 1]--; /* wraps and comes back in the prefix sum */
        }
    }
    v->first = alloc_n(n_nodes + 1, sizeof *v->first);
    v->label = alloc_n(n_nodes, sizeof *v->label);
    v->tok = alloc_n(n_nodes, sizeof *v->tok);
    if (!v->first || !v->label || !v->tok) goto oom;
    v->n_nodes = (uint32_t)n_nodes;
    /* next[d]: the first node number of depth d (depth 0 is the root). */
    for (uint64_t d = 1; d <= max_len; d++) {
        count += next[d];
        next[d] = start;
        start += count;
    }
    for (uint64_t c = 0; c < n_nodes; c++) {
        v->first[c] = SP_TRIE_NONE;
        v->tok[c] = -1;
    }
    v->label[0] = 0;
    path[0] = SP_TRIE_ROOT;
    for (uint64_t k = 0; k < n; k++) {
        const char *s = v->blob + v->off[r[k].id];
        /* The node at lcp[k] already has a child unless the previous token
         * ended there (tokens extending it sort after it); deeper parents
         * are new. */
        int has_child = k > 0 && r[k - 1].len > lcp[k];
        for (uint32_t d = lcp[k] + 1; d <= r[k].len; d++) {
            uint32_t c = next[d]++;
            v->label[c] = (unsigned char)s[d - 1];
            if (!has_child) v->first[path[d - 1]] = c;
            has_child = 0;
            path[d] = c;
        }
        /* path[len] is this token's node (a duplicate shares the previous
         * token's path): the first, lowest id keeps it. */
        if (v->tok[path[r[k].len]] < 0) v->tok[path[r[k].len]] = (int32_t)r[k].id;
    }
    /* A node without children gets the start of the next node's range. */
    v->first[n_nodes] = (uint32_t)n_nodes;
    for (uint64_t c = n_nodes; c-- > 0;)
        if (v->first[c] == SP_TRIE_NONE) v->first[c] = v->first[c + 1];
    rc = 0;
    goto done;
oom:
    snprintf(err, err_len, "out of memory indexing the vocabulary");
done:
    free(r);
    free(tmp);
    free(lcp);
    free(next);
    free(path);
    return rc;
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
        /* Trie nodes (<= total + 1) and their ranges are uint32, UINT32_MAX
         * reserved for SP_TRIE_NONE. */
        if (s.len > UINT32_MAX - 2 - total) {
            snprintf(err, err_len, "tokenizer.ggml.tokens is too large (more than %u bytes of text)",
                     UINT32_MAX - 2);
            return -1;
        }
        total += s.len;
    }
    v->n = (int64_t)n;
    v->blob = alloc_n(total, 1);
    v->off = alloc_n(n + 1, sizeof *v->off);
    if (ks >= 0) v->scores = alloc_n(n, sizeof *v->scores);
    if (ky >= 0) v->types = alloc_n(n, sizeof *v->types);
    if (!v->blob || !v->off || (ks >= 0 && !v->scores) || (ky >= 0 && !v->types)) {
        sp_vocab_free(v);
        snprintf(err, err_len, "out of memory loading the vocabulary");
        return -1;
    }
    uint64_t pos = 0;
    for (uint64_t i = 0; i < n; i++) {
        sp_gguf_str s = sp_gguf_arr_str(g, kt, i);
        v->off[i] = pos;
        if (s.len) memcpy(v->blob + pos, s.ptr, s.len);
        pos += s.len;
    }
    v->off[n] = pos;
    if (build_trie(v, err, err_len) != 0) {
        sp_vocab_free(v);
        return -1;
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

int sp_text_is_blank(const char *text, size_t len) {
    const unsigned char *s = (const unsigned char *)text;
    for (size_t i = 0, adv = 0; i < len; i += adv) {
        const uint32_t cp = sp_utf8_next(s, len, i, &adv);
        /* BERT's space table is White_Space less the three it counts as
         * control characters */
        if (!sp_uc_bert_space(cp) && cp != 0x0B && cp != 0x0C && cp != 0x85) return 0;
    }
    return 1;
}

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

int32_t sp_tokenizer_end_token(const sp_tokenizer *tok) {
    if (tok->kind == SP_TOK_BERT) return sp_wpm_end_token(tok->state);
    if (tok->kind == SP_TOK_LLAMA) return sp_spm_end_token(tok->state);
    return -1;
}

/* The bytes model: ids below 256 are their byte; ids a model reserves above
 * them (padding, specials) have no text. */
int64_t sp_token_piece(const sp_tokenizer *tok, int32_t id, char *out, int64_t size) {
    if (!tok || id < 0 || id >= tok->n_vocab || size < 0 || (!out && size > 0)) return -1;
    if (tok->kind == SP_TOK_BERT) return sp_wpm_piece(tok->state, id, out, size);
    if (tok->kind == SP_TOK_LLAMA) return sp_spm_piece(tok->state, id, out, size);
    if (id >= 256) return 0;
    const char c = (char)id;
    return sp_piece_put(out, size, 0, &c, 1);
}

int sp_token_is_control(const sp_tokenizer *tok, int32_t id) {
    if (!tok || id < 0 || id >= tok->n_vocab) return 0;
    if (tok->kind == SP_TOK_BERT) return sp_wpm_is_control(tok->state, id);
    if (tok->kind == SP_TOK_LLAMA) return sp_spm_is_control(tok->state, id);
    return 0;
}
