/* m2bert: M2-BERT (Monarch Mixer BERT; Fu et al. 2023, Saad-Falcon et al.
 * 2024), as the reference code (HazyResearch/m2, bert/src/bert_layers.py
 * BertModel with Monarch Mixer sequence mixing) computes sequence_output and
 * pooler_output (dropout off, use_flash_fft off):
 *
 *   h = LN_emb(token_embd[x] + token_types[0] + position_embd[0..T-1])     (T x D)
 *   for each block:
 *     a = h W_in^T + b_in                                       (T x 3D)
 *     x1, x2, v = causal depthwise conv3(a) split in three      (short_filter)
 *     y = (hyena(v * x1) + (v * x1) * bias) * x2 + hyena_res(h) + h * bias_res
 *     o = y W_out^T + b_out
 *     h = LN_ffn(blockdiag(W_down) (gelu(g[:F]) * g[F:]) + b_down + o),
 *         g = blockdiag(W_gate) o                               (GLU, Monarch blocks)
 *   pooled = tanh(W_pool h[0] + b_pool)                         (cls pooling)
 *
 * hyena(x) is the bidirectional long convolution with a Hyena implicit
 * filter: per channel, x convolved with a forward kernel (t >= s) and a
 * reversed one (t < s), through an FFT of length >= 2T. The kernels come
 * from small weights (positional features through a Sin MLP, times an
 * exponential decay); the backend turns them into a spectrum once per
 * (layer, length), which the context caches (sp_arena_table) across passes.
 * There is no residual around the mixer: the MLP's residual is its output o.
 * The reference adds no position encodings after the layers (BertModel
 * passes none). Tensor and key names are listed in docs/m2bert.md. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "models/model.h"

#define ARCH "m2bert"

/* A filter's tensors, in weight-list order. */
enum {
    F_BIAS,
    F_POS_Z,
    F_POS_T,
    F_DECAY,
    F_DIR0, /* then per direction: */
    FD_IN_W = 0,
    FD_IN_B,
    FD_MID1_W,
    FD_MID1_B,
    FD_MID2_W,
    FD_MID2_B,
    FD_FREQ,
    FD_OUT_W,
    FD_PER_DIR,
    F_PER_FILTER = F_DIR0 + 2 * FD_PER_DIR
};

enum {
    W_MIX_IN_W,
    W_MIX_IN_B,
    W_MIX_CONV_W,
    W_MIX_CONV_B,
    W_MIX_OUT_W,
    W_MIX_OUT_B,
    W_FFN_GATE_W,
    W_FFN_DOWN_W,
    W_FFN_DOWN_B,
    W_FFN_NORM_W,
    W_FFN_NORM_B,
    W_FILTER0, /* the filters: hyena, then hyena_res */
    W_PER_BLOCK = W_FILTER0 + 2 * F_PER_FILTER
};

typedef struct {
    int64_t D, F, L, NB, E, order, l_max;
    float eps, w_mod;
    sp_bert_embeddings emb;
    sp_pooler pooler;
    int64_t i_block0;
} m2bert;

/* A boolean key the runtime implements one way only: absent, or `want`. */
static int check_flag(const sp_loader *ld, const char *key, int want, const char *what) {
    const int64_t ki = sp_gguf_find_key(ld->g, key);
    if (ki < 0) return 0;
    if (sp_gguf_kv_type(ld->g, ki) != SP_GGUF_TYPE_BOOL) {
        snprintf(ld->err, ld->err_len, "key %s must be a bool", key);
        return -1;
    }
    if (sp_gguf_get_bool(ld->g, ki) != want) {
        snprintf(ld->err, ld->err_len, "key %s = %s: %s is not supported", key,
                 want ? "false" : "true", what);
        return -1;
    }
    return 0;
}

