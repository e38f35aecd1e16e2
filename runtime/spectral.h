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
 *     cp.mem_limit = 512u << 20;              // hard cap on working memory
 *     spectral_context *ctx = NULL;
 *     if (spectral_context_create(model, cp, &ctx)) { ... }
 *
 *     int64_t n = spectral_tokenize(model, text, len, NULL, 0);   // count only
 *     int32_t *tok = malloc(n * sizeof *tok);
 *     spectral_tokenize(model, text, len, tok, n);
 *     if (spectral_encode(ctx, tok, n) == SPECTRAL_OK) {
 *         const float *e = spectral_get_embedding(ctx);         // n_pooled floats
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
 * failure on the calling thread.
 *
 * NULL handles: every function accepts NULL for its model, context or
 * adapter. Those that return a status return SPECTRAL_ERR_INVALID_ARGUMENT;
 * getters return 0 (sizes, counts), NULL (outputs), "" (names) or
 * SPECTRAL_POOLING_UNSPECIFIED; the *_free functions do nothing. */
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
    SPECTRAL_ERR_STOPPED = 9,          /* spectral_encode_batch: the callback stopped it */
    SPECTRAL_ERR_NUMERIC = 10,         /* the document's output has a NaN or Inf (finite
                                          weights, or an adapter's scale, overflow on it) */
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

/* The precision of the GEMMs (the linear layers, nearly all of the work)
 * on the CPU; docs/precision.md says what each costs and gives. */
typedef enum {
    SPECTRAL_DTYPE_AUTO = 0, /* each weight matrix in its own: float32 for float weights
                                (F32/F16/BF16 files), int8 products for Q8_0/Q4_0 ones */
    SPECTRAL_DTYPE_F32 = 1,  /* float32 everywhere, Q8_0/Q4_0 matrices decoded */
    SPECTRAL_DTYPE_BF16 = 2, /* bfloat16 products summed in float32 (AVX512_BF16 where
                                the CPU has it, the same numbers emulated elsewhere) */
} spectral_dtype;

typedef struct {
    bool use_mmap; /* map the file instead of reading it (default true). A mapped
                      file must not change while the model is loaded: overwritten
                      in place it changes results, truncated it ends the process
                      with SIGBUS. Set false to read a copy into memory. */
} spectral_model_params;

/* mem_limit of a context with no cap: the largest size_t, so that "no cap"
 * is never a value a subtraction can produce by accident. */
#define SPECTRAL_MEM_UNLIMITED SIZE_MAX

typedef struct {
    int n_threads;               /* CPU threads; 0 = all online cores (default) */
    spectral_backend backend;    /* default SPECTRAL_BACKEND_CPU */
    int device;                  /* CUDA device ordinal (default 0) */
    size_t mem_limit;            /* hard cap on working memory in bytes: the activation
                                    arena plus what the backend allocates itself for a
                                    pass (FFTW's tables) plus the weights packed for the
                                    dtype. Default SPECTRAL_MEM_UNLIMITED. 0 is a cap of
                                    0 bytes, which refuses every document: a limit
                                    computed as a remainder never switches the cap off
                                    by coming out at 0 */
    spectral_pooling pooling;    /* default SPECTRAL_POOLING_UNSPECIFIED */
    bool normalize;              /* L2-normalize pooled embeddings (default true) */
    int64_t batch_tokens;        /* spectral_encode_batch packs consecutive short documents
                                    into one pass up to this many tokens in all (the MLP
                                    runs on all their rows at once, the mixing per
                                    document); 0 = default (4096), 1 = one at a time */
    spectral_dtype dtype;        /* GEMM precision (default SPECTRAL_DTYPE_AUTO); the CUDA
                                    backend computes float32 and refuses BF16 */
    bool no_pad;                 /* models that pad (M2-BERT: as its model card, every
                                    document runs padded with [PAD] to the model's length;
                                    token states and pooling cover the real tokens only):
                                    run each document at its own length instead, faster
                                    and a different embedding. Default false */
} spectral_context_params;

/* Library */
const char *spectral_version(void);
const char *spectral_status_string(spectral_status s);
/* Message describing the last failure on this thread ("" if none). */
const char *spectral_last_error(void);
/* Whether this build can run the given backend on this machine. */
bool spectral_backend_available(spectral_backend b);
/* One line naming this CPU's features that matter here and the CPU GEMM
 * kernel each dtype runs, e.g. "cpu: avx2 fma f16c | kernels: f32 avx2,
 * int8 avx2, bf16 avx2 (emulated)": for reports and benchmarks. */
const char *spectral_system_info(void);

/* Model. Loading checks every weight: a NaN or Inf in any tensor (an F32,
 * F16 or BF16 value, a Q8_0/Q4_0 block scale) refuses the model with
 * SPECTRAL_ERR_MODEL and the tensor's name. */
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
/* Width of the token states (spectral_get_token_states rows). */
int32_t spectral_model_n_embd(const spectral_model *model);
/* Length of a pooled embedding (spectral_get_embedding): n_embd, plus the
 * dimensions of the model's lexical sketch when it has one. With a sketch,
 * the first n_embd values are the dense embedding and the rest a hashed bag
 * of word pieces, each part unit length before the sketch is scaled by the
 * model's weight; the first n_embd values alone, renormalized, are the dense
 * embedding by itself. */
int32_t spectral_model_n_pooled(const spectral_model *model);
/* The lexical sketch's length (0 when the model has none) and its weight next
 * to the unit-length dense part (0 without a sketch). */
int32_t spectral_model_n_lexical(const spectral_model *model);
float spectral_model_lexical_scale(const spectral_model *model);
/* Lengths of the dense part's leading values that the model was trained to
 * be used alone, renormalized (Matryoshka prefixes; GGUF key
 * <arch>.dense.prefixes), ascending and ending with n_embd (which a model
 * without the key offers alone). Writes up to n_max of them to lengths (may
 * be NULL) and returns how many there are (1 to SPECTRAL_MAX_PREFIXES). */
#define SPECTRAL_MAX_PREFIXES 32
int32_t spectral_model_dense_prefixes(const spectral_model *model, int32_t *lengths, int32_t n_max);
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
 * n_max: call once with tokens = NULL to size the buffer), or -1 on error.
 * A text with nothing to embed gives 0 tokens and writes none, whatever the
 * tokenizer: empty, white space alone (Unicode White_Space, which a bytes
 * tokenizer would otherwise keep as tokens), or characters the tokenizer
 * drops entirely (which a bert tokenizer would leave as [CLS] [SEP]). Such
 * a document is refused by spectral_encode as empty. */
