/* Loading helpers shared by the architecture files: hyperparameters with
 * range checks, and tensors with shape checks and conversion to float32
 * (or, for the matrices a forward pass decodes itself, kept in ggml's
 * Q8_0/Q4_0 blocks); and the forward passes' access to those weights. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "formats/codec_sst.h"
#include "models/model.h"

int sp_model_get_hparam(const sp_gguf *g, const char *key, int64_t min, int64_t max, int64_t *out,
                        char *err, size_t err_len) {
    uint64_t v;
    int rc = sp_gguf_get_uint(g, key, &v);
    if (rc == -1) {
        snprintf(err, err_len, "missing key %s", key);
        return -1;
    }
    if (rc != 0) {
        snprintf(err, err_len, "key %s must be an unsigned integer", key);
        return -1;
    }
    if (v < (uint64_t)min || v > (uint64_t)max) {
        snprintf(err, err_len, "key %s = %llu is out of range [%lld, %lld]", key,
                 (unsigned long long)v, (long long)min, (long long)max);
        return -1;
    }
    *out = (int64_t)v;
    return 0;
}

int sp_model_get_eps(const sp_gguf *g, const char *key, float *eps, char *err, size_t err_len) {
    int64_t ki = sp_gguf_find_key(g, key);
    if (ki < 0) return 0;
    if (sp_gguf_kv_type(g, ki) != SP_GGUF_TYPE_FLOAT32) {
        snprintf(err, err_len, "key %s must be f32", key);
        return -1;
    }
    float v = sp_gguf_get_f32(g, ki);
    if (!(v > 0.0f) || !isfinite(v)) {
        snprintf(err, err_len, "key %s must be > 0", key);
        return -1;
    }
    *eps = v;
    return 0;
}

int sp_model_get_lengths(const sp_gguf *g, const char *key, int64_t max, int64_t *out, int n_max, int *n,
                         char *err, size_t err_len) {
    *n = 0;
    const int64_t ki = sp_gguf_find_key(g, key);
    if (ki < 0) return 0;
    const sp_gguf_type t = sp_gguf_kv_type(g, ki) == SP_GGUF_TYPE_ARRAY ? sp_gguf_arr_type(g, ki) : SP_GGUF_TYPE_COUNT;
    const int is_signed = t == SP_GGUF_TYPE_INT8 || t == SP_GGUF_TYPE_INT16 || t == SP_GGUF_TYPE_INT32 ||
                          t == SP_GGUF_TYPE_INT64;
    const size_t width = t == SP_GGUF_TYPE_UINT8 || t == SP_GGUF_TYPE_INT8     ? 1
                         : t == SP_GGUF_TYPE_UINT16 || t == SP_GGUF_TYPE_INT16 ? 2
                         : t == SP_GGUF_TYPE_UINT32 || t == SP_GGUF_TYPE_INT32 ? 4
                         : t == SP_GGUF_TYPE_UINT64 || t == SP_GGUF_TYPE_INT64 ? 8
                                                                               : 0;
    if (!width) {
        snprintf(err, err_len, "key %s must be an array of integers", key);
        return -1;
    }
    const uint64_t count = sp_gguf_arr_n(g, ki);
    if (count == 0 || count > (uint64_t)n_max) {
        snprintf(err, err_len, "key %s has %llu values, expected 1 to %d", key, (unsigned long long)count, n_max);
        return -1;
    }
    const unsigned char *data = sp_gguf_arr_data(g, ki);
    for (uint64_t j = 0; j < count; j++) {
        /* GGUF is little-endian; the value, sign-extended when the type is signed */
        uint64_t u = 0;
        for (size_t b = 0; b < width; b++) u |= (uint64_t)data[j * width + b] << (8 * b);
        int64_t v = (int64_t)u;
        if (is_signed && width < 8 && (u >> (8 * width - 1)) & 1) v = (int64_t)(u | (~0ULL << (8 * width)));
        if (v < 1 || v > max || (j > 0 && v <= out[j - 1])) {
            snprintf(err, err_len, "key %s: value %lld (index %llu) must be in [1, %lld] and above the one before",
                     key, (long long)v, (unsigned long long)j, (long long)max);
            return -1;
        }
        out[j] = v;
    }
    *n = (int)count;
    return 0;
}

