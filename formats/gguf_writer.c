/* GGUF v3 writer. Everything is buffered in memory and written in one pass
 * at the end; the output is what ggml's and Python's gguf readers expect:
 * header, KVs in insertion order, tensor infos, padding to the alignment,
 * then each tensor's data padded to the alignment. */
#define _POSIX_C_SOURCE 200809L

#include "formats/gguf.h"
#include "formats/file_replace.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct {
    char *key;
    uint32_t type;
    uint8_t *val; /* serialized value (everything after the type field) */
    size_t val_len;
} wkv;

typedef struct {
    char *name;
    int type;
    uint32_t n_dims;
    int64_t ne[SP_GGUF_MAX_DIMS];
    void *data;
    uint64_t nbytes;
} wtensor;

struct sp_gguf_writer {
    wkv *kv;
    size_t n_kv, cap_kv;
    wtensor *t;
    size_t n_t, cap_t;
    uint64_t alignment;
};

sp_gguf_writer *sp_gguf_writer_new(void) {
    sp_gguf_writer *w = calloc(1, sizeof *w);
    if (w) w->alignment = SP_GGUF_DEFAULT_ALIGNMENT;
    return w;
}

void sp_gguf_writer_free(sp_gguf_writer *w) {
    if (!w) return;
    for (size_t i = 0; i < w->n_kv; i++) {
        free(w->kv[i].key);
        free(w->kv[i].val);
    }
    free(w->kv);
    for (size_t i = 0; i < w->n_t; i++) {
        free(w->t[i].name);
        free(w->t[i].data);
    }
    free(w->t);
    free(w);
}

static char *str_dup(const char *s) {
    size_t n = strlen(s);
    char *d = malloc(n + 1);
    if (d) memcpy(d, s, n + 1);
    return d;
}

/* Little-endian byte buffer. */
typedef struct {
    uint8_t *p;
    size_t len, cap;
    int oom;
} bbuf;

static void bb_put(bbuf *b, const void *src, size_t n) {
    if (b->oom) return;
    if (n > SIZE_MAX - b->len) {
        b->oom = 1;
        return;
    }
    if (b->len + n > b->cap) {
        size_t cap = b->cap ? b->cap : 64;
        while (cap < b->len + n) {
            if (cap > SIZE_MAX / 2) {
                cap = b->len + n;
                break;
            }
            cap *= 2;
        }
        uint8_t *q = realloc(b->p, cap);
        if (!q) {
            b->oom = 1;
            return;
        }
        b->p = q;
        b->cap = cap;
    }
    if (n) memcpy(b->p + b->len, src, n);
    b->len += n;
}

static void bb_le(bbuf *b, uint64_t v, int nbytes) {
    uint8_t tmp[8];
    for (int i = 0; i < nbytes; i++) tmp[i] = (uint8_t)(v >> (8 * i));
    bb_put(b, tmp, (size_t)nbytes);
}

static void bb_str(bbuf *b, const char *s, size_t n) {
    bb_le(b, n, 8);
    bb_put(b, s, n);
}

static const int elem_size[SP_GGUF_TYPE_COUNT] = {
    [SP_GGUF_TYPE_UINT8] = 1, [SP_GGUF_TYPE_INT8] = 1,  [SP_GGUF_TYPE_UINT16] = 2,
    [SP_GGUF_TYPE_INT16] = 2, [SP_GGUF_TYPE_UINT32] = 4, [SP_GGUF_TYPE_INT32] = 4,
    [SP_GGUF_TYPE_FLOAT32] = 4, [SP_GGUF_TYPE_BOOL] = 1, [SP_GGUF_TYPE_UINT64] = 8,
    [SP_GGUF_TYPE_INT64] = 8, [SP_GGUF_TYPE_FLOAT64] = 8,
};

static int has_key(const sp_gguf_writer *w, const char *key) {
    for (size_t i = 0; i < w->n_kv; i++)
        if (strcmp(w->kv[i].key, key) == 0) return 1;
    return 0;
}

