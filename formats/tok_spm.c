/* tokenizer.ggml.model = "llama": SentencePiece unigram segmentation, matching
 * the `sentencepiece` library: its normalizer (Normalizer::Normalize), then the
 * Viterbi best path by piece scores.
 *
 * Keys: tokenizer.ggml.tokens, tokenizer.ggml.scores (required, f32),
 * tokenizer.ggml.token_type (i32: 1 normal, 2 unknown, 3 control,
 * 4 user-defined, 5 unused, 6 byte), tokenizer.ggml.bos_token_id,
 * eos_token_id, unknown_token_id, add_bos_token (default true),
 * add_eos_token (default false), and the normalizer's (llama.cpp names):
 *   precompiled_charsmap      u8/i8 array: sentencepiece's
 *                             NormalizerSpec.precompiled_charsmap (e.g. the
 *                             nmt_nfkc rule); absent or empty: identity
 *   add_space_prefix          bool, default true (add_dummy_prefix)
 *   remove_extra_whitespaces  bool, default false (so files written before
 *                             these keys keep their behaviour)
 *
 * Normalization, as sentencepiece: at each input position a user-defined
 * piece (type 4) is copied as is (only with a charsmap: without one the
 * copy is the same text), else the longest charsmap rule gives its
 * replacement, else one UTF-8 character is copied (a byte that does not
 * start a valid character becomes U+FFFD, one byte consumed).
 * remove_extra_whitespaces drops leading input that normalizes to " ",
 * spaces that follow a space in the normalized text, and trailing U+2581s
 * (a literal U+2581 in the text, and the dummy prefix of text that
 * normalizes to nothing, included). add_space_prefix puts one U+2581 before
 * non-empty text; every ' ' becomes U+2581. Not supported:
 * escape_whitespaces=false and treat_whitespace_as_suffix (not stored in
 * GGUF).
 *
 * The charsmap is a darts-clone double array ("XCDA") of uint32 units
 * followed by NUL-terminated replacement strings. It comes from the file,
 * so loading walks every trie node reachable from the root and checks each
 * unit index a lookup can read, each replacement offset, and that there
 * is no cycle; lookups then need no checks but keep cheap ones anyway.
 *
 * Unknown characters: runs of them become one unknown token, or, when the
 * vocabulary has all 256 <0xNN> byte tokens, their UTF-8 bytes. */
#include <float.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "formats/tok_internal.h"

#define SPM_UNK_PENALTY 10.0f  /* sentencepiece's kUnkPenalty */
#define SPM_MAX_TRIE_RESULTS 32 /* sentencepiece's kMaxTrieResultsSize */
#define SPM_SPACE "\xE2\x96\x81" /* U+2581, what ' ' becomes */

enum { T_UNDEF = 0, T_NORMAL = 1, T_UNKNOWN = 2, T_CONTROL = 3, T_USER = 4, T_UNUSED = 5, T_BYTE = 6 };

typedef struct {
    sp_vocab v;
    int32_t bos, eos, unk;
    int add_bos, add_eos;
    int byte_fallback;
    int32_t byte_id[256];
    float min_score, max_score;
    uint8_t *matchable; /* n: may a piece of text become this token? */
    /* Normalizer. */
    int add_prefix, remove_ws;
    uint32_t *units; /* charsmap trie, n_units; NULL: identity */
    size_t n_units;
    char *repl; /* replacement strings, n_repl bytes, the last one NUL */
    size_t n_repl;
    size_t max_user; /* longest user-defined piece (0: none); used with a charsmap */
} spm;

/* ---- charsmap trie (darts-clone's unit layout) ----------------------- */

static uint32_t xc_offset(uint32_t u) { return (u >> 10) << ((u & (1u << 9)) >> 6); }
static uint32_t xc_label(uint32_t u) { return u & ((1u << 31) | 0xFFu); } /* value units never match */
static int xc_has_leaf(uint32_t u) { return (u >> 8) & 1; }
static uint32_t xc_value(uint32_t u) { return u & ((1u << 31) - 1); }

