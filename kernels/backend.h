/* The backend interface: the one header that kernels/ implement and models/
 * call. A backend is a table of ops over float32 buffers (and, for
 * dequantize_rows, ggml Q8_0/Q4_0 blocks) that live in the
 * backend's memory (host memory for the CPU, device memory for CUDA).
 *
 * Shapes follow llm.c: T tokens (rows), C or D channels (columns), row-major,
 * so x[t*D + d]. Weights follow GGUF/ggml order: a linear layer's weight with
 * ne = [IN, OUT] is an OUT x IN row-major matrix, y = x W^T + b.
 *
 * Every op returns 0 on success, or non-zero after writing a message into
 * be->err (never aborts). Ops on one backend instance are called from one
 * thread at a time; a backend may use threads internally. */
#ifndef SP_BACKEND_H
#define SP_BACKEND_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef struct sp_backend sp_backend;

typedef enum {
    SP_ACT_NONE = 0,
    SP_ACT_GELU = 1,      /* exact erf GELU */
    SP_ACT_GELU_TANH = 2, /* gelu_new: 0.5x(1 + tanh(sqrt(2/pi)(x + 0.044715x^3))) */
    SP_ACT_TANH = 3,      /* FNet's pooler */
} sp_act;

typedef enum { SP_POOL_MEAN = 1, SP_POOL_FIRST = 2, SP_POOL_LAST = 3 } sp_pool_op;

/* How a weight is stored in backend memory. F32 is a float array; the block
 * types are ggml's, byte for byte (ggml's type ids 8 and 2, formats/quant.h),
 * blocks of 32 values, little-endian, not aligned:
 *   Q8_0: 34 bytes = f16 d, int8 q[32];           x[j] = d * q[j]
 *   Q4_0: 18 bytes = f16 d, uint8 nib[16];        x[j] = d * ((nib[j] & 15) - 8),
 *                                                 x[j + 16] = d * ((nib[j] >> 4) - 8)
 * The product d * q is one float32 multiplication, so every decoder gives
 * the same floats. */
typedef enum {
    SP_WEIGHT_F32 = 0,
    SP_WEIGHT_Q8_0 = 1,
    SP_WEIGHT_Q4_0 = 2,
    SP_WEIGHT_PACKED = 3, /* an sp_packed * made by pack_weight (below) */
} sp_weight_type;

/* The arithmetic of a GEMM on packed weights: y[o] = x . W[o] over k < IN,
 * acc starting at 0 (or at out when accumulating), then + b[o] and act.
 *   F32:  acc = fma(x[k], W[o][k], acc) for k = 0, 1, ... in order.
 *   INT8: W is Q8_0 or Q4_0, W[o][k] = d[o][b] * q[o][k] with b = k / 32.
 *         Each row of x is quantized per block of 32 as ggml's Q8_0 does it,
 *         with a float32 scale: a = max |x[k]| over the block, dx = a / 127,
 *         q_x[k] = round-to-nearest-even(x[k] * (1 / dx)) clamped to [-127, 127]
 *         (0 when a = 0, or when 1 / dx overflows). The
 *         block sums S[b] = sum q_x[k] q[o][k] are exact integers, then
 *         acc = fma((float)S[b], d[o][b] * dx[b], acc) for b = 0, 1, ...
 *   BF16: W (any type, decoded to float32) and x rounded to bfloat16 (nearest
 *         even, denormals to zero); for each pair i, as VDPBF16PS:
 *         acc = fma(x[2i+1], W[o][2i+1], acc), then acc = fma(x[2i], W[o][2i], acc),
 *         denormal inputs read as 0 and denormal results flushed to 0.
 * Every kernel of a type (portable C, AVX2, AVX-512) gives the same bits;
 * docs/precision.md says why these and what they cost in accuracy. */
typedef enum { SP_COMPUTE_F32 = 0, SP_COMPUTE_INT8 = 1, SP_COMPUTE_BF16 = 2 } sp_compute;
/* A weight matrix laid out once in a backend's own GEMM format. */
typedef struct sp_packed sp_packed;
/* A packed weight's rows [r, r + n), r and n multiples of this, are a
 * packed weight of their own (its layout's panels). */
