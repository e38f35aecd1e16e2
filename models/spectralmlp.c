/* spectralmlp: a byte-level (or any-vocabulary) document encoder whose token
 * mixing is an FFT along the sequence, a per-channel complex filter on the
 * lowest K frequency bins, and an inverse FFT.
 *
 *   h = token_embd[tokens]                                  (T x D)
 *   for each block:
 *     h += Re(IFFT(FFT_t(LN_mix(h)) * W)) + mix_bias        (first k = min(K, T/2) bins)
 *     h += W_down GELU(W_up LN_ffn(h) + b_up) + b_down
 *   h = LN_out(h)          (if output_norm is present)
 *   h = h W_out^T + b_out  (if output is present; width becomes E)
 *
 * Tensor names and shapes are pinned in README.md ("Model format"). */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "models/model.h"

#define ARCH "spectralmlp"

enum {
    W_MIX_NORM_W,
    W_MIX_NORM_B,
    W_MIX_FILTER,
    W_MIX_BIAS,
    W_FFN_NORM_W,
    W_FFN_NORM_B,
    W_FFN_UP_W,
    W_FFN_UP_B,
    W_FFN_DOWN_W,
    W_FFN_DOWN_B,
    W_PER_BLOCK
};

typedef struct {
    int64_t D, F, L, K, V, E;
    float eps;
    int has_output_norm, has_output_proj;
    /* indices into the weight list */
    int64_t i_embd, i_block0, i_out_norm_w, i_out_norm_b, i_out_w, i_out_b;
    sp_owned_buffers owned; /* converted copies (F16/BF16 files) */
} spectralmlp;

static void model_free(void *p) {
    spectralmlp *m = p;
    if (!m) return;
    sp_owned_free(&m->owned);
    free(m);
}

/* Takes a tensor of shape [ne0, ne1, ne2] (trailing 1s ignored past n_dims). */
static int take_tensor(const sp_gguf *g, spectralmlp *m, const char *name, int optional,
                       uint32_t n_dims, int64_t ne0, int64_t ne1, int64_t ne2, sp_weight_list *wl,
                       int64_t *index, char *err, size_t err_len) {
    const int64_t ne[3] = {ne0, ne1, ne2};
    return sp_model_take_tensor(g, &m->owned, name, optional, n_dims, ne, wl, index, err, err_len);
}

/* The tensors the forward pass may read quantized: the embedding table (a
 * gather) and the GEMM matrices. */
static int take_matrix(const sp_gguf *g, spectralmlp *m, const char *name, int optional,
                       int64_t ne0, int64_t ne1, sp_weight_list *wl, int64_t *index, char *err,
                       size_t err_len) {
    const int64_t ne[2] = {ne0, ne1};
    return sp_model_take_matrix(g, &m->owned, name, optional, 2, ne, wl, index, err, err_len);
}

