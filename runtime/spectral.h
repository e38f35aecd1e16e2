/* spectral.h - inference runtime for spectral-mixing document encoders.
 *
 * One GGUF file in, embeddings out. A model is loaded once and is immutable;
 * contexts hold everything that changes while encoding (activation arena,
 * backend state, outputs).
 *
 * Usage:
 *
 *     spectral_model *model = NULL;
 *     if (spectral_model_load("model.gguf", spectral_model_default_params(), &model)) {
 *         fprintf(stderr, "%s\n", spectral_last_error());
 *         return 1;
 *     }
 *     spectral_context_params cp = spectral_context_default_params();
 *     cp.n_threads = 4;
 *     cp.mem_limit = 512u << 20;              // hard cap on activation memory
 *     spectral_context *ctx = NULL;
 *     if (spectral_context_create(model, cp, &ctx)) { ... }
 *
 *     int64_t n = spectral_tokenize(model, text, len, NULL, 0);   // count only
 *     int32_t *tok = malloc(n * sizeof *tok);
 *     spectral_tokenize(model, text, len, tok, n);
 *     if (spectral_encode(ctx, tok, n) == SPECTRAL_OK) {
 *         const float *e = spectral_get_embedding(ctx);         // n_embd floats
 *     }
 *     spectral_context_free(ctx);
 *     spectral_model_free(model);
 *
 * Thread safety: a spectral_model is read-only after loading and may back any
 * number of contexts used concurrently from different threads. A
 * spectral_context must be used by one thread at a time. spectral_last_error()
 * is per thread.
 *
 * Threads: each CPU context owns a pool of n_threads threads (created with
 * the context, blocked when idle) and calls BLAS single-threaded inside it;
 * results are bit-identical for any n_threads and whatever other contexts
 * exist. A thread that cannot be created makes spectral_context_create fail
 * with SPECTRAL_ERR_BACKEND. OpenBLAS has no per-call thread count, so
 * creating a CPU context sets OpenBLAS's process-wide thread count to 1
 * (openblas_set_num_threads): the only process-wide setting the library
 * changes. An app that runs its own BLAS work should not raise it again
 * while spectral contexts exist.
 *
 * Errors: functions return spectral_status (0 = SPECTRAL_OK). The library
 * never exits or aborts on bad input; spectral_last_error() describes the last
 * failure on the calling thread. */
#ifndef SPECTRAL_H
#define SPECTRAL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#define SPECTRAL_VERSION_MAJOR 0
#define SPECTRAL_VERSION_MINOR 1
#define SPECTRAL_VERSION_PATCH 0

typedef struct spectral_model spectral_model;
typedef struct spectral_context spectral_context;

typedef enum {
    SPECTRAL_OK = 0,
    SPECTRAL_ERR_INVALID_ARGUMENT = 1, /* NULL pointer, bad option value, empty input */
    SPECTRAL_ERR_IO = 2,               /* file cannot be opened or read */
    SPECTRAL_ERR_FORMAT = 3,           /* malformed GGUF */
    SPECTRAL_ERR_MODEL = 4,            /* valid GGUF, but not a model we can run */
    SPECTRAL_ERR_MEMORY_LIMIT = 5,     /* the input needs more than mem_limit */
    SPECTRAL_ERR_OUT_OF_MEMORY = 6,    /* an allocation failed below the limit */
    SPECTRAL_ERR_BACKEND = 7,          /* the compute backend failed */
    SPECTRAL_ERR_UNSUPPORTED = 8,      /* e.g. CUDA requested in a build without it */
} spectral_status;

typedef enum {
    SPECTRAL_BACKEND_CPU = 0,
    SPECTRAL_BACKEND_CUDA = 1,
} spectral_backend;

/* Numbered as llama.cpp's pooling types. */
typedef enum {
    SPECTRAL_POOLING_UNSPECIFIED = -1, /* use the model's */
    SPECTRAL_POOLING_NONE = 0,         /* every token's state */
    SPECTRAL_POOLING_MEAN = 1,
    SPECTRAL_POOLING_CLS = 2,          /* first token, through the model's pooler if
                                          it has one (FNet: tanh(dense(h[0]))) */
    SPECTRAL_POOLING_LAST = 3,
} spectral_pooling;

typedef struct {
    bool use_mmap; /* map the file instead of reading it (default true). A mapped
                      file must not change while the model is loaded: overwritten
                      in place it changes results, truncated it ends the process
                      with SIGBUS. Set false to read a copy into memory. */
} spectral_model_params;

