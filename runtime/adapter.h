/* Internal to the runtime: FourierFT adapters (runtime/adapter.c) and the few
 * things they need from runtime/spectral.c. The public side is the
 * "Adapters" section of spectral.h.
 *
 * A context's adapter set is a copy of the model's weight table in which
 * every targeted matrix points at a merged copy, W + sum_a scale_a * delta_W_a,
 * in the context's backend memory: the architectures' forward passes read
 * weights only through that table, so they run unchanged with adapters.
 *
 * Thread safety: as spectral.h states for adapters and contexts. */
#ifndef SP_ADAPTER_H
#define SP_ADAPTER_H

#include "spectral.h"

#include "formats/gguf.h"
#include "kernels/backend.h"
#include "models/model.h"
#include "runtime/internal.h"

/* ---- from runtime/adapter.c ---- */
typedef struct sp_adapter_set sp_adapter_set;

/* Builds a context's set over base_w (the model's weights in be's memory,
 * stored as base_wt there): checks that every adapter belongs to model m and
 * every scale is finite, merges each targeted matrix on the host (a Q8_0 or
 * Q4_0 target is dequantized first, so its merged copy is float32) and
 * uploads it to be; a target the context packs (SP_WEIGHT_PACKED in
 * base_wt) has its merged copy packed for `compute` (the context's compute
 * type for float32 weights). */
spectral_status sp_adapter_set_build(const spectral_model *m, sp_backend *be,
                                     const void *const *base_w, const sp_weight_type *base_wt,
                                     sp_compute compute, spectral_adapter *const *adapters,
                                     const float *scales, int32_t n, sp_adapter_set **out);
/* The weight table a forward pass uses with this set, and its types
 * (SP_WEIGHT_F32 or SP_WEIGHT_PACKED for every merged matrix). */
const void *const *sp_adapter_set_weights(const sp_adapter_set *set);
const sp_weight_type *sp_adapter_set_types(const sp_adapter_set *set);
/* Frees the merged matrices (backend buffers of be) and the table. */
void sp_adapter_set_free(sp_adapter_set *set, sp_backend *be);
/* Target i's materialised delta_W (rows x cols, row-major, scaling applied)
 * and the model tensor it changes; NULL when i is out of range. For tests. */
const float *sp_adapter_delta(const spectral_adapter *a, int32_t i, const char **target,
                              int64_t *rows, int64_t *cols);

#endif
