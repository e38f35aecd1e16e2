/* Sparse spectral tensors: top-k 2-D real FFT coefficients (see codec_sst.h
 * for the format). Double precision throughout the transforms, so the codec
 * adds no error of its own beyond the coefficients it drops (and the F16
 * rounding of the kept ones, when stored as F16). */
#include "formats/codec_sst.h"

#include <fftw3.h>
#include <limits.h>
#include <math.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Upper bound on a dense sst tensor: a few hundred bytes of file can name any
 * shape, so the decoder refuses shapes whose buffers (a float result and two
 * double-precision FFT arrays, about 20 bytes per element: 670 MB here) a
 * hostile file should not be able to demand. 2^25 elements is 4x the default
 * model's largest matrix (its 30522 x 256 token embedding). */
#define SP_SST_MAX_ELEMS ((int64_t)1 << 25)

static pthread_mutex_t sst_plan_mutex = PTHREAD_MUTEX_INITIALIZER;

int64_t sp_sst_half_len(int64_t M, int64_t N) {
    if (M <= 0 || N <= 0 || M > INT64_MAX / (N / 2 + 1)) return -1;
    return M * (N / 2 + 1);
}

/* Columns whose bins pair up with bins of the same column (r with M - r). */
static int selfconj_col(int64_t c, int64_t N) { return c == 0 || (N % 2 == 0 && c == N / 2); }
/* Bins that are their own conjugate: real for a real matrix. */
static int selfconj_bin(int64_t r, int64_t c, int64_t M, int64_t N) {
    return selfconj_col(c, N) && (r == 0 || 2 * r == M);
}

int64_t sp_sst_n_storable(int64_t M, int64_t N) {
    const int64_t half = sp_sst_half_len(M, N);
    if (half < 0) return -1;
    const int64_t n_sc = N % 2 == 0 && N > 1 ? 2 : 1; /* self-conjugate columns */
    return half - n_sc * (M - (M / 2 + 1));
}

static int check_shape(int64_t M, int64_t N, char *err, size_t err_len) {
    const int64_t half = sp_sst_half_len(M, N);
    if (half < 0 || M > INT_MAX || N > INT_MAX || half > INT32_MAX) {
        sp_set_err(err, err_len, "sst: shape %lld x %lld is out of range (the half spectrum must fit int32 indices)",
                (long long)M, (long long)N);
        return -1;
    }
    if (M > SP_SST_MAX_ELEMS / N) {
        sp_set_err(err, err_len, "sst: shape %lld x %lld has more than %lld elements", (long long)M,
                (long long)N, (long long)SP_SST_MAX_ELEMS);
        return -1;
    }
    return 0;
}

typedef struct {
    double e;
    int32_t idx;
} cand;

static int cmp_cand(const void *a, const void *b) {
    const cand *x = a, *y = b;
    if (x->e != y->e) return x->e > y->e ? -1 : 1;
    return x->idx < y->idx ? -1 : x->idx > y->idx ? 1 : 0;
}

static int cmp_i32(const void *a, const void *b) {
    const int32_t x = *(const int32_t *)a, y = *(const int32_t *)b;
    return x < y ? -1 : x > y ? 1 : 0;
}

