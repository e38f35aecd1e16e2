/* spectral-embed: embed text files with a spectral GGUF model, streaming one
 * output record per input as soon as it is computed. Uses only spectral.h. */
#define _POSIX_C_SOURCE 200809L
#include <errno.h>
#include <math.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "spectral.h"
#include "cli.h"
#include "embed_output.h"

enum { EXIT_INPUT_FAILED = 1, EXIT_USAGE = CLI_EXIT_USAGE, EXIT_OUTPUT = 3 };

typedef struct {
    const char *model_path;
    const char **inputs;
    int n_inputs;
    spectral_pooling pooling;
    bool normalize;
    enum output_format format;
    int threads;
    spectral_backend device;
    size_t mem_limit; /* SPECTRAL_MEM_UNLIMITED without --mem-limit */
    int64_t batch_tokens;
    int64_t truncate; /* --truncate N: keep the first N tokens of longer inputs (0: off) */
    bool no_mmap;
    bool no_pad;
    bool verbose;
    spectral_dtype dtype;
    const char **adapters; /* --adapter FILE[:SCALE], in order */
    float *adapter_scales;
    int n_adapters;
} options;

/* 0 when everything written to f so far has reached it, else an errno. */
static int output_status(FILE *f) {
    errno = 0;
    if (fflush(f) == EOF || ferror(f)) return errno ? errno : EIO;
    return 0;
}

/* Ends the program when stdout cannot take what was written to it. */
static int output_failed(int e) {
    fprintf(stderr, "spectral-embed: cannot write the output: %s\n", strerror(e));
    return EXIT_OUTPUT;
}

static void print_usage(FILE *f) {
    fprintf(f,
        "usage: spectral-embed -m MODEL [options] [FILE...]\n"
        "\n"
        "Embeds each FILE (or standard input when no FILE or '-' is given) with a\n"
        "spectral GGUF model and writes one record per input, in input order, as\n"
        "soon as it is computed.\n"
        "\n"
        "options:\n"
        "  -m, --model PATH          GGUF model file (required)\n"
        "  -p, --pooling TYPE        mean | cls | last | none (default: the model's);\n"
        "                            cls goes through the model's pooler if it has one\n"
        "      --no-normalize        do not L2-normalize pooled embeddings\n"
        "  -o, --output-format FMT   jsonl | json | raw (default: jsonl)\n"
        "  -t, --threads N           CPU threads (default: all cores)\n"
        "  -d, --device DEV          cpu | cuda (default: cpu)\n"
        "      --dtype TYPE          GEMM precision: auto (float32, and int8 for Q8_0/Q4_0\n"
        "                            weights) | f32 | bf16 (CPU; default: auto)\n"
        "      --mem-limit SIZE      hard cap on the memory the run uses beyond the loaded\n"
        "                            model: activations plus each input's text and tokens,\n"
        "                            e.g. 512M, 2G (suffixes K, M, G, T are powers of 1024;\n"
        "                            default: none)\n"
        "  -b, --batch-tokens N      pack consecutive short inputs into one forward pass of\n"
        "                            up to N tokens (default: 4096; 1 = one input at a time)\n"
        "      --truncate N          embed the first N tokens of a longer input (the\n"
        "                            tokenizer's end token kept last) and say so on stderr;\n"
        "                            default: every token\n"
        "      --no-pad              a model that pads every input to its length (M2-BERT, as\n"
        "                            its model card does) runs each at its own length instead:\n"
        "                            faster, and a different embedding\n"
        "      --no-mmap             read the model into memory instead of mapping it (a\n"
        "                            mapped model must not be changed or truncated meanwhile)\n"
        "      --adapter FILE[:SCALE]  apply a FourierFT adapter GGUF (tools/convert/convert_fourierft.py)\n"
        "                            with weight SCALE (default 1); repeatable, the deltas add up\n"
        "  -v, --verbose             model details, per-input timing and arena peak on stderr\n"
        "  -h, --help                show this help and exit\n"
        "      --version             show the version and exit\n"
        "\n"
        "output formats:\n"
        "  jsonl  {\"input\": PATH, \"n_tokens\": N, \"embedding\": [...]} per line;\n"
        "         with --pooling none, \"embeddings\": [[...], ...] (N rows)\n"
        "  json   the same objects as one JSON array\n"
        "  raw    little-endian float32: per input, 1 row of the model's pooled length\n"
        "         (or N rows of n_embd with --pooling none), no separators\n"
        "\n"
        "exit status: 0 every input embedded; 1 some inputs failed (each error is on\n"
        "stderr, every other input is still written); 2 usage or model error; 3 the\n"
        "output could not be written (stops at once). A reader that closes the pipe\n"
        "early (| head) ends the run by SIGPIPE, as it does other Unix tools (status 141\n"
        "in the shell; with SIGPIPE ignored, exit 3 and \"Broken pipe\"). SIGINT and\n"
        "SIGTERM end the run after the record being written, never inside one, with\n"
        "-o json's array closed: status 130 / 143.\n"
        "\n"
        "An input name that is not valid UTF-8 is written with U+FFFD in \"input\" and\n"
        "byte for byte, percent-encoded, in \"input_percent\".\n");
}

