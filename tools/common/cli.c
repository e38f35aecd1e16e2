/* Command-line parsing and process setup shared by the programs: see cli.h. */
#define _POSIX_C_SOURCE 200809L /* sigaction */
#include "cli.h"

#include <errno.h>
#include <math.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

void cli_args_init(cli_args *c, const char *prog, int argc, char **argv) {
    memset(c, 0, sizeof *c);
    c->prog = prog;
    c->argc = argc;
    c->argv = argv;
}

const char *cli_next(cli_args *c) {
    if (++c->i >= c->argc) return NULL;
    const char *a = c->argv[c->i];
    c->inline_val = NULL;
    const char *eq = !c->operands_only && !strncmp(a, "--", 2) ? strchr(a, '=') : NULL;
    if (eq && (size_t)(eq - a) < sizeof c->name) {
        memcpy(c->name, a, (size_t)(eq - a));
        c->name[eq - a] = 0;
        c->inline_val = eq + 1;
        return c->name;
    }
    return a;
}

static const char *current_option(const cli_args *c) {
    return c->inline_val ? c->name : c->argv[c->i];
}

const char *cli_value(cli_args *c) {
    if (c->inline_val) {
        const char *v = c->inline_val;
        c->inline_val = NULL;
        return v;
    }
    if (c->i + 1 >= c->argc) {
        cli_usage_error(c, "option %s needs a value", current_option(c));
        return NULL;
    }
    return c->argv[++c->i];
}

int cli_check_no_value(cli_args *c) {
    return c->inline_val ? cli_usage_error(c, "option %s takes no value", c->name) : 0;
}

int cli_usage_error(const cli_args *c, const char *fmt, const char *arg) {
    fprintf(stderr, "%s: ", c->prog);
    fprintf(stderr, fmt, arg);
    fprintf(stderr, "\nTry '%s --help'.\n", c->prog);
    return CLI_EXIT_USAGE;
}

void cli_on_stop_signals(void (*handler)(int)) {
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = handler;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);
}

int cli_parse_size(const char *s, size_t *out) {
    errno = 0;
    char *end;
    double v = strtod(s, &end);
    if (end == s || errno || !(v > 0)) return -1;
    double mul = 1;
    switch (*end) {
    case 'k': case 'K': mul = 1024.0; end++; break;
    case 'm': case 'M': mul = 1024.0 * 1024; end++; break;
    case 'g': case 'G': mul = 1024.0 * 1024 * 1024; end++; break;
    case 't': case 'T': mul = 1024.0 * 1024 * 1024 * 1024; end++; break;
    default: break;
    }
    /* A fraction needs a unit: "1.5" alone would silently mean 1 byte. */
    if (mul == 1 && v != floor(v)) return -1;
    if (*end == 'i' && mul > 1) end++;
    if (*end == 'B' || *end == 'b') end++;
    if (*end) return -1;
    double bytes = v * mul;
    if (bytes < 1 || bytes > 1.8e19) return -1;
    *out = (size_t)bytes;
    return 0;
}

int cli_parse_int(const char *s, int64_t lo, int64_t hi, int64_t *out) {
    errno = 0;
    char *end;
    long long v = strtoll(s, &end, 10);
    if (end == s || *end || errno || v < lo || v > hi) return -1;
    *out = v;
    return 0;
}

int cli_parse_pooling(const char *s, spectral_pooling *out) {
    static const struct {
        const char *name;
        spectral_pooling pooling;
    } k[] = {{"mean", SPECTRAL_POOLING_MEAN},
             {"cls", SPECTRAL_POOLING_CLS},
             {"last", SPECTRAL_POOLING_LAST},
             {"none", SPECTRAL_POOLING_NONE}};
    for (size_t i = 0; i < sizeof k / sizeof k[0]; i++)
        if (!strcmp(s, k[i].name)) {
            *out = k[i].pooling;
            return 0;
        }
    return -1;
}

static const char *const k_dtypes[] = {[SPECTRAL_DTYPE_AUTO] = "auto", [SPECTRAL_DTYPE_F32] = "f32",
                                        [SPECTRAL_DTYPE_BF16] = "bf16"};

int cli_parse_dtype(const char *s, spectral_dtype *out) {
    for (size_t i = 0; i < sizeof k_dtypes / sizeof k_dtypes[0]; i++)
        if (!strcmp(s, k_dtypes[i])) {
            *out = (spectral_dtype)i;
            return 0;
        }
    return -1;
}

const char *cli_dtype_name(spectral_dtype d) {
    return (size_t)d < sizeof k_dtypes / sizeof k_dtypes[0] ? k_dtypes[d] : "?";
}

int cli_parse_device(const char *s, spectral_backend *out) {
    if (!strcmp(s, "cpu")) *out = SPECTRAL_BACKEND_CPU;
    else if (!strcmp(s, "cuda")) *out = SPECTRAL_BACKEND_CUDA;
    else return -1;
    return 0;
}
