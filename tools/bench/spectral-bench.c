/* spectral-bench - long-sequence throughput of spectral-mixing encoders
 * against a same-width attention Transformer, llama-bench style.
 *
 *   spectral-bench -p 512-16384*2 -r 3 -t 2
 *   spectral-bench -m model.gguf -p 1024,4096 -o jsonl
 *   spectral-bench --mode all --dim 512 --ffn 2048 -p 4096
 *
 * Every row reports tokens/s (mean +- stddev over the repetitions), ms per
 * document, peak activation memory and the share of the machine's GEMM
 * roofline, calibrated in the same run. See docs/bench.md for the columns
 * and FLOP counts.
 *
 * This file is the driver: options, the model under test, rows, timing and
 * the output formats. What it measures against lives elsewhere:
 *   bench_attention.[ch]  the attention baseline (a same-width pre-LN
 *                         Transformer encoder, blockwise attention)
 *   bench_calibrate.[ch]  the roofline: n concurrent single-threaded sgemms,
 *                         a threaded memcpy, a backend's linear op (CUDA) */
#define _POSIX_C_SOURCE 200809L /* clock_gettime, mkstemp, sysconf */
#include "bench_attention.h"
#include "bench_calibrate.h"
#include "cli.h"
#include "formats/gguf.h"
#include "kernels/backend.h"
#include "spectral.h"

#include <errno.h>
#include <limits.h>
#include <math.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define MAX_LIST 64
#define MAX_REPS 1000
#define EXIT_BAD_OPTION 2

/* ------------------------------------------------------------ utilities */

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static _Noreturn void die_opt(const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    fprintf(stderr, "spectral-bench: ");
    vfprintf(stderr, fmt, ap);
    fprintf(stderr, "\n(try --help)\n");
    va_end(ap);
    exit(EXIT_BAD_OPTION);
}

/* xorshift64* with a fixed seed: runs are reproducible. */
static uint64_t rng_state = 0x9E3779B97F4A7C15ull;
static uint64_t rng_u64(void) {
    rng_state ^= rng_state >> 12;
    rng_state ^= rng_state << 25;
    rng_state ^= rng_state >> 27;
    return rng_state * 2685821657736338717ull;
}
static float rng_uniform(float a) { /* U(-a, a) */
    return a * (2.0f * (float)((rng_u64() >> 40) * (1.0 / 16777216.0)) - 1.0f);
}
static void fill_uniform(float *p, size_t n, float a) {
    for (size_t i = 0; i < n; i++) p[i] = rng_uniform(a);
}
static void fill_const(float *p, size_t n, float v) {
    for (size_t i = 0; i < n; i++) p[i] = v;
}

static const char *fmt_bytes(size_t b, char *buf, size_t len) {
    const char *u[] = {"B", "KiB", "MiB", "GiB", "TiB"};
    double v = (double)b;
    int i = 0;
    while (v >= 1024.0 && i < 4) {
        v /= 1024.0;
        i++;
    }
    if (i == 0)
        snprintf(buf, len, "%zu B", b);
    else
        snprintf(buf, len, "%.1f %s", v, u[i]);
    return buf;
}

/* A whole number in [lo, hi], or the exit with a usage error. */
static int64_t parse_int_opt(const char *opt, const char *s, int64_t lo, int64_t hi) {
    int64_t v;
    if (cli_parse_int(s, lo, hi, &v))
        die_opt("%s expects an integer in [%lld, %lld], got '%s'", opt, (long long)lo,
                (long long)hi, s);
    return v;
}

/* A size (cli_parse_size: 512k, 1.5M, ...) in [lo, hi], or the exit with a
 * usage error. */
static int64_t parse_size_opt(const char *opt, const char *s, int64_t lo, int64_t hi) {
    size_t v;
    if (cli_parse_size(s, &v) || v < (uint64_t)lo || v > (uint64_t)hi)
        die_opt("%s expects a size in [%lld, %lld] (suffixes k, m, g), got '%s'", opt,
                (long long)lo, (long long)hi, s);
    return (int64_t)v;
}

/* One number of a list, s[0..end): a size, as cli_parse_size reads it. */
static int parse_item(const char *s, const char *end, int64_t *out) {
    char buf[64];
    size_t v;
    if (end <= s || (size_t)(end - s) >= sizeof buf) return -1;
    memcpy(buf, s, (size_t)(end - s));
    buf[end - s] = 0;
    if (cli_parse_size(buf, &v) || v > (size_t)INT64_MAX) return -1;
    *out = (int64_t)v;
    return 0;
}

/* Lists: "a,b,c", ranges "first-last" (doubling), "first-last*m", "first-last+s". */
static int parse_list(const char *opt, const char *s, int64_t lo, int64_t hi, int64_t *out) {
    int n = 0;
    if (!s || !*s) die_opt("%s expects a list of values", opt);
    const char *p = s;
    while (*p) {
        const char *e = strchr(p, ',');
        if (!e) e = p + strlen(p);
        if (e == p) die_opt("%s: empty item in '%s'", opt, s);
        const char *dash = memchr(p, '-', (size_t)(e - p));
        int64_t a, b, step = 2;
        int mul = 1;
        if (!dash) {
            if (parse_item(p, e, &a)) die_opt("%s: bad value in '%s'", opt, s);
            b = a;
        } else {
            const char *op = dash + 1;
            while (op < e && *op != '*' && *op != '+') op++;
            if (parse_item(p, dash, &a) || parse_item(dash + 1, op, &b))
                die_opt("%s: bad range in '%s'", opt, s);
            if (op < e) {
                mul = *op == '*';
                if (parse_item(op + 1, e, &step)) die_opt("%s: bad range step in '%s'", opt, s);
                if (mul ? step < 2 : step < 1)
                    die_opt("%s: range step must be %s in '%s'", opt, mul ? ">= 2" : ">= 1", s);
            }
            if (b < a) die_opt("%s: range end below its start in '%s'", opt, s);
        }
        for (int64_t v = a;;) {
            if (v < lo || v > hi)
                die_opt("%s: value %lld out of range [%lld, %lld]", opt, (long long)v,
                        (long long)lo, (long long)hi);
            if (n >= MAX_LIST) die_opt("%s: more than %d values", opt, MAX_LIST);
            out[n++] = v;
            if (v == b) break;
            int64_t nx = mul ? (v > INT64_MAX / step ? INT64_MAX : v * step)
                             : (v > INT64_MAX - step ? INT64_MAX : v + step);
            if (nx > b) break;
            v = nx;
        }
        p = *e ? e + 1 : e;
        if (*e && !*p) die_opt("%s: trailing comma in '%s'", opt, s);
    }
    return n;
}

/* JSON string escape into a static-size buffer. */
static void json_str(FILE *f, const char *s) {
    fputc('"', f);
    for (; *s; s++) {
        unsigned char c = (unsigned char)*s;
        if (c == '"' || c == '\\')
            fprintf(f, "\\%c", c);
        else if (c < 0x20)
            fprintf(f, "\\u%04x", c);
        else
            fputc(c, f);
    }
    fputc('"', f);
}

static void csv_str(FILE *f, const char *s) {
    if (!strpbrk(s, ",\"\n")) {
        fputs(s, f);
        return;
    }
    fputc('"', f);
    for (; *s; s++) {
        if (*s == '"') fputc('"', f);
        fputc(*s, f);
    }
    fputc('"', f);
}

/* ------------------------------------------------------------ options */

typedef enum { OUT_MD, OUT_CSV, OUT_JSON, OUT_JSONL } out_fmt;
/* --dtype openblas: float32 GEMMs through OpenBLAS, the reference path
 * (SPECTRAL_CPU_ISA=c for a second copy of the model and its context). */
#define DTYPE_OPENBLAS 100
enum { MODE_MODEL = 1, MODE_MIX = 2, MODE_MLP = 4 };

typedef struct {
    const char *model_path;
    int m2bert; /* --arch m2bert: the random model is an M2-BERT */
    int no_pad;
    int64_t dim, ffn, layers, filters;
    int64_t T[MAX_LIST];
    int nT;
    int64_t B[MAX_LIST];
    int nB;
    int reps;
    int cuda;
    int threads;
    out_fmt fmt;
    int modes;
    int attn;
    double attn_budget;
    size_t mem_limit;
    int64_t calib_n;
    size_t calib_mem;
    /* model rows are repeated for each; DTYPE_OPENBLAS is f32 through OpenBLAS */
    int dtypes[4];
    int n_dtypes;
} options;