static void free_options(options *o) {
    for (int i = 0; o->adapters && i < o->n_adapters; i++) free((char *)o->adapters[i]);
    free(o->adapters);
    free(o->adapter_scales);
    free(o->inputs);
}

static int parse_args(int argc, char **argv, options *o) {
    memset(o, 0, sizeof *o);
    o->pooling = SPECTRAL_POOLING_UNSPECIFIED;
    o->normalize = true;
    o->format = OUTPUT_JSONL;
    o->device = SPECTRAL_BACKEND_CPU;
    o->mem_limit = SPECTRAL_MEM_UNLIMITED;
    cli_args c;
    cli_args_init(&c, "spectral-embed", argc, argv);
    o->inputs = calloc((size_t)argc + 1, sizeof *o->inputs);
    o->adapters = calloc((size_t)argc + 1, sizeof *o->adapters);
    o->adapter_scales = calloc((size_t)argc + 1, sizeof *o->adapter_scales);
    if (!o->inputs || !o->adapters || !o->adapter_scales) return cli_usage_error(&c, "%s", "out of memory");
    const char *a;
    while ((a = cli_next(&c))) {
        const char *val;
        int64_t v;
        if (c.operands_only || a[0] != '-' || !strcmp(a, "-")) {
            o->inputs[o->n_inputs++] = a;
        } else if (!strcmp(a, "--")) {
            c.operands_only = 1;
        } else if (!strcmp(a, "-h") || !strcmp(a, "--help")) {
            print_usage(stdout);
            const int e = output_status(stdout);
            exit(e ? output_failed(e) : 0);
        } else if (!strcmp(a, "--version")) {
            printf("spectral-embed %s\n", spectral_version());
            const int e = output_status(stdout);
            exit(e ? output_failed(e) : 0);
        } else if (!strcmp(a, "-m") || !strcmp(a, "--model")) {
            if (!(val = cli_value(&c))) return CLI_EXIT_USAGE;
            o->model_path = val;
        } else if (!strcmp(a, "-p") || !strcmp(a, "--pooling")) {
            if (!(val = cli_value(&c))) return CLI_EXIT_USAGE;
            if (cli_parse_pooling(val, &o->pooling))
                return cli_usage_error(&c, "unknown pooling '%s' (mean, cls, last, none)", val);
        } else if (!strcmp(a, "--no-normalize")) {
            o->normalize = false;
        } else if (!strcmp(a, "-o") || !strcmp(a, "--output-format")) {
            if (!(val = cli_value(&c))) return CLI_EXIT_USAGE;
            if (!strcmp(val, "jsonl")) o->format = OUTPUT_JSONL;
            else if (!strcmp(val, "json")) o->format = OUTPUT_JSON;
            else if (!strcmp(val, "raw")) o->format = OUTPUT_RAW;
            else return cli_usage_error(&c, "unknown output format '%s' (jsonl, json, raw)", val);
        } else if (!strcmp(a, "-t") || !strcmp(a, "--threads")) {
            if (!(val = cli_value(&c))) return CLI_EXIT_USAGE;
            if (cli_parse_int(val, 0, 4096, &v))
                return cli_usage_error(&c, "--threads needs a number from 0 to 4096, got '%s'", val);
            o->threads = (int)v;
        } else if (!strcmp(a, "-d") || !strcmp(a, "--device")) {
            if (!(val = cli_value(&c))) return CLI_EXIT_USAGE;
            if (cli_parse_device(val, &o->device))
                return cli_usage_error(&c, "unknown device '%s' (cpu, cuda)", val);
        } else if (!strcmp(a, "--dtype")) {
            if (!(val = cli_value(&c))) return CLI_EXIT_USAGE;
            if (cli_parse_dtype(val, &o->dtype))
                return cli_usage_error(&c, "unknown dtype '%s' (auto, f32, bf16)", val);
        } else if (!strcmp(a, "--mem-limit")) {
            if (!(val = cli_value(&c))) return CLI_EXIT_USAGE;
            if (cli_parse_size(val, &o->mem_limit))
                return cli_usage_error(&c, "--mem-limit needs a size such as 512M or 2G, got '%s'", val);
        } else if (!strcmp(a, "-b") || !strcmp(a, "--batch-tokens")) {
            if (!(val = cli_value(&c))) return CLI_EXIT_USAGE;
            if (cli_parse_int(val, 1, INT64_C(1) << 34, &o->batch_tokens))
                return cli_usage_error(&c, "--batch-tokens needs a number from 1 to 2^34, got '%s'", val);
        } else if (!strcmp(a, "--truncate")) {
            if (!(val = cli_value(&c))) return CLI_EXIT_USAGE;
            if (cli_parse_int(val, 1, INT64_C(1) << 34, &o->truncate))
                return cli_usage_error(&c, "--truncate needs a number of tokens from 1 to 2^34, got '%s'", val);
        } else if (!strcmp(a, "--no-mmap")) {
            o->no_mmap = true;
        } else if (!strcmp(a, "--no-pad")) {
            o->no_pad = true;
        } else if (!strcmp(a, "--adapter")) {
            if (!(val = cli_value(&c))) return CLI_EXIT_USAGE;
            /* FILE:SCALE when what follows the last ':' is a number, else all of it is FILE */
            char *path = strdup(val);
            if (!path) return cli_usage_error(&c, "%s", "out of memory");
            o->adapter_scales[o->n_adapters] = 1.0f;
            o->adapters[o->n_adapters++] = path; /* freed with the options */
            char *colon = strrchr(path, ':');
            if (colon && colon[1]) {
                char *end;
                errno = 0;
                double s = strtod(colon + 1, &end);
                if (!*end && !errno) {
                    if (!isfinite(s) || fabs(s) > 1e30)
                        return cli_usage_error(&c, "--adapter scale must be a finite number, got '%s'", val);
                    o->adapter_scales[o->n_adapters - 1] = (float)s;
                    *colon = 0;
                }
            }
            if (!path[0]) return cli_usage_error(&c, "--adapter needs FILE[:SCALE], got '%s'", val);
        } else if (!strcmp(a, "-v") || !strcmp(a, "--verbose")) {
            o->verbose = true;
        } else {
            return cli_usage_error(&c, "unknown option '%s'", a);
        }
        if (cli_check_no_value(&c)) return CLI_EXIT_USAGE;
    }
    if (!o->model_path) return cli_usage_error(&c, "%s", "no model given (-m MODEL)");
    if (o->n_inputs == 0) o->inputs[o->n_inputs++] = "-";
    return 0;
}

