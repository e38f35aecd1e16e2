/* api_dump - run documents through the public C API and print the results.
 *
 *   api_dump MODEL INPUT POOLING [--no-normalize] [--backend cpu|cuda]
 *            [--threads N] [-o OUT.bin] [MORE_INPUT...]
 *
 * POOLING is none|mean|cls|last|model (model = the model's own pooling).
 * Each whole input file (any bytes) is tokenized with spectral_tokenize
 * (count first, then fill) and encoded with spectral_encode; extra inputs
 * reuse the same model and context, one after the other.
 *
 * Output on stdout, as text, per input: a header line
 * "n_tokens n_rows width", then n_rows lines of width floats (%.9g). With
 * pooling none the rows are the token states (spectral_get_token_states),
 * otherwise one row, the pooled embedding (spectral_get_embedding; width
 * n_embd for token states, n_pooled for embeddings). With -o
 * the same rows (all inputs) are also written to OUT.bin as raw
 * little-endian float32, row-major, no header.
 *
 * Exit status: 0 ok, 1 failure (message on stderr), 2 usage,
 * 77 when --backend cuda is requested but not available (test skip). */
#include "spectral.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int usage(void) {
    fprintf(stderr, "usage: api_dump MODEL INPUT none|mean|cls|last|model [--no-normalize] "
                    "[--backend cpu|cuda] [--threads N] [-o OUT.bin] [MORE_INPUT...]\n");
    return 2;
}

static char *read_file(const char *path, size_t *len) {
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    size_t cap = 4096, n = 0;
    char *buf = malloc(cap);
    if (!buf) { fclose(f); return NULL; }
    for (;;) {
        if (n == cap) {
            char *nb = realloc(buf, cap * 2);
            if (!nb) { free(buf); fclose(f); return NULL; }
            buf = nb;
            cap *= 2;
        }
        size_t r = fread(buf + n, 1, cap - n, f);
        n += r;
        if (r == 0) break;
    }
    int err = ferror(f);
    fclose(f);
    if (err) { free(buf); return NULL; }
    *len = n;
    return buf;
}

/* Tokenize, encode and print one input. Returns 0 on success. */
static int dump_one(spectral_model *model, spectral_context *ctx, const char *input_path, FILE *out) {
    size_t len = 0;
    char *text = read_file(input_path, &len);
    if (!text) {
        fprintf(stderr, "api_dump: cannot read %s\n", input_path);
        return 1;
    }
    int rc = 1;
    int32_t *tok = NULL;
    int64_t n = spectral_tokenize(model, text, len, NULL, 0);
    if (n <= 0) {
        fprintf(stderr, "api_dump: %s: tokenize returned %lld: %s\n", input_path, (long long)n,
                spectral_last_error());
        goto done;
    }
    tok = malloc((size_t)n * sizeof *tok);
    if (!tok) goto done;
    int64_t n2 = spectral_tokenize(model, text, len, tok, n);
    if (n2 != n) {
        fprintf(stderr, "api_dump: %s: tokenize count %lld then %lld\n", input_path, (long long)n,
                (long long)n2);
        goto done;
    }
    spectral_status st = spectral_encode(ctx, tok, n);
    if (st != SPECTRAL_OK) {
        fprintf(stderr, "api_dump: %s: encode: %s: %s\n", input_path, spectral_status_string(st),
                spectral_last_error());
        goto done;
    }

    int32_t d = spectral_model_n_embd(model);
    const float *rows;
    int64_t n_rows;
    if (spectral_context_pooling(ctx) == SPECTRAL_POOLING_NONE) {
        int64_t nt = -1;
        rows = spectral_get_token_states(ctx, &nt);
        if (!rows || nt != n) {
            fprintf(stderr, "api_dump: %s: get_token_states returned %p with n_tokens %lld (expected %lld)\n",
                    input_path, (const void *)rows, (long long)nt, (long long)n);
            goto done;
        }
        n_rows = nt;
    } else {
        rows = spectral_get_embedding(ctx);
        if (!rows) {
            fprintf(stderr, "api_dump: %s: get_embedding returned NULL: %s\n", input_path,
                    spectral_last_error());
            goto done;
        }
        n_rows = 1;
        d = spectral_model_n_pooled(model);
    }

    printf("%lld %lld %d\n", (long long)n, (long long)n_rows, (int)d);
    for (int64_t r = 0; r < n_rows; r++) {
        for (int32_t j = 0; j < d; j++) printf(j ? " %.9g" : "%.9g", rows[r * d + j]);
        putchar('\n');
    }
    if (out && fwrite(rows, sizeof(float), (size_t)(n_rows * d), out) != (size_t)(n_rows * d)) {
        fprintf(stderr, "api_dump: write failed\n");
        goto done;
    }
    rc = 0;
done:
    free(tok);
    free(text);
    return rc;
}