int sp_sst_encode(const float *w, int64_t M, int64_t N, int64_t k, float *values, int32_t *index,
                  char *err, size_t err_len) {
    if (check_shape(M, N, err, err_len)) return -1;
    const int64_t Nh = N / 2 + 1, half = M * Nh, storable = sp_sst_n_storable(M, N);
    if (k < 1 || k > storable) {
        sp_set_err(err, err_len, "sst: k = %lld is outside [1, %lld] for a %lld x %lld matrix",
                (long long)k, (long long)storable, (long long)M, (long long)N);
        return -1;
    }
    for (int64_t i = 0; i < M * N; i++) {
        if (!isfinite(w[i])) {
            sp_set_err(err, err_len, "sst: the matrix has a non-finite value at element %lld", (long long)i);
            return -1;
        }
    }
    double *in = fftw_malloc((size_t)(M * N) * sizeof *in);
    fftw_complex *X = fftw_malloc((size_t)half * sizeof *X);
    cand *cs = malloc((size_t)storable * sizeof *cs);
    if (!in || !X || !cs) {
        fftw_free(in);
        fftw_free(X);
        free(cs);
        sp_set_err(err, err_len, "sst: out of memory for a %lld x %lld matrix", (long long)M, (long long)N);
        return -1;
    }
    pthread_mutex_lock(&sst_plan_mutex);
    fftw_plan p = fftw_plan_dft_r2c_2d((int)M, (int)N, in, X, FFTW_ESTIMATE);
    pthread_mutex_unlock(&sst_plan_mutex);
    if (!p) {
        fftw_free(in);
        fftw_free(X);
        free(cs);
        sp_set_err(err, err_len, "sst: FFTW could not plan a %lld x %lld transform", (long long)M, (long long)N);
        return -1;
    }
    for (int64_t i = 0; i < M * N; i++) in[i] = w[i];
    fftw_execute(p);
    pthread_mutex_lock(&sst_plan_mutex);
    fftw_destroy_plan(p);
    pthread_mutex_unlock(&sst_plan_mutex);
    /* Parseval with norm="ortho": ||W||^2 = sum over storable bins of
     * mult * |X|^2, so dropping the smallest mult * |X|^2 is optimal. */
    int64_t n = 0;
    for (int64_t r = 0; r < M; r++) {
        for (int64_t c = 0; c < Nh; c++) {
            if (selfconj_col(c, N) && 2 * r > M) continue; /* implied by bin M - r */
            const double *x = X[r * Nh + c];
            const double mult = selfconj_bin(r, c, M, N) ? 1.0 : 2.0;
            cs[n].e = mult * (x[0] * x[0] + x[1] * x[1]);
            cs[n].idx = (int32_t)(r * Nh + c);
            n++;
        }
    }
    qsort(cs, (size_t)n, sizeof *cs, cmp_cand);
    for (int64_t j = 0; j < k; j++) index[j] = cs[j].idx;
    qsort(index, (size_t)k, sizeof *index, cmp_i32);
    const double scale = 1.0 / sqrt((double)M * (double)N);
    for (int64_t j = 0; j < k; j++) {
        const int64_t r = index[j] / Nh, c = index[j] % Nh;
        values[2 * j] = (float)(X[index[j]][0] * scale);
        values[2 * j + 1] = selfconj_bin(r, c, M, N) ? 0.0f : (float)(X[index[j]][1] * scale);
    }
    fftw_free(in);
    fftw_free(X);
    free(cs);
    return 0;
}

int sp_sst_check_index(const int32_t *index, int64_t k, int64_t M, int64_t N, char *err,
                       size_t err_len) {
    if (check_shape(M, N, err, err_len)) return -1;
    const int64_t Nh = N / 2 + 1, half = M * Nh;
    for (int64_t j = 0; j < k; j++) {
        const int64_t v = index[j];
        if (v < 0 || v >= half) {
            sp_set_err(err, err_len, "sst: index %lld at position %lld is outside [0, %lld) for a %lld x %lld matrix",
                    (long long)v, (long long)j, (long long)half, (long long)M, (long long)N);
            return -1;
        }
        if (j > 0 && v == index[j - 1]) {
            sp_set_err(err, err_len, "sst: duplicate index %lld at positions %lld and %lld", (long long)v,
                    (long long)(j - 1), (long long)j);
            return -1;
        }
        if (j > 0 && v < index[j - 1]) {
            sp_set_err(err, err_len, "sst: indices are not increasing (%lld after %lld at position %lld)",
                    (long long)v, (long long)index[j - 1], (long long)j);
            return -1;
        }
        const int64_t r = v / Nh, c = v % Nh;
        if (selfconj_col(c, N) && 2 * r > M) {
            sp_set_err(err, err_len,
                    "sst: index %lld (row %lld, column %lld) is the implied conjugate of row %lld and must not be stored",
                    (long long)v, (long long)r, (long long)c, (long long)(M - r));
            return -1;
        }
    }
    return 0;
}