/* Takes ownership of b's buffer (freed on failure). */
static int add_kv(sp_gguf_writer *w, const char *key, sp_gguf_type type, bbuf *b) {
    if (!w || !key || b->oom || has_key(w, key)) goto fail;
    /* general.alignment must be a u32 power of two, or the file would be unreadable */
    if (strcmp(key, "general.alignment") == 0) {
        if (type != SP_GGUF_TYPE_UINT32 || b->len != 4) goto fail;
        uint32_t a = (uint32_t)b->p[0] | ((uint32_t)b->p[1] << 8) | ((uint32_t)b->p[2] << 16) |
                     ((uint32_t)b->p[3] << 24);
        if (a == 0 || (a & (a - 1)) != 0) goto fail;
        w->alignment = a;
    }
    if (w->n_kv == w->cap_kv) {
        size_t cap = w->cap_kv ? w->cap_kv * 2 : 16;
        wkv *q = realloc(w->kv, cap * sizeof *q);
        if (!q) goto fail;
        w->kv = q;
        w->cap_kv = cap;
    }
    char *k = str_dup(key);
    if (!k) goto fail;
    w->kv[w->n_kv].key = k;
    w->kv[w->n_kv].type = (uint32_t)type;
    w->kv[w->n_kv].val = b->p;
    w->kv[w->n_kv].val_len = b->len;
    w->n_kv++;
    return 0;
fail:
    free(b->p);
    return -1;
}

static int set_scalar(sp_gguf_writer *w, const char *key, sp_gguf_type t, uint64_t bits) {
    bbuf b = {0};
    bb_le(&b, bits, elem_size[t]);
    return add_kv(w, key, t, &b);
}

int sp_gguf_writer_set_u8(sp_gguf_writer *w, const char *key, uint8_t v) {
    return set_scalar(w, key, SP_GGUF_TYPE_UINT8, v);
}
int sp_gguf_writer_set_i8(sp_gguf_writer *w, const char *key, int8_t v) {
    return set_scalar(w, key, SP_GGUF_TYPE_INT8, (uint8_t)v);
}
int sp_gguf_writer_set_u16(sp_gguf_writer *w, const char *key, uint16_t v) {
    return set_scalar(w, key, SP_GGUF_TYPE_UINT16, v);
}
int sp_gguf_writer_set_i16(sp_gguf_writer *w, const char *key, int16_t v) {
    return set_scalar(w, key, SP_GGUF_TYPE_INT16, (uint16_t)v);
}
int sp_gguf_writer_set_u32(sp_gguf_writer *w, const char *key, uint32_t v) {
    return set_scalar(w, key, SP_GGUF_TYPE_UINT32, v);
}
int sp_gguf_writer_set_i32(sp_gguf_writer *w, const char *key, int32_t v) {
    return set_scalar(w, key, SP_GGUF_TYPE_INT32, (uint32_t)v);
}
int sp_gguf_writer_set_u64(sp_gguf_writer *w, const char *key, uint64_t v) {
    return set_scalar(w, key, SP_GGUF_TYPE_UINT64, v);
}
int sp_gguf_writer_set_i64(sp_gguf_writer *w, const char *key, int64_t v) {
    return set_scalar(w, key, SP_GGUF_TYPE_INT64, (uint64_t)v);
}
int sp_gguf_writer_set_f32(sp_gguf_writer *w, const char *key, float v) {
    uint32_t u;
    memcpy(&u, &v, 4);
    return set_scalar(w, key, SP_GGUF_TYPE_FLOAT32, u);
}
int sp_gguf_writer_set_f64(sp_gguf_writer *w, const char *key, double v) {
    uint64_t u;
    memcpy(&u, &v, 8);
    return set_scalar(w, key, SP_GGUF_TYPE_FLOAT64, u);
}
int sp_gguf_writer_set_bool(sp_gguf_writer *w, const char *key, int v) {
    return set_scalar(w, key, SP_GGUF_TYPE_BOOL, v ? 1 : 0);
}
int sp_gguf_writer_set_str(sp_gguf_writer *w, const char *key, const char *v) {
    if (!v) return -1;
    bbuf b = {0};
    bb_str(&b, v, strlen(v));
    return add_kv(w, key, SP_GGUF_TYPE_STRING, &b);
}

int sp_gguf_writer_set_arr(sp_gguf_writer *w, const char *key, sp_gguf_type elem_type,
                           const void *data, uint64_t n) {
    if ((unsigned)elem_type >= SP_GGUF_TYPE_COUNT || elem_type == SP_GGUF_TYPE_STRING ||
        elem_type == SP_GGUF_TYPE_ARRAY || (!data && n))
        return -1;
    size_t es = (size_t)elem_size[elem_type];
    if (n > SIZE_MAX / es) return -1;
    bbuf b = {0};
    bb_le(&b, (uint64_t)elem_type, 4);
    bb_le(&b, n, 8);
    /* elements are given in host order; the format is little-endian */
    const uint8_t *s = (const uint8_t *)data;
    for (uint64_t i = 0; i < n; i++) {
        uint64_t v = 0;
        switch (es) {
        case 1: v = s[i]; break;
        case 2: { uint16_t x; memcpy(&x, s + 2 * i, 2); v = x; break; }
        case 4: { uint32_t x; memcpy(&x, s + 4 * i, 4); v = x; break; }
        default: memcpy(&v, s + 8 * i, 8); break;
        }
        if (elem_type == SP_GGUF_TYPE_BOOL) v = v ? 1 : 0;
        bb_le(&b, v, (int)es);
    }
    return add_kv(w, key, SP_GGUF_TYPE_ARRAY, &b);
}

