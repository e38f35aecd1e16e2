/* Writer -> reader round trip over every value type, arrays and F32/F16/BF16
 * tensors of 1..4 dims, plus the half-precision conversion routines. */
#define _POSIX_C_SOURCE 200809L
#include "formats/gguf.h"

#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include "check.h"

static int64_t key(const sp_gguf *g, const char *k, sp_gguf_type t) {
    int64_t i = sp_gguf_find_key(g, k);
    if (i < 0 || sp_gguf_kv_type(g, i) != t) {
        fprintf(stderr, "FAIL key '%s' missing or type %s\n", k,
                i < 0 ? "-" : sp_gguf_type_name(sp_gguf_kv_type(g, i)));
        check_failures++;
        return -1;
    }
    return i;
}

static uint32_t fbits(float f) {
    uint32_t u;
    memcpy(&u, &f, 4);
    return u;
}

/* Tensor specs: name, type, dims. */
typedef struct {
    const char *name;
    int type;
    uint32_t n_dims;
    int64_t ne[4];
} tspec;
static const tspec tensors[] = {
    {"t.f32.1d", SP_TENSOR_F32, 1, {5, 1, 1, 1}},
    {"t.f16.2d", SP_TENSOR_F16, 2, {3, 7, 1, 1}},
    {"t.bf16.3d", SP_TENSOR_BF16, 3, {2, 3, 4, 1}},
    {"t.f32.4d", SP_TENSOR_F32, 4, {2, 1, 3, 2}},
    {"t.f16.1d", SP_TENSOR_F16, 1, {1, 1, 1, 1}},
    {"t.bf16.4d", SP_TENSOR_BF16, 4, {1, 2, 1, 9}},
};
#define N_TENSORS (sizeof tensors / sizeof tensors[0])

static size_t tbytes(const tspec *t) {
    size_t n = sp_tensor_type_size(t->type);
    for (uint32_t d = 0; d < t->n_dims; d++) n *= (size_t)t->ne[d];
    return n;
}

static void fill(uint8_t *p, size_t n, unsigned seed) {
    for (size_t i = 0; i < n; i++) p[i] = (uint8_t)(seed * 131u + i * 7u + (i >> 3));
}