int64_t spectral_tokenize(const spectral_model *model, const char *text, size_t len,
                          int32_t *tokens, int64_t n_max);

/* Options of spectral_tokenize_with. Truncation is the one policy for long
 * inputs that spectral-embed --truncate, spectral-server's truncate and the
 * Python package's truncate= share: it happens only when asked for.
 *
 *     spectral_tokenize_params tp = spectral_tokenize_default_params();
 *     tp.max_tokens = 8192;                        // keep at most 8192 tokens
 *     int64_t full = spectral_tokenize(model, text, len, NULL, 0);
 *     int64_t n = spectral_tokenize_with(model, text, len, tp, NULL, 0);  // min(full, 8192)
 *     spectral_tokenize_with(model, text, len, tp, tok, n);
 *     if (full > n) ... tell the user that the input was truncated ... */
typedef struct {
    bool add_special;   /* the special tokens the model puts around a text: [CLS] ... [SEP],
                           BOS (default true, as spectral_tokenize) */
    int64_t max_tokens; /* > 0: keep the text's first max_tokens tokens, the tokenizer's end
                           token ([SEP], or EOS for a model that adds one) kept as the last, so
                           that the model sees a beginning closed as a whole text is; 0 (the
                           default): keep all */
} spectral_tokenize_params;

