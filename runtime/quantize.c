/* spectral_model_quantize: a GGUF model in, a copy with compressed weights
 * out. The codecs live in formats/ (quant.c: ggml blocks; codec_sst.c:
 * sparse spectral tensors); this file selects tensors, measures each one's
 * reconstruction error and writes the file. */
#define _POSIX_C_SOURCE 200809L

#include <math.h>
#include <regex.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "formats/codec_sst.h"
#include "formats/file_replace.h"
#include "formats/gguf.h"
#include "formats/quant.h"
#include "runtime/internal.h"
#include "spectral.h"

spectral_quantize_params spectral_quantize_default_params(void) {
    spectral_quantize_params p;
    memset(&p, 0, sizeof p);
    p.type = SPECTRAL_QUANT_Q8_0;
    p.keep = 0.1;
    return p;
}

static const char *quant_name(spectral_quant_type t) {
    switch (t) {
    case SPECTRAL_QUANT_F32: return "f32";
    case SPECTRAL_QUANT_F16: return "f16";
    case SPECTRAL_QUANT_Q4_0: return "q4_0";
    case SPECTRAL_QUANT_Q8_0: return "q8_0";
    case SPECTRAL_QUANT_SST: return "sst";
    }
    return NULL;
}

static int ends_with(const char *s, const char *suffix) {
    const size_t n = strlen(s), m = strlen(suffix);
    return n >= m && strcmp(s + n - m, suffix) == 0;
}

/* The default set: weight matrices that multiply activations. Embedding
 * tables are gathered row by row, and their error lands on every token
 * unaveraged, so they are left alone unless a regex asks for them; so are
 * M2-BERT's implicit filters (blk.N.hyena*): small Sin MLPs whose errors
 * grow about tenfold a layer (F16 weights there changed a test model's
 * output by 160%). */
static int default_selected(const sp_gguf_tensor *t) {
    if (t->n_dims != 2 || !ends_with(t->name, ".weight") || strstr(t->name, ".hyena")) return 0;
    return strcmp(t->name, "token_embd.weight") != 0 && strcmp(t->name, "position_embd.weight") != 0 &&
           strcmp(t->name, "token_types.weight") != 0;
}

static int is_sst_part(const char *name) {
    return ends_with(name, SP_SST_VALUES_SUFFIX) || ends_with(name, SP_SST_INDEX_SUFFIX);
}

/* Why t cannot take type q, or NULL. */
static const char *unfit(const sp_gguf_tensor *t, spectral_quant_type q) {
    if (t->type != SP_TENSOR_F32 && t->type != SP_TENSOR_F16 && t->type != SP_TENSOR_BF16 &&
        t->type != SP_TENSOR_Q8_0 && t->type != SP_TENSOR_Q4_0)
        return "its type holds no weights";
    if ((q == SPECTRAL_QUANT_Q8_0 || q == SPECTRAL_QUANT_Q4_0) && t->ne[0] % SP_QK != 0)
        return "ne[0] is not a multiple of 32 (the block size)";
    if (q == SPECTRAL_QUANT_SST && t->n_dims != 2) return "sst stores 2-D matrices only";
    if (q == SPECTRAL_QUANT_SST && sp_sst_half_len(t->ne[1], t->ne[0]) > INT32_MAX)
        return "its half spectrum is too large for int32 indices";
    return NULL;
}

static double rel_error(const float *a, const float *b, int64_t n) {
    double num = 0.0, den = 0.0;
    for (int64_t i = 0; i < n; i++) {
        const double d = (double)a[i] - (double)b[i];
        num += d * d;
        den += (double)a[i] * (double)a[i];
    }
    return den > 0.0 ? sqrt(num / den) : (num > 0.0 ? INFINITY : 0.0);
}

typedef struct {
    sp_gguf_writer *w;
    const spectral_quantize_params *p;
    char err[512];
} qjob;