int main(int argc, char **argv) {
    if (argc < 4) return usage();
    const char *model_path = argv[1], *pool_name = argv[3];
    const char *out_path = NULL;
    const char **inputs = calloc((size_t)argc, sizeof *inputs);
    if (!inputs) return 1;
    int n_inputs = 0;
    inputs[n_inputs++] = argv[2];
    bool normalize = true;
    spectral_backend backend = SPECTRAL_BACKEND_CPU;
    int threads = 0;
    for (int i = 4; i < argc; i++) {
        if (!strcmp(argv[i], "--no-normalize")) {
            normalize = false;
        } else if (!strcmp(argv[i], "--backend") && i + 1 < argc) {
            const char *b = argv[++i];
            if (!strcmp(b, "cpu")) backend = SPECTRAL_BACKEND_CPU;
            else if (!strcmp(b, "cuda")) backend = SPECTRAL_BACKEND_CUDA;
            else { free(inputs); return usage(); }
        } else if (!strcmp(argv[i], "--threads") && i + 1 < argc) {
            threads = atoi(argv[++i]);
        } else if (!strcmp(argv[i], "-o") && i + 1 < argc) {
            out_path = argv[++i];
        } else if (argv[i][0] == '-' && argv[i][1] != '\0') {
            free(inputs);
            return usage();
        } else {
            inputs[n_inputs++] = argv[i];
        }
    }
    spectral_pooling pooling;
    if (!strcmp(pool_name, "none")) pooling = SPECTRAL_POOLING_NONE;
    else if (!strcmp(pool_name, "mean")) pooling = SPECTRAL_POOLING_MEAN;
    else if (!strcmp(pool_name, "cls")) pooling = SPECTRAL_POOLING_CLS;
    else if (!strcmp(pool_name, "last")) pooling = SPECTRAL_POOLING_LAST;
    else if (!strcmp(pool_name, "model")) pooling = SPECTRAL_POOLING_UNSPECIFIED;
    else { free(inputs); return usage(); }

    if (backend == SPECTRAL_BACKEND_CUDA && !spectral_backend_available(SPECTRAL_BACKEND_CUDA)) {
        fprintf(stderr, "api_dump: CUDA backend not available, skipping\n");
        free(inputs);
        return 77;
    }

    int rc = 1;
    spectral_model *model = NULL;
    spectral_context *ctx = NULL;
    FILE *out = NULL;

    spectral_status st = spectral_model_load(model_path, spectral_model_default_params(), &model);
    if (st != SPECTRAL_OK) {
        fprintf(stderr, "api_dump: load %s: %s: %s\n", model_path, spectral_status_string(st),
                spectral_last_error());
        goto done;
    }
    spectral_context_params cp = spectral_context_default_params();
    cp.n_threads = threads;
    cp.backend = backend;
    cp.pooling = pooling;
    cp.normalize = normalize;
    st = spectral_context_create(model, cp, &ctx);
    if (st != SPECTRAL_OK) {
        fprintf(stderr, "api_dump: context: %s: %s\n", spectral_status_string(st), spectral_last_error());
        goto done;
    }
    if (out_path && !(out = fopen(out_path, "wb"))) {
        fprintf(stderr, "api_dump: cannot write %s\n", out_path);
        goto done;
    }
    for (int i = 0; i < n_inputs; i++)
        if (dump_one(model, ctx, inputs[i], out) != 0) goto done;
    if (fflush(stdout) != 0) goto done;
    rc = 0;

done:
    if (out && fclose(out) != 0) rc = 1;
    if (ctx) spectral_context_free(ctx);
    if (model) spectral_model_free(model);
    free(inputs);
    return rc;
}
