/* Handcrafted malformed GGUF images: each must be rejected with a message
 * naming its own problem, so every validation branch is really reached. */
#define _POSIX_C_SOURCE 200809L
#include "formats/gguf.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "check.h"

typedef struct {
    uint8_t *p;
    size_t len, cap;
} buf;

static void put(buf *b, const void *src, size_t n) {
    if (b->len + n > b->cap) {
        size_t cap = b->cap ? b->cap : 256;
        while (cap < b->len + n) cap *= 2;
        b->p = realloc(b->p, cap);
        if (!b->p) abort();
        b->cap = cap;
    }
    memcpy(b->p + b->len, src, n);
    b->len += n;
}
static void u32(buf *b, uint32_t v) {
    uint8_t t[4] = {(uint8_t)v, (uint8_t)(v >> 8), (uint8_t)(v >> 16), (uint8_t)(v >> 24)};
    put(b, t, 4);
}
static void u64(buf *b, uint64_t v) {
    u32(b, (uint32_t)v);
    u32(b, (uint32_t)(v >> 32));
}
static void u8(buf *b, uint8_t v) { put(b, &v, 1); }
static void gstr(buf *b, const char *s) {
    u64(b, strlen(s));
    put(b, s, strlen(s));
}
static void hdr(buf *b, uint32_t version, uint64_t n_tensors, uint64_t n_kv) {
    put(b, "GGUF", 4);
    u32(b, version);
    u64(b, n_tensors);
    u64(b, n_kv);
}
static void kv_u32(buf *b, const char *k, uint32_t v) {
    gstr(b, k);
    u32(b, SP_GGUF_TYPE_UINT32);
    u32(b, v);
}
static void kv_u64(buf *b, const char *k, uint64_t v) {
    gstr(b, k);
    u32(b, SP_GGUF_TYPE_UINT64);
    u64(b, v);
}
static void kv_str(buf *b, const char *k, const char *v) {
    gstr(b, k);
    u32(b, SP_GGUF_TYPE_STRING);
    gstr(b, v);
}
static void ti(buf *b, const char *name, uint32_t n_dims, const int64_t *ne, uint32_t type, uint64_t off) {
    gstr(b, name);
    u32(b, n_dims);
    for (uint32_t d = 0; d < n_dims; d++) u64(b, (uint64_t)ne[d]);
    u32(b, type);
    u64(b, off);
}
static void pad(buf *b, size_t a) {
    while (b->len % a) u8(b, 0);
}
static void zeros(buf *b, size_t n) {
    for (size_t i = 0; i < n; i++) u8(b, (uint8_t)i);
}

/* Opens an exact-size heap copy (so ASan catches any over-read) and expects failure with want in err. */
static void expect_fail(const char *name, buf *b, const char *want) {
    uint8_t *copy = malloc(b->len ? b->len : 1);
    if (!copy) abort();
    memcpy(copy, b->p, b->len);
    sp_gguf *g = NULL;
    char err[512] = "";
    int rc = sp_gguf_open_memory(copy, b->len, &g, err, sizeof err);
    if (rc == 0) {
        fprintf(stderr, "FAIL %s: opened successfully, expected error containing '%s'\n", name, want);
        check_failures++;
        sp_gguf_close(g);
    } else if (!strstr(err, want)) {
        fprintf(stderr, "FAIL %s: error '%s' does not contain '%s'\n", name, err, want);
        check_failures++;
    } else if (g != NULL) {
        fprintf(stderr, "FAIL %s: *out not NULL on failure\n", name);
        check_failures++;
    } else {
        printf("ok   %-28s %s\n", name, err);
    }
    free(copy);
    free(b->p);
    memset(b, 0, sizeof *b);
}

/* A small valid file: 2 KVs, two f32 tensors. */
static void good_file(buf *b) {
    int64_t ne1[1] = {4}, ne2[2] = {2, 3};
    hdr(b, 3, 2, 2);
    kv_str(b, "general.architecture", "test");
    kv_u32(b, "test.n", 7);
    ti(b, "a", 1, ne1, SP_TENSOR_F32, 0);
    ti(b, "b", 2, ne2, SP_TENSOR_F32, 32);
    pad(b, 32);
    zeros(b, 16);
    pad(b, 32);
    zeros(b, 24);
}