/* What is left of the cap when the caller holds `held` bytes: 0 when that is
 * all of it (a cap of 0 refuses), SPECTRAL_MEM_UNLIMITED without a cap. */
static size_t cap_left(size_t cap, size_t held) {
    if (cap == SPECTRAL_MEM_UNLIMITED) return cap;
    return held >= cap ? 0 : cap - held;
}

/* Reads a whole file or stdin, at most max bytes (SPECTRAL_MEM_UNLIMITED: no
 * bound; a file known to be larger is refused before any is read). Returns
 * 0, or -1 with a message. */
static int read_input(const char *path, size_t max, char **data, size_t *size, char *err,
                      size_t err_len) {
    FILE *f = strcmp(path, "-") ? fopen(path, "rb") : stdin;
    if (!f) {
        snprintf(err, err_len, "cannot open: %s", strerror(errno));
        return -1;
    }
    struct stat st;
    if (fstat(fileno(f), &st) != 0) {
        snprintf(err, err_len, "cannot read: %s", strerror(errno));
        if (f != stdin) fclose(f);
        return -1;
    }
    if (S_ISDIR(st.st_mode)) {
        if (f != stdin) fclose(f);
        snprintf(err, err_len, "is a directory");
        return -1;
    }
    const int bounded = max != SPECTRAL_MEM_UNLIMITED;
    if (bounded && S_ISREG(st.st_mode) && (uintmax_t)st.st_size > max) {
        if (f != stdin) fclose(f);
        snprintf(err, err_len, "its %jd bytes of text are over the %zu bytes left under --mem-limit",
                 (intmax_t)st.st_size, max);
        return -1;
    }
    size_t cap = 1 << 16, n = 0;
    if (S_ISREG(st.st_mode) && st.st_size > 0) cap = (size_t)st.st_size + 1;
    if (bounded && cap > max + 1) cap = max + 1;
    char *buf = malloc(cap);
    while (buf) {
        n += fread(buf + n, 1, cap - n, f);
        if (n < cap || ferror(f)) break;
        if (bounded && n > max) { /* a pipe, or a file that grew: stop reading */
            free(buf);
            if (f != stdin) fclose(f);
            snprintf(err, err_len, "more than the %zu bytes of text left under --mem-limit", max);
            return -1;
        }
        if (bounded && cap * 2 > max + 1) {
            char *nb = realloc(buf, max + 1);
            if (!nb) {
                free(buf);
                buf = NULL;
                break;
            }
            buf = nb;
            cap = max + 1;
            continue;
        }
        char *nb = cap > SIZE_MAX / 2 ? NULL : realloc(buf, cap * 2);
        if (!nb) {
            free(buf);
            buf = NULL;
            break;
        }
        buf = nb;
        cap *= 2;
    }
    int bad = ferror(f);
    if (f != stdin) fclose(f);
    if (!buf) {
        snprintf(err, err_len, "out of memory reading the input");
        return -1;
    }
    if (bad) {
        free(buf);
        snprintf(err, err_len, "read error");
        return -1;
    }
    *data = buf;
    *size = n;
    return 0;
}

