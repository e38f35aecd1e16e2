/* What every architecture file in models/ provides to the runtime.
 *
 * An architecture parses its hyperparameters and tensors from a GGUF file,
 * checks every shape, and exposes its weights as a flat list of float32
 * tensors (so the runtime can upload them to any backend without knowing
 * the architecture). Its forward pass is written once against the backend
 * interface and takes every activation from the arena. */
#ifndef SP_MODEL_H
#define SP_MODEL_H

#include <stddef.h>
#include <stdint.h>

#include "formats/gguf.h"
#include "kernels/backend.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct {
    int64_t n_embd;      /* width of the output states */
    int64_t n_head_in;   /* width of what forward returns when the arch has a
                            head (below), 0 when forward's states are final */
    int64_t n_layer;
    int64_t n_vocab;
    int64_t n_ctx_train; /* 0 when unknown */
    int64_t max_tokens;  /* hard maximum sequence length, 0 = none */
    int64_t pad_to;      /* > 0: documents run padded to this many tokens unless the
                            context says no_pad (M2-BERT, as its model card does) */
    int32_t pad_id;      /* the padding token */
    int pooling;         /* default pooling, spectral_pooling numbering */
    uint64_t n_params;
} sp_model_info;

/* Weights in host memory: float32 arrays (types[i] == SP_WEIGHT_F32) or
 * ggml Q8_0/Q4_0 blocks (the matrices an architecture takes with
 * sp_model_take_matrix from a file that stores them so), pointers into the
 * file mapping when the file stores F32, Q8_0 or Q4_0, converted copies owned
 * by the architecture otherwise (F16, BF16, sparse spectral tensors).
 * n_elems counts values, not bytes, whatever the type. */
typedef struct {
    int64_t n, cap;
    const void **data;
    sp_weight_type *types;
    int64_t *n_elems;
    char **names; /* the GGUF tensor each came from (sp_model_take_tensor), NULL for
                     tables an architecture derives; how adapters find their targets */
    int64_t *gemm_rows; /* OUT for a GEMM weight (an OUT x IN matrix taken with
                           sp_load_gemm: the runtime may pack it), 0 otherwise */
} sp_weight_list;

/* Float32 copies an architecture owns (tensors converted from F16/BF16). */
typedef struct {
    int64_t n, cap;
    float **buf;
} sp_owned_buffers;

/* What an architecture's load reads from and fills, all owned by the
 * runtime's model: the file, the float32 copies made while loading (F16/
 * BF16/sst tensors, tables an architecture derives), the weight list, and
 * where a message goes. On failure the runtime frees what was added. */
typedef struct {
    const sp_gguf *g;
    sp_owned_buffers *owned;
    sp_weight_list *wl;
    char *err;
    size_t err_len;
} sp_loader;

