/* GGUF v3 reader: strict validation over a read-only mapping.
 *
 * Parsing decodes every integer byte by byte (little-endian), so the reader
 * never does an unaligned load and never trusts a length before checking it
 * against the bytes that remain. */
#define _POSIX_C_SOURCE 200809L

#include "formats/gguf.h"
#include "formats/quant.h"

#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

typedef struct {
    char *key;              /* NUL-terminated copy */
    sp_gguf_type type;
    sp_gguf_type arr_type;  /* ARRAY only */
    uint64_t arr_n;         /* ARRAY only */
    const uint8_t *val;     /* scalar bytes, or string bytes (STRING) in the mapping */
    uint64_t str_len;       /* STRING only */
    void *arr_copy;         /* scalar arrays: aligned copy so callers may index it as T* */
    uint64_t *str_offs;     /* string arrays: offset of each element's length prefix */
} sp_kv;

struct sp_gguf {
    const uint8_t *base;
    size_t size;
    int mapped;
    uint32_t version;
    uint64_t alignment;
    uint64_t data_start;
    int64_t n_kv;
    sp_kv *kv;
    int64_t n_tensors;
    sp_gguf_tensor *tensors;
    /* open-addressing hash tables of indices (+1; 0 = empty), sized to a power of two */
    uint64_t *kv_hash;
    uint64_t kv_hash_cap;
    uint64_t *t_hash;
    uint64_t t_hash_cap;
};

void sp_set_err(char *err, size_t err_len, const char *fmt, ...) {
    if (!err || err_len == 0) return;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err, err_len, fmt, ap);
    va_end(ap);
}

/* ---- type tables ---- */

static const size_t kv_scalar_size[SP_GGUF_TYPE_COUNT] = {
    [SP_GGUF_TYPE_UINT8] = 1, [SP_GGUF_TYPE_INT8] = 1,  [SP_GGUF_TYPE_UINT16] = 2,
    [SP_GGUF_TYPE_INT16] = 2, [SP_GGUF_TYPE_UINT32] = 4, [SP_GGUF_TYPE_INT32] = 4,
    [SP_GGUF_TYPE_FLOAT32] = 4, [SP_GGUF_TYPE_BOOL] = 1, [SP_GGUF_TYPE_STRING] = 0,
    [SP_GGUF_TYPE_ARRAY] = 0, [SP_GGUF_TYPE_UINT64] = 8, [SP_GGUF_TYPE_INT64] = 8,
    [SP_GGUF_TYPE_FLOAT64] = 8,
};

const char *sp_gguf_type_name(sp_gguf_type t) {
    static const char *names[SP_GGUF_TYPE_COUNT] = {
        "u8", "i8", "u16", "i16", "u32", "i32", "f32", "bool", "str", "arr", "u64", "i64", "f64",
    };
    if ((unsigned)t >= SP_GGUF_TYPE_COUNT) return "unknown";
    return names[t];
}

size_t sp_tensor_type_size(int type) {
    switch (type) {
    case SP_TENSOR_F32: return 4;
    case SP_TENSOR_F16: return 2;
    case SP_TENSOR_BF16: return 2;
    case SP_TENSOR_I32: return 4;
    default: return 0;
    }
}

int64_t sp_tensor_block_size(int type) {
    if (sp_quant_is_block_type(type)) return SP_QK;
    return sp_tensor_type_size(type) ? 1 : 0;
}

size_t sp_tensor_block_bytes(int type) {
    if (type == SP_TENSOR_Q8_0) return SP_Q8_0_BLOCK_BYTES;
    if (type == SP_TENSOR_Q4_0) return SP_Q4_0_BLOCK_BYTES;
    return sp_tensor_type_size(type);
}

const char *sp_tensor_type_name(int type) {
    switch (type) {
    case SP_TENSOR_F32: return "f32";
    case SP_TENSOR_F16: return "f16";
    case SP_TENSOR_BF16: return "bf16";
    case SP_TENSOR_Q8_0: return "q8_0";
    case SP_TENSOR_Q4_0: return "q4_0";
    case SP_TENSOR_I32: return "i32";
    default: return "unknown";
    }
}

/* ---- half-precision conversions ---- */

static uint32_t f32_bits(float f) {
    uint32_t u;
    memcpy(&u, &f, 4);
    return u;
}
static float bits_f32(uint32_t u) {
    float f;
    memcpy(&f, &u, 4);
    return f;
}

float sp_fp16_to_f32(uint16_t h) {
    uint32_t sign = (uint32_t)(h & 0x8000u) << 16;
    uint32_t exp = (h >> 10) & 0x1fu;
    uint32_t man = h & 0x3ffu;
    if (exp == 0x1f) return bits_f32(sign | 0x7f800000u | (man << 13)); /* inf / nan */
    if (exp == 0) {
        if (man == 0) return bits_f32(sign);
        /* subnormal: value = man * 2^-24, exact in f32 */
        float v = (float)man * 5.9604644775390625e-8f;
        return sign ? -v : v;
    }
    return bits_f32(sign | ((exp + 112u) << 23) | (man << 13));
}