/* The process's peak resident set (Linux: VmHWM, which unlike getrusage's
 * ru_maxrss is not inherited from the parent across fork and exec). */
static const char *peak_rss(char *buf, size_t len) {
    snprintf(buf, len, "unknown");
    FILE *f = fopen("/proc/self/status", "r");
    if (!f) return buf;
    char line[256];
    long kib;
    while (fgets(line, sizeof line, f))
        if (sscanf(line, "VmHWM: %ld kB", &kib) == 1) snprintf(buf, len, "%ld KiB", kib);
    fclose(f);
    return buf;
}

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec * 1e-9;
}

/* Inputs read and tokenized, waiting to be encoded as one packed pass. */
typedef struct {
    int n, cap;
    const char **labels;
    int32_t **tokens;
    int64_t *lens;
    int64_t total;
    double t0;
} pending;

typedef struct {
    const options *o;
    pending *p;
    size_t held; /* bytes of input text the caller holds during the pass */
    int64_t n_embd, n_pooled;
    int *n_written, *n_failed;
    bool progress;
    int write_errno; /* set when stdout failed: everything stops */
} flush_state;

static int on_document(spectral_context *ctx, int64_t i, spectral_status s, void *user) {
    flush_state *fs = user;
    const char *label = fs->p->labels[i];
    if (s != SPECTRAL_OK) {
        const size_t inputs = fs->held + (size_t)fs->p->total * sizeof(int32_t);
        if (s == SPECTRAL_ERR_MEMORY_LIMIT && fs->o->mem_limit != SPECTRAL_MEM_UNLIMITED)
            fprintf(stderr, "%sspectral-embed: %s: %s (--mem-limit %zu bytes less %zu bytes of input text and tokens)\n",
                    fs->progress ? "\n" : "", label, spectral_last_error(), fs->o->mem_limit, inputs);
        else
            fprintf(stderr, "%sspectral-embed: %s: %s\n", fs->progress ? "\n" : "", label,
                    spectral_last_error());
        (*fs->n_failed)++;
        return 0;
    }
    const float *pooled = spectral_get_embedding(ctx);
    int64_t rows = 0;
    const float *states = pooled ? NULL : spectral_get_token_states(ctx, &rows);
    if (!pooled && !states) { /* a device's states failed their download or check */
        fprintf(stderr, "%sspectral-embed: %s: %s\n", fs->progress ? "\n" : "", label, spectral_last_error());
        (*fs->n_failed)++;
        return 0;
    }
    fs->write_errno = output_record(label, fs->p->lens[i], pooled, fs->n_pooled, states, rows, fs->n_embd);
    if (!fs->write_errno) (*fs->n_written)++;
    if (fs->write_errno) return 1; /* stop the batch */
    if (fs->o->verbose)
        fprintf(stderr, "spectral-embed: %s: %lld tokens, %.1f ms since read (pass of %d inputs), arena peak %.2f MiB\n",
                label, (long long)fs->p->lens[i], (now_s() - fs->p->t0) * 1e3, fs->p->n,
                spectral_context_peak_memory(ctx) / 1048576.0);
    return 0;
}