#define SP_PACKED_ROWS 16

/* One Hyena implicit filter of M2-BERT's long convolution (models/m2bert.c),
 * both directions, every array in backend memory:
 *   for r in {0: forward, 1: reverse}:
 *     a_0 = z (T x E);  a_i = sin(w_mod * freq_r[i-1] (.) (a_{i-1} W_i^T + b_i)), i = 1, 2, 3
 *       (W_1 = W_in: order x E, W_2, W_3 = W_mid[0], W_mid[1]: order x order;
 *        freq_r: 3 x order; (.) per column)
 *     k_r[t, d] = (a_3 W_out^T)[t, d] * exp(-t_pos[t] * |decay[d]|)     (W_out: D x order)
 * Backends evaluate the Sin layers in double precision: each multiplies
 * rounding errors by about w_mod * freq (~10), so in float32 the three of
 * them cost ~1e-4 of relative accuracy in the model's output. */
typedef struct {
    int64_t E, order;
    float w_mod;
    const float *z;     /* T x E positional features (the first T of the model's rows) */
    const float *t;     /* T positions in [0, 1] (t_pos) */
    const float *decay; /* D */
    struct {
        const float *W_in, *b_in;
        const float *W_mid[2], *b_mid[2];
        const float *freq;
        const float *W_out;
    } dir[2];
} sp_hyena_filter;