static void usage(FILE *f) {
    fprintf(f,
"usage: spectral-bench [options]\n"
"\n"
"Throughput of a spectral-mixing encoder against a same-width attention\n"
"Transformer (same run, same machine), llama-bench style.\n"
"\n"
"model (one of):\n"
"  -m, --model FILE        spectralmlp GGUF to benchmark\n"
"  --dim D                 random-weight model of this width        (default 256)\n"
"  --ffn F                 MLP hidden width                         (default 1024)\n"
"  --layers L              blocks                                   (default 4)\n"
"  --filters K             spectral filter bins per channel         (default 64)\n"
"  --arch A                spectralmlp | m2bert: the random model's architecture;\n"
"                          m2bert defaults to the published 80M shape (D 768,\n"
"                          F 3072, 12 layers, 4 Monarch blocks, Hyena order 128),\n"
"                          its positions the longest -p length   (default spectralmlp)\n"
"  --no-pad                a model that pads (m2bert) runs each document at its own\n"
"                          length, not padded to its positions\n"
"\n"
"runs:\n"
"  -p, --n-tokens LIST     sequence lengths: 1024,4096 or ranges first-last*mult,\n"
"                          first-last+step (first-last alone doubles); k/m suffixes\n"
"                          multiply by 1024                         (default 512-8192*2)\n"
"  -b, --batch LIST        documents per timed batch                (default 1)\n"
"  -r, --repetitions N     timed repetitions per row (+1 warm-up)   (default 5)\n"
"  --device cpu|cuda       backend                                  (default cpu)\n"
"  -t, --threads N         CPU threads, 0 = all online cores        (default 0)\n"
"  --mode M                model | mix | mlp | all (mix: the mixing op alone,\n"
"                          mlp: one MLP alone)                      (default model)\n"
"  --attn, --no-attn       run the attention baseline               (default on)\n"
"  --attn-budget SECONDS   per-row time budget for attention: repetitions stop\n"
"                          past it, and a length whose predicted time (T^2 from\n"
"                          the last measured row) exceeds it is not run\n"
"                          (\"stopped (budget)\")                     (default 60)\n"
"  --dtype LIST            GEMM precision of the spectral model rows, a row each:\n"
"                          auto,f32,bf16 (docs/precision.md), and openblas: f32\n"
"                          through OpenBLAS, the reference path     (default auto)\n"
"  --mem-limit BYTES       activation memory cap (k/m/g suffix), for both the\n"
"                          spectral context and the attention buffers (default none)\n"
"  --calib-size N          side of the calibration sgemm            (default 2048)\n"
"  --calib-mem BYTES       bytes copied by the bandwidth calibration (default 256m)\n"
"  -o, --output FMT        md | csv | json | jsonl                  (default md)\n"
"  -h, --help              this text\n");
}

static void parse_args(int argc, char **argv, options *o) {
    memset(o, 0, sizeof *o);
    o->dim = 256;
    o->ffn = 1024;
    o->layers = 4;
    o->filters = 64;
    o->reps = 5;
    o->fmt = OUT_MD;
    o->modes = MODE_MODEL;
    o->attn = 1;
    o->attn_budget = 60.0;
    o->calib_n = 2048;
    o->calib_mem = 256u << 20;
    int shape_given = 0, dims_given = 0;
    cli_args c;
    cli_args_init(&c, "spectral-bench", argc, argv);
    const char *a;
    while ((a = cli_next(&c))) {
        const char *v = NULL;
#define TAKE()                                                 \
    do {                                                       \
        if (!(v = cli_value(&c))) exit(EXIT_BAD_OPTION);       \
    } while (0)
        if (!strcmp(a, "-h") || !strcmp(a, "--help")) {
            usage(stdout);
            exit(0);
        } else if (!strcmp(a, "-m") || !strcmp(a, "--model")) {
            TAKE();
            o->model_path = v;
        } else if (!strcmp(a, "--dim")) {
            TAKE();
            dims_given = 1;
            o->dim = parse_int_opt(a, v, 1, 65536);
            shape_given = 1;
        } else if (!strcmp(a, "--ffn")) {
            TAKE();
            dims_given = 1;
            o->ffn = parse_int_opt(a, v, 1, 1 << 20);
            shape_given = 1;
        } else if (!strcmp(a, "--layers")) {
            TAKE();
            dims_given = 1;
            o->layers = parse_int_opt(a, v, 1, 1024);
            shape_given = 1;
        } else if (!strcmp(a, "--filters")) {
            TAKE();
            o->filters = parse_int_opt(a, v, 1, 1 << 20);
            shape_given = 1;
        } else if (!strcmp(a, "--arch")) {
            TAKE();
            if (!strcmp(v, "spectralmlp"))
                o->m2bert = 0;
            else if (!strcmp(v, "m2bert"))
                o->m2bert = 1;
            else
                die_opt("--arch expects spectralmlp or m2bert, got '%s'", v);
            shape_given = 1;
        } else if (!strcmp(a, "--no-pad")) {
            o->no_pad = 1;
        } else if (!strcmp(a, "-p") || !strcmp(a, "--n-tokens")) {
            TAKE();
            o->nT = parse_list(a, v, 2, (int64_t)1 << 30, o->T);
        } else if (!strcmp(a, "-b") || !strcmp(a, "--batch")) {
            TAKE();
            o->nB = parse_list(a, v, 1, 1 << 20, o->B);
        } else if (!strcmp(a, "-r") || !strcmp(a, "--repetitions")) {
            TAKE();
            o->reps = (int)parse_int_opt(a, v, 1, MAX_REPS);
        } else if (!strcmp(a, "--device")) {
            TAKE();
            if (!strcmp(v, "cpu"))
                o->cuda = 0;
            else if (!strcmp(v, "cuda"))
                o->cuda = 1;
            else
                die_opt("--device expects cpu or cuda, got '%s'", v);
        } else if (!strcmp(a, "-t") || !strcmp(a, "--threads")) {
            TAKE();
            o->threads = (int)parse_int_opt(a, v, 0, 1024);
        } else if (!strcmp(a, "-o") || !strcmp(a, "--output")) {
            TAKE();
            if (!strcmp(v, "md"))
                o->fmt = OUT_MD;
            else if (!strcmp(v, "csv"))
                o->fmt = OUT_CSV;
            else if (!strcmp(v, "json"))
                o->fmt = OUT_JSON;
            else if (!strcmp(v, "jsonl"))
                o->fmt = OUT_JSONL;
            else
                die_opt("-o expects md, csv, json or jsonl, got '%s'", v);
        } else if (!strcmp(a, "--mode")) {
            TAKE();
            if (!strcmp(v, "model"))
                o->modes = MODE_MODEL;
            else if (!strcmp(v, "mix"))
                o->modes = MODE_MIX;
            else if (!strcmp(v, "mlp"))
                o->modes = MODE_MLP;
            else if (!strcmp(v, "all"))
                o->modes = MODE_MODEL | MODE_MIX | MODE_MLP;
            else
                die_opt("--mode expects model, mix, mlp or all, got '%s'", v);
        } else if (!strcmp(a, "--attn")) {
            o->attn = 1;
        } else if (!strcmp(a, "--no-attn")) {
            o->attn = 0;
        } else if (!strcmp(a, "--attn-budget")) {
            TAKE();
            char *end = NULL;
            errno = 0;
            double d = strtod(v, &end);
            if (errno || end == v || *end || !(d > 0) || d > 1e7)
                die_opt("--attn-budget expects seconds > 0, got '%s'", v);
            o->attn_budget = d;
        } else if (!strcmp(a, "--dtype")) {
            TAKE();
            o->n_dtypes = 0;
            char buf[64];
            snprintf(buf, sizeof buf, "%s", v);
            for (char *save = NULL, *t = strtok_r(buf, ",", &save); t; t = strtok_r(NULL, ",", &save)) {
                spectral_dtype d;
                if (o->n_dtypes == 4 || (strcmp(t, "openblas") && cli_parse_dtype(t, &d)))
                    die_opt("--dtype expects a list of auto, f32, bf16, openblas (at most 4), got '%s'", v);
                o->dtypes[o->n_dtypes++] = strcmp(t, "openblas") ? (int)d : DTYPE_OPENBLAS;
            }
            if (!o->n_dtypes) die_opt("--dtype expects a list of auto, f32, bf16, openblas, got '%s'", v);
        } else if (!strcmp(a, "--mem-limit")) {
            TAKE();
            o->mem_limit = (size_t)parse_size_opt(a, v, 1, INT64_MAX);
        } else if (!strcmp(a, "--calib-mem")) {
            TAKE();
            o->calib_mem = (size_t)parse_size_opt(a, v, 1 << 20, (int64_t)1 << 36);
        } else if (!strcmp(a, "--calib-size")) {
            TAKE();
            o->calib_n = parse_int_opt(a, v, 64, 16384);
        } else {
            die_opt("unknown option '%s'", a);
        }
        if (cli_check_no_value(&c)) exit(EXIT_BAD_OPTION);
#undef TAKE
    }
    if (o->model_path && shape_given)
        die_opt("-m and --arch/--dim/--ffn/--layers/--filters are exclusive");
    if (o->m2bert && o->modes != MODE_MODEL)
        die_opt("--mode mix and mlp time spectralmlp's ops; m2bert runs as a model only");
    if (o->m2bert && !dims_given) { /* togethercomputer/m2-bert-80M-*-retrieval */
        o->dim = 768;
        o->ffn = 3072;
        o->layers = 12;
    }
    if (o->nT == 0) o->nT = parse_list("-p", "512-8192*2", 2, 1 << 30, o->T);
    if (o->nB == 0) {
        o->B[0] = 1;
        o->nB = 1;
    }
    if (o->n_dtypes == 0) {
        o->dtypes[0] = SPECTRAL_DTYPE_AUTO;
        o->n_dtypes = 1;
    }
}

