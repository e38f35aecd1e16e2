/* The weight codecs (formats/quant.c, formats/codec_sst.c) and their path
 * through the loader and spectral_model_quantize.
 *
 *   test_codecs MODEL.gguf WORKDIR    unit tests; MODEL is a small spectralmlp
 *                                     model with D and F multiples of 32
 *   test_codecs dump MODEL.gguf NAME  writes tensor NAME as the loader
 *                                     reconstructs it (float32, raw) to stdout,
 *                                     for tests/test_quantize.py
 *
 * Unit tests: hand-checked Q8_0/Q4_0 blocks; sst round trips that keep every
 * coefficient (exact up to rounding) for odd and even shapes, Parseval's
 * identity for the error of a partial one; index validation; and files with
 * malformed compressed tensors, each refused by spectral_model_load with a
 * message naming the fault (never a crash: the test runs under ASan too);
 * the CPU backend's dequantize_rows op against formats/quant.c's decoder
 * (bit for bit, whole matrices and gathered rows, subnormal scales, refused
 * arguments); and a Q8_0 matrix kept in the file's blocks by
 * sp_model_take_matrix (zero copy) while sp_model_take_tensor decodes it.
 * Values derived numerically are compared with numpy in test_quantize.py. */
#define _POSIX_C_SOURCE 200809L
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "formats/codec_sst.h"
#include "formats/gguf.h"
#include "formats/quant.h"
#include "models/model.h"
#include "spectral.h"
#include "check.h"


/* ---- ggml blocks ---- */

static void test_blocks(void) {
    float x[64], y[64];
    uint8_t q[2 * SP_Q8_0_BLOCK_BYTES];
    /* Q8_0: block 0 = j - 16 (max |x| 16 -> d = 16/127), block 1 all zero */
    for (int j = 0; j < 32; j++) x[j] = (float)(j - 16);
    for (int j = 32; j < 64; j++) x[j] = 0.0f;
    CHECK(sp_quant_row_bytes(SP_TENSOR_Q8_0, 64) == 68 && sp_quant_row_bytes(SP_TENSOR_Q8_0, 33) == 0);
    CHECK(sp_quantize_row(SP_TENSOR_Q8_0, x, q, 64) == 0);
    CHECK(q[0] == (sp_f32_to_fp16(16.0f / 127.0f) & 0xff) && q[1] == (sp_f32_to_fp16(16.0f / 127.0f) >> 8));
    CHECK((int8_t)q[2] == -127 && (int8_t)q[2 + 16] == 0 && (int8_t)q[2 + 31] == 119); /* 15*127/16 = 119.06 */
    CHECK(q[34] == 0 && q[35] == 0); /* d = 0 */
    CHECK(sp_dequantize_row(SP_TENSOR_Q8_0, q, y, 64) == 0);
    const float d8 = sp_fp16_to_f32(sp_f32_to_fp16(16.0f / 127.0f));
    for (int j = 0; j < 32; j++) CHECK(fabsf(y[j] - x[j]) <= 0.5f * d8 * 1.01f + 16.0f * 1e-3f);
    for (int j = 32; j < 64; j++) CHECK(y[j] == 0.0f);
    /* roundf is half away from zero: 63.5/127 * 127 -> 64 (d exact: 0.5 = 63.5/127) */
    for (int j = 0; j < 32; j++) x[j] = 0.0f;
    x[0] = 127.0f;
    x[1] = -63.5f;
    x[2] = 63.5f;
    CHECK(sp_quantize_row(SP_TENSOR_Q8_0, x, q, 32) == 0);
    CHECK((int8_t)q[2] == 127 && (int8_t)q[3] == -64 && (int8_t)q[4] == 64);

    /* Q4_0: the signed extreme maps to -8: max = -4 -> d = 0.5, x = 3.5 -> 15 */
    uint8_t q4[SP_Q4_0_BLOCK_BYTES];
    for (int j = 0; j < 32; j++) x[j] = 0.0f;
    x[0] = -4.0f;
    x[1] = 3.5f;
    x[16] = 1.0f;
    x[17] = 4.0f; /* |4| == |-4|: the first one wins, so d = 0.5 and 4 clamps to 15 */
    CHECK(sp_quantize_row(SP_TENSOR_Q4_0, x, q4, 32) == 0);
    CHECK(sp_fp16_to_f32((uint16_t)(q4[0] | (q4[1] << 8))) == 0.5f);
    CHECK((q4[2] & 15) == 0 && (q4[3] & 15) == 15);  /* -4/0.5+8.5 = 0.5 -> 0; 3.5 -> 15.5 -> 15 */
    CHECK((q4[2] >> 4) == 10 && (q4[3] >> 4) == 15); /* 1 -> 10; 4 -> 16.5 -> 15 */
    CHECK(sp_dequantize_row(SP_TENSOR_Q4_0, q4, y, 32) == 0);
    CHECK(y[0] == -4.0f && y[1] == 3.5f && y[16] == 1.0f && y[17] == 3.5f && y[5] == 0.0f);
    CHECK(sp_quantize_row(SP_TENSOR_F32, x, q4, 32) == -1 && sp_dequantize_row(SP_TENSOR_Q4_0, q4, y, 31) == -1);
}

