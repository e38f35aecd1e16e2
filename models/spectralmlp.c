/* spectralmlp: a byte-level (or any-vocabulary) document encoder whose token
 * mixing is an FFT along the sequence, a per-channel complex filter on the
 * lowest K frequency bins, and an inverse FFT.
 *
 *   h = token_embd[tokens]                                  (T x D)
 *   for each block:
 *     h += Re(IFFT(FFT_t(LN_mix(h)) * W)) + mix_bias        (first k = min(K, T/2) bins)
 *     h += W_down GELU(W_up LN_ffn(h) + b_up) + b_down
 *   h = LN_out(h)          (if output_norm is present)
 *   h = h W_out^T + b_out  (if output is present; width becomes E: the head,
 *                           which the runtime runs, after pooling when only
 *                           pooled embeddings are read)
 *
 * Tensor names and shapes are pinned in docs/format.md. */
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
} spectralmlp;

static int model_load(const sp_loader *ld, void *model, sp_model_info *info) {
    spectralmlp *m = model;
    const sp_gguf *g = ld->g;
    char *err = ld->err;
    const size_t err_len = ld->err_len;
    sp_model_hparams hp = {.ctx = 0, .pooling = 1, .eps = 1e-5f};
    if (sp_model_get_hparams(ld, ARCH, 0, INT64_C(1) << 40, &hp) ||
        sp_model_get_hparam(g, ARCH ".mixing.n_filters", 1, INT64_C(1) << 30, &m->K, err, err_len))
        return -1;
    m->D = hp.D;
    m->F = hp.F;
    m->L = hp.L;
    m->eps = hp.eps;
    /* shapes via sp_model_tensor_ne: a tensor may be stored as sst */
    int64_t te_ne[SP_GGUF_MAX_DIMS], to_ne[SP_GGUF_MAX_DIMS];
    const int te = sp_model_tensor_ne(g, "token_embd.weight", te_ne, err, err_len);
    if (te != 0) {
        if (te > 0) snprintf(err, err_len, "missing tensor token_embd.weight");
        return -1;
    }
    m->V = te_ne[1];
    const int to = sp_model_tensor_ne(g, "output.weight", to_ne, err, err_len);
    if (to < 0) return -1;
    m->E = to == 0 ? to_ne[1] : m->D;

    const int64_t D = m->D, F = m->F, K = m->K;
    const sp_weight_list *wl = ld->wl;
    if (sp_load_matrix(ld, "token_embd.weight", 0, D, m->V, &m->i_embd)) return -1;
    m->i_block0 = wl->n;
    const sp_block_tensor block[W_PER_BLOCK] = {
        [W_MIX_NORM_W] = {"mix_norm.weight", 1, {D, 1, 1}, 0},
        [W_MIX_NORM_B] = {"mix_norm.bias", 1, {D, 1, 1}, 0},
        [W_MIX_FILTER] = {"mix_filter.weight", 3, {2, K, D}, 0},
        [W_MIX_BIAS] = {"mix_filter.bias", 1, {D, 1, 1}, 0},
        [W_FFN_NORM_W] = {"ffn_norm.weight", 1, {D, 1, 1}, 0},
        [W_FFN_NORM_B] = {"ffn_norm.bias", 1, {D, 1, 1}, 0},
        [W_FFN_UP_W] = {"ffn_up.weight", 2, {D, F, 1}, 1},
        [W_FFN_UP_B] = {"ffn_up.bias", 1, {F, 1, 1}, 0},
        [W_FFN_DOWN_W] = {"ffn_down.weight", 2, {F, D, 1}, 1},
        [W_FFN_DOWN_B] = {"ffn_down.bias", 1, {D, 1, 1}, 0},
    };
    if (sp_load_blocks(ld, m->L, block, W_PER_BLOCK) ||
        sp_load_tensor(ld, "output_norm.weight", 1, 1, D, 1, 1, &m->i_out_norm_w) ||
        sp_load_tensor(ld, "output_norm.bias", 1, 1, D, 1, 1, &m->i_out_norm_b))
        return -1;
    if ((m->i_out_norm_w < 0) != (m->i_out_norm_b < 0)) {
        snprintf(err, err_len, "output_norm.weight and output_norm.bias must come together");
        return -1;
    }
    m->has_output_norm = m->i_out_norm_w >= 0;
    if (sp_load_gemm(ld, "output.weight", 1, D, m->E, &m->i_out_w) ||
        sp_load_tensor(ld, "output.bias", 1, 1, m->E, 1, 1, &m->i_out_b))
        return -1;
    if (m->i_out_b >= 0 && m->i_out_w < 0) {
        snprintf(err, err_len, "output.bias without output.weight");
        return -1;
    }
    m->has_output_proj = m->i_out_w >= 0;

    info->n_embd = m->E;
    info->n_head_in = m->has_output_proj ? D : 0;
    info->n_layer = m->L;
    info->n_vocab = m->V;
    info->n_ctx_train = hp.ctx;
    info->max_tokens = 0;
    info->pooling = (int)hp.pooling;
    info->n_params = 0;
    for (int64_t i = 0; i < wl->n; i++) info->n_params += (uint64_t)wl->n_elems[i];
    return 0;
}