typedef struct {
    int n_threads;               /* CPU threads; 0 = all online cores (default) */
    spectral_backend backend;    /* default SPECTRAL_BACKEND_CPU */
    int device;                  /* CUDA device ordinal (default 0) */
    size_t mem_limit;            /* hard cap on activation memory in bytes; 0 = none */
    spectral_pooling pooling;    /* default SPECTRAL_POOLING_UNSPECIFIED */
    bool normalize;              /* L2-normalize pooled embeddings (default true) */
    int64_t batch_tokens;        /* spectral_encode_batch packs consecutive short documents
                                    into one pass up to this many tokens in all (the MLP
                                    runs on all their rows at once, the mixing per
                                    document); 0 = default (4096), 1 = one at a time */
} spectral_context_params;

/* Library */
const char *spectral_version(void);
const char *spectral_status_string(spectral_status s);
/* Message describing the last failure on this thread ("" if none). */
const char *spectral_last_error(void);
/* Whether this build can run the given backend on this machine. */
bool spectral_backend_available(spectral_backend b);

/* Model */
spectral_model_params spectral_model_default_params(void);
spectral_status spectral_model_load(const char *path, spectral_model_params params,
                                    spectral_model **out);
/* Load from a caller-owned GGUF image that must outlive the model. */
spectral_status spectral_model_load_from_memory(const void *data, size_t size,
                                                spectral_model_params params,
                                                spectral_model **out);
void spectral_model_free(spectral_model *model);

const char *spectral_model_arch(const spectral_model *model);
const char *spectral_model_name(const spectral_model *model); /* general.name or "" */
int32_t spectral_model_n_embd(const spectral_model *model);
int32_t spectral_model_n_layer(const spectral_model *model);
int32_t spectral_model_n_vocab(const spectral_model *model);
int32_t spectral_model_n_ctx_train(const spectral_model *model);
/* Hard maximum document length in tokens (FNet: its position table), or 0
 * when any length runs (spectralmlp: the mixing is defined for any T). */
int64_t spectral_model_max_tokens(const spectral_model *model);
spectral_pooling spectral_model_pooling(const spectral_model *model);
/* Parameter count and bytes of weight data in the file. */
uint64_t spectral_model_n_params(const spectral_model *model);

/* Tokenize text with the model's tokenizer. Writes up to n_max tokens and
 * returns the total number of tokens the text produces (which may exceed
 * n_max: call once with tokens = NULL to size the buffer), or -1 on error. */
int64_t spectral_tokenize(const spectral_model *model, const char *text, size_t len,
                          int32_t *tokens, int64_t n_max);

/* Context */
spectral_context_params spectral_context_default_params(void);
spectral_status spectral_context_create(spectral_model *model, spectral_context_params params,
                                        spectral_context **out);
void spectral_context_free(spectral_context *ctx);

/* Bytes of activation memory one document of n_tokens needs in this context
 * with every thread busy. Under a tighter mem_limit the context runs fewer
 * tiles at once (less scratch, less parallelism) and refuses the document
 * only when even one tile at a time does not fit. */
size_t spectral_context_memory_needed(spectral_context *ctx, int64_t n_tokens);
/* The least activation memory that document can run in (one tile at a time):
 * a mem_limit below it refuses the document with SPECTRAL_ERR_MEMORY_LIMIT. */
size_t spectral_context_memory_minimum(spectral_context *ctx, int64_t n_tokens);
/* Largest arena size used so far by this context. */
size_t spectral_context_peak_memory(const spectral_context *ctx);
spectral_pooling spectral_context_pooling(const spectral_context *ctx);

/* Encode one document. On success the outputs below are valid until the next
 * encode call on this context. */
spectral_status spectral_encode(spectral_context *ctx, const int32_t *tokens, int64_t n_tokens);

/* Pooled embedding of the last document (n_embd floats), or NULL when the
 * context's pooling is NONE. */
const float *spectral_get_embedding(spectral_context *ctx);
/* Final hidden states of the last document: n_tokens x n_embd, row-major. */
const float *spectral_get_token_states(spectral_context *ctx, int64_t *n_tokens);

/* Encode several documents, calling on_done for each one, in order, as soon
 * as it is finished (its outputs are readable through the getters inside the
 * callback; the callback must not encode on this context). Consecutive short
 * documents are packed into one pass of up to batch_tokens tokens; on the CPU
 * the results are bit-identical to encoding them one at a time. A document
 * that fails (e.g. over the memory limit) is
 * reported with its status and the others still run. Returns SPECTRAL_OK
 * when every document succeeded, else the first failure's status. Returning
 * non-zero from the callback stops the batch. */
typedef int (*spectral_doc_callback)(spectral_context *ctx, int64_t doc_index,
                                     spectral_status status, void *user_data);
spectral_status spectral_encode_batch(spectral_context *ctx, const int32_t *const *tokens,
                                      const int64_t *n_tokens, int64_t n_docs,
                                      spectral_doc_callback on_done, void *user_data);

#ifdef __cplusplus
}
#endif
#endif
