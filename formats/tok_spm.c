/* tokenizer.ggml.model = "llama": SentencePiece unigram segmentation, matching
 * the `sentencepiece` library on a model trained with the identity
 * normalization rule and remove_extra_whitespaces=false (llama.cpp does no
 * normalization either): ' ' becomes U+2581, one U+2581 is prefixed to
 * non-empty text, and the segmentation is the Viterbi best path by piece
 * scores.
 *
 * Keys: tokenizer.ggml.tokens, tokenizer.ggml.scores (required, f32),
 * tokenizer.ggml.token_type (i32: 1 normal, 2 unknown, 3 control,
 * 4 user-defined, 5 unused, 6 byte), tokenizer.ggml.bos_token_id,
 * eos_token_id, unknown_token_id, add_bos_token (default true),
 * add_eos_token (default false).
 *
 * Unknown characters: runs of them become one unknown token, or, when the
 * vocabulary has all 256 <0xNN> byte tokens, their UTF-8 bytes. Bytes that
 * are not valid UTF-8 become U+FFFD one byte at a time, as sentencepiece's
 * normalizer does. */
#include <float.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "formats/tok_internal.h"

#define SPM_UNK_PENALTY 10.0f /* sentencepiece's kUnkPenalty */

enum { T_UNDEF = 0, T_NORMAL = 1, T_UNKNOWN = 2, T_CONTROL = 3, T_USER = 4, T_UNUSED = 5, T_BYTE = 6 };

typedef struct {
    sp_vocab v;
    int32_t bos, eos, unk;
    int add_bos, add_eos;
    int byte_fallback;
    int32_t byte_id[256];
    float min_score, max_score;
    uint8_t *matchable; /* n: may a piece of text become this token? */
} spm;

int sp_spm_load(const sp_gguf *g, void **state, int64_t *n_vocab, char *err, size_t err_len) {
    spm *m = calloc(1, sizeof *m);
    if (!m) {
        snprintf(err, err_len, "out of memory");
        return -1;
    }
    if (sp_vocab_load(&m->v, g, err, err_len) != 0) {
        free(m);
        return -1;
    }
    const sp_vocab *v = &m->v;
    if (!v->scores) {
        snprintf(err, err_len, "missing key tokenizer.ggml.scores (required by the llama tokenizer)");
        goto fail;
    }
    m->bos = sp_vocab_find(v, "<s>", 3);
    m->eos = sp_vocab_find(v, "</s>", 4);
    m->unk = -1;
    for (int64_t i = 0; i < v->n && v->types; i++)
        if (v->types[i] == T_UNKNOWN) {
            m->unk = (int32_t)i;
            break;
        }
    if (m->unk < 0) m->unk = sp_vocab_find(v, "<unk>", 5);
    m->add_bos = 1;
    if (sp_tok_get_id(g, "tokenizer.ggml.bos_token_id", v->n, &m->bos, err, err_len) ||
        sp_tok_get_id(g, "tokenizer.ggml.eos_token_id", v->n, &m->eos, err, err_len) ||
        sp_tok_get_id(g, "tokenizer.ggml.unknown_token_id", v->n, &m->unk, err, err_len) ||
        sp_tok_get_bool(g, "tokenizer.ggml.add_bos_token", &m->add_bos, err, err_len) ||
        sp_tok_get_bool(g, "tokenizer.ggml.add_eos_token", &m->add_eos, err, err_len))
        goto fail;
    if (m->unk < 0) {
        snprintf(err, err_len, "llama tokenizer: no unknown token (tokenizer.ggml.unknown_token_id)");
        goto fail;
    }
    if ((m->add_bos && m->bos < 0) || (m->add_eos && m->eos < 0)) {
        snprintf(err, err_len, "llama tokenizer: add_%s_token is set but there is no %s token id",
                 m->add_bos && m->bos < 0 ? "bos" : "eos", m->add_bos && m->bos < 0 ? "bos" : "eos");
        goto fail;
    }
    m->matchable = malloc((size_t)v->n);
    if (!m->matchable) {
        snprintf(err, err_len, "out of memory");
        goto fail;
    }
    /* As sentencepiece: only normal and user-defined pieces match text;
     * min/max scores are taken over normal pieces (max starts at FLT_MIN). */
    m->min_score = FLT_MAX;
    m->max_score = FLT_MIN;
    for (int64_t i = 0; i < v->n; i++) {
        int t = v->types ? v->types[i] : T_NORMAL;
        if (!v->types && (i == m->bos || i == m->eos || i == m->unk)) t = T_CONTROL;
        if (t == T_UNDEF) t = T_NORMAL;
        m->matchable[i] = t == T_NORMAL || t == T_USER;
        if (t == T_NORMAL) {
            if (v->scores[i] < m->min_score) m->min_score = v->scores[i];
            if (v->scores[i] > m->max_score) m->max_score = v->scores[i];
        }
    }
    if (m->min_score == FLT_MAX) m->min_score = 0.0f;
    /* Byte fallback needs every <0xNN> token. */
    m->byte_fallback = 1;
    for (int b = 0; b < 256; b++) {
        char name[8];
        snprintf(name, sizeof name, "<0x%02X>", b);
        m->byte_id[b] = sp_vocab_find(v, name, 6);
        if (m->byte_id[b] < 0 || (v->types && v->types[m->byte_id[b]] != T_BYTE)) m->byte_fallback = 0;
    }
    *state = m;
    *n_vocab = v->n;
    return 0;
fail:
    sp_vocab_free(&m->v);
    free(m->matchable);
    free(m);
    return -1;
}

