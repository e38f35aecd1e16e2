/* Helper for tests/gguf_interop.py.
 *
 *   test_gguf_dump read FILE        print FILE as seen by our reader
 *   test_gguf_dump write SPEC OUT   write OUT with our writer from SPEC
 *
 * Both use one line-based text format, so Python can produce and check it:
 *   version N / alignment N                      (read only)
 *   kv HEXKEY TYPE VALUE                         scalar: decimal int, %a float, 0/1, hex string
 *   kv HEXKEY arr ELEMTYPE N V1 .. VN            array
 *   tensor HEXNAME TYPE N_DIMS NE0 .. HEXDATA    tensor (ne[0] fastest)
 * Strings are hex-encoded ("-" when empty) so any byte survives. */
#define _POSIX_C_SOURCE 200809L
#include "formats/gguf.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static void hex(const void *p, uint64_t n) {
    const uint8_t *b = p;
    if (n == 0) {
        fputs("-", stdout);
        return;
    }
    for (uint64_t i = 0; i < n; i++) printf("%02x", b[i]);
}

static void scalar(sp_gguf_type t, const uint8_t *p) {
    switch (t) {
    case SP_GGUF_TYPE_UINT8: printf("%u", p[0]); break;
    case SP_GGUF_TYPE_INT8: printf("%d", (int8_t)p[0]); break;
    case SP_GGUF_TYPE_BOOL: printf("%d", p[0] != 0); break;
    case SP_GGUF_TYPE_UINT16: { uint16_t v; memcpy(&v, p, 2); printf("%u", v); break; }
    case SP_GGUF_TYPE_INT16: { int16_t v; memcpy(&v, p, 2); printf("%d", v); break; }
    case SP_GGUF_TYPE_UINT32: { uint32_t v; memcpy(&v, p, 4); printf("%" PRIu32, v); break; }
    case SP_GGUF_TYPE_INT32: { int32_t v; memcpy(&v, p, 4); printf("%" PRId32, v); break; }
    case SP_GGUF_TYPE_FLOAT32: { float v; memcpy(&v, p, 4); printf("%a", (double)v); break; }
    case SP_GGUF_TYPE_UINT64: { uint64_t v; memcpy(&v, p, 8); printf("%" PRIu64, v); break; }
    case SP_GGUF_TYPE_INT64: { int64_t v; memcpy(&v, p, 8); printf("%" PRId64, v); break; }
    case SP_GGUF_TYPE_FLOAT64: { double v; memcpy(&v, p, 8); printf("%a", v); break; }
    default: printf("?"); break;
    }
}

static size_t esize(sp_gguf_type t) {
    switch (t) {
    case SP_GGUF_TYPE_UINT8: case SP_GGUF_TYPE_INT8: case SP_GGUF_TYPE_BOOL: return 1;
    case SP_GGUF_TYPE_UINT16: case SP_GGUF_TYPE_INT16: return 2;
    case SP_GGUF_TYPE_UINT32: case SP_GGUF_TYPE_INT32: case SP_GGUF_TYPE_FLOAT32: return 4;
    case SP_GGUF_TYPE_UINT64: case SP_GGUF_TYPE_INT64: case SP_GGUF_TYPE_FLOAT64: return 8;
    default: return 0;
    }
}