int sp_model_get_hparams(const sp_loader *ld, const char *arch, int64_t ctx_min, int64_t ctx_max,
                         sp_model_hparams *hp) {
    /* Bounds keep every product below (T * D * F) comfortably inside int64. */
    const int64_t MAXDIM = 1 << 20;
    char key[128];
#define KEY(suffix) (snprintf(key, sizeof key, "%s." suffix, arch), key)
    if (sp_model_get_hparam(ld->g, KEY("embedding_length"), 1, MAXDIM, &hp->D, ld->err, ld->err_len) ||
        sp_model_get_hparam(ld->g, KEY("feed_forward_length"), 1, MAXDIM, &hp->F, ld->err, ld->err_len) ||
        sp_model_get_hparam(ld->g, KEY("block_count"), 1, 4096, &hp->L, ld->err, ld->err_len))
        return -1;
    if (sp_gguf_find_key(ld->g, KEY("context_length")) >= 0 &&
        sp_model_get_hparam(ld->g, key, ctx_min, ctx_max, &hp->ctx, ld->err, ld->err_len))
        return -1;
    if (sp_gguf_find_key(ld->g, KEY("pooling_type")) >= 0 &&
        sp_model_get_hparam(ld->g, key, 0, 3, &hp->pooling, ld->err, ld->err_len))
        return -1;
    return sp_model_get_eps(ld->g, KEY("attention.layer_norm_epsilon"), &hp->eps, ld->err, ld->err_len);
#undef KEY
}

static void format_shape(char *buf, size_t len, uint32_t n_dims, const int64_t *ne) {
    buf[0] = 0;
    for (uint32_t d = 0; d < n_dims && d < SP_GGUF_MAX_DIMS; d++)
        snprintf(buf + strlen(buf), len - strlen(buf), "%s%lld", d ? ", " : "", (long long)ne[d]);
}

static int take_sst(const sp_sst_ref *sst, int also_dense, sp_owned_buffers *owned, const char *name,
                    uint32_t n_dims, const int64_t *ne, sp_weight_list *wl, int64_t *index, char *err,
                    size_t err_len) {
    if (also_dense) {
        snprintf(err, err_len, "tensor %s is stored both dense and as %s%s", name, name, SP_SST_VALUES_SUFFIX);
        return -1;
    }
    int ok = n_dims <= 2 && sst->ne[0] == ne[0] && sst->ne[1] == (n_dims == 2 ? ne[1] : 1);
    for (uint32_t d = 2; ok && d < n_dims; d++) ok = ne[d] == 1;
    if (!ok) {
        char got[96], exp[96];
        format_shape(got, sizeof got, 2, sst->ne);
        format_shape(exp, sizeof exp, n_dims, ne);
        snprintf(err, err_len, "sparse spectral tensor %s has shape [%s], expected [%s]", name, got, exp);
        return -1;
    }
    if (!wl) return 0;
    const int64_t n = sst->ne[0] * sst->ne[1];
    float *buf = malloc((size_t)n * sizeof(float));
    if (!buf || sp_owned_add(owned, buf)) {
        free(buf);
        snprintf(err, err_len, "out of memory reconstructing tensor %s", name);
        return -1;
    }
    if (sp_sst_decode_ref(sst, buf, err, err_len)) return -1;
    if (sp_weight_list_push(wl, buf, SP_WEIGHT_F32, n)) {
        snprintf(err, err_len, "out of memory");
        return -1;
    }
    *index = wl->n - 1;
    return 0;
}

