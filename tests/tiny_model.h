/* Writes a small random spectralmlp model with the C GGUF writer, for tests
 * that need a model file but not a reference (those use tools/convert/make_model.py). */
#ifndef SP_TEST_TINY_MODEL_H
#define SP_TEST_TINY_MODEL_H

#include <math.h>
#include <stdio.h>
#include <stdlib.h>

#include "formats/gguf.h"

static float tiny_rand(unsigned *state, float scale) {
    *state = *state * 1664525u + 1013904223u;
    return ((float)(*state >> 8) / 16777216.0f - 0.5f) * 2.0f * scale;
}

static int tiny_tensor(sp_gguf_writer *w, const char *name, uint32_t n_dims, int64_t ne0,
                       int64_t ne1, int64_t ne2, float base, float scale, unsigned *seed) {
    int64_t ne[3] = {ne0, ne1, ne2};
    int64_t n = ne0 * ne1 * ne2;
    float *data = malloc((size_t)n * sizeof *data);
    if (!data) return -1;
    for (int64_t i = 0; i < n; i++) data[i] = base + tiny_rand(seed, scale);
    int rc = sp_gguf_writer_add_tensor(w, name, SP_TENSOR_F32, n_dims, ne, data);
    free(data);
    return rc;
}

/* Returns 0 on success. extra, when set, adds keys and tensors (a variant
 * of the model) and returns non-zero on failure. */
static int write_tiny_model_with(const char *path, int64_t D, int64_t F, int64_t K, int64_t L,
                                 unsigned seed, int (*extra)(sp_gguf_writer *w, void *user),
                                 void *user) {
    sp_gguf_writer *w = sp_gguf_writer_new();
    if (!w) return -1;
    int rc = 0;
    rc |= sp_gguf_writer_set_str(w, "general.architecture", "spectralmlp");
    rc |= sp_gguf_writer_set_str(w, "general.name", "tiny test model");
    rc |= sp_gguf_writer_set_u32(w, "spectralmlp.embedding_length", (uint32_t)D);
    rc |= sp_gguf_writer_set_u32(w, "spectralmlp.feed_forward_length", (uint32_t)F);
    rc |= sp_gguf_writer_set_u32(w, "spectralmlp.block_count", (uint32_t)L);
    rc |= sp_gguf_writer_set_u32(w, "spectralmlp.mixing.n_filters", (uint32_t)K);
    rc |= sp_gguf_writer_set_u32(w, "spectralmlp.context_length", 512);
    rc |= sp_gguf_writer_set_f32(w, "spectralmlp.attention.layer_norm_epsilon", 1e-5f);
    rc |= sp_gguf_writer_set_u32(w, "spectralmlp.pooling_type", 1);
    rc |= sp_gguf_writer_set_str(w, "tokenizer.ggml.model", "bytes");
    rc |= tiny_tensor(w, "token_embd.weight", 2, D, 256, 1, 0, 1, &seed);
    for (int64_t l = 0; l < L && !rc; l++) {
        char n[64];
#define T_(suffix, nd, a, b, c, base, scale)                                   \
    snprintf(n, sizeof n, "blk.%d.%s", (int)l, suffix);                        \
    rc |= tiny_tensor(w, n, nd, a, b, c, base, scale, &seed)
        T_("mix_norm.weight", 1, D, 1, 1, 1, 0.1f);
        T_("mix_norm.bias", 1, D, 1, 1, 0, 0.1f);
        T_("mix_filter.weight", 3, 2, K, D, 0, 0.5f);
        T_("mix_filter.bias", 1, D, 1, 1, 0, 0.1f);
        T_("ffn_norm.weight", 1, D, 1, 1, 1, 0.1f);
        T_("ffn_norm.bias", 1, D, 1, 1, 0, 0.1f);
        T_("ffn_up.weight", 2, D, F, 1, 0, 1.0f / sqrtf((float)D));
        T_("ffn_up.bias", 1, F, 1, 1, 0, 0.1f);
        T_("ffn_down.weight", 2, F, D, 1, 0, 1.0f / sqrtf((float)F));
        T_("ffn_down.bias", 1, D, 1, 1, 0, 0.1f);
#undef T_
    }
    if (!rc && extra) rc = extra(w, user);
    char err[256];
    if (!rc) rc = sp_gguf_writer_write(w, path, err, sizeof err);
    if (rc) fprintf(stderr, "write_tiny_model(%s) failed\n", path);
    sp_gguf_writer_free(w);
    return rc;
}

static int write_tiny_model(const char *path, int64_t D, int64_t F, int64_t K, int64_t L,
                            unsigned seed) {
    return write_tiny_model_with(path, D, F, K, L, seed, NULL, NULL);
}

#endif
