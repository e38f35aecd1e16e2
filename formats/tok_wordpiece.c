/* tokenizer.ggml.model = "bert": BERT basic tokenization + WordPiece, matching
 * the HF `tokenizers` BertWordPieceTokenizer (BertNormalizer,
 * BertPreTokenizer, WordPiece with "##", BertProcessing).
 *
 * Keys: tokenizer.ggml.tokens (required), tokenizer.ggml.cls_token_id,
 * tokenizer.ggml.seperator_token_id (llama.cpp's spelling),
 * tokenizer.ggml.unknown_token_id, tokenizer.ggml.padding_token_id; when an id
 * key is absent the token is looked up by its usual spelling ([CLS], [SEP],
 * [UNK], [PAD]).
 * Spectral's own keys (llama.cpp has none; it always lower-cases):
 *   tokenizer.ggml.do_lower_case  bool, default true: lower-case the text
 *   tokenizer.ggml.strip_accents  bool, default = do_lower_case: NFD and drop
 *                                 nonspacing marks (HF's strip_accents=None)
 *
 * Text that is not valid UTF-8 behaves like its lossy decoding: each
 * ill-formed subsequence becomes U+FFFD, which cleaning then drops. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "formats/tok_internal.h"

#define WPM_MAX_WORD_CHARS 100 /* longer words become [UNK], as in BERT */

typedef struct {
    sp_vocab v;
    int32_t cls, sep, unk, pad;
    int lower, strip;
    uint32_t cont; /* trie node of "##", or SP_TRIE_NONE */
} wpm;

static int special(const sp_gguf *g, const wpm *m, const char *key, const char *spelling,
                   int32_t *id, char *err, size_t err_len) {
    *id = sp_vocab_find(&m->v, spelling, strlen(spelling));
    if (sp_tok_get_id(g, key, m->v.n, id, err, err_len) != 0) return -1;
    return 0;
}

int sp_wpm_load(const sp_gguf *g, void **state, int64_t *n_vocab, char *err, size_t err_len) {
    wpm *m = calloc(1, sizeof *m);
    if (!m) {
        snprintf(err, err_len, "out of memory");
        return -1;
    }
    if (sp_vocab_load(&m->v, g, err, err_len) != 0) {
        free(m);
        return -1;
    }
    m->lower = 1;
    if (special(g, m, "tokenizer.ggml.cls_token_id", "[CLS]", &m->cls, err, err_len) ||
        special(g, m, "tokenizer.ggml.seperator_token_id", "[SEP]", &m->sep, err, err_len) ||
        special(g, m, "tokenizer.ggml.unknown_token_id", "[UNK]", &m->unk, err, err_len) ||
        special(g, m, "tokenizer.ggml.padding_token_id", "[PAD]", &m->pad, err, err_len) ||
        sp_tok_get_bool(g, "tokenizer.ggml.do_lower_case", &m->lower, err, err_len))
        goto fail;
    m->cont = sp_vocab_next(&m->v, SP_TRIE_ROOT, '#');
    if (m->cont != SP_TRIE_NONE) m->cont = sp_vocab_next(&m->v, m->cont, '#');
    m->strip = m->lower;
    if (sp_tok_get_bool(g, "tokenizer.ggml.strip_accents", &m->strip, err, err_len)) goto fail;
    if (m->unk < 0) {
        snprintf(err, err_len, "bert tokenizer: no unknown token (tokenizer.ggml.unknown_token_id or [UNK])");
        goto fail;
    }
    if (m->cls < 0 || m->sep < 0) {
        snprintf(err, err_len, "bert tokenizer: no [CLS]/[SEP] token (tokenizer.ggml.cls_token_id, "
                               "tokenizer.ggml.seperator_token_id)");
        goto fail;
    }
    *state = m;
    *n_vocab = m->v.n;
    return 0;
fail:
    sp_vocab_free(&m->v);
    free(m);
    return -1;
}

void sp_wpm_free(void *state) {
    wpm *m = state;
    if (!m) return;
    sp_vocab_free(&m->v);
    free(m);
}

/* WordPiece on one word (UTF-8, n_chars characters): greedy longest match,
 * continuation pieces prefixed "##"; any unmatched rest makes the whole word
 * [UNK]. Longer than WPM_MAX_WORD_CHARS: [UNK] (w then holds only a prefix).
 * The longest piece at start is found walking the trie forward from there
 * (from the "##" node after the first piece) and keeping the last hit that
 * ends on a character boundary: the piece HF would find backing off one
 * character at a time, for one trie step per byte. */
