/* The lexical sketch: an optional second part of a pooled embedding that
 * keeps which word pieces a document contains, which a 256-wide dense
 * encoder blurs (a rare identifier, a name). It is a signed feature hash
 * (a count sketch) of the document's bag of tokens:
 *
 *   sketch[bucket[v]] += weight[v] * sqrt(count of token v in the document)
 *
 * for every distinct token v; weight carries the sign and an IDF-like
 * weight (zero for tokens every document has). The runtime appends
 * scale * sketch / |sketch| to the unit-length dense embedding. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "models/model.h"

#define MAX_SKETCH_DIMS 65536

void sp_lexical_free(sp_lexical *lx) {
    free(lx->bucket);
    free(lx->weight);
    memset(lx, 0, sizeof *lx);
}

/* A [n_vocab] tensor of the given type, or 1 when absent. */
static int find_vector(const sp_gguf *g, const char *name, int64_t n_vocab, const sp_gguf_tensor **out,
                       char *err, size_t err_len) {
    const int64_t i = sp_gguf_find_tensor(g, name);
    if (i < 0) return 1;
    const sp_gguf_tensor *t = sp_gguf_tensor_at(g, i);
    int64_t n = 1;
    for (uint32_t d = 0; d < t->n_dims; d++) n *= t->ne[d];
    if (t->ne[0] != n_vocab || n != n_vocab) {
        snprintf(err, err_len, "tensor %s has %lld values, expected one per vocabulary entry (%lld)", name,
                 (long long)n, (long long)n_vocab);
        return -1;
    }
    *out = t;
    return 0;
}

int sp_lexical_load(const sp_gguf *g, const char *arch, int64_t n_vocab, sp_lexical *lx, char *err,
                    size_t err_len) {
    memset(lx, 0, sizeof *lx);
    char key_dims[96], key_scale[96];
    snprintf(key_dims, sizeof key_dims, "%s.lexical.dims", arch);
    snprintf(key_scale, sizeof key_scale, "%s.lexical.scale", arch);
    const sp_gguf_tensor *tb = NULL, *tw = NULL;
    const int rb = find_vector(g, "lexical.bucket", n_vocab, &tb, err, err_len);
    const int rw = find_vector(g, "lexical.weight", n_vocab, &tw, err, err_len);
    if (rb < 0 || rw < 0) return -1;
    const int has_key = sp_gguf_find_key(g, key_dims) >= 0;
    if (!has_key && rb && rw) return 0; /* no sketch: the common case */
    if (!has_key || rb || rw) {
        snprintf(err, err_len, "a lexical sketch needs the key %s and the tensors lexical.bucket and "
                 "lexical.weight together", key_dims);
        return -1;
    }
    int64_t dims = 0;
    if (sp_model_get_hparam(g, key_dims, 1, MAX_SKETCH_DIMS, &dims, err, err_len)) return -1;
    float scale = 1.0f;
    if (sp_model_get_eps(g, key_scale, &scale, err, err_len)) return -1; /* optional, > 0 */
    if (tb->type != SP_TENSOR_I32) {
        snprintf(err, err_len, "tensor lexical.bucket must be I32, not %s", sp_tensor_type_name(tb->type));
        return -1;
    }
    if (tw->type != SP_TENSOR_F32 && tw->type != SP_TENSOR_F16 && tw->type != SP_TENSOR_BF16) {
        snprintf(err, err_len, "tensor lexical.weight must be F32, F16 or BF16, not %s",
                 sp_tensor_type_name(tw->type));
        return -1;
    }
    lx->bucket = malloc((size_t)n_vocab * sizeof *lx->bucket);
    lx->weight = malloc((size_t)n_vocab * sizeof *lx->weight);
    if (!lx->bucket || !lx->weight) {
        sp_lexical_free(lx);
        snprintf(err, err_len, "out of memory loading the lexical sketch");
        return -1;
    }
    /* GGUF data is little-endian; like every tensor the runtime maps, this
     * assumes a little-endian host. memcpy: the data need not be aligned. */
    memcpy(lx->bucket, tb->data, (size_t)n_vocab * sizeof *lx->bucket);
    sp_convert_to_f32(tw->type, tw->data, lx->weight, (size_t)n_vocab);
    for (int64_t v = 0; v < n_vocab; v++) {
        if (lx->bucket[v] < 0 || lx->bucket[v] >= dims) {
            snprintf(err, err_len, "lexical.bucket[%lld] = %d is outside [0, %lld)", (long long)v,
                     (int)lx->bucket[v], (long long)dims);
            sp_lexical_free(lx);
            return -1;
        }
        if (!isfinite(lx->weight[v])) {
            snprintf(err, err_len, "lexical.weight[%lld] is not finite", (long long)v);
            sp_lexical_free(lx);
            return -1;
        }
    }
    lx->dims = dims;
    lx->scale = scale;
    return 0;
}

void sp_lexical_sketch(const sp_lexical *lx, const int32_t *tokens, int64_t T, uint32_t *counts,
                       float *out) {
    memset(out, 0, (size_t)lx->dims * sizeof *out);
    for (int64_t t = 0; t < T; t++) counts[tokens[t]]++;
    /* Each distinct token once, at its first occurrence; its count is then
     * cleared, which leaves counts all zero again for the next document. */
    for (int64_t t = 0; t < T; t++) {
        const int32_t v = tokens[t];
        if (!counts[v]) continue;
        out[lx->bucket[v]] += lx->weight[v] * sqrtf((float)counts[v]);
        counts[v] = 0;
    }
}
