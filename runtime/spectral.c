/* The public API: model loading, contexts, planning and encoding. */
#define _POSIX_C_SOURCE 200809L /* stat, sysconf */
#include "spectral.h"

#include <errno.h>
#include <sys/stat.h>

#include <math.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "formats/gguf.h"
#include "formats/quant.h"
#include "formats/tokenizer.h"
#include "kernels/backend.h"
#include "kernels/cpu/cpu_features.h"
#include "kernels/cpu/packed_cpu.h"
#include "models/model.h"
#include "runtime/adapter.h"
#include "runtime/arena.h"
#include "runtime/internal.h"
#include "runtime/tables.h"

#define STR_(x) #x
#define STR(x) STR_(x)

/* ---- errors ------------------------------------------------------------ */

static _Thread_local char g_last_error[1024];

spectral_status sp_fail(spectral_status s, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(g_last_error, sizeof g_last_error, fmt, ap);
    va_end(ap);
    return s;
}

const char *spectral_last_error(void) { return g_last_error; }


const char *spectral_version(void) {
    return STR(SPECTRAL_VERSION_MAJOR) "." STR(SPECTRAL_VERSION_MINOR) "." STR(SPECTRAL_VERSION_PATCH);
}

const char *spectral_status_string(spectral_status s) {
    switch (s) {
    case SPECTRAL_OK: return "ok";
    case SPECTRAL_ERR_INVALID_ARGUMENT: return "invalid argument";
    case SPECTRAL_ERR_IO: return "I/O error";
    case SPECTRAL_ERR_FORMAT: return "malformed GGUF file";
    case SPECTRAL_ERR_MODEL: return "unsupported model";
    case SPECTRAL_ERR_MEMORY_LIMIT: return "over the memory limit";
    case SPECTRAL_ERR_OUT_OF_MEMORY: return "out of memory";
    case SPECTRAL_ERR_BACKEND: return "backend error";
    case SPECTRAL_ERR_UNSUPPORTED: return "unsupported";
    case SPECTRAL_ERR_STOPPED: return "stopped by the callback";
    case SPECTRAL_ERR_NUMERIC: return "non-finite output";
    }
    return "unknown status";
}

bool spectral_backend_available(spectral_backend b) {
    if (b == SPECTRAL_BACKEND_CPU) return true;
    if (b == SPECTRAL_BACKEND_CUDA) return sp_backend_cuda_device_count() > 0;
    return false;
}

static char g_system_info[512];

static void system_info_init(void) {
    char flags[256];
    sp_cpu_features_string(flags, sizeof flags);
    const sp_kernel_level cap = sp_cpu_kernel_cap();
    const int f32 = sp_packed_level_for(SP_COMPUTE_F32, cap), q8 = sp_packed_level_for(SP_COMPUTE_INT8, cap),
              bf16 = sp_packed_level_for(SP_COMPUTE_BF16, cap);
    snprintf(g_system_info, sizeof g_system_info, "cpu: %s | kernels: f32 %s, int8 %s, bf16 %s%s", flags,
             f32 < 0 ? "openblas" : sp_kernel_level_name((sp_kernel_level)f32),
             sp_kernel_level_name((sp_kernel_level)q8), sp_kernel_level_name((sp_kernel_level)bf16),
             bf16 == SP_KERNEL_AVX512 ? "" : " (emulated)");
}

const char *spectral_system_info(void) {
    static pthread_once_t once = PTHREAD_ONCE_INIT;
    pthread_once(&once, system_info_init);
    return g_system_info;
}

/* Human-readable byte count for messages. */
static const char *fmt_bytes(size_t n, char *buf, size_t len) {
    if (n >= (size_t)1 << 30) snprintf(buf, len, "%.2f GiB", (double)n / (1 << 30));
    else if (n >= (size_t)1 << 20) snprintf(buf, len, "%.2f MiB", (double)n / (1 << 20));
    else if (n >= 1024) snprintf(buf, len, "%.1f KiB", (double)n / 1024);
    else snprintf(buf, len, "%zu bytes", n);
    return buf;
}

/* ---- model ------------------------------------------------------------- */

static const sp_arch *const k_archs[] = {&sp_arch_spectralmlp, &sp_arch_fnet, &sp_arch_m2bert};

/* The model's weights with its GEMM weights packed for one dtype (CPU),
 * shared by every context of that dtype: see packed_weights_for. */
typedef struct packed_set {
    spectral_dtype dtype;
    sp_backend *owner; /* packed them and frees them */
    const void **w;    /* the model's weights, packed ones in place */
    sp_weight_type *wt;
    size_t bytes;      /* the packed copies in all */
    struct packed_set *next;
} packed_set;

/* Weights uploaded to one CUDA device, shared by every context on it. */
typedef struct device_weights {
    int device;
    sp_backend *owner; /* allocates and frees the weight buffers */
    float **w;
    struct device_weights *next;
} device_weights;

struct spectral_model {
    sp_gguf *gguf;
    void *file_copy; /* when not memory-mapped */
    const sp_arch *arch;
    void *arch_model;
    sp_model_info info;
    sp_weight_list weights;
    sp_owned_buffers owned; /* float32 copies made while loading (sp_loader) */
    sp_tokenizer *tokenizer;
    sp_lexical lexical; /* dims 0: pooled embeddings are the dense part alone */
    /* Lengths of the dense part's leading values trained to stand alone
     * (key <arch>.dense.prefixes), ascending, ending with n_embd. */
    int64_t prefixes[SPECTRAL_MAX_PREFIXES];
    int n_prefixes;
    int32_t *pad_ids; /* info.pad_to copies of info.pad_id (models that pad), else NULL */
    char name[256];
    pthread_mutex_t lock; /* guards device_weights and packed */
    device_weights *uploaded;
    packed_set *packed;
    /* SP_WEIGHT_F32 for every weight: the types a device backend's forward
     * sees, as weights are dequantized at upload (model_weights_for). */
    sp_weight_type *all_f32;
};

spectral_model_params spectral_model_default_params(void) {
    spectral_model_params p = {.use_mmap = true};
    return p;
}