static int take_tensor(const sp_gguf *g, sp_owned_buffers *owned, const char *name, int optional,
                       uint32_t n_dims, const int64_t *ne, sp_weight_list *wl, int64_t *index,
                       int keep_quantized, char *err, size_t err_len) {
    *index = -1;
    int64_t ti = sp_gguf_find_tensor(g, name);
    /* A sparse spectral tensor (NAME.sst_values + NAME.sst_index) stands for
     * NAME and is reconstructed into a dense float32 copy here, once. */
    sp_sst_ref sst;
    const int sr = sp_sst_find(g, name, &sst, err, err_len);
    if (sr < 0) return -1;
    if (sr == 0) return take_sst(&sst, ti >= 0, owned, name, n_dims, ne, wl, index, err, err_len);
    if (ti < 0) {
        if (optional) return 0;
        snprintf(err, err_len, "missing tensor %s", name);
        return -1;
    }
    const sp_gguf_tensor *t = sp_gguf_tensor_at(g, ti);
    int ok = t->n_dims == n_dims;
    for (uint32_t d = 0; ok && d < SP_GGUF_MAX_DIMS; d++) ok = t->ne[d] == (d < n_dims ? ne[d] : 1);
    if (!ok) {
        char got[96], exp[96];
        format_shape(got, sizeof got, t->n_dims, t->ne);
        format_shape(exp, sizeof exp, n_dims, ne);
        snprintf(err, err_len, "tensor %s has shape [%s], expected [%s]", name, got, exp);
        return -1;
    }
    /* Q8_0/Q4_0 matrices stay in their blocks (keep_quantized: the forward
     * pass decodes them layer by layer into arena scratch, so host memory
     * holds only the file's bytes); other tensors (norms, biases, the tables
     * an architecture folds at load) are dequantized here like F16. */
    if (t->type != SP_TENSOR_F32 && t->type != SP_TENSOR_F16 && t->type != SP_TENSOR_BF16 &&
        t->type != SP_TENSOR_Q8_0 && t->type != SP_TENSOR_Q4_0) {
        snprintf(err, err_len, "tensor %s has type %s; supported: F32, F16, BF16, Q8_0, Q4_0", name,
                 sp_tensor_type_name(t->type));
        return -1;
    }
    if (!wl) return 0;
    int64_t n = t->ne[0] * t->ne[1] * t->ne[2] * t->ne[3];
    /* Every weight is finite, or the model is refused here: a NaN or Inf
     * would otherwise come out as an embedding of NaNs (docs/reliability.md
     * has what the check costs at load). */
    const int quantized = t->type == SP_TENSOR_Q8_0 || t->type == SP_TENSOR_Q4_0;
    const void *data = t->data;
    sp_weight_type type = SP_WEIGHT_F32;
    int64_t bad = -1;
    if (t->type == SP_TENSOR_F32 || (keep_quantized && quantized)) {
        /* used where the file maps it: one pass over the stored bits (for
         * Q8_0/Q4_0, the block scales; the quants are integers) */
        bad = sp_first_nonfinite(t->type, t->data, (size_t)n);
        /* the reader checked ne[0] % 32 == 0 and the byte size */
        if (quantized) type = t->type == SP_TENSOR_Q8_0 ? SP_WEIGHT_Q8_0 : SP_WEIGHT_Q4_0;
    } else {
        float *buf = malloc((size_t)n * sizeof(float));
        if (!buf || sp_owned_add(owned, buf)) {
            free(buf);
            snprintf(err, err_len, "out of memory converting tensor %s", name);
            return -1;
        }
        /* converted a chunk at a time, each checked while it is in cache */
        const int64_t chunk = 4096; /* a whole number of Q8_0/Q4_0 blocks */
        const int64_t bs = sp_tensor_block_size(t->type);
        const size_t bb = sp_tensor_block_bytes(t->type);
        for (int64_t i0 = 0; i0 < n && bad < 0; i0 += chunk) {
            const int64_t m = n - i0 < chunk ? n - i0 : chunk;
            sp_convert_to_f32(t->type, (const uint8_t *)t->data + (size_t)(i0 / bs) * bb, buf + i0, (size_t)m);
            const int64_t b = sp_first_nonfinite(SP_TENSOR_F32, buf + i0, (size_t)m);
            if (b >= 0) bad = i0 + b;
        }
        data = buf;
    }
    if (bad >= 0) {
        if (quantized)
            snprintf(err, err_len, "tensor %s has a non-finite value: the scale of its block %lld is NaN or Inf",
                     name, (long long)(bad / 32));
        else
            snprintf(err, err_len, "tensor %s has a non-finite value (NaN or Inf) at element %lld", name,
                     (long long)bad);
        return -1;
    }
    if (sp_weight_list_push(wl, data, type, n)) {
        snprintf(err, err_len, "out of memory");
        return -1;
    }
    *index = wl->n - 1;
    return 0;
}