/* One block's token mixing, inside each document: h += mix(LN(h)). */
static int mixing_forward(const spectralmlp *m, const void *const *bw, sp_backend *be, float *h,
                          const int64_t *offsets, int64_t n_docs, void *ws) {
    return be->ops->mix_block(be, h, bw[W_MIX_NORM_W], bw[W_MIX_NORM_B], m->eps, bw[W_MIX_FILTER],
                              bw[W_MIX_BIAS], m->K, m->D, offsets, n_docs, ws);
}

/* One block's MLP, per token: h += W_down GELU(W_up LN(h) + b_up) + b_down. */
static int ffn_forward(const spectralmlp *m, const void *const *w, const sp_weight_type *wt,
                       int64_t l, sp_backend *be, float *h, const int64_t *offsets, int64_t n_docs,
                       void *ws) {
    const int64_t b = m->i_block0 + l * W_PER_BLOCK;
    const void *const *bw = w + b;
    return sp_model_ffn(be, w, wt, h, bw[W_FFN_NORM_W], bw[W_FFN_NORM_B], m->eps, b + W_FFN_UP_W,
                        bw[W_FFN_UP_B], SP_ACT_GELU, b + W_FFN_DOWN_W, bw[W_FFN_DOWN_B], m->D, m->F,
                        offsets, n_docs, ws);
}

/* Bytes of the MLP workspace: the most any block needs (blocks may be
 * stored in different types). */
static size_t ffn_workspace(const spectralmlp *m, const void *const *w, const sp_weight_type *wt,
                            sp_backend *be, const int64_t *offsets, int64_t n_docs) {
    size_t need = 0;
    for (int64_t l = 0; l < m->L; l++) {
        const int64_t b = m->i_block0 + l * W_PER_BLOCK;
        const size_t n = sp_model_ffn_workspace(be, w, wt, b + W_FFN_UP_W, b + W_FFN_DOWN_W, m->D,
                                                m->F, offsets, n_docs);
        if (n > need) need = n;
    }
    return need;
}

/* Everything up to output_norm; the output projection is the head below. */
static int model_forward(const void *p, const void *const *w, const sp_weight_type *wt,
                         sp_backend *be, sp_arena *arena, const int32_t *tokens,
                         const int64_t *offsets, int64_t n_docs, float **states) {
    const spectralmlp *m = p;
    const sp_backend_ops *op = be->ops;
    const int64_t D = m->D, T = offsets[n_docs];

    float *h = sp_arena_alloc(arena, (size_t)(T * D) * sizeof(float));
    void *mix_ws = sp_arena_alloc(arena, op->mix_block_workspace_size(be, offsets, n_docs, D, m->K));
    void *ffn_ws = sp_arena_alloc(arena, ffn_workspace(m, w, wt, be, offsets, n_docs));
    if (!h || !mix_ws || !ffn_ws) {
        snprintf(be->err, sizeof be->err, "activation arena exhausted (planning error)");
        return -1;
    }
    if (sp_arena_measuring(arena)) return 0;

    if (sp_model_gather(be, w, wt, m->i_embd, D, tokens, T, h)) return -1;
    for (int64_t l = 0; l < m->L; l++) {
        const void *const *bw = w + m->i_block0 + l * W_PER_BLOCK;
        if (mixing_forward(m, bw, be, h, offsets, n_docs, mix_ws) ||
            ffn_forward(m, w, wt, l, be, h, offsets, n_docs, ffn_ws))
            return -1;
    }
    if (m->has_output_norm &&
        op->layer_norm(be, h, w[m->i_out_norm_w], w[m->i_out_norm_b], m->eps, T, D, h))
        return -1;
    *states = h;
    return 0;
}

/* The output projection, h W_out^T + b_out (D -> E): the head. */
static size_t head_workspace(const void *p, const void *const *w, const sp_weight_type *wt,
                             sp_backend *be, int64_t rows) {
    const spectralmlp *m = p;
    return sp_model_linear_workspace(be, w, wt, m->i_out_w, m->E, m->D, rows);
}

static int head(const void *p, const void *const *w, const sp_weight_type *wt, sp_backend *be,
                const float *h, int64_t rows, void *workspace, float *out) {
    const spectralmlp *m = p;
    return sp_model_linear(be, w, wt, m->i_out_w, m->E, m->D, h, m->i_out_b >= 0 ? w[m->i_out_b] : NULL,
                           rows, SP_ACT_NONE, 0, workspace, out);
}

const sp_arch sp_arch_spectralmlp = {
    .name = ARCH,
    .model_size = sizeof(spectralmlp),
    .load = model_load,
    .forward = model_forward,
    .batched = 1,
    .packed_gemms = 1,
    .head_workspace = head_workspace,
    .head = head,
};
