/* Tokenizers described by a GGUF file's tokenizer.ggml.* keys.
 *
 * tokenizer.ggml.model selects the algorithm:
 *   "bytes"  each input byte is one token whose id is the byte value
 *   "bert"   BERT basic tokenization + WordPiece greedy longest match ("##")
 *   "llama"  SentencePiece (unigram/BPE by scores), as llama.cpp names it
 * Internal to spectral (sp_ names). */
#ifndef SP_TOKENIZER_H
#define SP_TOKENIZER_H

#include <stddef.h>
#include <stdint.h>

#include "formats/gguf.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct sp_tokenizer sp_tokenizer;

/* Reads the tokenizer from g. The tokenizer copies what it needs and does not
 * keep g. Returns 0, or non-zero with a message in err. */
int sp_tokenizer_load(const sp_gguf *g, sp_tokenizer **out, char *err, size_t err_len);
void sp_tokenizer_free(sp_tokenizer *tok);

const char *sp_tokenizer_model(const sp_tokenizer *tok);
int64_t sp_tokenizer_n_vocab(const sp_tokenizer *tok);

/* Tokenizes text (any bytes, not necessarily valid UTF-8). Writes at most
 * n_max ids into out (out may be NULL when n_max is 0) and returns the total
 * number of ids the text produces, or -1 on error. Special tokens ([CLS] ...
 * [SEP] for bert, BOS for SentencePiece models that ask for it) are added
 * when add_special is non-zero. */
int64_t sp_tokenize(const sp_tokenizer *tok, const char *text, size_t len, int add_special,
                    int32_t *out, int64_t n_max);

/* The id the tokenizer puts last when it adds special tokens ([SEP] for
 * bert, EOS for a SentencePiece model that adds one), or -1 when it puts
 * none there: what truncation keeps at the end. */
int32_t sp_tokenizer_end_token(const sp_tokenizer *tok);

/* The text of token id as detokenization shows it (see spectral.h,
 * spectral_token_to_piece): writes up to size bytes into out (no NUL) and
 * returns the piece's length; -1 when id is outside [0, n_vocab). */
int64_t sp_token_piece(const sp_tokenizer *tok, int32_t id, char *out, int64_t size);

/* Whether id is a control token: one the tokenizer adds around a text or
 * for padding (bert [CLS], [SEP], [PAD]; SentencePiece control tokens). */
int sp_token_is_control(const sp_tokenizer *tok, int32_t id);

/* Non-zero when text is empty or every character in it is white space
 * (Unicode's White_Space property: ASCII \t \n \v \f \r and space, U+0085,
 * U+00A0, U+1680, U+2000..U+200A, U+2028, U+2029, U+202F, U+205F, U+3000).
 * Bytes that are not valid UTF-8 are not white space. */
int sp_text_is_blank(const char *text, size_t len);

#ifdef __cplusplus
}
#endif
#endif
