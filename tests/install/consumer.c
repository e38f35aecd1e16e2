/* Embeds a string with the model given on the command line: the smallest
 * complete app, built only against the installed header and library. */
#include <spectral.h>
#include <stdio.h>
#include <string.h>

int main(int argc, char **argv) {
    if (argc != 2) {
        fprintf(stderr, "usage: consumer MODEL.gguf\n");
        return 2;
    }
    spectral_model *model = NULL;
    if (spectral_model_load(argv[1], spectral_model_default_params(), &model)) {
        fprintf(stderr, "%s\n", spectral_last_error());
        return 1;
    }
    spectral_context *ctx = NULL;
    if (spectral_context_create(model, spectral_context_default_params(), &ctx)) {
        fprintf(stderr, "%s\n", spectral_last_error());
        return 1;
    }
    const char *text = "hello from an app";
    int32_t tokens[64];
    int64_t n = spectral_tokenize(model, text, strlen(text), tokens, 64);
    if (n <= 0 || n > 64 || spectral_encode(ctx, tokens, n)) {
        fprintf(stderr, "%s\n", spectral_last_error());
        return 1;
    }
    const float *e = spectral_get_embedding(ctx);
    double norm = 0;
    for (int i = 0; i < spectral_model_n_pooled(model); i++) norm += (double)e[i] * e[i];
    printf("spectral %s: %d-dim embedding, squared norm %.6f\n", spectral_version(),
           spectral_model_n_pooled(model), norm);
    spectral_context_free(ctx);
    spectral_model_free(model);
    return norm > 0.999 && norm < 1.001 ? 0 : 1;
}