/* Walks every node reachable from the root (depth first, each node once).
 * A lookup at node base b reads units b ^ c for every byte c, so the whole
 * 256-unit block of b must be inside the array (darts-clone allocates whole
 * blocks). NUL bytes are never followed (see charsmap_match). */
static int check_trie(const uint32_t *u, size_t n, size_t n_repl, char *err, size_t err_len) {
    const char *key = "tokenizer.ggml.precompiled_charsmap";
    uint32_t root = xc_offset(u[0]);
    if ((size_t)(root | 0xFFu) >= n) {
        snprintf(err, err_len, "%s: trie root index %u is out of range (%zu units)", key, root, n);
        return -1;
    }
    uint8_t *state = calloc(n, 1); /* 0 new, 1 on the DFS path, 2 done */
    uint32_t(*stack)[2] = malloc(n * sizeof *stack); /* {base, next byte}; a base is pushed once */
    if (!state || !stack) {
        free(state);
        free(stack);
        snprintf(err, err_len, "out of memory checking %s", key);
        return -1;
    }
    int rc = 0;
    size_t sp = 0;
    stack[sp][0] = root;
    stack[sp][1] = 1;
    sp++;
    state[root] = 1;
    while (sp > 0 && rc == 0) {
        uint32_t b = stack[sp - 1][0], c = stack[sp - 1][1]++;
        if (c > 0xFF) {
            state[b] = 2;
            sp--;
            continue;
        }
        uint32_t q = b ^ c;
        if (xc_label(u[q]) != c) continue;
        uint32_t nb = q ^ xc_offset(u[q]);
        if ((size_t)(nb | 0xFFu) >= n) {
            snprintf(err, err_len, "%s: trie index %u is out of range (%zu units)", key, nb, n);
            rc = -1;
        } else if (xc_has_leaf(u[q]) && xc_value(u[nb]) >= n_repl) {
            snprintf(err, err_len, "%s: replacement offset %u is past the %zu bytes of strings", key,
                     xc_value(u[nb]), n_repl);
            rc = -1;
        } else if (state[nb] == 1) {
            snprintf(err, err_len, "%s: the trie has a cycle", key);
            rc = -1;
        } else if (state[nb] == 0) {
            state[nb] = 1;
            stack[sp][0] = nb;
            stack[sp][1] = 1;
            sp++;
        }
    }
    free(state);
    free(stack);
    return rc;
}

/* tokenizer.ggml.precompiled_charsmap: u32 LE trie size in bytes, the trie's
 * uint32 LE units, then the NUL-terminated replacement strings. */