/* A filter's tensors in block spec order (F_* above): hyena or hyena_res. */
static void filter_spec(const m2bert *m, int f, char names[F_PER_FILTER][48], sp_block_tensor *spec) {
    const char *which = f ? "hyena_res" : "hyena";
    const int64_t D = m->D, E = m->E, O = m->order;
    static const char *const dirs[2] = {"fwd", "rev"};
    snprintf(names[F_BIAS], 48, "%s.bias", which);
    snprintf(names[F_POS_Z], 48, "%s.pos_z", which);
    snprintf(names[F_POS_T], 48, "%s.pos_t", which);
    snprintf(names[F_DECAY], 48, "%s.decay", which);
    spec[F_BIAS] = (sp_block_tensor){names[F_BIAS], 1, {D, 1, 1}, 0};
    spec[F_POS_Z] = (sp_block_tensor){names[F_POS_Z], 2, {E, m->l_max, 1}, 0};
    spec[F_POS_T] = (sp_block_tensor){names[F_POS_T], 1, {m->l_max, 1, 1}, 0};
    spec[F_DECAY] = (sp_block_tensor){names[F_DECAY], 1, {D, 1, 1}, 0};
    static const struct {
        const char *part;
        uint32_t n_dims;
        int ne0, ne1; /* 0: order, 1: E, 2: D, 3: 3, 4: 1 */
    } dir_spec[FD_PER_DIR] = {
        [FD_IN_W] = {"in.weight", 2, 1, 0},   [FD_IN_B] = {"in.bias", 1, 0, 4},
        [FD_MID1_W] = {"mid1.weight", 2, 0, 0}, [FD_MID1_B] = {"mid1.bias", 1, 0, 4},
        [FD_MID2_W] = {"mid2.weight", 2, 0, 0}, [FD_MID2_B] = {"mid2.bias", 1, 0, 4},
        [FD_FREQ] = {"freq", 2, 0, 3},        [FD_OUT_W] = {"out.weight", 2, 0, 2},
    };
    const int64_t dim[5] = {O, E, D, 3, 1};
    for (int d = 0; d < 2; d++)
        for (int j = 0; j < FD_PER_DIR; j++) {
            const int k = F_DIR0 + d * FD_PER_DIR + j;
            snprintf(names[k], 48, "%s.%s_%s", which, dirs[d], dir_spec[j].part);
            spec[k] = (sp_block_tensor){names[k], dir_spec[j].n_dims,
                                        {dim[dir_spec[j].ne0], dim[dir_spec[j].ne1], 1}, 0};
        }
}