typedef struct {
    const char *name; /* general.architecture */
    size_t model_size; /* bytes of the architecture's own state, zeroed before load */
    /* Reads the hyperparameters, checks and takes every tensor (through
     * sp_load_*), fills model and *info. 0, or -1 with a message in ld->err. */
    int (*load)(const sp_loader *ld, void *model, sp_model_info *info);
    /* w[i] is weights->data[i] in the backend's memory, stored as wt[i]
     * there (a backend whose weights are all float32, e.g. CUDA, passes
     * SP_WEIGHT_F32 everywhere; a quantized wt[i] is decoded into arena
     * scratch with the backend's dequantize_rows just before use; with
     * packed_gemms set, a GEMM weight may be SP_WEIGHT_PACKED). tokens are in the
     * backend's memory too: n_docs documents packed back to back, document i
     * being tokens [offsets[i], offsets[i+1]) (host array, offsets[0] = 0,
     * T = offsets[n_docs]). On success *states is a T x n_embd buffer (T x
     * n_head_in when the arch has a head) from the arena, rows packed the
     * same way. In measure mode (sp_arena_measuring) it only allocates. */
    int (*forward)(const void *model, const void *const *w, const sp_weight_type *wt, sp_backend *be,
                   sp_arena *arena,
                   const int32_t *tokens, const int64_t *offsets, int64_t n_docs, float **states);
    /* Non-zero when forward accepts n_docs > 1 (the runtime packs short
     * documents into one pass); otherwise it is always called with one. */
    int batched;
    /* Optional: the model's own pooled output (FNet's pooler for CLS). Called
     * after forward with the context's pooling (spectral_pooling numbering);
     * sets *pooled to an n_embd vector from the arena, or to NULL when the
     * model has no head for this pooling and the runtime pools the states.
     * In measure mode it only allocates. */
    int (*pool)(const void *model, const void *const *w, const sp_weight_type *wt, sp_backend *be,
                sp_arena *arena,
                int pooling, const float *states, int64_t T, float **pooled);
    /* Non-zero when forward reads its GEMM weights through sp_model_linear /
     * sp_model_ffn, which take packed weights: the runtime then packs them
     * (SP_WEIGHT_PACKED in wt) for the context's dtype. */
    int packed_gemms;
    /* Optional, with info.n_head_in: the model's last step, an affine map of
     * each token's state, out[rows, n_embd] = head(h[rows, n_head_in]), that
     * forward leaves to the runtime. Affine maps commute with pooling (mean,
     * first, last), so when only pooled embeddings are read the runtime runs
     * it on the pooled rows alone, and on the token states only when they
     * are asked for. workspace: head_workspace(rows) bytes. */
    size_t (*head_workspace)(const void *model, const void *const *w, const sp_weight_type *wt,
                             sp_backend *be, int64_t rows);
    int (*head)(const void *model, const void *const *w, const sp_weight_type *wt, sp_backend *be,
                const float *h, int64_t rows, void *workspace, float *out);
} sp_arch;

extern const sp_arch sp_arch_spectralmlp;

/* ---- the lexical sketch (models/lexical.c), any architecture ---- */

/* Optional: a signed feature hash of a document's bag of tokens, appended to
 * its pooled embedding. dims == 0 when the model has none. */
typedef struct {
    int64_t dims;   /* R: key <arch>.lexical.dims */
    float scale;    /* its weight next to the unit dense part: <arch>.lexical.scale, default 1 */
    int32_t *bucket; /* [n_vocab] in [0, R): tensor lexical.bucket (I32) */
    float *weight;   /* [n_vocab], signed: tensor lexical.weight */
} sp_lexical;

/* Reads and checks the sketch (every bucket in range, every weight finite);
 * leaves dims 0 when the file has none. 0 on success. */
int sp_lexical_load(const sp_gguf *g, const char *arch, int64_t n_vocab, sp_lexical *lx, char *err,
                    size_t err_len);
void sp_lexical_free(sp_lexical *lx);
/* out[R] = the sketch of tokens[0..T) (ids already checked < n_vocab);
 * counts[n_vocab] is scratch, all zero on entry and again on return. */
void sp_lexical_sketch(const sp_lexical *lx, const int32_t *tokens, int64_t T, uint32_t *counts,
                       float *out);
/* ---- helpers for architecture files (models/loader.c) ---- */

/* Reads a required unsigned integer key (any unsigned width) within [min, max]. */
int sp_model_get_hparam(const sp_gguf *g, const char *key, int64_t min, int64_t max, int64_t *out,
                        char *err, size_t err_len);
/* Reads an optional key holding a strictly ascending array of integers in
 * [1, max] (any integer element type) into out[n_max]; *n = 0 when the key is
 * absent. 0 on success. */
int sp_model_get_lengths(const sp_gguf *g, const char *key, int64_t max, int64_t *out, int n_max, int *n,
                         char *err, size_t err_len);
/* Reads an optional positive, finite f32 key (a LayerNorm epsilon) into
 * *eps, leaving the caller's default when the key is absent. */