spectral_tokenize_params spectral_tokenize_default_params(void);
/* spectral_tokenize with options: writes up to n_max tokens and returns how
 * many the text gives after truncation (at most max_tokens), or -1 on error
 * (also for a negative max_tokens). */
int64_t spectral_tokenize_with(const spectral_model *model, const char *text, size_t len,
                               spectral_tokenize_params params, int32_t *tokens, int64_t n_max);

/* The text of one token, as detokenization shows it: concatenating the
 * pieces of a sequence gives its text as the tokenizer read it. A WordPiece
 * (bert) word-initial piece begins with a space and a continuation "##ing"
 * is "ing" (text an uncased vocabulary lower-cased stays so); SentencePiece's
 * U+2581 is a space and a byte token <0xNN> its byte; a byte-level model's
 * token is its byte; control and unknown tokens are their spelling ("[CLS]",
 * "<unk>"); an id the model has but its tokenizer does not name is "".
 * Writes up to size bytes into buf (not NUL-terminated; size 0 to learn the
 * length) and returns the piece's length, or -1 for an id outside
 * [0, spectral_model_n_vocab). */
int64_t spectral_token_to_piece(const spectral_model *model, int32_t token, char *buf, int64_t size);
/* Whether token is a control token: one the tokenizer adds around a text or
 * for padding ([CLS], [SEP], [PAD]; SentencePiece's control tokens, e.g. <s>
 * and </s>), which no word of a text produces. false for any other id. */
bool spectral_token_is_control(const spectral_model *model, int32_t token);

/* Context */
spectral_context_params spectral_context_default_params(void);
spectral_status spectral_context_create(spectral_model *model, spectral_context_params params,
                                        spectral_context **out);
void spectral_context_free(spectral_context *ctx);

/* Bytes of working memory (activations, plus the backend's own tables, e.g.
 * 16 bytes per token for FFTW's on the CPU, plus the weight copies of
 * spectral_context_weight_memory) one document of n_tokens needs in
 * this context with every thread busy (a model that pads: the padded length's;
 * M2-BERT's cached filter spectra come on top, only within mem_limit). Under a tighter mem_limit the context runs fewer
 * tiles at once (less scratch, less parallelism) and refuses the document
 * only when even one tile at a time does not fit. */
size_t spectral_context_memory_needed(spectral_context *ctx, int64_t n_tokens);
/* The least working memory that document can run in (one tile at a time):
 * a mem_limit below it refuses the document with SPECTRAL_ERR_MEMORY_LIMIT. */
size_t spectral_context_memory_minimum(spectral_context *ctx, int64_t n_tokens);
/* Most working memory charged against mem_limit so far by this context. */
size_t spectral_context_peak_memory(const spectral_context *ctx);
/* Bytes of the weight copies laid out for this context's dtype (the CPU's
 * GEMM weights, packed once for its kernels; 0 when none), shared by the
 * model's contexts of the same dtype. They count against mem_limit and in
 * the three figures above. */
size_t spectral_context_weight_memory(const spectral_context *ctx);
/* Changes the cap on working memory for later passes, e.g. to leave room
 * for what the caller holds itself (spectral-embed counts each input's text
 * and tokens against --mem-limit this way). SPECTRAL_MEM_UNLIMITED removes
 * the cap; 0, what is left when the caller holds all of it, refuses every
 * document. An arena already larger than the new cap is released at once
 * (and with it the outputs of the last pass: call it between passes). */
spectral_status spectral_context_set_mem_limit(spectral_context *ctx, size_t mem_limit);
/* Changes params.normalize for later encodes (spectral-server switches it
 * between passes for requests that ask for unnormalized vectors). */
spectral_status spectral_context_set_normalize(spectral_context *ctx, bool normalize);
spectral_pooling spectral_context_pooling(const spectral_context *ctx);

/* Encode one document. On success the outputs below are valid until the next
 * encode call on this context. Outputs are finite: a document whose pooled
 * embedding or token states would hold a NaN or Inf (weights are checked
 * finite at load, but finite weights can still overflow on some input) fails
 * with SPECTRAL_ERR_NUMERIC and has no outputs. On a device backend the
 * token states are checked when spectral_get_token_states copies them to the
 * host (NULL, with the reason in spectral_last_error()). */