int sp_gguf_writer_set_arr_str(sp_gguf_writer *w, const char *key, const char *const *strs,
                               uint64_t n) {
    if (!strs && n) return -1;
    for (uint64_t i = 0; i < n; i++)
        if (!strs[i]) return -1;
    bbuf b = {0};
    bb_le(&b, SP_GGUF_TYPE_STRING, 4);
    bb_le(&b, n, 8);
    for (uint64_t i = 0; i < n; i++) bb_str(&b, strs[i], strlen(strs[i]));
    return add_kv(w, key, SP_GGUF_TYPE_ARRAY, &b);
}

int sp_gguf_writer_add_tensor(sp_gguf_writer *w, const char *name, int type, uint32_t n_dims,
                              const int64_t *ne, const void *data) {
    if (!w || !name || !ne || n_dims < 1 || n_dims > SP_GGUF_MAX_DIMS) return -1;
    const int64_t blck = sp_tensor_block_size(type);
    const size_t ts = sp_tensor_block_bytes(type);
    if (blck == 0 || ts == 0 || ne[0] % blck != 0) return -1;
    uint64_t nel = 1;
    for (uint32_t d = 0; d < n_dims; d++) {
        if (ne[d] <= 0 || nel > (uint64_t)INT64_MAX / (uint64_t)ne[d]) return -1;
        nel *= (uint64_t)ne[d];
    }
    if (nel / (uint64_t)blck > SIZE_MAX / ts) return -1;
    size_t nbytes = (size_t)(nel / (uint64_t)blck) * ts;
    if (!data) return -1;
    for (size_t i = 0; i < w->n_t; i++)
        if (strcmp(w->t[i].name, name) == 0) return -1;
    if (w->n_t == w->cap_t) {
        size_t cap = w->cap_t ? w->cap_t * 2 : 16;
        wtensor *q = realloc(w->t, cap * sizeof *q);
        if (!q) return -1;
        w->t = q;
        w->cap_t = cap;
    }
    wtensor *t = &w->t[w->n_t];
    memset(t, 0, sizeof *t);
    t->name = str_dup(name);
    t->data = malloc(nbytes);
    if (!t->name || !t->data) {
        free(t->name);
        free(t->data);
        return -1;
    }
    memcpy(t->data, data, nbytes);
    t->type = type;
    t->n_dims = n_dims;
    for (int d = 0; d < SP_GGUF_MAX_DIMS; d++) t->ne[d] = d < (int)n_dims ? ne[d] : 1;
    t->nbytes = nbytes;
    w->n_t++;
    return 0;
}

int sp_gguf_writer_copy_kv(sp_gguf_writer *w, const sp_gguf *g, int64_t i) {
    const char *key = sp_gguf_key_name(g, i);
    if (!w || !key) return -1;
    const sp_gguf_type t = sp_gguf_kv_type(g, i);
    bbuf b = {0};
    if (t == SP_GGUF_TYPE_STRING) {
        /* by length, not strlen: a GGUF string may hold NUL bytes */
        const sp_gguf_str v = sp_gguf_get_str(g, i);
        bb_str(&b, v.ptr, (size_t)v.len);
    } else if (t == SP_GGUF_TYPE_ARRAY) {
        const sp_gguf_type et = sp_gguf_arr_type(g, i);
        const uint64_t n = sp_gguf_arr_n(g, i);
        bb_le(&b, (uint64_t)et, 4);
        bb_le(&b, n, 8);
        if (et == SP_GGUF_TYPE_STRING) {
            for (uint64_t j = 0; j < n; j++) {
                const sp_gguf_str v = sp_gguf_arr_str(g, i, j);
                bb_str(&b, v.ptr, (size_t)v.len);
            }
        } else if ((unsigned)et < SP_GGUF_TYPE_COUNT && elem_size[et]) {
            /* the reader's copy holds the file's little-endian bytes */
            bb_put(&b, sp_gguf_arr_data(g, i), (size_t)n * (size_t)elem_size[et]);
        } else {
            free(b.p);
            return -1;
        }
    } else if ((unsigned)t < SP_GGUF_TYPE_COUNT && elem_size[t]) {
        uint64_t v = 0;
        switch (t) {
        case SP_GGUF_TYPE_UINT8: v = sp_gguf_get_u8(g, i); break;
        case SP_GGUF_TYPE_INT8: v = (uint8_t)sp_gguf_get_i8(g, i); break;
        case SP_GGUF_TYPE_UINT16: v = sp_gguf_get_u16(g, i); break;
        case SP_GGUF_TYPE_INT16: v = (uint16_t)sp_gguf_get_i16(g, i); break;
        case SP_GGUF_TYPE_UINT32: v = sp_gguf_get_u32(g, i); break;
        case SP_GGUF_TYPE_INT32: v = (uint32_t)sp_gguf_get_i32(g, i); break;
        case SP_GGUF_TYPE_UINT64: v = sp_gguf_get_u64(g, i); break;
        case SP_GGUF_TYPE_INT64: v = (uint64_t)sp_gguf_get_i64(g, i); break;
        case SP_GGUF_TYPE_BOOL: v = (uint64_t)sp_gguf_get_bool(g, i); break;
        case SP_GGUF_TYPE_FLOAT32: {
            const float f = sp_gguf_get_f32(g, i);
            uint32_t u;
            memcpy(&u, &f, 4);
            v = u;
            break;
        }
        case SP_GGUF_TYPE_FLOAT64: {
            const double d = sp_gguf_get_f64(g, i);
            memcpy(&v, &d, 8);
            break;
        }
        default: break;
        }
        bb_le(&b, v, elem_size[t]);
    } else {
        return -1;
    }
    return add_kv(w, key, t, &b);
}