/* ---- sst ---- */

static void test_sst_shape(int64_t M, int64_t N) {
    const int64_t n = M * N, storable = sp_sst_n_storable(M, N);
    /* storable bins carry exactly M*N real degrees of freedom */
    int64_t dof = 0;
    for (int64_t i = 0; i < storable; i++) dof += 2;
    const int64_t n_self = (M % 2 == 0 ? 2 : 1) * (N % 2 == 0 ? 2 : 1); /* real-valued bins */
    CHECK(dof - n_self == n);
    float *w = malloc((size_t)n * sizeof *w), *back = malloc((size_t)n * sizeof *back);
    float *val = malloc((size_t)(2 * storable) * sizeof *val);
    int32_t *idx = malloc((size_t)storable * sizeof *idx);
    for (int64_t i = 0; i < n; i++) w[i] = (float)test_urand();
    char err[256];
    CHECK(sp_sst_encode(w, M, N, storable, val, idx, err, sizeof err) == 0);
    CHECK(sp_sst_decode(val, idx, storable, M, N, back, err, sizeof err) == 0);
    double e = 0.0;
    for (int64_t i = 0; i < n; i++) e = fmax(e, fabs((double)back[i] - w[i]));
    if (e > 1e-5) fprintf(stderr, "sst %lldx%lld full round trip: max error %g\n", (long long)M, (long long)N, e);
    CHECK(e <= 1e-5);
    /* keep half: ||W - W'||^2 = ||W||^2 - sum over kept of mult |X|^2 (Parseval) */
    const int64_t k = storable / 2 > 0 ? storable / 2 : 1;
    CHECK(sp_sst_encode(w, M, N, k, val, idx, err, sizeof err) == 0);
    CHECK(sp_sst_decode(val, idx, k, M, N, back, err, sizeof err) == 0);
    double err2 = 0.0, w2 = 0.0, kept = 0.0;
    for (int64_t i = 0; i < n; i++) {
        err2 += ((double)back[i] - w[i]) * ((double)back[i] - w[i]);
        w2 += (double)w[i] * w[i];
    }
    const int64_t Nh = N / 2 + 1;
    for (int64_t j = 0; j < k; j++) {
        const int64_t r = idx[j] / Nh, c = idx[j] % Nh;
        const int sc_col = c == 0 || (N % 2 == 0 && c == N / 2);
        const double mult = sc_col && (r == 0 || 2 * r == M) ? 1.0 : 2.0;
        kept += mult * ((double)val[2 * j] * val[2 * j] + (double)val[2 * j + 1] * val[2 * j + 1]);
        if (j) CHECK(idx[j] > idx[j - 1]);
    }
    CHECK(fabs(err2 - (w2 - kept)) <= 1e-4 * w2);
    free(w);
    free(back);
    free(val);
    free(idx);
}

