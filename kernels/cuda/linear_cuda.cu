/* Linear layers on the GPU: linear (cuBLAS SGEMM plus a fused bias and
 * activation kernel) and the MLP sub-block ffn_block built from it. */
#include "kernels/cuda/cuda_internal.cuh"

#include <stdint.h>

/* Rows per ffn_block chunk: bounds the hidden activations in the workspace
 * to FFN_CHUNK_ROWS x F floats (as models/spectralmlp.c's ffn_forward did). */
#define FFN_CHUNK_ROWS 2048

/* out[t, o] = act(out[t, o] + b[o]), act an sp_act */
__global__ void k_bias_act(float *out, const float *__restrict__ b, int64_t T, int64_t OUT,
                           int act) {
    ROWS_COLS(t, o, T, OUT) {
        const int64_t i = t * OUT + o;
        float v = out[i];
        if (b) v += b[o];
        if (act == SP_ACT_GELU) v = 0.5f * v * (1.0f + erff(v * 0.70710678118654752440f));
        else if (act == SP_ACT_GELU_TANH)
            v = 0.5f * v * (1.0f + tanhf(0.79788456080286536f * (v + 0.044715f * v * v * v)));
        else if (act == SP_ACT_TANH) v = tanhf(v);
        out[i] = v;
    }
}

int sp_cuda_linear(sp_backend *be, const float *x, const float *W, const float *b, int64_t T,
                   int64_t IN, int64_t OUT, sp_act act, int accumulate, float *out) {
    if (T == 0 && IN >= 0 && OUT >= 0) return 0;
    if (T < 0 || IN <= 0 || OUT <= 0 || T > INT32_MAX || IN > INT32_MAX || OUT > INT32_MAX)
        return sp_cuda_set_err(be, "cuda linear: bad shape T=%lld IN=%lld OUT=%lld", (long long)T,
                               (long long)IN, (long long)OUT);
    if (accumulate && act != SP_ACT_NONE)
        return sp_cuda_set_err(be, "cuda linear: accumulate needs act NONE");
    if (act != SP_ACT_NONE && act != SP_ACT_GELU && act != SP_ACT_GELU_TANH && act != SP_ACT_TANH)
        return sp_cuda_set_err(be, "cuda linear: unknown activation %d", (int)act);
    if (!x || !W || !out) return sp_cuda_set_err(be, "cuda linear: NULL argument");
    if (sp_cuda_enter(be)) return -1;
    struct cuda_impl *im = IMPL(be);
    const float one = 1.0f, beta = accumulate ? 1.0f : 0.0f;
    /* row-major out[T, OUT] = x[T, IN] W^T  <=>  column-major out^T = W x^T,
     * W^T in column-major being the row-major W with ld IN. */
    BLAS_CHECK(be, cublasSgemm(im->blas, CUBLAS_OP_T, CUBLAS_OP_N, (int)OUT, (int)T, (int)IN, &one,
                               W, (int)IN, x, (int)IN, &beta, out, (int)OUT));
    if (b || act != SP_ACT_NONE) {
        k_bias_act<<<grid2d(T, OUT, 256), 256, 0, im->stream>>>(out, b, T, OUT, (int)act);
        LAUNCH_CHECK(be, "bias_act");
    }
    return 0;
}

/* ffn_block composes the ops, chunk of rows by chunk of rows:
 *   u = layer_norm(h_c); hidden = act(u W_up^T + b_up); h_c += hidden W_down^T + b_down
 * (the second linear accumulates into h with beta = 1, then adds b_down).
 * The maths is per row, so the chunks run over all the rows of all the
 * documents at once, ignoring where documents start: few, large GEMMs. (The
 * CPU cuts its GEMMs at document starts, so that a document's result is bit
 * for bit the same packed or alone; spectral.h promises that for the CPU
 * only, and here cuBLAS may pick another kernel for another row count.)
 * All of it is queued on the backend's one stream; be->max_parallel is
 * ignored, as there are no host threads or tiles in flight to bound. The
 * workspace holds u (chunk x D) and hidden (chunk x F), chunk = min(T, 2048). */
static int64_t ffn_chunk(int64_t T) { return T < FFN_CHUNK_ROWS ? T : FFN_CHUNK_ROWS; }

size_t sp_cuda_ffn_block_workspace_size(sp_backend *be, const int64_t *offsets, int64_t n_docs,
                                        int64_t D, int64_t F) {
    (void)be;
    int64_t bad;
    if (F <= 0 || sp_cuda_longest_doc(offsets, n_docs, D, &bad) < 0) return 0;
    const size_t rows = (size_t)ffn_chunk(offsets[n_docs]);
    return align_up(rows * (size_t)D * sizeof(float)) + align_up(rows * (size_t)F * sizeof(float)) +
           WS_ALIGN;
}

int sp_cuda_ffn_block(sp_backend *be, float *h, const float *ln_w, const float *ln_b, float eps,
                      const float *W_up, const float *b_up, sp_act act, const float *W_down,
                      const float *b_down, int64_t D, int64_t F, const int64_t *offsets,
                      int64_t n_docs, void *workspace) {
    if (D <= 0 || F <= 0 || D > INT32_MAX || F > INT32_MAX)
        return sp_cuda_set_err(be, "cuda ffn_block: bad shape D=%lld F=%lld", (long long)D,
                               (long long)F);
    if (sp_cuda_check_docs(be, "ffn_block", offsets, n_docs, D)) return -1;
    if (act != SP_ACT_NONE && act != SP_ACT_GELU && act != SP_ACT_GELU_TANH && act != SP_ACT_TANH)
        return sp_cuda_set_err(be, "cuda ffn_block: unknown activation %d", (int)act);
    if (!h || !ln_w || !ln_b || !W_up || !W_down || !workspace)
        return sp_cuda_set_err(be, "cuda ffn_block: NULL argument");
    const int64_t T = offsets[n_docs], chunk = ffn_chunk(T);
    float *u = (float *)align_ptr(workspace);
    float *hidden = (float *)((char *)u + align_up((size_t)chunk * (size_t)D * sizeof(float)));
    for (int64_t r0 = 0; r0 < T; r0 += chunk) {
        const int64_t rows = T - r0 < chunk ? T - r0 : chunk;
        float *hc = h + r0 * D;
        if (sp_cuda_layer_norm(be, hc, ln_w, ln_b, eps, rows, D, u) ||
            sp_cuda_linear(be, u, W_up, b_up, rows, D, F, act, 0, hidden) ||
            sp_cuda_linear(be, hidden, W_down, b_down, rows, F, D, SP_ACT_NONE, 1, hc))
            return -1;
    }
    return 0;
}