/* Compresses tensor t (already float32 in x) into the writer. */
static spectral_status encode_tensor(qjob *j, const sp_gguf_tensor *t, const float *x, int64_t n,
                                     spectral_quantize_report *rep) {
    const spectral_quant_type q = j->p->type;
    spectral_status s = SPECTRAL_OK;
    float *back = malloc((size_t)n * sizeof *back);
    void *buf = NULL;
    float *val = NULL;
    int32_t *idx = NULL;
    if (!back) return sp_fail(SPECTRAL_ERR_OUT_OF_MEMORY, "out of memory quantizing %s", t->name);
    if (q == SPECTRAL_QUANT_SST) {
        const int64_t M = t->ne[1], N = t->ne[0], storable = sp_sst_n_storable(M, N);
        int64_t k = (int64_t)llround(j->p->keep * (double)storable);
        k = k < 1 ? 1 : k > storable ? storable : k;
        val = malloc((size_t)(2 * k) * sizeof *val);
        idx = malloc((size_t)k * sizeof *idx);
        if (!val || !idx) {
            s = sp_fail(SPECTRAL_ERR_OUT_OF_MEMORY, "out of memory quantizing %s", t->name);
            goto done;
        }
        if (sp_sst_encode(x, M, N, k, val, idx, j->err, sizeof j->err)) {
            s = sp_fail(SPECTRAL_ERR_INVALID_ARGUMENT, "%s: %s", t->name, j->err);
            goto done;
        }
        /* F16 values halve the size; F32 when a coefficient would overflow it */
        int vtype = SP_TENSOR_F16;
        for (int64_t i = 0; i < 2 * k; i++)
            if (fabsf(val[i]) > 65504.0f) vtype = SP_TENSOR_F32;
        if (vtype == SP_TENSOR_F16) {
            uint16_t *h = malloc((size_t)(2 * k) * sizeof *h);
            if (!h) {
                s = sp_fail(SPECTRAL_ERR_OUT_OF_MEMORY, "out of memory quantizing %s", t->name);
                goto done;
            }
            for (int64_t i = 0; i < 2 * k; i++) {
                h[i] = sp_f32_to_fp16(val[i]);
                val[i] = sp_fp16_to_f32(h[i]); /* what a reader will see */
            }
            buf = h;
        }
        char vn[300], in[300], kn[300];
        snprintf(vn, sizeof vn, "%s%s", t->name, SP_SST_VALUES_SUFFIX);
        snprintf(in, sizeof in, "%s%s", t->name, SP_SST_INDEX_SUFFIX);
        snprintf(kn, sizeof kn, "%s%s", t->name, SP_SST_SHAPE_SUFFIX);
        const int64_t vne[2] = {2, k}, ine[1] = {k};
        const uint64_t shape[2] = {(uint64_t)N, (uint64_t)M};
        if (sp_gguf_writer_add_tensor(j->w, vn, vtype, 2, vne, buf ? buf : (void *)val) ||
            sp_gguf_writer_add_tensor(j->w, in, SP_TENSOR_I32, 1, ine, idx) ||
            sp_gguf_writer_set_arr(j->w, kn, SP_GGUF_TYPE_UINT64, shape, 2)) {
            s = sp_fail(SPECTRAL_ERR_INVALID_ARGUMENT,
                      "cannot add %s as a sparse spectral tensor (a tensor or key of that name exists)", t->name);
            goto done;
        }
        if (sp_sst_decode(val, idx, k, M, N, back, j->err, sizeof j->err)) {
            s = sp_fail(SPECTRAL_ERR_INVALID_ARGUMENT, "%s: %s", t->name, j->err);
            goto done;
        }
        rep->bytes_out = (uint64_t)k * (vtype == SP_TENSOR_F16 ? 4 : 8) + (uint64_t)k * 4;
    } else {
        const int type = (int)q; /* the enum follows ggml_type */
        const size_t bytes = (size_t)(n / sp_tensor_block_size(type)) * sp_tensor_block_bytes(type);
        buf = malloc(bytes ? bytes : 1);
        if (!buf) {
            s = sp_fail(SPECTRAL_ERR_OUT_OF_MEMORY, "out of memory quantizing %s", t->name);
            goto done;
        }
        if (q == SPECTRAL_QUANT_Q8_0 || q == SPECTRAL_QUANT_Q4_0) {
            sp_quantize_row(type, x, buf, n);
        } else if (q == SPECTRAL_QUANT_F16) {
            uint8_t *b = buf;
            for (int64_t i = 0; i < n; i++) {
                const uint16_t h = sp_f32_to_fp16(x[i]);
                b[2 * i] = (uint8_t)(h & 0xff);
                b[2 * i + 1] = (uint8_t)(h >> 8);
            }
        } else {
            memcpy(buf, x, bytes); /* F32: hosts are little-endian, as GGUF */
        }
        if (sp_gguf_writer_add_tensor(j->w, t->name, type, t->n_dims, t->ne, buf)) {
            s = sp_fail(SPECTRAL_ERR_OUT_OF_MEMORY, "out of memory adding %s", t->name);
            goto done;
        }
        sp_convert_to_f32(type, buf, back, (size_t)n);
        rep->bytes_out = bytes;
    }
    rep->rel_error = rel_error(x, back, n);
done:
    free(back);
    free(buf);
    free(val);
    free(idx);
    return s;
}

