/* fnet: Google's FNet encoder, as Hugging Face transformers' FNetModel
 * computes last_hidden_state (dropout off).
 *
 *   h = token_embd[tokens] + position_embd[0..T-1] + token_types[0]   (T x D)
 *   h = LN_embd(h) W_proj^T + b_proj
 *   for each block:
 *     h = LN_mix(Re(FFT2(h)) + h)                   (2-D FFT over sequence and hidden)
 *     h = LN_ffn(W_down act(W_up h + b_up) + b_down + h)    act = gelu_new (or gelu)
 *
 * The token states are last_hidden_state. The pooler, tanh(dense(h[0])), is
 * transformers' pooler_output: the embedding for CLS pooling when the file
 * has one (model_pool); other poolings work on the states (docs/fnet.md).
 * Tensor and key names are listed in docs/fnet.md.
 *
 * The loader folds token_types[0] into a copy of the position table, so the
 * embedding sum is one gather and one add. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "models/model.h"

#define ARCH "fnet"
/* Rows of the MLP processed at once (as in spectralmlp.c). */
#define FFN_CHUNK_ROWS 2048

enum {
    W_MIX_NORM_W,
    W_MIX_NORM_B,
    W_FFN_UP_W,
    W_FFN_UP_B,
    W_FFN_DOWN_W,
    W_FFN_DOWN_B,
    W_FFN_NORM_W,
    W_FFN_NORM_B,
    W_PER_BLOCK
};

typedef struct {
    int64_t D, F, L, V, P;
    float eps;
    sp_act act;
    /* indices into the weight list */
    int64_t i_embd, i_pos, i_types, i_norm_w, i_norm_b, i_proj_w, i_proj_b, i_pos_type, i_block0;
    sp_pooler pooler;
} fnet;