static int has(const char *err, const char *what) {
    if (strstr(err, what)) return 1;
    fprintf(stderr, "expected '%s' in: %s\n", what, err);
    return 0;
}

static void test_sst_index(void) {
    char err[256];
    /* 4 x 6: Nh = 4, half = 16; columns 0 and 3 self-conjugate: rows 3 implied */
    const int32_t ok[3] = {0, 5, 9};
    CHECK(sp_sst_check_index(ok, 3, 4, 6, err, sizeof err) == 0);
    const int32_t range[2] = {1, 16};
    CHECK(sp_sst_check_index(range, 2, 4, 6, err, sizeof err) == -1 && has(err, "outside [0, 16)"));
    const int32_t neg[1] = {-1};
    CHECK(sp_sst_check_index(neg, 1, 4, 6, err, sizeof err) == -1 && has(err, "outside"));
    const int32_t dup[3] = {1, 2, 2};
    CHECK(sp_sst_check_index(dup, 3, 4, 6, err, sizeof err) == -1 && has(err, "duplicate index 2"));
    const int32_t order[2] = {5, 2};
    CHECK(sp_sst_check_index(order, 2, 4, 6, err, sizeof err) == -1 && has(err, "not increasing"));
    const int32_t conj[1] = {12}; /* row 3, column 0: the conjugate of row 1 */
    CHECK(sp_sst_check_index(conj, 1, 4, 6, err, sizeof err) == -1 && has(err, "implied conjugate"));
    float w[24] = {0}, val[2];
    int32_t idx[1];
    w[3] = NAN;
    CHECK(sp_sst_encode(w, 4, 6, 1, val, idx, err, sizeof err) == -1 && has(err, "non-finite"));
    w[3] = 0.0f;
    CHECK(sp_sst_encode(w, 4, 6, 0, val, idx, err, sizeof err) == -1 && has(err, "outside [1,"));
    CHECK(sp_sst_encode(w, (int64_t)1 << 20, (int64_t)1 << 20, 1, val, idx, err, sizeof err) == -1);
    const float nanv[2] = {NAN, 0.0f};
    CHECK(sp_sst_decode(nanv, ok, 1, 4, 6, w, err, sizeof err) == -1 && has(err, "not finite"));
}

/* ---- files ---- */

/* Copies src into a writer, letting edit() replace or drop tensors and keys. */
typedef int (*edit_fn)(sp_gguf_writer *w, const sp_gguf *g, const sp_gguf_tensor *t); /* 1 = handled */

static int rewrite(const char *src, const char *dst, edit_fn edit, const char *drop_key,
                   const char *add_shape_key, const uint64_t *shape) {
    sp_gguf *g = NULL;
    char err[256];
    if (sp_gguf_open(src, &g, err, sizeof err)) {
        fprintf(stderr, "%s\n", err);
        return -1;
    }
    sp_gguf_writer *w = sp_gguf_writer_new();
    int bad = !w;
    for (int64_t i = 0; !bad && i < sp_gguf_n_kv(g); i++) {
        if (drop_key && strcmp(sp_gguf_key_name(g, i), drop_key) == 0) continue;
        if (add_shape_key && strcmp(sp_gguf_key_name(g, i), add_shape_key) == 0) continue;
        bad = sp_gguf_writer_copy_kv(w, g, i);
    }
    if (!bad && add_shape_key) bad = sp_gguf_writer_set_arr(w, add_shape_key, SP_GGUF_TYPE_UINT64, shape, 2);
    for (int64_t i = 0; !bad && i < sp_gguf_n_tensors(g); i++) {
        const sp_gguf_tensor *t = sp_gguf_tensor_at(g, i);
        const int r = edit ? edit(w, g, t) : 0;
        if (r < 0) bad = 1;
        if (r == 0) bad = sp_gguf_writer_add_tensor(w, t->name, t->type, t->n_dims, t->ne, t->data);
    }
    if (!bad) bad = sp_gguf_writer_write(w, dst, err, sizeof err);
    sp_gguf_writer_free(w);
    sp_gguf_close(g);
    return bad ? -1 : 0;
}