static spectral_status quantize(qjob *j, const sp_gguf *g, const regex_t *re) {
    const spectral_quant_type q = j->p->type;
    int any_block = 0;
    for (int64_t i = 0; i < sp_gguf_n_tensors(g); i++) {
        const sp_gguf_tensor *t = sp_gguf_tensor_at(g, i);
        spectral_quantize_report rep = {t->name, sp_tensor_type_name(t->type), sp_tensor_type_name(t->type),
                                        1, t->nbytes, t->nbytes, 0.0, NULL};
        for (uint32_t d = 0; d < t->n_dims; d++) rep.n_elements *= t->ne[d];
        int sel = !is_sst_part(t->name) && (re ? regexec(re, t->name, 0, NULL, 0) == 0 : default_selected(t));
        const char *why = sel ? unfit(t, q) : NULL;
        if (why && re)
            return sp_fail(SPECTRAL_ERR_INVALID_ARGUMENT, "tensor %s cannot be stored as %s: %s", t->name,
                         quant_name(q), why);
        if (why) {
            rep.note = why;
            sel = 0;
        } else if (!sel) {
            rep.note = "not selected";
        }
        if (!sel) {
            if (sp_gguf_writer_add_tensor(j->w, t->name, t->type, t->n_dims, t->ne, t->data))
                return sp_fail(SPECTRAL_ERR_OUT_OF_MEMORY, "out of memory copying %s", t->name);
        } else {
            float *x = malloc((size_t)rep.n_elements * sizeof *x);
            if (!x) return sp_fail(SPECTRAL_ERR_OUT_OF_MEMORY, "out of memory reading %s", t->name);
            sp_convert_to_f32(t->type, t->data, x, (size_t)rep.n_elements);
            for (int64_t e = 0; e < rep.n_elements; e++) {
                if (!isfinite(x[e])) {
                    free(x);
                    return sp_fail(SPECTRAL_ERR_MODEL, "tensor %s has a non-finite value at element %lld",
                                 t->name, (long long)e);
                }
            }
            rep.to_type = quant_name(q);
            const spectral_status s = encode_tensor(j, t, x, rep.n_elements, &rep);
            free(x);
            if (s) return s;
            any_block |= q == SPECTRAL_QUANT_Q8_0 || q == SPECTRAL_QUANT_Q4_0;
        }
        if (j->p->on_tensor) j->p->on_tensor(&rep, j->p->user_data);
    }
    /* llama.cpp's file-level keys: the block format version (GGML_QNT_VERSION)
     * and the type most weights have (llama_ftype). */
    if (any_block && sp_gguf_writer_set_u32(j->w, "general.quantization_version", 2))
        return sp_fail(SPECTRAL_ERR_OUT_OF_MEMORY, "out of memory");
    if (q != SPECTRAL_QUANT_SST) {
        const uint32_t ftype = q == SPECTRAL_QUANT_Q8_0 ? 7 : q == SPECTRAL_QUANT_Q4_0 ? 2 : (uint32_t)q;
        if (sp_gguf_writer_set_u32(j->w, "general.file_type", ftype))
            return sp_fail(SPECTRAL_ERR_OUT_OF_MEMORY, "out of memory");
    }
    return SPECTRAL_OK;
}

static int same_file(const char *a, const char *b) {
    struct stat sa, sb;
    if (strcmp(a, b) == 0) return 1;
    if (stat(a, &sa) != 0 || stat(b, &sb) != 0) return 0;
    return sa.st_dev == sb.st_dev && sa.st_ino == sb.st_ino;
}

