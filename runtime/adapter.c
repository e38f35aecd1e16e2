/* FourierFT adapters (Hugging Face peft's FOURIERFT): loading, delta_W, and
 * the per-context merged weights. File format: docs/adapters.md.
 *
 * delta_W = Re(IFFT2(S)) * scaling, S the out x in matrix holding the
 * adapter's n real coefficients at their (row, column) locations and zero
 * elsewhere; exactly peft's get_delta_weight (torch.fft.ifft2, "backward"
 * normalisation: 1/(out*in) on the inverse).
 *
 * delta_W is materialised once, when the adapter is loaded, with one
 * in-place 2-D complex FFT (FFTW, single precision like peft's complex64),
 * and each context that sets the adapter merges W + scale * delta_W into its
 * own copy of W. Why not the direct sum over the n coefficients, or no
 * materialising at all: the direct sum costs n*out*in multiply-adds against
 * the FFT's ~5*out*in*log2(out*in) flops, so it loses from n of about 50 on
 * (docs/adapters.md has the measured times for n = 1000); and an unmerged
 * adapter would add work to every token of every document, while the merged
 * matrix costs the forward pass nothing extra. */
#define _POSIX_C_SOURCE 200809L /* stat */
#include "runtime/adapter.h"

#include <fftw3.h>
#include <math.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "formats/gguf.h"
#include "formats/quant.h"
#include "kernels/cpu/cpu_internal.h" /* sp_fft_mutex: FFTW's planner is process-wide */

#define SUFFIX_SPECTRUM ".fourierft_spectrum"
#define SUFFIX_INDICES ".fourierft_indices"

typedef struct {
    int64_t weight;    /* index in the model's weight list */
    int64_t rows, cols; /* out, in */
    float *delta;      /* rows x cols, row-major (the GGUF / torch layout of W) */
} adapter_target;

struct spectral_adapter {
    const spectral_model *model;
    char name[256];
    float scaling;
    int32_t n_targets;
    adapter_target *t;
};

struct sp_adapter_set {
    const void **w;          /* the context's weight table */
    sp_weight_type *types;   /* and the types of its entries */
    int64_t n_merged;
    int64_t *merged;   /* weight indices whose entry in w the set owns */
    float **host;      /* per merged entry that is packed: its float32 rows (packing may
                          point at them) */
};

/* ---- loading ------------------------------------------------------------ */

/* Reads a string key into buf ("" when absent); -1 when present with another type. */
static int get_str(const sp_gguf *g, const char *key, char *buf, size_t len) {
    buf[0] = 0;
    int64_t ki = sp_gguf_find_key(g, key);
    if (ki < 0) return 0;
    if (sp_gguf_kv_type(g, ki) != SP_GGUF_TYPE_STRING) return -1;
    sp_gguf_str s = sp_gguf_get_str(g, ki);
    size_t n = s.len < len - 1 ? (size_t)s.len : len - 1;
    memcpy(buf, s.ptr, n);
    buf[n] = 0;
    return 0;
}

/* Element j of an integer array key, or -1 when it is not a non-negative integer. */
static int64_t arr_int(const sp_gguf *g, int64_t ki, uint64_t j) {
    const void *p = sp_gguf_arr_data(g, ki);
    int64_t v = -1;
    switch (sp_gguf_arr_type(g, ki)) {
    case SP_GGUF_TYPE_UINT32: { uint32_t x; memcpy(&x, (const char *)p + 4 * j, 4); v = x; break; }
    case SP_GGUF_TYPE_INT32: { int32_t x; memcpy(&x, (const char *)p + 4 * j, 4); v = x; break; }
    case SP_GGUF_TYPE_UINT64: {
        uint64_t x;
        memcpy(&x, (const char *)p + 8 * j, 8);
        v = x > (uint64_t)INT64_MAX ? -1 : (int64_t)x;
        break;
    }
    case SP_GGUF_TYPE_INT64: { int64_t x; memcpy(&x, (const char *)p + 8 * j, 8); v = x; break; }
    default: break;
    }
    return v < 0 ? -1 : v;
}

static int64_t find_weight(const sp_weight_list *wl, const char *name) {
    for (int64_t i = 0; i < wl->n; i++)
        if (wl->names && wl->names[i] && !strcmp(wl->names[i], name)) return i;
    return -1;
}