static spectral_status model_init(spectral_model *m) {
    char err[512] = "";
    int64_t ki = sp_gguf_find_key(m->gguf, "general.architecture");
    if (ki < 0 || sp_gguf_kv_type(m->gguf, ki) != SP_GGUF_TYPE_STRING)
        return sp_fail(SPECTRAL_ERR_MODEL, "missing string key general.architecture");
    sp_gguf_str arch = sp_gguf_get_str(m->gguf, ki);
    for (size_t i = 0; i < sizeof k_archs / sizeof k_archs[0]; i++)
        if (strlen(k_archs[i]->name) == arch.len && !memcmp(k_archs[i]->name, arch.ptr, arch.len))
            m->arch = k_archs[i];
    if (!m->arch)
        return sp_fail(SPECTRAL_ERR_MODEL, "unsupported architecture '%.*s' (supported: spectralmlp, fnet, m2bert)",
                    (int)(arch.len > 64 ? 64 : arch.len), arch.ptr);
    const sp_loader ld = {m->gguf, &m->owned, &m->weights, err, sizeof err};
    if (!(m->arch_model = calloc(1, m->arch->model_size)))
        return sp_fail(SPECTRAL_ERR_OUT_OF_MEMORY, "out of memory");
    if (m->arch->load(&ld, m->arch_model, &m->info))
        return sp_fail(SPECTRAL_ERR_MODEL, "%s: %s", m->arch->name, err);
    if (sp_lexical_load(m->gguf, m->arch->name, m->info.n_vocab, &m->lexical, err, sizeof err))
        return sp_fail(SPECTRAL_ERR_MODEL, "%s", err);
    char key[96];
    snprintf(key, sizeof key, "%s.dense.prefixes", m->arch->name);
    if (sp_model_get_lengths(m->gguf, key, m->info.n_embd, m->prefixes, SPECTRAL_MAX_PREFIXES - 1, &m->n_prefixes,
                             err, sizeof err))
        return sp_fail(SPECTRAL_ERR_MODEL, "%s", err);
    if (m->n_prefixes == 0 || m->prefixes[m->n_prefixes - 1] != m->info.n_embd)
        m->prefixes[m->n_prefixes++] = m->info.n_embd; /* the whole dense part, always */
    if (sp_tokenizer_load(m->gguf, &m->tokenizer, err, sizeof err))
        return sp_fail(SPECTRAL_ERR_MODEL, "tokenizer: %s", err);
    if (m->info.pad_to > 0) {
        if (!(m->pad_ids = malloc((size_t)m->info.pad_to * sizeof *m->pad_ids)))
            return sp_fail(SPECTRAL_ERR_OUT_OF_MEMORY, "out of memory");
        for (int64_t i = 0; i < m->info.pad_to; i++) m->pad_ids[i] = m->info.pad_id;
    }
    if (sp_tokenizer_n_vocab(m->tokenizer) > m->info.n_vocab)
        return sp_fail(SPECTRAL_ERR_MODEL,
                    "the tokenizer has %lld tokens but token_embd.weight has only %lld rows",
                    (long long)sp_tokenizer_n_vocab(m->tokenizer), (long long)m->info.n_vocab);
    ki = sp_gguf_find_key(m->gguf, "general.name");
    if (ki >= 0 && sp_gguf_kv_type(m->gguf, ki) == SP_GGUF_TYPE_STRING) {
        sp_gguf_str s = sp_gguf_get_str(m->gguf, ki);
        size_t n = s.len < sizeof m->name - 1 ? (size_t)s.len : sizeof m->name - 1;
        memcpy(m->name, s.ptr, n);
        m->name[n] = 0;
    }
    return SPECTRAL_OK;
}

static spectral_status model_new(spectral_model **out) {
    spectral_model *m = calloc(1, sizeof *m);
    if (!m) return sp_fail(SPECTRAL_ERR_OUT_OF_MEMORY, "out of memory");
    pthread_mutex_init(&m->lock, NULL);
    *out = m;
    return SPECTRAL_OK;
}

static spectral_status model_finish(spectral_model *m, spectral_model **out) {
    spectral_status s = model_init(m);
    if (s != SPECTRAL_OK) {
        spectral_model_free(m);
        return s;
    }
    *out = m;
    return SPECTRAL_OK;
}

/* Reads a whole file into memory (use_mmap = false). */
static spectral_status read_file(const char *path, void **data, size_t *size) {
    FILE *f = fopen(path, "rb");
    if (!f) return sp_fail(SPECTRAL_ERR_IO, "cannot open %s", path);
    size_t cap = 1 << 20, n = 0;
    char *buf = malloc(cap);
    while (buf) {
        n += fread(buf + n, 1, cap - n, f);
        if (n < cap) break;
        char *nb = realloc(buf, cap *= 2);
        if (!nb) free(buf);
        buf = nb;
    }
    int bad = ferror(f);
    fclose(f);
    if (!buf) return sp_fail(SPECTRAL_ERR_OUT_OF_MEMORY, "out of memory reading %s", path);
    if (bad) {
        free(buf);
        return sp_fail(SPECTRAL_ERR_IO, "error reading %s", path);
    }
    *data = buf;
    *size = n;
    return SPECTRAL_OK;
}

spectral_status spectral_model_load(const char *path, spectral_model_params params,
                                    spectral_model **out) {
    if (!path || !out) return sp_fail(SPECTRAL_ERR_INVALID_ARGUMENT, "NULL argument");
    *out = NULL;
    if (!path[0]) return sp_fail(SPECTRAL_ERR_INVALID_ARGUMENT, "empty model path");
    /* Only regular files: open() on a FIFO would block until a writer comes,
     * and a device or directory is never a model. */
    struct stat st;
    if (stat(path, &st) != 0) return sp_fail(SPECTRAL_ERR_IO, "cannot open %s: %s", path, strerror(errno));
    if (!S_ISREG(st.st_mode))
        return sp_fail(SPECTRAL_ERR_IO, "cannot open %s: not a regular file", path);
    spectral_model *m = NULL;
    spectral_status s = model_new(&m);
    if (s) return s;
    char err[512] = "";
    if (params.use_mmap) {
        if (sp_gguf_open(path, &m->gguf, err, sizeof err)) {
            spectral_model_free(m);
            FILE *probe = fopen(path, "rb");
            if (!probe) return sp_fail(SPECTRAL_ERR_IO, "cannot open %s", path);
            fclose(probe);
            return sp_fail(SPECTRAL_ERR_FORMAT, "%s: %s", path, err);
        }
    } else {
        size_t size = 0;
        s = read_file(path, &m->file_copy, &size);
        if (s) {
            spectral_model_free(m);
            return s;
        }
        if (sp_gguf_open_memory(m->file_copy, size, &m->gguf, err, sizeof err)) {
            spectral_model_free(m);
            return sp_fail(SPECTRAL_ERR_FORMAT, "%s: %s", path, err);
        }
    }
    return model_finish(m, out);
}

spectral_status spectral_model_load_from_memory(const void *data, size_t size,
                                                spectral_model_params params,
                                                spectral_model **out) {
    (void)params;
    if (!data || !out) return sp_fail(SPECTRAL_ERR_INVALID_ARGUMENT, "NULL argument");
    *out = NULL;
    spectral_model *m = NULL;
    spectral_status s = model_new(&m);
    if (s) return s;
    char err[512] = "";
    if (sp_gguf_open_memory(data, size, &m->gguf, err, sizeof err)) {
        spectral_model_free(m);
        return sp_fail(SPECTRAL_ERR_FORMAT, "%s", err);
    }
    return model_finish(m, out);
}

void spectral_model_free(spectral_model *m) {
    if (!m) return;
    for (device_weights *d = m->uploaded, *next; d; d = next) {
        next = d->next;
        for (int64_t i = 0; i < m->weights.n; i++)
            if (d->w[i]) d->owner->ops->buffer_free(d->owner, d->w[i]);
        free(d->w);
        d->owner->ops->destroy(d->owner);
        free(d);
    }
    for (packed_set *p = m->packed, *next; p; p = next) {
        next = p->next;
        for (int64_t i = 0; i < m->weights.n; i++)
            if (p->wt[i] == SP_WEIGHT_PACKED) p->owner->ops->packed_free(p->owner, (sp_packed *)p->w[i]);
        p->owner->ops->destroy(p->owner);
        free(p->w);
        free(p->wt);
        free(p);
    }
    free(m->arch_model);
    sp_weight_list_free(&m->weights);
    sp_owned_free(&m->owned);
    free(m->all_f32);
    sp_tokenizer_free(m->tokenizer);
    sp_lexical_free(&m->lexical);
    free(m->pad_ids);
    sp_gguf_close(m->gguf);
    free(m->file_copy);
    pthread_mutex_destroy(&m->lock);
    free(m);
}