int sp_model_get_eps(const sp_gguf *g, const char *key, float *eps, char *err, size_t err_len);
/* What every architecture's keys say, under <arch>.: embedding_length (D),
 * feed_forward_length (F) and block_count (L), required; context_length
 * (within [ctx_min, ctx_max]), pooling_type and attention.layer_norm_epsilon,
 * optional: their defaults are in *hp on entry. */
typedef struct {
    int64_t D, F, L, ctx, pooling;
    float eps;
} sp_model_hparams;
int sp_model_get_hparams(const sp_loader *ld, const char *arch, int64_t ctx_min, int64_t ctx_max,
                         sp_model_hparams *hp);
/* Finds tensor `name`, checks its shape against ne[0..n_dims) (ggml order)
 * and type, and appends its f32 data to wl (converting into `owned` when
 * the file stores F16/BF16); *index is its position in wl, or -1 when an
 * optional tensor is absent. With wl == NULL the tensor is only checked. */
int sp_model_take_tensor(const sp_gguf *g, sp_owned_buffers *owned, const char *name, int optional,
                         uint32_t n_dims, const int64_t *ne, sp_weight_list *wl, int64_t *index,
                         char *err, size_t err_len);
/* As sp_model_take_tensor, for a tensor the forward pass reads through
 * sp_model_weight (a matrix for a GEMM, or a table for a gather): a Q8_0 or
 * Q4_0 tensor stays in its blocks (a pointer into the file), typed in wl. */
int sp_model_take_matrix(const sp_gguf *g, sp_owned_buffers *owned, const char *name, int optional,
                         uint32_t n_dims, const int64_t *ne, sp_weight_list *wl, int64_t *index,
                         char *err, size_t err_len);
/* sp_model_take_tensor for a tensor of shape [ne0, ne1, ne2] (ggml order;
 * dimensions past n_dims are 1). */
int sp_load_tensor(const sp_loader *ld, const char *name, int optional, uint32_t n_dims, int64_t ne0,
                   int64_t ne1, int64_t ne2, int64_t *index);
/* sp_model_take_matrix for a 2-D tensor [ne0, ne1]. */
int sp_load_matrix(const sp_loader *ld, const char *name, int optional, int64_t ne0, int64_t ne1,
                   int64_t *index);
/* sp_load_matrix for a linear layer's weight, ggml shape [IN, OUT] (an OUT x
 * IN matrix), marked as a GEMM weight; forward reads it with sp_model_linear
 * or sp_model_ffn. */
int sp_load_gemm(const sp_loader *ld, const char *name, int optional, int64_t IN, int64_t OUT,
                 int64_t *index);
/* How sp_load_blocks takes a block's tensor. */
enum {
    SP_BLOCK_TENSOR = 0, /* sp_load_tensor: float32 */
    SP_BLOCK_GEMM = 1,   /* sp_load_gemm: a linear layer's weight, read with
                            sp_model_linear / sp_model_ffn (the runtime may pack it) */
    SP_BLOCK_MATRIX = 2, /* sp_load_matrix: a matrix the arch multiplies its own way
                            (M2-BERT's block-diagonal MLP), decoded with
                            sp_model_layer_weights, never packed */
};
/* One tensor of every block: blk.<l>.<suffix>, of shape ne (ggml order,
 * n_dims of them), taken as matrix (SP_BLOCK_*) says. */
typedef struct {
    const char *suffix;
    uint32_t n_dims;
    int64_t ne[3];
    int matrix;
} sp_block_tensor;
/* Appends the n tensors of spec for each of n_layer blocks, block by block
 * in spec's order: block l's tensor j is weight first + l * n + j, where
 * first is the weight list's length on entry. */
int sp_load_blocks(const sp_loader *ld, int64_t n_layer, const sp_block_tensor *spec, int n);

