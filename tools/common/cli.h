/* What the programs (spectral-embed, spectral-server, spectral-bench) share:
 * an argument cursor that reads "--opt value" and "--opt=value" alike, usage
 * errors in one format, the value parsers, and stop-signal handling. */
#ifndef SPECTRAL_TOOLS_CLI_H
#define SPECTRAL_TOOLS_CLI_H

#include <stddef.h>
#include <stdint.h>

#include "spectral.h"

/* Exit status of a usage error, in every program. */
#define CLI_EXIT_USAGE 2

typedef struct {
    const char *prog; /* for messages: "prog: ...\nTry 'prog --help'." */
    int argc;
    char **argv;
    int i;                  /* the current argument */
    int operands_only;      /* set by the caller after "--": no more options */
    const char *inline_val; /* the text after '=' of "--opt=value", until taken */
    char name[64];          /* "--opt" of "--opt=value" */
} cli_args;

void cli_args_init(cli_args *c, const char *prog, int argc, char **argv);
/* Moves to the next argument and returns it ("--opt" for "--opt=value"),
 * or NULL after the last one. */
const char *cli_next(cli_args *c);
/* The current option's value: its "=value", else the next argument (which
 * it consumes). NULL, after printing a usage error, when there is none. */
const char *cli_value(cli_args *c);
/* After an option was handled: CLI_EXIT_USAGE, with a message, when it was
 * written "--opt=value" but takes no value; else 0. */
int cli_check_no_value(cli_args *c);
/* Prints "prog: <fmt with arg>" and the --help hint to stderr; returns
 * CLI_EXIT_USAGE. */
int cli_usage_error(const cli_args *c, const char *fmt, const char *arg);

/* SIGINT and SIGTERM call handler (from any thread), without SA_RESTART:
 * a blocked read or write returns EINTR, so the program sees the signal. */
void cli_on_stop_signals(void (*handler)(int));

/* Parses sizes like 512M, 1.5G, 4096, 64KiB (k/m/g/t, powers of 1024, an
 * optional "iB"/"B"). A fraction needs a unit: "1.5" alone is refused rather
 * than read as 1 byte. Returns 0, or -1 when s is not such a size. */
int cli_parse_size(const char *s, size_t *out);
/* A whole decimal number within [lo, hi]: 0, or -1 otherwise. */
int cli_parse_int(const char *s, int64_t lo, int64_t hi, int64_t *out);
/* mean | cls | last | none: 0, or -1 for any other word. */
int cli_parse_pooling(const char *s, spectral_pooling *out);
/* cpu | cuda: 0, or -1 for any other word. */
int cli_parse_device(const char *s, spectral_backend *out);
/* auto | f32 | bf16: 0, or -1 for any other word. */
int cli_parse_dtype(const char *s, spectral_dtype *out);
/* The word cli_parse_dtype reads for d. */
const char *cli_dtype_name(spectral_dtype d);

#endif