/* The getters of a NULL handle give 0, "" or UNSPECIFIED (spectral.h). */
const char *spectral_model_arch(const spectral_model *m) { return m ? m->arch->name : ""; }
const char *spectral_model_name(const spectral_model *m) { return m ? m->name : ""; }
int32_t spectral_model_n_embd(const spectral_model *m) { return m ? (int32_t)m->info.n_embd : 0; }
int32_t spectral_model_n_pooled(const spectral_model *m) {
    return m ? (int32_t)(m->info.n_embd + m->lexical.dims) : 0;
}
int32_t spectral_model_n_lexical(const spectral_model *m) { return m ? (int32_t)m->lexical.dims : 0; }
float spectral_model_lexical_scale(const spectral_model *m) {
    return m && m->lexical.dims ? m->lexical.scale : 0.0f;
}
int32_t spectral_model_dense_prefixes(const spectral_model *m, int32_t *lengths, int32_t n_max) {
    if (!m) return 0;
    for (int i = 0; lengths && i < m->n_prefixes && i < n_max; i++) lengths[i] = (int32_t)m->prefixes[i];
    return m->n_prefixes;
}
int32_t spectral_model_n_layer(const spectral_model *m) { return m ? (int32_t)m->info.n_layer : 0; }
int32_t spectral_model_n_vocab(const spectral_model *m) { return m ? (int32_t)m->info.n_vocab : 0; }
int32_t spectral_model_n_ctx_train(const spectral_model *m) {
    if (!m) return 0;
    return m->info.n_ctx_train > INT32_MAX ? INT32_MAX : (int32_t)m->info.n_ctx_train;
}
int64_t spectral_model_max_tokens(const spectral_model *m) { return m ? m->info.max_tokens : 0; }
spectral_pooling spectral_model_pooling(const spectral_model *m) {
    return m ? (spectral_pooling)m->info.pooling : SPECTRAL_POOLING_UNSPECIFIED;
}
uint64_t spectral_model_n_params(const spectral_model *m) { return m ? m->info.n_params : 0; }
const sp_weight_list *sp_model_weight_list(const spectral_model *m) { return &m->weights; }
const sp_gguf *sp_model_gguf(const spectral_model *m) { return m->gguf; }

spectral_tokenize_params spectral_tokenize_default_params(void) {
    return (spectral_tokenize_params){.add_special = true, .max_tokens = 0};
}

int64_t spectral_tokenize_with(const spectral_model *m, const char *text, size_t len,
                               spectral_tokenize_params p, int32_t *tokens, int64_t n_max) {
    if (!m || (!text && len) || n_max < 0 || (!tokens && n_max > 0) || p.max_tokens < 0) {
        sp_fail(SPECTRAL_ERR_INVALID_ARGUMENT, "invalid argument to spectral_tokenize");
        return -1;
    }
    /* Nothing to embed gives no tokens, whatever the tokenizer (spectral.h):
     * white space alone, or text the tokenizer drops entirely (bert's
     * control characters), which would leave only its special tokens. */
    if (!text || sp_text_is_blank(text, len)) return 0;
    const int64_t n_special = p.add_special ? sp_tokenize(m->tokenizer, "", 0, 1, NULL, 0) : 0;
    int32_t saved[4];
    if (n_special < 0 || n_special > 4) { /* none of ours adds more than two */
        sp_fail(SPECTRAL_ERR_INVALID_ARGUMENT, "the tokenizer adds %lld special tokens", (long long)n_special);
        return -1;
    }
    const int64_t n_saved = n_special < n_max ? n_special : n_max;
    if (n_saved > 0) memcpy(saved, tokens, (size_t)n_saved * sizeof *saved);
    const int64_t cut = p.max_tokens;
    const int64_t n = sp_tokenize(m->tokenizer, text, len, p.add_special, tokens,
                                  cut && cut < n_max ? cut : n_max);
    if (n < 0) {
        sp_fail(SPECTRAL_ERR_INVALID_ARGUMENT, "tokenization failed");
        return -1;
    }
    if (n <= n_special) { /* wrote only the special tokens: put back what was there */
        if (n_saved > 0) memcpy(tokens, saved, (size_t)n_saved * sizeof *saved);
        return 0;
    }
    if (!cut || n <= cut) return n;
    /* The first cut tokens, closed as a whole text is: the end token the
     * tokenizer adds (if any) replaces the last one kept. */
    const int32_t end = p.add_special ? sp_tokenizer_end_token(m->tokenizer) : -1;
    if (end >= 0 && cut >= 2 && cut <= n_max) tokens[cut - 1] = end;
    return cut;
}

int64_t spectral_tokenize(const spectral_model *m, const char *text, size_t len, int32_t *tokens,
                          int64_t n_max) {
    return spectral_tokenize_with(m, text, len, spectral_tokenize_default_params(), tokens, n_max);
}

int64_t spectral_token_to_piece(const spectral_model *m, int32_t token, char *buf, int64_t size) {
    if (!m || size < 0 || (!buf && size > 0)) {
        sp_fail(SPECTRAL_ERR_INVALID_ARGUMENT, "invalid argument to spectral_token_to_piece");
        return -1;
    }
    if (token < 0 || token >= m->info.n_vocab) {
        sp_fail(SPECTRAL_ERR_INVALID_ARGUMENT, "token id %d is outside the vocabulary [0, %lld)", (int)token,
                (long long)m->info.n_vocab);
        return -1;
    }
    /* Ids past the tokenizer's own (rows only the embedding table has) have no text. */
    return token < sp_tokenizer_n_vocab(m->tokenizer) ? sp_token_piece(m->tokenizer, token, buf, size) : 0;
}

bool spectral_token_is_control(const spectral_model *m, int32_t token) {
    return m && sp_token_is_control(m->tokenizer, token);
}

/* Returns the weights in the memory of backend be and their types there
 * (uploading them once per CUDA device and sharing them between contexts).
 * A host-memory backend reads the model's weights as loaded, quantized
 * matrices included (it decodes them as it goes); a device backend gets
 * float32 copies, Q8_0/Q4_0 dequantized on the host one tensor at a time on
 * the way (the CUDA kernels compute on float32 only). */
static spectral_status model_weights_for(spectral_model *m, sp_backend *be, int device,
                                         const void *const **out, const sp_weight_type **types) {
    if (be->host_memory) {
        *out = m->weights.data;
        *types = m->weights.types;
        return SPECTRAL_OK;
    }
    spectral_status s = SPECTRAL_OK;
    pthread_mutex_lock(&m->lock);
    device_weights *d = m->uploaded;
    while (d && d->device != device) d = d->next;
    if (!d) {
        char err[512] = "";
        d = calloc(1, sizeof *d);
        if (d) d->w = calloc((size_t)m->weights.n, sizeof *d->w);
        if (d && d->w && !m->all_f32) m->all_f32 = calloc((size_t)m->weights.n + 1, sizeof *m->all_f32);
        if (d && d->w && !m->all_f32) {
            free(d->w);
            d->w = NULL;
        }
        if (d && d->w) d->owner = sp_backend_cuda_create(device, err, sizeof err);
        if (!d || !d->w || !d->owner) {
            s = d && d->w ? sp_fail(SPECTRAL_ERR_BACKEND, "%s", err)
                          : sp_fail(SPECTRAL_ERR_OUT_OF_MEMORY, "out of memory");
            if (d) free(d->w);
            free(d);
            d = NULL;
        } else {
            d->device = device;
            for (int64_t i = 0; i < m->weights.n && s == SPECTRAL_OK; i++) {
                size_t bytes = (size_t)m->weights.n_elems[i] * sizeof(float);
                const void *src = m->weights.data[i];
                float *tmp = NULL;
                if (m->weights.types[i] != SP_WEIGHT_F32) {
                    tmp = malloc(bytes);
                    if (!tmp) {
                        s = sp_fail(SPECTRAL_ERR_OUT_OF_MEMORY, "out of memory dequantizing weights");
                        break;
                    }
                    sp_dequantize_row(m->weights.types[i] == SP_WEIGHT_Q8_0 ? SP_TENSOR_Q8_0 : SP_TENSOR_Q4_0,
                                      src, tmp, m->weights.n_elems[i]);
                    src = tmp;
                }
                d->w[i] = d->owner->ops->buffer_alloc(d->owner, bytes);
                if (!d->w[i] || d->owner->ops->upload(d->owner, d->w[i], src, bytes))
                    s = sp_fail(SPECTRAL_ERR_BACKEND, "uploading weights: %s", d->owner->err);
                /* the upload may be asynchronous: wait before freeing its source */
                if (tmp && s == SPECTRAL_OK && d->owner->ops->synchronize(d->owner))
                    s = sp_fail(SPECTRAL_ERR_BACKEND, "uploading weights: %s", d->owner->err);
                free(tmp);
            }
            if (s == SPECTRAL_OK && d->owner->ops->synchronize(d->owner))
                s = sp_fail(SPECTRAL_ERR_BACKEND, "uploading weights: %s", d->owner->err);
            if (s == SPECTRAL_OK) {
                d->next = m->uploaded;
                m->uploaded = d;
            } else {
                for (int64_t i = 0; i < m->weights.n; i++)
                    if (d->w[i]) d->owner->ops->buffer_free(d->owner, d->w[i]);
                d->owner->ops->destroy(d->owner);
                free(d->w);
                free(d);
                d = NULL;
            }
        }
    }
    if (d) {
        *out = (const void *const *)d->w;
        *types = m->all_f32;
    }
    pthread_mutex_unlock(&m->lock);
    return s;
}