static int model_load(const sp_loader *ld, void *model, sp_model_info *info) {
    fnet *m = model;
    const sp_gguf *g = ld->g;
    char *err = ld->err;
    const size_t err_len = ld->err_len;
    /* FNetConfig's defaults: CLS pooling, eps 1e-12 */
    sp_model_hparams hp = {.ctx = 0, .pooling = 2, .eps = 1e-12f};
    if (sp_model_get_hparams(ld, ARCH, 1, 1 << 20, &hp)) return -1;
    m->D = hp.D;
    m->F = hp.F;
    m->L = hp.L;
    m->eps = hp.eps;
    const int64_t ctx = hp.ctx;
    m->act = SP_ACT_GELU_TANH; /* gelu_new, FNetConfig's default */
    int64_t ki = sp_gguf_find_key(g, ARCH ".hidden_act");
    if (ki >= 0) {
        if (sp_gguf_kv_type(g, ki) != SP_GGUF_TYPE_STRING) {
            snprintf(err, err_len, "key " ARCH ".hidden_act must be a string");
            return -1;
        }
        sp_gguf_str s = sp_gguf_get_str(g, ki);
        if (s.len == 8 && !memcmp(s.ptr, "gelu_new", 8)) m->act = SP_ACT_GELU_TANH;
        else if (s.len == 4 && !memcmp(s.ptr, "gelu", 4)) m->act = SP_ACT_GELU;
        else {
            snprintf(err, err_len, "key " ARCH ".hidden_act = '%.*s' (supported: gelu_new, gelu)",
                     (int)(s.len > 32 ? 32 : s.len), s.ptr);
            return -1;
        }
    }
    const int64_t D = m->D, F = m->F;
    sp_weight_list *wl = ld->wl;
    sp_bert_embeddings e;
    if (sp_load_bert_embeddings(ld, ARCH, D, ctx, &e) ||
        sp_load_gemm(ld, "token_embd_proj.weight", 0, D, D, &m->i_proj_w) ||
        sp_load_tensor(ld, "token_embd_proj.bias", 0, 1, D, 1, 1, &m->i_proj_b) ||
        sp_load_pooler(ld, D, &m->pooler))
        return -1;
    m->V = e.V;
    m->P = e.P;
    m->i_embd = e.i_embd;
    m->i_pos = e.i_pos;
    m->i_types = e.i_types;
    m->i_norm_w = e.i_norm_w;
    m->i_norm_b = e.i_norm_b;
    m->i_block0 = wl->n;
    const sp_block_tensor block[W_PER_BLOCK] = {
        [W_MIX_NORM_W] = {"mix_norm.weight", 1, {D, 1, 1}, 0},
        [W_MIX_NORM_B] = {"mix_norm.bias", 1, {D, 1, 1}, 0},
        [W_FFN_UP_W] = {"ffn_up.weight", 2, {D, F, 1}, 1},
        [W_FFN_UP_B] = {"ffn_up.bias", 1, {F, 1, 1}, 0},
        [W_FFN_DOWN_W] = {"ffn_down.weight", 2, {F, D, 1}, 1},
        [W_FFN_DOWN_B] = {"ffn_down.bias", 1, {D, 1, 1}, 0},
        [W_FFN_NORM_W] = {"ffn_norm.weight", 1, {D, 1, 1}, 0},
        [W_FFN_NORM_B] = {"ffn_norm.bias", 1, {D, 1, 1}, 0},
    };
    if (sp_load_blocks(ld, m->L, block, W_PER_BLOCK)) return -1;
    /* position_embd[p] + token_types[0], the embedding's constant part. */
    float *pos_type = malloc((size_t)(m->P * D) * sizeof(float));
    if (!pos_type || sp_owned_add(ld->owned, pos_type)) {
        free(pos_type);
        snprintf(err, err_len, "out of memory");
        return -1;
    }
    const float *pos = wl->data[m->i_pos], *types = wl->data[m->i_types]; /* F32: sp_load_tensor */
    for (int64_t p = 0; p < m->P; p++)
        for (int64_t d = 0; d < D; d++) pos_type[p * D + d] = pos[p * D + d] + types[d];
    if (sp_weight_list_push(wl, pos_type, SP_WEIGHT_F32, m->P * D)) {
        snprintf(err, err_len, "out of memory");
        return -1;
    }
    m->i_pos_type = wl->n - 1;

    info->n_embd = D;
    info->n_layer = m->L;
    info->n_vocab = m->V;
    info->n_ctx_train = m->P;
    info->max_tokens = m->P; /* no position embedding past P */
    info->pooling = (int)hp.pooling;
    info->n_params = 0;
    for (int64_t i = 0; i < m->i_pos_type; i++) info->n_params += (uint64_t)wl->n_elems[i];
    return 0;
}

/* Bytes of workspace for the GEMMs of a pass of T rows (the MLP's in row
 * chunks of at most `chunk`): the most any one of them needs, since they
 * run one after another. */
static size_t gemm_workspace(const fnet *m, const void *const *w, const sp_weight_type *wt,
                             sp_backend *be, int64_t T, int64_t chunk) {
    size_t need = sp_model_linear_workspace(be, w, wt, m->i_proj_w, m->D, m->D, T);
    for (int64_t l = 0; l < m->L; l++) {
        const int64_t b = m->i_block0 + l * W_PER_BLOCK;
        const size_t up = sp_model_linear_workspace(be, w, wt, b + W_FFN_UP_W, m->F, m->D, chunk);
        const size_t down = sp_model_linear_workspace(be, w, wt, b + W_FFN_DOWN_W, m->D, m->F, chunk);
        if (up > need) need = up;
        if (down > need) need = down;
    }
    return need;
}

