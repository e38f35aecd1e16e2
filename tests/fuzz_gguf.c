/* libFuzzer harness: any byte string must either load cleanly or fail with a
 * message, never crash, leak or read out of bounds.
 *
 * Build (CMake): -DSPECTRAL_FUZZ=ON with clang (see tests/gguf.cmake).
 * By hand, reader only:
 *   clang -g -O1 -fsanitize=fuzzer,address,undefined -I. tests/fuzz_gguf.c \
 *         formats/gguf.c formats/gguf_writer.c -o fuzz_gguf
 *   ./fuzz_gguf tests/data/fuzz_seeds -max_total_time=60
 * Define SPECTRAL_FUZZ_MODEL (and link the whole library) to also drive the
 * model loader over the same input; every model that loads then tokenizes a
 * fixed text and the input's last bytes through the public API, and the
 * results are checked against spectral_tokenize's contract. */
#include "formats/gguf.h"

#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#ifdef SPECTRAL_FUZZ_MODEL
#include "formats/tokenizer.h" /* sp_text_is_blank */
#include "runtime/spectral.h"
#endif

/* Keep the compiler from discarding reads. */
static volatile uint64_t sink;

#ifdef SPECTRAL_FUZZ_MODEL
/* Tokenized by every model that loads: ASCII and punctuation, a double space,
 * accents (precomposed and combining), full-width letters (what a charsmap
 * rewrites), a tab and newline, an invalid byte (0xFF) and a truncated
 * 3-byte sequence, so each normalizer and fallback path gets input. */
static const char k_text[] = "Hello,  World! caf\xC3\xA9 nai\xCC\x88ve \xEF\xBC\xA1\xEF\xBC\xA2"
                             "\xEF\xBD\x83\t\n\xFF x\xE3\x81 end";

/* Tail of the input tokenized as text: the tensor data is at the end of a
 * GGUF, where mutations keep the model loadable. Bounded to keep runs fast. */
#define FUZZ_TEXT_MAX 256

/* Marks slots spectral_tokenize must not write (real ids are >= 0). */
#define CANARY INT32_MIN

/* Tokenizes text[0..len) three ways (size query, exact buffer, half buffer)
 * and traps unless they agree and every id is in [0, n_vocab). bytes_model:
 * the file's tokenizer is "bytes", whose ids are the input bytes (none for a
 * text of white space alone, which has nothing to embed). */
static void check_tokenize(const spectral_model *m, int32_t n_vocab, const char *text, size_t len,
                           int bytes_model) {
    int64_t n = spectral_tokenize(m, text, len, NULL, 0);
    if (n < 0) __builtin_trap(); /* valid arguments, small text: only OOM may fail */
    if (bytes_model && n != (sp_text_is_blank(text, len) ? 0 : (int64_t)len)) __builtin_trap();
    /* Exactly n slots, so ASan flags a write past what the count promised. */
    int32_t *tok = malloc((size_t)(n > 0 ? n : 1) * sizeof *tok);
    int32_t *part = malloc((size_t)(n > 0 ? n : 1) * sizeof *part);
    if (!tok || !part) goto out;
    if (spectral_tokenize(m, text, len, tok, n) != n) __builtin_trap(); /* deterministic count */
    for (int64_t i = 0; i < n; i++) {
        if (tok[i] < 0 || tok[i] >= n_vocab) __builtin_trap();
        if (bytes_model && tok[i] != (unsigned char)text[i]) __builtin_trap();
    }
    /* A short buffer: the same total, the first h ids, nothing past h. */
    int64_t h = n / 2;
    for (int64_t i = 0; i < n; i++) part[i] = CANARY;
    if (spectral_tokenize(m, text, len, part, h) != n) __builtin_trap();
    for (int64_t i = 0; i < n; i++)
        if (part[i] != (i < h ? tok[i] : CANARY)) __builtin_trap();
out:
    free(tok);
    free(part);
}

static void check_model(const spectral_model *m, const uint8_t *data, size_t size, int bytes_model) {
    const int32_t n_vocab = spectral_model_n_vocab(m);
    if (n_vocab <= 0 || spectral_model_n_embd(m) <= 0 || spectral_model_n_pooled(m) < spectral_model_n_embd(m))
        __builtin_trap();
    /* Bad arguments are refused, not read. */
    int32_t one;
    if (spectral_tokenize(m, NULL, 1, NULL, 0) != -1 || spectral_tokenize(m, k_text, 1, NULL, 1) != -1 ||
        spectral_tokenize(m, k_text, 1, &one, -1) != -1)
        __builtin_trap();
    /* Empty text may be passed as NULL; both give the same (special tokens only). */
    int64_t e = spectral_tokenize(m, NULL, 0, NULL, 0);
    if (e < 0 || e != spectral_tokenize(m, "", 0, NULL, 0)) __builtin_trap();
    if (bytes_model && e != 0) __builtin_trap();
    check_tokenize(m, n_vocab, k_text, sizeof k_text - 1, bytes_model);
    size_t n = size < FUZZ_TEXT_MAX ? size : FUZZ_TEXT_MAX;
    check_tokenize(m, n_vocab, (const char *)data + (size - n), n, bytes_model);
}
#endif

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
    int reader_ok = 0, bytes_model = 0;
    if (sp_gguf_open_memory(data, size, &g, err, sizeof err) == 0) {
        reader_ok = 1;
        sink += sp_gguf_version(g) + sp_gguf_alignment(g) + sp_gguf_file_size(g);
        int64_t km = sp_gguf_find_key(g, "tokenizer.ggml.model");
        if (km >= 0 && sp_gguf_kv_type(g, km) == SP_GGUF_TYPE_STRING) {
            sp_gguf_str s = sp_gguf_get_str(g, km);
            bytes_model = s.len == 5 && memcmp(s.ptr, "bytes", 5) == 0;
        }
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
            /* block types (Q8_0, Q4_0): 32 values per block, whole blocks per row */
            const int64_t bs = sp_tensor_block_size(t->type);
            const size_t bb = sp_tensor_block_bytes(t->type);
            if (bs == 0 || bb == 0 || t->ne[0] % bs || t->n_dims < 1 || t->n_dims > SP_GGUF_MAX_DIMS)
                __builtin_trap();
            touch(t->data, t->nbytes);
            /* convert a bounded prefix (one block): exercises the element readers on the mapping */
            float buf[32];
            uint64_t n = t->nbytes / bb * (uint64_t)bs;
            sp_convert_to_f32(t->type, t->data, buf, (size_t)(n < 32 ? n : 32));
        }
        sp_gguf_close(g);
    } else if (err[0] == '\0') {
        __builtin_trap(); /* every failure must say why */
    }
#ifdef SPECTRAL_FUZZ_MODEL
    spectral_model *m = NULL;
    spectral_status st = spectral_model_load_from_memory(data, size, spectral_model_default_params(), &m);
    if (st == SPECTRAL_OK) {
        if (!m || !reader_ok) __builtin_trap(); /* the loader reads with the same reader */
        check_model(m, data, size, bytes_model);
        spectral_model_free(m);
    } else if (m || spectral_last_error()[0] == '\0') {
        __builtin_trap(); /* a failed load returns no model and says why */
    }
#endif
    return 0;
}