/* delta = Re(IFFT2(S)) * scaling, S built from the n coefficients at
 * (rows[k], cols[k]); the locations are already checked in range and unique. */
static spectral_status materialise(adapter_target *t, const float *spec, const int32_t *rows,
                                   const int32_t *cols, int64_t n, float scaling, const char *name) {
    const int64_t R = t->rows, C = t->cols, RC = R * C;
    fftwf_complex *S = fftwf_alloc_complex((size_t)RC);
    t->delta = malloc((size_t)RC * sizeof(float));
    if (!S || !t->delta) {
        fftwf_free(S);
        return sp_fail(SPECTRAL_ERR_OUT_OF_MEMORY, "out of memory for the delta of %s", name);
    }
    /* FFTW_ESTIMATE: the plan is made without touching S and is used once. */
    pthread_mutex_lock(&sp_fft_mutex);
    fftwf_plan p = fftwf_plan_dft_2d((int)R, (int)C, S, S, FFTW_BACKWARD, FFTW_ESTIMATE);
    pthread_mutex_unlock(&sp_fft_mutex);
    if (!p) {
        fftwf_free(S);
        return sp_fail(SPECTRAL_ERR_BACKEND, "FFTW could not plan a %lld x %lld transform for %s",
                               (long long)R, (long long)C, name);
    }
    memset(S, 0, (size_t)RC * sizeof *S);
    for (int64_t k = 0; k < n; k++) S[(int64_t)rows[k] * C + cols[k]][0] = spec[k];
    fftwf_execute(p); /* unnormalised: sum S e^{+2 pi i (r p / R + c q / C)} */
    pthread_mutex_lock(&sp_fft_mutex);
    fftwf_destroy_plan(p);
    pthread_mutex_unlock(&sp_fft_mutex);
    const double f = (double)scaling / (double)RC;
    for (int64_t i = 0; i < RC; i++) t->delta[i] = (float)((double)S[i][0] * f);
    fftwf_free(S);
    if (sp_first_nonfinite(SP_TENSOR_F32, t->delta, (size_t)RC) >= 0)
        return sp_fail(SPECTRAL_ERR_FORMAT, "the delta of %s overflows float32 (adapter.fourierft.scaling %g)",
                       name, (double)scaling);
    return SPECTRAL_OK;
}