/* The compute type a GEMM weight stored as type gets under dtype. */
static sp_compute compute_for(spectral_dtype dtype, sp_weight_type type) {
    if (dtype == SPECTRAL_DTYPE_BF16) return SP_COMPUTE_BF16;
    if (dtype == SPECTRAL_DTYPE_AUTO && type != SP_WEIGHT_F32) return SP_COMPUTE_INT8;
    return SP_COMPUTE_F32;
}

/* The model's weights with every GEMM weight packed for dtype (made once per
 * dtype, shared by the contexts): a weight the CPU backend cannot lay out
 * for its compute type stays as loaded. */
static spectral_status packed_weights_for(spectral_model *m, spectral_dtype dtype, packed_set **out) {
    spectral_status s = SPECTRAL_OK;
    pthread_mutex_lock(&m->lock);
    packed_set *p = m->packed;
    while (p && p->dtype != dtype) p = p->next;
    if (!p) {
        char err[512] = "";
        const sp_weight_list *wl = &m->weights;
        p = calloc(1, sizeof *p);
        if (p) p->w = malloc((size_t)wl->n * sizeof *p->w + 1);
        if (p && p->w) p->wt = malloc((size_t)wl->n * sizeof *p->wt + 1);
        if (p && p->wt) p->owner = sp_backend_cpu_create(1, err, sizeof err);
        if (!p || !p->w || !p->wt || !p->owner) {
            s = p && p->wt ? sp_fail(SPECTRAL_ERR_BACKEND, "CPU backend: %s", err)
                           : sp_fail(SPECTRAL_ERR_OUT_OF_MEMORY, "out of memory");
            if (p) {
                free(p->w);
                free(p->wt);
            }
            free(p);
            p = NULL;
        } else {
            p->dtype = dtype;
            sp_backend *be = p->owner;
            int64_t i = 0;
            for (; i < wl->n; i++) {
                p->w[i] = wl->data[i];
                p->wt[i] = wl->types[i];
                const int64_t OUT = wl->gemm_rows[i];
                if (OUT <= 0) continue;
                const sp_compute c = compute_for(dtype, wl->types[i]);
                const size_t bytes = be->ops->packed_size(be, wl->types[i], OUT, wl->n_elems[i] / OUT, c);
                if (!bytes) continue;
                sp_packed *pw = be->ops->pack_weight(be, wl->types[i], wl->data[i], OUT, wl->n_elems[i] / OUT, c);
                if (!pw) {
                    s = sp_fail(SPECTRAL_ERR_OUT_OF_MEMORY, "packing %s: %s", wl->names[i] ? wl->names[i] : "a weight",
                                be->err);
                    break;
                }
                p->w[i] = pw;
                p->wt[i] = SP_WEIGHT_PACKED;
                p->bytes += bytes;
            }
            if (s == SPECTRAL_OK) {
                p->next = m->packed;
                m->packed = p;
            } else {
                while (i-- > 0)
                    if (p->wt[i] == SP_WEIGHT_PACKED) be->ops->packed_free(be, (sp_packed *)p->w[i]);
                be->ops->destroy(be);
                free(p->w);
                free(p->wt);
                free(p);
                p = NULL;
            }
        }
    }
    *out = p;
    pthread_mutex_unlock(&m->lock);
    return s;
}

/* ---- context ----------------------------------------------------------- */

/* Tokens per packed pass of spectral_encode_batch when the caller says 0. */
#define DEFAULT_BATCH_TOKENS 4096

struct spectral_context {
    spectral_model *model;
    spectral_context_params params;
    spectral_pooling pooling;
    sp_backend *be;
    const void *const *w;      /* the weights the forward pass reads: w_base or the adapters' */
    const void *const *w_base; /* the model's, in be's memory */
    const sp_weight_type *wt, *wt_base; /* their types in be's memory (w[i] is stored as wt[i]) */
    size_t packed_bytes;        /* the packed copies w_base uses (spectral_context_weight_memory) */
    sp_adapter_set *adapters;   /* NULL without adapters (runtime/adapter.c) */
    void *arena_buf;
    size_t arena_size;
    size_t peak;
    /* outputs of the last pass: one document, or a packed batch */
    const float *states; /* backend memory, all rows of the pass */
    float *emb;          /* n_docs x n_pooled pooled vectors of the pass */
    uint32_t *lex_counts; /* n_vocab zeros: sp_lexical_sketch's scratch (models with a sketch) */
    int64_t emb_cap;     /* documents emb can hold */
    int64_t *offsets;    /* n_docs + 1 row offsets of the pass (padded documents: their
                            run lengths) */
    int64_t *lens;       /* n_docs tokens of each document (before padding) */
    int64_t offsets_cap;
    spectral_status *doc_status; /* n_docs: OK, or SPECTRAL_ERR_NUMERIC (emb_cap of them) */
    sp_tables *tables;   /* tables the model derives per length (runtime/tables.c) */
    /* the document the getters show */
    int64_t cur_row0, n_tokens;
    const float *embedding;
    float *states_host; /* download buffer for device backends */
    size_t states_host_cap;
    int states_fresh;
    int has_output;
    /* the arch's head (spectralmlp's output projection), when it has one:
     * the pass's states before it, and, while the head waits for the token
     * states to be read (host memory, pooled output), where it will go */
    const float *head_in;
    float *head_out;
    void *head_ws;
    float *head_pooled; /* n_docs x n_head_in pooled rows */
    int64_t head_docs;  /* documents of the pass */
    int head_deferred;
};

spectral_context_params spectral_context_default_params(void) {
    spectral_context_params p = {
        .n_threads = 0,
        .backend = SPECTRAL_BACKEND_CPU,
        .device = 0,
        .mem_limit = SPECTRAL_MEM_UNLIMITED,
        .pooling = SPECTRAL_POOLING_UNSPECIFIED,
        .normalize = true,
        .batch_tokens = 0,
        .dtype = SPECTRAL_DTYPE_AUTO,
        .no_pad = false,
    };
    return p;
}