/* Encodes and writes every pending input, in order. Under --mem-limit the
 * activations get what the inputs' text and tokens leave of it. */
static void flush_pending(spectral_context *ctx, flush_state *fs) {
    pending *p = fs->p;
    if (!p->n) return;
    spectral_context_set_mem_limit(ctx, cap_left(fs->o->mem_limit, fs->held + (size_t)p->total * sizeof(int32_t)));
    spectral_encode_batch(ctx, (const int32_t *const *)p->tokens, p->lens, p->n, on_document, fs);
    for (int i = 0; i < p->n; i++) free(p->tokens[i]);
    p->n = 0;
    p->total = 0;
}

/* What a pooled embedding is made of: the dense part (and the shorter prefixes
 * of it the model was trained for), then the lexical sketch and its weight. */
static void print_embedding_parts(const spectral_model *model) {
    int32_t prefixes[SPECTRAL_MAX_PREFIXES];
    const int n = spectral_model_dense_prefixes(model, prefixes, SPECTRAL_MAX_PREFIXES);
    fprintf(stderr, "spectral-embed: embedding %d values: dense %d", spectral_model_n_pooled(model),
            spectral_model_n_embd(model));
    if (n > 1) {
        fprintf(stderr, " (its first");
        for (int i = 0; i < n - 1; i++) fprintf(stderr, "%s %d", i ? "," : "", prefixes[i]);
        fprintf(stderr, " values also trained to be used alone)");
    }
    if (spectral_model_n_lexical(model))
        fprintf(stderr, " + lexical sketch %d at weight %g", spectral_model_n_lexical(model),
                (double)spectral_model_lexical_scale(model));
    fputc('\n', stderr);
}

