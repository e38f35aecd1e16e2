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
#include "models/model.h"
#include "runtime/adapter.h"
#include "runtime/arena.h"
#include "runtime/internal.h"

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
    }
    return "unknown status";
}

bool spectral_backend_available(spectral_backend b) {
    if (b == SPECTRAL_BACKEND_CPU) return true;
    if (b == SPECTRAL_BACKEND_CUDA) return sp_backend_cuda_device_count() > 0;
    return false;
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

static const sp_arch *const k_archs[] = {&sp_arch_spectralmlp, &sp_arch_fnet};

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
    char name[256];
    pthread_mutex_t lock; /* guards device_weights */
    device_weights *uploaded;
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
        return sp_fail(SPECTRAL_ERR_MODEL, "unsupported architecture '%.*s' (supported: spectralmlp, fnet)",
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
    free(m->arch_model);
    sp_weight_list_free(&m->weights);
    sp_owned_free(&m->owned);
    free(m->all_f32);
    sp_tokenizer_free(m->tokenizer);
    sp_lexical_free(&m->lexical);
    sp_gguf_close(m->gguf);
    free(m->file_copy);
    pthread_mutex_destroy(&m->lock);
    free(m);
}

const char *spectral_model_arch(const spectral_model *m) { return m->arch->name; }
const char *spectral_model_name(const spectral_model *m) { return m->name; }
int32_t spectral_model_n_embd(const spectral_model *m) { return (int32_t)m->info.n_embd; }
int32_t spectral_model_n_pooled(const spectral_model *m) {
    return (int32_t)(m->info.n_embd + m->lexical.dims);
}
int32_t spectral_model_n_lexical(const spectral_model *m) { return (int32_t)m->lexical.dims; }
float spectral_model_lexical_scale(const spectral_model *m) { return m->lexical.dims ? m->lexical.scale : 0.0f; }
int32_t spectral_model_dense_prefixes(const spectral_model *m, int32_t *lengths, int32_t n_max) {
    for (int i = 0; lengths && i < m->n_prefixes && i < n_max; i++) lengths[i] = (int32_t)m->prefixes[i];
    return m->n_prefixes;
}
int32_t spectral_model_n_layer(const spectral_model *m) { return (int32_t)m->info.n_layer; }
int32_t spectral_model_n_vocab(const spectral_model *m) { return (int32_t)m->info.n_vocab; }
int32_t spectral_model_n_ctx_train(const spectral_model *m) {
    return m->info.n_ctx_train > INT32_MAX ? INT32_MAX : (int32_t)m->info.n_ctx_train;
}
int64_t spectral_model_max_tokens(const spectral_model *m) { return m->info.max_tokens; }
spectral_pooling spectral_model_pooling(const spectral_model *m) {
    return (spectral_pooling)m->info.pooling;
}
uint64_t spectral_model_n_params(const spectral_model *m) { return m->info.n_params; }
const sp_weight_list *sp_model_weight_list(const spectral_model *m) { return &m->weights; }
const sp_gguf *sp_model_gguf(const spectral_model *m) { return m->gguf; }

int64_t spectral_tokenize(const spectral_model *m, const char *text, size_t len, int32_t *tokens,
                          int64_t n_max) {
    if (!m || (!text && len) || n_max < 0 || (!tokens && n_max > 0)) {
        sp_fail(SPECTRAL_ERR_INVALID_ARGUMENT, "invalid argument to spectral_tokenize");
        return -1;
    }
    int64_t n = sp_tokenize(m->tokenizer, text ? text : "", len, 1, tokens, n_max);
    if (n < 0) sp_fail(SPECTRAL_ERR_INVALID_ARGUMENT, "tokenization failed");
    return n;
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
    sp_adapter_set *adapters;   /* NULL without adapters (runtime/adapter.c) */
    void *arena_buf;
    size_t arena_size;
    size_t peak;
    /* outputs of the last pass: one document, or a packed batch */
    const float *states; /* backend memory, all rows of the pass */
    float *emb;          /* n_docs x n_pooled pooled vectors of the pass */
    uint32_t *lex_counts; /* n_vocab zeros: sp_lexical_sketch's scratch (models with a sketch) */
    int64_t emb_cap;     /* documents emb can hold */
    int64_t *offsets;    /* n_docs + 1 row offsets of the pass */
    int64_t offsets_cap;
    /* the document the getters show */
    int64_t cur_row0, n_tokens;
    const float *embedding;
    float *states_host; /* download buffer for device backends */
    size_t states_host_cap;
    int states_fresh;
    int has_output;
};

spectral_context_params spectral_context_default_params(void) {
    spectral_context_params p = {
        .n_threads = 0,
        .backend = SPECTRAL_BACKEND_CPU,
        .device = 0,
        .mem_limit = 0,
        .pooling = SPECTRAL_POOLING_UNSPECIFIED,
        .normalize = true,
        .batch_tokens = 0,
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
        c->emb_cap = n;
    }
    if (n + 1 > c->offsets_cap) {
        int64_t *o = realloc(c->offsets, (size_t)(n + 1) * sizeof(int64_t));
        if (!o) return sp_fail(SPECTRAL_ERR_OUT_OF_MEMORY, "out of memory");
        c->offsets = o;
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
        c->be->ops->destroy(c->be);
    }
    free(c->states_host);
    free(c->emb);
    free(c->lex_counts);
    free(c->offsets);
    free(c);
}

/* The forward pass over n_docs packed documents (tokens[i] has
 * offsets[i+1] - offsets[i] ids; tokens may be NULL when measuring), then
 * the model's own pooling head when it has one for the context's pooling
 * (*pooled NULL otherwise; single documents only). */
static int run_graph(spectral_context *c, sp_arena *a, const int32_t *const *tokens,
                     const int64_t *offsets, int64_t n_docs, float **states, float **pooled) {
    const spectral_model *m = c->model;
    const int64_t T = offsets[n_docs];
    *pooled = NULL;
    int32_t *ids = sp_arena_alloc(a, (size_t)T * sizeof(int32_t));
    if (!ids) {
        snprintf(c->be->err, sizeof c->be->err, "activation arena exhausted (planning error)");
        return -1;
    }
    if (!sp_arena_measuring(a))
        for (int64_t i = 0; i < n_docs; i++)
            if (c->be->ops->upload(c->be, ids + offsets[i], tokens[i],
                                   (size_t)(offsets[i + 1] - offsets[i]) * sizeof *ids))
                return -1;
    if (m->arch->forward(m->arch_model, c->w, c->wt, c->be, a, ids, offsets, n_docs, states)) return -1;
    if (n_docs == 1 && m->arch->pool && c->pooling != SPECTRAL_POOLING_NONE)
        return m->arch->pool(m->arch_model, c->w, c->wt, c->be, a, (int)c->pooling, *states, T, pooled);
    return 0;
}

/* Largest document we accept, so that every size computation stays far from
 * overflow (T * max(D, F) * 4 bytes fits easily in 64 bits). */
#define MAX_TOKENS (INT64_C(1) << 34)

/* Arena bytes for a pass with the backend's current max_parallel (0 on a
 * planning failure). */
static size_t measure(spectral_context *c, const int64_t *offsets, int64_t n_docs) {
    sp_arena a;
    float *states, *pooled;
    sp_arena_init_measure(&a);
    if (run_graph(c, &a, NULL, offsets, n_docs, &states, &pooled)) return 0;
    return a.used;
}

/* What the backend allocates itself for a pass (FFTW's tables), outside the
 * arena: charged against mem_limit with it. */
static size_t outside_arena(spectral_context *c, const int64_t *offsets, int64_t n_docs) {
    if (!c->be->ops->external_memory) return 0;
    int64_t T_max = 0;
    for (int64_t i = 0; i < n_docs; i++)
        if (offsets[i + 1] - offsets[i] > T_max) T_max = offsets[i + 1] - offsets[i];
    return c->be->ops->external_memory(c->be, T_max);
}

/* One document's working memory with at most max_parallel tiles in flight
 * (0: all). */
static size_t memory_for(spectral_context *c, int64_t T, int max_parallel) {
    if (!c || T <= 0 || T > MAX_TOKENS) return 0;
    const int64_t offsets[2] = {0, T};
    const int saved = c->be->max_parallel;
    c->be->max_parallel = max_parallel;
    size_t need = measure(c, offsets, 1);
    c->be->max_parallel = saved;
    return need ? need + outside_arena(c, offsets, 1) : 0;
}

size_t spectral_context_memory_needed(spectral_context *c, int64_t T) { return memory_for(c, T, 0); }

size_t spectral_context_memory_minimum(spectral_context *c, int64_t T) { return memory_for(c, T, 1); }

size_t spectral_context_peak_memory(const spectral_context *c) { return c ? c->peak : 0; }

spectral_status spectral_context_set_mem_limit(spectral_context *c, size_t mem_limit) {
    if (!c) return sp_fail(SPECTRAL_ERR_INVALID_ARGUMENT, "NULL context");
    c->params.mem_limit = mem_limit;
    if (mem_limit && c->arena_size > mem_limit) {
        c->be->ops->buffer_free(c->be, c->arena_buf);
        c->arena_buf = NULL;
        c->arena_size = 0;
        c->has_output = 0; /* the token states lived there */
    }
    return SPECTRAL_OK;
}

spectral_pooling spectral_context_pooling(const spectral_context *c) { return c->pooling; }

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
    *arena = measure(c, offsets, n_docs);
    if (!*arena) return sp_fail(SPECTRAL_ERR_BACKEND, "planning failed: %s", be->err);
    *need = *arena + outside;
    if (!limit || *need <= limit) return SPECTRAL_OK;
    /* Fewer tiles in flight need less scratch: find the most that fit. */
    int lo = 1, hi = be->n_threads - 1, best = 0;
    size_t best_need = 0;
    while (lo <= hi) {
        const int mid = lo + (hi - lo) / 2;
        be->max_parallel = mid;
        const size_t m = measure(c, offsets, n_docs), n = m ? m + outside : 0;
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

/* Points the getters at document i of the last pass. */
static void show_document(spectral_context *c, int64_t i) {
    c->cur_row0 = c->offsets[i];
    c->n_tokens = c->offsets[i + 1] - c->offsets[i];
    c->embedding = c->emb + i * spectral_model_n_pooled(c->model);
    c->states_fresh = 0;
}

/* Runs n_docs already checked documents as one pass. */
static spectral_status encode_pass(spectral_context *c, const int32_t *const *tokens,
                                   const int64_t *n_tokens, int64_t n_docs) {
    const spectral_model *m = c->model;
    c->has_output = 0;
    spectral_status s = ensure_docs(c, n_docs);
    if (s) return s;
    c->offsets[0] = 0;
    for (int64_t i = 0; i < n_docs; i++) c->offsets[i + 1] = c->offsets[i] + n_tokens[i];
    size_t need = 0, arena = 0;
    s = plan(c, c->offsets, n_docs, &need, &arena);
    if (s) return s;
    char b1[32];
    if (arena > c->arena_size || (c->params.mem_limit && c->arena_size + (need - arena) > c->params.mem_limit)) {
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
    float *states = NULL, *pooled = NULL;
    int rc = run_graph(c, &a, tokens, c->offsets, n_docs, &states, &pooled);
    c->be->max_parallel = 0;
    if (rc) return sp_fail(SPECTRAL_ERR_BACKEND, "%s", c->be->err);
    if (a.used + (need - arena) > c->peak) c->peak = a.used + (need - arena);

    const int64_t E = m->info.n_embd, R = m->lexical.dims, P = E + R;
    if (c->pooling != SPECTRAL_POOLING_NONE) {
        sp_pool_op op = c->pooling == SPECTRAL_POOLING_CLS ? SP_POOL_FIRST
                        : c->pooling == SPECTRAL_POOLING_LAST ? SP_POOL_LAST
                                                              : SP_POOL_MEAN;
        for (int64_t i = 0; i < n_docs; i++) {
            float *e = c->emb + i * P;
            /* A model's pooling head gave one row: pooling it copies it to the host. */
            if (pooled ? c->be->ops->pool(c->be, pooled, 1, E, SP_POOL_FIRST, e)
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
    c->states = states;
    c->has_output = 1;
    show_document(c, 0);
    return SPECTRAL_OK;
}

/* The merging itself is in runtime/adapter.c. */
spectral_status spectral_context_set_adapters(spectral_context *c, spectral_adapter *const *adapters,
                                              const float *scales, int32_t n) {
    if (!c || n < 0 || (n > 0 && (!adapters || !scales)))
        return sp_fail(SPECTRAL_ERR_INVALID_ARGUMENT, "invalid argument to spectral_context_set_adapters");
    sp_adapter_set *set = NULL;
    if (n > 0) {
        spectral_status s =
            sp_adapter_set_build(c->model, c->be, c->w_base, c->wt_base, adapters, scales, n, &set);
        if (s) return s;
    }
    sp_adapter_set_free(c->adapters, c->be);
    c->adapters = set;
    c->w = set ? sp_adapter_set_weights(set) : c->w_base;
    c->wt = set ? sp_adapter_set_types(set) : c->wt_base;
    c->has_output = 0; /* the last outputs were made with other weights */
    return SPECTRAL_OK;
}

spectral_status spectral_encode(spectral_context *c, const int32_t *tokens, int64_t T) {
    if (!c) return sp_fail(SPECTRAL_ERR_INVALID_ARGUMENT, "NULL argument");
    c->has_output = 0;
    spectral_status s = check_document(c->model, tokens, T);
    if (s) return s;
    return encode_pass(c, &tokens, &T, 1);
}

const float *spectral_get_embedding(spectral_context *c) {
    if (!c || !c->has_output || c->pooling == SPECTRAL_POOLING_NONE) return NULL;
    return c->embedding;
}

const float *spectral_get_token_states(spectral_context *c, int64_t *n_tokens) {
    if (n_tokens) *n_tokens = 0;
    if (!c || !c->has_output) return NULL;
    if (n_tokens) *n_tokens = c->n_tokens;
    const int64_t E = c->model->info.n_embd;
    const float *rows = c->states + c->cur_row0 * E;
    if (c->be->host_memory) return rows;
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
            if (s == SPECTRAL_OK) {
                show_document(c, k - i);
            } else {
                c->has_output = 0; /* no stale output from an earlier pass */
                if (first == SPECTRAL_OK) first = s;
            }
            if (on_done && on_done(c, k, s, user_data)) return first;
        }
        i = j;
    }
    return first;
}