/* Grows the per-pass bookkeeping to n documents. */
static spectral_status ensure_docs(spectral_context *c, int64_t n) {
    const int64_t E = spectral_model_n_pooled(c->model);
    if (n > c->emb_cap) {
        float *e = realloc(c->emb, (size_t)(n * E) * sizeof(float));
        if (!e) return sp_fail(SPECTRAL_ERR_OUT_OF_MEMORY, "out of memory");
        c->emb = e;
        spectral_status *st = realloc(c->doc_status, (size_t)n * sizeof *st);
        if (!st) return sp_fail(SPECTRAL_ERR_OUT_OF_MEMORY, "out of memory");
        c->doc_status = st;
        c->emb_cap = n;
    }
    if (n + 1 > c->offsets_cap) {
        int64_t *o = realloc(c->offsets, (size_t)(n + 1) * sizeof(int64_t));
        if (!o) return sp_fail(SPECTRAL_ERR_OUT_OF_MEMORY, "out of memory");
        c->offsets = o;
        int64_t *l = realloc(c->lens, (size_t)(n + 1) * sizeof(int64_t));
        if (!l) return sp_fail(SPECTRAL_ERR_OUT_OF_MEMORY, "out of memory");
        c->lens = l;
        c->offsets_cap = n + 1;
    }
    return SPECTRAL_OK;
}

spectral_status spectral_context_create(spectral_model *m, spectral_context_params p,
                                        spectral_context **out) {
    if (!m || !out) return sp_fail(SPECTRAL_ERR_INVALID_ARGUMENT, "NULL argument");
    *out = NULL;
    if (p.n_threads < 0) return sp_fail(SPECTRAL_ERR_INVALID_ARGUMENT, "n_threads must be >= 0");
    if (p.batch_tokens < 0) return sp_fail(SPECTRAL_ERR_INVALID_ARGUMENT, "batch_tokens must be >= 0");
    if (p.pooling < SPECTRAL_POOLING_UNSPECIFIED || p.pooling > SPECTRAL_POOLING_LAST)
        return sp_fail(SPECTRAL_ERR_INVALID_ARGUMENT, "unknown pooling type %d", (int)p.pooling);
    if (p.dtype < SPECTRAL_DTYPE_AUTO || p.dtype > SPECTRAL_DTYPE_BF16)
        return sp_fail(SPECTRAL_ERR_INVALID_ARGUMENT, "unknown dtype %d", (int)p.dtype);
    if (p.dtype == SPECTRAL_DTYPE_BF16 && p.backend != SPECTRAL_BACKEND_CPU)
        return sp_fail(SPECTRAL_ERR_UNSUPPORTED, "dtype bf16 runs on the CPU backend only");
    if (p.n_threads == 0) {
        long n = sysconf(_SC_NPROCESSORS_ONLN);
        p.n_threads = n > 0 ? (n > 1024 ? 1024 : (int)n) : 1;
    }
    if (p.batch_tokens == 0) p.batch_tokens = DEFAULT_BATCH_TOKENS;
    spectral_context *c = calloc(1, sizeof *c);
    if (!c) return sp_fail(SPECTRAL_ERR_OUT_OF_MEMORY, "out of memory");
    c->model = m;
    c->params = p;
    c->pooling = p.pooling == SPECTRAL_POOLING_UNSPECIFIED ? (spectral_pooling)m->info.pooling
                                                           : p.pooling;
    char err[512] = "";
    spectral_status s = ensure_docs(c, 1);
    if (s == SPECTRAL_OK && m->lexical.dims && !(c->lex_counts = calloc((size_t)m->info.n_vocab, sizeof *c->lex_counts)))
        s = sp_fail(SPECTRAL_ERR_OUT_OF_MEMORY, "out of memory");
    if (s == SPECTRAL_OK && p.backend == SPECTRAL_BACKEND_CPU) {
        c->be = sp_backend_cpu_create(p.n_threads, err, sizeof err);
        if (!c->be) s = sp_fail(SPECTRAL_ERR_BACKEND, "CPU backend: %s", err);
    } else if (s == SPECTRAL_OK && p.backend == SPECTRAL_BACKEND_CUDA) {
        c->be = sp_backend_cuda_create(p.device, err, sizeof err);
        if (!c->be)
            s = sp_fail(sp_backend_cuda_device_count() > 0 ? SPECTRAL_ERR_BACKEND : SPECTRAL_ERR_UNSUPPORTED,
                     "CUDA backend: %s", err);
    } else if (s == SPECTRAL_OK) {
        s = sp_fail(SPECTRAL_ERR_INVALID_ARGUMENT, "unknown backend %d", (int)p.backend);
    }
    if (s == SPECTRAL_OK) s = model_weights_for(m, c->be, p.device, &c->w, &c->wt);
    if (s == SPECTRAL_OK && c->be->host_memory && m->arch->packed_gemms && c->be->ops->pack_weight) {
        packed_set *ps = NULL;
        s = packed_weights_for(m, p.dtype, &ps);
        if (ps) {
            c->w = ps->w;
            c->wt = ps->wt;
            c->packed_bytes = ps->bytes;
        }
    }
    if (s == SPECTRAL_OK && !(c->tables = sp_tables_new(c->be)))
        s = sp_fail(SPECTRAL_ERR_OUT_OF_MEMORY, "out of memory");
    c->w_base = c->w;
    c->wt_base = c->wt;
    if (s != SPECTRAL_OK) {
        spectral_context_free(c);
        return s;
    }
    *out = c;
    return SPECTRAL_OK;
}

void spectral_context_free(spectral_context *c) {
    if (!c) return;
    if (c->be) {
        sp_adapter_set_free(c->adapters, c->be);
        if (c->arena_buf) c->be->ops->buffer_free(c->be, c->arena_buf);
        sp_tables_free(c->tables);
        c->be->ops->destroy(c->be);
    }
    free(c->states_host);
    free(c->emb);
    free(c->lex_counts);
    free(c->offsets);
    free(c->lens);
    free(c->doc_status);
    free(c);
}

/* The arch's head over the rows of each document of the pass (one call per
 * document, so its GEMM rows are cut the same whether the document came
 * alone or packed). */
static int head_rows(spectral_context *c, const int64_t *offsets, int64_t n_docs) {
    const spectral_model *m = c->model;
    const int64_t D = m->info.n_head_in, E = m->info.n_embd;
    for (int64_t i = 0; i < n_docs; i++)
        if (m->arch->head(m->arch_model, c->w, c->wt, c->be, c->head_in + offsets[i] * D,
                          offsets[i + 1] - offsets[i], c->head_ws, c->head_out + offsets[i] * E))
            return -1;
    return 0;
}

/* Plans the head's memory (the states after it, its workspace, the pooled
 * rows), then runs it on every row, or, on a host-memory backend when the
 * output is pooled, leaves it for the pooled rows (encode_pass) and for
 * the token states if they are read (spectral_get_token_states): the same
 * numbers for the states either way, a fifth of a pass less for the
 * default model's embeddings. *states becomes the states after the head. */
