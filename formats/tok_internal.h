/* Shared internals of the tokenizers (formats/tokenizer.c, tok_*.c). */
#ifndef SP_TOK_INTERNAL_H
#define SP_TOK_INTERNAL_H

#include <stddef.h>
#include <stdint.h>

#include "formats/gguf.h"

/* Vocabulary: token strings in one blob plus a hash index string -> id. */
typedef struct {
    int64_t n;
    char *blob;       /* all token strings back to back */
    uint64_t *off;    /* n + 1 offsets into blob */
    int32_t *index;   /* open addressing, cap slots, -1 empty */
    uint64_t cap;
    size_t max_len;   /* longest token in bytes */
    float *scores;    /* n, or NULL */
    int32_t *types;   /* n, or NULL (1 normal, 2 unknown, 3 control, 4 user, 5 unused, 6 byte) */
} sp_vocab;

/* Reads tokenizer.ggml.tokens (required) and the optional scores/token_type
 * arrays, checking types and lengths. */
int sp_vocab_load(sp_vocab *v, const sp_gguf *g, char *err, size_t err_len);
void sp_vocab_free(sp_vocab *v);
/* id of the token spelled s[0..len), or -1. */
int32_t sp_vocab_find(const sp_vocab *v, const char *s, size_t len);

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

#endif
