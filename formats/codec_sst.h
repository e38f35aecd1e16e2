/* Sparse spectral tensors (sst): a matrix stored as its largest 2-D FFT
 * coefficients, reconstructed at load.
 *
 * Usage:
 *
 *     // encode a dense OUT x IN matrix (ggml ne = [IN, OUT]) keeping k bins
 *     float *val = malloc(2 * k * sizeof *val);       // (re, im) pairs
 *     int32_t *idx = malloc(k * sizeof *idx);
 *     if (sp_sst_encode(w, OUT, IN, k, val, idx, err, sizeof err)) { ... }
 *     // decode (validates idx first)
 *     if (sp_sst_decode(val, idx, k, OUT, IN, w2, err, sizeof err)) { ... }
 *
 *     // from a GGUF file: 1 = not stored as sst, 0 = found and valid, -1 = bad
 *     sp_sst_ref ref;
 *     if (sp_sst_find(g, "blk.0.ffn_up.weight", &ref, err, sizeof err) == 0)
 *         sp_sst_decode_ref(&ref, dense, err, sizeof err);   // ref.ne[0] * ref.ne[1] floats
 *
 * The format (pinned in docs/quantize.md): for a tensor NAME
 * with ggml shape [N, M] (an M x N row-major matrix W),
 *   NAME.sst_values  F32 or F16, shape [2, k]: coefficients as (re, im)
 *   NAME.sst_index   I32, shape [k]: flat index r * (N/2 + 1) + c into
 *                    X = rfft2(W, norm="ortho"), the M x (N/2 + 1) half
 *                    spectrum numpy.fft.rfft2 returns; strictly increasing
 *   NAME.sst_shape   metadata, u64 (or u32) array [N, M]
 * and W = irfft2(X_kept, s=(M, N), norm="ortho") with every bin not stored
 * equal to zero. In columns c = 0 and c = N/2 (N even) bins r and M - r are
 * conjugates of each other: only r <= M/2 may be stored, its partner is
 * implied, and the imaginary part of the self-conjugate bins (r = 0, r = M/2)
 * is taken as zero. So no conjugate pair is stored twice, and the kept set is
 * the Frobenius-optimal one: bins are ranked by |X|^2 times the number of
 * full-spectrum bins they stand for (2, or 1 for the self-conjugate ones).
 *
 * The FFTs are FFTW's double-precision ones (libfftw3, a separate library
 * and planner from the float one the CPU backend uses, so the two never
 * share planner state); this file depends on nothing else of ours but
 * gguf.h.
 *
 * Thread safety: every function may be called from any thread; FFTW's
 * planner is not thread-safe, so plans are made under a mutex private to
 * this file (nothing else in spectral plans double-precision transforms).
 * Internal to spectral (sp_ names). */
#ifndef SP_CODEC_SST_H
#define SP_CODEC_SST_H

#include <stddef.h>
#include <stdint.h>

#include "formats/gguf.h"

#ifdef __cplusplus
extern "C" {
#endif

#define SP_SST_VALUES_SUFFIX ".sst_values"
#define SP_SST_INDEX_SUFFIX ".sst_index"
#define SP_SST_SHAPE_SUFFIX ".sst_shape"

/* Bins of the half spectrum, M * (N/2 + 1): the range of an index. */
int64_t sp_sst_half_len(int64_t M, int64_t N);
/* Bins that may be stored (the half spectrum less the implied conjugates):
 * the largest useful k. */
int64_t sp_sst_n_storable(int64_t M, int64_t N);

/* Keeps the k (1 <= k <= sp_sst_n_storable) bins of largest weighted energy
 * of the M x N matrix w (ties: the lower index), as values[2k] and index[k],
 * index increasing. w must be finite; M * (N/2 + 1) must fit an int32. */
int sp_sst_encode(const float *w, int64_t M, int64_t N, int64_t k, float *values, int32_t *index,
                  char *err, size_t err_len);
/* Validates index (range, order, duplicates, implied conjugates) for an
 * M x N matrix. */
int sp_sst_check_index(const int32_t *index, int64_t k, int64_t M, int64_t N, char *err,
                       size_t err_len);
/* out (M x N floats) = irfft2 of the sparse spectrum; validates first. */
int sp_sst_decode(const float *values, const int32_t *index, int64_t k, int64_t M, int64_t N,
                  float *out, char *err, size_t err_len);

typedef struct {
    const sp_gguf_tensor *values, *index;
    int64_t ne[2]; /* dense shape, ggml order: [N, M] */
    int64_t k;
} sp_sst_ref;

/* Looks NAME up as an sst pair: 1 when NAME.sst_values is absent (an error
 * if only NAME.sst_index or NAME.sst_shape is there), 0 when the pair and its
 * shape key are present and consistent (types, shapes, the index checked as
 * above), -1 with a message otherwise. */
int sp_sst_find(const sp_gguf *g, const char *name, sp_sst_ref *ref, char *err, size_t err_len);
/* Decodes a found pair into out (ne[0] * ne[1] floats). */
int sp_sst_decode_ref(const sp_sst_ref *ref, float *out, char *err, size_t err_len);

#ifdef __cplusplus
}
#endif
#endif