static int model_load(const sp_gguf *g, void **out, sp_model_info *info, sp_weight_list *wl,
                      char *err, size_t err_len) {
    *out = NULL;
    memset(wl, 0, sizeof *wl);
    spectralmlp *m = calloc(1, sizeof *m);
    if (!m) {
        snprintf(err, err_len, "out of memory");
        return -1;
    }
    /* Bounds keep every product below (T * D * F) comfortably inside int64. */
    const int64_t MAXDIM = 1 << 20;
    int64_t ctx = 0, pooling = 1;
    if (sp_model_get_hparam(g, ARCH ".embedding_length", 1, MAXDIM, &m->D, err, err_len) ||
        sp_model_get_hparam(g, ARCH ".feed_forward_length", 1, MAXDIM, &m->F, err, err_len) ||
        sp_model_get_hparam(g, ARCH ".block_count", 1, 4096, &m->L, err, err_len) ||
        sp_model_get_hparam(g, ARCH ".mixing.n_filters", 1, INT64_C(1) << 30, &m->K, err, err_len))
        goto fail;
    if (sp_gguf_find_key(g, ARCH ".context_length") >= 0 &&
        sp_model_get_hparam(g, ARCH ".context_length", 0, INT64_C(1) << 40, &ctx, err, err_len))
        goto fail;
    if (sp_gguf_find_key(g, ARCH ".pooling_type") >= 0 &&
        sp_model_get_hparam(g, ARCH ".pooling_type", 0, 3, &pooling, err, err_len))
        goto fail;
    m->eps = 1e-5f;
    if (sp_model_get_eps(g, ARCH ".attention.layer_norm_epsilon", &m->eps, err, err_len))
        goto fail;
    /* shapes via sp_model_tensor_ne: a tensor may be stored as sst */
    int64_t te_ne[SP_GGUF_MAX_DIMS], to_ne[SP_GGUF_MAX_DIMS];
    const int te = sp_model_tensor_ne(g, "token_embd.weight", te_ne, err, err_len);
    if (te != 0) {
        if (te > 0) snprintf(err, err_len, "missing tensor token_embd.weight");
        goto fail;
    }
    m->V = te_ne[1];
    const int to = sp_model_tensor_ne(g, "output.weight", to_ne, err, err_len);
    if (to < 0) goto fail;
    m->E = to == 0 ? to_ne[1] : m->D;

    const int64_t D = m->D, F = m->F, K = m->K;
    if (take_matrix(g, m, "token_embd.weight", 0, D, m->V, wl, &m->i_embd, err, err_len))
        goto fail;
    m->i_block0 = wl->n;
    for (int64_t l = 0; l < m->L; l++) {
        static const struct {
            const char *suffix;
            uint32_t n_dims;
            int which[3]; /* 0 = 1, 1 = D, 2 = F, 3 = K, 4 = 2 */
        } spec[W_PER_BLOCK] = {
            {"mix_norm.weight", 1, {1, 0, 0}},   {"mix_norm.bias", 1, {1, 0, 0}},
            {"mix_filter.weight", 3, {4, 3, 1}}, {"mix_filter.bias", 1, {1, 0, 0}},
            {"ffn_norm.weight", 1, {1, 0, 0}},   {"ffn_norm.bias", 1, {1, 0, 0}},
            {"ffn_up.weight", 2, {1, 2, 0}},     {"ffn_up.bias", 1, {2, 0, 0}},
            {"ffn_down.weight", 2, {2, 1, 0}},   {"ffn_down.bias", 1, {1, 0, 0}},
        };
        const int64_t dim_of[5] = {1, D, F, K, 2};
        for (int w = 0; w < W_PER_BLOCK; w++) {
            char name[96];
            int64_t idx;
            snprintf(name, sizeof name, "blk.%lld.%s", (long long)l, spec[w].suffix);
            const int rc =
                w == W_FFN_UP_W || w == W_FFN_DOWN_W
                    ? take_matrix(g, m, name, 0, dim_of[spec[w].which[0]], dim_of[spec[w].which[1]],
                                  wl, &idx, err, err_len)
                    : take_tensor(g, m, name, 0, spec[w].n_dims, dim_of[spec[w].which[0]],
                                  dim_of[spec[w].which[1]], dim_of[spec[w].which[2]], wl, &idx, err,
                                  err_len);
            if (rc) goto fail;
        }
    }
    if (take_tensor(g, m, "output_norm.weight", 1, 1, D, 1, 1, wl, &m->i_out_norm_w, err, err_len) ||
        take_tensor(g, m, "output_norm.bias", 1, 1, D, 1, 1, wl, &m->i_out_norm_b, err, err_len))
        goto fail;
    if ((m->i_out_norm_w < 0) != (m->i_out_norm_b < 0)) {
        snprintf(err, err_len, "output_norm.weight and output_norm.bias must come together");
        goto fail;
    }
    m->has_output_norm = m->i_out_norm_w >= 0;
    if (take_matrix(g, m, "output.weight", 1, D, m->E, wl, &m->i_out_w, err, err_len) ||
        take_tensor(g, m, "output.bias", 1, 1, m->E, 1, 1, wl, &m->i_out_b, err, err_len))
        goto fail;
    if (m->i_out_b >= 0 && m->i_out_w < 0) {
        snprintf(err, err_len, "output.bias without output.weight");
        goto fail;
    }
    m->has_output_proj = m->i_out_w >= 0;

    info->n_embd = m->E;
    info->n_layer = m->L;
    info->n_vocab = m->V;
    info->n_ctx_train = ctx;
    info->max_tokens = 0;
    info->pooling = (int)pooling;
    info->n_params = 0;
    for (int64_t i = 0; i < wl->n; i++) info->n_params += (uint64_t)wl->n_elems[i];
    *out = m;
    return 0;
fail:
    sp_weight_list_free(wl);
    model_free(m);
    return -1;
}

/* One block's token mixing, inside each document: h += mix(LN(h)). */
static int mixing_forward(const spectralmlp *m, const void *const *bw, sp_backend *be, float *h,
                          const int64_t *offsets, int64_t n_docs, void *ws) {
    return be->ops->mix_block(be, h, bw[W_MIX_NORM_W], bw[W_MIX_NORM_B], m->eps, bw[W_MIX_FILTER],
                              bw[W_MIX_BIAS], m->K, m->D, offsets, n_docs, ws);
}

/* One block's MLP, per token: h += W_down GELU(W_up LN(h) + b_up) + b_down.
 * Quantized W_up / W_down are decoded into wq first (F*D floats each, the
 * first half for W_up): one layer's matrices at a time. */