uint16_t sp_f32_to_fp16(float f) {
    uint32_t x = f32_bits(f);
    uint16_t sign = (uint16_t)((x >> 16) & 0x8000u);
    uint32_t ax = x & 0x7fffffffu;
    if (ax >= 0x7f800000u) /* inf or nan (keep nan quiet and non-zero) */
        return (uint16_t)(sign | 0x7c00u | (ax > 0x7f800000u ? 0x200u | ((ax >> 13) & 0x3ffu) : 0));
    if (ax >= 0x477ff000u) return (uint16_t)(sign | 0x7c00u); /* rounds to >= 65520: overflow */
    if (ax < 0x38800000u) {
        /* result is subnormal or zero: round-to-nearest-even of |f| / 2^-24 */
        if (ax < 0x33000000u) return sign; /* < 2^-25: rounds to zero */
        uint32_t e = ax >> 23;             /* biased f32 exponent, 102..112 */
        uint32_t m = (ax & 0x7fffffu) | 0x800000u;
        uint32_t shift = 126u - e;         /* so that m >> shift is in units of 2^-24 */
        uint32_t q = m >> shift;
        uint32_t rem = m & ((1u << shift) - 1u);
        uint32_t half = 1u << (shift - 1u);
        if (rem > half || (rem == half && (q & 1u))) q++;
        return (uint16_t)(sign | q);
    }
    /* normal: rebias exponent, round mantissa to 10 bits (nearest-even) */
    uint32_t r = ax + 0xfffu + ((ax >> 13) & 1u);
    return (uint16_t)(sign | ((r - 0x38000000u) >> 13));
}

float sp_bf16_to_f32(uint16_t h) { return bits_f32((uint32_t)h << 16); }

uint16_t sp_f32_to_bf16(float f) {
    uint32_t x = f32_bits(f);
    if ((x & 0x7fffffffu) > 0x7f800000u) return (uint16_t)((x >> 16) | 0x40u); /* quiet nan */
    x += 0x7fffu + ((x >> 16) & 1u);
    return (uint16_t)(x >> 16);
}

void sp_convert_to_f32(int type, const void *src, float *dst, size_t n) {
    const uint8_t *s = (const uint8_t *)src;
    switch (type) {
    case SP_TENSOR_F32:
        memcpy(dst, src, n * sizeof(float));
        break;
    case SP_TENSOR_F16:
        for (size_t i = 0; i < n; i++) dst[i] = sp_fp16_to_f32((uint16_t)(s[2 * i] | (s[2 * i + 1] << 8)));
        break;
    case SP_TENSOR_BF16:
        for (size_t i = 0; i < n; i++) dst[i] = sp_bf16_to_f32((uint16_t)(s[2 * i] | (s[2 * i + 1] << 8)));
        break;
    case SP_TENSOR_Q8_0:
    case SP_TENSOR_Q4_0:
        if (sp_dequantize_row(type, src, dst, (int64_t)n) == 0) break;
        memset(dst, 0, n * sizeof(float)); /* n not whole blocks */
        break;
    default:
        /* unknown type: zero-fill rather than read an unknown layout */
        memset(dst, 0, n * sizeof(float));
        break;
    }
}

/* Whether any of the m values at s (each `width` bytes, little-endian) has
 * all exponent bits set. OR-reduced without an early exit, so the compiler
 * vectorizes it: the whole scan runs at memory speed. */
static int any_exponent_max(const uint8_t *s, size_t m, size_t width, uint32_t mask) {
    uint32_t bad = 0;
    if (width == 4) {
        for (size_t i = 0; i < m; i++) {
            uint32_t u;
            memcpy(&u, s + 4 * i, 4); /* the data need not be aligned */
            bad |= (u & mask) == mask;
        }
    } else {
        for (size_t i = 0; i < m; i++) {
            uint16_t u;
            memcpy(&u, s + 2 * i, 2);
            bad |= (u & mask) == mask;
        }
    }
    return bad != 0;
}

int64_t sp_first_nonfinite(int type, const void *src, size_t n) {
    const uint8_t *s = (const uint8_t *)src;
    size_t width;
    uint32_t mask;
    switch (type) {
    case SP_TENSOR_F32: width = 4, mask = 0x7f800000u; break;
    case SP_TENSOR_F16: width = 2, mask = 0x7c00u; break;
    case SP_TENSOR_BF16: width = 2, mask = 0x7f80u; break;
    case SP_TENSOR_Q8_0:
    case SP_TENSOR_Q4_0: {
        /* the f16 scale d opens each block; the quants are integers */
        const size_t bb = type == SP_TENSOR_Q8_0 ? SP_Q8_0_BLOCK_BYTES : SP_Q4_0_BLOCK_BYTES;
        for (size_t b = 0; b < n / SP_QK; b++)
            if ((s[b * bb + 1] & 0x7c) == 0x7c) return (int64_t)(b * SP_QK);
        return -1;
    }
    default: return -1;
    }
    /* chunks: the exact index is looked for only in a chunk that has one */
    enum { CHUNK = 4096 };
    for (size_t i0 = 0; i0 < n; i0 += CHUNK) {
        const size_t m = n - i0 < CHUNK ? n - i0 : CHUNK;
        if (!any_exponent_max(s + i0 * width, m, width, mask)) continue;
        for (size_t i = i0; i < i0 + m; i++)
            if (any_exponent_max(s + i * width, 1, width, mask)) return (int64_t)i;
    }
    return -1;
}

