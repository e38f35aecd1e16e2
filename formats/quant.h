/* ggml's block quantization formats Q8_0 and Q4_0, byte for byte.
 *
 * Usage:
 *
 *     // n must be a multiple of SP_QK (32): one block per 32 values
 *     uint8_t *q = malloc(sp_quant_row_bytes(SP_TENSOR_Q8_0, n));
 *     sp_quantize_row(SP_TENSOR_Q8_0, x, q, n);        // float32 -> blocks
 *     sp_dequantize_row(SP_TENSOR_Q8_0, q, y, n);      // blocks -> float32
 *
 * Layouts (ggml's block_q8_0 / block_q4_0, little-endian, no padding):
 *   Q8_0 (ggml type 8): 34 bytes = f16 d, int8 qs[32];   x[j] = d * qs[j]
 *   Q4_0 (ggml type 2): 18 bytes = f16 d, uint8 qs[16];
 *       x[j] = d * ((qs[j] & 15) - 8), x[j + 16] = d * ((qs[j] >> 4) - 8)
 * The encoders are ggml's reference ones (quantize_row_q8_0_ref,
 * quantize_row_q4_0_ref): the same scale, the same rounding (roundf, i.e.
 * half away from zero, for Q8_0; truncation of x/d + 8.5 clamped to 15 for
 * Q4_0), the scale rounded to f16 to nearest-even after it was used. So the
 * bytes equal those of ggml and of gguf-py's gguf.quants.quantize.
 *
 * Thread safety: pure functions over caller buffers; call from any thread.
 * Internal to spectral (sp_ names); lives in formats/ and depends on nothing
 * of ours but gguf.h's half-precision conversions. */
#ifndef SP_QUANT_H
#define SP_QUANT_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#define SP_QK 32             /* values per block, Q8_0 and Q4_0 */
#define SP_Q8_0_BLOCK_BYTES 34
#define SP_Q4_0_BLOCK_BYTES 18

/* Non-zero for a block-quantized type this file handles. */
int sp_quant_is_block_type(int type);
/* Bytes of n values of a block type (n a multiple of SP_QK); 0 otherwise. */
size_t sp_quant_row_bytes(int type, int64_t n);
/* x: n floats (finite); n a multiple of SP_QK. Return 0, or -1 on a bad type or n. */
int sp_quantize_row(int type, const float *x, void *q, int64_t n);
int sp_dequantize_row(int type, const void *q, float *y, int64_t n);

#ifdef __cplusplus
}
#endif
#endif