static uint64_t pad_to(uint64_t x, uint64_t a) { return (x + a - 1) / a * a; }

static int write_zeros(FILE *f, uint64_t n) {
    static const uint8_t zeros[256];
    while (n) {
        size_t k = n < sizeof zeros ? (size_t)n : sizeof zeros;
        if (fwrite(zeros, 1, k, f) != k) return -1;
        n -= k;
    }
    return 0;
}

int sp_gguf_writer_write_stream(sp_gguf_writer *w, FILE *f, char *err, size_t err_len) {
    if (!w || !f) {
        sp_set_err(err, err_len, "invalid argument");
        return -1;
    }
    bbuf h = {0};
    bb_put(&h, SP_GGUF_MAGIC, 4);
    bb_le(&h, SP_GGUF_VERSION, 4);
    bb_le(&h, w->n_t, 8);
    bb_le(&h, w->n_kv, 8);
    for (size_t i = 0; i < w->n_kv; i++) {
        bb_str(&h, w->kv[i].key, strlen(w->kv[i].key));
        bb_le(&h, w->kv[i].type, 4);
        bb_put(&h, w->kv[i].val, w->kv[i].val_len);
    }
    uint64_t off = 0;
    for (size_t i = 0; i < w->n_t; i++) {
        const wtensor *t = &w->t[i];
        bb_str(&h, t->name, strlen(t->name));
        bb_le(&h, t->n_dims, 4);
        for (uint32_t d = 0; d < t->n_dims; d++) bb_le(&h, (uint64_t)t->ne[d], 8);
        bb_le(&h, (uint64_t)t->type, 4);
        bb_le(&h, off, 8);
        off = pad_to(off + t->nbytes, w->alignment);
    }
    if (h.oom) {
        free(h.p);
        sp_set_err(err, err_len, "out of memory building the GGUF header");
        return -1;
    }
    errno = 0;
    int bad = fwrite(h.p, 1, h.len, f) != h.len;
    bad = bad || write_zeros(f, pad_to(h.len, w->alignment) - h.len);
    for (size_t i = 0; i < w->n_t && !bad; i++) {
        const wtensor *t = &w->t[i];
        bad = fwrite(t->data, 1, (size_t)t->nbytes, f) != t->nbytes;
        bad = bad || write_zeros(f, pad_to(t->nbytes, w->alignment) - t->nbytes);
    }
    const int e = errno; /* the failed fwrite's */
    free(h.p);
    if (bad) sp_set_err(err, err_len, "write error: %s", strerror(e ? e : EIO));
    return bad ? -1 : 0;
}

int sp_gguf_writer_write(sp_gguf_writer *w, const char *path, char *err, size_t err_len) {
    if (!w || !path) {
        sp_set_err(err, err_len, "invalid argument");
        return -1;
    }
    sp_file_replace r;
    if (sp_file_replace_begin(&r, path, err, err_len)) return -1;
    char werr[256];
    if (sp_gguf_writer_write_stream(w, r.f, werr, sizeof werr)) {
        sp_set_err(err, err_len, "writing '%s': %s", path, werr);
        sp_file_replace_abort(&r);
        return -1;
    }
    if (sp_file_replace_commit(&r, err, err_len)) {
        sp_file_replace_abort(&r);
        return -1;
    }
    return 0;
}
