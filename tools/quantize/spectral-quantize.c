/* spectral-quantize: writes a copy of a model with compressed weights.
 * A driver over spectral_model_quantize (spectral.h); the codecs live in
 * the library. */
#define _POSIX_C_SOURCE 200809L

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>

#include "spectral.h"

static void print_usage(FILE *f) {
    fprintf(f,
            "usage: spectral-quantize IN.gguf OUT.gguf --type TYPE [options]\n"
            "\n"
            "Writes OUT.gguf: IN.gguf with its weight matrices stored as TYPE, every other\n"
            "tensor and key copied. OUT is written beside itself and renamed into place only\n"
            "once it loads as a model: on any failure OUT is left as it was. OUT is a new or\n"
            "regular file (a device, FIFO or directory is refused); it is never IN.\n"
            "\n"
            "  -t, --type TYPE      (in any case: q8_0 or Q8_0)\n"
            "                       q8_0   ggml's Q8_0 (8.5 bits per weight)\n"
            "                       q4_0   ggml's Q4_0 (4.5 bits per weight)\n"
            "                       sst    sparse spectral tensor: the largest 2-D FFT\n"
            "                              coefficients (see --keep)\n"
            "                       f16, f32\n"
            "      --tensors REGEX  POSIX extended regex searched in tensor names: which\n"
            "                       tensors to convert (default: 2-D *.weight tensors other\n"
            "                       than the embedding tables token_embd, position_embd,\n"
            "                       token_types). A selected tensor that cannot take TYPE is\n"
            "                       an error.\n"
            "      --keep FRACTION  sst: fraction of each matrix's FFT coefficients kept,\n"
            "                       in (0, 1] (default 0.1)\n"
            "  -v, --verbose        one line per tensor: type, bytes, relative error\n"
            "  -h, --help\n"
            "\n"
            "Exit status: 0 written, 1 failed (message on stderr), 2 usage error.\n"
            "Formats and the measured trade-offs: docs/quantize.md,\n"
            "docs/codecs.md.\n");
}

static int parse_type(const char *s, spectral_quant_type *t) {
    static const struct {
        const char *name;
        spectral_quant_type type;
    } k[] = {{"q8_0", SPECTRAL_QUANT_Q8_0}, {"q4_0", SPECTRAL_QUANT_Q4_0}, {"sst", SPECTRAL_QUANT_SST},
             {"f16", SPECTRAL_QUANT_F16},   {"f32", SPECTRAL_QUANT_F32}};
    for (size_t i = 0; i < sizeof k / sizeof k[0]; i++) {
        if (strcasecmp(s, k[i].name) == 0) { /* Q8_0 as llama-quantize's users type it */
            *t = k[i].type;
            return 0;
        }
    }
    return -1;
}

typedef struct {
    int verbose;
    int64_t n_converted;
    uint64_t bytes_in, bytes_out;
} totals;

static void on_tensor(const spectral_quantize_report *r, void *user) {
    totals *t = user;
    const int converted = r->note == NULL;
    if (converted) {
        t->n_converted++;
        t->bytes_in += r->bytes_in;
        t->bytes_out += r->bytes_out;
    }
    if (!t->verbose) return;
    if (converted)
        fprintf(stderr, "  %-32s %5s -> %-5s %10llu -> %10llu bytes  rel. error %.3e\n", r->name,
                r->from_type, r->to_type, (unsigned long long)r->bytes_in,
                (unsigned long long)r->bytes_out, r->rel_error);
    else
        fprintf(stderr, "  %-32s %5s    copied (%s)\n", r->name, r->from_type, r->note);
}

/* Value of option `name` at argv[*i]: "--name=V" or "--name V". NULL if
 * argv[*i] is not that option; *missing set when the value is absent. */
static const char *opt_value(int argc, char **argv, int *i, const char *lng, const char *shrt,
                             int *missing) {
    const char *a = argv[*i];
    const size_t n = strlen(lng);
    if (strncmp(a, lng, n) == 0 && a[n] == '=') return a + n + 1;
    if (strcmp(a, lng) == 0 || (shrt && strcmp(a, shrt) == 0)) {
        if (*i + 1 >= argc) {
            *missing = 1;
            return NULL;
        }
        return argv[++*i];
    }
    return NULL;
}

int main(int argc, char **argv) {
    spectral_quantize_params p = spectral_quantize_default_params();
    const char *paths[2] = {NULL, NULL};
    int n_paths = 0, have_type = 0, only_paths = 0;
    totals tot = {0, 0, 0, 0};
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        int missing = 0;
        const char *v;
        if (only_paths || a[0] != '-' || strcmp(a, "-") == 0) {
            if (n_paths == 2) {
                fprintf(stderr, "spectral-quantize: unexpected argument '%s' (try --help)\n", a);
                return 2;
            }
            paths[n_paths++] = a;
        } else if (strcmp(a, "--") == 0) {
            only_paths = 1;
        } else if (strcmp(a, "-h") == 0 || strcmp(a, "--help") == 0) {
            print_usage(stdout);
            return 0;
        } else if (strcmp(a, "-v") == 0 || strcmp(a, "--verbose") == 0) {
            tot.verbose = 1;
        } else if ((v = opt_value(argc, argv, &i, "--type", "-t", &missing))) {
            if (parse_type(v, &p.type)) {
                fprintf(stderr, "spectral-quantize: unknown type '%s' (q8_0, q4_0, sst, f16, f32)\n", v);
                return 2;
            }
            have_type = 1;
        } else if ((v = opt_value(argc, argv, &i, "--tensors", NULL, &missing))) {
            p.tensors = v;
        } else if ((v = opt_value(argc, argv, &i, "--keep", NULL, &missing))) {
            char *end = NULL;
            errno = 0;
            p.keep = strtod(v, &end);
            if (errno || end == v || *end || !(p.keep > 0.0 && p.keep <= 1.0)) {
                fprintf(stderr, "spectral-quantize: --keep '%s' must be a number in (0, 1]\n", v);
                return 2;
            }
        } else if (missing) {
            fprintf(stderr, "spectral-quantize: option %s needs a value\n", a);
            return 2;
        } else {
            fprintf(stderr, "spectral-quantize: unknown option '%s' (try --help)\n", a);
            return 2;
        }
    }
    if (n_paths != 2 || !have_type) {
        fprintf(stderr, "spectral-quantize: %s (try --help)\n",
                n_paths != 2 ? "needs IN.gguf and OUT.gguf" : "needs --type");
        return 2;
    }
    p.on_tensor = on_tensor;
    p.user_data = &tot;
    if (spectral_model_quantize(paths[0], paths[1], &p)) {
        fprintf(stderr, "spectral-quantize: %s\n", spectral_last_error());
        return 1;
    }
    struct stat si, so;
    if (stat(paths[0], &si) == 0 && stat(paths[1], &so) == 0 && so.st_size > 0)
        fprintf(stderr,
                "spectral-quantize: wrote %s: %lld tensors converted (%llu -> %llu bytes), "
                "file %lld -> %lld bytes (%.2fx)\n",
                paths[1], (long long)tot.n_converted, (unsigned long long)tot.bytes_in,
                (unsigned long long)tot.bytes_out, (long long)si.st_size, (long long)so.st_size,
                (double)si.st_size / (double)so.st_size);
    return 0;
}