static int model_load(const sp_loader *ld, void *model, sp_model_info *info) {
    m2bert *m = model;
    const sp_gguf *g = ld->g;
    char *err = ld->err;
    const size_t err_len = ld->err_len;
    /* BertConfig's defaults: eps 1e-12; the pooler's output for CLS */
    sp_model_hparams hp = {.ctx = 0, .pooling = 2, .eps = 1e-12f};
    int64_t pad_id = 0;
    if (sp_model_get_hparams(ld, ARCH, 1, 1 << 20, &hp) ||
        sp_model_get_hparam(g, ARCH ".ffn.n_blocks", 1, 4096, &m->NB, err, err_len) ||
        sp_model_get_hparam(g, ARCH ".hyena.emb_dim", 1, 4096, &m->E, err, err_len) ||
        sp_model_get_hparam(g, ARCH ".hyena.filter_order", 1, 65536, &m->order, err, err_len) ||
        sp_model_get_hparam(g, ARCH ".hyena.l_max", 1, 1 << 20, &m->l_max, err, err_len))
        return -1;
    if (sp_gguf_find_key(g, ARCH ".pad_token_id") >= 0 &&
        sp_model_get_hparam(g, ARCH ".pad_token_id", 0, INT32_MAX, &pad_id, err, err_len))
        return -1;
    m->D = hp.D;
    m->F = hp.F;
    m->L = hp.L;
    m->eps = hp.eps;
    m->w_mod = 1.0f;
    const int64_t kw = sp_gguf_find_key(g, ARCH ".hyena.w_mod");
    if (kw >= 0) {
        if (sp_gguf_kv_type(g, kw) != SP_GGUF_TYPE_FLOAT32 || !isfinite(sp_gguf_get_f32(g, kw))) {
            snprintf(err, err_len, "key " ARCH ".hyena.w_mod must be a finite f32");
            return -1;
        }
        m->w_mod = sp_gguf_get_f32(g, kw);
    }
    if (check_flag(ld, ARCH ".hyena.bidirectional", 1, "a one-way (causal) long convolution") ||
        check_flag(ld, ARCH ".hyena.residual_long_conv", 1,
                   "a mixer without the residual long convolution") ||
        check_flag(ld, ARCH ".ffn.glu", 1, "a non-gated MLP"))
        return -1;
    const int64_t D = m->D, F = m->F, NB = m->NB;
    if (D % NB || F % NB) {
        snprintf(err, err_len, "key " ARCH ".ffn.n_blocks = %lld must divide embedding_length %lld "
                 "and feed_forward_length %lld", (long long)NB, (long long)D, (long long)F);
        return -1;
    }
    if (sp_load_bert_embeddings(ld, ARCH, D, hp.ctx, &m->emb) || sp_load_pooler(ld, D, &m->pooler))
        return -1;
    if (pad_id >= m->emb.V) {
        snprintf(err, err_len, "key " ARCH ".pad_token_id = %lld is outside the vocabulary of %lld",
                 (long long)pad_id, (long long)m->emb.V);
        return -1;
    }
    m->i_block0 = ld->wl->n;
    /* the MLP's blocks run packed when each is whole panels of a packed weight */
    const int glu = (2 * F / NB) % SP_PACKED_ROWS == 0 && (D / NB) % SP_PACKED_ROWS == 0 ? SP_BLOCK_GEMM
                                                                                      : SP_BLOCK_MATRIX;
    sp_block_tensor block[W_PER_BLOCK] = {
        [W_MIX_IN_W] = {"mix_in.weight", 2, {D, 3 * D, 1}, SP_BLOCK_GEMM},
        [W_MIX_IN_B] = {"mix_in.bias", 1, {3 * D, 1, 1}, 0},
        [W_MIX_CONV_W] = {"mix_conv.weight", 2, {3, 3 * D, 1}, 0},
        [W_MIX_CONV_B] = {"mix_conv.bias", 1, {3 * D, 1, 1}, 0},
        [W_MIX_OUT_W] = {"mix_out.weight", 2, {D, D, 1}, SP_BLOCK_GEMM},
        [W_MIX_OUT_B] = {"mix_out.bias", 1, {D, 1, 1}, 0},
        [W_FFN_GATE_W] = {"ffn_gate.weight", 2, {D / NB, 2 * F, 1}, glu},
        [W_FFN_DOWN_W] = {"ffn_down.weight", 2, {F / NB, D, 1}, glu},
        [W_FFN_DOWN_B] = {"ffn_down.bias", 1, {D, 1, 1}, 0},
        [W_FFN_NORM_W] = {"ffn_norm.weight", 1, {D, 1, 1}, 0},
        [W_FFN_NORM_B] = {"ffn_norm.bias", 1, {D, 1, 1}, 0},
    };
    char names[2][F_PER_FILTER][48];
    for (int f = 0; f < 2; f++) filter_spec(m, f, names[f], block + W_FILTER0 + f * F_PER_FILTER);
    if (sp_load_blocks(ld, m->L, block, W_PER_BLOCK)) return -1;

    info->n_embd = D;
    info->n_layer = m->L;
    info->n_vocab = m->emb.V;
    info->n_ctx_train = m->emb.P;
    /* positions past P have no embedding, past l_max no filter features */
    info->max_tokens = m->emb.P < m->l_max ? m->emb.P : m->l_max;
    info->pad_to = info->max_tokens; /* the model card pads every input to its length */
    info->pad_id = (int32_t)pad_id;
    info->pooling = (int)hp.pooling;
    info->n_params = 0;
    for (int64_t i = 0; i < ld->wl->n; i++) info->n_params += (uint64_t)ld->wl->n_elems[i];
    return 0;
}