/* ---- cursor over the buffer ---- */

typedef struct {
    const uint8_t *p;
    size_t size;
    size_t pos;
} cursor;

static size_t cur_left(const cursor *c) { return c->size - c->pos; }

static uint64_t le_u64(const uint8_t *p) {
    uint64_t v = 0;
    for (int i = 7; i >= 0; i--) v = (v << 8) | p[i];
    return v;
}
static uint32_t le_u32(const uint8_t *p) {
    return (uint32_t)p[0] | ((uint32_t)p[1] << 8) | ((uint32_t)p[2] << 16) | ((uint32_t)p[3] << 24);
}

static int rd_u32(cursor *c, uint32_t *v) {
    if (cur_left(c) < 4) return -1;
    *v = le_u32(c->p + c->pos);
    c->pos += 4;
    return 0;
}
static int rd_u64(cursor *c, uint64_t *v) {
    if (cur_left(c) < 8) return -1;
    *v = le_u64(c->p + c->pos);
    c->pos += 8;
    return 0;
}

/* ---- hashing ---- */

static uint64_t hash_bytes(const char *s, size_t n) {
    uint64_t h = 1469598103934665603ull; /* FNV-1a */
    for (size_t i = 0; i < n; i++) {
        h ^= (uint8_t)s[i];
        h *= 1099511628211ull;
    }
    return h;
}

static uint64_t hash_cap_for(uint64_t n) {
    uint64_t cap = 16;
    while (cap < n * 2) cap <<= 1;
    return cap;
}

/* Looks name up; returns the 0-based index, or -1. names(i) gives entry i's name. */
static int64_t hash_find(const uint64_t *tab, uint64_t cap, const char *name, const sp_gguf *g,
                         int is_tensor) {
    if (!tab || !name) return -1;
    size_t n = strlen(name);
    uint64_t h = hash_bytes(name, n) & (cap - 1);
    for (;;) {
        uint64_t e = tab[h];
        if (e == 0) return -1;
        const char *other = is_tensor ? g->tensors[e - 1].name : g->kv[e - 1].key;
        if (strcmp(other, name) == 0) return (int64_t)(e - 1);
        h = (h + 1) & (cap - 1);
    }
}

/* Inserts index idx under name; returns the existing index if the name is taken, else -1. */
static int64_t hash_insert(uint64_t *tab, uint64_t cap, const char *name, uint64_t idx,
                           const sp_gguf *g, int is_tensor) {
    uint64_t h = hash_bytes(name, strlen(name)) & (cap - 1);
    for (;;) {
        uint64_t e = tab[h];
        if (e == 0) {
            tab[h] = idx + 1;
            return -1;
        }
        const char *other = is_tensor ? g->tensors[e - 1].name : g->kv[e - 1].key;
        if (strcmp(other, name) == 0) return (int64_t)(e - 1);
        h = (h + 1) & (cap - 1);
    }
}

/* ---- parsing ---- */

/* Reads a gguf string; what names the string in error messages. */
static int rd_str(cursor *c, const uint8_t **ptr, uint64_t *len, const char *what, char *err,
                  size_t err_len) {
    uint64_t n;
    if (rd_u64(c, &n)) {
        sp_set_err(err, err_len, "truncated header: file ends inside the length of %s", what);
        return -1;
    }
    if (n > cur_left(c)) {
        sp_set_err(err, err_len,
                "string length %llu of %s is longer than the %llu bytes left in the file",
                (unsigned long long)n, what, (unsigned long long)cur_left(c));
        return -1;
    }
    *ptr = c->p + c->pos;
    *len = n;
    c->pos += (size_t)n;
    return 0;
}

/* Copies a name that must not contain NUL (it is looked up as a C string). */
static char *dup_name(const uint8_t *p, uint64_t n) {
    if (memchr(p, 0, (size_t)n)) return NULL;
    char *s = malloc((size_t)n + 1);
    if (!s) return NULL;
    memcpy(s, p, (size_t)n);
    s[n] = '\0';
    return s;
}

