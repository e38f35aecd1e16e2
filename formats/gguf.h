/* GGUF v3 reader and writer (ggml's file format), standalone C11.
 *
 * The reader memory-maps the file (or wraps a caller's buffer), validates
 * every count, length and offset against the file size before touching it,
 * and hands out pointers into the mapping: tensor data is never copied.
 * Every failure returns a non-zero code and writes one human-readable
 * sentence into the caller's error buffer.
 *
 * Internal to spectral: not part of the public API (names start with sp_). */
#ifndef SP_GGUF_H
#define SP_GGUF_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#ifdef __cplusplus
extern "C" {
#endif

#define SP_GGUF_MAGIC "GGUF"
#define SP_GGUF_VERSION 3
#define SP_GGUF_DEFAULT_ALIGNMENT 32
#define SP_GGUF_MAX_DIMS 4

/* The error convention of formats/: writes one printf-style sentence into
 * err[err_len] (nothing when err is NULL or err_len is 0). */
void sp_set_err(char *err, size_t err_len, const char *fmt, ...) __attribute__((format(printf, 3, 4)));

/* Metadata value types, numbered as in ggml's gguf.h. */
typedef enum {
    SP_GGUF_TYPE_UINT8 = 0,
    SP_GGUF_TYPE_INT8 = 1,
    SP_GGUF_TYPE_UINT16 = 2,
    SP_GGUF_TYPE_INT16 = 3,
    SP_GGUF_TYPE_UINT32 = 4,
    SP_GGUF_TYPE_INT32 = 5,
    SP_GGUF_TYPE_FLOAT32 = 6,
    SP_GGUF_TYPE_BOOL = 7,
    SP_GGUF_TYPE_STRING = 8,
    SP_GGUF_TYPE_ARRAY = 9,
    SP_GGUF_TYPE_UINT64 = 10,
    SP_GGUF_TYPE_INT64 = 11,
    SP_GGUF_TYPE_FLOAT64 = 12,
    SP_GGUF_TYPE_COUNT
} sp_gguf_type;

/* Tensor types we understand, numbered as ggml_type. */
typedef enum {
    SP_TENSOR_F32 = 0,
    SP_TENSOR_F16 = 1,
    SP_TENSOR_Q4_0 = 2,  /* 32-value blocks of 18 bytes (formats/quant.h) */
    SP_TENSOR_Q8_0 = 8,  /* 32-value blocks of 34 bytes (formats/quant.h) */
    SP_TENSOR_I32 = 26,  /* integers (sparse spectral tensor indices); never a weight */
    SP_TENSOR_BF16 = 30,
} sp_tensor_type;

typedef struct {
    const char *ptr; /* not NUL-terminated inside the mapping; see sp_gguf_get_str */
    uint64_t len;
} sp_gguf_str;

typedef struct {
    const char *name;     /* NUL-terminated copy owned by the reader */
    uint32_t n_dims;
    int64_t ne[SP_GGUF_MAX_DIMS]; /* ne[0] fastest; unused dims are 1 */
    int type;             /* sp_tensor_type */
    uint64_t offset;      /* relative to the data section */
    uint64_t nbytes;
    const void *data;     /* points into the mapping */
} sp_gguf_tensor;

typedef struct sp_gguf sp_gguf;

/* Open and validate. err receives a message on failure. Returns 0 on success. */
int sp_gguf_open(const char *path, sp_gguf **out, char *err, size_t err_len);
/* Same over a caller-owned buffer that must outlive the reader (fuzzing, tests). */
int sp_gguf_open_memory(const void *data, size_t size, sp_gguf **out, char *err, size_t err_len);
void sp_gguf_close(sp_gguf *g);

uint32_t sp_gguf_version(const sp_gguf *g);
uint64_t sp_gguf_alignment(const sp_gguf *g);
uint64_t sp_gguf_file_size(const sp_gguf *g);

/* Metadata. Keys are looked up by exact name; -1 when absent. */
int64_t sp_gguf_n_kv(const sp_gguf *g);
int64_t sp_gguf_find_key(const sp_gguf *g, const char *key);
const char *sp_gguf_key_name(const sp_gguf *g, int64_t i);   /* NUL-terminated */
sp_gguf_type sp_gguf_kv_type(const sp_gguf *g, int64_t i);
/* Scalar getters: the caller checks the type first. */
uint8_t sp_gguf_get_u8(const sp_gguf *g, int64_t i);
int8_t sp_gguf_get_i8(const sp_gguf *g, int64_t i);
uint16_t sp_gguf_get_u16(const sp_gguf *g, int64_t i);
int16_t sp_gguf_get_i16(const sp_gguf *g, int64_t i);
uint32_t sp_gguf_get_u32(const sp_gguf *g, int64_t i);
int32_t sp_gguf_get_i32(const sp_gguf *g, int64_t i);
uint64_t sp_gguf_get_u64(const sp_gguf *g, int64_t i);
int64_t sp_gguf_get_i64(const sp_gguf *g, int64_t i);
float sp_gguf_get_f32(const sp_gguf *g, int64_t i);
double sp_gguf_get_f64(const sp_gguf *g, int64_t i);
int sp_gguf_get_bool(const sp_gguf *g, int64_t i);
sp_gguf_str sp_gguf_get_str(const sp_gguf *g, int64_t i);
/* Arrays: element type, count; for scalar element types a pointer to the
 * packed little-endian elements; for strings, one element at a time. */
sp_gguf_type sp_gguf_arr_type(const sp_gguf *g, int64_t i);
uint64_t sp_gguf_arr_n(const sp_gguf *g, int64_t i);
const void *sp_gguf_arr_data(const sp_gguf *g, int64_t i);
sp_gguf_str sp_gguf_arr_str(const sp_gguf *g, int64_t i, uint64_t j);

/* Convenience: read an unsigned integer key stored as any of u8/u16/u32/u64
 * (or a non-negative signed one). Returns 0 on success, -1 if absent,
 * -2 if present with another type or negative. */
int sp_gguf_get_uint(const sp_gguf *g, const char *key, uint64_t *out);

/* Tensors. */
int64_t sp_gguf_n_tensors(const sp_gguf *g);
int64_t sp_gguf_find_tensor(const sp_gguf *g, const char *name);
const sp_gguf_tensor *sp_gguf_tensor_at(const sp_gguf *g, int64_t i);

/* Bytes per element of a tensor type, 0 if unknown or block-quantized. */
size_t sp_tensor_type_size(int type);
/* ggml's blck_size and type_size: values per block (1 for plain types, 32
 * for Q8_0/Q4_0) and bytes per block; 0 if the type is unknown. */
int64_t sp_tensor_block_size(int type);
size_t sp_tensor_block_bytes(int type);
const char *sp_tensor_type_name(int type);
const char *sp_gguf_type_name(sp_gguf_type t);

/* Element conversion to f32 (F32/F16/BF16, and Q8_0/Q4_0 when n is a
 * multiple of 32; I32 and unknown types give zeros). */
void sp_convert_to_f32(int type, const void *src, float *dst, size_t n);
float sp_fp16_to_f32(uint16_t h);
uint16_t sp_f32_to_fp16(float f);
/* The index of the first NaN or Inf among n values of type (F32, F16,
 * BF16; for Q8_0/Q4_0, the first value of the first block whose f16 scale
 * is NaN or Inf, the only way a block holds one), or -1 when all are finite
 * or the type holds no floats. Reads the stored bits, converts nothing. */
int64_t sp_first_nonfinite(int type, const void *src, size_t n);
float sp_bf16_to_f32(uint16_t h);
uint16_t sp_f32_to_bf16(float f);

/* ---- Writer ---------------------------------------------------------- */
typedef struct sp_gguf_writer sp_gguf_writer;

sp_gguf_writer *sp_gguf_writer_new(void);
void sp_gguf_writer_free(sp_gguf_writer *w);
/* Keys are copied. Each setter returns 0, or -1 on a duplicate key / OOM. */
int sp_gguf_writer_set_u8(sp_gguf_writer *w, const char *key, uint8_t v);
int sp_gguf_writer_set_i8(sp_gguf_writer *w, const char *key, int8_t v);
int sp_gguf_writer_set_u16(sp_gguf_writer *w, const char *key, uint16_t v);
int sp_gguf_writer_set_i16(sp_gguf_writer *w, const char *key, int16_t v);
int sp_gguf_writer_set_u32(sp_gguf_writer *w, const char *key, uint32_t v);
int sp_gguf_writer_set_i32(sp_gguf_writer *w, const char *key, int32_t v);
int sp_gguf_writer_set_u64(sp_gguf_writer *w, const char *key, uint64_t v);
int sp_gguf_writer_set_i64(sp_gguf_writer *w, const char *key, int64_t v);
int sp_gguf_writer_set_f32(sp_gguf_writer *w, const char *key, float v);
int sp_gguf_writer_set_f64(sp_gguf_writer *w, const char *key, double v);
int sp_gguf_writer_set_bool(sp_gguf_writer *w, const char *key, int v);
int sp_gguf_writer_set_str(sp_gguf_writer *w, const char *key, const char *v);
/* Array of scalars (elem_type not STRING/ARRAY): n packed elements copied. */
int sp_gguf_writer_set_arr(sp_gguf_writer *w, const char *key, sp_gguf_type elem_type,
                           const void *data, uint64_t n);
int sp_gguf_writer_set_arr_str(sp_gguf_writer *w, const char *key, const char *const *strs,
                               uint64_t n);
/* Tensor: data (nbytes = product(ne) / block size * block bytes; ne[0] a
 * multiple of the block size) is copied. */
int sp_gguf_writer_add_tensor(sp_gguf_writer *w, const char *name, int type, uint32_t n_dims,
                              const int64_t *ne, const void *data);
/* Copies key i of a reader (any type, strings byte for byte) into w. */
int sp_gguf_writer_copy_kv(sp_gguf_writer *w, const sp_gguf *g, int64_t i);
/* Writes header, metadata, tensor infos and aligned data to path, through a
 * temporary file beside it renamed over it when complete (formats/
 * file_replace.h): path is a new file, an existing regular file or a link
 * to one; on failure nothing but that temporary file was created, and it is
 * gone. 0 on success. */
int sp_gguf_writer_write(sp_gguf_writer *w, const char *path, char *err, size_t err_len);
/* The same bytes to an open stream (nothing created, renamed or removed). */
int sp_gguf_writer_write_stream(sp_gguf_writer *w, FILE *f, char *err, size_t err_len);

#ifdef __cplusplus
}
#endif
#endif