int sp_model_tensor_ne(const sp_gguf *g, const char *name, int64_t ne[SP_GGUF_MAX_DIMS], char *err,
                       size_t err_len) {
    sp_sst_ref sst;
    const int sr = sp_sst_find(g, name, &sst, err, err_len);
    if (sr < 0) return -1;
    for (int d = 0; d < SP_GGUF_MAX_DIMS; d++) ne[d] = 1;
    if (sr == 0) {
        ne[0] = sst.ne[0];
        ne[1] = sst.ne[1];
        return 0;
    }
    const int64_t ti = sp_gguf_find_tensor(g, name);
    if (ti < 0) return 1;
    for (int d = 0; d < SP_GGUF_MAX_DIMS; d++) ne[d] = sp_gguf_tensor_at(g, ti)->ne[d];
    return 0;
}

int sp_owned_add(sp_owned_buffers *o, float *buf) {
    if (o->n == o->cap) {
        int64_t cap = o->cap ? o->cap * 2 : 16;
        float **nb = realloc(o->buf, (size_t)cap * sizeof *nb);
        if (!nb) return -1;
        o->buf = nb;
        o->cap = cap;
    }
    o->buf[o->n++] = buf;
    return 0;
}

void sp_owned_free(sp_owned_buffers *o) {
    for (int64_t i = 0; i < o->n; i++) free(o->buf[i]);
    free(o->buf);
    memset(o, 0, sizeof *o);
}

int sp_weight_list_push(sp_weight_list *wl, const void *data, sp_weight_type type, int64_t n) {
    if (wl->n == wl->cap) {
        int64_t cap = wl->cap ? wl->cap * 2 : 64;
        const void **nd = realloc(wl->data, (size_t)cap * sizeof *nd);
        if (!nd) return -1;
        wl->data = nd;
        sp_weight_type *nt = realloc(wl->types, (size_t)cap * sizeof *nt);
        if (!nt) return -1;
        wl->types = nt;
        int64_t *nn = realloc(wl->n_elems, (size_t)cap * sizeof *nn);
        if (!nn) return -1;
        wl->n_elems = nn;
        char **nm = realloc(wl->names, (size_t)cap * sizeof *nm);
        if (!nm) return -1;
        wl->names = nm;
        int64_t *gr = realloc(wl->gemm_rows, (size_t)cap * sizeof *gr);
        if (!gr) return -1;
        wl->gemm_rows = gr;
        wl->cap = cap;
    }
    wl->data[wl->n] = data;
    wl->types[wl->n] = type;
    wl->n_elems[wl->n] = n;
    wl->names[wl->n] = NULL;
    wl->gemm_rows[wl->n] = 0;
    wl->n++;
    return 0;
}

/* Every tensor taken from the file is recorded under its name, so that
 * runtime/adapter.c can find an adapter's targets in any architecture. */