/* ------------------------------------------------------------ model shape */

typedef struct {
    char name[256];
    char arch[64];
    int64_t D, F, L, K;
    int64_t NB;     /* m2bert: Monarch blocks (K is then unused) */
    int have_shape; /* D, F, L, K known (FLOP counts need them) */
} model_shape;

/* Reads the hyperparameters of a model file (for the FLOP count and the
 * attention baseline's shape). */
static int read_shape(const char *path, model_shape *s, char *err, size_t err_len) {
    sp_gguf *g = NULL;
    if (sp_gguf_open(path, &g, err, err_len)) return -1;
    int64_t ai = sp_gguf_find_key(g, "general.architecture");
    if (ai < 0 || sp_gguf_kv_type(g, ai) != SP_GGUF_TYPE_STRING) {
        snprintf(err, err_len, "%s: no general.architecture", path);
        sp_gguf_close(g);
        return -1;
    }
    sp_gguf_str as = sp_gguf_get_str(g, ai);
    size_t n = as.len < sizeof s->arch - 1 ? (size_t)as.len : sizeof s->arch - 1;
    memcpy(s->arch, as.ptr, n);
    s->arch[n] = 0;
    char key[160];
    uint64_t D = 0, F = 0, L = 0, K = 0;
    int ok = 1;
    snprintf(key, sizeof key, "%s.embedding_length", s->arch);
    ok &= sp_gguf_get_uint(g, key, &D) == 0;
    snprintf(key, sizeof key, "%s.feed_forward_length", s->arch);
    ok &= sp_gguf_get_uint(g, key, &F) == 0;
    snprintf(key, sizeof key, "%s.block_count", s->arch);
    ok &= sp_gguf_get_uint(g, key, &L) == 0;
    const int m2 = !strcmp(s->arch, "m2bert");
    snprintf(key, sizeof key, m2 ? "%s.ffn.n_blocks" : "%s.mixing.n_filters", s->arch);
    ok &= sp_gguf_get_uint(g, key, &K) == 0;
    s->have_shape = ok && D > 0 && F > 0 && L > 0 && K > 0 && D <= 65536 && F <= (1 << 20) &&
                    L <= 1024 && K <= (1 << 20);
    if (s->have_shape) {
        s->D = (int64_t)D;
        s->F = (int64_t)F;
        s->L = (int64_t)L;
        s->K = m2 ? 0 : (int64_t)K;
        s->NB = m2 ? (int64_t)K : 0;
    }
    sp_gguf_close(g);
    return 0;
}

/* A GGUF writer with the keys every random model has: the architecture, a
 * name, <arch>.embedding_length / feed_forward_length / block_count /
 * context_length, and the bytes tokenizer. *rc collects the setters' status. */
static sp_gguf_writer *random_model_writer(const char *arch, const char *name, const options *o,
                                           int64_t ctx_len, int *rc) {
    sp_gguf_writer *w = sp_gguf_writer_new();
    if (!w) return NULL;
    char key[96];
#define KEY(s) (snprintf(key, sizeof key, "%s." s, arch), key)
    *rc |= sp_gguf_writer_set_str(w, "general.architecture", arch);
    *rc |= sp_gguf_writer_set_str(w, "general.name", name);
    *rc |= sp_gguf_writer_set_u32(w, KEY("embedding_length"), (uint32_t)o->dim);
    *rc |= sp_gguf_writer_set_u32(w, KEY("feed_forward_length"), (uint32_t)o->ffn);
    *rc |= sp_gguf_writer_set_u32(w, KEY("block_count"), (uint32_t)o->layers);
    *rc |= sp_gguf_writer_set_u32(w, KEY("context_length"),
                                  (uint32_t)(ctx_len > UINT32_MAX ? UINT32_MAX : ctx_len));
    *rc |= sp_gguf_writer_set_str(w, "tokenizer.ggml.model", "bytes");
#undef KEY
    return w;
}

/* Writes w to path (rc: whether adding its keys and tensors failed) and frees it. */
static int finish_random_model(sp_gguf_writer *w, int rc, const char *path, char *err, size_t err_len) {
    if (rc) {
        sp_gguf_writer_free(w);
        snprintf(err, err_len, "failed to add the random model's tensors (out of memory?)");
        return -1;
    }
    int wr = sp_gguf_writer_write(w, path, err, err_len);
    sp_gguf_writer_free(w);
    return wr ? -1 : 0;
}

/* Writes a random-weight spectralmlp GGUF to path. */
static int write_random_model(const char *path, const options *o, int64_t ctx_len, char *err,
                              size_t err_len) {
    const int64_t D = o->dim, F = o->ffn, L = o->layers, K = o->filters;
    char name[128];
    snprintf(name, sizeof name, "random-D%lld-F%lld-L%lld-K%lld", (long long)D, (long long)F,
             (long long)L, (long long)K);
    int rc = 0;
    sp_gguf_writer *w = random_model_writer("spectralmlp", name, o, ctx_len, &rc);
    if (!w) {
        snprintf(err, err_len, "out of memory creating the GGUF writer");
        return -1;
    }
    rc |= sp_gguf_writer_set_u32(w, "spectralmlp.mixing.n_filters", (uint32_t)K);
    rc |= sp_gguf_writer_set_f32(w, "spectralmlp.attention.layer_norm_epsilon", 1e-5f);
    rc |= sp_gguf_writer_set_u32(w, "spectralmlp.pooling_type", 1);
    size_t maxn = (size_t)(D * F > 256 * D ? D * F : 256 * D);
    if ((size_t)(2 * K * D) > maxn) maxn = (size_t)(2 * K * D);
    float *buf = malloc(maxn * sizeof *buf);
    if (rc || !buf) {
        free(buf);
        sp_gguf_writer_free(w);
        snprintf(err, err_len, "out of memory building the random model");
        return -1;
    }
    int64_t ne[3];
    ne[0] = D;
    ne[1] = 256;
    fill_uniform(buf, (size_t)(256 * D), 1.0f);
    rc |= sp_gguf_writer_add_tensor(w, "token_embd.weight", SP_TENSOR_F32, 2, ne, buf);
    char tn[96];
    for (int64_t l = 0; l < L && !rc; l++) {
#define ADD(suffix, nd, n0, n1, n2, fill)                                               \
    do {                                                                                 \
        ne[0] = (n0);                                                                    \
        ne[1] = (n1);                                                                    \
        ne[2] = (n2);                                                                    \
        fill;                                                                            \
        snprintf(tn, sizeof tn, "blk.%lld.%s", (long long)l, suffix);                    \
        rc |= sp_gguf_writer_add_tensor(w, tn, SP_TENSOR_F32, nd, ne, buf);              \
    } while (0)
        ADD("mix_norm.weight", 1, D, 1, 1, fill_const(buf, (size_t)D, 1.0f));
        ADD("mix_norm.bias", 1, D, 1, 1, fill_const(buf, (size_t)D, 0.0f));
        ADD("mix_filter.weight", 3, 2, K, D, fill_uniform(buf, (size_t)(2 * K * D), 0.5f));
        ADD("mix_filter.bias", 1, D, 1, 1, fill_uniform(buf, (size_t)D, 0.02f));
        ADD("ffn_norm.weight", 1, D, 1, 1, fill_const(buf, (size_t)D, 1.0f));
        ADD("ffn_norm.bias", 1, D, 1, 1, fill_const(buf, (size_t)D, 0.0f));
        ADD("ffn_up.weight", 2, D, F, 1, fill_uniform(buf, (size_t)(D * F), 1.0f / sqrtf((float)D)));
        ADD("ffn_up.bias", 1, F, 1, 1, fill_uniform(buf, (size_t)F, 0.02f));
        ADD("ffn_down.weight", 2, F, D, 1, fill_uniform(buf, (size_t)(D * F), 1.0f / sqrtf((float)F)));
        ADD("ffn_down.bias", 1, D, 1, 1, fill_uniform(buf, (size_t)D, 0.02f));
#undef ADD
    }
    free(buf);
    return finish_random_model(w, rc, path, err, err_len);
}

/* Writes a random-weight m2bert GGUF of ctx_len positions to path: the
 * shape of the published retrieval models (4 Monarch blocks, Hyena emb_dim
 * 5, order 128) at width D, F and L layers; a bytes tokenizer. */