static int run_head(spectral_context *c, sp_arena *a, const int64_t *offsets, int64_t n_docs,
                    float **states) {
    const spectral_model *m = c->model;
    const int64_t T = offsets[n_docs], D = m->info.n_head_in, E = m->info.n_embd;
    int64_t longest = 0;
    for (int64_t i = 0; i < n_docs; i++)
        if (offsets[i + 1] - offsets[i] > longest) longest = offsets[i + 1] - offsets[i];
    const size_t ws = m->arch->head_workspace(m->arch_model, c->w, c->wt, c->be, longest);
    float *out = sp_arena_alloc(a, (size_t)(T * E) * sizeof(float));
    void *head_ws = sp_arena_alloc(a, ws);
    float *head_pooled = sp_arena_alloc(a, (size_t)(n_docs * D) * sizeof(float));
    if (!out || !head_ws || !head_pooled) {
        snprintf(c->be->err, sizeof c->be->err, "activation arena exhausted (planning error)");
        return -1;
    }
    /* measuring (between passes too) leaves the last pass's outputs alone */
    if (sp_arena_measuring(a)) {
        *states = out;
        return 0;
    }
    c->head_in = *states;
    c->head_out = *states = out;
    c->head_ws = head_ws;
    c->head_pooled = head_pooled;
    c->head_docs = n_docs;
    c->head_deferred = c->be->host_memory && c->pooling != SPECTRAL_POOLING_NONE;
    return c->head_deferred ? 0 : head_rows(c, offsets, n_docs);
}

/* Rows a document of T tokens runs as: the model's length when it pads
 * (M2-BERT, as its model card does) and the context does not say no_pad. */
static int64_t run_length(const spectral_context *c, int64_t T) {
    const int64_t P = c->model->info.pad_to;
    return P > 0 && !c->params.no_pad && T < P ? P : T;
}

/* The forward pass over n_docs packed documents (document i has lens[i]
 * tokens, in rows [offsets[i], offsets[i+1]), the rest of them padding;
 * tokens and lens may be NULL when measuring), then the model's own pooling
 * head when it has one for the context's pooling (*pooled NULL otherwise;
 * single documents only). With a->tables set, the pass uses the context's
 * derived-table cache (sp_arena_table). */
static int run_graph(spectral_context *c, sp_arena *a, const int32_t *const *tokens,
                     const int64_t *lens, const int64_t *offsets, int64_t n_docs, float **states,
                     float **pooled) {
    const spectral_model *m = c->model;
    const int64_t T = offsets[n_docs];
    *pooled = NULL;
    int32_t *ids = sp_arena_alloc(a, (size_t)T * sizeof(int32_t));
    if (!ids) {
        snprintf(c->be->err, sizeof c->be->err, "activation arena exhausted (planning error)");
        return -1;
    }
    const int measuring = sp_arena_measuring(a);
    if (!measuring)
        for (int64_t i = 0; i < n_docs; i++) {
            const int64_t rows = offsets[i + 1] - offsets[i];
            if (c->be->ops->upload(c->be, ids + offsets[i], tokens[i], (size_t)lens[i] * sizeof *ids) ||
                (rows > lens[i] && c->be->ops->upload(c->be, ids + offsets[i] + lens[i], m->pad_ids,
                                                      (size_t)(rows - lens[i]) * sizeof *ids)))
                return -1;
        }
    if (a->tables) sp_tables_begin(a->tables, offsets[1] - offsets[0], measuring);
    int rc = m->arch->forward(m->arch_model, c->w, c->wt, c->be, a, ids, offsets, n_docs, states);
    if (!rc && m->info.n_head_in) rc = run_head(c, a, offsets, n_docs, states);
    if (!rc && n_docs == 1 && m->arch->pool && c->pooling != SPECTRAL_POOLING_NONE)
        rc = m->arch->pool(m->arch_model, c->w, c->wt, c->be, a, (int)c->pooling, *states, T, pooled);
    if (a->tables) sp_tables_end(a->tables, rc == 0);
    return rc;
}

/* Largest document we accept, so that every size computation stays far from
 * overflow (T * max(D, F) * 4 bytes fits easily in 64 bits). */
#define MAX_TOKENS (INT64_C(1) << 34)

/* Arena bytes for a pass with the backend's current max_parallel (0 on a
 * planning failure). */
static size_t measure(spectral_context *c, const int64_t *offsets, int64_t n_docs, int tables) {
    sp_arena a;
    float *states, *pooled;
    sp_arena_init_measure(&a);
    if (tables) a.tables = c->tables;
    if (run_graph(c, &a, NULL, NULL, offsets, n_docs, &states, &pooled)) return 0;
    return a.used;
}

size_t spectral_context_weight_memory(const spectral_context *c) { return c ? c->packed_bytes : 0; }

/* What a pass holds outside the arena, charged against mem_limit with it:
 * what the backend allocates itself (FFTW's tables) and the packed weights. */
static size_t outside_arena(spectral_context *c, const int64_t *offsets, int64_t n_docs) {
    if (!c->be->ops->external_memory) return c->packed_bytes;
    int64_t T_max = 0;
    for (int64_t i = 0; i < n_docs; i++)
        if (offsets[i + 1] - offsets[i] > T_max) T_max = offsets[i + 1] - offsets[i];
    return c->be->ops->external_memory(c->be, T_max) + c->packed_bytes;
}

/* One document's working memory with at most max_parallel tiles in flight
 * (0: all). */
static size_t memory_for(spectral_context *c, int64_t T, int max_parallel) {
    if (!c || T <= 0 || T > MAX_TOKENS) return 0;
    const int64_t offsets[2] = {0, run_length(c, T)};
    const int saved = c->be->max_parallel;
    c->be->max_parallel = max_parallel;
    size_t need = measure(c, offsets, 1, 0);
    c->be->max_parallel = saved;
    return need ? need + outside_arena(c, offsets, 1) : 0;
}

size_t spectral_context_memory_needed(spectral_context *c, int64_t T) { return memory_for(c, T, 0); }

size_t spectral_context_memory_minimum(spectral_context *c, int64_t T) { return memory_for(c, T, 1); }

size_t spectral_context_peak_memory(const spectral_context *c) { return c ? c->peak : 0; }

spectral_status spectral_context_set_mem_limit(spectral_context *c, size_t mem_limit) {
    if (!c) return sp_fail(SPECTRAL_ERR_INVALID_ARGUMENT, "NULL context");
    c->params.mem_limit = mem_limit;
    if (c->arena_size > mem_limit) {
        c->be->ops->buffer_free(c->be, c->arena_buf);
        c->arena_buf = NULL;
        c->arena_size = 0;
        c->has_output = 0; /* the token states lived there */
    }
    /* what is held between passes, the arena and the cached tables, fits */
    sp_tables_set_budget(c->tables, -1, mem_limit - c->arena_size);
    return SPECTRAL_OK;
}

spectral_status spectral_context_set_normalize(spectral_context *c, bool normalize) {
    if (!c) return sp_fail(SPECTRAL_ERR_INVALID_ARGUMENT, "NULL context");
    c->params.normalize = normalize;
    return SPECTRAL_OK;
}

spectral_pooling spectral_context_pooling(const spectral_context *c) {
    return c ? c->pooling : SPECTRAL_POOLING_UNSPECIFIED;
}

static void l2_normalize(float *v, int64_t n) {
    double ss = 0;
    for (int64_t i = 0; i < n; i++) ss += (double)v[i] * v[i];
    if (ss <= 0) return;
    float inv = (float)(1.0 / sqrt(ss));
    for (int64_t i = 0; i < n; i++) v[i] *= inv;
}

/* Checks one document's length and ids. */
static spectral_status check_document(const spectral_model *m, const int32_t *tokens, int64_t T) {
    if (!tokens && T > 0) return sp_fail(SPECTRAL_ERR_INVALID_ARGUMENT, "NULL argument");
    if (T <= 0) return sp_fail(SPECTRAL_ERR_INVALID_ARGUMENT, "empty document (0 tokens)");
    if (T > MAX_TOKENS || (m->info.max_tokens && T > m->info.max_tokens))
        return sp_fail(SPECTRAL_ERR_INVALID_ARGUMENT, "document of %lld tokens is longer than the maximum of %lld",
                    (long long)T, (long long)(m->info.max_tokens ? m->info.max_tokens : MAX_TOKENS));
    for (int64_t i = 0; i < T; i++)
        if (tokens[i] < 0 || tokens[i] >= m->info.n_vocab)
            return sp_fail(SPECTRAL_ERR_INVALID_ARGUMENT, "token %lld has id %d, outside the vocabulary [0, %lld)",
                        (long long)i, (int)tokens[i], (long long)m->info.n_vocab);
    return SPECTRAL_OK;
}