typedef struct sp_backend_ops {
    const char *name; /* "cpu", "cuda" */

    void (*destroy)(sp_backend *be);

    /* Memory in the backend's address space. Allocations are aligned to at
     * least 256 bytes. buffer_alloc returns NULL on failure (message in err). */
    void *(*buffer_alloc)(sp_backend *be, size_t bytes);
    void (*buffer_free)(sp_backend *be, void *p);
    int (*upload)(sp_backend *be, void *dst, const void *src_host, size_t bytes);
    int (*download)(sp_backend *be, void *dst_host, const void *src, size_t bytes);
    /* Waits for all queued work (a no-op on the CPU). */
    int (*synchronize)(sp_backend *be);

    /* out[t, :] = table[ids[t], :]; ids live in backend memory. */
    int (*get_rows)(sp_backend *be, const float *table, int64_t D, const int32_t *ids, int64_t T,
                    float *out);

    /* out = (x - mean) / sqrt(var + eps) * w + b per row, biased variance.
     * out may equal x. */
    int (*layer_norm)(sp_backend *be, const float *x, const float *w, const float *b, float eps,
                      int64_t T, int64_t D, float *out);

    /* out[T, OUT] = act(x[T, IN] W^T + b), W an OUT x IN row-major matrix, b
     * may be NULL. With accumulate, out += x W^T + b (act must be NONE). */
    int (*linear)(sp_backend *be, const float *x, const float *W, const float *b, int64_t T,
                  int64_t IN, int64_t OUT, sp_act act, int accumulate, float *out);

    /* Bytes of scratch the mixing op needs for this shape (0 allowed). */
    size_t (*mix_workspace_size)(sp_backend *be, int64_t T, int64_t D);

    /* The spectralmlp token mixing, added into h:
     *   k = min(K, T/2); U = FFT_t(u[:, d]); Z_f = U_f * W[d, f] for f < k, else 0;
     *   h[:, d] += Re(IFFT(Z))[:, d] + bias[d].
     * filter holds W as (re, im) pairs, index (d * K + f) * 2. bias may be NULL.
     * workspace has at least mix_workspace_size(T, D) bytes. */
    int (*spectral_mix)(sp_backend *be, const float *u, const float *filter, const float *bias,
                        int64_t K, int64_t T, int64_t D, void *workspace, float *h);

    /* out_host[D] = mean / first / last row of x[T, D]. */
    int (*pool)(sp_backend *be, const float *x, int64_t T, int64_t D, sp_pool_op op,
                float *out_host);

    /* Bytes of scratch fourier2d_real needs for this shape (0 allowed). */
    size_t (*fourier2d_workspace_size)(sp_backend *be, int64_t T, int64_t D);
    /* FNet's token mixing: out = Re(FFT2(x)) over (sequence, hidden) of the
     * T x D matrix x, unnormalized. out must not alias x. workspace has at
     * least fourier2d_workspace_size(T, D) bytes. */
    int (*fourier2d_real)(sp_backend *be, const float *x, int64_t T, int64_t D, void *workspace,
                          float *out);

    /* y[i] += x[i] for n elements (residual connections). */
    int (*add)(sp_backend *be, const float *x, int64_t n, float *y);

    /* ---- fused sub-blocks of spectralmlp (what the graph code calls) ----
     * Rows of several documents may be packed into one h: document i owns
     * rows [offsets[i], offsets[i+1]) of h (n_docs + 1 offsets, offsets[0] =
     * 0, strictly increasing). Per-token work (LayerNorm, MLP) runs over all
     * rows at once; the mixing runs inside each document. */

    /* Bytes of scratch mix_block needs for these documents and K (0 allowed). */
    size_t (*mix_block_workspace_size)(sp_backend *be, const int64_t *offsets, int64_t n_docs,
                                       int64_t D, int64_t K);
    /* The mixing sub-block with its pre-LayerNorm and residual, in place:
     *   h[doc] += spectral_mix(LN(h[doc]; ln_w, ln_b, eps))   for every doc
     * with spectral_mix's maths above (filter bins, bias). */
    int (*mix_block)(sp_backend *be, float *h, const float *ln_w, const float *ln_b, float eps,
                     const float *filter, const float *bias, int64_t K, int64_t D,
                     const int64_t *offsets, int64_t n_docs, void *workspace);

    /* Bytes of scratch ffn_block needs for these documents (0 allowed). */
    size_t (*ffn_block_workspace_size)(sp_backend *be, const int64_t *offsets, int64_t n_docs,
                                       int64_t D, int64_t F);
    /* The MLP sub-block with its pre-LayerNorm and residual, in place, per row:
     *   h += act(LN(h; ln_w, ln_b, eps) W_up^T + b_up) W_down^T + b_down
     * W_up is F x D, W_down is D x F (ggml [D, F] and [F, D]); biases may be NULL.
     * The maths is per row; offsets only say where documents start, so that a
     * backend may cut its GEMM rows at document starts (the CPU does: a
     * document then meets the same sgemm calls packed or alone, and its
     * results are bit-identical either way). */
    int (*ffn_block)(sp_backend *be, float *h, const float *ln_w, const float *ln_b, float eps,
                     const float *W_up, const float *b_up, sp_act act, const float *W_down,
                     const float *b_down, int64_t D, int64_t F, const int64_t *offsets,
                     int64_t n_docs, void *workspace);

    /* Bytes the backend allocates itself during a pass whose longest document
     * has T_max rows, outside the workspaces it is given (the CPU's FFTW
     * twiddle tables): the runtime counts them against the memory limit with
     * the arena. NULL means none. */
    size_t (*external_memory)(sp_backend *be, int64_t T_max);

    /* Decodes rows of a block-quantized matrix (type Q8_0 or Q4_0, rows of
     * row_len values, row_len a multiple of 32, so a row is row_len / 32
     * whole blocks):
     *   dst[r, :] = decode(src row (ids ? ids[r] : r))   for r < n_rows
     * With ids NULL it decodes the first n_rows rows (a whole matrix before a
     * GEMM); with ids (in backend memory, each >= 0 and below the caller's
     * row count) it is get_rows for a quantized table. May be NULL in a
     * backend whose weights are all float32 (CUDA dequantizes at upload). */
    int (*dequantize_rows)(sp_backend *be, sp_weight_type type, const void *src, int64_t row_len,
                           const int32_t *ids, int64_t n_rows, float *dst);

    /* ---- packed weights (optional: all NULL in a backend without them) ----
     * A weight W (OUT x IN, stored as type) is laid out once, for one compute
     * type, in the backend's own blocked format (its GEMM kernels read it as
     * is: nothing is repacked per call), then used by the two ops below. The
     * results follow sp_compute's arithmetic above; the rows are cut into
     * fixed tiles as linear's are, so they are bit-identical for any thread
     * count and packing of documents. */

    /* Bytes pack_weight would take (the whole object), or 0 when this backend
     * cannot lay out a type-stored weight for compute (on the CPU: INT8 of a
     * float weight, rows not whole 32-blocks): the caller then keeps the
     * weight as it is and calls linear / ffn_block. The CPU lays out F32 as
     * plain rows for OpenBLAS where its AVX2 kernel cannot run (SPECTRAL_CPU_ISA=c
     * asks for that too), pointing at W when W is float32: W must then
     * outlive the packed weight. */
    size_t (*packed_size)(sp_backend *be, sp_weight_type type, int64_t OUT, int64_t IN,
                          sp_compute compute);
    /* The packed copy of W (type as in dequantize_rows, or F32), or NULL with
     * a message in err. W is only read. Freed by packed_free on any instance
     * of the same backend. */
    sp_packed *(*pack_weight)(sp_backend *be, sp_weight_type type, const void *W, int64_t OUT,
                              int64_t IN, sp_compute compute);
    void (*packed_free)(sp_backend *be, sp_packed *W);
    /* Bytes of scratch linear_packed needs for T rows (0 allowed). */
    size_t (*linear_packed_workspace_size)(sp_backend *be, const sp_packed *W, int64_t T);
    /* linear with a packed W (its OUT x IN shape): out[T, OUT] = act(x W^T + b),
     * or out += x W^T + b with accumulate (act NONE). */
    int (*linear_packed)(sp_backend *be, const float *x, const sp_packed *W, const float *b,
                         int64_t T, sp_act act, int accumulate, void *workspace, float *out);
    /* ffn_block with packed W_up (F x D) and W_down (D x F). */
    size_t (*ffn_block_packed_workspace_size)(sp_backend *be, const sp_packed *W_up,
                                              const sp_packed *W_down, const int64_t *offsets,
                                              int64_t n_docs);
    int (*ffn_block_packed)(sp_backend *be, float *h, const float *ln_w, const float *ln_b,
                            float eps, const sp_packed *W_up, const float *b_up, sp_act act,
                            const sp_packed *W_down, const float *b_down, const int64_t *offsets,
                            int64_t n_docs, void *workspace);
    /* ---- M2-BERT (models/m2bert.c); one document of T rows ---- */

    /* y[t, :] += row[:] for t < T (a row broadcast, e.g. a token type row). */
    int (*add_row)(sp_backend *be, const float *row, int64_t T, int64_t D, float *y);

    /* The bidirectional long convolution of D channels of length T with a
     * filter's kernels k_0, k_1 (sp_hyena_filter above), as the reference
     * computes it with an FFT of length 2T (any length N >= 2T gives the same
     * result; the backend picks N):
     *   conv(x)[t, d] = sum_{s <= t} k_0[t - s, d] x[s, d] + sum_{s > t} k_1[s - t - 1, d] x[s, d]
     * hyena_filter computes the filter's spectrum, an opaque table of
     * hyena_spectrum_size(T, D) bytes (the DFT of the N-long kernel
     * [k_0, 0, ..., reversed k_1] of each channel, divided by N), which
     * hyena_mix multiplies by; it depends on T only through its rows [0, T)
     * of z and t, so a caller may keep it for every pass of that length. */
    size_t (*hyena_spectrum_size)(sp_backend *be, int64_t T, int64_t D);
    size_t (*hyena_filter_workspace_size)(sp_backend *be, int64_t T, int64_t D, int64_t E,
                                          int64_t order);
    int (*hyena_filter)(sp_backend *be, const sp_hyena_filter *f, int64_t T, int64_t D,
                        void *workspace, void *spectrum);
    /* The Monarch Mixer sequence mixing after its input projection, with a
     * (T x 3D, the projection's output) and u (T x D, the layer's input):
     *   c[t, j] = W_c[j, 0] a[t-2, j] + W_c[j, 1] a[t-1, j] + W_c[j, 2] a[t, j] + b_c[j]
     *             (a causal depthwise convolution; a[t < 0] = 0; W_c: 3D x 3)
     *   x1, x2, v = c[:, 0:D], c[:, D:2D], c[:, 2D:3D];  v = v * x1
     *   y = (conv_spec(v) + v * bias) * x2 + (conv_spec_res(u) + u * bias_res)
     * y (T x D) must not alias a or u. */
    size_t (*hyena_mix_workspace_size)(sp_backend *be, int64_t T, int64_t D);
    int (*hyena_mix)(sp_backend *be, const float *a, const float *conv_w, const float *conv_b,
                     const float *u, const void *spec, const float *bias, const void *spec_res,
                     const float *bias_res, int64_t T, int64_t D, void *workspace, float *y);

    /* M2-BERT's gated MLP with block-diagonal (Monarch) weights and its
     * post-LayerNorm residual, in place, per row (documents as for ffn_block):
     *   g = blockdiag(W_gate) h          block b: g[b*2F/nb ..] from h[b*D/nb ..]
     *   m = gelu(g[0:F]) * g[F:2F]       (exact erf GELU)
     *   h = LN(blockdiag(W_down) m + b_down + h; ln_w, ln_b, eps)
     * W_gate: 2F x D/nb and W_down: D x F/nb row-major, their nb blocks of
     * rows stacked (block b of W_gate is rows [b*2F/nb, (b+1)*2F/nb)). */
    size_t (*glu_ffn_block_workspace_size)(sp_backend *be, const int64_t *offsets, int64_t n_docs,
                                           int64_t D, int64_t F, int64_t n_blocks);
    int (*glu_ffn_block)(sp_backend *be, float *h, const float *W_gate, const float *W_down,
                         const float *b_down, const float *ln_w, const float *ln_b, float eps,
                         int64_t D, int64_t F, int64_t n_blocks, const int64_t *offsets,
                         int64_t n_docs, void *workspace);
    /* glu_ffn_block with packed W_gate (2F x D/nb) and W_down (D x F/nb)
     * (optional, as the packed ops above): each block of rows runs as a weight
     * of its own, so the blocks' rows (2F/nb and D/nb) must be multiples of
     * SP_PACKED_ROWS. */
    size_t (*glu_ffn_block_packed_workspace_size)(sp_backend *be, const sp_packed *W_gate,
                                                  const sp_packed *W_down, const int64_t *offsets,
                                                  int64_t n_docs, int64_t n_blocks);
    int (*glu_ffn_block_packed)(sp_backend *be, float *h, const sp_packed *W_gate,
                                const sp_packed *W_down, const float *b_down, const float *ln_w,
                                const float *ln_b, float eps, int64_t n_blocks,
                                const int64_t *offsets, int64_t n_docs, void *workspace);
} sp_backend_ops;