static int write_random_m2bert(const char *path, const options *o, int64_t ctx_len, char *err,
                               size_t err_len) {
    const int64_t D = o->dim, F = o->ffn, L = o->layers, NB = 4, E = 5, O = 128, P = ctx_len;
    if (D % NB || F % NB) {
        snprintf(err, err_len, "m2bert: --dim and --ffn must be multiples of 4 (Monarch blocks)");
        return -1;
    }
    char name[128];
    snprintf(name, sizeof name, "random-m2bert-D%lld-F%lld-L%lld-P%lld", (long long)D, (long long)F,
             (long long)L, (long long)P);
    int rc = 0;
    sp_gguf_writer *w = random_model_writer("m2bert", name, o, P, &rc);
    size_t maxn = (size_t)(3 * D * D > 256 * D ? 3 * D * D : 256 * D);
    if ((size_t)(P * D) > maxn) maxn = (size_t)(P * D);
    if ((size_t)(2 * F * D) > maxn) maxn = (size_t)(2 * F * D);
    float *buf = malloc(maxn * sizeof *buf);
    if (!w || !buf) {
        free(buf);
        sp_gguf_writer_free(w);
        snprintf(err, err_len, "out of memory building the random model");
        return -1;
    }
    rc |= sp_gguf_writer_set_u32(w, "m2bert.ffn.n_blocks", (uint32_t)NB);
    rc |= sp_gguf_writer_set_u32(w, "m2bert.hyena.emb_dim", (uint32_t)E);
    rc |= sp_gguf_writer_set_u32(w, "m2bert.hyena.filter_order", (uint32_t)O);
    rc |= sp_gguf_writer_set_u32(w, "m2bert.hyena.l_max", (uint32_t)P);
    int64_t ne[3] = {1, 1, 1};
    char tn[96];
#define ADD(nm, nd, n0, n1, fill)                                                        \
    do {                                                                                 \
        ne[0] = (n0);                                                                    \
        ne[1] = (n1);                                                                    \
        fill;                                                                            \
        rc |= sp_gguf_writer_add_tensor(w, nm, SP_TENSOR_F32, nd, ne, buf);              \
    } while (0)
#define UNI(n, a) fill_uniform(buf, (size_t)(n), a)
    ADD("token_embd.weight", 2, D, 256, UNI(256 * D, 1.0f));
    ADD("position_embd.weight", 2, D, P, UNI(P * D, 0.1f));
    ADD("token_types.weight", 2, D, 2, UNI(2 * D, 0.1f));
    ADD("token_embd_norm.weight", 1, D, 1, fill_const(buf, (size_t)D, 1.0f));
    ADD("token_embd_norm.bias", 1, D, 1, fill_const(buf, (size_t)D, 0.0f));
    ADD("pooler.weight", 2, D, D, UNI(D * D, 1.0f / sqrtf((float)D)));
    ADD("pooler.bias", 1, D, 1, UNI(D, 0.02f));
    for (int64_t l = 0; l < L && !rc; l++) {
#define BLK(s) (snprintf(tn, sizeof tn, "blk.%lld.%s", (long long)l, s), tn)
        ADD(BLK("mix_in.weight"), 2, D, 3 * D, UNI(3 * D * D, 1.0f / sqrtf((float)D)));
        ADD(BLK("mix_in.bias"), 1, 3 * D, 1, UNI(3 * D, 0.02f));
        ADD(BLK("mix_conv.weight"), 2, 3, 3 * D, UNI(9 * D, 0.5f));
        ADD(BLK("mix_conv.bias"), 1, 3 * D, 1, UNI(3 * D, 0.02f));
        ADD(BLK("mix_out.weight"), 2, D, D, UNI(D * D, 1.0f / sqrtf((float)D)));
        ADD(BLK("mix_out.bias"), 1, D, 1, UNI(D, 0.02f));
        ADD(BLK("ffn_gate.weight"), 2, D / NB, 2 * F, UNI(2 * F * D / NB, 1.0f / sqrtf((float)(D / NB))));
        ADD(BLK("ffn_down.weight"), 2, F / NB, D, UNI(D * F / NB, 1.0f / sqrtf((float)(F / NB))));
        ADD(BLK("ffn_down.bias"), 1, D, 1, UNI(D, 0.02f));
        ADD(BLK("ffn_norm.weight"), 1, D, 1, fill_const(buf, (size_t)D, 1.0f));
        ADD(BLK("ffn_norm.bias"), 1, D, 1, fill_const(buf, (size_t)D, 0.0f));
        static const char *const filt[2] = {"hyena", "hyena_res"}, *const dirs[2] = {"fwd", "rev"};
        for (int f = 0; f < 2; f++) {
            char fn[64];
#define FLT(s) (snprintf(fn, sizeof fn, "%s.%s", filt[f], s), BLK(fn))
            ADD(FLT("bias"), 1, D, 1, UNI(D, 1.0f));
            ADD(FLT("pos_z"), 2, E, P, UNI(E * P, 1.0f));
            ADD(FLT("pos_t"), 1, P, 1, for (int64_t i = 0; i < P; i++) buf[i] = (float)i / (float)(P > 1 ? P - 1 : 1));
            ADD(FLT("decay"), 1, D, 1, UNI(D, 5.0f));
            for (int d = 0; d < 2; d++) {
                char part[48];
#define DIR(s) (snprintf(part, sizeof part, "%s_%s", dirs[d], s), FLT(part))
                ADD(DIR("in.weight"), 2, E, O, UNI(E * O, 0.5f));
                ADD(DIR("in.bias"), 1, O, 1, UNI(O, 0.1f));
                ADD(DIR("mid1.weight"), 2, O, O, UNI(O * O, 1.0f / sqrtf((float)O)));
                ADD(DIR("mid1.bias"), 1, O, 1, UNI(O, 0.1f));
                ADD(DIR("mid2.weight"), 2, O, O, UNI(O * O, 1.0f / sqrtf((float)O)));
                ADD(DIR("mid2.bias"), 1, O, 1, UNI(O, 0.1f));
                ADD(DIR("freq"), 2, O, 3, fill_const(buf, (size_t)(3 * O), 10.0f));
                ADD(DIR("out.weight"), 2, O, D, UNI(D * O, 1.0f / sqrtf((float)O)));
#undef DIR
            }
#undef FLT
        }
#undef BLK
    }
#undef UNI
#undef ADD
    free(buf);
    return finish_random_model(w, rc, path, err, err_len);
}

/* ------------------------------------------------------------ FLOP counts */

static double log2d(double x) { return log(x) / log(2.0); }

/* Spectral mixing of one layer: a real FFT and its inverse per channel
 * (2.5 T log2 T each, half of the 5 N log2 N complex count) plus the complex
 * filter multiply (6 flops) on the k = min(K, T/2) kept bins. */
static double flops_mix(int64_t T, int64_t D, int64_t K) {
    int64_t k = K < T / 2 ? K : T / 2;
    return 5.0 * (double)T * log2d((double)T) * (double)D + 6.0 * (double)k * (double)D;
}
static double flops_mlp(int64_t T, int64_t D, int64_t F) { return 4.0 * (double)T * D * F; }
/* One M2-BERT layer: its projections (D to 3D, D to D), the GLU MLP's
 * block-diagonal GEMMs (D to 2F and F to D over NB blocks), and two long
 * convolutions per channel (a real FFT of 2T and its inverse each, the
 * complex product). The filters' spectra are cached per length: not counted. */
static double flops_m2bert(int64_t T, int64_t D, int64_t F, int64_t NB) {
    const double gemm = 2.0 * (double)T * D * (3.0 * D + D) + 2.0 * (double)T * 3.0 * F * D / (double)NB;
    const double n = 2.0 * (double)T;
    return gemm + 2.0 * (double)D * (2.0 * 2.5 * n * log2d(n) + 6.0 * (T + 1));
}
/* QKV (2 T D 3D) + output projection (2 T D D) + QK^T and PV (2 T^2 D each). */
static double flops_attn_mix(int64_t T, int64_t D) {
    return 8.0 * (double)T * D * D + 4.0 * (double)T * T * D;
}

/* ------------------------------------------------------------ calibration */

/* What bench_calibrate measured before the rows; every row refers to it. */
typedef struct {
    double gemm_gflops; /* CPU: n concurrent single-threaded sgemms; CUDA: the linear op */
    double bw_gbs;      /* memcpy, bytes read + written per second */
    int64_t gemm_n;
    int gemm_threads; /* CPU: concurrent sgemms (one per thread); 0 on CUDA */
    size_t bw_bytes;
    int have_bw;
} calib;

/* ------------------------------------------------------------ results */

typedef struct {
    const char *impl; /* "spectral" | "attention" */
    const char *dtype; /* spectral model rows: the context's dtype; NULL otherwise */
    const char *mode; /* "model" | "mix" | "mlp" */
    char model[192];
    int64_t T, batch;
    char status[160]; /* "ok" or why there are no numbers */
    int n;            /* measured repetitions */
    double samples_ns[MAX_REPS];
    double avg_ns, std_ns, avg_ts, std_ts, ms_doc;
    size_t peak_mem;
    double flops_doc, gflops, share; /* share of the calibrated GEMM peak, 0..1 */
    int have_ratio;
    double time_ratio, mem_ratio; /* spectral / attention */
} row;