static int take_named(const sp_gguf *g, sp_owned_buffers *owned, const char *name, int optional,
                      uint32_t n_dims, const int64_t *ne, sp_weight_list *wl, int64_t *index,
                      int keep_quantized, char *err, size_t err_len) {
    if (take_tensor(g, owned, name, optional, n_dims, ne, wl, index, keep_quantized, err, err_len))
        return -1;
    if (!wl || *index < 0) return 0;
    const size_t len = strlen(name);
    char *copy = malloc(len + 1);
    if (!copy) {
        snprintf(err, err_len, "out of memory");
        return -1;
    }
    memcpy(copy, name, len + 1);
    wl->names[*index] = copy;
    return 0;
}

int sp_model_take_tensor(const sp_gguf *g, sp_owned_buffers *owned, const char *name, int optional,
                         uint32_t n_dims, const int64_t *ne, sp_weight_list *wl, int64_t *index,
                         char *err, size_t err_len) {
    return take_named(g, owned, name, optional, n_dims, ne, wl, index, 0, err, err_len);
}

int sp_model_take_matrix(const sp_gguf *g, sp_owned_buffers *owned, const char *name, int optional,
                         uint32_t n_dims, const int64_t *ne, sp_weight_list *wl, int64_t *index,
                         char *err, size_t err_len) {
    return take_named(g, owned, name, optional, n_dims, ne, wl, index, 1, err, err_len);
}

int sp_load_tensor(const sp_loader *ld, const char *name, int optional, uint32_t n_dims, int64_t ne0,
                   int64_t ne1, int64_t ne2, int64_t *index) {
    const int64_t ne[3] = {ne0, ne1, ne2};
    return sp_model_take_tensor(ld->g, ld->owned, name, optional, n_dims, ne, ld->wl, index, ld->err,
                                ld->err_len);
}

int sp_load_matrix(const sp_loader *ld, const char *name, int optional, int64_t ne0, int64_t ne1,
                   int64_t *index) {
    const int64_t ne[2] = {ne0, ne1};
    return sp_model_take_matrix(ld->g, ld->owned, name, optional, 2, ne, ld->wl, index, ld->err,
                                ld->err_len);
}

int sp_load_gemm(const sp_loader *ld, const char *name, int optional, int64_t IN, int64_t OUT,
                 int64_t *index) {
    if (sp_load_matrix(ld, name, optional, IN, OUT, index)) return -1;
    if (*index >= 0) ld->wl->gemm_rows[*index] = OUT;
    return 0;
}

int sp_load_blocks(const sp_loader *ld, int64_t n_layer, const sp_block_tensor *spec, int n) {
    for (int64_t l = 0; l < n_layer; l++)
        for (int j = 0; j < n; j++) {
            char name[96];
            int64_t idx;
            snprintf(name, sizeof name, "blk.%lld.%s", (long long)l, spec[j].suffix);
            const int rc =
                spec[j].matrix == SP_BLOCK_GEMM     ? sp_load_gemm(ld, name, 0, spec[j].ne[0], spec[j].ne[1], &idx)
                : spec[j].matrix == SP_BLOCK_MATRIX ? sp_load_matrix(ld, name, 0, spec[j].ne[0], spec[j].ne[1], &idx)
                                                    : sp_load_tensor(ld, name, 0, spec[j].n_dims, spec[j].ne[0],
                                                                     spec[j].ne[1], spec[j].ne[2], &idx);
            if (rc) return -1;
        }
    return 0;
}