/* Checks one target's tensors and materialises its delta. */
static spectral_status load_target(const sp_gguf *g, const spectral_model *m, const char *name,
                                   int64_t rows, int64_t cols, float scaling, adapter_target *t,
                                   const char *path) {
    const sp_weight_list *wl = sp_model_weight_list(m);
    t->weight = find_weight(wl, name);
    if (t->weight < 0)
        return sp_fail(SPECTRAL_ERR_MODEL, "%s: targets tensor %s, which the %s model does not have",
                               path, name, spectral_model_arch(m));
    /* The locations were drawn for out x in: the base's matrix must be that shape. */
    int64_t ne[SP_GGUF_MAX_DIMS];
    char terr[256];
    /* the shape as the file has it, dense or stored as a sparse spectral tensor */
    const int known = sp_model_tensor_ne(sp_model_gguf(m), name, ne, terr, sizeof terr) == 0;
    if (known && (ne[2] != 1 || ne[3] != 1)) {
        char shape[96];
        const int dims = ne[3] != 1 ? 4 : 3;
        snprintf(shape, sizeof shape, "%lld, %lld, %lld", (long long)ne[0], (long long)ne[1], (long long)ne[2]);
        if (dims == 4) snprintf(shape + strlen(shape), sizeof shape - strlen(shape), ", %lld", (long long)ne[3]);
        return sp_fail(SPECTRAL_ERR_MODEL,
                       "%s: %s is a %d-D tensor [%s] (ggml order), not a weight matrix: FourierFT "
                       "adapts 2-D matrices only", path, name, dims, shape);
    }
    const int64_t b_rows = known ? ne[1] : -1, b_cols = known ? ne[0] : -1;
    if ((known && (b_rows != rows || b_cols != cols)) ||
        wl->n_elems[t->weight] != rows * cols) {
        if (known)
            return sp_fail(SPECTRAL_ERR_MODEL,
                                   "%s: made for %s of %lld x %lld (out x in), but the model's is "
                                   "%lld x %lld: not the base model this adapter was trained on",
                                   path, name, (long long)rows, (long long)cols, (long long)b_rows,
                                   (long long)b_cols);
        return sp_fail(SPECTRAL_ERR_MODEL,
                               "%s: made for %s of %lld x %lld (out x in), but the model's has %lld "
                               "values: not the base model this adapter was trained on",
                               path, name, (long long)rows, (long long)cols,
                               (long long)wl->n_elems[t->weight]);
    }
    t->rows = rows;
    t->cols = cols;
    if (rows > INT32_MAX || cols > INT32_MAX)
        return sp_fail(SPECTRAL_ERR_MODEL, "%s: %s is too large", path, name);

    char tn[512];
    snprintf(tn, sizeof tn, "%s" SUFFIX_SPECTRUM, name);
    int64_t si = sp_gguf_find_tensor(g, tn);
    snprintf(tn, sizeof tn, "%s" SUFFIX_INDICES, name);
    int64_t ii = sp_gguf_find_tensor(g, tn);
    if (si < 0 || ii < 0)
        return sp_fail(SPECTRAL_ERR_FORMAT, "%s: missing tensor %s%s", path, name,
                               si < 0 ? SUFFIX_SPECTRUM : SUFFIX_INDICES);
    const sp_gguf_tensor *ts = sp_gguf_tensor_at(g, si), *ti = sp_gguf_tensor_at(g, ii);
    const int64_t n = ts->ne[0];
    if (ts->n_dims != 1 || (ts->type != SP_TENSOR_F32 && ts->type != SP_TENSOR_F16 &&
                            ts->type != SP_TENSOR_BF16))
        return sp_fail(SPECTRAL_ERR_FORMAT, "%s: %s" SUFFIX_SPECTRUM " must be a 1-D F32, F16 or BF16 tensor",
                               path, name);
    if (n > rows * cols)
        return sp_fail(SPECTRAL_ERR_FORMAT, "%s: %s has %lld coefficients for a %lld x %lld matrix",
                               path, name, (long long)n, (long long)rows, (long long)cols);
    if (ti->type != SP_TENSOR_I32 || ti->n_dims != 2 || ti->ne[0] != n || ti->ne[1] != 2)
        return sp_fail(SPECTRAL_ERR_FORMAT,
                               "%s: %s" SUFFIX_INDICES " must be I32 of shape [%lld, 2] (rows, then "
                               "columns), like its %lld coefficients",
                               path, name, (long long)n, (long long)n);
    float *spec = malloc((size_t)n * sizeof *spec);
    int32_t *loc = malloc((size_t)n * 2 * sizeof *loc);
    unsigned char *seen = calloc((size_t)(rows * cols), 1);
    spectral_status s = SPECTRAL_OK;
    if (!spec || !loc || !seen)
        s = sp_fail(SPECTRAL_ERR_OUT_OF_MEMORY, "out of memory loading %s", path);
    if (s == SPECTRAL_OK) {
        sp_convert_to_f32(ts->type, ts->data, spec, (size_t)n);
        memcpy(loc, ti->data, (size_t)n * 2 * sizeof *loc); /* GGUF is little-endian, as we are */
    }
    for (int64_t k = 0; s == SPECTRAL_OK && k < n; k++) {
        const int32_t r = loc[k], c = loc[n + k];
        if (!isfinite(spec[k]))
            s = sp_fail(SPECTRAL_ERR_FORMAT, "%s: %s coefficient %lld is not finite", path, name,
                                (long long)k);
        else if (r < 0 || r >= rows || c < 0 || c >= cols)
            s = sp_fail(SPECTRAL_ERR_FORMAT,
                                "%s: %s location %lld is (%d, %d), outside the %lld x %lld matrix",
                                path, name, (long long)k, (int)r, (int)c, (long long)rows, (long long)cols);
        else if (seen[(int64_t)r * cols + c]++)
            s = sp_fail(SPECTRAL_ERR_FORMAT, "%s: %s location (%d, %d) appears twice", path, name,
                                (int)r, (int)c);
    }
    if (s == SPECTRAL_OK) s = materialise(t, spec, loc, loc + n, n, scaling, name);
    free(seen);
    free(loc);
    free(spec);
    return s;
}