static void roundtrip(uint32_t alignment) {
    char path[] = "/tmp/test_gguf_roundtrip_XXXXXX";
    int fd = mkstemp(path);
    CHECK(fd >= 0);
    close(fd);

    sp_gguf_writer *w = sp_gguf_writer_new();
    CHECK(w != NULL);
    if (alignment) CHECK(sp_gguf_writer_set_u32(w, "general.alignment", alignment) == 0);
    CHECK(sp_gguf_writer_set_u8(w, "v.u8", 250) == 0);
    CHECK(sp_gguf_writer_set_i8(w, "v.i8", -120) == 0);
    CHECK(sp_gguf_writer_set_u16(w, "v.u16", 65000) == 0);
    CHECK(sp_gguf_writer_set_i16(w, "v.i16", -32000) == 0);
    CHECK(sp_gguf_writer_set_u32(w, "v.u32", 4000000000u) == 0);
    CHECK(sp_gguf_writer_set_i32(w, "v.i32", -2000000000) == 0);
    CHECK(sp_gguf_writer_set_f32(w, "v.f32", 3.25f) == 0);
    CHECK(sp_gguf_writer_set_bool(w, "v.bool", 1) == 0);
    CHECK(sp_gguf_writer_set_bool(w, "v.bool0", 0) == 0);
    CHECK(sp_gguf_writer_set_str(w, "v.str", "hello, gguf \xc3\xa9") == 0);
    CHECK(sp_gguf_writer_set_str(w, "v.empty", "") == 0);
    CHECK(sp_gguf_writer_set_u64(w, "v.u64", UINT64_C(18000000000000000000)) == 0);
    CHECK(sp_gguf_writer_set_i64(w, "v.i64", INT64_C(-9000000000000000000)) == 0);
    CHECK(sp_gguf_writer_set_f64(w, "v.f64", -1.0 / 3.0) == 0);
    int32_t ai[5] = {-1, 0, 1, 2147483647, -2147483647 - 1};
    float af[3] = {0.5f, -1e30f, 1e-40f};
    uint8_t au8[4] = {0, 1, 128, 255};
    int16_t ai16[2] = {-5, 5};
    uint64_t au64[2] = {0, UINT64_MAX};
    double af64[2] = {1e300, -0.0};
    uint8_t abool[3] = {1, 0, 1};
    const char *as[4] = {"a", "", "longer string with spaces", "\xe2\x96\x81tok"};
    CHECK(sp_gguf_writer_set_arr(w, "a.i32", SP_GGUF_TYPE_INT32, ai, 5) == 0);
    CHECK(sp_gguf_writer_set_arr(w, "a.f32", SP_GGUF_TYPE_FLOAT32, af, 3) == 0);
    CHECK(sp_gguf_writer_set_arr(w, "a.u8", SP_GGUF_TYPE_UINT8, au8, 4) == 0);
    CHECK(sp_gguf_writer_set_arr(w, "a.i16", SP_GGUF_TYPE_INT16, ai16, 2) == 0);
    CHECK(sp_gguf_writer_set_arr(w, "a.u64", SP_GGUF_TYPE_UINT64, au64, 2) == 0);
    CHECK(sp_gguf_writer_set_arr(w, "a.f64", SP_GGUF_TYPE_FLOAT64, af64, 2) == 0);
    CHECK(sp_gguf_writer_set_arr(w, "a.bool", SP_GGUF_TYPE_BOOL, abool, 3) == 0);
    CHECK(sp_gguf_writer_set_arr(w, "a.empty", SP_GGUF_TYPE_INT32, NULL, 0) == 0);
    CHECK(sp_gguf_writer_set_arr_str(w, "a.str", as, 4) == 0);

    /* writer-side rejections */
    CHECK(sp_gguf_writer_set_u8(w, "v.u8", 1) == -1);                     /* duplicate */
    if (alignment) CHECK(sp_gguf_writer_set_u32(w, "general.alignment", 64) == -1); /* duplicate */
    CHECK(sp_gguf_writer_set_arr(w, "a.bad", SP_GGUF_TYPE_STRING, as, 1) == -1);
    CHECK(sp_gguf_writer_set_arr(w, "a.bad2", SP_GGUF_TYPE_ARRAY, ai, 1) == -1);

    {
        sp_gguf_writer *wa = sp_gguf_writer_new();
        CHECK(sp_gguf_writer_set_u32(wa, "general.alignment", 48) == -1);  /* not a power of two */
        CHECK(sp_gguf_writer_set_u32(wa, "general.alignment", 0) == -1);
        CHECK(sp_gguf_writer_set_u64(wa, "general.alignment", 64) == -1);  /* must be u32 */
        sp_gguf_writer_free(wa);
    }
    uint8_t *data[N_TENSORS];
    for (size_t i = 0; i < N_TENSORS; i++) {
        data[i] = malloc(tbytes(&tensors[i]));
        fill(data[i], tbytes(&tensors[i]), (unsigned)i + 1);
        CHECK(sp_gguf_writer_add_tensor(w, tensors[i].name, tensors[i].type, tensors[i].n_dims,
                                        tensors[i].ne, data[i]) == 0);
    }
    int64_t ne_bad[2] = {2, 0};
    CHECK(sp_gguf_writer_add_tensor(w, tensors[0].name, SP_TENSOR_F32, 1, tensors[0].ne, data[0]) == -1);
    CHECK(sp_gguf_writer_add_tensor(w, "bad.ndims", SP_TENSOR_F32, 5, tensors[3].ne, data[0]) == -1);
    CHECK(sp_gguf_writer_add_tensor(w, "bad.ne", SP_TENSOR_F32, 2, ne_bad, data[0]) == -1);
    CHECK(sp_gguf_writer_add_tensor(w, "bad.type", 2, 1, tensors[0].ne, data[0]) == -1);

    char err[256] = "";
    int rc = sp_gguf_writer_write(w, path, err, sizeof err);
    CHECK(rc == 0);
    if (rc) fprintf(stderr, "write: %s\n", err);
    sp_gguf_writer_free(w);

    /* writing into a missing directory reports an error */
    sp_gguf_writer *w2 = sp_gguf_writer_new();
    CHECK(sp_gguf_writer_write(w2, "/nonexistent/dir/x.gguf", err, sizeof err) != 0 &&
          strstr(err, "cannot create"));
    sp_gguf_writer_free(w2);

    sp_gguf *g = NULL;
    rc = sp_gguf_open(path, &g, err, sizeof err);
    CHECK(rc == 0);
    if (rc) {
        fprintf(stderr, "open: %s\n", err);
        goto out;
    }
    uint32_t align = alignment ? alignment : 32;
    CHECK(sp_gguf_alignment(g) == align);
    CHECK(sp_gguf_n_kv(g) == 23 + (alignment ? 1 : 0));
    /* insertion order is preserved */
    CHECK(strcmp(sp_gguf_key_name(g, alignment ? 1 : 0), "v.u8") == 0);
    CHECK(strcmp(sp_gguf_key_name(g, sp_gguf_n_kv(g) - 1), "a.str") == 0);
    int64_t i;
    if ((i = key(g, "v.u8", SP_GGUF_TYPE_UINT8)) >= 0) CHECK(sp_gguf_get_u8(g, i) == 250);
    if ((i = key(g, "v.i8", SP_GGUF_TYPE_INT8)) >= 0) CHECK(sp_gguf_get_i8(g, i) == -120);
    if ((i = key(g, "v.u16", SP_GGUF_TYPE_UINT16)) >= 0) CHECK(sp_gguf_get_u16(g, i) == 65000);
    if ((i = key(g, "v.i16", SP_GGUF_TYPE_INT16)) >= 0) CHECK(sp_gguf_get_i16(g, i) == -32000);
    if ((i = key(g, "v.u32", SP_GGUF_TYPE_UINT32)) >= 0) CHECK(sp_gguf_get_u32(g, i) == 4000000000u);
    if ((i = key(g, "v.i32", SP_GGUF_TYPE_INT32)) >= 0) CHECK(sp_gguf_get_i32(g, i) == -2000000000);
    if ((i = key(g, "v.f32", SP_GGUF_TYPE_FLOAT32)) >= 0) CHECK(sp_gguf_get_f32(g, i) == 3.25f);
    if ((i = key(g, "v.bool", SP_GGUF_TYPE_BOOL)) >= 0) CHECK(sp_gguf_get_bool(g, i) == 1);
    if ((i = key(g, "v.bool0", SP_GGUF_TYPE_BOOL)) >= 0) CHECK(sp_gguf_get_bool(g, i) == 0);
    if ((i = key(g, "v.str", SP_GGUF_TYPE_STRING)) >= 0) {
        sp_gguf_str s = sp_gguf_get_str(g, i);
        CHECK(s.len == 14 && memcmp(s.ptr, "hello, gguf \xc3\xa9", 14) == 0);
    }
    if ((i = key(g, "v.empty", SP_GGUF_TYPE_STRING)) >= 0) CHECK(sp_gguf_get_str(g, i).len == 0);
    if ((i = key(g, "v.u64", SP_GGUF_TYPE_UINT64)) >= 0)
        CHECK(sp_gguf_get_u64(g, i) == UINT64_C(18000000000000000000));
    if ((i = key(g, "v.i64", SP_GGUF_TYPE_INT64)) >= 0)
        CHECK(sp_gguf_get_i64(g, i) == INT64_C(-9000000000000000000));
    if ((i = key(g, "v.f64", SP_GGUF_TYPE_FLOAT64)) >= 0) CHECK(sp_gguf_get_f64(g, i) == -1.0 / 3.0);
    /* wrong-type getter is harmless */
    if ((i = key(g, "v.f64", SP_GGUF_TYPE_FLOAT64)) >= 0) CHECK(sp_gguf_get_u32(g, i) == 0);

    struct {
        const char *k;
        sp_gguf_type t;
        const void *p;
        uint64_t n;
        size_t es;
    } arrs[] = {
        {"a.i32", SP_GGUF_TYPE_INT32, ai, 5, 4},     {"a.f32", SP_GGUF_TYPE_FLOAT32, af, 3, 4},
        {"a.u8", SP_GGUF_TYPE_UINT8, au8, 4, 1},     {"a.i16", SP_GGUF_TYPE_INT16, ai16, 2, 2},
        {"a.u64", SP_GGUF_TYPE_UINT64, au64, 2, 8},  {"a.f64", SP_GGUF_TYPE_FLOAT64, af64, 2, 8},
        {"a.bool", SP_GGUF_TYPE_BOOL, abool, 3, 1},  {"a.empty", SP_GGUF_TYPE_INT32, ai, 0, 4},
    };
    for (size_t a = 0; a < sizeof arrs / sizeof arrs[0]; a++) {
        if ((i = key(g, arrs[a].k, SP_GGUF_TYPE_ARRAY)) < 0) continue;
        CHECK(sp_gguf_arr_type(g, i) == arrs[a].t);
        CHECK(sp_gguf_arr_n(g, i) == arrs[a].n);
        const void *p = sp_gguf_arr_data(g, i);
        CHECK(p != NULL && memcmp(p, arrs[a].p, (size_t)arrs[a].n * arrs[a].es) == 0);
        /* arrays are handed out aligned for their element type */
        CHECK(((uintptr_t)p % arrs[a].es) == 0);
    }
    if ((i = key(g, "a.f32", SP_GGUF_TYPE_ARRAY)) >= 0) {
        const float *f = sp_gguf_arr_data(g, i);
        CHECK(f[1] == -1e30f && f[2] == 1e-40f);
    }
    if ((i = key(g, "a.str", SP_GGUF_TYPE_ARRAY)) >= 0) {
        CHECK(sp_gguf_arr_type(g, i) == SP_GGUF_TYPE_STRING && sp_gguf_arr_n(g, i) == 4);
        for (uint64_t j = 0; j < 4; j++) {
            sp_gguf_str s = sp_gguf_arr_str(g, i, j);
            CHECK(s.len == strlen(as[j]) && memcmp(s.ptr, as[j], s.len) == 0);
        }
        CHECK(sp_gguf_arr_str(g, i, 4).len == 0); /* out of range */
    }

    CHECK(sp_gguf_n_tensors(g) == (int64_t)N_TENSORS);
    for (size_t t = 0; t < N_TENSORS; t++) {
        int64_t ti = sp_gguf_find_tensor(g, tensors[t].name);
        CHECK(ti == (int64_t)t);
        const sp_gguf_tensor *x = sp_gguf_tensor_at(g, ti);
        if (!x) continue;
        CHECK(strcmp(x->name, tensors[t].name) == 0);
        CHECK(x->type == tensors[t].type && x->n_dims == tensors[t].n_dims);
        for (int d = 0; d < 4; d++) CHECK(x->ne[d] == tensors[t].ne[d]);
        CHECK(x->nbytes == tbytes(&tensors[t]));
        CHECK(x->offset % align == 0);
        CHECK(memcmp(x->data, data[t], x->nbytes) == 0);
    }
    /* the data section itself sits at an aligned file offset: reopen from memory to see it */
    {
        FILE *f = fopen(path, "rb");
        size_t sz = (size_t)sp_gguf_file_size(g);
        uint8_t *img = malloc(sz);
        CHECK(f && img && fread(img, 1, sz, f) == sz);
        if (f) fclose(f);
        sp_gguf *m = NULL;
        CHECK(sp_gguf_open_memory(img, sz, &m, err, sizeof err) == 0);
        const sp_gguf_tensor *t0 = sp_gguf_tensor_at(m, 0);
        if (t0) {
            size_t data_start = (size_t)((const uint8_t *)t0->data - img) - (size_t)t0->offset;
            CHECK(data_start % align == 0);
            /* the file ends with the last tensor padded to the alignment */
            const sp_gguf_tensor *tl = sp_gguf_tensor_at(m, (int64_t)N_TENSORS - 1);
            size_t end = (size_t)((const uint8_t *)tl->data - img) + (size_t)tl->nbytes;
            CHECK(sz == (end + align - 1) / align * align);
        }
        sp_gguf_close(m);
        free(img);
    }
    sp_gguf_close(g);
out:
    for (size_t t = 0; t < N_TENSORS; t++) free(data[t]);
    remove(path);
}