static int parse_kv(sp_gguf *g, cursor *c, uint64_t i, char *err, size_t err_len) {
    sp_kv *kv = &g->kv[i];
    const uint8_t *kp;
    uint64_t kn;
    char what[64];
    snprintf(what, sizeof what, "key %llu", (unsigned long long)i);
    if (rd_str(c, &kp, &kn, what, err, err_len)) return -1;
    if (memchr(kp, 0, (size_t)kn)) {
        sp_set_err(err, err_len, "key %llu contains a NUL byte", (unsigned long long)i);
        return -1;
    }
    kv->key = dup_name(kp, kn);
    if (!kv->key) {
        sp_set_err(err, err_len, "out of memory reading key %llu", (unsigned long long)i);
        return -1;
    }
    int64_t dup = hash_insert(g->kv_hash, g->kv_hash_cap, kv->key, i, g, 0);
    if (dup >= 0) {
        sp_set_err(err, err_len, "duplicate key '%s' (entries %lld and %llu)", kv->key, (long long)dup,
                (unsigned long long)i);
        return -1;
    }
    uint32_t t;
    if (rd_u32(c, &t)) {
        sp_set_err(err, err_len, "truncated header: file ends inside the type of key '%s'", kv->key);
        return -1;
    }
    if (t >= SP_GGUF_TYPE_COUNT) {
        sp_set_err(err, err_len, "unknown value type %u for key '%s'", t, kv->key);
        return -1;
    }
    kv->type = (sp_gguf_type)t;
    if (t == SP_GGUF_TYPE_STRING) {
        uint64_t n;
        const uint8_t *p;
        char w[96];
        snprintf(w, sizeof w, "the value of key '%.60s'", kv->key);
        if (rd_str(c, &p, &n, w, err, err_len)) return -1;
        kv->val = p;
        kv->str_len = n;
        return 0;
    }
    if (t != SP_GGUF_TYPE_ARRAY) {
        size_t sz = kv_scalar_size[t];
        if (cur_left(c) < sz) {
            sp_set_err(err, err_len, "truncated header: file ends inside the value of key '%s'", kv->key);
            return -1;
        }
        kv->val = c->p + c->pos;
        c->pos += sz;
        return 0;
    }
    /* array */
    uint32_t et;
    uint64_t n;
    if (rd_u32(c, &et) || rd_u64(c, &n)) {
        sp_set_err(err, err_len, "truncated header: file ends inside the array header of key '%s'",
                kv->key);
        return -1;
    }
    if (et >= SP_GGUF_TYPE_COUNT) {
        sp_set_err(err, err_len, "unknown array element type %u for key '%s'", et, kv->key);
        return -1;
    }
    if (et == SP_GGUF_TYPE_ARRAY) {
        sp_set_err(err, err_len, "nested arrays are not supported (key '%s')", kv->key);
        return -1;
    }
    kv->arr_type = (sp_gguf_type)et;
    kv->arr_n = n;
    if (et == SP_GGUF_TYPE_STRING) {
        /* each element needs at least its 8-byte length */
        if (n > cur_left(c) / 8) {
            sp_set_err(err, err_len,
                    "array of %llu strings for key '%s' is longer than the %llu bytes left in the file",
                    (unsigned long long)n, kv->key, (unsigned long long)cur_left(c));
            return -1;
        }
        kv->str_offs = malloc((size_t)(n ? n : 1) * sizeof(uint64_t));
        if (!kv->str_offs) {
            sp_set_err(err, err_len, "out of memory reading array '%s'", kv->key);
            return -1;
        }
        for (uint64_t j = 0; j < n; j++) {
            kv->str_offs[j] = c->pos;
            const uint8_t *p;
            uint64_t len;
            char w[96];
            snprintf(w, sizeof w, "element %llu of array '%.40s'", (unsigned long long)j, kv->key);
            if (rd_str(c, &p, &len, w, err, err_len)) return -1;
        }
        return 0;
    }
    size_t esz = kv_scalar_size[et];
    if (n > cur_left(c) / esz) {
        sp_set_err(err, err_len,
                "array of %llu %s elements for key '%s' is longer than the %llu bytes left in the file",
                (unsigned long long)n, sp_gguf_type_name((sp_gguf_type)et), kv->key,
                (unsigned long long)cur_left(c));
        return -1;
    }
    size_t nb = (size_t)n * esz;
    kv->val = c->p + c->pos;
    kv->arr_copy = malloc(nb ? nb : 1);
    if (!kv->arr_copy) {
        sp_set_err(err, err_len, "out of memory reading array '%s'", kv->key);
        return -1;
    }
    if (nb) memcpy(kv->arr_copy, kv->val, nb);
    c->pos += nb;
    return 0;
}