static int ffn_forward(const spectralmlp *m, const void *const *w, const sp_weight_type *wt,
                       int64_t l, sp_backend *be, float *h, const int64_t *offsets, int64_t n_docs,
                       void *ws, float *wq) {
    const int64_t b = m->i_block0 + l * W_PER_BLOCK, D = m->D, F = m->F;
    const void *const *bw = w + b;
    const float *up = sp_model_weight(be, w, wt, b + W_FFN_UP_W, F, D, wq);
    const float *down = up ? sp_model_weight(be, w, wt, b + W_FFN_DOWN_W, D, F,
                                             wq + sp_model_weight_scratch(wt, b + W_FFN_UP_W, F, D))
                           : NULL;
    if (!up || !down) return -1;
    return be->ops->ffn_block(be, h, bw[W_FFN_NORM_W], bw[W_FFN_NORM_B], m->eps, up, bw[W_FFN_UP_B],
                              SP_ACT_GELU, down, bw[W_FFN_DOWN_B], D, F, offsets, n_docs, ws);
}

/* Floats of scratch for decoding quantized matrices: the most any one step
 * needs (a block's W_up + W_down, or the output projection). */
static int64_t dequant_scratch(const spectralmlp *m, const sp_weight_type *wt) {
    int64_t need = sp_model_weight_scratch(wt, m->i_out_w, m->E, m->D);
    for (int64_t l = 0; l < m->L; l++) {
        const int64_t b = m->i_block0 + l * W_PER_BLOCK;
        const int64_t n = sp_model_weight_scratch(wt, b + W_FFN_UP_W, m->F, m->D) +
                          sp_model_weight_scratch(wt, b + W_FFN_DOWN_W, m->D, m->F);
        if (n > need) need = n;
    }
    return need;
}

static int model_forward(const void *p, const void *const *w, const sp_weight_type *wt,
                         sp_backend *be, sp_arena *arena, const int32_t *tokens,
                         const int64_t *offsets, int64_t n_docs, float **states) {
    const spectralmlp *m = p;
    const sp_backend_ops *op = be->ops;
    const int64_t D = m->D, T = offsets[n_docs];
    const int64_t n_wq = dequant_scratch(m, wt);

    float *h = sp_arena_alloc(arena, (size_t)(T * D) * sizeof(float));
    void *mix_ws = sp_arena_alloc(arena, op->mix_block_workspace_size(be, offsets, n_docs, D, m->K));
    void *ffn_ws = sp_arena_alloc(arena, op->ffn_block_workspace_size(be, offsets, n_docs, D, m->F));
    float *out = m->has_output_proj ? sp_arena_alloc(arena, (size_t)(T * m->E) * sizeof(float)) : h;
    float *wq = n_wq ? sp_arena_alloc(arena, (size_t)n_wq * sizeof(float)) : NULL;
    if (!h || !mix_ws || !ffn_ws || !out || (n_wq && !wq)) {
        snprintf(be->err, sizeof be->err, "activation arena exhausted (planning error)");
        return -1;
    }
    if (sp_arena_measuring(arena)) return 0;

    if (sp_model_gather(be, w, wt, m->i_embd, D, tokens, T, h)) return -1;
    for (int64_t l = 0; l < m->L; l++) {
        const void *const *bw = w + m->i_block0 + l * W_PER_BLOCK;
        if (mixing_forward(m, bw, be, h, offsets, n_docs, mix_ws) ||
            ffn_forward(m, w, wt, l, be, h, offsets, n_docs, ffn_ws, wq))
            return -1;
    }
    if (m->has_output_norm &&
        op->layer_norm(be, h, w[m->i_out_norm_w], w[m->i_out_norm_b], m->eps, T, D, h))
        return -1;
    const float *w_out = NULL;
    if (m->has_output_proj && !(w_out = sp_model_weight(be, w, wt, m->i_out_w, m->E, D, wq)))
        return -1;
    /* The projection one document at a time, so its GEMM rows are cut the
     * same whether the document came alone or packed with others. */
    for (int64_t i = 0; m->has_output_proj && i < n_docs; i++)
        if (op->linear(be, h + offsets[i] * D, w_out, m->i_out_b >= 0 ? w[m->i_out_b] : NULL,
                       offsets[i + 1] - offsets[i], D, m->E, SP_ACT_NONE, 0, out + offsets[i] * m->E))
            return -1;
    *states = out;
    return 0;
}

const sp_arch sp_arch_spectralmlp = {
    .name = ARCH,
    .load = model_load,
    .free = model_free,
    .forward = model_forward,
    .batched = 1,
};