/* Plans a pass: the arena it needs with every thread busy, or, when that is
 * over mem_limit, with the most tiles in flight that fit (be->max_parallel
 * is left at that value for the run). */
static spectral_status plan(spectral_context *c, const int64_t *offsets, int64_t n_docs,
                            size_t *need, size_t *arena) {
    sp_backend *be = c->be;
    const size_t limit = c->params.mem_limit;
    const size_t outside = outside_arena(c, offsets, n_docs);
    be->max_parallel = 0;
    *arena = measure(c, offsets, n_docs, 0);
    if (!*arena) return sp_fail(SPECTRAL_ERR_BACKEND, "planning failed: %s", be->err);
    *need = *arena + outside;
    if (*need <= limit) return SPECTRAL_OK;
    /* Fewer tiles in flight need less scratch: find the most that fit. */
    int lo = 1, hi = be->n_threads - 1, best = 0;
    size_t best_need = 0;
    while (lo <= hi) {
        const int mid = lo + (hi - lo) / 2;
        be->max_parallel = mid;
        const size_t m = measure(c, offsets, n_docs, 0), n = m ? m + outside : 0;
        if (n && n <= limit) {
            best = mid;
            best_need = n;
            lo = mid + 1;
        } else {
            hi = mid - 1;
            if (mid == 1) *need = n; /* the least this pass can take */
        }
    }
    if (!best) {
        be->max_parallel = 0;
        const int64_t T = offsets[n_docs];
        char b1[32], b2[32];
        return sp_fail(SPECTRAL_ERR_MEMORY_LIMIT,
                    "%s of %lld tokens needs %s (%zu bytes) of working memory, over the limit "
                    "of %s (%zu bytes)",
                    n_docs == 1 ? "a document" : "a batch", (long long)T,
                    fmt_bytes(*need, b1, sizeof b1), *need, fmt_bytes(limit, b2, sizeof b2), limit);
    }
    be->max_parallel = best;
    *need = best_need;
    *arena = best_need - outside;
    return SPECTRAL_OK;
}

/* Points the getters at document i of the last pass; fails instead when
 * its outputs are not finite. */
static spectral_status show_document(spectral_context *c, int64_t i) {
    if (c->doc_status[i] != SPECTRAL_OK) {
        c->has_output = 0;
        return sp_fail(c->doc_status[i],
                       "the document's output has non-finite values (NaN or Inf): the model's weights "
                       "(or an adapter's scale) overflow on it");
    }
    c->has_output = 1;
    c->cur_row0 = c->offsets[i];
    c->n_tokens = c->lens[i];
    c->embedding = c->emb + i * spectral_model_n_pooled(c->model);
    c->states_fresh = 0;
    return SPECTRAL_OK;
}

/* Runs n_docs already checked documents as one pass; each one's outcome is
 * then in doc_status (show_document). */
static spectral_status encode_pass(spectral_context *c, const int32_t *const *tokens,
                                   const int64_t *n_tokens, int64_t n_docs) {
    const spectral_model *m = c->model;
    c->has_output = 0;
    spectral_status s = ensure_docs(c, n_docs);
    if (s) return s;
    c->offsets[0] = 0;
    for (int64_t i = 0; i < n_docs; i++) {
        c->lens[i] = n_tokens[i];
        c->offsets[i + 1] = c->offsets[i] + run_length(c, n_tokens[i]);
    }
    size_t need = 0, arena = 0;
    s = plan(c, c->offsets, n_docs, &need, &arena);
    if (s) return s;
    /* The planned pass fits the limit without any derived table; what it
     * leaves is the cache's budget, and a pass that finds its tables in the
     * cache needs less arena (no scratch for them). */
    const size_t limit = c->params.mem_limit, outside = need - arena;
    const size_t left = limit - need; /* plan: need <= limit */
    const size_t budget = left < SP_TABLES_MAX ? left : SP_TABLES_MAX;
    sp_tables_set_budget(c->tables, c->offsets[1], budget);
    arena = measure(c, c->offsets, n_docs, 1);
    if (!arena) {
        c->be->max_parallel = 0;
        return sp_fail(SPECTRAL_ERR_BACKEND, "planning failed: %s", c->be->err);
    }
    need = arena + outside;
    char b1[32];
    if (arena > c->arena_size || c->arena_size + outside + budget > limit) {
        /* Grow (or, when what the backend allocates itself grew, shrink) to
         * exactly what this pass needs: never past the cap. */
        if (c->arena_buf) c->be->ops->buffer_free(c->be, c->arena_buf);
        c->arena_size = 0;
        c->arena_buf = c->be->ops->buffer_alloc(c->be, arena);
        if (!c->arena_buf) {
            c->be->max_parallel = 0;
            return sp_fail(SPECTRAL_ERR_OUT_OF_MEMORY, "cannot allocate %s of activation memory: %s",
                        fmt_bytes(need, b1, sizeof b1), c->be->err);
        }
        c->arena_size = arena;
    }
    sp_arena a;
    sp_arena_init(&a, c->arena_buf, c->arena_size);
    a.tables = c->tables;
    float *states = NULL, *pooled = NULL;
    int rc = run_graph(c, &a, tokens, c->lens, c->offsets, n_docs, &states, &pooled);
    c->be->max_parallel = 0;
    if (rc && sp_tables_alloc_failed(c->tables))
        return sp_fail(SPECTRAL_ERR_OUT_OF_MEMORY, "out of memory for a cached table: %s", c->be->err);
    if (rc) return sp_fail(SPECTRAL_ERR_BACKEND, "%s", c->be->err);
    const size_t used = a.used + outside + sp_tables_resident(c->tables);
    if (used > c->peak) c->peak = used;

    const int64_t E = m->info.n_embd, R = m->lexical.dims, P = E + R;
    if (c->pooling != SPECTRAL_POOLING_NONE) {
        sp_pool_op op = c->pooling == SPECTRAL_POOLING_CLS ? SP_POOL_FIRST
                        : c->pooling == SPECTRAL_POOLING_LAST ? SP_POOL_LAST
                                                              : SP_POOL_MEAN;
        const int64_t Dh = m->info.n_head_in;
        for (int64_t i = 0; i < n_docs; i++) {
            float *e = c->emb + i * P;
            /* A model's pooling head gave one row: pooling it copies it to the host. */
            if (pooled ? c->be->ops->pool(c->be, pooled, 1, E, SP_POOL_FIRST, e)
                       : c->head_deferred
                           /* host memory: the pooled row of the states before the head, then the head */
                           ? c->be->ops->pool(c->be, c->head_in + c->offsets[i] * Dh, n_tokens[i], Dh, op,
                                              c->head_pooled + i * Dh) ||
                                 m->arch->head(m->arch_model, c->w, c->wt, c->be, c->head_pooled + i * Dh, 1,
                                               c->head_ws, e)
                           : c->be->ops->pool(c->be, states + c->offsets[i] * E, n_tokens[i], E, op, e))
                return sp_fail(SPECTRAL_ERR_BACKEND, "%s", c->be->err);
            if (R) {
                /* [dense / |dense|, scale * sketch / |sketch|]: the two parts
                 * weigh what the model says whatever their raw norms. */
                l2_normalize(e, E);
                sp_lexical_sketch(&m->lexical, tokens[i], n_tokens[i], c->lex_counts, e + E);
                l2_normalize(e + E, R);
                for (int64_t r = 0; r < R; r++) e[E + r] *= m->lexical.scale;
            }
            if (c->params.normalize) l2_normalize(e, P);
        }
    }
    if (c->be->ops->synchronize(c->be)) return sp_fail(SPECTRAL_ERR_BACKEND, "%s", c->be->err);
    /* A document's outputs are finite or it fails (spectral.h): its pooled
     * vector, and its token states where they are in host memory (a device
     * backend's are checked when downloaded; with the head deferred, the
     * rows it will read now, and its output when it runs). Documents of a
     * pack do not mix, so one overflow fails its own document only. */
    const float *rows = c->head_deferred ? c->head_in : states;
    const int64_t W = c->head_deferred ? m->info.n_head_in : E;
    for (int64_t i = 0; i < n_docs; i++) {
        const int bad = (c->pooling != SPECTRAL_POOLING_NONE &&
                         sp_first_nonfinite(SP_TENSOR_F32, c->emb + i * P, (size_t)P) >= 0) ||
                        (c->be->host_memory &&
                         sp_first_nonfinite(SP_TENSOR_F32, rows + c->offsets[i] * W, (size_t)(n_tokens[i] * W)) >= 0);
        c->doc_status[i] = bad ? SPECTRAL_ERR_NUMERIC : SPECTRAL_OK;
    }
    c->states = states;
    return SPECTRAL_OK;
}