static int do_read(const char *path) {
    sp_gguf *g = NULL;
    char err[512];
    if (sp_gguf_open(path, &g, err, sizeof err)) {
        fprintf(stderr, "error: %s\n", err);
        return 1;
    }
    printf("version %u\nalignment %llu\n", sp_gguf_version(g), (unsigned long long)sp_gguf_alignment(g));
    for (int64_t i = 0; i < sp_gguf_n_kv(g); i++) {
        const char *k = sp_gguf_key_name(g, i);
        sp_gguf_type t = sp_gguf_kv_type(g, i);
        printf("kv ");
        hex(k, strlen(k));
        printf(" %s ", sp_gguf_type_name(t));
        if (t == SP_GGUF_TYPE_STRING) {
            sp_gguf_str s = sp_gguf_get_str(g, i);
            hex(s.ptr, s.len);
        } else if (t == SP_GGUF_TYPE_ARRAY) {
            sp_gguf_type et = sp_gguf_arr_type(g, i);
            uint64_t n = sp_gguf_arr_n(g, i);
            printf("%s %llu", sp_gguf_type_name(et), (unsigned long long)n);
            const uint8_t *d = sp_gguf_arr_data(g, i);
            for (uint64_t j = 0; j < n; j++) {
                putchar(' ');
                if (et == SP_GGUF_TYPE_STRING) {
                    sp_gguf_str s = sp_gguf_arr_str(g, i, j);
                    hex(s.ptr, s.len);
                } else {
                    uint8_t tmp[8] = {0};
                    memcpy(tmp, d + j * esize(et), esize(et));
                    scalar(et, tmp);
                }
            }
        } else {
            /* go through the typed getters, as real callers do */
            uint8_t tmp[8] = {0};
            switch (t) {
            case SP_GGUF_TYPE_UINT8: tmp[0] = sp_gguf_get_u8(g, i); break;
            case SP_GGUF_TYPE_INT8: { int8_t v = sp_gguf_get_i8(g, i); memcpy(tmp, &v, 1); break; }
            case SP_GGUF_TYPE_BOOL: tmp[0] = (uint8_t)sp_gguf_get_bool(g, i); break;
            case SP_GGUF_TYPE_UINT16: { uint16_t v = sp_gguf_get_u16(g, i); memcpy(tmp, &v, 2); break; }
            case SP_GGUF_TYPE_INT16: { int16_t v = sp_gguf_get_i16(g, i); memcpy(tmp, &v, 2); break; }
            case SP_GGUF_TYPE_UINT32: { uint32_t v = sp_gguf_get_u32(g, i); memcpy(tmp, &v, 4); break; }
            case SP_GGUF_TYPE_INT32: { int32_t v = sp_gguf_get_i32(g, i); memcpy(tmp, &v, 4); break; }
            case SP_GGUF_TYPE_FLOAT32: { float v = sp_gguf_get_f32(g, i); memcpy(tmp, &v, 4); break; }
            case SP_GGUF_TYPE_UINT64: { uint64_t v = sp_gguf_get_u64(g, i); memcpy(tmp, &v, 8); break; }
            case SP_GGUF_TYPE_INT64: { int64_t v = sp_gguf_get_i64(g, i); memcpy(tmp, &v, 8); break; }
            case SP_GGUF_TYPE_FLOAT64: { double v = sp_gguf_get_f64(g, i); memcpy(tmp, &v, 8); break; }
            default: break;
            }
            scalar(t, tmp);
        }
        putchar('\n');
    }
    for (int64_t i = 0; i < sp_gguf_n_tensors(g); i++) {
        const sp_gguf_tensor *t = sp_gguf_tensor_at(g, i);
        printf("tensor ");
        hex(t->name, strlen(t->name));
        printf(" %s %u", sp_tensor_type_name(t->type), t->n_dims);
        for (uint32_t d = 0; d < t->n_dims; d++) printf(" %lld", (long long)t->ne[d]);
        putchar(' ');
        hex(t->data, t->nbytes);
        putchar('\n');
    }
    sp_gguf_close(g);
    return 0;
}

/* ---- write mode ---- */

static char *unhex(const char *s, size_t *n) {
    if (strcmp(s, "-") == 0) s = "";
    size_t len = strlen(s) / 2;
    char *out = malloc(len + 1);
    if (!out) return NULL;
    for (size_t i = 0; i < len; i++) {
        unsigned v;
        if (sscanf(s + 2 * i, "%2x", &v) != 1) {
            free(out);
            return NULL;
        }
        out[i] = (char)v;
    }
    out[len] = '\0';
    if (n) *n = len;
    return out;
}