static int parse_tensor_info(sp_gguf *g, cursor *c, uint64_t i, char *err, size_t err_len) {
    sp_gguf_tensor *t = &g->tensors[i];
    const uint8_t *np;
    uint64_t nn;
    char what[64];
    snprintf(what, sizeof what, "the name of tensor %llu", (unsigned long long)i);
    if (rd_str(c, &np, &nn, what, err, err_len)) return -1;
    if (memchr(np, 0, (size_t)nn)) {
        sp_set_err(err, err_len, "name of tensor %llu contains a NUL byte", (unsigned long long)i);
        return -1;
    }
    char *name = dup_name(np, nn);
    if (!name) {
        sp_set_err(err, err_len, "out of memory reading tensor %llu", (unsigned long long)i);
        return -1;
    }
    t->name = name;
    int64_t dup = hash_insert(g->t_hash, g->t_hash_cap, name, i, g, 1);
    if (dup >= 0) {
        sp_set_err(err, err_len, "duplicate tensor name '%s' (tensors %lld and %llu)", name,
                (long long)dup, (unsigned long long)i);
        return -1;
    }
    uint32_t nd;
    if (rd_u32(c, &nd)) {
        sp_set_err(err, err_len, "truncated header: file ends inside tensor info of '%s'", name);
        return -1;
    }
    if (nd < 1 || nd > SP_GGUF_MAX_DIMS) {
        sp_set_err(err, err_len, "tensor '%s' has n_dims %u (must be 1..%d)", name, nd, SP_GGUF_MAX_DIMS);
        return -1;
    }
    t->n_dims = nd;
    for (int d = 0; d < SP_GGUF_MAX_DIMS; d++) t->ne[d] = 1;
    for (uint32_t d = 0; d < nd; d++) {
        uint64_t v;
        if (rd_u64(c, &v)) {
            sp_set_err(err, err_len, "truncated header: file ends inside tensor info of '%s'", name);
            return -1;
        }
        if (v == 0 || v > (uint64_t)INT64_MAX) {
            sp_set_err(err, err_len, "tensor '%s' has invalid dimension ne[%u] = %lld (must be positive)",
                    name, d, (long long)(int64_t)v);
            return -1;
        }
        t->ne[d] = (int64_t)v;
    }
    uint32_t type;
    uint64_t off;
    if (rd_u32(c, &type) || rd_u64(c, &off)) {
        sp_set_err(err, err_len, "truncated header: file ends inside tensor info of '%s'", name);
        return -1;
    }
    const int64_t blck = type > (uint32_t)INT32_MAX ? 0 : sp_tensor_block_size((int)type);
    const size_t tsz = blck ? sp_tensor_block_bytes((int)type) : 0;
    if (tsz == 0) {
        sp_set_err(err, err_len,
                "tensor '%s' has unsupported tensor type %u (supported: f32, f16, bf16, q8_0, q4_0, i32)",
                name, type);
        return -1;
    }
    /* as ggml's gguf.cpp: a row holds whole blocks */
    if (t->ne[0] % blck != 0) {
        sp_set_err(err, err_len,
                "tensor '%s' of type %s has ne[0] = %lld, not a multiple of its block size %lld", name,
                sp_tensor_type_name((int)type), (long long)t->ne[0], (long long)blck);
        return -1;
    }
    t->type = (int)type;
    /* element count and byte size, overflow-checked against int64 and size_t */
    uint64_t limit = (uint64_t)INT64_MAX < (uint64_t)SIZE_MAX ? (uint64_t)INT64_MAX : (uint64_t)SIZE_MAX;
    uint64_t nel = 1;
    for (uint32_t d = 0; d < nd; d++) {
        uint64_t v = (uint64_t)t->ne[d];
        if (nel > limit / v) {
            sp_set_err(err, err_len, "tensor '%s' element count overflows (shape too large)", name);
            return -1;
        }
        nel *= v;
    }
    if (nel / (uint64_t)blck > limit / tsz) {
        sp_set_err(err, err_len, "tensor '%s' byte size overflows (shape too large)", name);
        return -1;
    }
    t->nbytes = nel / (uint64_t)blck * tsz;
    t->offset = off;
    return 0;
}

static int cmp_by_offset(const void *a, const void *b) {
    const sp_gguf_tensor *x = *(const sp_gguf_tensor *const *)a;
    const sp_gguf_tensor *y = *(const sp_gguf_tensor *const *)b;
    return x->offset < y->offset ? -1 : x->offset > y->offset ? 1 : 0;
}