int sp_load_bert_embeddings(const sp_loader *ld, const char *arch, int64_t D, int64_t ctx,
                            sp_bert_embeddings *e) {
    /* shapes via sp_model_tensor_ne: a tensor may be stored as sst */
    static const char *const names[3] = {"token_embd.weight", "position_embd.weight",
                                          "token_types.weight"};
    int64_t rows[3];
    for (int i = 0; i < 3; i++) {
        int64_t ne[SP_GGUF_MAX_DIMS];
        const int rc = sp_model_tensor_ne(ld->g, names[i], ne, ld->err, ld->err_len);
        if (rc != 0) {
            if (rc > 0) snprintf(ld->err, ld->err_len, "missing tensor %s", names[i]);
            return -1;
        }
        rows[i] = ne[1];
    }
    e->V = rows[0];
    e->P = rows[1];
    e->TT = rows[2];
    if (e->P < 1 || e->TT < 1) {
        snprintf(ld->err, ld->err_len, "position_embd.weight and token_types.weight need at least one row");
        return -1;
    }
    if (ctx && ctx != e->P) {
        snprintf(ld->err, ld->err_len, "key %s.context_length = %lld but position_embd.weight has %lld rows",
                 arch, (long long)ctx, (long long)e->P);
        return -1;
    }
    return sp_load_matrix(ld, "token_embd.weight", 0, D, e->V, &e->i_embd) ||
                   sp_load_tensor(ld, "position_embd.weight", 0, 2, D, e->P, 1, &e->i_pos) ||
                   sp_load_tensor(ld, "token_types.weight", 0, 2, D, e->TT, 1, &e->i_types) ||
                   sp_load_tensor(ld, "token_embd_norm.weight", 0, 1, D, 1, 1, &e->i_norm_w) ||
                   sp_load_tensor(ld, "token_embd_norm.bias", 0, 1, D, 1, 1, &e->i_norm_b)
               ? -1
               : 0;
}

int sp_load_pooler(const sp_loader *ld, int64_t D, sp_pooler *p) {
    if (sp_load_gemm(ld, "pooler.weight", 1, D, D, &p->i_w) ||
        sp_load_tensor(ld, "pooler.bias", 1, 1, D, 1, 1, &p->i_b))
        return -1;
    if ((p->i_w < 0) != (p->i_b < 0)) {
        snprintf(ld->err, ld->err_len, "pooler.weight and pooler.bias must come together");
        return -1;
    }
    p->D = D;
    return 0;
}

int sp_model_pool_cls(const sp_pooler *p, const void *const *w, const sp_weight_type *wt,
                      sp_backend *be, sp_arena *arena, int pooling, const float *states,
                      float **pooled) {
    *pooled = NULL;
    if (pooling != 2 /* SPECTRAL_POOLING_CLS */ || p->i_w < 0) return 0;
    float *out = sp_arena_alloc(arena, (size_t)p->D * sizeof(float));
    void *ws = sp_arena_alloc(arena, sp_model_linear_workspace(be, w, wt, p->i_w, p->D, p->D, 1));
    if (!out || !ws) {
        snprintf(be->err, sizeof be->err, "activation arena exhausted (planning error)");
        return -1;
    }
    *pooled = out;
    if (sp_arena_measuring(arena)) return 0;
    return sp_model_linear(be, w, wt, p->i_w, p->D, p->D, states, w[p->i_b], 1, SP_ACT_TANH, 0, ws,
                           out);
}

int64_t sp_model_layer_scratch(const sp_weight_type *wt, int64_t i_block0, int64_t stride,
                               int64_t n_layer, const sp_layer_matrix *mats, int n) {
    int64_t need = 0;
    for (int64_t l = 0; l < n_layer; l++) {
        int64_t sum = 0;
        for (int j = 0; j < n; j++)
            sum += sp_model_weight_scratch(wt, i_block0 + l * stride + mats[j].offset, mats[j].rows,
                                           mats[j].cols);
        if (sum > need) need = sum;
    }
    return need;
}

int sp_model_layer_weights(sp_backend *be, const void *const *w, const sp_weight_type *wt,
                           int64_t i_block, const sp_layer_matrix *mats, int n, float *scratch,
                           const float **out) {
    for (int j = 0; j < n; j++) {
        const int64_t i = i_block + mats[j].offset;
        if (!(out[j] = sp_model_weight(be, w, wt, i, mats[j].rows, mats[j].cols, scratch))) return -1;
        const int64_t used = sp_model_weight_scratch(wt, i, mats[j].rows, mats[j].cols);
        if (used) scratch += used; /* scratch is NULL when nothing is quantized */
    }
    return 0;
}