/* Filter f (0: hyena, 1: hyena_res) of block l, as the backend reads it. */
static sp_hyena_filter filter_of(const m2bert *m, const void *const *w, int64_t l, int f) {
    const void *const *fw = w + m->i_block0 + l * W_PER_BLOCK + W_FILTER0 + f * F_PER_FILTER;
    sp_hyena_filter s = {.E = m->E, .order = m->order, .w_mod = m->w_mod, .z = fw[F_POS_Z],
                         .t = fw[F_POS_T], .decay = fw[F_DECAY]};
    for (int d = 0; d < 2; d++) {
        const void *const *dw = fw + F_DIR0 + d * FD_PER_DIR;
        s.dir[d].W_in = dw[FD_IN_W];
        s.dir[d].b_in = dw[FD_IN_B];
        s.dir[d].W_mid[0] = dw[FD_MID1_W];
        s.dir[d].b_mid[0] = dw[FD_MID1_B];
        s.dir[d].W_mid[1] = dw[FD_MID2_W];
        s.dir[d].b_mid[1] = dw[FD_MID2_B];
        s.dir[d].freq = dw[FD_FREQ];
        s.dir[d].W_out = dw[FD_OUT_W];
    }
    return s;
}

static size_t max_size(size_t a, size_t b) { return a > b ? a : b; }

/* Workspace bytes of the projections and the MLP (the most any layer's
 * needs): GEMM weights are packed for the context's dtype on the CPU, or
 * decoded into the workspace when quantized. */
static size_t gemm_workspace(const m2bert *m, sp_backend *be, const void *const *w,
                             const sp_weight_type *wt, const int64_t *offsets) {
    const int64_t T = offsets[1];
    size_t need = 0;
    for (int64_t l = 0; l < m->L; l++) {
        const int64_t b = m->i_block0 + l * W_PER_BLOCK;
        const size_t sizes[3] = {
            sp_model_linear_workspace(be, w, wt, b + W_MIX_IN_W, 3 * m->D, m->D, T),
            sp_model_linear_workspace(be, w, wt, b + W_MIX_OUT_W, m->D, m->D, T),
            sp_model_glu_workspace(be, w, wt, b + W_FFN_GATE_W, b + W_FFN_DOWN_W, m->D, m->F, m->NB,
                                   offsets, 1)};
        for (int i = 0; i < 3; i++) need = max_size(need, sizes[i]);
    }
    return need;
}