int sp_sst_decode(const float *values, const int32_t *index, int64_t k, int64_t M, int64_t N,
                  float *out, char *err, size_t err_len) {
    if (sp_sst_check_index(index, k, M, N, err, err_len)) return -1;
    for (int64_t j = 0; j < 2 * k; j++) {
        if (!isfinite(values[j])) {
            sp_set_err(err, err_len, "sst: coefficient %lld is not finite", (long long)(j / 2));
            return -1;
        }
    }
    const int64_t Nh = N / 2 + 1, half = M * Nh;
    fftw_complex *X = fftw_malloc((size_t)half * sizeof *X);
    double *o = fftw_malloc((size_t)(M * N) * sizeof *o);
    if (!X || !o) {
        fftw_free(X);
        fftw_free(o);
        sp_set_err(err, err_len, "sst: out of memory for a %lld x %lld matrix", (long long)M, (long long)N);
        return -1;
    }
    pthread_mutex_lock(&sst_plan_mutex);
    fftw_plan p = fftw_plan_dft_c2r_2d((int)M, (int)N, X, o, FFTW_ESTIMATE);
    pthread_mutex_unlock(&sst_plan_mutex);
    if (!p) {
        fftw_free(X);
        fftw_free(o);
        sp_set_err(err, err_len, "sst: FFTW could not plan a %lld x %lld transform", (long long)M, (long long)N);
        return -1;
    }
    memset(X, 0, (size_t)half * sizeof *X);
    for (int64_t j = 0; j < k; j++) {
        const int64_t r = index[j] / Nh, c = index[j] % Nh;
        X[index[j]][0] = values[2 * j];
        X[index[j]][1] = selfconj_bin(r, c, M, N) ? 0.0 : values[2 * j + 1];
        if (selfconj_col(c, N) && !selfconj_bin(r, c, M, N)) { /* the implied partner */
            X[(M - r) * Nh + c][0] = values[2 * j];
            X[(M - r) * Nh + c][1] = -(double)values[2 * j + 1];
        }
    }
    fftw_execute(p); /* unnormalized inverse: scale by 1/sqrt(MN) for "ortho" */
    pthread_mutex_lock(&sst_plan_mutex);
    fftw_destroy_plan(p);
    pthread_mutex_unlock(&sst_plan_mutex);
    const double scale = 1.0 / sqrt((double)M * (double)N);
    for (int64_t i = 0; i < M * N; i++) out[i] = (float)(o[i] * scale);
    fftw_free(X);
    fftw_free(o);
    return 0;
}

/* ---- GGUF glue ---- */

static int read_shape_key(const sp_gguf *g, int64_t ki, const char *key, int64_t ne[2], char *err,
                          size_t err_len) {
    const sp_gguf_type at = sp_gguf_arr_type(g, ki);
    if (sp_gguf_kv_type(g, ki) != SP_GGUF_TYPE_ARRAY ||
        (at != SP_GGUF_TYPE_UINT64 && at != SP_GGUF_TYPE_UINT32) || sp_gguf_arr_n(g, ki) != 2) {
        sp_set_err(err, err_len, "key %s must be an array of two u64 (or u32): the dense shape [ne0, ne1]", key);
        return -1;
    }
    const uint8_t *p = sp_gguf_arr_data(g, ki);
    for (int d = 0; d < 2; d++) {
        uint64_t v = 0;
        const int w = at == SP_GGUF_TYPE_UINT64 ? 8 : 4;
        for (int b = w - 1; b >= 0; b--) v = (v << 8) | p[d * w + b];
        if (v == 0 || v > (uint64_t)INT_MAX) {
            sp_set_err(err, err_len, "key %s: dimension %d = %llu is out of range", key, d, (unsigned long long)v);
            return -1;
        }
        ne[d] = (int64_t)v;
    }
    return 0;
}

static void read_index(const sp_gguf_tensor *t, int64_t k, int32_t *out) {
    const uint8_t *p = t->data;
    for (int64_t j = 0; j < k; j++)
        out[j] = (int32_t)((uint32_t)p[4 * j] | ((uint32_t)p[4 * j + 1] << 8) |
                           ((uint32_t)p[4 * j + 2] << 16) | ((uint32_t)p[4 * j + 3] << 24));
}