/* BERT-style embeddings (FNet, M2-BERT): token_embd.weight [D, V] (taken
 * with sp_load_matrix), position_embd.weight [D, P], token_types.weight
 * [D, TT], token_embd_norm.weight/.bias [D]. ctx, the <arch>.context_length
 * key (0 when absent), must equal P. */
typedef struct {
    int64_t V, P, TT;
    int64_t i_embd, i_pos, i_types, i_norm_w, i_norm_b;
} sp_bert_embeddings;
int sp_load_bert_embeddings(const sp_loader *ld, const char *arch, int64_t D, int64_t ctx,
                            sp_bert_embeddings *e);
/* An optional BERT pooler, pooler.weight [D, D] and pooler.bias [D],
 * together or not at all (i_w, i_b = -1). */
typedef struct {
    int64_t D, i_w, i_b;
} sp_pooler;
int sp_load_pooler(const sp_loader *ld, int64_t D, sp_pooler *p);
/* The sp_arch.pool of an architecture with such a pooler: for CLS pooling,
 * *pooled = tanh(W h[0] + b) (transformers' pooler_output); NULL otherwise
 * or without a pooler (the runtime then pools the states). */
int sp_model_pool_cls(const sp_pooler *p, const void *const *w, const sp_weight_type *wt,
                      sp_backend *be, sp_arena *arena, int pooling, const float *states,
                      float **pooled);

/* For forward passes: weight i as float32, rows x cols row-major. An F32
 * weight is returned as it is; a quantized one is decoded into *scratch
 * (rows * cols floats from the arena, allocated by the caller, who sizes it
 * with sp_model_weight_scratch) with be's dequantize_rows. NULL on failure
 * (message in be->err). */
const float *sp_model_weight(sp_backend *be, const void *const *w, const sp_weight_type *wt,
                             int64_t i, int64_t rows, int64_t cols, float *scratch);
/* Floats of scratch sp_model_weight needs for weight i: rows * cols when it
 * is quantized, 0 otherwise. */
static inline int64_t sp_model_weight_scratch(const sp_weight_type *wt, int64_t i, int64_t rows,
                                              int64_t cols) {
    return i >= 0 && wt[i] != SP_WEIGHT_F32 ? rows * cols : 0;
}
/* For forwards that decode quantized matrices themselves (an arch without
 * packed_gemms): a matrix of every block that a forward step decodes, when quantized,
 * together with the step's other matrices: its offset in the block and its
 * shape (rows x cols, row-major). */
typedef struct {
    int64_t offset, rows, cols;
} sp_layer_matrix;
/* Floats of scratch for decoding, one block at a time, the n quantized
 * matrices of `mats` in every one of n_layer blocks laid out `stride`
 * weights apart from i_block0: the largest block's total. */
int64_t sp_model_layer_scratch(const sp_weight_type *wt, int64_t i_block0, int64_t stride,
                               int64_t n_layer, const sp_layer_matrix *mats, int n);
/* The block starting at weight i_block's matrices `mats` as float32, each
 * decoded (when quantized) into its own part of scratch, sized by
 * sp_model_layer_scratch: out[j] is matrix j. 0, or -1 (message in be->err). */
int sp_model_layer_weights(sp_backend *be, const void *const *w, const sp_weight_type *wt,
                           int64_t i_block, const sp_layer_matrix *mats, int n, float *scratch,
                           const float **out);
/* A forward pass's GEMMs with weight i (an OUT x IN GEMM weight) in
 * whatever form the context gives it: packed (linear_packed), float32
 * (linear), or Q8_0/Q4_0 decoded into the workspace first. The workspace
 * functions return the bytes to take from the arena (0 allowed); every
 * call returns 0, or -1 with a message in be->err. */
size_t sp_model_linear_workspace(sp_backend *be, const void *const *w, const sp_weight_type *wt,
                                 int64_t i, int64_t OUT, int64_t IN, int64_t T);