typedef struct {
    const options *o;
    const calib *cal;
    const char *backend;
    int threads;
    int n_rows;
    const char *build;
} out_ctx;

static void row_finish(row *r, int64_t tokens_per_batch) {
    if (r->n <= 0) return;
    double s = 0, s2 = 0, ts = 0, ts2 = 0;
    for (int i = 0; i < r->n; i++) {
        double t = r->samples_ns[i];
        double tps = (double)tokens_per_batch / (t * 1e-9);
        s += t;
        ts += tps;
    }
    r->avg_ns = s / r->n;
    r->avg_ts = ts / r->n;
    for (int i = 0; i < r->n; i++) {
        double t = r->samples_ns[i];
        double tps = (double)tokens_per_batch / (t * 1e-9);
        s2 += (t - r->avg_ns) * (t - r->avg_ns);
        ts2 += (tps - r->avg_ts) * (tps - r->avg_ts);
    }
    r->std_ns = r->n > 1 ? sqrt(s2 / (r->n - 1)) : 0;
    r->std_ts = r->n > 1 ? sqrt(ts2 / (r->n - 1)) : 0;
    r->ms_doc = r->avg_ns * 1e-6 / (double)r->batch;
    if (r->flops_doc > 0) r->gflops = r->flops_doc * (double)r->batch / (r->avg_ns * 1e-9) / 1e9;
}

#define MD_COLS 14
static const int md_width[MD_COLS] = {34, 7, 7, 5, 15, 8, 5, 24, 10, 10, 8, 6, 8, 7};
static const int md_right[MD_COLS] = {0, 0, 1, 0, 0, 1, 1, 1, 1, 1, 1, 1, 1, 1};

/* One markdown table line; "±" counts as one column for the padding. */
static void md_line(const char *const *cells) {
    printf("|");
    for (int c = 0; c < MD_COLS; c++) {
        int len = 0;
        for (const unsigned char *p = (const unsigned char *)cells[c]; *p; p++)
            len += (*p & 0xC0) != 0x80;
        int pad = md_width[c] > len ? md_width[c] - len : 0;
        printf(" ");
        if (md_right[c]) printf("%*s", pad, "");
        printf("%s", cells[c]);
        if (!md_right[c]) printf("%*s", pad, "");
        printf(" |");
    }
    printf("\n");
}

static void print_header(const out_ctx *oc) {
    const calib *c = oc->cal;
    char bw[96];
    if (c->have_bw)
        snprintf(bw, sizeof bw, "memcpy %.0f MiB x %d threads = %.1f GB/s (read+write)",
                 (double)c->bw_bytes / 1048576.0, oc->threads, c->bw_gbs);
    else
        snprintf(bw, sizeof bw, "memory bandwidth n/a on this backend");
    char gemm[96];
    if (c->gemm_threads > 0)
        snprintf(gemm, sizeof gemm, "sgemm %lld^3 x %d threads = %.1f GFLOP/s",
                 (long long)c->gemm_n, c->gemm_threads, c->gemm_gflops);
    else
        snprintf(gemm, sizeof gemm, "sgemm %lld^3 = %.1f GFLOP/s", (long long)c->gemm_n,
                 c->gemm_gflops);
    FILE *f = oc->o->fmt == OUT_MD ? stdout : stderr;
    fprintf(f, "spectral-bench (spectral %s, %s): backend %s, %d threads | roofline calibration: "
               "%s, %s | %s\n",
            spectral_version(), oc->build, oc->backend, oc->threads, gemm, bw, spectral_system_info());
    if (oc->o->fmt == OUT_MD) {
        static const char *names[MD_COLS] = {"model", "backend", "threads", "mode", "impl",
                                             "T", "batch", "t/s", "ms/doc", "peak mem",
                                             "GFLOP/s", "%peak", "s/a time", "s/a mem"};
        printf("\n");
        md_line(names);
        printf("|");
        for (int c = 0; c < MD_COLS; c++) {
            putchar(' ');
            for (int k = 0; k < md_width[c] - (md_right[c] ? 1 : 0); k++) putchar('-');
            if (md_right[c]) putchar(':');
            printf(" |");
        }
        printf("\n");
        fflush(stdout);
    } else if (oc->o->fmt == OUT_CSV) {
        printf("build,model,impl,backend,n_threads,mode,n_tokens,n_batch,n_reps,status,avg_ns,"
               "stddev_ns,avg_ts,stddev_ts,ms_per_doc,peak_mem_bytes,flops_per_doc,gflops,"
               "peak_share,gemm_peak_gflops,mem_bw_gbs,time_ratio,mem_ratio,dtype\n");
    } else if (oc->o->fmt == OUT_JSON) {
        printf("[\n");
    }
    fflush(f);
}

static void print_row(out_ctx *oc, const row *r) {
    const int ok = !strcmp(r->status, "ok");
    switch (oc->o->fmt) {
    case OUT_MD: {
        char ts[64], ms[32], pm[32], gf[32], sh[32], tr[32], mr[32];
        if (ok) {
            if (r->n < oc->o->reps) /* cut short by --attn-budget */
                snprintf(ts, sizeof ts, "%.2f ± %.2f (n=%d)", r->avg_ts, r->std_ts, r->n);
            else
                snprintf(ts, sizeof ts, "%.2f ± %.2f", r->avg_ts, r->std_ts);
            snprintf(ms, sizeof ms, "%.3f", r->ms_doc);
            if (r->peak_mem)
                fmt_bytes(r->peak_mem, pm, sizeof pm);
            else
                snprintf(pm, sizeof pm, "-");
            snprintf(gf, sizeof gf, r->gflops > 0 ? "%.1f" : "-", r->gflops);
            if (r->gflops > 0 && oc->cal->gemm_gflops > 0)
                snprintf(sh, sizeof sh, "%.1f%%", 100.0 * r->share);
            else
                snprintf(sh, sizeof sh, "-");
        } else {
            snprintf(ts, sizeof ts, "%.60s", r->status);
            snprintf(ms, sizeof ms, "-");
            snprintf(pm, sizeof pm, "-");
            snprintf(gf, sizeof gf, "-");
            snprintf(sh, sizeof sh, "-");
        }
        if (r->have_ratio) {
            snprintf(tr, sizeof tr, "%.3g", r->time_ratio);
            if (r->mem_ratio > 0)
                snprintf(mr, sizeof mr, "%.3g", r->mem_ratio);
            else
                snprintf(mr, sizeof mr, "-");
        } else {
            snprintf(tr, sizeof tr, "-");
            snprintf(mr, sizeof mr, "-");
        }
        char th[16], tt[24], bb[24], impl[48];
        snprintf(impl, sizeof impl, r->dtype ? "%s %s" : "%s", r->impl, r->dtype);
        snprintf(th, sizeof th, "%d", oc->threads);
        snprintf(tt, sizeof tt, "%lld", (long long)r->T);
        snprintf(bb, sizeof bb, "%lld", (long long)r->batch);
        const char *cells[MD_COLS] = {r->model, oc->backend, th, r->mode, impl, tt, bb,
                                      ts, ms, pm, gf, sh, tr, mr};
        md_line(cells);
        break;
    }
    case OUT_CSV:
        csv_str(stdout, oc->build);
        putchar(',');
        csv_str(stdout, r->model);
        printf(",%s,%s,%d,%s,%lld,%lld,%d,", r->impl, oc->backend, oc->threads, r->mode,
               (long long)r->T, (long long)r->batch, r->n);
        csv_str(stdout, r->status);
        if (ok)
            printf(",%.0f,%.0f,%.4f,%.4f,%.6f,%zu,%.6g,%.4f,%.6f,", r->avg_ns, r->std_ns,
                   r->avg_ts, r->std_ts, r->ms_doc, r->peak_mem, r->flops_doc, r->gflops,
                   r->share);
        else
            printf(",,,,,,,%.6g,,,", r->flops_doc);
        printf("%.3f,", oc->cal->gemm_gflops);
        if (oc->cal->have_bw) printf("%.3f", oc->cal->bw_gbs);
        if (r->have_ratio) {
            printf(",%.6g,", r->time_ratio);
            if (r->mem_ratio > 0) printf("%.6g", r->mem_ratio);
        } else {
            printf(",,");
        }
        printf(",%s\n", r->dtype ? r->dtype : "");
        break;
    case OUT_JSON:
    case OUT_JSONL: {
        const int pretty = oc->o->fmt == OUT_JSON;
        if (pretty && oc->n_rows > 0) printf(",\n");
        printf(pretty ? "  {" : "{");
        printf("\"build\": ");
        json_str(stdout, oc->build);
        printf(", \"model\": ");
        json_str(stdout, r->model);
        printf(", \"impl\": \"%s\", \"backend\": \"%s\", \"n_threads\": %d, \"mode\": \"%s\", "
               "\"n_tokens\": %lld, \"n_batch\": %lld, \"n_reps\": %d, \"status\": ",
               r->impl, oc->backend, oc->threads, r->mode, (long long)r->T, (long long)r->batch,
               r->n);
        json_str(stdout, r->status);
        if (r->dtype) printf(", \"dtype\": \"%s\"", r->dtype);
        if (ok) {
            printf(", \"avg_ns\": %.0f, \"stddev_ns\": %.0f, \"avg_ts\": %.4f, \"stddev_ts\": %.4f, "
                   "\"ms_per_doc\": %.6f, \"peak_mem_bytes\": %zu, \"gflops\": %.4f, "
                   "\"peak_share\": %.6f, \"samples_ns\": [",
                   r->avg_ns, r->std_ns, r->avg_ts, r->std_ts, r->ms_doc, r->peak_mem, r->gflops,
                   r->share);
            for (int i = 0; i < r->n; i++) printf("%s%.0f", i ? ", " : "", r->samples_ns[i]);
            printf("]");
        }
        printf(", \"flops_per_doc\": %.6g, \"gemm_peak_gflops\": %.3f", r->flops_doc,
               oc->cal->gemm_gflops);
        if (oc->cal->have_bw) printf(", \"mem_bw_gbs\": %.3f", oc->cal->bw_gbs);
        if (r->have_ratio) {
            printf(", \"time_ratio\": %.6g", r->time_ratio);
            if (r->mem_ratio > 0) printf(", \"mem_ratio\": %.6g", r->mem_ratio);
        }
        printf(pretty ? "}" : "}\n");
        break;
    }
    }
    oc->n_rows++;
    fflush(stdout);
}