spectral_status spectral_model_quantize(const char *in_path, const char *out_path,
                                        const spectral_quantize_params *params) {
    if (!in_path || !out_path || !params)
        return sp_fail(SPECTRAL_ERR_INVALID_ARGUMENT, "spectral_model_quantize: NULL argument");
    const spectral_quant_type q = params->type;
    if (!quant_name(q))
        return sp_fail(SPECTRAL_ERR_INVALID_ARGUMENT, "unknown quantization type %d", (int)q);
    if (q == SPECTRAL_QUANT_SST && !(params->keep > 0.0 && params->keep <= 1.0))
        return sp_fail(SPECTRAL_ERR_INVALID_ARGUMENT, "keep = %g must be in (0, 1]", params->keep);
    if (same_file(in_path, out_path))
        return sp_fail(SPECTRAL_ERR_INVALID_ARGUMENT, "output '%s' is the input file; refusing to overwrite it",
                     out_path);
    regex_t re;
    const int have_re = params->tensors != NULL;
    if (have_re) {
        const int rc = regcomp(&re, params->tensors, REG_EXTENDED | REG_NOSUB);
        if (rc) {
            char msg[256];
            regerror(rc, &re, msg, sizeof msg);
            return sp_fail(SPECTRAL_ERR_INVALID_ARGUMENT, "bad tensor regex '%s': %s", params->tensors, msg);
        }
    }
    /* The output goes into a new file beside out_path, renamed over it only
     * once it loads: a failure leaves whatever out_path named as it was, and
     * a path that is not a regular file is refused before any work. */
    char err[512];
    sp_file_replace r;
    if (sp_file_replace_begin(&r, out_path, err, sizeof err)) {
        if (have_re) regfree(&re);
        return sp_fail(SPECTRAL_ERR_IO, "%s", err);
    }
    /* The input must be a model we run: quantizing garbage would only move
     * the error to whoever loads the output. */
    spectral_model_params mp = spectral_model_default_params();
    spectral_model *m = NULL;
    spectral_status s = spectral_model_load(in_path, mp, &m);
    spectral_model_free(m);
    m = NULL;
    sp_gguf *g = NULL;
    sp_gguf_writer *w = NULL;
    if (s) goto out; /* message set by the load */
    if (sp_gguf_open(in_path, &g, err, sizeof err)) {
        s = sp_fail(SPECTRAL_ERR_FORMAT, "%s", err);
        goto out;
    }
    w = sp_gguf_writer_new();
    if (!w) {
        s = sp_fail(SPECTRAL_ERR_OUT_OF_MEMORY, "out of memory");
        goto out;
    }
    for (int64_t i = 0; i < sp_gguf_n_kv(g); i++) {
        const char *key = sp_gguf_key_name(g, i);
        if (strcmp(key, "general.quantization_version") == 0) continue; /* rewritten */
        if (strcmp(key, "general.file_type") == 0 && q != SPECTRAL_QUANT_SST) continue;
        if (sp_gguf_writer_copy_kv(w, g, i)) {
            s = sp_fail(SPECTRAL_ERR_OUT_OF_MEMORY, "cannot copy key %s", key);
            goto out;
        }
    }
    qjob j = {w, params, {0}};
    s = quantize(&j, g, have_re ? &re : NULL);
    if (s) goto out;
    char werr[256];
    if (sp_gguf_writer_write_stream(w, r.f, werr, sizeof werr)) {
        snprintf(err, sizeof err, "writing '%s': %s", out_path, werr);
        s = sp_fail(SPECTRAL_ERR_IO, "%s", err);
    } else if (sp_file_replace_close(&r, err, sizeof err)) {
        s = sp_fail(SPECTRAL_ERR_IO, "%s", err);
    } else if ((s = spectral_model_load(r.tmp, mp, &m)) != SPECTRAL_OK) {
        char msg[1024]; /* the message is in the buffer sp_fail writes */
        snprintf(msg, sizeof msg, "%s", spectral_last_error());
        s = sp_fail(s, "the quantized model does not load (%s left as it was): %s", out_path, msg);
    } else if (sp_file_replace_commit(&r, err, sizeof err)) {
        s = sp_fail(SPECTRAL_ERR_IO, "%s", err);
    }
    spectral_model_free(m);
out:
    sp_file_replace_abort(&r); /* a no-op after the commit */
    if (have_re) regfree(&re);
    sp_gguf_writer_free(w);
    sp_gguf_close(g);
    return s;
}