static const char *SST = "blk.0.ffn_up.weight";

/* Replaces the index tensor of SST by one with entry 0 changed. */
static int32_t g_patch_value;
static int g_patch_pos;
static int patch_index(sp_gguf_writer *w, const sp_gguf *g, const sp_gguf_tensor *t) {
    (void)g;
    if (strcmp(t->name, "blk.0.ffn_up.weight.sst_index") != 0) return 0;
    int32_t *idx = malloc((size_t)t->ne[0] * sizeof *idx);
    memcpy(idx, t->data, (size_t)t->ne[0] * sizeof *idx);
    idx[g_patch_pos] = g_patch_value == INT32_MIN ? idx[g_patch_pos - 1] : g_patch_value;
    const int rc = sp_gguf_writer_add_tensor(w, t->name, t->type, t->n_dims, t->ne, idx);
    free(idx);
    return rc ? -1 : 1;
}
/* Stores the index as F32 instead of I32. */
static int index_as_f32(sp_gguf_writer *w, const sp_gguf *g, const sp_gguf_tensor *t) {
    (void)g;
    if (strcmp(t->name, "blk.0.ffn_up.weight.sst_index") != 0) return 0;
    return sp_gguf_writer_add_tensor(w, t->name, SP_TENSOR_F32, t->n_dims, t->ne, t->data) ? -1 : 1;
}
/* Drops one value (values [2, k-1] against k indices). */
static int short_values(sp_gguf_writer *w, const sp_gguf *g, const sp_gguf_tensor *t) {
    (void)g;
    if (strcmp(t->name, "blk.0.ffn_up.weight.sst_values") != 0) return 0;
    const int64_t ne[2] = {2, t->ne[1] - 1};
    return sp_gguf_writer_add_tensor(w, t->name, t->type, 2, ne, t->data) ? -1 : 1;
}
/* Adds a dense copy of SST next to the pair (from the original model). */
static const sp_gguf *g_orig;
static int add_dense(sp_gguf_writer *w, const sp_gguf *g, const sp_gguf_tensor *t) {
    (void)g;
    if (strcmp(t->name, "blk.0.ffn_up.weight.sst_index") != 0) return 0;
    const sp_gguf_tensor *o = sp_gguf_tensor_at(g_orig, sp_gguf_find_tensor(g_orig, SST));
    if (sp_gguf_writer_add_tensor(w, t->name, t->type, t->n_dims, t->ne, t->data)) return -1;
    return sp_gguf_writer_add_tensor(w, o->name, o->type, o->n_dims, o->ne, o->data) ? -1 : 1;
}

static void expect_load_fail(const char *path, const char *what) {
    spectral_model *m = NULL;
    const spectral_status s = spectral_model_load(path, spectral_model_default_params(), &m);
    CHECK(s != SPECTRAL_OK && m == NULL);
    if (s != SPECTRAL_OK) CHECK(has(spectral_last_error(), what));
    spectral_model_free(m);
}

/* Overwrites n bytes at the first occurrence of `after` + skip in a file. */
static int patch_file(const char *path, const char *after, size_t skip, const void *bytes, size_t n) {
    FILE *f = fopen(path, "r+b");
    if (!f) return -1;
    static char buf[1 << 16];
    const size_t len = fread(buf, 1, sizeof buf, f);
    const size_t al = strlen(after);
    for (size_t i = 0; i + al + skip + n <= len; i++) {
        if (memcmp(buf + i, after, al) == 0) {
            fseek(f, (long)(i + al + skip), SEEK_SET);
            fwrite(bytes, 1, n, f);
            fclose(f);
            return 0;
        }
    }
    fclose(f);
    return -1;
}