/* out[T, OUT] = act(x W_i^T + b), or out += x W_i^T + b with accumulate. */
int sp_model_linear(sp_backend *be, const void *const *w, const sp_weight_type *wt, int64_t i,
                    int64_t OUT, int64_t IN, const float *x, const float *b, int64_t T, sp_act act,
                    int accumulate, void *workspace, float *out);
/* The pre-LN MLP sub-block (backend.h's ffn_block) with W_up = weight i_up
 * (F x D) and W_down = weight i_down (D x F): ffn_block_packed when both are
 * packed, ffn_block otherwise (decoding quantized ones into the workspace);
 * one packed and one not is refused. */
size_t sp_model_ffn_workspace(sp_backend *be, const void *const *w, const sp_weight_type *wt,
                              int64_t i_up, int64_t i_down, int64_t D, int64_t F,
                              const int64_t *offsets, int64_t n_docs);
int sp_model_ffn(sp_backend *be, const void *const *w, const sp_weight_type *wt, float *h,
                 const float *ln_w, const float *ln_b, float eps, int64_t i_up, const float *b_up,
                 sp_act act, int64_t i_down, const float *b_down, int64_t D, int64_t F,
                 const int64_t *offsets, int64_t n_docs, void *workspace);
/* M2-BERT's gated block-diagonal MLP (backend.h's glu_ffn_block) with
 * W_gate = weight i_gate (2F x D/nb) and W_down = weight i_down (D x F/nb),
 * as sp_model_ffn: glu_ffn_block_packed when both are packed. */
size_t sp_model_glu_workspace(sp_backend *be, const void *const *w, const sp_weight_type *wt,
                              int64_t i_gate, int64_t i_down, int64_t D, int64_t F, int64_t n_blocks,
                              const int64_t *offsets, int64_t n_docs);
int sp_model_glu(sp_backend *be, const void *const *w, const sp_weight_type *wt, float *h,
                 int64_t i_gate, int64_t i_down, const float *b_down, const float *ln_w,
                 const float *ln_b, float eps, int64_t D, int64_t F, int64_t n_blocks,
                 const int64_t *offsets, int64_t n_docs, void *workspace);
/* Token rows of table i (D values a row) into out[T, D]: get_rows for
 * float32, dequantize_rows with ids for a quantized table. */
int sp_model_gather(sp_backend *be, const void *const *w, const sp_weight_type *wt, int64_t i,
                    int64_t D, const int32_t *ids, int64_t T, float *out);
/* The shape of tensor `name` (ggml order, trailing 1s), whether stored
 * dense or as a sparse spectral tensor: 0 found, 1 absent, -1 malformed
 * (message in err). For hyperparameters read from a tensor's shape. */
int sp_model_tensor_ne(const sp_gguf *g, const char *name, int64_t ne[SP_GGUF_MAX_DIMS], char *err,
                       size_t err_len);
int sp_owned_add(sp_owned_buffers *o, float *buf);
void sp_owned_free(sp_owned_buffers *o);
int sp_weight_list_push(sp_weight_list *wl, const void *data, sp_weight_type type, int64_t n);
void sp_weight_list_free(sp_weight_list *wl);
extern const sp_arch sp_arch_fnet;
extern const sp_arch sp_arch_m2bert;

/* ---- tables derived from the weights, kept across passes ----
 * A context's cache (runtime/tables.c), reached through the pass's arena:
 * table `id` for documents of T tokens, `bytes` long, in backend memory.
 * *fill = 0: it holds what an earlier pass computed; *fill = 1: it was just
 * reserved and the caller must compute it in this pass; NULL: the cache
 * cannot keep it (no cache, or over its budget) and the caller computes it
 * into scratch of its own, every pass. Measure mode answers as the run will,
 * without changing the cache (the pointer is then a placeholder). Call it
 * at most once per (T, id) in a pass, before allocating scratch. */
void *sp_arena_table(sp_arena *a, int64_t T, int64_t id, size_t bytes, int *fill);

#ifdef __cplusplus
}
#endif
#endif