static int load_charsmap(spm *m, const sp_gguf *g, char *err, size_t err_len) {
    const char *key = "tokenizer.ggml.precompiled_charsmap";
    int64_t k = sp_gguf_find_key(g, key);
    if (k < 0) return 0;
    if (sp_gguf_kv_type(g, k) != SP_GGUF_TYPE_ARRAY ||
        (sp_gguf_arr_type(g, k) != SP_GGUF_TYPE_UINT8 && sp_gguf_arr_type(g, k) != SP_GGUF_TYPE_INT8)) {
        snprintf(err, err_len, "%s must be an array of uint8 or int8", key);
        return -1;
    }
    uint64_t n = sp_gguf_arr_n(g, k);
    if (n == 0) return 0; /* what the identity rule stores */
    const unsigned char *b = sp_gguf_arr_data(g, k);
    if (n < 4) {
        snprintf(err, err_len, "%s is truncated: %llu bytes, shorter than its 4-byte size header", key,
                 (unsigned long long)n);
        return -1;
    }
    uint32_t tsz = (uint32_t)b[0] | (uint32_t)b[1] << 8 | (uint32_t)b[2] << 16 | (uint32_t)b[3] << 24;
    if (tsz > n - 4) {
        snprintf(err, err_len, "%s: trie size %u exceeds the %llu bytes after the size header", key, tsz,
                 (unsigned long long)(n - 4));
        return -1;
    }
    if (tsz == 0 || tsz % 4 != 0) {
        snprintf(err, err_len, "%s: trie size %u is not a positive multiple of 4", key, tsz);
        return -1;
    }
    size_t nu = tsz / 4, nr = (size_t)(n - 4 - tsz);
    if (nr > 0 && b[n - 1] != 0) {
        snprintf(err, err_len, "%s: the replacement strings do not end with a NUL", key);
        return -1;
    }
    m->units = malloc(nu * sizeof *m->units);
    m->repl = malloc(nr ? nr : 1);
    if (!m->units || !m->repl) {
        snprintf(err, err_len, "out of memory loading %s", key);
        return -1;
    }
    for (size_t i = 0; i < nu; i++) {
        const unsigned char *p = b + 4 + 4 * i;
        m->units[i] = (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
    }
    if (nr) memcpy(m->repl, b + 4 + tsz, nr);
    m->n_units = nu;
    m->n_repl = nr;
    return check_trie(m->units, nu, nr, err, err_len);
}

/* Longest charsmap rule that is a prefix of s[i..len): its length in bytes
 * (0: none) and *repl its replacement. As darts-clone's commonPrefixSearch
 * with sentencepiece's result limit: only the first SPM_MAX_TRIE_RESULTS
 * matches count (sentencepiece's builder never makes more). A NUL byte ends
 * the walk: darts-clone keys cannot contain one. */
static size_t charsmap_match(const spm *m, const unsigned char *s, size_t len, size_t i, const char **repl) {
    const uint32_t *u = m->units;
    uint32_t b = xc_offset(u[0]), val = 0;
    size_t best = 0;
    int hits = 0;
    for (size_t k = i; k < len && s[k] != 0; k++) {
        uint32_t q = b ^ s[k];
        if (q >= m->n_units || xc_label(u[q]) != s[k]) break;
        b = q ^ xc_offset(u[q]);
        if (b >= m->n_units) break; /* check_trie rules this out */
        if (xc_has_leaf(u[q])) {
            best = k - i + 1;
            val = xc_value(u[b]);
            if (++hits == SPM_MAX_TRIE_RESULTS) break;
        }
    }
    if (best == 0 || val >= m->n_repl) return 0;
    *repl = m->repl + val;
    return best;
}

/* ---- load ------------------------------------------------------------ */

/* A token's type; without a token_type array, the bos, eos and unknown ids
 * are control tokens and every other one is normal. */
static int token_type(const spm *m, int32_t id) {
    int t = m->v.types ? m->v.types[id] : T_NORMAL;
    if (!m->v.types && (id == m->bos || id == m->eos || id == m->unk)) t = T_CONTROL;
    return t == T_UNDEF ? T_NORMAL : t;
}

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
    m->add_prefix = 1;
    if (sp_tok_get_id(g, "tokenizer.ggml.bos_token_id", v->n, &m->bos, err, err_len) ||
        sp_tok_get_id(g, "tokenizer.ggml.eos_token_id", v->n, &m->eos, err, err_len) ||
        sp_tok_get_id(g, "tokenizer.ggml.unknown_token_id", v->n, &m->unk, err, err_len) ||
        sp_tok_get_bool(g, "tokenizer.ggml.add_bos_token", &m->add_bos, err, err_len) ||
        sp_tok_get_bool(g, "tokenizer.ggml.add_eos_token", &m->add_eos, err, err_len) ||
        sp_tok_get_bool(g, "tokenizer.ggml.add_space_prefix", &m->add_prefix, err, err_len) ||
        sp_tok_get_bool(g, "tokenizer.ggml.remove_extra_whitespaces", &m->remove_ws, err, err_len) ||
        load_charsmap(m, g, err, err_len))
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
        const int t = token_type(m, (int32_t)i);
        m->matchable[i] = t == T_NORMAL || t == T_USER;
        if (t == T_NORMAL) {
            if (v->scores[i] < m->min_score) m->min_score = v->scores[i];
            if (v->scores[i] > m->max_score) m->max_score = v->scores[i];
        }
        if (t == T_USER) {
            size_t l = v->off[i + 1] - v->off[i];
            if (l > m->max_user) m->max_user = l;
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
    sp_spm_free(m);
    return -1;
}

void sp_spm_free(void *state) {
    spm *m = state;
    if (!m) return;
    sp_vocab_free(&m->v);
    free(m->matchable);
    free(m->units);
    free(m->repl);
    free(m);
}

/* ---- normalization --------------------------------------------------- */

typedef struct {
    char *p;
    size_t n, cap;
} buf;

static int buf_reserve(buf *o, size_t need) {
    if (need <= o->cap) return 0;
    size_t cap = o->cap ? o->cap : 64;
    while (cap < need) {
        if (cap > SIZE_MAX / 2) return -1;
        cap *= 2;
    }
    char *p = realloc(o->p, cap);
    if (!p) return -1;
    o->p = p;
    o->cap = cap;
    return 0;
}

static int buf_put(buf *o, const char *s, size_t n) {
    if (n == 0) return 0;
    if (n > SIZE_MAX - o->n || buf_reserve(o, o->n + n)) return -1;
    memcpy(o->p + o->n, s, n);
    o->n += n;
    return 0;
}

/* sentencepiece's NormalizePrefix: the normalized form (*out, *out_len) of
 * the next piece of s[i..len); returns the input bytes it consumes (>= 1). */
static size_t norm_prefix(const spm *m, const unsigned char *s, size_t len, size_t i, const char **out,
                          size_t *out_len) {
    if (m->units) {
        /* User-defined pieces are kept verbatim (sentencepiece's PrefixMatcher).
         * The longest one wins: walk the trie forward and keep the last
         * hit. Capped at the longest user piece so a long token of another
         * type cannot lengthen the walk. */
        size_t maxl = m->max_user < len - i ? m->max_user : len - i, hit = 0;
        uint32_t nd = SP_TRIE_ROOT;
        for (size_t l = 1; l <= maxl; l++) {
            nd = sp_vocab_next(&m->v, nd, s[i + l - 1]);
            if (nd == SP_TRIE_NONE) break;
            int32_t id = m->v.tok[nd];
            if (id >= 0 && m->v.types && m->v.types[id] == T_USER) hit = l;
        }
        if (hit > 0) {
            *out = (const char *)s + i;
            *out_len = hit;
            return hit;
        }
        const char *r;
        size_t l = charsmap_match(m, s, len, i, &r);
        if (l > 0) {
            *out = r;
            *out_len = strlen(r); /* bounded: check_trie/load ensure a NUL follows */
            return l;
        }
    }
    size_t adv;
    if (sp_utf8_next(s, len, i, &adv) == UINT32_MAX) {
        *out = "\xEF\xBF\xBD";
        *out_len = 3;
        return 1;
    }
    *out = (const char *)s + i;
    *out_len = adv;
    return adv;
}

/* sentencepiece's Normalizer::Normalize (escape_whitespaces on, whitespace
 * as a prefix). Appends to o; -1 on out of memory. */
static int normalize(const spm *m, const unsigned char *s, size_t len, buf *o) {
    size_t i = 0;
    const char *p;
    size_t pl;
    if (m->remove_ws) { /* leading input that normalizes to exactly " " */
        while (i < len) {
            size_t used = norm_prefix(m, s, len, i, &p, &pl);
            if (pl != 1 || p[0] != ' ') break;
            i += used;
        }
    }
    if (i == len) return 0; /* empty, or whitespace only */
    if (m->add_prefix && buf_put(o, SPM_SPACE, 3)) return -1;
    int prev_space = m->remove_ws;
    while (i < len) {
        i += norm_prefix(m, s, len, i, &p, &pl);
        while (prev_space && pl > 0 && p[0] == ' ') { /* no space right after a space */
            p++;
            pl--;
        }
        if (pl > 0) {
            size_t a = 0;
            for (size_t k = 0; k < pl; k++) {
                if (p[k] != ' ') continue;
                if (buf_put(o, p + a, k - a) || buf_put(o, SPM_SPACE, 3)) return -1;
                a = k + 1;
            }
            if (buf_put(o, p + a, pl - a)) return -1;
            prev_space = p[pl - 1] == ' ';
        }
        if (!m->remove_ws) prev_space = 0;
    }
    if (m->remove_ws) /* trailing U+2581s, whatever made them */
        while (o->n >= 3 && memcmp(o->p + o->n - 3, SPM_SPACE, 3) == 0) o->n -= 3;
    return 0;
}

/* ---- segmentation ---------------------------------------------------- */

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
    buf nb = {NULL, 0, 0};
    /* Usually 3 bytes per input byte are enough (U+FFFD, U+2581); a charsmap
     * rule may expand more, and the buffer then grows. */
    if (len > 0 && (len > SIZE_MAX / 4 || buf_reserve(&nb, 3 * len + 3) || normalize(m, s, len, &nb))) {
        free(nb.p);
        return -1;
    }
    const char *n = nb.p;
    size_t L = nb.n;
    if (L > 0) {
        if (L > UINT32_MAX - 8 || L + 1 > SIZE_MAX / sizeof(node)) {
            free(nb.p);
            return -1;
        }
        node *best = malloc((L + 1) * sizeof *best);
        uint32_t *path = malloc((L + 1) * sizeof *path);
        if (!best || !path) {
            free(nb.p);
            free(best);
            free(path);
            return -1;
        }
        /* Viterbi over byte positions; candidates in sentencepiece's order
         * (start ascending, then length ascending) with a strict '>' so
         * ties resolve the same way. Scores are floats as there. The cost
         * is O(L x the longest token prefix found at each position): a text
         * that does match a very long token still pays that match's length
         * at every position, as in sentencepiece and llama.cpp. */
        const float unk_score = m->min_score - SPM_UNK_PENALTY;
        for (size_t i = 0; i <= L; i++) best[i].id = -1;
        best[0].score = 0.0f;
        best[0].id = 0;
        for (size_t pos = 0; pos < L;) {
            size_t mblen;
            (void)sp_utf8_next((const unsigned char *)n, L, pos, &mblen);
            const float here = best[pos].score;
            int single = 0;
            /* Pieces starting here, shortest first: one trie step per byte,
             * stopping where no token has n[pos..end) as a prefix. */
            uint32_t nd = SP_TRIE_ROOT;
            for (size_t l = 1; l <= L - pos; l++) {
                size_t end = pos + l;
                nd = sp_vocab_next(&m->v, nd, (unsigned char)n[end - 1]);
                if (nd == SP_TRIE_NONE) break;
                if (end < L && ((unsigned char)n[end] & 0xC0) == 0x80) continue; /* mid-character */
                int32_t id = m->v.tok[nd];
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
        free(best);
        free(path);
    }
    free(nb.p);
    if (add_special && m->add_eos) sp_ids_push(o, m->eos);
    return 0;
}

/* ---- pieces ---------------------------------------------------------- */

int32_t sp_spm_end_token(const void *state) {
    const spm *m = state;
    return m->add_eos ? m->eos : -1;
}

int sp_spm_is_control(const void *state, int32_t id) { return token_type(state, id) == T_CONTROL; }

/* Normal pieces with U+2581 as spaces, <0xNN> byte tokens as their byte,
 * any other type (control, unknown, user-defined, unused) as spelled. */
int64_t sp_spm_piece(const void *state, int32_t id, char *out, int64_t size) {
    const spm *m = state;
    const char *s = m->v.blob + m->v.off[id];
    const size_t len = (size_t)(m->v.off[id + 1] - m->v.off[id]);
    const int t = token_type(m, id);
    if (t == T_BYTE && len == 6 && !memcmp(s, "<0x", 3) && s[5] == '>') {
        unsigned b;
        if (sscanf(s + 3, "%2x", &b) == 1) {
            const char c = (char)b;
            return sp_piece_put(out, size, 0, &c, 1);
        }
    }
    if (t != T_NORMAL) return sp_piece_put(out, size, 0, s, len);
    int64_t n = 0;
    size_t a = 0;
    for (size_t k = 0; k + 3 <= len; k++) {
        if (memcmp(s + k, SPM_SPACE, 3)) continue;
        n = sp_piece_put(out, size, n, s + a, k - a);
        n = sp_piece_put(out, size, n, " ", 1);
        a = k + 3;
        k += 2;
    }
    return sp_piece_put(out, size, n, s + a, len - a);
}