static float h2f(uint16_t h) { return sp_fp16_to_f32(h); }

static void conversions(void) {
    CHECK(sp_f32_to_fp16(1.0f) == 0x3c00);
    CHECK(sp_f32_to_fp16(-2.0f) == 0xc000);
    CHECK(sp_f32_to_fp16(65504.0f) == 0x7bff);
    CHECK(sp_f32_to_fp16(65520.0f) == 0x7c00); /* rounds up to inf */
    CHECK(sp_f32_to_fp16(65519.99f) == 0x7bff);
    CHECK(sp_f32_to_fp16(INFINITY) == 0x7c00 && sp_f32_to_fp16(-INFINITY) == 0xfc00);
    CHECK((sp_f32_to_fp16(NAN) & 0x7c00) == 0x7c00 && (sp_f32_to_fp16(NAN) & 0x3ff) != 0);
    CHECK(sp_f32_to_fp16(5.9604644775390625e-8f) == 0x0001); /* smallest subnormal */
    CHECK(sp_f32_to_fp16(2.98023223876953125e-8f) == 0x0000); /* half of it: tie to even (0) */
    CHECK(sp_f32_to_fp16(8.9406967163085938e-8f) == 0x0002); /* 1.5 ulp: tie to even (2) */
    CHECK(sp_f32_to_fp16(-0.0f) == 0x8000);
    CHECK(h2f(0x3555) == 0.333251953125f);
    CHECK(isnan(h2f(0x7e00)) && isinf(h2f(0x7c00)));
    /* every finite half survives f16 -> f32 -> f16, and NaN stays NaN */
    for (uint32_t h = 0; h < 65536; h++) {
        float f = h2f((uint16_t)h);
        uint16_t back = sp_f32_to_fp16(f);
        if ((h & 0x7c00) == 0x7c00 && (h & 0x3ff)) {
            if (!isnan(f) || (back & 0x7c00) != 0x7c00 || !(back & 0x3ff)) {
                fprintf(stderr, "FAIL nan half %04x\n", h);
                check_failures++;
            }
        } else if (back != h) {
            fprintf(stderr, "FAIL half %04x -> %g -> %04x\n", h, (double)f, back);
            check_failures++;
        }
    }
    /* f32 -> f16 is round-to-nearest-even: check against neighbours for many values */
    uint32_t x = 12345;
    for (int k = 0; k < 200000; k++) {
        x = x * 1664525u + 1013904223u;
        /* exponents from deep subnormal-half range up to past 65504 */
        uint32_t bits = (x & 0x807fffffu) | ((100u + (x >> 23) % 44u) << 23);
        if (k & 1) bits ^= (x >> 9) & 0xffffu; /* vary the low mantissa bits too */
        float f;
        memcpy(&f, &bits, 4);
        if (!isfinite(f) || fabsf(f) >= 65504.0f) continue;
        uint16_t h = sp_f32_to_fp16(f);
        double v = h2f(h), df = f;
        double dh = fabs(df - v);
        uint16_t mag = h & 0x7fff;
        double up = mag < 0x7bff ? h2f((uint16_t)((h & 0x8000) | (mag + 1))) : v;
        double dn = mag > 0 ? h2f((uint16_t)((h & 0x8000) | (mag - 1))) : v;
        int ok = dh <= fabs(df - up) && dh <= fabs(df - dn);
        if ((dh == fabs(df - up) && up != v) || (dh == fabs(df - dn) && dn != v)) ok = ok && !(h & 1);
        if (!ok) {
            fprintf(stderr, "FAIL f16 rounding of %.9g -> %04x (%g)\n", (double)f, h, v);
            check_failures++;
            break;
        }
    }
    /* bf16 */
    CHECK(sp_f32_to_bf16(1.0f) == 0x3f80);
    CHECK(sp_bf16_to_f32(0x3f80) == 1.0f);
    CHECK(sp_f32_to_bf16(-3.0f) == 0xc040);
    { /* tie: 1 + 2^-8 is halfway between 1 and 1+2^-7: rounds to even (1.0) */
        CHECK(sp_f32_to_bf16(1.00390625f) == 0x3f80);
        CHECK(sp_f32_to_bf16(1.01171875f) == 0x3f82); /* 1 + 3*2^-8: tie, rounds up to even */
    }
    CHECK(isnan(sp_bf16_to_f32(sp_f32_to_bf16(NAN))));
    CHECK(sp_f32_to_bf16(INFINITY) == 0x7f80);
    for (uint32_t h = 0; h < 65536; h++) {
        float f = sp_bf16_to_f32((uint16_t)h);
        if (isnan(f)) continue;
        if (sp_f32_to_bf16(f) != h || (fbits(f) >> 16) != h) {
            fprintf(stderr, "FAIL bf16 %04x\n", h);
            check_failures++;
            break;
        }
    }
    /* sp_convert_to_f32 on unaligned little-endian input */
    uint8_t raw[1 + 3 * 4];
    uint16_t hv[3] = {0x3c00, 0xc000, 0x0001};
    for (int k = 0; k < 3; k++) {
        raw[1 + 2 * k] = (uint8_t)hv[k];
        raw[2 + 2 * k] = (uint8_t)(hv[k] >> 8);
    }
    float out[3];
    sp_convert_to_f32(SP_TENSOR_F16, raw + 1, out, 3);
    CHECK(out[0] == 1.0f && out[1] == -2.0f && out[2] == 5.9604644775390625e-8f);
    uint16_t bv[2] = {0x3f80, 0xc040};
    for (int k = 0; k < 2; k++) {
        raw[1 + 2 * k] = (uint8_t)bv[k];
        raw[2 + 2 * k] = (uint8_t)(bv[k] >> 8);
    }
    sp_convert_to_f32(SP_TENSOR_BF16, raw + 1, out, 2);
    CHECK(out[0] == 1.0f && out[1] == -3.0f);
    float fv[2] = {1.5f, -7.0f};
    sp_convert_to_f32(SP_TENSOR_F32, fv, out, 2);
    CHECK(out[0] == 1.5f && out[1] == -7.0f);
    CHECK(sp_tensor_type_size(SP_TENSOR_F32) == 4 && sp_tensor_type_size(SP_TENSOR_F16) == 2 &&
          sp_tensor_type_size(SP_TENSOR_BF16) == 2 && sp_tensor_type_size(2) == 0 &&
          sp_tensor_type_size(-1) == 0);
    CHECK(strcmp(sp_tensor_type_name(SP_TENSOR_BF16), "bf16") == 0);
    CHECK(strcmp(sp_gguf_type_name(SP_GGUF_TYPE_FLOAT64), "f64") == 0);
}

int main(void) {
    conversions();
    roundtrip(0);   /* default alignment, no general.alignment key */
    roundtrip(64);  /* custom alignment */
    roundtrip(1);   /* degenerate but legal alignment */
    return check_report("test_gguf_roundtrip");
}