/* The merging itself is in runtime/adapter.c. */
spectral_status spectral_context_set_adapters(spectral_context *c, spectral_adapter *const *adapters,
                                              const float *scales, int32_t n) {
    if (!c || n < 0 || (n > 0 && (!adapters || !scales)))
        return sp_fail(SPECTRAL_ERR_INVALID_ARGUMENT, "invalid argument to spectral_context_set_adapters");
    sp_adapter_set *set = NULL;
    if (n > 0) {
        spectral_status s = sp_adapter_set_build(c->model, c->be, c->w_base, c->wt_base,
                                                 compute_for(c->params.dtype, SP_WEIGHT_F32), adapters,
                                                 scales, n, &set);
        if (s) return s;
    }
    sp_adapter_set_free(c->adapters, c->be);
    c->adapters = set;
    c->w = set ? sp_adapter_set_weights(set) : c->w_base;
    c->wt = set ? sp_adapter_set_types(set) : c->wt_base;
    c->has_output = 0; /* the last outputs were made with other weights */
    sp_tables_set_budget(c->tables, -1, 0); /* and so were the cached tables */
    return SPECTRAL_OK;
}

spectral_status spectral_encode(spectral_context *c, const int32_t *tokens, int64_t T) {
    if (!c) return sp_fail(SPECTRAL_ERR_INVALID_ARGUMENT, "NULL argument");
    c->has_output = 0;
    spectral_status s = check_document(c->model, tokens, T);
    if (s == SPECTRAL_OK) s = encode_pass(c, &tokens, &T, 1);
    return s == SPECTRAL_OK ? show_document(c, 0) : s;
}

const float *spectral_get_embedding(spectral_context *c) {
    if (!c || !c->has_output || c->pooling == SPECTRAL_POOLING_NONE) return NULL;
    return c->embedding;
}

const float *spectral_get_token_states(spectral_context *c, int64_t *n_tokens) {
    if (n_tokens) *n_tokens = 0;
    if (!c || !c->has_output) return NULL;
    if (c->head_deferred) {
        /* the pass left the head for the pooled rows: run it on every row now */
        if (head_rows(c, c->offsets, c->head_docs)) {
            sp_fail(SPECTRAL_ERR_BACKEND, "%s", c->be->err);
            return NULL;
        }
        c->head_deferred = 0;
    }
    const int64_t E = c->model->info.n_embd;
    const float *rows = c->states + c->cur_row0 * E;
    if (c->be->host_memory) {
        /* the head may have run just now: its rows were not checked yet */
        if (sp_first_nonfinite(SP_TENSOR_F32, rows, (size_t)c->n_tokens * (size_t)E) >= 0) {
            sp_fail(SPECTRAL_ERR_NUMERIC, "the document's token states have non-finite values (NaN or Inf)");
            return NULL;
        }
        if (n_tokens) *n_tokens = c->n_tokens;
        return rows;
    }
    if (n_tokens) *n_tokens = c->n_tokens;
    if (!c->states_fresh) {
        size_t bytes = (size_t)c->n_tokens * (size_t)E * sizeof(float);
        if (bytes > c->states_host_cap) {
            float *nb = realloc(c->states_host, bytes);
            if (!nb) {
                sp_fail(SPECTRAL_ERR_OUT_OF_MEMORY, "out of memory for token states");
                return NULL;
            }
            c->states_host = nb;
            c->states_host_cap = bytes;
        }
        if (c->be->ops->download(c->be, c->states_host, rows, bytes)) {
            sp_fail(SPECTRAL_ERR_BACKEND, "%s", c->be->err);
            return NULL;
        }
        if (sp_first_nonfinite(SP_TENSOR_F32, c->states_host, (size_t)c->n_tokens * (size_t)E) >= 0) {
            sp_fail(SPECTRAL_ERR_NUMERIC, "the document's token states have non-finite values (NaN or Inf)");
            return NULL;
        }
        c->states_fresh = 1;
    }
    return c->states_host;
}

spectral_status spectral_encode_batch(spectral_context *c, const int32_t *const *tokens,
                                      const int64_t *n_tokens, int64_t n_docs,
                                      spectral_doc_callback on_done, void *user_data) {
    if (!c || n_docs < 0 || (n_docs > 0 && (!tokens || !n_tokens)))
        return sp_fail(SPECTRAL_ERR_INVALID_ARGUMENT, "invalid argument to spectral_encode_batch");
    const int64_t budget = c->model->arch->batched ? c->params.batch_tokens : 1;
    spectral_status first = SPECTRAL_OK;
    int64_t i = 0;
    while (i < n_docs) {
        spectral_status s = check_document(c->model, tokens[i], n_tokens[i]);
        int64_t j = i + 1;
        if (s == SPECTRAL_OK) {
            /* A pack: the following valid documents up to the token budget
             * (a longer document goes alone). */
            int64_t total = n_tokens[i];
            while (j < n_docs && n_tokens[j] > 0 && total + n_tokens[j] <= budget &&
                   check_document(c->model, tokens[j], n_tokens[j]) == SPECTRAL_OK)
                total += n_tokens[j++];
            s = encode_pass(c, tokens + i, n_tokens + i, j - i);
            if (s != SPECTRAL_OK && j - i > 1) {
                /* The pack failed (over mem_limit, say): this document alone,
                 * then the rest in new packs, so each gets its own status. */
                j = i + 1;
                s = encode_pass(c, tokens + i, n_tokens + i, 1);
            }
        }
        for (int64_t k = i; k < j; k++) {
            spectral_status sk = s;
            if (s == SPECTRAL_OK) sk = show_document(c, k - i);
            else c->has_output = 0; /* no stale output from an earlier pass */
            if (sk != SPECTRAL_OK && first == SPECTRAL_OK) first = sk;
            if (on_done && on_done(c, k, sk, user_data))
                return sp_fail(SPECTRAL_ERR_STOPPED, "the callback stopped the batch after document %lld of %lld",
                               (long long)k, (long long)n_docs);
        }
        i = j;
    }
    return first;
}