static void test_good(void) {
    buf b = {0};
    good_file(&b);
    sp_gguf *g = NULL;
    char err[256] = "";
    int rc = sp_gguf_open_memory(b.p, b.len, &g, err, sizeof err);
    if (rc != 0) {
        fprintf(stderr, "FAIL good file: %s\n", err);
        check_failures++;
        free(b.p);
        return;
    }
    CHECK(sp_gguf_version(g) == 3);
    CHECK(sp_gguf_alignment(g) == 32);
    CHECK(sp_gguf_n_kv(g) == 2);
    CHECK(sp_gguf_n_tensors(g) == 2);
    int64_t k = sp_gguf_find_key(g, "test.n");
    CHECK(k == 1 && sp_gguf_kv_type(g, k) == SP_GGUF_TYPE_UINT32 && sp_gguf_get_u32(g, k) == 7);
    uint64_t v = 0;
    CHECK(sp_gguf_get_uint(g, "test.n", &v) == 0 && v == 7);
    CHECK(sp_gguf_get_uint(g, "missing", &v) == -1);
    CHECK(sp_gguf_get_uint(g, "general.architecture", &v) == -2);
    sp_gguf_str s = sp_gguf_get_str(g, sp_gguf_find_key(g, "general.architecture"));
    CHECK(s.len == 4 && memcmp(s.ptr, "test", 4) == 0);
    int64_t t = sp_gguf_find_tensor(g, "b");
    const sp_gguf_tensor *tb = sp_gguf_tensor_at(g, t);
    CHECK(t == 1 && tb && tb->n_dims == 2 && tb->ne[0] == 2 && tb->ne[1] == 3 && tb->ne[2] == 1 &&
          tb->nbytes == 24 && tb->offset == 32);
    CHECK(tb && (const uint8_t *)tb->data == b.p + b.len - 24);
    CHECK(sp_gguf_find_tensor(g, "zz") == -1 && sp_gguf_tensor_at(g, 2) == NULL);
    sp_gguf_close(g);

    /* the same image through the file path (mmap) */
    char path[] = "/tmp/test_gguf_malformed_XXXXXX";
    int fd = mkstemp(path);
    CHECK(fd >= 0);
    FILE *f = fdopen(fd, "wb");
    CHECK(f && fwrite(b.p, 1, b.len, f) == b.len);
    fclose(f);
    g = NULL;
    rc = sp_gguf_open(path, &g, err, sizeof err);
    CHECK(rc == 0 && sp_gguf_n_tensors(g) == 2 && sp_gguf_file_size(g) == b.len);
    if (rc == 0) {
        const sp_gguf_tensor *ta = sp_gguf_tensor_at(g, 0);
        CHECK(ta && memcmp(ta->data, b.p + b.len - 24 - 16 - 16, 16) == 0);
    }
    sp_gguf_close(g);
    remove(path);
    rc = sp_gguf_open("/nonexistent/dir/x.gguf", &g, err, sizeof err);
    CHECK(rc != 0 && strstr(err, "cannot open"));

    /* every proper prefix must be rejected cleanly (ASan checks the reads) */
    for (size_t n = 0; n < b.len; n++) {
        uint8_t *copy = malloc(n ? n : 1);
        memcpy(copy, b.p, n);
        g = NULL;
        err[0] = 0;
        rc = sp_gguf_open_memory(copy, n, &g, err, sizeof err);
        if (rc == 0 || !(strstr(err, "truncated") || strstr(err, "longer than") ||
                         strstr(err, "too large") || strstr(err, "outside the file"))) {
            fprintf(stderr, "FAIL prefix %zu: rc %d err '%s'\n", n, rc, err);
            check_failures++;
        }
        if (rc == 0) sp_gguf_close(g);
        free(copy);
    }
    free(b.p);
}