void sp_spm_free(void *state) {
    spm *m = state;
    if (!m) return;
    sp_vocab_free(&m->v);
    free(m->matchable);
    free(m);
}

typedef struct {
    float score;
    int32_t id;    /* -1: not reached */
    uint32_t from; /* start of the piece ending here */
} node;

static void emit(const spm *m, const char *n, uint32_t a, uint32_t b, int32_t id, sp_ids *o) {
    if (id == m->unk && m->byte_fallback) {
        for (uint32_t k = a; k < b; k++) sp_ids_push(o, m->byte_id[(unsigned char)n[k]]);
    } else {
        sp_ids_push(o, id);
    }
}

int sp_spm_tokenize(const void *state, const char *text, size_t len, int add_special, sp_ids *o) {
    const spm *m = state;
    const unsigned char *s = (const unsigned char *)text;
    if (add_special && m->add_bos) sp_ids_push(o, m->bos);
    if (len > 0) {
        if (len > (UINT32_MAX - 8) / 3) return -1;
        /* Normalize: dummy prefix, ' ' -> U+2581, bad bytes -> U+FFFD each. */
        char *n = malloc(3 * len + 3);
        node *best = malloc((3 * len + 4) * sizeof *best);
        uint32_t *path = malloc((3 * len + 4) * sizeof *path);
        if (!n || !best || !path) {
            free(n);
            free(best);
            free(path);
            return -1;
        }
        size_t L = 0;
        memcpy(n, "\xE2\x96\x81", 3);
        L = 3;
        for (size_t i = 0; i < len;) {
            size_t adv;
            uint32_t cp = sp_utf8_next(s, len, i, &adv);
            if (cp == UINT32_MAX) {
                memcpy(n + L, "\xEF\xBF\xBD", 3);
                L += 3;
                i += 1;
            } else if (cp == ' ') {
                memcpy(n + L, "\xE2\x96\x81", 3);
                L += 3;
                i += 1;
            } else {
                memcpy(n + L, s + i, adv);
                L += adv;
                i += adv;
            }
        }
        /* Viterbi over byte positions; candidates in sentencepiece's order
         * (start ascending, then length ascending) with a strict '>' so
         * ties resolve the same way. Scores are floats as there. */
        const float unk_score = m->min_score - SPM_UNK_PENALTY;
        for (size_t i = 0; i <= L; i++) best[i].id = -1;
        best[0].score = 0.0f;
        best[0].id = 0;
        for (size_t pos = 0; pos < L;) {
            size_t mblen;
            (void)sp_utf8_next((const unsigned char *)n, L, pos, &mblen);
            const float here = best[pos].score;
            int single = 0;
            size_t maxl = m->v.max_len < L - pos ? m->v.max_len : L - pos;
            for (size_t l = 1; l <= maxl; l++) {
                size_t end = pos + l;
                if (end < L && ((unsigned char)n[end] & 0xC0) == 0x80) continue; /* mid-character */
                int32_t id = sp_vocab_find(&m->v, n + pos, l);
                if (id < 0 || !m->matchable[id]) continue;
                float sc = (m->v.types && m->v.types[id] == T_USER)
                               ? (float)((double)((float)l * m->max_score) - 0.1)
                               : m->v.scores[id];
                float cand = sc + here;
                if (best[end].id < 0 || cand > best[end].score) {
                    best[end].score = cand;
                    best[end].id = id;
                    best[end].from = (uint32_t)pos;
                }
                if (l == mblen) single = 1;
            }
            if (!single) {
                size_t end = pos + mblen;
                float cand = unk_score + here;
                if (best[end].id < 0 || cand > best[end].score) {
                    best[end].score = cand;
                    best[end].id = m->unk;
                    best[end].from = (uint32_t)pos;
                }
            }
            pos += mblen;
        }
        size_t np = 0;
        for (size_t e = L; e > 0; e = best[e].from) path[np++] = (uint32_t)e;
        /* Walk forward; a run of unknown pieces becomes one. */
        uint32_t run_a = 0, run_b = 0;
        int in_run = 0;
        for (size_t k = np; k-- > 0;) {
            uint32_t e = path[k];
            uint32_t a = best[e].from;
            int32_t id = best[e].id;
            if (id == m->unk) {
                if (!in_run) run_a = a;
                run_b = e;
                in_run = 1;
                continue;
            }
            if (in_run) emit(m, n, run_a, run_b, m->unk, o);
            in_run = 0;
            emit(m, n, a, e, id, o);
        }
        if (in_run) emit(m, n, run_a, run_b, m->unk, o);
        free(n);
        free(best);
        free(path);
    }
    if (add_special && m->add_eos) sp_ids_push(o, m->eos);
    return 0;
}