static void print_footer(const out_ctx *oc) {
    if (oc->o->fmt == OUT_JSON) printf("\n]\n");
    if (oc->o->fmt == OUT_MD)
        printf("\nt/s: tokens per second, mean ± stddev over the repetitions ((n=N): fewer "
               "repetitions, cut by --attn-budget); s/a: spectral / attention (time per document, "
               "peak activation memory); %%peak: counted FLOP/s over the calibrated sgemm peak.\n");
    fflush(stdout);
}

/* ------------------------------------------------------------ spectral runs */

typedef struct {
    int failed;
    spectral_status first;
} batch_state;

static int on_doc(spectral_context *ctx, int64_t i, spectral_status st, void *ud) {
    (void)ctx;
    (void)i;
    batch_state *bs = ud;
    if (st != SPECTRAL_OK && !bs->failed) {
        bs->failed = 1;
        bs->first = st;
    }
    return 0;
}

static spectral_status run_spectral_batch(spectral_context *ctx, int32_t *const *docs, int64_t T,
                                          int64_t b, const int64_t *lens) {
    if (b == 1) return spectral_encode(ctx, docs[0], T);
    batch_state bs = {0, SPECTRAL_OK};
    spectral_status st =
        spectral_encode_batch(ctx, (const int32_t *const *)docs, lens, b, on_doc, &bs);
    if (st == SPECTRAL_OK && bs.failed) st = bs.first;
    return st;
}

static void set_status_err(row *r, spectral_status st) {
    if (st == SPECTRAL_ERR_MEMORY_LIMIT)
        snprintf(r->status, sizeof r->status, "over mem limit");
    else
        snprintf(r->status, sizeof r->status, "error: %s: %.100s", spectral_status_string(st),
                 spectral_last_error());
}

/* A context of model for the rows; reference: with the CPU kernels capped
 * to C (SPECTRAL_CPU_ISA=c), so float32 runs through OpenBLAS. */
static spectral_status make_context(spectral_model *model, spectral_context_params cp, int reference,
                                    spectral_context **ctx) {
    if (!reference) return spectral_context_create(model, cp, ctx);
    const char *was = getenv("SPECTRAL_CPU_ISA");
    char *saved = was ? strdup(was) : NULL;
    setenv("SPECTRAL_CPU_ISA", "c", 1);
    const spectral_status st = spectral_context_create(model, cp, ctx);
    if (saved) setenv("SPECTRAL_CPU_ISA", saved, 1);
    else unsetenv("SPECTRAL_CPU_ISA");
    free(saved);
    return st;
}

static void spectral_model_row(spectral_model *model, const options *o, spectral_dtype dtype,
                               int reference, int64_t T, int64_t b, row *r) {
    spectral_context_params cp = spectral_context_default_params();
    cp.dtype = dtype;
    cp.n_threads = o->threads;
    cp.backend = o->cuda ? SPECTRAL_BACKEND_CUDA : SPECTRAL_BACKEND_CPU;
    cp.mem_limit = o->mem_limit ? o->mem_limit : SPECTRAL_MEM_UNLIMITED; /* 0: no --mem-limit */
    cp.no_pad = o->no_pad;
    spectral_context *ctx = NULL;
    spectral_status st = make_context(model, cp, reference, &ctx);
    if (st != SPECTRAL_OK) {
        set_status_err(r, st);
        return;
    }
    if (o->mem_limit && spectral_context_memory_needed(ctx, T) > o->mem_limit) {
        snprintf(r->status, sizeof r->status, "over mem limit");
        spectral_context_free(ctx);
        return;
    }
    int32_t n_vocab = spectral_model_n_vocab(model);
    if (n_vocab < 1) n_vocab = 1;
    int32_t **docs = calloc((size_t)b, sizeof *docs);
    int64_t *lens = calloc((size_t)b, sizeof *lens);
    int oom = !docs || !lens;
    for (int64_t i = 0; i < b && !oom; i++) {
        docs[i] = malloc((size_t)T * sizeof(int32_t));
        if (!docs[i]) {
            oom = 1;
            break;
        }
        lens[i] = T;
        for (int64_t t = 0; t < T; t++) docs[i][t] = (int32_t)(rng_u64() % (uint64_t)n_vocab);
    }
    if (oom) {
        snprintf(r->status, sizeof r->status, "error: out of memory for the token buffers");
        goto done;
    }
    st = run_spectral_batch(ctx, docs, T, b, lens); /* warm-up (FFT plans, arena) */
    if (st != SPECTRAL_OK) {
        set_status_err(r, st);
        goto done;
    }
    for (int i = 0; i < o->reps && i < MAX_REPS; i++) {
        double t0 = now_s();
        st = run_spectral_batch(ctx, docs, T, b, lens);
        double dt = now_s() - t0;
        if (st != SPECTRAL_OK) {
            set_status_err(r, st);
            goto done;
        }
        r->samples_ns[r->n++] = dt * 1e9;
    }
    r->peak_mem = spectral_context_peak_memory(ctx);
    snprintf(r->status, sizeof r->status, "ok");
done:
    if (docs)
        for (int64_t i = 0; i < b; i++) free(docs[i]);
    free(docs);
    free(lens);
    spectral_context_free(ctx);
}

/* Op modes run on a bare backend: the mixing op or one MLP, one layer. */
typedef struct {
    sp_backend *be;
    size_t mem_cur, mem_peak; /* activations only (weights excluded, as in the arena) */
    float *ln_w, *ln_b, *filter, *fbias, *wup, *bup, *wdn, *bdn; /* weights (backend memory) */
} op_bench;

static float *be_rand(sp_backend *be, size_t n, float a, float c, int is_const) {
    float *h = malloc(n * sizeof *h);
    float *d = be->ops->buffer_alloc(be, n * sizeof(float));
    if (!h || !d) {
        free(h);
        if (d) be->ops->buffer_free(be, d);
        return NULL;
    }
    if (is_const)
        fill_const(h, n, c);
    else
        fill_uniform(h, n, a);
    if (be->ops->upload(be, d, h, n * sizeof(float))) {
        be->ops->buffer_free(be, d);
        d = NULL;
    }
    free(h);
    return d;
}

static float *be_act(op_bench *ob, size_t bytes) {
    float *p = ob->be->ops->buffer_alloc(ob->be, bytes ? bytes : 1);
    if (p) {
        ob->mem_cur += (bytes + 255) / 256 * 256;
        if (ob->mem_cur > ob->mem_peak) ob->mem_peak = ob->mem_cur;
    }
    return p;
}