static int model_forward(const void *p, const void *const *w, const sp_weight_type *wt,
                         sp_backend *be, sp_arena *arena, const int32_t *tokens,
                         const int64_t *offsets, int64_t n_docs, float **states) {
    const m2bert *m = p;
    const sp_backend_ops *op = be->ops;
    if (n_docs != 1) { /* positions and filters restart with each document */
        snprintf(be->err, sizeof be->err, ARCH ": one document per forward pass, got %lld",
                 (long long)n_docs);
        return -1;
    }
    const int64_t T = offsets[1], D = m->D, F = m->F, L = m->L;
    const int64_t max_T = m->emb.P < m->l_max ? m->emb.P : m->l_max;
    if (T > max_T) {
        snprintf(be->err, sizeof be->err, ARCH ": %lld tokens is more than the %lld positions",
                 (long long)T, (long long)max_T);
        return -1;
    }
    if (!op->hyena_filter || !op->hyena_mix || !op->glu_ffn_block || !op->add_row) {
        snprintf(be->err, sizeof be->err, ARCH ": backend %s has no M2-BERT ops", op->name);
        return -1;
    }
    /* Each layer's two filter spectra: from the context's cache when it has
     * them (or can keep them), else computed into scratch every pass. */
    const size_t spec_bytes = op->hyena_spectrum_size(be, T, D);
    void **spec = calloc((size_t)(2 * L), sizeof *spec);
    int *fill = calloc((size_t)(2 * L), sizeof *fill);
    int rc = -1;
    if (!spec || !fill) {
        snprintf(be->err, sizeof be->err, "out of memory");
        goto done;
    }
    int misses = 0;
    for (int64_t i = 0; i < 2 * L; i++) {
        spec[i] = sp_arena_table(arena, T, i, spec_bytes, &fill[i]);
        misses += !spec[i];
    }
    float *h = sp_arena_alloc(arena, (size_t)(T * D) * sizeof(float));
    float *a = sp_arena_alloc(arena, (size_t)(T * 3 * D) * sizeof(float));
    float *y = sp_arena_alloc(arena, (size_t)(T * D) * sizeof(float));
    void *scratch[2] = {NULL, NULL};
    for (int f = 0; f < 2 && misses; f++) scratch[f] = sp_arena_alloc(arena, spec_bytes);
    /* the ops run one after the other: one workspace serves them all */
    size_t ws_bytes = op->hyena_filter_workspace_size(be, T, D, m->E, m->order);
    ws_bytes = max_size(ws_bytes, op->hyena_mix_workspace_size(be, T, D));
    ws_bytes = max_size(ws_bytes, gemm_workspace(m, be, w, wt, offsets));
    void *ws = sp_arena_alloc(arena, ws_bytes);
    if (!h || !a || !y || !ws || (misses && (!scratch[0] || !scratch[1]))) {
        snprintf(be->err, sizeof be->err, "activation arena exhausted (planning error)");
        goto done;
    }
    if (sp_arena_measuring(arena)) {
        rc = 0;
        goto done;
    }
    /* embeddings, in the reference's order: (word + type) + position */
    const sp_bert_embeddings *e = &m->emb;
    if (sp_model_gather(be, w, wt, e->i_embd, D, tokens, T, h) ||
        op->add_row(be, w[e->i_types], T, D, h) || op->add(be, w[e->i_pos], T * D, h) ||
        op->layer_norm(be, h, w[e->i_norm_w], w[e->i_norm_b], m->eps, T, D, h))
        goto done;
    for (int64_t l = 0; l < L; l++) {
        const int64_t b = m->i_block0 + l * W_PER_BLOCK;
        const void *const *bw = w + b;
        const void *ls[2];
        for (int f = 0; f < 2; f++) {
            const int64_t i = 2 * l + f;
            ls[f] = spec[i] ? spec[i] : scratch[f];
            if (spec[i] && !fill[i]) continue;
            const sp_hyena_filter flt = filter_of(m, w, l, f);
            if (op->hyena_filter(be, &flt, T, D, ws, (void *)ls[f])) goto done;
        }
        if (sp_model_linear(be, w, wt, b + W_MIX_IN_W, 3 * D, D, h, bw[W_MIX_IN_B], T, SP_ACT_NONE, 0,
                            ws, a))
            goto done;
        const void *const *fw = bw + W_FILTER0;
        if (op->hyena_mix(be, a, bw[W_MIX_CONV_W], bw[W_MIX_CONV_B], h, ls[0], fw[F_BIAS], ls[1],
                          fw[F_PER_FILTER + F_BIAS], T, D, ws, y))
            goto done;
        /* o = y W_out^T + b_out replaces h (the mixer's input is spent) */
        if (sp_model_linear(be, w, wt, b + W_MIX_OUT_W, D, D, y, bw[W_MIX_OUT_B], T, SP_ACT_NONE, 0,
                            ws, h))
            goto done;
        if (sp_model_glu(be, w, wt, h, b + W_FFN_GATE_W, b + W_FFN_DOWN_W, bw[W_FFN_DOWN_B],
                         bw[W_FFN_NORM_W], bw[W_FFN_NORM_B], m->eps, D, F, m->NB, offsets, 1, ws))
            goto done;
    }
    *states = h;
    rc = 0;
done:
    free(spec);
    free(fill);
    return rc;
}

/* CLS pooling through the pooler: tanh(W_pool h[0] + b_pool), the
 * reference's pooler_output (its sentence_embedding). */
static int model_pool(const void *p, const void *const *w, const sp_weight_type *wt, sp_backend *be,
                      sp_arena *arena, int pooling, const float *states, int64_t T, float **pooled) {
    (void)T;
    return sp_model_pool_cls(&((const m2bert *)p)->pooler, w, wt, be, arena, pooling, states, pooled);
}

const sp_arch sp_arch_m2bert = {
    .name = ARCH,
    .model_size = sizeof(m2bert),
    .load = model_load,
    .forward = model_forward,
    .pool = model_pool,
    .packed_gemms = 1,
};