struct sp_backend {
    const sp_backend_ops *ops;
    int host_memory; /* 1 when backend buffers are ordinary host memory */
    int n_threads;
    /* Work items (tiles) in flight at once, at most n_threads; 0 means
     * n_threads. The runtime lowers it to fit a memory limit: the workspace
     * sizes above follow it, so fewer tiles in flight need less scratch. */
    int max_parallel;
    char err[512];
    void *impl;
};

/* Constructors (one per backend). Return NULL with a message in err. */
sp_backend *sp_backend_cpu_create(int n_threads, char *err, size_t err_len);
/* Defined only when built with CUDA (SPECTRAL_HAVE_CUDA). */
sp_backend *sp_backend_cuda_create(int device, char *err, size_t err_len);
/* Number of CUDA devices visible, 0 when none or built without CUDA. */
int sp_backend_cuda_device_count(void);

/* The activation arena (implemented in runtime/arena.c). The graph code in
 * models/ takes every activation from it. In measure mode nothing is
 * allocated and sp_arena_alloc returns distinct non-NULL placeholders, so one
 * code path both plans and runs. */
typedef struct sp_arena sp_arena;
void *sp_arena_alloc(sp_arena *a, size_t bytes);
/* Non-zero while the arena only measures: the caller allocates and returns
 * without running any op. */
int sp_arena_measuring(const sp_arena *a);

#ifdef __cplusplus
}
#endif
#endif