int sp_sst_find(const sp_gguf *g, const char *name, sp_sst_ref *ref, char *err, size_t err_len) {
    char vn[256], in[256], kn[256];
    if (snprintf(vn, sizeof vn, "%s%s", name, SP_SST_VALUES_SUFFIX) >= (int)sizeof vn ||
        snprintf(in, sizeof in, "%s%s", name, SP_SST_INDEX_SUFFIX) >= (int)sizeof in ||
        snprintf(kn, sizeof kn, "%s%s", name, SP_SST_SHAPE_SUFFIX) >= (int)sizeof kn) {
        sp_set_err(err, err_len, "tensor name %.64s... is too long", name);
        return -1;
    }
    const int64_t vi = sp_gguf_find_tensor(g, vn), ii = sp_gguf_find_tensor(g, in);
    const int64_t ki = sp_gguf_find_key(g, kn);
    if (vi < 0 && ii < 0 && ki < 0) return 1;
    if (vi < 0 || ii < 0 || ki < 0) {
        sp_set_err(err, err_len, "incomplete sparse spectral tensor %s: it needs tensors %s, %s and key %s",
                name, vn, in, kn);
        return -1;
    }
    memset(ref, 0, sizeof *ref);
    if (read_shape_key(g, ki, kn, ref->ne, err, err_len)) return -1;
    const sp_gguf_tensor *v = sp_gguf_tensor_at(g, vi), *x = sp_gguf_tensor_at(g, ii);
    if ((v->type != SP_TENSOR_F32 && v->type != SP_TENSOR_F16) || v->n_dims != 2 || v->ne[0] != 2) {
        sp_set_err(err, err_len, "tensor %s must be F32 or F16 with shape [2, k] ((re, im) pairs)", vn);
        return -1;
    }
    const int64_t k = v->ne[1];
    if (x->type != SP_TENSOR_I32 || x->n_dims != 1 || x->ne[0] != k) {
        sp_set_err(err, err_len, "tensor %s must be I32 with shape [%lld] (one index per value in %s)", in,
                (long long)k, vn);
        return -1;
    }
    const int64_t M = ref->ne[1], N = ref->ne[0];
    if (check_shape(M, N, err, err_len)) return -1;
    if (k > sp_sst_n_storable(M, N)) {
        sp_set_err(err, err_len, "%s has %lld coefficients, more than the %lld a %lld x %lld matrix has", vn,
                (long long)k, (long long)sp_sst_n_storable(M, N), (long long)M, (long long)N);
        return -1;
    }
    int32_t *idx = malloc((size_t)k * sizeof *idx);
    if (!idx) {
        sp_set_err(err, err_len, "out of memory reading %s", in);
        return -1;
    }
    read_index(x, k, idx);
    char e2[384];
    const int bad = sp_sst_check_index(idx, k, M, N, e2, sizeof e2);
    free(idx);
    if (bad) {
        sp_set_err(err, err_len, "%s: %s", in, e2);
        return -1;
    }
    ref->values = v;
    ref->index = x;
    ref->k = k;
    return 0;
}

int sp_sst_decode_ref(const sp_sst_ref *ref, float *out, char *err, size_t err_len) {
    const int64_t k = ref->k;
    float *val = malloc((size_t)(2 * k) * sizeof *val);
    int32_t *idx = malloc((size_t)k * sizeof *idx);
    if (!val || !idx) {
        free(val);
        free(idx);
        sp_set_err(err, err_len, "out of memory decoding %s", ref->values->name);
        return -1;
    }
    sp_convert_to_f32(ref->values->type, ref->values->data, val, (size_t)(2 * k));
    read_index(ref->index, k, idx);
    char e2[384];
    const int rc = sp_sst_decode(val, idx, k, ref->ne[1], ref->ne[0], out, e2, sizeof e2);
    if (rc) sp_set_err(err, err_len, "%s: %s", ref->values->name, e2);
    free(val);
    free(idx);
    return rc;
}