static int model_forward(const void *p, const void *const *w, const sp_weight_type *wt,
                         sp_backend *be, sp_arena *arena, const int32_t *tokens,
                         const int64_t *offsets, int64_t n_docs, float **states) {
    /* One document per pass: positions restart with each document. */
    if (n_docs != 1) {
        snprintf(be->err, sizeof be->err, "fnet: one document per forward pass, got %lld",
                 (long long)n_docs);
        return -1;
    }
    const int64_t T = offsets[1];
    const fnet *m = p;
    const sp_backend_ops *op = be->ops;
    const int64_t D = m->D, F = m->F;
    const int64_t chunk = T < FFN_CHUNK_ROWS ? T : FFN_CHUNK_ROWS;
    if (T > m->P) {
        snprintf(be->err, sizeof be->err, "fnet: %lld tokens is more than the %lld positions",
                 (long long)T, (long long)m->P);
        return -1;
    }
    if (!op->fourier2d_real || !op->fourier2d_workspace_size) {
        snprintf(be->err, sizeof be->err, "fnet: backend %s has no fourier2d_real op", op->name);
        return -1;
    }

    float *h = sp_arena_alloc(arena, (size_t)(T * D) * sizeof(float));
    float *u = sp_arena_alloc(arena, (size_t)(T * D) * sizeof(float));
    float *hidden = sp_arena_alloc(arena, (size_t)(chunk * F) * sizeof(float));
    void *ws = sp_arena_alloc(arena, op->fourier2d_workspace_size(be, T, D));
    void *gws = sp_arena_alloc(arena, gemm_workspace(m, w, wt, be, T, chunk));
    if (!h || !u || !hidden || !ws || !gws) {
        snprintf(be->err, sizeof be->err, "activation arena exhausted (planning error)");
        return -1;
    }
    if (sp_arena_measuring(arena)) return 0;

    /* h = word[ids] + (pos + token_types[0])[0..T-1]: the first T rows of the
     * folded position table are contiguous. */
    if (sp_model_gather(be, w, wt, m->i_embd, D, tokens, T, h) ||
        op->add(be, w[m->i_pos_type], T * D, h) ||
        op->layer_norm(be, h, w[m->i_norm_w], w[m->i_norm_b], m->eps, T, D, h) ||
        sp_model_linear(be, w, wt, m->i_proj_w, D, D, h, w[m->i_proj_b], T, SP_ACT_NONE, 0, gws, u))
        return -1;
    float *x = u, *y = h; /* x holds the layer input */
    for (int64_t l = 0; l < m->L; l++) {
        const int64_t b = m->i_block0 + l * W_PER_BLOCK;
        const void *const *bw = w + b;
        /* y = LN_mix(Re(FFT2(x)) + x) */
        if (op->fourier2d_real(be, x, T, D, ws, y) ||
            op->add(be, x, T * D, y) ||
            op->layer_norm(be, y, bw[W_MIX_NORM_W], bw[W_MIX_NORM_B], m->eps, T, D, y))
            return -1;
        /* y = LN_ffn(W_down act(W_up y + b_up) + b_down + y), row chunk by row chunk */
        for (int64_t r0 = 0; r0 < T; r0 += FFN_CHUNK_ROWS) {
            int64_t rows = T - r0 < FFN_CHUNK_ROWS ? T - r0 : FFN_CHUNK_ROWS;
            float *yc = y + r0 * D;
            if (sp_model_linear(be, w, wt, b + W_FFN_UP_W, F, D, yc, bw[W_FFN_UP_B], rows, m->act, 0,
                                gws, hidden) ||
                sp_model_linear(be, w, wt, b + W_FFN_DOWN_W, D, F, hidden, bw[W_FFN_DOWN_B], rows,
                                SP_ACT_NONE, 1, gws, yc) ||
                op->layer_norm(be, yc, bw[W_FFN_NORM_W], bw[W_FFN_NORM_B], m->eps, rows, D, yc))
                return -1;
        }
        float *t = x;
        x = y;
        y = t;
    }
    *states = x;
    return 0;
}

/* CLS pooling through the pooler: pooled = tanh(W_pool h[0] + b_pool). */
static int model_pool(const void *p, const void *const *w, const sp_weight_type *wt, sp_backend *be,
                      sp_arena *arena, int pooling, const float *states, int64_t T, float **pooled) {
    (void)T;
    return sp_model_pool_cls(&((const fnet *)p)->pooler, w, wt, be, arena, pooling, states, pooled);
}

const sp_arch sp_arch_fnet = {
    .name = ARCH,
    .model_size = sizeof(fnet),
    .load = model_load,
    .forward = model_forward,
    .pool = model_pool,
    .packed_gemms = 1,
};