static spectral_status load(spectral_model *m, const sp_gguf *g, const char *path, spectral_adapter *a) {
    char buf[256];
    if (get_str(g, "general.type", buf, sizeof buf) || strcmp(buf, "adapter"))
        return sp_fail(SPECTRAL_ERR_MODEL, "%s: not an adapter (general.type is '%s', not 'adapter')",
                               path, buf);
    if (get_str(g, "adapter.type", buf, sizeof buf) || strcmp(buf, "fourierft"))
        return sp_fail(SPECTRAL_ERR_MODEL, "%s: adapter.type '%s' is not supported (supported: fourierft)",
                               path, buf);
    if (get_str(g, "general.architecture", buf, sizeof buf) || strcmp(buf, spectral_model_arch(m)))
        return sp_fail(SPECTRAL_ERR_MODEL, "%s: the adapter is for architecture '%s', the model is '%s'",
                               path, buf, spectral_model_arch(m));
    if (get_str(g, "general.name", a->name, sizeof a->name)) a->name[0] = 0;
    int64_t ki = sp_gguf_find_key(g, "adapter.fourierft.scaling");
    if (ki < 0 || sp_gguf_kv_type(g, ki) != SP_GGUF_TYPE_FLOAT32 || !isfinite(sp_gguf_get_f32(g, ki)))
        return sp_fail(SPECTRAL_ERR_FORMAT, "%s: adapter.fourierft.scaling must be a finite f32", path);
    a->scaling = sp_gguf_get_f32(g, ki);
    int64_t kt = sp_gguf_find_key(g, "adapter.fourierft.targets");
    int64_t ks = sp_gguf_find_key(g, "adapter.fourierft.shapes");
    if (kt < 0 || sp_gguf_kv_type(g, kt) != SP_GGUF_TYPE_ARRAY ||
        sp_gguf_arr_type(g, kt) != SP_GGUF_TYPE_STRING)
        return sp_fail(SPECTRAL_ERR_FORMAT, "%s: adapter.fourierft.targets must be an array of strings", path);
    const uint64_t nt = sp_gguf_arr_n(g, kt);
    if (nt == 0 || nt > 1u << 20)
        return sp_fail(SPECTRAL_ERR_FORMAT, "%s: adapter.fourierft.targets has %llu entries", path,
                               (unsigned long long)nt);
    if (ks < 0 || sp_gguf_kv_type(g, ks) != SP_GGUF_TYPE_ARRAY || sp_gguf_arr_n(g, ks) != 2 * nt)
        return sp_fail(SPECTRAL_ERR_FORMAT,
                               "%s: adapter.fourierft.shapes must be an integer array of 2 x %llu "
                               "(out, in per target)", path, (unsigned long long)nt);
    if ((uint64_t)sp_gguf_n_tensors(g) != 2 * nt)
        return sp_fail(SPECTRAL_ERR_FORMAT,
                               "%s: %lld tensors for %llu targets (expected a spectrum and indices each)",
                               path, (long long)sp_gguf_n_tensors(g), (unsigned long long)nt);
    a->t = calloc(nt, sizeof *a->t);
    if (!a->t) return sp_fail(SPECTRAL_ERR_OUT_OF_MEMORY, "out of memory loading %s", path);
    for (uint64_t j = 0; j < nt; j++) {
        sp_gguf_str s = sp_gguf_arr_str(g, kt, j);
        char name[256];
        if (s.len == 0 || s.len >= sizeof name || memchr(s.ptr, 0, s.len))
            return sp_fail(SPECTRAL_ERR_FORMAT, "%s: adapter.fourierft.targets[%llu] is not a tensor name",
                                   path, (unsigned long long)j);
        memcpy(name, s.ptr, s.len);
        name[s.len] = 0;
        for (uint64_t i = 0; i < j; i++)
            if (a->t[i].weight >= 0 && !strcmp(sp_model_weight_list(m)->names[a->t[i].weight], name))
                return sp_fail(SPECTRAL_ERR_FORMAT, "%s: target %s is listed twice", path, name);
        const int64_t rows = arr_int(g, ks, 2 * j), cols = arr_int(g, ks, 2 * j + 1);
        if (rows <= 0 || cols <= 0)
            return sp_fail(SPECTRAL_ERR_FORMAT, "%s: adapter.fourierft.shapes for %s must be positive integers",
                                   path, name);
        spectral_status st = load_target(g, m, name, rows, cols, a->scaling, &a->t[j], path);
        a->n_targets = (int32_t)(j + 1); /* freed with the adapter, failed or not */
        if (st) return st;
    }
    return SPECTRAL_OK;
}

