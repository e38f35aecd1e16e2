/* fnet_dump - encode token ids given directly (no tokenizer) through the
 * public C API and print the token states (the fnet and m2bert parity tests).
 *
 *   fnet_dump MODEL IDS.txt [--backend cpu|cuda] [--threads N] [--pooled] [--no-pad]
 *
 * IDS.txt holds whitespace-separated decimal token ids. Output on stdout: a
 * header line "n_tokens n_embd", then n_tokens lines of n_embd floats (%.9g).
 * With --pooled: CLS pooling without normalization (the model's pooler when
 * it has one), printed as "1 n_embd" and one line. --no-pad: the context's
 * no_pad (a model that pads runs the document at its own length).
 *
 * Exit status: 0 ok, 1 failure (status name and message on stderr), 2 usage,
 * 77 when --backend cuda is requested but not available (test skip). */
#include "spectral.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "check.h"

static int usage(void) {
    fprintf(stderr, "usage: fnet_dump MODEL IDS.txt [--backend cpu|cuda] [--threads N] [--pooled] [--no-pad]\n"
                    "                [--dtype auto|f32|bf16]\n");
    return 2;
}

int main(int argc, char **argv) {
    if (argc < 3) return usage();
    const char *model_path = argv[1], *ids_path = argv[2];
    spectral_context_params cp = spectral_context_default_params();
    cp.pooling = SPECTRAL_POOLING_NONE;
    cp.n_threads = 2;
    for (int i = 3; i < argc; i++) {
        if (!strcmp(argv[i], "--backend") && i + 1 < argc) {
            const char *b = argv[++i];
            if (!strcmp(b, "cpu")) cp.backend = SPECTRAL_BACKEND_CPU;
            else if (!strcmp(b, "cuda")) cp.backend = SPECTRAL_BACKEND_CUDA;
            else return usage();
        } else if (!strcmp(argv[i], "--threads") && i + 1 < argc) {
            cp.n_threads = atoi(argv[++i]);
        } else if (!strcmp(argv[i], "--dtype") && i + 1 < argc) {
            const char *d = argv[++i];
            if (!strcmp(d, "auto")) cp.dtype = SPECTRAL_DTYPE_AUTO;
            else if (!strcmp(d, "f32")) cp.dtype = SPECTRAL_DTYPE_F32;
            else if (!strcmp(d, "bf16")) cp.dtype = SPECTRAL_DTYPE_BF16;
            else return usage();
        } else if (!strcmp(argv[i], "--no-pad")) {
            cp.no_pad = true;
        } else if (!strcmp(argv[i], "--pooled")) {
            cp.pooling = SPECTRAL_POOLING_CLS;
            cp.normalize = false;
        } else {
            return usage();
        }
    }
    if (cp.backend == SPECTRAL_BACKEND_CUDA && !spectral_backend_available(SPECTRAL_BACKEND_CUDA)) {
        fprintf(stderr, "fnet_dump: CUDA is not available\n");
        return 77;
    }
    int32_t *ids = NULL;
    int64_t n = test_read_ids(ids_path, &ids);
    if (n < 0) {
        fprintf(stderr, "fnet_dump: cannot read ids from %s\n", ids_path);
        return 1;
    }
    spectral_model *model = NULL;
    spectral_context *ctx = NULL;
    int ret = 1;
    spectral_status s = spectral_model_load(model_path, spectral_model_default_params(), &model);
    if (s == SPECTRAL_OK) s = spectral_context_create(model, cp, &ctx);
    if (s == SPECTRAL_OK) s = spectral_encode(ctx, ids, n);
    if (s != SPECTRAL_OK) {
        fprintf(stderr, "fnet_dump: %s: %s\n", spectral_status_string(s), spectral_last_error());
    } else {
        int64_t T = 0;
        const float *st = spectral_get_token_states(ctx, &T);
        const int64_t E = spectral_model_n_embd(model);
        if (cp.pooling == SPECTRAL_POOLING_CLS) {
            st = spectral_get_embedding(ctx);
            T = 1;
        }
        if (!st) {
            fprintf(stderr, "fnet_dump: no token states: %s\n", spectral_last_error());
        } else {
            printf("%lld %lld\n", (long long)T, (long long)E);
            for (int64_t t = 0; t < T; t++)
                for (int64_t d = 0; d < E; d++)
                    printf("%.9g%c", st[t * E + d], d + 1 == E ? '\n' : ' ');
            ret = 0;
        }
    }
    spectral_context_free(ctx);
    spectral_model_free(model);
    free(ids);
    return ret;
}