static void test_files(const char *model, const char *dir) {
    char sst[512], q8[512], bad[512];
    snprintf(sst, sizeof sst, "%s/codecs_sst.gguf", dir);
    snprintf(q8, sizeof q8, "%s/codecs_q8_0.gguf", dir);
    snprintf(bad, sizeof bad, "%s/codecs_bad.gguf", dir);
    spectral_quantize_params qp = spectral_quantize_default_params();
    qp.type = SPECTRAL_QUANT_SST;
    qp.keep = 0.3;
    CHECK(spectral_model_quantize(model, sst, &qp) == SPECTRAL_OK);
    qp.type = SPECTRAL_QUANT_Q8_0;
    CHECK(spectral_model_quantize(model, q8, &qp) == SPECTRAL_OK);
    /* refusals of the API itself */
    CHECK(spectral_model_quantize(model, model, &qp) == SPECTRAL_ERR_INVALID_ARGUMENT &&
          has(spectral_last_error(), "refusing to overwrite"));
    qp.tensors = "mix_filter";
    CHECK(spectral_model_quantize(model, bad, &qp) == SPECTRAL_ERR_INVALID_ARGUMENT);
    qp.type = SPECTRAL_QUANT_SST;
    CHECK(spectral_model_quantize(model, bad, &qp) == SPECTRAL_ERR_INVALID_ARGUMENT &&
          has(spectral_last_error(), "2-D matrices only"));
    qp.tensors = "(";
    CHECK(spectral_model_quantize(model, bad, &qp) == SPECTRAL_ERR_INVALID_ARGUMENT &&
          has(spectral_last_error(), "bad tensor regex"));
    qp.tensors = NULL;
    qp.keep = 0.0;
    CHECK(spectral_model_quantize(model, bad, &qp) == SPECTRAL_ERR_INVALID_ARGUMENT);
    qp.keep = 0.3;
    CHECK(spectral_model_quantize("/nonexistent/model.gguf", bad, &qp) == SPECTRAL_ERR_IO);

    spectral_model *m = NULL;
    CHECK(spectral_model_load(sst, spectral_model_default_params(), &m) == SPECTRAL_OK);
    spectral_model_free(m);

    char err[256];
    sp_gguf *g = NULL;
    if (sp_gguf_open(sst, &g, err, sizeof err) || sp_gguf_open(model, (sp_gguf **)&g_orig, err, sizeof err)) {
        fprintf(stderr, "FAIL open: %s\n", err);
        check_failures++;
        sp_gguf_close(g);
        return;
    }
    const int64_t vi = sp_gguf_find_tensor(g, "blk.0.ffn_up.weight.sst_index");
    const int64_t k = vi >= 0 ? sp_gguf_tensor_at(g, vi)->ne[0] : 0;
    sp_gguf_close(g);
    CHECK(k > 2);
    const int64_t D = sp_gguf_tensor_at(g_orig, sp_gguf_find_tensor(g_orig, SST))->ne[0];
    const int64_t F = sp_gguf_tensor_at(g_orig, sp_gguf_find_tensor(g_orig, SST))->ne[1];
    const int64_t half = F * (D / 2 + 1);

    g_patch_pos = 0;
    g_patch_value = (int32_t)half;
    CHECK(rewrite(sst, bad, patch_index, NULL, NULL, NULL) == 0);
    expect_load_fail(bad, "is outside [0,");
    g_patch_value = -5;
    CHECK(rewrite(sst, bad, patch_index, NULL, NULL, NULL) == 0);
    expect_load_fail(bad, "is outside [0,");
    g_patch_pos = 1;
    g_patch_value = INT32_MIN; /* = entry 0 */
    CHECK(rewrite(sst, bad, patch_index, NULL, NULL, NULL) == 0);
    expect_load_fail(bad, "duplicate index");
    g_patch_pos = (int)k - 1;
    g_patch_value = 0;
    CHECK(rewrite(sst, bad, patch_index, NULL, NULL, NULL) == 0);
    expect_load_fail(bad, "not increasing");
    CHECK(rewrite(sst, bad, index_as_f32, NULL, NULL, NULL) == 0);
    expect_load_fail(bad, "must be I32");
    CHECK(rewrite(sst, bad, short_values, NULL, NULL, NULL) == 0);
    expect_load_fail(bad, "must be I32 with shape");
    CHECK(rewrite(sst, bad, NULL, "blk.0.ffn_up.weight.sst_shape", NULL, NULL) == 0);
    expect_load_fail(bad, "incomplete sparse spectral tensor blk.0.ffn_up.weight");
    const uint64_t wrong[2] = {(uint64_t)D, (uint64_t)F + 1};
    CHECK(rewrite(sst, bad, NULL, NULL, "blk.0.ffn_up.weight.sst_shape", wrong) == 0);
    expect_load_fail(bad, "has shape");
    const uint64_t huge[2] = {1u << 20, 1u << 20};
    CHECK(rewrite(sst, bad, NULL, NULL, "blk.0.ffn_up.weight.sst_shape", huge) == 0);
    expect_load_fail(bad, "out of range");
    const uint64_t big[2] = {1u << 13, 1u << 13}; /* int32 indices fit; 2^26 elements do not */
    CHECK(rewrite(sst, bad, NULL, NULL, "blk.0.ffn_up.weight.sst_shape", big) == 0);
    expect_load_fail(bad, "elements");
    CHECK(rewrite(sst, bad, add_dense, NULL, NULL, NULL) == 0);
    expect_load_fail(bad, "stored both dense and as");
    sp_gguf_close((sp_gguf *)g_orig);
    g_orig = NULL;

    /* Q8_0 with a row that is not whole blocks: ne[0] = D - 1 in the header
     * (name, then n_dims u32, then ne[0] u64) */
    CHECK(rewrite(q8, bad, NULL, NULL, NULL, NULL) == 0);
    const uint64_t ne0 = (uint64_t)D - 1;
    CHECK(patch_file(bad, "blk.0.ffn_up.weight", 4, &ne0, 8) == 0);
    expect_load_fail(bad, "not a multiple of its block size 32");
    /* Q8_0 data cut short: the file truncated by one byte */
    CHECK(rewrite(q8, bad, NULL, NULL, NULL, NULL) == 0);
    FILE *f = fopen(bad, "rb");
    char *buf = NULL;
    long len = 0;
    if (f && fseek(f, 0, SEEK_END) == 0 && (len = ftell(f)) > 0 && fseek(f, 0, SEEK_SET) == 0) {
        buf = malloc((size_t)len);
        if (buf && fread(buf, 1, (size_t)len, f) != (size_t)len) len = 0;
    }
    if (f) fclose(f);
    /* the last tensor of the file is padded; find how much of it is data */
    int truncated = 0;
    for (long cut = 1; buf && len > 0 && cut < 64 && !truncated; cut++) {
        FILE *o = fopen(bad, "wb");
        if (!o) break;
        fwrite(buf, 1, (size_t)(len - cut), o);
        fclose(o);
        spectral_model *mm = NULL;
        if (spectral_model_load(bad, spectral_model_default_params(), &mm) != SPECTRAL_OK) {
            truncated = has(spectral_last_error(), "truncated data section");
        }
        spectral_model_free(mm);
    }
    CHECK(truncated);
    free(buf);
}

