/* bench_attention - the attention baseline that spectral-bench measures next
 * to the spectral model: a standard pre-LN Transformer encoder of the same
 * width, MLP width and depth, with random weights, on the CPU.
 *
 *   bench_attn *m = bench_attn_create(D, F, L, n_threads, err, sizeof err);
 *   if (bench_attn_prepare(m, T, BENCH_ATTN_MODEL) == 0) {   // buffers for T tokens
 *       for (...) bench_attn_run(m);                         // what is timed
 *       size_t peak = bench_attn_peak_memory(m);
 *   }
 *   bench_attn_release(m);
 *   bench_attn_free(m);
 *
 * The encoder: token embedding (256 ids), then L blocks of
 *   h += Wo MHA(LN(h)) + bo;   h += W2 GELU(W1 LN(h) + b1) + b2
 * then mean pooling. Heads are 64 wide (D/64 heads; narrower models use the
 * largest divisor of D up to 64).
 *
 * Projections, MLP, LayerNorms, embedding and pooling go through the CPU
 * backend (kernels/backend.h). The attention itself is blockwise with an
 * online softmax (flash-attention style), so its memory is O(T), not O(T^2):
 * for each (head, block of 128 queries) it walks the keys in blocks of 256,
 * S = Q K^T and O += P V on single-threaded cblas_sgemm. The (head, query
 * block) items are spread over the model's own n_threads threads; it never
 * relies on OpenBLAS's threads. With a threaded OpenBLAS it sets OpenBLAS to
 * one thread for the duration of each attention call and restores the
 * previous count afterwards.
 *
 * Memory: the bench's own count of the activation buffers (weights are not
 * counted): the residual h and one T x D buffer (LN output, reused for the
 * attention output), one T x max(3D, F) buffer (QKV, reused for the MLP
 * hidden layer), the per-thread block scratch and the token ids. In
 * BENCH_ATTN_MIX mode the wide buffer is T x 3D and there are no token ids.
 *
 * Not thread-safe: one model is used by one thread at a time. Functions
 * returning int return 0 on success and -1 on failure. */
#ifndef SPECTRAL_BENCH_ATTENTION_H
#define SPECTRAL_BENCH_ATTENTION_H

#include <stddef.h>
#include <stdint.h>

typedef struct bench_attn bench_attn;

typedef enum {
    BENCH_ATTN_MODEL, /* the whole encoder on one document: embed, L blocks, mean pool */
    BENCH_ATTN_MIX,   /* one token-mixing sublayer: QKV, attention, output projection
                         added into the residual (what the spectral mixing replaces) */
} bench_attn_mode;

/* Random weights of shape D/F/L (D >= 1) and a CPU backend with n_threads
 * threads (0 = all online cores), which the attention uses too. NULL with a
 * message in err on failure. */
bench_attn *bench_attn_create(int64_t D, int64_t F, int64_t L, int n_threads, char *err,
                              size_t err_len);
void bench_attn_free(bench_attn *m);

int64_t bench_attn_n_heads(const bench_attn *m);
int64_t bench_attn_head_dim(const bench_attn *m);

/* Activation bytes bench_attn_prepare(m, T, mode) will allocate: compare with
 * a memory limit before allocating. */
size_t bench_attn_memory_needed(const bench_attn *m, int64_t T, bench_attn_mode mode);

/* Allocates the activations for one document of T tokens (releasing earlier
 * ones) and fills the inputs with random values; resets the peak. -1 when
 * out of memory (nothing stays allocated then). */
int bench_attn_prepare(bench_attn *m, int64_t T, bench_attn_mode mode);

/* Runs the prepared mode once on the prepared buffers. -1 on a backend error
 * (message in bench_attn_error). */
int bench_attn_run(bench_attn *m);

/* Peak activation bytes since the last bench_attn_prepare. */
size_t bench_attn_peak_memory(const bench_attn *m);

/* Frees the activations (the weights stay). */
void bench_attn_release(bench_attn *m);

/* The backend's last error message. */
const char *bench_attn_error(const bench_attn *m);

#endif