spectral_status spectral_adapter_load(spectral_model *m, const char *path, spectral_adapter **out) {
    if (!m || !path || !out) return sp_fail(SPECTRAL_ERR_INVALID_ARGUMENT, "NULL argument");
    *out = NULL;
    struct stat st;
    if (stat(path, &st) != 0 || !S_ISREG(st.st_mode))
        return sp_fail(SPECTRAL_ERR_IO, "cannot open adapter %s: %s", path,
                               stat(path, &st) != 0 ? "no such file or not readable" : "not a regular file");
    char err[512] = "";
    sp_gguf *g = NULL;
    if (sp_gguf_open(path, &g, err, sizeof err))
        return sp_fail(SPECTRAL_ERR_FORMAT, "%s: %s", path, err);
    spectral_adapter *a = calloc(1, sizeof *a);
    spectral_status s = a ? load(m, g, path, a)
                          : sp_fail(SPECTRAL_ERR_OUT_OF_MEMORY, "out of memory");
    sp_gguf_close(g); /* everything needed is copied: the file may go away */
    if (s != SPECTRAL_OK) {
        spectral_adapter_free(a);
        return s;
    }
    a->model = m;
    *out = a;
    return SPECTRAL_OK;
}

void spectral_adapter_free(spectral_adapter *a) {
    if (!a) return;
    for (int32_t i = 0; i < a->n_targets; i++) free(a->t[i].delta);
    free(a->t);
    free(a);
}

int32_t spectral_adapter_n_targets(const spectral_adapter *a) { return a ? a->n_targets : 0; }

const char *spectral_adapter_name(const spectral_adapter *a) { return a ? a->name : ""; }

const float *sp_adapter_delta(const spectral_adapter *a, int32_t i, const char **target,
                              int64_t *rows, int64_t *cols) {
    if (!a || i < 0 || i >= a->n_targets) return NULL;
    *target = sp_model_weight_list(a->model)->names[a->t[i].weight];
    *rows = a->t[i].rows;
    *cols = a->t[i].cols;
    return a->t[i].delta;
}

/* ---- per-context sets ---------------------------------------------------- */

void sp_adapter_set_free(sp_adapter_set *set, sp_backend *be) {
    if (!set) return;
    for (int64_t i = 0; i < set->n_merged; i++) {
        void *p = (void *)set->w[set->merged[i]];
        if (set->types[set->merged[i]] == SP_WEIGHT_PACKED) be->ops->packed_free(be, p);
        else if (be->host_memory) free(p);
        else be->ops->buffer_free(be, p);
        free(set->host[i]);
    }
    free(set->host);
    free(set->merged);
    free(set->w);
    free(set->types);
    free(set);
}

const void *const *sp_adapter_set_weights(const sp_adapter_set *set) { return set->w; }
const sp_weight_type *sp_adapter_set_types(const sp_adapter_set *set) { return set->types; }