static int type_by_name(const char *s) {
    for (int t = 0; t < SP_GGUF_TYPE_COUNT; t++)
        if (strcmp(s, sp_gguf_type_name((sp_gguf_type)t)) == 0) return t;
    return -1;
}

/* Parses one scalar token of type t into 8 host-order bytes (packed as the type). */
static void parse_scalar(sp_gguf_type t, const char *tok, uint8_t out[8]) {
    memset(out, 0, 8);
    switch (t) {
    case SP_GGUF_TYPE_FLOAT32: { float v = (float)strtod(tok, NULL); memcpy(out, &v, 4); break; }
    case SP_GGUF_TYPE_FLOAT64: { double v = strtod(tok, NULL); memcpy(out, &v, 8); break; }
    case SP_GGUF_TYPE_UINT64: { uint64_t v = strtoull(tok, NULL, 10); memcpy(out, &v, 8); break; }
    default: {
        long long v = strtoll(tok, NULL, 10);
        switch (esize(t)) {
        case 1: { int8_t x = (int8_t)(uint8_t)v; memcpy(out, &x, 1); break; }
        case 2: { uint16_t x = (uint16_t)v; memcpy(out, &x, 2); break; }
        case 4: { uint32_t x = (uint32_t)v; memcpy(out, &x, 4); break; }
        default: memcpy(out, &v, 8); break;
        }
    }
    }
}