int main(void) {
    buf b = {0};
    int64_t ne4[1] = {4};

    test_good();

    put(&b, "GGML", 4); u32(&b, 3); u64(&b, 0); u64(&b, 0);
    expect_fail("bad magic", &b, "bad magic");

    hdr(&b, 2, 0, 0);
    expect_fail("version 2", &b, "unsupported GGUF version 2");

    hdr(&b, 0x03000000u, 0, 0);
    expect_fail("big-endian version", &b, "big-endian");

    put(&b, "GGUF", 4); u32(&b, 3); u64(&b, 0);
    expect_fail("truncated header counts", &b, "truncated header");

    hdr(&b, 3, 0, 1); gstr(&b, "k"); u32(&b, SP_GGUF_TYPE_UINT32); u8(&b, 1);
    expect_fail("truncated kv value", &b, "truncated header: file ends inside the value of key 'k'");

    hdr(&b, 3, 0, 1000); kv_u32(&b, "a", 1);
    expect_fail("n_kv too large", &b, "n_kv 1000 is too large");

    hdr(&b, 3, 1000, 0); zeros(&b, 64);
    expect_fail("n_tensors too large", &b, "n_tensors 1000 is too large");

    hdr(&b, 3, UINT64_MAX, UINT64_MAX);
    expect_fail("n_kv overflow", &b, "n_kv 18446744073709551615 is too large");

    hdr(&b, 3, 0, 1); u64(&b, 1000); put(&b, "abc", 3); zeros(&b, 10);
    expect_fail("key too long", &b, "string length 1000 of key 0 is longer");

    hdr(&b, 3, 0, 1); gstr(&b, "s"); u32(&b, SP_GGUF_TYPE_STRING); u64(&b, 99); put(&b, "xy", 2);
    expect_fail("string value too long", &b, "string length 99 of the value of key 's'");

    hdr(&b, 3, 0, 1); gstr(&b, "arr"); u32(&b, SP_GGUF_TYPE_ARRAY); u32(&b, SP_GGUF_TYPE_UINT32);
    u64(&b, 1000000); zeros(&b, 16);
    expect_fail("array too long", &b, "array of 1000000 u32 elements for key 'arr'");

    hdr(&b, 3, 0, 1); gstr(&b, "arr"); u32(&b, SP_GGUF_TYPE_ARRAY); u32(&b, SP_GGUF_TYPE_UINT64);
    u64(&b, UINT64_MAX / 4); zeros(&b, 16);
    expect_fail("array size overflow", &b, "u64 elements for key 'arr' is longer");

    hdr(&b, 3, 0, 1); gstr(&b, "sa"); u32(&b, SP_GGUF_TYPE_ARRAY); u32(&b, SP_GGUF_TYPE_STRING);
    u64(&b, 50); gstr(&b, "x");
    expect_fail("string array too long", &b, "array of 50 strings for key 'sa'");

    hdr(&b, 3, 0, 1); gstr(&b, "sa"); u32(&b, SP_GGUF_TYPE_ARRAY); u32(&b, SP_GGUF_TYPE_STRING);
    u64(&b, 2); gstr(&b, "x"); u64(&b, 500); zeros(&b, 8);
    expect_fail("string array element long", &b, "element 1 of array 'sa'");

    hdr(&b, 3, 0, 1); gstr(&b, "bad.type"); u32(&b, 13); u32(&b, 0);
    expect_fail("unknown value type", &b, "unknown value type 13 for key 'bad.type'");

    hdr(&b, 3, 0, 1); gstr(&b, "bad.arr"); u32(&b, SP_GGUF_TYPE_ARRAY); u32(&b, 77); u64(&b, 0);
    expect_fail("unknown array elem type", &b, "unknown array element type 77 for key 'bad.arr'");

    hdr(&b, 3, 0, 1); gstr(&b, "nest"); u32(&b, SP_GGUF_TYPE_ARRAY); u32(&b, SP_GGUF_TYPE_ARRAY);
    u64(&b, 1); u32(&b, SP_GGUF_TYPE_UINT8); u64(&b, 1); u8(&b, 1);
    expect_fail("nested array", &b, "nested arrays are not supported (key 'nest')");

    hdr(&b, 3, 0, 3); kv_u32(&b, "a.b", 1); kv_u32(&b, "c", 2); kv_u64(&b, "a.b", 3);
    expect_fail("duplicate key", &b, "duplicate key 'a.b'");

    hdr(&b, 3, 0, 1); u64(&b, 3); put(&b, "a\0b", 3); u32(&b, SP_GGUF_TYPE_UINT8); u8(&b, 0);
    expect_fail("NUL in key", &b, "key 0 contains a NUL byte");

    hdr(&b, 3, 2, 0); ti(&b, "w", 1, ne4, SP_TENSOR_F32, 0); ti(&b, "w", 1, ne4, SP_TENSOR_F32, 32);
    pad(&b, 32); zeros(&b, 64);
    expect_fail("duplicate tensor", &b, "duplicate tensor name 'w'");

    {
        int64_t ne5[5] = {1, 1, 1, 1, 1};
        hdr(&b, 3, 1, 0); ti(&b, "t5", 5, ne5, SP_TENSOR_F32, 0); pad(&b, 32); zeros(&b, 64);
        expect_fail("n_dims 5", &b, "tensor 't5' has n_dims 5");
        hdr(&b, 3, 1, 0); ti(&b, "t0", 0, ne5, SP_TENSOR_F32, 0); zeros(&b, 8); pad(&b, 32); zeros(&b, 64);
        expect_fail("n_dims 0", &b, "tensor 't0' has n_dims 0");
    }
    {
        int64_t ne[2] = {4, 0};
        hdr(&b, 3, 1, 0); ti(&b, "z", 2, ne, SP_TENSOR_F32, 0); pad(&b, 32); zeros(&b, 64);
        expect_fail("zero dim", &b, "tensor 'z' has invalid dimension ne[1] = 0");
        ne[1] = -3;
        hdr(&b, 3, 1, 0); ti(&b, "neg", 2, ne, SP_TENSOR_F32, 0); pad(&b, 32); zeros(&b, 64);
        expect_fail("negative dim", &b, "tensor 'neg' has invalid dimension ne[1] = -3");
    }
    {
        int64_t ne[3] = {INT64_C(1) << 31, INT64_C(1) << 31, 4};
        hdr(&b, 3, 1, 0); ti(&b, "big", 3, ne, SP_TENSOR_F32, 0); pad(&b, 32); zeros(&b, 64);
        expect_fail("element count overflow", &b, "tensor 'big' element count overflows");
        int64_t ne1[1] = {INT64_C(1) << 62};
        hdr(&b, 3, 1, 0); ti(&b, "big2", 1, ne1, SP_TENSOR_F32, 0); pad(&b, 32); zeros(&b, 64);
        expect_fail("byte size overflow", &b, "tensor 'big2' byte size overflows");
    }
    hdr(&b, 3, 1, 0); ti(&b, "q", 1, ne4, 3 /* Q4_1 */, 0); pad(&b, 32); zeros(&b, 64);
    expect_fail("unknown tensor type", &b, "tensor 'q' has unsupported tensor type 3");

    hdr(&b, 3, 0, 1); kv_u64(&b, "general.alignment", 32);
    expect_fail("alignment type", &b, "general.alignment has type u64");

    hdr(&b, 3, 0, 1); kv_u32(&b, "general.alignment", 48);
    expect_fail("alignment not pow2", &b, "general.alignment 48 is not a non-zero power of two");

    hdr(&b, 3, 0, 1); kv_u32(&b, "general.alignment", 0);
    expect_fail("alignment zero", &b, "general.alignment 0 is not a non-zero power of two");

    hdr(&b, 3, 1, 0); ti(&b, "mis", 1, ne4, SP_TENSOR_F32, 8); pad(&b, 32); zeros(&b, 64);
    expect_fail("misaligned offset", &b, "tensor 'mis' offset 8 is not a multiple of the alignment 32");

    hdr(&b, 3, 1, 1); kv_u32(&b, "general.alignment", 64);
    ti(&b, "mis64", 1, ne4, SP_TENSOR_F32, 32); pad(&b, 64); zeros(&b, 128);
    expect_fail("misaligned offset (64)", &b, "tensor 'mis64' offset 32 is not a multiple of the alignment 64");

    hdr(&b, 3, 1, 0); ti(&b, "far", 1, ne4, SP_TENSOR_F32, 1 << 20); pad(&b, 32); zeros(&b, 64);
    expect_fail("data outside file", &b, "tensor 'far' data offset 1048576 lies outside the file");

    hdr(&b, 3, 1, 0); ti(&b, "huge_off", 1, ne4, SP_TENSOR_F32, UINT64_MAX - 31); pad(&b, 32); zeros(&b, 64);
    expect_fail("offset near 2^64", &b, "tensor 'huge_off' data offset");

    {
        int64_t ne16[1] = {16};
        hdr(&b, 3, 2, 0); ti(&b, "x", 1, ne16, SP_TENSOR_F32, 0); ti(&b, "y", 1, ne4, SP_TENSOR_F32, 32);
        pad(&b, 32); zeros(&b, 128);
        expect_fail("overlap", &b, "tensor 'y' data overlaps tensor 'x'");
    }
    {
        int64_t ne16[1] = {16};
        hdr(&b, 3, 1, 0); ti(&b, "cut", 1, ne16, SP_TENSOR_F32, 0); pad(&b, 32); zeros(&b, 40);
        expect_fail("truncated data", &b, "truncated data section: tensor 'cut' needs 64 bytes");
    }
    hdr(&b, 3, 1, 0); ti(&b, "nodata", 1, ne4, SP_TENSOR_F32, 0); u8(&b, 0);
    expect_fail("data section missing", &b, "truncated data section: data starts at offset");

    hdr(&b, 3, 1, 0); gstr(&b, "tname_long"); u32(&b, 1); u64(&b, 4); u32(&b, 0); u32(&b, 0);
    expect_fail("truncated tensor info", &b, "truncated header: file ends inside tensor info of 'tname_long'");

    /* a metadata-only file needs no data section */
    {
        hdr(&b, 3, 0, 1); kv_u32(&b, "only", 5);
        sp_gguf *g = NULL;
        char err[256] = "";
        int rc = sp_gguf_open_memory(b.p, b.len, &g, err, sizeof err);
        CHECK(rc == 0 && sp_gguf_n_tensors(g) == 0);
        sp_gguf_close(g);
        free(b.p);
        memset(&b, 0, sizeof b);
    }
    /* empty buffer and NULL arguments */
    {
        sp_gguf *g = NULL;
        char err[256] = "";
        CHECK(sp_gguf_open_memory(NULL, 0, &g, err, sizeof err) != 0 && strstr(err, "truncated header"));
        CHECK(sp_gguf_open_memory("GGUF", 4, NULL, err, sizeof err) != 0);
        CHECK(sp_gguf_open_memory("GGUF", 4, &g, NULL, 0) != 0); /* no error buffer: must not crash */
    }

    return check_report("test_gguf_malformed");
}