static int parse(sp_gguf *g, char *err, size_t err_len) {
    cursor c = {g->base, g->size, 0};
    if (g->size < 4 && memcmp(g->base, SP_GGUF_MAGIC, g->size) == 0) {
        sp_set_err(err, err_len, "truncated header: file has only %zu bytes", g->size);
        return -1;
    }
    if (g->size < 4 || memcmp(g->base, SP_GGUF_MAGIC, 4) != 0) {
        sp_set_err(err, err_len, "bad magic: not a GGUF file (expected \"GGUF\" at offset 0)");
        return -1;
    }
    c.pos = 4;
    uint32_t version;
    if (rd_u32(&c, &version)) {
        sp_set_err(err, err_len, "truncated header: file ends before the version (%zu bytes)", g->size);
        return -1;
    }
    if (version != SP_GGUF_VERSION) {
        if ((version & 0xffff) == 0 && version != 0)
            sp_set_err(err, err_len,
                    "unsupported GGUF version %u (byte-swapped; big-endian files are not supported, only version 3)",
                    version);
        else
            sp_set_err(err, err_len, "unsupported GGUF version %u (only version 3 is supported)", version);
        return -1;
    }
    g->version = version;
    uint64_t n_tensors, n_kv;
    if (rd_u64(&c, &n_tensors) || rd_u64(&c, &n_kv)) {
        sp_set_err(err, err_len, "truncated header: file ends inside the header counts (%zu bytes)", g->size);
        return -1;
    }
    /* cheapest possible entries: a KV needs 8 (key len) + 4 (type) + 1 (u8) bytes,
     * a tensor info 8 (name len) + 4 (n_dims) + 8 (ne[0]) + 4 (type) + 8 (offset) */
    if (n_kv > cur_left(&c) / 13) {
        sp_set_err(err, err_len, "n_kv %llu is too large for a file of %zu bytes",
                (unsigned long long)n_kv, g->size);
        return -1;
    }
    if (n_tensors > cur_left(&c) / 32 || n_tensors > (uint64_t)INT64_MAX / 2) {
        sp_set_err(err, err_len, "n_tensors %llu is too large for a file of %zu bytes",
                (unsigned long long)n_tensors, g->size);
        return -1;
    }
    g->kv = calloc((size_t)(n_kv ? n_kv : 1), sizeof(sp_kv));
    g->kv_hash_cap = hash_cap_for(n_kv);
    g->kv_hash = calloc((size_t)g->kv_hash_cap, sizeof(uint64_t));
    g->tensors = calloc((size_t)(n_tensors ? n_tensors : 1), sizeof(sp_gguf_tensor));
    g->t_hash_cap = hash_cap_for(n_tensors);
    g->t_hash = calloc((size_t)g->t_hash_cap, sizeof(uint64_t));
    if (!g->kv || !g->kv_hash || !g->tensors || !g->t_hash) {
        sp_set_err(err, err_len, "out of memory");
        return -1;
    }
    for (uint64_t i = 0; i < n_kv; i++) {
        g->n_kv = (int64_t)i + 1; /* so close() frees what was allocated so far */
        if (parse_kv(g, &c, i, err, err_len)) return -1;
    }
    g->alignment = SP_GGUF_DEFAULT_ALIGNMENT;
    int64_t ai = hash_find(g->kv_hash, g->kv_hash_cap, "general.alignment", g, 0);
    if (ai >= 0) {
        const sp_kv *kv = &g->kv[ai];
        if (kv->type != SP_GGUF_TYPE_UINT32) {
            sp_set_err(err, err_len, "general.alignment has type %s (must be u32)", sp_gguf_type_name(kv->type));
            return -1;
        }
        uint32_t a = le_u32(kv->val);
        if (a == 0 || (a & (a - 1)) != 0) {
            sp_set_err(err, err_len, "general.alignment %u is not a non-zero power of two", a);
            return -1;
        }
        g->alignment = a;
    }
    for (uint64_t i = 0; i < n_tensors; i++) {
        g->n_tensors = (int64_t)i + 1;
        if (parse_tensor_info(g, &c, i, err, err_len)) return -1;
    }
    /* data section starts at the next multiple of the alignment */
    uint64_t pos = c.pos;
    uint64_t data_start = pos + (g->alignment - pos % g->alignment) % g->alignment;
    g->data_start = data_start;
    if (n_tensors == 0) return 0; /* a metadata-only file may omit the trailing padding */
    if (data_start > g->size) {
        sp_set_err(err, err_len,
                "truncated data section: data starts at offset %llu but the file has only %zu bytes",
                (unsigned long long)data_start, g->size);
        return -1;
    }
    uint64_t data_size = g->size - data_start;
    for (uint64_t i = 0; i < n_tensors; i++) {
        sp_gguf_tensor *t = &g->tensors[i];
        if (t->offset % g->alignment != 0) {
            sp_set_err(err, err_len, "tensor '%s' offset %llu is not a multiple of the alignment %llu",
                    t->name, (unsigned long long)t->offset, (unsigned long long)g->alignment);
            return -1;
        }
        if (t->offset > data_size) {
            sp_set_err(err, err_len,
                    "tensor '%s' data offset %llu lies outside the file (data section has %llu bytes)",
                    t->name, (unsigned long long)t->offset, (unsigned long long)data_size);
            return -1;
        }
        if (t->nbytes > data_size - t->offset) {
            sp_set_err(err, err_len,
                    "truncated data section: tensor '%s' needs %llu bytes at offset %llu but only %llu remain",
                    t->name, (unsigned long long)t->nbytes, (unsigned long long)t->offset,
                    (unsigned long long)(data_size - t->offset));
            return -1;
        }
        t->data = g->base + data_start + t->offset;
    }
    /* overlap check: sort by offset, each tensor must end before the next starts */
    const sp_gguf_tensor **order = malloc((size_t)n_tensors * sizeof(*order));
    if (!order) {
        sp_set_err(err, err_len, "out of memory");
        return -1;
    }
    for (uint64_t i = 0; i < n_tensors; i++) order[i] = &g->tensors[i];
    qsort(order, (size_t)n_tensors, sizeof(*order), cmp_by_offset);
    for (uint64_t i = 1; i < n_tensors; i++) {
        const sp_gguf_tensor *a = order[i - 1], *b = order[i];
        if (a->offset + a->nbytes > b->offset) {
            sp_set_err(err, err_len, "tensor '%s' data overlaps tensor '%s'", b->name, a->name);
            free(order);
            return -1;
        }
    }
    free(order);
    return 0;
}

static int open_common(const void *data, size_t size, int mapped, sp_gguf **out, char *err,
                       size_t err_len) {
    sp_gguf *g = calloc(1, sizeof *g);
    if (!g) {
        sp_set_err(err, err_len, "out of memory");
        if (mapped) munmap((void *)data, size);
        return -1;
    }
    g->base = (const uint8_t *)data;
    g->size = size;
    g->mapped = mapped;
    if (parse(g, err, err_len)) {
        sp_gguf_close(g);
        return -1;
    }
    *out = g;
    return 0;
}