static int do_write(const char *spec, const char *out) {
    FILE *f = fopen(spec, "rb");
    if (!f) {
        perror(spec);
        return 1;
    }
    fseek(f, 0, SEEK_END);
    long sz = ftell(f);
    fseek(f, 0, SEEK_SET);
    char *text = malloc((size_t)sz + 1);
    if (!text || fread(text, 1, (size_t)sz, f) != (size_t)sz) {
        fclose(f);
        return 1;
    }
    text[sz] = '\0';
    fclose(f);
    sp_gguf_writer *w = sp_gguf_writer_new();
    int rc = 0;
    char *save_line = NULL;
    for (char *line = strtok_r(text, "\n", &save_line); line && !rc;
         line = strtok_r(NULL, "\n", &save_line)) {
        char *save = NULL;
        char *kind = strtok_r(line, " ", &save);
        if (!kind) continue;
        if (strcmp(kind, "kv") == 0) {
            char *key = unhex(strtok_r(NULL, " ", &save), NULL);
            int t = type_by_name(strtok_r(NULL, " ", &save));
            uint8_t v[8];
            if (t == SP_GGUF_TYPE_STRING) {
                char *s = unhex(strtok_r(NULL, " ", &save), NULL);
                rc = sp_gguf_writer_set_str(w, key, s);
                free(s);
            } else if (t == SP_GGUF_TYPE_ARRAY) {
                int et = type_by_name(strtok_r(NULL, " ", &save));
                uint64_t n = strtoull(strtok_r(NULL, " ", &save), NULL, 10);
                if (et == SP_GGUF_TYPE_STRING) {
                    char **strs = calloc(n ? n : 1, sizeof *strs);
                    for (uint64_t j = 0; j < n; j++) strs[j] = unhex(strtok_r(NULL, " ", &save), NULL);
                    rc = sp_gguf_writer_set_arr_str(w, key, (const char *const *)strs, n);
                    for (uint64_t j = 0; j < n; j++) free(strs[j]);
                    free(strs);
                } else {
                    size_t es = esize((sp_gguf_type)et);
                    uint8_t *d = malloc(n * es + 1);
                    for (uint64_t j = 0; j < n; j++) {
                        parse_scalar((sp_gguf_type)et, strtok_r(NULL, " ", &save), v);
                        memcpy(d + j * es, v, es);
                    }
                    rc = sp_gguf_writer_set_arr(w, key, (sp_gguf_type)et, d, n);
                    free(d);
                }
            } else if (t >= 0) {
                parse_scalar((sp_gguf_type)t, strtok_r(NULL, " ", &save), v);
                switch (t) {
                case SP_GGUF_TYPE_UINT8: rc = sp_gguf_writer_set_u8(w, key, v[0]); break;
                case SP_GGUF_TYPE_INT8: rc = sp_gguf_writer_set_i8(w, key, (int8_t)v[0]); break;
                case SP_GGUF_TYPE_BOOL: rc = sp_gguf_writer_set_bool(w, key, v[0]); break;
                case SP_GGUF_TYPE_UINT16: { uint16_t x; memcpy(&x, v, 2); rc = sp_gguf_writer_set_u16(w, key, x); break; }
                case SP_GGUF_TYPE_INT16: { int16_t x; memcpy(&x, v, 2); rc = sp_gguf_writer_set_i16(w, key, x); break; }
                case SP_GGUF_TYPE_UINT32: { uint32_t x; memcpy(&x, v, 4); rc = sp_gguf_writer_set_u32(w, key, x); break; }
                case SP_GGUF_TYPE_INT32: { int32_t x; memcpy(&x, v, 4); rc = sp_gguf_writer_set_i32(w, key, x); break; }
                case SP_GGUF_TYPE_FLOAT32: { float x; memcpy(&x, v, 4); rc = sp_gguf_writer_set_f32(w, key, x); break; }
                case SP_GGUF_TYPE_UINT64: { uint64_t x; memcpy(&x, v, 8); rc = sp_gguf_writer_set_u64(w, key, x); break; }
                case SP_GGUF_TYPE_INT64: { int64_t x; memcpy(&x, v, 8); rc = sp_gguf_writer_set_i64(w, key, x); break; }
                case SP_GGUF_TYPE_FLOAT64: { double x; memcpy(&x, v, 8); rc = sp_gguf_writer_set_f64(w, key, x); break; }
                default: rc = -1;
                }
            } else {
                rc = -1;
            }
            if (rc) fprintf(stderr, "error: cannot set key '%s'\n", key ? key : "?");
            free(key);
        } else if (strcmp(kind, "tensor") == 0) {
            char *name = unhex(strtok_r(NULL, " ", &save), NULL);
            const char *tn = strtok_r(NULL, " ", &save);
            int type = strcmp(tn, "f32") == 0 ? SP_TENSOR_F32 : strcmp(tn, "f16") == 0 ? SP_TENSOR_F16
                     : strcmp(tn, "bf16") == 0 ? SP_TENSOR_BF16 : -1;
            uint32_t nd = (uint32_t)strtoul(strtok_r(NULL, " ", &save), NULL, 10);
            int64_t ne[SP_GGUF_MAX_DIMS] = {1, 1, 1, 1};
            for (uint32_t d = 0; d < nd && d < SP_GGUF_MAX_DIMS; d++)
                ne[d] = strtoll(strtok_r(NULL, " ", &save), NULL, 10);
            char *data = unhex(strtok_r(NULL, " ", &save), NULL);
            rc = sp_gguf_writer_add_tensor(w, name, type, nd, ne, data);
            if (rc) fprintf(stderr, "error: cannot add tensor '%s'\n", name ? name : "?");
            free(name);
            free(data);
        }
    }
    char err[512] = "";
    if (!rc && sp_gguf_writer_write(w, out, err, sizeof err)) {
        fprintf(stderr, "error: %s\n", err);
        rc = 1;
    }
    sp_gguf_writer_free(w);
    free(text);
    return rc ? 1 : 0;
}

int main(int argc, char **argv) {
    if (argc == 3 && strcmp(argv[1], "read") == 0) return do_read(argv[2]);
    if (argc == 4 && strcmp(argv[1], "write") == 0) return do_write(argv[2], argv[3]);
    fprintf(stderr, "usage: %s read FILE | write SPEC OUT\n", argv[0]);
    return 2;
}