static void spectral_op_row(op_bench *ob, const options *o, const model_shape *s, int mix,
                            int64_t T, int64_t b, row *r) {
    sp_backend *be = ob->be;
    const int64_t D = s->D, F = s->F, K = s->K;
    ob->mem_cur = ob->mem_peak = 0;
    size_t ws_bytes = mix ? be->ops->mix_workspace_size(be, T, D) : 0;
    size_t need = mix ? 2 * (size_t)(T * D) * 4 + ws_bytes
                      : 2 * (size_t)(T * D) * 4 + (size_t)(T * F) * 4;
    if (o->mem_limit && need > o->mem_limit) {
        snprintf(r->status, sizeof r->status, "over mem limit");
        return;
    }
    float *a = NULL, *hbuf = NULL, *mid = NULL;
    void *ws = NULL;
    float *hostbuf = malloc((size_t)(T * D) * 4);
    a = be_act(ob, (size_t)(T * D) * 4);
    hbuf = be_act(ob, (size_t)(T * D) * 4);
    if (mix && ws_bytes) ws = be_act(ob, ws_bytes);
    if (!mix) mid = be_act(ob, (size_t)(T * F) * 4);
    if (!hostbuf || !a || !hbuf || (mix && ws_bytes && !ws) || (!mix && !mid)) {
        snprintf(r->status, sizeof r->status, "error: out of memory (%.120s)", be->err);
        goto done;
    }
    fill_uniform(hostbuf, (size_t)(T * D), 1.0f);
    if (be->ops->upload(be, a, hostbuf, (size_t)(T * D) * 4) ||
        be->ops->upload(be, hbuf, hostbuf, (size_t)(T * D) * 4)) {
        snprintf(r->status, sizeof r->status, "error: %.140s", be->err);
        goto done;
    }
    for (int i = -1; i < o->reps && i < MAX_REPS; i++) {
        double t0 = now_s();
        int rc = 0;
        for (int64_t d = 0; d < b && !rc; d++) {
            if (mix)
                rc = be->ops->spectral_mix(be, a, ob->filter, ob->fbias, K, T, D, ws, hbuf);
            else
                rc = be->ops->linear(be, a, ob->wup, ob->bup, T, D, F, SP_ACT_GELU, 0, mid) ||
                     be->ops->linear(be, mid, ob->wdn, ob->bdn, T, F, D, SP_ACT_NONE, 1, hbuf);
        }
        rc = rc || be->ops->synchronize(be);
        double dt = now_s() - t0;
        if (rc) {
            snprintf(r->status, sizeof r->status, "error: %.140s", be->err);
            goto done;
        }
        if (i >= 0) r->samples_ns[r->n++] = dt * 1e9;
    }
    r->peak_mem = ob->mem_peak;
    snprintf(r->status, sizeof r->status, "ok");
done:
    free(hostbuf);
    if (a) be->ops->buffer_free(be, a);
    if (hbuf) be->ops->buffer_free(be, hbuf);
    if (ws) be->ops->buffer_free(be, ws);
    if (mid) be->ops->buffer_free(be, mid);
}

/* ------------------------------------------------------------ attention runs */

typedef struct {
    int64_t T;  /* last measured length, 0 = none */
    double sec; /* its mean seconds per batch */
    int warmed;
} attn_series;

static void attention_row(bench_attn *am, const options *o, int mix, int64_t T, int64_t b,
                          attn_series *ser, row *r) {
    const bench_attn_mode mode = mix ? BENCH_ATTN_MIX : BENCH_ATTN_MODEL;
    if (ser->T > 0 && T > ser->T) {
        double pred = ser->sec * ((double)T / ser->T) * ((double)T / ser->T);
        if (pred > o->attn_budget) {
            snprintf(r->status, sizeof r->status, "stopped (budget)");
            return;
        }
    }
    if (o->mem_limit && bench_attn_memory_needed(am, T, mode) > o->mem_limit) {
        snprintf(r->status, sizeof r->status, "over mem limit");
        return;
    }
    if (bench_attn_prepare(am, T, mode)) {
        snprintf(r->status, sizeof r->status, "error: out of memory");
        return;
    }
    /* One warm-up, only while it is cheap (thread pools, page faults). */
    int warm = !ser->warmed || (ser->T > 0 && ser->sec * ((double)T / ser->T) *
                                                      ((double)T / ser->T) < 1.0);
    double total = 0;
    for (int i = warm ? -1 : 0; i < o->reps && i < MAX_REPS; i++) {
        double t0 = now_s();
        int rc = 0;
        for (int64_t d = 0; d < b && !rc; d++) rc = bench_attn_run(am);
        double dt = now_s() - t0;
        if (rc) {
            snprintf(r->status, sizeof r->status, "error: %.140s", bench_attn_error(am));
            goto done;
        }
        if (i < 0) {
            ser->warmed = 1;
            continue;
        }
        r->samples_ns[r->n++] = dt * 1e9;
        total += dt;
        if (total > o->attn_budget) break; /* keep what was measured */
    }
    r->peak_mem = bench_attn_peak_memory(am);
    snprintf(r->status, sizeof r->status, "ok");
    ser->T = T;
    ser->sec = total / r->n;
done:
    bench_attn_release(am);
}

/* ------------------------------------------------------------ main */