static void wordpiece(const wpm *m, const char *w, size_t len, size_t n_chars, sp_ids *o) {
    if (n_chars > WPM_MAX_WORD_CHARS) {
        sp_ids_push(o, m->unk);
        return;
    }
    int64_t first = o->n;
    size_t start = 0;
    while (start < len) {
        size_t end = start;
        int32_t id = -1;
        uint32_t nd = start > 0 ? m->cont : SP_TRIE_ROOT; /* NONE: no "##" piece at all */
        for (size_t e = start + 1; e <= len && nd != SP_TRIE_NONE; e++) {
            nd = sp_vocab_next(&m->v, nd, (unsigned char)w[e - 1]);
            if (nd == SP_TRIE_NONE) break;
            if (e < len && ((unsigned char)w[e] & 0xC0) == 0x80) continue; /* mid-character */
            if (m->v.tok[nd] >= 0) {
                id = m->v.tok[nd];
                end = e;
            }
        }
        if (id < 0) {
            o->n = first; /* drop the pieces written so far */
            sp_ids_push(o, m->unk);
            return;
        }
        sp_ids_push(o, id);
        start = end;
    }
}

int sp_wpm_tokenize(const void *state, const char *text, size_t len, int add_special, sp_ids *o) {
    const wpm *m = state;
    const unsigned char *s = (const unsigned char *)text;
    /* Only the current word is kept, and only its first 101 characters: a
     * longer word is [UNK] whatever it holds. */
    char norm[(WPM_MAX_WORD_CHARS + 6) * 4 + 8];
    if (add_special) sp_ids_push(o, m->cls);

    /* Normalize: clean, isolate CJK ideographs, strip accents, lower-case.
     * Words end at spaces; punctuation is a word of its own. The current
     * word collects in norm[0..nb) and goes to WordPiece when it ends. */
    size_t nb = 0, wchars = 0;
#define END_WORD()                                        \
    do {                                                  \
        if (wchars) wordpiece(m, norm, nb, wchars, o);    \
        nb = 0;                                           \
        wchars = 0;                                       \
    } while (0)
    for (size_t i = 0; i < len;) {
        size_t adv;
        uint32_t cp = sp_utf8_next(s, len, i, &adv);
        i += adv;
        if (cp == UINT32_MAX || cp == 0 || cp == 0xFFFD || sp_uc_bert_removed(cp)) continue;
        if (cp == ' ' || cp == '\t' || cp == '\n' || cp == '\r' || sp_uc_bert_space(cp)) {
            END_WORD();
            continue;
        }
        uint32_t a[3], b[3];
        int na = 1;
        a[0] = cp;
        int cjk = sp_uc_bert_chinese(cp);
        if (m->strip) na = sp_uc_strip(cp, a);
        if (cjk) END_WORD();
        for (int k = 0; k < na; k++) {
            int nl = 1;
            b[0] = a[k];
            if (m->lower) nl = sp_uc_lower(a[k], b);
            for (int j = 0; j < nl; j++) {
                int p = sp_uc_bert_punct(b[j]);
                if (p) END_WORD();
                        if (wchars <= WPM_MAX_WORD_CHARS) nb += (size_t)sp_utf8_put(b[j], norm + nb);
                wchars++;
                if (p) END_WORD();
            }
        }
        if (cjk) END_WORD();
    }
    END_WORD();
#undef END_WORD
    if (add_special) sp_ids_push(o, m->sep);
    return 0;
}

/* ---- pieces ---------------------------------------------------------- */

int32_t sp_wpm_end_token(const void *state) { return ((const wpm *)state)->sep; }

int sp_wpm_is_control(const void *state, int32_t id) {
    const wpm *m = state;
    return id == m->cls || id == m->sep || id == m->pad;
}

/* As HF's WordPiece decoder joins pieces: a continuation "##x" is "x", any
 * other piece starts a word and so a space; control tokens as spelled. */
int64_t sp_wpm_piece(const void *state, int32_t id, char *out, int64_t size) {
    const wpm *m = state;
    const char *s = m->v.blob + m->v.off[id];
    const size_t len = (size_t)(m->v.off[id + 1] - m->v.off[id]);
    if (sp_wpm_is_control(m, id)) return sp_piece_put(out, size, 0, s, len);
    if (len > 2 && s[0] == '#' && s[1] == '#') return sp_piece_put(out, size, 0, s + 2, len - 2);
    return sp_piece_put(out, size, sp_piece_put(out, size, 0, " ", 1), s, len);
}
