/* libFuzzer harness: any byte string must either load cleanly or fail with a
 * message, never crash, leak or read out of bounds.
 *
 * Build (CMake): -DSPECTRAL_FUZZ=ON with clang (see tests/gguf.cmake).
 * By hand, reader only:
 *   clang -g -O1 -fsanitize=fuzzer,address,undefined -I. tests/fuzz_gguf.c \
 *         formats/gguf.c formats/gguf_writer.c -o fuzz_gguf
 *   ./fuzz_gguf tests/data/fuzz_seeds -max_total_time=60
 * Define SPECTRAL_FUZZ_MODEL (and link the whole library) to also drive the
 * model loader over the same input. */
#include "formats/gguf.h"

#include <stddef.h>
#include <stdint.h>
#include <string.h>

#ifdef SPECTRAL_FUZZ_MODEL
#include "runtime/spectral.h"
#endif

/* Keep the compiler from discarding reads. */
static volatile uint64_t sink;

static void touch(const void *p, uint64_t n) {
    const uint8_t *b = p;
    uint64_t acc = 0;
    /* first and last byte are enough for ASan to catch a bad range */
    if (n) acc += b[0] + b[n - 1];
    sink += acc;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    sp_gguf *g = NULL;
    char err[256];
    err[0] = '\0';
    if (sp_gguf_open_memory(data, size, &g, err, sizeof err) == 0) {
        sink += sp_gguf_version(g) + sp_gguf_alignment(g) + sp_gguf_file_size(g);
        for (int64_t i = 0; i < sp_gguf_n_kv(g); i++) {
            const char *k = sp_gguf_key_name(g, i);
            if (sp_gguf_find_key(g, k) != i) __builtin_trap(); /* lookup must agree with order */
            uint64_t u;
            sink += (uint64_t)sp_gguf_get_uint(g, k, &u);
            switch (sp_gguf_kv_type(g, i)) {
            case SP_GGUF_TYPE_UINT8: sink += sp_gguf_get_u8(g, i); break;
            case SP_GGUF_TYPE_INT8: sink += (uint64_t)sp_gguf_get_i8(g, i); break;
            case SP_GGUF_TYPE_UINT16: sink += sp_gguf_get_u16(g, i); break;
            case SP_GGUF_TYPE_INT16: sink += (uint64_t)sp_gguf_get_i16(g, i); break;
            case SP_GGUF_TYPE_UINT32: sink += sp_gguf_get_u32(g, i); break;
            case SP_GGUF_TYPE_INT32: sink += (uint64_t)sp_gguf_get_i32(g, i); break;
            case SP_GGUF_TYPE_UINT64: sink += sp_gguf_get_u64(g, i); break;
            case SP_GGUF_TYPE_INT64: sink += (uint64_t)sp_gguf_get_i64(g, i); break;
            case SP_GGUF_TYPE_FLOAT32: sink += (uint64_t)(sp_gguf_get_f32(g, i) != 0.0f); break;
            case SP_GGUF_TYPE_FLOAT64: sink += (uint64_t)(sp_gguf_get_f64(g, i) != 0.0); break;
            case SP_GGUF_TYPE_BOOL: sink += (uint64_t)sp_gguf_get_bool(g, i); break;
            case SP_GGUF_TYPE_STRING: {
                sp_gguf_str s = sp_gguf_get_str(g, i);
                touch(s.ptr, s.len);
                break;
            }
            case SP_GGUF_TYPE_ARRAY: {
                uint64_t n = sp_gguf_arr_n(g, i);
                if (sp_gguf_arr_type(g, i) == SP_GGUF_TYPE_STRING) {
                    for (uint64_t j = 0; j < n; j++) {
                        sp_gguf_str s = sp_gguf_arr_str(g, i, j);
                        touch(s.ptr, s.len);
                    }
                } else {
                    const uint8_t *p = sp_gguf_arr_data(g, i);
                    if (n && !p) __builtin_trap();
                    if (n) sink += p[0];
                }
                break;
            }
            default: __builtin_trap(); /* the reader must reject unknown types */
            }
        }
        for (int64_t i = 0; i < sp_gguf_n_tensors(g); i++) {
            const sp_gguf_tensor *t = sp_gguf_tensor_at(g, i);
            if (!t || sp_gguf_find_tensor(g, t->name) != i) __builtin_trap();
            size_t ts = sp_tensor_type_size(t->type);
            if (ts == 0 || t->n_dims < 1 || t->n_dims > SP_GGUF_MAX_DIMS) __builtin_trap();
            touch(t->data, t->nbytes);
            /* convert a bounded prefix: exercises the element readers on the mapping */
            float buf[16];
            uint64_t n = t->nbytes / ts;
            sp_convert_to_f32(t->type, t->data, buf, (size_t)(n < 16 ? n : 16));
        }
        sp_gguf_close(g);
    } else if (err[0] == '\0') {
        __builtin_trap(); /* every failure must say why */
    }
#ifdef SPECTRAL_FUZZ_MODEL
    spectral_model *m = NULL;
    if (spectral_model_load_from_memory(data, size, spectral_model_default_params(), &m) ==
        SPECTRAL_OK)
        spectral_model_free(m);
#endif
    return 0;
}