int main(int argc, char **argv) {
    options o;
    int rc = parse_args(argc, argv, &o);
    if (rc) {
        free_options(&o);
        return rc;
    }

    spectral_model *model = NULL;
    spectral_model_params mp = spectral_model_default_params();
    mp.use_mmap = !o.no_mmap;
    if (spectral_model_load(o.model_path, mp, &model) != SPECTRAL_OK) {
        fprintf(stderr, "spectral-embed: %s\n", spectral_last_error());
        free_options(&o);
        return EXIT_USAGE;
    }
    spectral_context_params cp = spectral_context_default_params();
    cp.n_threads = o.threads;
    cp.backend = o.device;
    cp.mem_limit = o.mem_limit;
    cp.pooling = o.pooling;
    cp.normalize = o.normalize;
    cp.batch_tokens = o.batch_tokens;
    cp.dtype = o.dtype;
    cp.no_pad = o.no_pad;
    spectral_context *ctx = NULL;
    if (spectral_context_create(model, cp, &ctx) != SPECTRAL_OK) {
        fprintf(stderr, "spectral-embed: %s\n", spectral_last_error());
        spectral_model_free(model);
        free_options(&o);
        return EXIT_USAGE;
    }
    /* Adapters: each loaded (delta_W made) once, then merged into this context. */
    spectral_adapter **ads = o.n_adapters ? calloc((size_t)o.n_adapters, sizeof *ads) : NULL;
    spectral_status as = o.n_adapters && !ads ? SPECTRAL_ERR_OUT_OF_MEMORY : SPECTRAL_OK;
    for (int i = 0; i < o.n_adapters && as == SPECTRAL_OK; i++) {
        as = spectral_adapter_load(model, o.adapters[i], &ads[i]);
        if (as == SPECTRAL_OK && o.verbose)
            fprintf(stderr, "spectral-embed: adapter %s (%s): %d matrices, scale %g\n", o.adapters[i],
                    spectral_adapter_name(ads[i]), (int)spectral_adapter_n_targets(ads[i]),
                    (double)o.adapter_scales[i]);
    }
    if (as == SPECTRAL_OK && o.n_adapters)
        as = spectral_context_set_adapters(ctx, ads, o.adapter_scales, o.n_adapters);
    for (int i = 0; ads && i < o.n_adapters; i++) spectral_adapter_free(ads[i]); /* ctx keeps its merged copy */
    free(ads);
    if (as != SPECTRAL_OK) {
        fprintf(stderr, "spectral-embed: adapter: %s\n",
                as == SPECTRAL_ERR_OUT_OF_MEMORY && !spectral_last_error()[0] ? "out of memory" : spectral_last_error());
        spectral_context_free(ctx);
        spectral_model_free(model);
        free_options(&o);
        return EXIT_USAGE;
    }
    const int64_t n_embd = spectral_model_n_embd(model), n_pooled = spectral_model_n_pooled(model);
    const int64_t n_ctx = spectral_model_n_ctx_train(model);
    if (o.verbose)
        fprintf(stderr,
                "spectral-embed: model %s (%s): %d layers, n_embd %lld, pooled %lld, vocab %d, trained context %lld, %llu parameters\n",
                o.model_path, spectral_model_arch(model), spectral_model_n_layer(model),
                (long long)n_embd, (long long)n_pooled, spectral_model_n_vocab(model), (long long)n_ctx,
                (unsigned long long)spectral_model_n_params(model));
    if (o.verbose)
        fprintf(stderr, "spectral-embed: dtype %s: %zu bytes of weights packed for it\n", cli_dtype_name(o.dtype),
                spectral_context_weight_memory(ctx));
    if (o.verbose) print_embedding_parts(model);

    output_begin(o.format);
    const bool progress = isatty(STDERR_FILENO) && !o.verbose && o.n_inputs > 1;
    int n_failed = 0, n_written = 0;
    const int64_t budget = o.batch_tokens ? o.batch_tokens : 4096;
    pending p = {0};
    p.labels = calloc((size_t)o.n_inputs, sizeof *p.labels);
    p.tokens = calloc((size_t)o.n_inputs, sizeof *p.tokens);
    p.lens = calloc((size_t)o.n_inputs, sizeof *p.lens);
    if (!p.labels || !p.tokens || !p.lens) {
        fprintf(stderr, "spectral-embed: out of memory\n");
        return EXIT_USAGE;
    }
    flush_state fs = {&o, &p, 0, n_embd, n_pooled, &n_written, &n_failed, progress, 0};
    /* Under --mem-limit, each input's text and tokens count against the cap
     * with the activations: text + tokens of the inputs held <= the cap,
     * and the pass gets the rest. */
    const size_t cap = o.mem_limit;
    const bool capped = cap != SPECTRAL_MEM_UNLIMITED;
    spectral_tokenize_params tp = spectral_tokenize_default_params();
    tp.max_tokens = o.truncate;
    for (int i = 0; i < o.n_inputs && !fs.write_errno; i++) {
        const char *path = o.inputs[i];
        const char *label = strcmp(path, "-") ? path : "<stdin>";
        if (progress) fprintf(stderr, "\r[%d/%d] %.60s\033[K", i + 1, o.n_inputs, label);
        char err[512];
        char *text = NULL;
        size_t len = 0;
        int32_t *tokens = NULL;
        const char *problem = NULL;
        int64_t n = 0, n_full = 0;
        if (capped && p.n) { /* room for this input, or encode what is pending first */
            struct stat st;
            const int known = (strcmp(path, "-") ? stat(path, &st) : fstat(STDIN_FILENO, &st)) == 0 &&
                              S_ISREG(st.st_mode);
            if (!known || (uintmax_t)st.st_size + (uintmax_t)p.total * 4 > cap) flush_pending(ctx, &fs);
        }
        const size_t held_tokens = (size_t)p.total * sizeof(int32_t);
        if (read_input(path, cap_left(cap, held_tokens), &text, &len, err, sizeof err)) {
            problem = err;
        } else if ((n_full = spectral_tokenize(model, text, len, NULL, 0)) == 0) {
            problem = "empty input";
        } else if ((n = o.truncate && n_full > o.truncate ? o.truncate : n_full) > 0 && capped &&
                   len + (size_t)n * sizeof *tokens + held_tokens > cap) {
            if (p.n) { /* encode what is pending (with this text held) to make room */
                fs.held = len;
                flush_pending(ctx, &fs);
                fs.held = 0;
            }
            if (len + (size_t)n * sizeof *tokens > cap) {
                snprintf(err, sizeof err,
                         "its %zu bytes of text and %zu bytes of tokens are over --mem-limit (%zu bytes)",
                         len, (size_t)n * sizeof *tokens, cap);
                problem = err;
            }
        }
        if (!problem && (!(tokens = n > 0 ? malloc((size_t)n * sizeof *tokens) : NULL) ||
                         spectral_tokenize_with(model, text, len, tp, tokens, n) != n)) {
            snprintf(err, sizeof err, "%s", tokens || n < 0 ? spectral_last_error() : "out of memory for tokens");
            problem = err;
        }
        free(text);
        if (problem) {
            /* Everything read before this input is written before its error. */
            flush_pending(ctx, &fs);
            fprintf(stderr, "%sspectral-embed: %s: %s\n", progress ? "\n" : "", label, problem);
            n_failed++;
            free(tokens);
            continue;
        }
        if (n < n_full)
            fprintf(stderr, "%sspectral-embed: note: %s: %lld tokens, truncated to the first %lld (--truncate)\n",
                    progress ? "\n" : "", label, (long long)n_full, (long long)n);
        /* A model with a hard maximum refuses longer inputs itself (with
         * its own message); only one without says that any length runs. */
        if (n_ctx > 0 && n > n_ctx && !spectral_model_max_tokens(model))
            fprintf(stderr,
                    "%sspectral-embed: warning: %s: %lld tokens is longer than the model's training context (%lld); the mixing is defined for any length, quality may drop\n",
                    progress ? "\n" : "", label, (long long)n, (long long)n_ctx);
        if (p.n && p.total + n > budget) flush_pending(ctx, &fs);
        if (!p.n) p.t0 = now_s();
        p.labels[p.n] = label;
        p.tokens[p.n] = tokens;
        p.lens[p.n++] = n;
        p.total += n;
        if (p.total >= budget) flush_pending(ctx, &fs);
    }
    if (!fs.write_errno) flush_pending(ctx, &fs);
    for (int i = 0; i < p.n; i++) free(p.tokens[i]); /* left by a write failure */
    free(p.labels);
    free(p.tokens);
    free(p.lens);
    if (progress) fputs("\r\033[K", stderr);
    if (!fs.write_errno) fs.write_errno = output_end();
    char rss[32];
    if (o.verbose)
        fprintf(stderr, "spectral-embed: %d of %d inputs embedded, arena peak %zu bytes, peak RSS %s\n",
                n_written, o.n_inputs, spectral_context_peak_memory(ctx), peak_rss(rss, sizeof rss));
    spectral_context_free(ctx);
    spectral_model_free(model);
    free_options(&o);
    if (fs.write_errno) return output_failed(fs.write_errno);
    return n_failed ? EXIT_INPUT_FAILED : 0;
}
