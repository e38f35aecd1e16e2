/* Shared internals of the tokenizers (formats/tokenizer.c, tok_*.c). */
#ifndef SP_TOK_INTERNAL_H
#define SP_TOK_INTERNAL_H

#include <stddef.h>
#include <stdint.h>

#include "formats/gguf.h"

/* Vocabulary: token strings in one blob plus a trie of their bytes, so a
 * caller that grows a candidate one byte at a time pays a small bounded
 * cost per byte and learns when no token has the candidate as a prefix
 * (one huge token must not make every lookup cost its length).
 *
 * The trie is in breadth-first order: node 0 (SP_TRIE_ROOT) is the empty
 * string; the children of node p are nodes first[p] .. first[p+1]-1, in
 * increasing order of their last byte label[]; tok[c] is the id of the
 * token spelled by the path to c (the lowest id among duplicates), or -1. */
typedef struct {
    int64_t n;
    char *blob;           /* all token strings back to back */
    uint64_t *off;        /* n + 1 offsets into blob */
    float *scores;        /* n, or NULL */
    int32_t *types;       /* n, or NULL (1 normal, 2 unknown, 3 control, 4 user, 5 unused, 6 byte) */
    uint32_t n_nodes;     /* trie nodes: distinct token prefixes, <= blob bytes + 1 */
    uint32_t *first;      /* n_nodes + 1 */
    unsigned char *label; /* n_nodes (label[0] unused) */
    int32_t *tok;         /* n_nodes */
} sp_vocab;

#define SP_TRIE_ROOT 0u
#define SP_TRIE_NONE UINT32_MAX

/* Reads tokenizer.ggml.tokens (required) and the optional scores/token_type
 * arrays, checking types and lengths, and builds the trie. */
int sp_vocab_load(sp_vocab *v, const sp_gguf *g, char *err, size_t err_len);
void sp_vocab_free(sp_vocab *v);
/* id of the token spelled s[0..len), or -1. */
int32_t sp_vocab_find(const sp_vocab *v, const char *s, size_t len);

/* The node for node's string followed by byte c, or SP_TRIE_NONE when no
 * token starts with that string. Binary search over at most 256 labels. */
static inline uint32_t sp_vocab_next(const sp_vocab *v, uint32_t node, unsigned char c) {
    uint32_t lo = v->first[node], hi = v->first[node + 1], end = hi;
    while (lo < hi) {
        uint32_t mid = lo + (hi - lo) / 2;
        if (v->label[mid] < c)
            lo = mid + 1;
        else
            hi = mid;
    }
    return lo < end && v->label[lo] == c ? lo : SP_TRIE_NONE;
}

/* Reads an optional token-id key; keeps *id when absent. -1 with a message
 * when present but not an integer < n_vocab. */
int sp_tok_get_id(const sp_gguf *g, const char *key, int64_t n_vocab, int32_t *id, char *err,
                  size_t err_len);
/* Optional bool key; keeps *v when absent, -1 when present with another type. */
int sp_tok_get_bool(const sp_gguf *g, const char *key, int *v, char *err, size_t err_len);

/* Growable id output: writes up to n_max ids, counts all of them. */
typedef struct {
    int32_t *out;
    int64_t n_max;
    int64_t n;
} sp_ids;
static inline void sp_ids_push(sp_ids *o, int32_t id) {
    if (o->n < o->n_max) o->out[o->n] = id;
    o->n++;
}

/* Piece output: copies s[0..len) to out at offset n as far as size allows
 * and returns n + len (the length so far, whatever fitted). */
static inline int64_t sp_piece_put(char *out, int64_t size, int64_t n, const char *s, size_t len) {
    for (size_t k = 0; k < len; k++)
        if (n + (int64_t)k < size) out[n + (int64_t)k] = s[k];
    return n + (int64_t)len;
}

/* UTF-8. sp_utf8_next decodes the character at s[i..len): returns its code
 * point and sets *adv to the bytes consumed. On an ill-formed sequence it
 * returns UINT32_MAX and consumes its maximal valid prefix (at least one
 * byte), as Unicode's "U+FFFD substitution of maximal subparts" practice and
 * Python/Rust lossy decoding do. */
uint32_t sp_utf8_next(const unsigned char *s, size_t len, size_t i, size_t *adv);
/* Encodes cp into buf (4 bytes room); returns the length. */
int sp_utf8_put(uint32_t cp, char *buf);

/* Unicode tables generated from the `tokenizers` library (tok_unicode.c). */
int sp_uc_bert_removed(uint32_t cp); /* dropped by BERT's text cleaning */
int sp_uc_bert_space(uint32_t cp);   /* turned into ' ' by BERT's text cleaning */
int sp_uc_bert_punct(uint32_t cp);   /* split off as its own word */
int sp_uc_bert_chinese(uint32_t cp);
int sp_uc_lower(uint32_t cp, uint32_t out[3]); /* lowercase; returns count */
int sp_uc_strip(uint32_t cp, uint32_t out[3]); /* NFD minus Mn marks; returns count (0..3) */

/* Model entry points. Each load fills its own state behind *state. */
int sp_wpm_load(const sp_gguf *g, void **state, int64_t *n_vocab, char *err, size_t err_len);
void sp_wpm_free(void *state);
int sp_wpm_tokenize(const void *state, const char *text, size_t len, int add_special, sp_ids *o);

int sp_spm_load(const sp_gguf *g, void **state, int64_t *n_vocab, char *err, size_t err_len);
void sp_spm_free(void *state);
int sp_spm_tokenize(const void *state, const char *text, size_t len, int add_special, sp_ids *o);

/* Per model, for sp_tokenizer_end_token / sp_token_piece / sp_token_is_control
 * (formats/tokenizer.h); id is in range. */
int32_t sp_wpm_end_token(const void *state);
int64_t sp_wpm_piece(const void *state, int32_t id, char *out, int64_t size);
int sp_wpm_is_control(const void *state, int32_t id);
int32_t sp_spm_end_token(const void *state);
int64_t sp_spm_piece(const void *state, int32_t id, char *out, int64_t size);
int sp_spm_is_control(const void *state, int32_t id);

#endif