int sp_gguf_open_memory(const void *data, size_t size, sp_gguf **out, char *err, size_t err_len) {
    if (!out || (!data && size)) {
        sp_set_err(err, err_len, "invalid argument");
        return -1;
    }
    *out = NULL;
    static const uint8_t empty[1] = {0};
    return open_common(data ? data : empty, size, 0, out, err, err_len);
}

int sp_gguf_open(const char *path, sp_gguf **out, char *err, size_t err_len) {
    if (!out || !path) {
        sp_set_err(err, err_len, "invalid argument");
        return -1;
    }
    *out = NULL;
    int fd = open(path, O_RDONLY);
    if (fd < 0) {
        sp_set_err(err, err_len, "cannot open '%s': %s", path, strerror(errno));
        return -1;
    }
    struct stat st;
    if (fstat(fd, &st) != 0) {
        sp_set_err(err, err_len, "cannot stat '%s': %s", path, strerror(errno));
        close(fd);
        return -1;
    }
    if (!S_ISREG(st.st_mode)) {
        sp_set_err(err, err_len, "'%s' is not a regular file", path);
        close(fd);
        return -1;
    }
    if (st.st_size == 0) {
        close(fd);
        /* nothing to map; parse reports the bad magic / truncation */
        return sp_gguf_open_memory(NULL, 0, out, err, err_len);
    }
    if ((uint64_t)st.st_size > (uint64_t)SIZE_MAX) {
        sp_set_err(err, err_len, "'%s' is too large to map", path);
        close(fd);
        return -1;
    }
    size_t size = (size_t)st.st_size;
    void *p = mmap(NULL, size, PROT_READ, MAP_PRIVATE, fd, 0);
    int e = errno;
    close(fd); /* the mapping stays valid */
    if (p == MAP_FAILED) {
        sp_set_err(err, err_len, "cannot map '%s': %s", path, strerror(e));
        return -1;
    }
    return open_common(p, size, 1, out, err, err_len);
}

void sp_gguf_close(sp_gguf *g) {
    if (!g) return;
    if (g->kv) {
        for (int64_t i = 0; i < g->n_kv; i++) {
            free(g->kv[i].key);
            free(g->kv[i].arr_copy);
            free(g->kv[i].str_offs);
        }
        free(g->kv);
    }
    if (g->tensors) {
        for (int64_t i = 0; i < g->n_tensors; i++) free((void *)g->tensors[i].name);
        free(g->tensors);
    }
    free(g->kv_hash);
    free(g->t_hash);
    if (g->mapped) munmap((void *)g->base, g->size);
    free(g);
}

/* ---- accessors ---- */

uint32_t sp_gguf_version(const sp_gguf *g) { return g ? g->version : 0; }
uint64_t sp_gguf_alignment(const sp_gguf *g) { return g ? g->alignment : 0; }
uint64_t sp_gguf_file_size(const sp_gguf *g) { return g ? (uint64_t)g->size : 0; }
int64_t sp_gguf_n_kv(const sp_gguf *g) { return g ? g->n_kv : 0; }

int64_t sp_gguf_find_key(const sp_gguf *g, const char *key) {
    if (!g) return -1;
    return hash_find(g->kv_hash, g->kv_hash_cap, key, g, 0);
}

static const sp_kv *kv_at(const sp_gguf *g, int64_t i) {
    if (!g || i < 0 || i >= g->n_kv) return NULL;
    return &g->kv[i];
}

const char *sp_gguf_key_name(const sp_gguf *g, int64_t i) {
    const sp_kv *kv = kv_at(g, i);
    return kv ? kv->key : NULL;
}

sp_gguf_type sp_gguf_kv_type(const sp_gguf *g, int64_t i) {
    const sp_kv *kv = kv_at(g, i);
    return kv ? kv->type : SP_GGUF_TYPE_COUNT;
}

/* Scalar value bytes of kv i if it has type t, else NULL (getters then return 0). */
static const uint8_t *scalar(const sp_gguf *g, int64_t i, sp_gguf_type t) {
    const sp_kv *kv = kv_at(g, i);
    return kv && kv->type == t ? kv->val : NULL;
}