spectral_status spectral_encode(spectral_context *ctx, const int32_t *tokens, int64_t n_tokens);

/* Pooled embedding of the last document (n_pooled floats), or NULL when the
 * context's pooling is NONE. */
const float *spectral_get_embedding(spectral_context *ctx);
/* Final hidden states of the last document: n_tokens x n_embd, row-major;
 * NULL when there are none (or, on a device backend, when they are not
 * finite: SPECTRAL_ERR_NUMERIC's message in spectral_last_error()). */
const float *spectral_get_token_states(spectral_context *ctx, int64_t *n_tokens);

/* Encode several documents, calling on_done for each one, in order, as soon
 * as it is finished (its outputs are readable through the getters inside the
 * callback; the callback must not encode on this context). Consecutive short
 * documents are packed into one pass of up to batch_tokens tokens; on the CPU
 * the results are bit-identical to encoding them one at a time. A document
 * that fails (e.g. over the memory limit) is
 * reported with its status and the others still run. Returning non-zero
 * from the callback stops the batch: the documents after that one are
 * neither encoded nor reported. Returns SPECTRAL_ERR_STOPPED when the
 * callback stopped it, else SPECTRAL_OK when every document succeeded, else
 * the first failure's status. */
typedef int (*spectral_doc_callback)(spectral_context *ctx, int64_t doc_index,
                                     spectral_status status, void *user_data);
spectral_status spectral_encode_batch(spectral_context *ctx, const int32_t *const *tokens,
                                      const int64_t *n_tokens, int64_t n_docs,
                                      spectral_doc_callback on_done, void *user_data);

/* ---- Adapters ----------------------------------------------------------
 *
 * FourierFT adapters (Hugging Face peft's FOURIERFT, converted by
 * tools/convert/convert_fourierft.py; file format in docs/adapters.md). Each targets
 * some weight matrices W (out x in) of one base model with a few real
 * coefficients s_k at locations (r_k, c_k):
 *
 *     delta_W = Re(IFFT2(S)) * scaling,   S = zeros(out, in), S[r_k, c_k] = s_k
 *
 * and a context encodes with W + sum_a scale_a * delta_W_a. One loaded model
 * serves contexts with different adapters, or none, without reloading.
 *
 *     spectral_adapter *ad = NULL;
 *     if (spectral_adapter_load(model, "style.gguf", &ad)) { ... }  // delta_W made here, once
 *     const float scale = 1.0f;
 *     if (spectral_context_set_adapters(ctx, &ad, &scale, 1)) { ... }
 *     spectral_encode(ctx, tok, n);            // with the adapter; other contexts unchanged
 *     spectral_context_set_adapters(ctx, NULL, NULL, 0);   // back to the base weights
 *     spectral_adapter_free(ad);
 *
 * Thread safety: an adapter is read-only after loading and may be set on any
 * number of contexts of its model from different threads. Setting adapters
 * on a context is a use of that context (one thread at a time). The model
 * must outlive its adapters; an adapter may be freed once it is set (the
 * context keeps its own merged copy of the targeted matrices: memory of one
 * more copy of each targeted matrix per context with adapters, plus delta_W
 * per adapter). */
typedef struct spectral_adapter spectral_adapter;

/* Loads an adapter for `model` and materialises its delta_W. Refused with
 * SPECTRAL_ERR_MODEL when it was made for another architecture or shapes or
 * names a tensor the model lacks, SPECTRAL_ERR_FORMAT when the file is
 * malformed (counts, locations out of range, non-finite values). */
spectral_status spectral_adapter_load(spectral_model *model, const char *path,
                                      spectral_adapter **out);
void spectral_adapter_free(spectral_adapter *adapter);
/* Number of weight matrices the adapter changes; general.name or "". */
int32_t spectral_adapter_n_targets(const spectral_adapter *adapter);
const char *spectral_adapter_name(const spectral_adapter *adapter);