const float *sp_model_weight(sp_backend *be, const void *const *w, const sp_weight_type *wt,
                             int64_t i, int64_t rows, int64_t cols, float *scratch) {
    if (wt[i] == SP_WEIGHT_F32) return w[i];
    if (!be->ops->dequantize_rows) {
        snprintf(be->err, sizeof be->err, "backend %s cannot decode quantized weights", be->ops->name);
        return NULL;
    }
    if (be->ops->dequantize_rows(be, wt[i], w[i], cols, NULL, rows, scratch)) return NULL;
    return scratch;
}

int sp_model_gather(sp_backend *be, const void *const *w, const sp_weight_type *wt, int64_t i,
                    int64_t D, const int32_t *ids, int64_t T, float *out) {
    if (wt[i] == SP_WEIGHT_F32) return be->ops->get_rows(be, w[i], D, ids, T, out);
    if (!be->ops->dequantize_rows) {
        snprintf(be->err, sizeof be->err, "backend %s cannot decode quantized weights", be->ops->name);
        return -1;
    }
    return be->ops->dequantize_rows(be, wt[i], w[i], D, ids, T, out);
}

/* ---- GEMMs in a forward pass ---- */

static int is_packed(const sp_weight_type *wt, int64_t i) { return wt[i] == SP_WEIGHT_PACKED; }

static size_t floats(int64_t n) { return (size_t)n * sizeof(float); }

size_t sp_model_linear_workspace(sp_backend *be, const void *const *w, const sp_weight_type *wt,
                                 int64_t i, int64_t OUT, int64_t IN, int64_t T) {
    if (is_packed(wt, i)) return be->ops->linear_packed_workspace_size(be, w[i], T);
    return floats(sp_model_weight_scratch(wt, i, OUT, IN));
}

int sp_model_linear(sp_backend *be, const void *const *w, const sp_weight_type *wt, int64_t i,
                    int64_t OUT, int64_t IN, const float *x, const float *b, int64_t T, sp_act act,
                    int accumulate, void *workspace, float *out) {
    if (is_packed(wt, i))
        return be->ops->linear_packed(be, x, w[i], b, T, act, accumulate, workspace, out) ? -1 : 0;
    const float *W = sp_model_weight(be, w, wt, i, OUT, IN, workspace);
    if (!W) return -1;
    return be->ops->linear(be, x, W, b, T, IN, OUT, act, accumulate, out) ? -1 : 0;
}

/* An unpacked MLP's two matrices m[0], m[1] (their offsets here are weight
 * indices) as float32: decoded into the front of workspace when quantized;
 * *rest is what is left of it. One packed and one not is refused. */
static int mlp_weights(sp_backend *be, const void *const *w, const sp_weight_type *wt,
                       const sp_layer_matrix m[2], void *workspace, const float **a, const float **b,
                       void **rest) {
    if (is_packed(wt, m[0].offset) || is_packed(wt, m[1].offset)) {
        snprintf(be->err, sizeof be->err, "an MLP with one packed and one unpacked matrix");
        return -1;
    }
    float *wq_a = workspace;
    float *wq_b = wq_a + sp_model_weight_scratch(wt, m[0].offset, m[0].rows, m[0].cols);
    *rest = wq_b + sp_model_weight_scratch(wt, m[1].offset, m[1].rows, m[1].cols);
    *a = sp_model_weight(be, w, wt, m[0].offset, m[0].rows, m[0].cols, wq_a);
    *b = *a ? sp_model_weight(be, w, wt, m[1].offset, m[1].rows, m[1].cols, wq_b) : NULL;
    return *b ? 0 : -1;
}

/* The workspace of sp_model_ffn: decoded W_up, decoded W_down (when
 * quantized and not packed), then ffn_block's own. */