spectral_status sp_adapter_set_build(const spectral_model *m, sp_backend *be,
                                     const void *const *base_w, const sp_weight_type *base_wt,
                                     sp_compute compute, spectral_adapter *const *adapters,
                                     const float *scales, int32_t n, sp_adapter_set **out) {
    *out = NULL;
    const sp_weight_list *wl = sp_model_weight_list(m);
    for (int32_t i = 0; i < n; i++) {
        if (!adapters[i]) return sp_fail(SPECTRAL_ERR_INVALID_ARGUMENT, "adapter %d is NULL", (int)i);
        if (adapters[i]->model != m)
            return sp_fail(SPECTRAL_ERR_INVALID_ARGUMENT,
                                   "adapter %d was loaded for another model than this context's", (int)i);
        if (!isfinite(scales[i]))
            return sp_fail(SPECTRAL_ERR_INVALID_ARGUMENT, "adapter %d has a non-finite scale", (int)i);
    }
    sp_adapter_set *set = calloc(1, sizeof *set);
    if (set) set->w = malloc((size_t)wl->n * sizeof *set->w);
    if (set && set->w) set->merged = malloc((size_t)wl->n * sizeof *set->merged);
    if (set && set->merged) set->types = malloc((size_t)wl->n * sizeof *set->types);
    if (set && set->types) set->host = calloc((size_t)wl->n + 1, sizeof *set->host);
    if (!set || !set->w || !set->merged || !set->types || !set->host) {
        if (set) {
            free(set->w);
            free(set->merged);
            free(set->types);
        }
        free(set);
        return sp_fail(SPECTRAL_ERR_OUT_OF_MEMORY, "out of memory");
    }
    memcpy(set->w, base_w, (size_t)wl->n * sizeof *set->w);
    memcpy(set->types, base_wt, (size_t)wl->n * sizeof *set->types);
    spectral_status s = SPECTRAL_OK;
    float *host = NULL;
    /* One weight at a time: every adapter's delta for it, summed in the order given. */
    for (int64_t wi = 0; wi < wl->n && s == SPECTRAL_OK; wi++) {
        int targeted = 0;
        for (int32_t i = 0; i < n && !targeted; i++)
            for (int32_t j = 0; j < adapters[i]->n_targets && !targeted; j++)
                targeted = adapters[i]->t[j].weight == wi;
        if (!targeted) continue;
        const int64_t ne = wl->n_elems[wi];
        const size_t bytes = (size_t)ne * sizeof(float);
        host = malloc(bytes);
        if (!host) {
            s = sp_fail(SPECTRAL_ERR_OUT_OF_MEMORY, "out of memory merging %s", wl->names[wi]);
            break;
        }
        /* the model's host copy: float32, or Q8_0/Q4_0 blocks decoded to the
         * same floats the forward pass would use, so a merged quantized
         * target is W_dequantized + delta_W, in float32 */
        if (wl->types[wi] == SP_WEIGHT_F32)
            memcpy(host, wl->data[wi], bytes);
        else
            sp_dequantize_row(wl->types[wi] == SP_WEIGHT_Q8_0 ? SP_TENSOR_Q8_0 : SP_TENSOR_Q4_0,
                              wl->data[wi], host, ne);
        for (int32_t i = 0; i < n; i++)
            for (int32_t j = 0; j < adapters[i]->n_targets; j++) {
                if (adapters[i]->t[j].weight != wi) continue;
                const float *d = adapters[i]->t[j].delta, sc = scales[i];
                /* scale 1 gives exactly peft's merge, W += delta_W in float32 */
                for (int64_t e = 0; e < ne; e++) host[e] += sc * d[e];
            }
        if (sp_first_nonfinite(SP_TENSOR_F32, host, (size_t)ne) >= 0) {
            s = sp_fail(SPECTRAL_ERR_INVALID_ARGUMENT,
                        "the merged %s overflows float32: an adapter's scale is too large", wl->names[wi]);
            break;
        }
        void *dst = host;
        if (!be->host_memory) {
            dst = be->ops->buffer_alloc(be, bytes);
            if (!dst || be->ops->upload(be, dst, host, bytes)) {
                if (dst) be->ops->buffer_free(be, dst);
                s = sp_fail(SPECTRAL_ERR_BACKEND, "uploading the merged %s: %s", wl->names[wi], be->err);
                break;
            }
            /* the backend may still read host until it synchronises */
        }
        if (base_wt[wi] == SP_WEIGHT_PACKED) {
            /* packed like the matrix it replaces, so the context's kernels run it */
            const int64_t rows = wl->gemm_rows[wi];
            sp_packed *pw = rows > 0 ? be->ops->pack_weight(be, SP_WEIGHT_F32, host, rows, ne / rows, compute) : NULL;
            if (!pw) {
                s = sp_fail(SPECTRAL_ERR_BACKEND, "packing the merged %s: %s", wl->names[wi], be->err);
                break;
            }
            set->host[set->n_merged] = host;
            dst = pw;
        }
        set->w[wi] = dst;
        set->types[wi] = base_wt[wi] == SP_WEIGHT_PACKED ? SP_WEIGHT_PACKED : SP_WEIGHT_F32;
        set->merged[set->n_merged++] = wi;
        if (!be->host_memory) {
            if (be->ops->synchronize(be))
                s = sp_fail(SPECTRAL_ERR_BACKEND, "uploading the merged %s: %s", wl->names[wi], be->err);
            free(host);
        }
        host = NULL;
    }
    free(host);
    if (s != SPECTRAL_OK) {
        sp_adapter_set_free(set, be);
        return s;
    }
    *out = set;
    return SPECTRAL_OK;
}