/* ---- dump ---- */

static int dump(const char *path, const char *name) {
    sp_gguf *g = NULL;
    char err[512];
    if (sp_gguf_open(path, &g, err, sizeof err)) {
        fprintf(stderr, "%s\n", err);
        return 1;
    }
    int64_t ne[SP_GGUF_MAX_DIMS];
    int rc = sp_model_tensor_ne(g, name, ne, err, sizeof err);
    if (rc) {
        fprintf(stderr, "%s\n", rc > 0 ? "no such tensor" : err);
        sp_gguf_close(g);
        return 1;
    }
    const int64_t ti = sp_gguf_find_tensor(g, name);
    const uint32_t n_dims = ti >= 0 ? sp_gguf_tensor_at(g, ti)->n_dims : 2; /* sst: 2-D */
    sp_owned_buffers owned = {0};
    sp_weight_list wl = {0};
    int64_t idx = -1;
    rc = sp_model_take_tensor(g, &owned, name, 0, n_dims, ne, &wl, &idx, err, sizeof err);
    if (rc == 0) {
        const size_t n = (size_t)wl.n_elems[idx];
        rc = fwrite(wl.data[idx], sizeof(float), n, stdout) != n;
    } else {
        fprintf(stderr, "%s\n", err);
    }
    sp_weight_list_free(&wl);
    sp_owned_free(&owned);
    sp_gguf_close(g);
    return rc ? 1 : 0;
}