size_t sp_model_ffn_workspace(sp_backend *be, const void *const *w, const sp_weight_type *wt,
                              int64_t i_up, int64_t i_down, int64_t D, int64_t F,
                              const int64_t *offsets, int64_t n_docs) {
    if (is_packed(wt, i_up) && is_packed(wt, i_down))
        return be->ops->ffn_block_packed_workspace_size(be, w[i_up], w[i_down], offsets, n_docs);
    return floats(sp_model_weight_scratch(wt, i_up, F, D)) +
           floats(sp_model_weight_scratch(wt, i_down, D, F)) +
           be->ops->ffn_block_workspace_size(be, offsets, n_docs, D, F);
}

int sp_model_ffn(sp_backend *be, const void *const *w, const sp_weight_type *wt, float *h,
                 const float *ln_w, const float *ln_b, float eps, int64_t i_up, const float *b_up,
                 sp_act act, int64_t i_down, const float *b_down, int64_t D, int64_t F,
                 const int64_t *offsets, int64_t n_docs, void *workspace) {
    if (is_packed(wt, i_up) && is_packed(wt, i_down))
        return be->ops->ffn_block_packed(be, h, ln_w, ln_b, eps, w[i_up], b_up, act, w[i_down],
                                         b_down, offsets, n_docs, workspace)
                   ? -1
                   : 0;
    const float *up, *down;
    void *ws;
    if (mlp_weights(be, w, wt, (const sp_layer_matrix[2]){{i_up, F, D}, {i_down, D, F}}, workspace, &up,
                    &down, &ws))
        return -1;
    return be->ops->ffn_block(be, h, ln_w, ln_b, eps, up, b_up, act, down, b_down, D, F, offsets,
                              n_docs, ws)
               ? -1
               : 0;
}

size_t sp_model_glu_workspace(sp_backend *be, const void *const *w, const sp_weight_type *wt,
                              int64_t i_gate, int64_t i_down, int64_t D, int64_t F, int64_t n_blocks,
                              const int64_t *offsets, int64_t n_docs) {
    if (is_packed(wt, i_gate) && is_packed(wt, i_down))
        return be->ops->glu_ffn_block_packed_workspace_size(be, w[i_gate], w[i_down], offsets, n_docs,
                                                            n_blocks);
    return floats(sp_model_weight_scratch(wt, i_gate, 2 * F, D / n_blocks)) +
           floats(sp_model_weight_scratch(wt, i_down, D, F / n_blocks)) +
           be->ops->glu_ffn_block_workspace_size(be, offsets, n_docs, D, F, n_blocks);
}

int sp_model_glu(sp_backend *be, const void *const *w, const sp_weight_type *wt, float *h,
                 int64_t i_gate, int64_t i_down, const float *b_down, const float *ln_w,
                 const float *ln_b, float eps, int64_t D, int64_t F, int64_t n_blocks,
                 const int64_t *offsets, int64_t n_docs, void *workspace) {
    if (is_packed(wt, i_gate) && is_packed(wt, i_down))
        return be->ops->glu_ffn_block_packed(be, h, w[i_gate], w[i_down], b_down, ln_w, ln_b, eps,
                                             n_blocks, offsets, n_docs, workspace)
                   ? -1
                   : 0;
    const float *gate, *down;
    void *ws;
    if (mlp_weights(be, w, wt,
                    (const sp_layer_matrix[2]){{i_gate, 2 * F, D / n_blocks}, {i_down, D, F / n_blocks}},
                    workspace, &gate, &down, &ws))
        return -1;
    return be->ops->glu_ffn_block(be, h, gate, down, b_down, ln_w, ln_b, eps, D, F, n_blocks, offsets,
                                  n_docs, ws)
               ? -1
               : 0;
}

void sp_weight_list_free(sp_weight_list *wl) {
    for (int64_t i = 0; wl->names && i < wl->n; i++) free(wl->names[i]);
    free(wl->names);
    free(wl->gemm_rows);
    free(wl->data);
    free(wl->types);
    free(wl->n_elems);
    memset(wl, 0, sizeof *wl);
}