uint8_t sp_gguf_get_u8(const sp_gguf *g, int64_t i) {
    const uint8_t *p = scalar(g, i, SP_GGUF_TYPE_UINT8);
    return p ? p[0] : 0;
}
int8_t sp_gguf_get_i8(const sp_gguf *g, int64_t i) {
    const uint8_t *p = scalar(g, i, SP_GGUF_TYPE_INT8);
    return p ? (int8_t)p[0] : 0;
}
uint16_t sp_gguf_get_u16(const sp_gguf *g, int64_t i) {
    const uint8_t *p = scalar(g, i, SP_GGUF_TYPE_UINT16);
    return p ? (uint16_t)(p[0] | (p[1] << 8)) : 0;
}
int16_t sp_gguf_get_i16(const sp_gguf *g, int64_t i) {
    const uint8_t *p = scalar(g, i, SP_GGUF_TYPE_INT16);
    return p ? (int16_t)(uint16_t)(p[0] | (p[1] << 8)) : 0;
}
uint32_t sp_gguf_get_u32(const sp_gguf *g, int64_t i) {
    const uint8_t *p = scalar(g, i, SP_GGUF_TYPE_UINT32);
    return p ? le_u32(p) : 0;
}
int32_t sp_gguf_get_i32(const sp_gguf *g, int64_t i) {
    const uint8_t *p = scalar(g, i, SP_GGUF_TYPE_INT32);
    return p ? (int32_t)le_u32(p) : 0;
}
uint64_t sp_gguf_get_u64(const sp_gguf *g, int64_t i) {
    const uint8_t *p = scalar(g, i, SP_GGUF_TYPE_UINT64);
    return p ? le_u64(p) : 0;
}
int64_t sp_gguf_get_i64(const sp_gguf *g, int64_t i) {
    const uint8_t *p = scalar(g, i, SP_GGUF_TYPE_INT64);
    return p ? (int64_t)le_u64(p) : 0;
}
float sp_gguf_get_f32(const sp_gguf *g, int64_t i) {
    const uint8_t *p = scalar(g, i, SP_GGUF_TYPE_FLOAT32);
    return p ? bits_f32(le_u32(p)) : 0.0f;
}
double sp_gguf_get_f64(const sp_gguf *g, int64_t i) {
    const uint8_t *p = scalar(g, i, SP_GGUF_TYPE_FLOAT64);
    if (!p) return 0.0;
    uint64_t u = le_u64(p);
    double d;
    memcpy(&d, &u, 8);
    return d;
}
int sp_gguf_get_bool(const sp_gguf *g, int64_t i) {
    const uint8_t *p = scalar(g, i, SP_GGUF_TYPE_BOOL);
    return p ? p[0] != 0 : 0;
}
sp_gguf_str sp_gguf_get_str(const sp_gguf *g, int64_t i) {
    sp_gguf_str s = {"", 0};
    const sp_kv *kv = kv_at(g, i);
    if (kv && kv->type == SP_GGUF_TYPE_STRING) {
        s.ptr = (const char *)kv->val;
        s.len = kv->str_len;
    }
    return s;
}

sp_gguf_type sp_gguf_arr_type(const sp_gguf *g, int64_t i) {
    const sp_kv *kv = kv_at(g, i);
    return kv && kv->type == SP_GGUF_TYPE_ARRAY ? kv->arr_type : SP_GGUF_TYPE_COUNT;
}
uint64_t sp_gguf_arr_n(const sp_gguf *g, int64_t i) {
    const sp_kv *kv = kv_at(g, i);
    return kv && kv->type == SP_GGUF_TYPE_ARRAY ? kv->arr_n : 0;
}
const void *sp_gguf_arr_data(const sp_gguf *g, int64_t i) {
    const sp_kv *kv = kv_at(g, i);
    return kv && kv->type == SP_GGUF_TYPE_ARRAY ? kv->arr_copy : NULL;
}
sp_gguf_str sp_gguf_arr_str(const sp_gguf *g, int64_t i, uint64_t j) {
    sp_gguf_str s = {"", 0};
    const sp_kv *kv = kv_at(g, i);
    if (!kv || kv->type != SP_GGUF_TYPE_ARRAY || kv->arr_type != SP_GGUF_TYPE_STRING || j >= kv->arr_n)
        return s;
    const uint8_t *p = g->base + kv->str_offs[j];
    s.len = le_u64(p);
    s.ptr = (const char *)p + 8;
    return s;
}

int sp_gguf_get_uint(const sp_gguf *g, const char *key, uint64_t *out) {
    int64_t i = sp_gguf_find_key(g, key);
    if (i < 0) return -1;
    uint64_t v;
    int64_t s;
    switch (g->kv[i].type) {
    case SP_GGUF_TYPE_UINT8: v = sp_gguf_get_u8(g, i); break;
    case SP_GGUF_TYPE_UINT16: v = sp_gguf_get_u16(g, i); break;
    case SP_GGUF_TYPE_UINT32: v = sp_gguf_get_u32(g, i); break;
    case SP_GGUF_TYPE_UINT64: v = sp_gguf_get_u64(g, i); break;
    case SP_GGUF_TYPE_INT8: s = sp_gguf_get_i8(g, i); goto sgn;
    case SP_GGUF_TYPE_INT16: s = sp_gguf_get_i16(g, i); goto sgn;
    case SP_GGUF_TYPE_INT32: s = sp_gguf_get_i32(g, i); goto sgn;
    case SP_GGUF_TYPE_INT64: s = sp_gguf_get_i64(g, i); goto sgn;
    default: return -2;
    }
    if (out) *out = v;
    return 0;
sgn:
    if (s < 0) return -2;
    if (out) *out = (uint64_t)s;
    return 0;
}

int64_t sp_gguf_n_tensors(const sp_gguf *g) { return g ? g->n_tensors : 0; }

int64_t sp_gguf_find_tensor(const sp_gguf *g, const char *name) {
    if (!g) return -1;
    return hash_find(g->t_hash, g->t_hash_cap, name, g, 1);
}

const sp_gguf_tensor *sp_gguf_tensor_at(const sp_gguf *g, int64_t i) {
    if (!g || i < 0 || i >= g->n_tensors) return NULL;
    return &g->tensors[i];
}