int main(int argc, char **argv) {
    options o;
    parse_args(argc, argv, &o);
    char err[512] = {0};
    int rc_main = 0;

    if (o.cuda && !spectral_backend_available(SPECTRAL_BACKEND_CUDA)) {
        fprintf(stderr, "spectral-bench: --device cuda: the CUDA backend is not available "
                        "(built without CUDA, or no device)\n");
        return 1;
    }
    const int n_cpu = (int)sysconf(_SC_NPROCESSORS_ONLN);
    const int threads = o.threads > 0 ? o.threads : (n_cpu > 0 ? n_cpu : 1);

    /* The model: a file, or random weights written to a temporary GGUF. */
    model_shape shape;
    memset(&shape, 0, sizeof shape);
    spectral_model *model = NULL, *openblas_model = NULL;
    char tmp_path[512] = {0};
    if (o.model_path) {
        if (read_shape(o.model_path, &shape, err, sizeof err)) {
            fprintf(stderr, "spectral-bench: %s\n", err);
            return 1;
        }
        if (!shape.have_shape && (o.modes & (MODE_MIX | MODE_MLP))) {
            fprintf(stderr, "spectral-bench: %s: no spectral shape (%s.embedding_length, "
                            "feed_forward_length, block_count, mixing.n_filters) for the op modes\n",
                    o.model_path, shape.arch);
            return 1;
        }
    } else {
        shape.D = o.dim;
        shape.F = o.ffn;
        shape.L = o.layers;
        shape.K = o.m2bert ? 0 : o.filters;
        shape.NB = o.m2bert ? 4 : 0;
        shape.have_shape = 1;
        snprintf(shape.arch, sizeof shape.arch, o.m2bert ? "m2bert" : "spectralmlp");
    }
    if (o.modes & MODE_MODEL) {
        if (!o.model_path) {
            const char *td = getenv("TMPDIR");
            snprintf(tmp_path, sizeof tmp_path, "%s/spectral-bench-XXXXXX",
                     td && *td ? td : "/tmp");
            int fd = mkstemp(tmp_path);
            if (fd < 0) {
                fprintf(stderr, "spectral-bench: cannot create a temporary file in %s: %s\n",
                        td && *td ? td : "/tmp", strerror(errno));
                return 1;
            }
            close(fd);
            int64_t maxT = 512;
            for (int i = 0; i < o.nT; i++)
                if (o.T[i] > maxT) maxT = o.T[i];
            if ((o.m2bert ? write_random_m2bert : write_random_model)(tmp_path, &o, maxT, err, sizeof err)) {
                fprintf(stderr, "spectral-bench: writing the random model: %s\n", err);
                unlink(tmp_path);
                return 1;
            }
        }
        spectral_model_params mp = spectral_model_default_params();
        mp.use_mmap = false; /* read it: the temporary file is removed right away */
        spectral_status st = spectral_model_load(o.model_path ? o.model_path : tmp_path, mp, &model);
        /* a second copy for the OpenBLAS rows: its weights are laid out for them */
        for (int i = 0; i < o.n_dtypes && st == SPECTRAL_OK; i++)
            if (o.dtypes[i] == DTYPE_OPENBLAS && !openblas_model)
                st = spectral_model_load(o.model_path ? o.model_path : tmp_path, mp, &openblas_model);
        if (tmp_path[0]) unlink(tmp_path);
        if (st != SPECTRAL_OK) {
            fprintf(stderr, "spectral-bench: loading the model: %s: %s\n",
                    spectral_status_string(st), spectral_last_error());
            return 1;
        }
        if (o.model_path) {
            const char *nm = spectral_model_name(model);
            snprintf(shape.name, sizeof shape.name, "%s", nm && *nm ? nm : shape.arch);
        }
    }
    char spec_label[192], attn_label[192];
    if (o.model_path && !shape.have_shape)
        snprintf(spec_label, sizeof spec_label, "%.180s", shape.name);
    else if (shape.NB)
        snprintf(spec_label, sizeof spec_label, "%.100s D%lld F%lld L%lld blocks%lld%s",
                 o.model_path ? shape.name : "m2bert", (long long)shape.D, (long long)shape.F,
                 (long long)shape.L, (long long)shape.NB, o.no_pad ? " no-pad" : "");
    else if (o.model_path)
        snprintf(spec_label, sizeof spec_label, "%.100s D%lld F%lld L%lld K%lld", shape.name,
                 (long long)shape.D, (long long)shape.F, (long long)shape.L, (long long)shape.K);
    else
        snprintf(spec_label, sizeof spec_label, "spectralmlp D%lld F%lld L%lld K%lld",
                 (long long)shape.D, (long long)shape.F, (long long)shape.L, (long long)shape.K);

    /* Calibration, same process, same thread count. */
    calib cal;
    memset(&cal, 0, sizeof cal);
    cal.gemm_n = o.calib_n;
    sp_backend *op_be = NULL;
    if (o.cuda) {
        op_be = sp_backend_cuda_create(0, err, sizeof err);
        if (!op_be) {
            fprintf(stderr, "spectral-bench: cuda backend: %s\n", err);
            spectral_model_free(model);
            return 1;
        }
        fprintf(stderr, "calibrating (cuda linear %lld^3)...\n", (long long)o.calib_n);
        cal.gemm_gflops = bench_calib_linear(op_be, o.calib_n);
    } else {
        fprintf(stderr, "calibrating (%d x sgemm %lld^3 concurrently, memcpy %zu MiB)...\n",
                threads, (long long)o.calib_n, o.calib_mem >> 20);
        cal.gemm_threads = threads;
        cal.gemm_gflops = bench_calib_sgemm(o.calib_n, threads);
        cal.bw_bytes = o.calib_mem;
        cal.bw_gbs = bench_calib_memcpy(o.calib_mem, threads);
        cal.have_bw = cal.bw_gbs > 0;
    }

    if (!(cal.gemm_gflops > 0))
        fprintf(stderr, "spectral-bench: the GEMM calibration failed (out of memory?): no %%peak\n");

    bench_attn *am = NULL;
    int attn_possible = o.attn && shape.have_shape && !o.cuda;
    if (o.attn && !shape.have_shape)
        fprintf(stderr, "spectral-bench: attention baseline skipped: the model's shape is unknown\n");
    if (o.attn && o.cuda) fprintf(stderr, "attention on cuda: not implemented\n");
    if (attn_possible && (o.modes & (MODE_MODEL | MODE_MIX))) {
        am = bench_attn_create(shape.D, shape.F, shape.L, threads, err, sizeof err);
        if (!am) {
            fprintf(stderr, "spectral-bench: attention baseline: %s\n", err);
            rc_main = 1;
            goto out;
        }
        snprintf(attn_label, sizeof attn_label, "attention D%lld F%lld L%lld h%lldx%lld",
                 (long long)shape.D, (long long)shape.F, (long long)shape.L,
                 (long long)bench_attn_n_heads(am), (long long)bench_attn_head_dim(am));
    }
    if (!o.cuda && (o.modes & (MODE_MIX | MODE_MLP))) {
        op_be = sp_backend_cpu_create(threads, err, sizeof err);
        if (!op_be) {
            fprintf(stderr, "spectral-bench: cpu backend: %s\n", err);
            rc_main = 1;
            goto out;
        }
    }

    out_ctx oc = {&o, &cal, o.cuda ? "cuda" : "cpu", threads, 0,
#ifdef NDEBUG
                  "release"
#else
                  "debug"
#endif
    };
    print_header(&oc);

    op_bench ob;
    memset(&ob, 0, sizeof ob);
    if (op_be) {
        const int64_t D = shape.D, F = shape.F, K = shape.K;
        ob.be = op_be;
        ob.filter = be_rand(op_be, (size_t)(2 * K * D), 0.5f, 0, 0);
        ob.fbias = be_rand(op_be, (size_t)D, 0.02f, 0, 0);
        if (o.modes & MODE_MLP) {
            ob.wup = be_rand(op_be, (size_t)(F * D), 1.0f / sqrtf((float)D), 0, 0);
            ob.bup = be_rand(op_be, (size_t)F, 0.02f, 0, 0);
            ob.wdn = be_rand(op_be, (size_t)(D * F), 1.0f / sqrtf((float)F), 0, 0);
            ob.bdn = be_rand(op_be, (size_t)D, 0.02f, 0, 0);
        }
        if (!ob.filter || !ob.fbias || ((o.modes & MODE_MLP) && (!ob.wup || !ob.bup || !ob.wdn || !ob.bdn))) {
            fprintf(stderr, "spectral-bench: out of backend memory for the op weights\n");
            rc_main = 1;
            goto out;
        }
    }

    static const int mode_bits[3] = {MODE_MODEL, MODE_MIX, MODE_MLP};
    static const char *mode_names[3] = {"model", "mix", "mlp"};
    for (int mi = 0; mi < 3; mi++) {
        if (!(o.modes & mode_bits[mi])) continue;
        const int mode = mode_bits[mi];
        for (int bi = 0; bi < o.nB; bi++) {
            const int64_t b = o.B[bi];
            attn_series ser = {0, 0, 0};
            for (int ti = 0; ti < o.nT; ti++) {
              /* model rows: one per dtype; the attention row after the first */
              for (int di = 0; di < (mode == MODE_MODEL ? o.n_dtypes : 1); di++) {
                const int64_t T = o.T[ti];
                static row rs, ra;
                memset(&rs, 0, sizeof rs);
                rs.impl = "spectral";
                if (mode == MODE_MODEL)
                    rs.dtype = o.dtypes[di] == DTYPE_OPENBLAS ? "openblas" : cli_dtype_name((spectral_dtype)o.dtypes[di]);
                rs.mode = mode_names[mi];
                rs.T = T;
                rs.batch = b;
                snprintf(rs.model, sizeof rs.model, "%s", spec_label);
                if (shape.have_shape) {
                    if (mode == MODE_MODEL && shape.NB) /* padded: the model's length runs */
                        rs.flops_doc = (double)shape.L *
                                       flops_m2bert(o.no_pad ? T : spectral_model_max_tokens(model),
                                                    shape.D, shape.F, shape.NB);
                    else if (mode == MODE_MODEL)
                        rs.flops_doc = (double)shape.L * (flops_mlp(T, shape.D, shape.F) +
                                                          flops_mix(T, shape.D, shape.K));
                    else if (mode == MODE_MIX)
                        rs.flops_doc = flops_mix(T, shape.D, shape.K);
                    else
                        rs.flops_doc = flops_mlp(T, shape.D, shape.F);
                }
                fprintf(stderr, "  %s %s T=%lld batch=%lld ...\n", rs.impl, rs.mode,
                        (long long)T, (long long)b);
                if (mode == MODE_MODEL)
                    spectral_model_row(o.dtypes[di] == DTYPE_OPENBLAS ? openblas_model : model, &o,
                                       o.dtypes[di] == DTYPE_OPENBLAS ? SPECTRAL_DTYPE_F32
                                                                      : (spectral_dtype)o.dtypes[di],
                                       o.dtypes[di] == DTYPE_OPENBLAS, T, b, &rs);
                else
                    spectral_op_row(&ob, &o, &shape, mode == MODE_MIX, T, b, &rs);
                row_finish(&rs, T * b);
                if (rs.gflops > 0 && cal.gemm_gflops > 0) rs.share = rs.gflops / cal.gemm_gflops;
                print_row(&oc, &rs);

                if (mode == MODE_MLP || !o.attn || !shape.have_shape || di > 0) continue;
                memset(&ra, 0, sizeof ra);
                ra.impl = "attention";
                ra.mode = mode_names[mi];
                ra.T = T;
                ra.batch = b;
                ra.flops_doc = mode == MODE_MODEL
                                   ? (double)shape.L * (flops_attn_mix(T, shape.D) +
                                                        flops_mlp(T, shape.D, shape.F))
                                   : flops_attn_mix(T, shape.D);
                if (o.cuda) {
                    snprintf(ra.model, sizeof ra.model, "attention D%lld F%lld L%lld",
                             (long long)shape.D, (long long)shape.F, (long long)shape.L);
                    snprintf(ra.status, sizeof ra.status, "not implemented");
                } else {
                    snprintf(ra.model, sizeof ra.model, "%s", attn_label);
                    fprintf(stderr, "  %s %s T=%lld batch=%lld ...\n", ra.impl, ra.mode,
                            (long long)T, (long long)b);
                    attention_row(am, &o, mode == MODE_MIX, T, b, &ser, &ra);
                    row_finish(&ra, T * b);
                    if (ra.gflops > 0 && cal.gemm_gflops > 0) ra.share = ra.gflops / cal.gemm_gflops;
                }
                if (!strcmp(rs.status, "ok") && !strcmp(ra.status, "ok")) {
                    ra.have_ratio = 1;
                    ra.time_ratio = rs.avg_ns / ra.avg_ns;
                    ra.mem_ratio = ra.peak_mem ? (double)rs.peak_mem / (double)ra.peak_mem : 0;
                }
                print_row(&oc, &ra);
              }
            }
        }
    }
    print_footer(&oc);

out:
    if (op_be) {
        void *ws[] = {ob.filter, ob.fbias, ob.wup, ob.bup, ob.wdn, ob.bdn};
        for (size_t i = 0; i < sizeof ws / sizeof ws[0]; i++)
            if (ws[i]) op_be->ops->buffer_free(op_be, ws[i]);
        op_be->ops->destroy(op_be);
    }
    bench_attn_free(am);
    spectral_model_free(model);
    spectral_model_free(openblas_model);
    return rc_main;
}