/* Replaces the context's adapter set: the next encode uses W + sum of
 * scales[i] * delta_W of adapters[i] for every targeted W (n = 0 restores the
 * base weights). Every adapter must have been loaded for this context's
 * model; scales must be finite. On failure the previous set stays. */
spectral_status spectral_context_set_adapters(spectral_context *ctx,
                                              spectral_adapter *const *adapters,
                                              const float *scales, int32_t n);

/* ---- Quantization --------------------------------------------------------
 *
 * Writes a copy of a model with some weight matrices compressed (file format
 * in docs/quantize.md): ggml's Q8_0 / Q4_0 blocks, sparse
 * spectral tensors (sst: the largest 2-D FFT coefficients), or F16 / F32.
 * What the tool spectral-quantize (tools/quantize/) does, as a call:
 *
 *     spectral_quantize_params qp = spectral_quantize_default_params();
 *     qp.type = SPECTRAL_QUANT_Q8_0;
 *     if (spectral_model_quantize("model.gguf", "model-q8_0.gguf", &qp)) {
 *         fprintf(stderr, "%s\n", spectral_last_error());
 *     }
 *
 * The input must load as a model. The output is written into a new file
 * beside out_path and renamed over it only once it loads as a model too, so
 * a failure leaves out_path as it was. out_path is a new file, a regular
 * file (replaced) or a symbolic link to one (its target replaced); anything
 * else (a device, a FIFO, a directory) is refused before any work, and the
 * input is never overwritten. Every other tensor and key is copied unchanged. Loading dequantizes / reconstructs compressed
 * weights to float32 once: they save file size, not memory while running.
 *
 * Thread safety: reentrant; calls on different files may run concurrently. */
typedef enum {
    SPECTRAL_QUANT_F32 = 0,  /* numbered as ggml_type where ggml has the type */
    SPECTRAL_QUANT_F16 = 1,
    SPECTRAL_QUANT_Q4_0 = 2,
    SPECTRAL_QUANT_Q8_0 = 8,
    SPECTRAL_QUANT_SST = 1000, /* not a ggml type: a pair of ordinary tensors */
} spectral_quant_type;

typedef struct {
    const char *name;
    const char *from_type, *to_type; /* "f32", "f16", "bf16", "q8_0", "q4_0", "sst" */
    int64_t n_elements;
    uint64_t bytes_in, bytes_out;    /* tensor data; sst counts values and indices */
    double rel_error;                /* ||W - W'||_F / ||W||_F (0 when copied) */
    const char *note;                /* NULL, or why the tensor was copied unchanged */
} spectral_quantize_report;

typedef struct {
    spectral_quant_type type;   /* default SPECTRAL_QUANT_Q8_0 */
    /* POSIX extended regex searched in each tensor name; NULL = the default
     * set: 2-D tensors named *.weight other than the embedding tables
     * (token_embd, position_embd, token_types). A tensor the regex selects
     * that cannot take the type (ne[0] not a multiple of 32 for Q8_0/Q4_0,
     * not 2-D for sst) is an error; one of the default set is copied. */
    const char *tensors;
    double keep;                /* sst: fraction of a matrix's storable FFT
                                   coefficients kept, (0, 1]; default 0.1 */
    /* Optional: called once per tensor of the input, in file order. */
    void (*on_tensor)(const spectral_quantize_report *report, void *user_data);
    void *user_data;
} spectral_quantize_params;

spectral_quantize_params spectral_quantize_default_params(void);
/* SPECTRAL_ERR_INVALID_ARGUMENT: bad params (type, keep, regex), output path
 * equal to the input or a selected tensor that cannot take the type;
 * SPECTRAL_ERR_IO / _FORMAT / _MODEL: the input; SPECTRAL_ERR_IO: an output
 * path that is not a regular file, or writing. */
spectral_status spectral_model_quantize(const char *in_path, const char *out_path,
                                        const spectral_quantize_params *params);

#ifdef __cplusplus
}
#endif
#endif