/* ---- the CPU backend computing with blocks ---- */

static void test_backend_dequant(void) {
    enum { ROWS = 5, LEN = 96 };
    float x[ROWS * LEN], want[ROWS * LEN], got[ROWS * LEN];
    uint8_t q[ROWS * LEN / SP_QK * SP_Q8_0_BLOCK_BYTES];
    char err[256];
    sp_backend *be = sp_backend_cpu_create(2, err, sizeof err);
    if (!be) {
        fprintf(stderr, "FAIL cpu backend: %s\n", err);
        check_failures++;
        return;
    }
    for (int i = 0; i < ROWS * LEN; i++) x[i] = (float)test_urand();
    /* a block of tiny values: its f16 scale is subnormal */
    for (int j = 0; j < SP_QK; j++) x[LEN + j] = (float)test_urand() * 1e-6f;
    static const int types[2] = {SP_TENSOR_Q8_0, SP_TENSOR_Q4_0};
    static const sp_weight_type wtypes[2] = {SP_WEIGHT_Q8_0, SP_WEIGHT_Q4_0};
    for (int k = 0; k < 2; k++) {
        CHECK(sp_quantize_row(types[k], x, q, ROWS * LEN) == 0);
        CHECK(sp_dequantize_row(types[k], q, want, ROWS * LEN) == 0);
        memset(got, 0xff, sizeof got);
        CHECK(be->ops->dequantize_rows(be, wtypes[k], q, LEN, NULL, ROWS, got) == 0);
        CHECK(memcmp(got, want, sizeof got) == 0);
        const int32_t ids[4] = {3, 0, 1, 3};
        CHECK(be->ops->dequantize_rows(be, wtypes[k], q, LEN, ids, 4, got) == 0);
        for (int r = 0; r < 4; r++)
            CHECK(memcmp(got + r * LEN, want + ids[r] * LEN, LEN * sizeof(float)) == 0);
    }
    const int32_t neg[1] = {-1};
    CHECK(be->ops->dequantize_rows(be, SP_WEIGHT_Q8_0, q, LEN, neg, 1, got) != 0 && has(be->err, "negative id"));
    CHECK(be->ops->dequantize_rows(be, SP_WEIGHT_Q8_0, q, 33, NULL, 1, got) != 0 && has(be->err, "multiple of 32"));
    CHECK(be->ops->dequantize_rows(be, SP_WEIGHT_F32, q, LEN, NULL, 1, got) != 0 && has(be->err, "unsupported"));
    CHECK(be->ops->dequantize_rows(be, SP_WEIGHT_Q8_0, q, LEN, NULL, 0, got) == 0);
    be->ops->destroy(be);
}

/* q8: a file whose ffn matrices are Q8_0 (test_files writes it). */
static void test_kept_quantized(const char *q8) {
    char err[256];
    sp_gguf *g = NULL;
    if (sp_gguf_open(q8, &g, err, sizeof err)) {
        fprintf(stderr, "FAIL open %s: %s\n", q8, err);
        check_failures++;
        return;
    }
    const char *name = "blk.0.ffn_up.weight";
    const int64_t ti = sp_gguf_find_tensor(g, name);
    CHECK(ti >= 0);
    if (ti < 0) {
        sp_gguf_close(g);
        return;
    }
    const sp_gguf_tensor *t = sp_gguf_tensor_at(g, ti);
    CHECK(t->type == SP_TENSOR_Q8_0);
    sp_owned_buffers owned = {0};
    sp_weight_list wl = {0};
    int64_t i_kept = -1, i_dec = -1;
    CHECK(sp_model_take_matrix(g, &owned, name, 0, t->n_dims, t->ne, &wl, &i_kept, err, sizeof err) == 0);
    CHECK(sp_model_take_tensor(g, &owned, name, 0, t->n_dims, t->ne, &wl, &i_dec, err, sizeof err) == 0);
    if (i_kept >= 0 && i_dec >= 0) {
        const int64_t n = t->ne[0] * t->ne[1];
        CHECK(wl.types[i_kept] == SP_WEIGHT_Q8_0 && wl.data[i_kept] == t->data && wl.n_elems[i_kept] == n);
        CHECK(wl.types[i_dec] == SP_WEIGHT_F32 && wl.data[i_dec] != t->data && wl.n_elems[i_dec] == n);
        CHECK(owned.n == 1); /* only the decoded copy is owned */
        /* the forward pass's view of the kept matrix equals the decoded copy */
        sp_backend *be = sp_backend_cpu_create(1, err, sizeof err);
        float *scratch = malloc((size_t)n * sizeof(float));
        CHECK(be && scratch);
        if (be && scratch) {
            CHECK(sp_model_weight_scratch(wl.types, i_kept, t->ne[1], t->ne[0]) == n);
            CHECK(sp_model_weight_scratch(wl.types, i_dec, t->ne[1], t->ne[0]) == 0);
            const float *w = sp_model_weight(be, wl.data, wl.types, i_kept, t->ne[1], t->ne[0], scratch);
            CHECK(w == scratch && memcmp(w, wl.data[i_dec], (size_t)n * sizeof(float)) == 0);
            CHECK(sp_model_weight(be, wl.data, wl.types, i_dec, t->ne[1], t->ne[0], scratch) == wl.data[i_dec]);
        }
        free(scratch);
        if (be) be->ops->destroy(be);
    }
    sp_weight_list_free(&wl);
    sp_owned_free(&owned);
    sp_gguf_close(g);
}

int main(int argc, char **argv) {
    test_rng = 88172645463325252ull; /* this test's own data */
    if (argc == 4 && strcmp(argv[1], "dump") == 0) return dump(argv[2], argv[3]);
    if (argc != 3) {
        fprintf(stderr, "usage: test_codecs MODEL.gguf WORKDIR | test_codecs dump MODEL.gguf NAME\n");
        return 2;
    }
    test_blocks();
    const int64_t shapes[][2] = {{1, 1}, {1, 8}, {5, 1}, {2, 2}, {4, 6}, {5, 7}, {6, 9}, {7, 10}, {32, 96}};
    for (size_t i = 0; i < sizeof shapes / sizeof shapes[0]; i++) test_sst_shape(shapes[i][0], shapes[i][1]);
    test_sst_index();
    test_files(argv[1], argv[2]);
    test_backend_dequant();
    char q8[512];
    snprintf(q8, sizeof q8, "%s/codecs_q8_0.gguf", argv[2]);
    test_kept_quantized(q8);
    return check_report("test_codecs");
}
