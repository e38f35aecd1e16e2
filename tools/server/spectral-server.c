/* spectral-server: an OpenAI-compatible embeddings server over HTTP.
 *
 * HTTP is libmicrohttpd's (an internal poll() thread pool; each request that
 * needs the model is suspended while it waits, so no HTTP thread ever
 * blocks on encoding); JSON parsing is jansson's (server_api.c); batching,
 * the queue and the memory cap are server_pool.c's; /metrics is
 * server_metrics.c's. This file: options, routing, requests, draining.
 * Uses only spectral.h.
 * See docs/server.md. */
#define _POSIX_C_SOURCE 200809L
#include <errno.h>
#include <math.h>
#include <microhttpd.h>
#include <netdb.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "cli.h"
#include "server_api.h"
#include "server_metrics.h"
#include "server_pool.h"
#include "spectral.h"

/* ---- options ----------------------------------------------------------- */

typedef struct {
    const char *model_path;
    const char *host;
    int port;
    int parallel;
    int threads;
    int http_threads;
    spectral_backend device;
    size_t mem_limit;
    int64_t max_tokens;
    int queue;
    const char *api_key;
    const char *api_key_file;
    unsigned timeout;
    size_t max_body;
    int64_t max_inputs;
    int64_t batch_tokens;
    spectral_pooling pooling;
    const char *alias;
    unsigned max_connections;
    bool verbose;
} options;

static void print_usage(FILE *f) {
    fprintf(f,
        "usage: spectral-server -m MODEL [options]\n"
        "\n"
        "Serves embeddings from a spectral GGUF model over HTTP in the OpenAI schema:\n"
        "POST /v1/embeddings, GET /v1/models, GET /health, GET /metrics (Prometheus).\n"
        "\n"
        "options:\n"
        "  -m, --model PATH        GGUF model file (required)\n"
        "      --host ADDR         address to bind (default 127.0.0.1; 0.0.0.0 or :: for all)\n"
        "      --port N            TCP port (default 8080; 0 = any free port, printed at start)\n"
        "      --parallel N        contexts encoding at once (default 1)\n"
        "  -t, --threads N         CPU threads per context (default: cores / parallel)\n"
        "  -d, --device DEV        cpu | cuda (default cpu)\n"
        "      --mem-limit SIZE    activation memory of all contexts together (default 1G;\n"
        "                          each context gets SIZE / parallel)\n"
        "      --max-tokens N      longest input in tokens (default 32768, or the model's\n"
        "                          own maximum if lower); longer inputs get 413\n"
        "      --queue N           requests admitted and not yet computed (default 32);\n"
        "                          beyond that 503 with Retry-After at once\n"
        "      --api-key KEY       require 'Authorization: Bearer KEY' (all but /health)\n"
        "      --api-key-file F    the same, the key read from the first line of F\n"
        "      --timeout S         close a connection idle for S seconds (default 30)\n"
        "      --max-body SIZE     largest request body (default 4M); larger gets 413\n"
        "      --max-inputs N      inputs per request (default 2048, as OpenAI)\n"
        "  -b, --batch-tokens N    pack queued inputs into passes of up to N tokens\n"
        "                          (default 4096; 1 = one input per pass)\n"
        "  -p, --pooling TYPE      mean | cls | last (default: the model's)\n"
        "      --alias NAME        model id reported to clients (default: file name)\n"
        "      --http-threads N    HTTP threads (default 2)\n"
        "      --max-connections N open connections at most (default 512)\n"
        "  -v, --verbose           one log line per request on stderr\n"
        "  -h, --help / --version\n"
        "\n"
        "SIGTERM or SIGINT: stop accepting, answer every request already received,\n"
        "exit 0 (a second signal exits at once with status 1).\n");
}

static int parse_args(int argc, char **argv, options *o) {
    memset(o, 0, sizeof *o);
    o->host = "127.0.0.1";
    o->port = 8080;
    o->parallel = 1;
    o->http_threads = 2;
    o->mem_limit = (size_t)1 << 30;
    o->max_tokens = 32768;
    o->queue = 32;
    o->timeout = 30;
    o->max_body = (size_t)4 << 20;
    o->max_inputs = 2048;
    o->pooling = SPECTRAL_POOLING_UNSPECIFIED;
    o->max_connections = 512;
    cli_args c;
    cli_args_init(&c, "spectral-server", argc, argv);
    const char *a;
    while ((a = cli_next(&c))) {
        const char *val;
        int64_t v = 0;
        if (!strcmp(a, "-h") || !strcmp(a, "--help")) {
            print_usage(stdout);
            exit(0);
        } else if (!strcmp(a, "--version")) {
            printf("spectral-server %s\n", spectral_version());
            exit(0);
        } else if (!strcmp(a, "-m") || !strcmp(a, "--model")) {
            if (!(val = cli_value(&c))) return CLI_EXIT_USAGE;
            o->model_path = val;
        } else if (!strcmp(a, "--host")) {
            if (!(val = cli_value(&c))) return CLI_EXIT_USAGE;
            o->host = val;
        } else if (!strcmp(a, "--port")) {
            if (!(val = cli_value(&c))) return CLI_EXIT_USAGE;
            if (cli_parse_int(val, 0, 65535, &v)) return cli_usage_error(&c, "--port needs a number from 0 to 65535, got '%s'", val);
            o->port = (int)v;
        } else if (!strcmp(a, "--parallel")) {
            if (!(val = cli_value(&c))) return CLI_EXIT_USAGE;
            if (cli_parse_int(val, 1, 256, &v)) return cli_usage_error(&c, "--parallel needs a number from 1 to 256, got '%s'", val);
            o->parallel = (int)v;
        } else if (!strcmp(a, "-t") || !strcmp(a, "--threads")) {
            if (!(val = cli_value(&c))) return CLI_EXIT_USAGE;
            if (cli_parse_int(val, 0, 4096, &v)) return cli_usage_error(&c, "--threads needs a number from 0 to 4096, got '%s'", val);
            o->threads = (int)v;
        } else if (!strcmp(a, "--http-threads")) {
            if (!(val = cli_value(&c))) return CLI_EXIT_USAGE;
            if (cli_parse_int(val, 1, 64, &v)) return cli_usage_error(&c, "--http-threads needs a number from 1 to 64, got '%s'", val);
            o->http_threads = (int)v;
        } else if (!strcmp(a, "-d") || !strcmp(a, "--device")) {
            if (!(val = cli_value(&c))) return CLI_EXIT_USAGE;
            if (cli_parse_device(val, &o->device)) return cli_usage_error(&c, "unknown device '%s' (cpu, cuda)", val);
        } else if (!strcmp(a, "--mem-limit")) {
            if (!(val = cli_value(&c))) return CLI_EXIT_USAGE;
            if (cli_parse_size(val, &o->mem_limit)) return cli_usage_error(&c, "--mem-limit needs a size such as 512M or 2G, got '%s'", val);
        } else if (!strcmp(a, "--max-tokens")) {
            if (!(val = cli_value(&c))) return CLI_EXIT_USAGE;
            if (cli_parse_int(val, 1, INT64_C(1) << 34, &o->max_tokens)) return cli_usage_error(&c, "--max-tokens needs a number from 1 to 2^34, got '%s'", val);
        } else if (!strcmp(a, "--queue")) {
            if (!(val = cli_value(&c))) return CLI_EXIT_USAGE;
            if (cli_parse_int(val, 1, 1 << 20, &v)) return cli_usage_error(&c, "--queue needs a number from 1 to 2^20, got '%s'", val);
            o->queue = (int)v;
        } else if (!strcmp(a, "--api-key")) {
            if (!(val = cli_value(&c))) return CLI_EXIT_USAGE;
            o->api_key = val;
        } else if (!strcmp(a, "--api-key-file")) {
            if (!(val = cli_value(&c))) return CLI_EXIT_USAGE;
            o->api_key_file = val;
        } else if (!strcmp(a, "--timeout")) {
            if (!(val = cli_value(&c))) return CLI_EXIT_USAGE;
            if (cli_parse_int(val, 1, 86400, &v)) return cli_usage_error(&c, "--timeout needs seconds from 1 to 86400, got '%s'", val);
            o->timeout = (unsigned)v;
        } else if (!strcmp(a, "--max-body")) {
            if (!(val = cli_value(&c))) return CLI_EXIT_USAGE;
            if (cli_parse_size(val, &o->max_body) || o->max_body > ((size_t)1 << 32))
                return cli_usage_error(&c, "--max-body needs a size up to 4G such as 4M, got '%s'", val);
        } else if (!strcmp(a, "--max-inputs")) {
            if (!(val = cli_value(&c))) return CLI_EXIT_USAGE;
            if (cli_parse_int(val, 1, 1 << 20, &o->max_inputs)) return cli_usage_error(&c, "--max-inputs needs a number from 1 to 2^20, got '%s'", val);
        } else if (!strcmp(a, "-b") || !strcmp(a, "--batch-tokens")) {
            if (!(val = cli_value(&c))) return CLI_EXIT_USAGE;
            if (cli_parse_int(val, 1, INT64_C(1) << 34, &o->batch_tokens)) return cli_usage_error(&c, "--batch-tokens needs a number from 1 to 2^34, got '%s'", val);
        } else if (!strcmp(a, "-p") || !strcmp(a, "--pooling")) {
            if (!(val = cli_value(&c))) return CLI_EXIT_USAGE;
            if (cli_parse_pooling(val, &o->pooling) || o->pooling == SPECTRAL_POOLING_NONE)
                return cli_usage_error(&c, "unknown pooling '%s' (mean, cls, last; the OpenAI schema has one vector per input)", val);
        } else if (!strcmp(a, "--alias")) {
            if (!(val = cli_value(&c))) return CLI_EXIT_USAGE;
            o->alias = val;
        } else if (!strcmp(a, "--max-connections")) {
            if (!(val = cli_value(&c))) return CLI_EXIT_USAGE;
            if (cli_parse_int(val, 1, 65536, &v)) return cli_usage_error(&c, "--max-connections needs a number from 1 to 65536, got '%s'", val);
            o->max_connections = (unsigned)v;
        } else if (!strcmp(a, "-v") || !strcmp(a, "--verbose")) {
            o->verbose = true;
        } else {
            return cli_usage_error(&c, "unknown argument '%s'", a);
        }
        if (cli_check_no_value(&c)) return CLI_EXIT_USAGE;
    }
    if (!o->model_path) return cli_usage_error(&c, "%s", "no model given (-m MODEL)");
    if (!o->api_key_file && o->api_key && !o->api_key[0])
        return cli_usage_error(&c, "%s", "--api-key is empty");
    return 0;
}

/* ---- server state ------------------------------------------------------- */

typedef struct {
    options o;
    spectral_model *model;
    srv_pool *pool;
    int64_t n_embd;  /* the length of one embedding (spectral_model_n_pooled) */
    /* The other 'dimensions' the model offers: the lengths of the dense part's
     * prefixes it was trained for (the whole dense part last), ascending. */
    int32_t prefixes[SPECTRAL_MAX_PREFIXES];
    int n_prefixes;
    int32_t n_vocab;
    int64_t max_tokens;
    char model_id[256];
    char *api_key; /* NULL: no check */
    time_t created;
    struct MHD_Daemon *daemon;
    atomic_bool draining;
    atomic_int_fast64_t in_flight; /* requests started and not completed */
    srv_metrics metrics;
} server;

/* One request's state (libmicrohttpd's per-request pointer). */
typedef struct {
    enum { ST_BODY, ST_WAIT, ST_DONE } stage;
    srv_endpoint ep;
    bool before_drain;
    double t0;
    char *body;
    size_t len, cap;
    bool too_large;
    size_t discarded;
    srv_job *job;
    bool base64;
    int64_t dims; /* 'dimensions' asked for, 0: all */
    int64_t prompt_tokens;
    struct MHD_Connection *conn;
} request;

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + ts.tv_nsec * 1e-9;
}

static void count_response(server *s, request *r, int status) {
    srv_metrics_response(&s->metrics, r->ep, status, now_s() - r->t0);
}

/* ---- responses --------------------------------------------------------- */

/* Queues body (malloc'd, taken) with status. Returns libmicrohttpd's verdict. */
static enum MHD_Result respond(server *s, struct MHD_Connection *c, request *r, int status,
                               char *body, size_t len, const char *content_type,
                               const char *h1, const char *v1) {
    if (!body) {
        static const char oom[] = "{\"error\":{\"message\":\"out of memory\",\"type\":\"server_error\",\"param\":null,\"code\":\"out_of_memory\"}}\n";
        body = strdup(oom);
        if (!body) return MHD_NO;
        len = sizeof oom - 1;
        status = 500;
        h1 = NULL;
    }
    struct MHD_Response *resp = MHD_create_response_from_buffer(len, body, MHD_RESPMEM_MUST_FREE);
    if (!resp) {
        free(body);
        return MHD_NO;
    }
    MHD_add_response_header(resp, MHD_HTTP_HEADER_CONTENT_TYPE, content_type);
    if (h1) MHD_add_response_header(resp, h1, v1);
    /* While draining, keep-alive connections are closed after this answer. */
    if (atomic_load(&s->draining)) MHD_add_response_header(resp, MHD_HTTP_HEADER_CONNECTION, "close");
    const enum MHD_Result ok = MHD_queue_response(c, (unsigned)status, resp);
    MHD_destroy_response(resp);
    r->stage = ST_DONE;
    count_response(s, r, status);
    if (s->o.verbose) {
        const char *path = srv_endpoint_name(r->ep);
        fprintf(stderr, "spectral-server: %s %d %.1f ms\n", path, status, (now_s() - r->t0) * 1e3);
    }
    return ok;
}

static enum MHD_Result respond_json(server *s, struct MHD_Connection *c, request *r, int status,
                                    char *body, size_t len) {
    return respond(s, c, r, status, body, len, "application/json", NULL, NULL);
}

static enum MHD_Result respond_error(server *s, struct MHD_Connection *c, request *r,
                                     const srv_api_error *e) {
    size_t len = 0;
    char *body = srv_api_error_json(e, &len);
    if (e->status == 503) return respond(s, c, r, 503, body, len, "application/json", MHD_HTTP_HEADER_RETRY_AFTER, "1");
    if (e->status == 401) return respond(s, c, r, 401, body, len, "application/json", MHD_HTTP_HEADER_WWW_AUTHENTICATE, "Bearer");
    if (e->status == 405) {
        const char *allow = r->ep == SRV_EP_EMBEDDINGS ? "POST" : "GET";
        return respond(s, c, r, 405, body, len, "application/json", MHD_HTTP_HEADER_ALLOW, allow);
    }
    return respond_json(s, c, r, e->status, body, len);
}

/* Whether 'dimensions' d is one of the dense prefixes the model offers. */
static bool offers_dims(const server *s, int64_t d) {
    for (int i = 0; i < s->n_prefixes; i++)
        if (s->prefixes[i] == d) return true;
    return false;
}

static char *models_json(server *s, size_t *len) {
    srv_buf b = {0};
    srv_buf_puts(&b, "{\"object\":\"list\",\"data\":[{\"id\":");
    srv_buf_json_string(&b, s->model_id, strlen(s->model_id));
    srv_buf_printf(&b, ",\"object\":\"model\",\"created\":%lld,\"owned_by\":\"spectral\"", (long long)s->created);
    srv_buf_printf(&b, ",\"meta\":{\"n_embd\":%lld,\"n_vocab\":%d,\"max_tokens\":%lld,",
                  (long long)s->n_embd, (int)s->n_vocab, (long long)s->max_tokens);
    /* what an embedding is made of, and the lengths 'dimensions' accepts */
    srv_buf_printf(&b, "\"n_dense\":%d,\"n_lexical\":%d,\"lexical_scale\":%g,\"dimensions\":[",
                  (int)spectral_model_n_embd(s->model), (int)spectral_model_n_lexical(s->model),
                  (double)spectral_model_lexical_scale(s->model));
    for (int i = 0; i < s->n_prefixes; i++)
        if (s->prefixes[i] != s->n_embd) srv_buf_printf(&b, "%d,", (int)s->prefixes[i]);
    srv_buf_printf(&b, "%lld],\"arch\":", (long long)s->n_embd);
    const char *arch = spectral_model_arch(s->model);
    srv_buf_json_string(&b, arch, strlen(arch));
    srv_buf_puts(&b, "}}]}\n");
    return srv_buf_take(&b, len);
}

static char *metrics_text(server *s, size_t *len) {
    srv_metrics_gauges g = {
        .queue_limit = s->o.queue,
        .in_flight = (int64_t)atomic_load(&s->in_flight),
        .contexts = s->o.parallel,
        .mem_limit = s->o.mem_limit,
    };
    srv_pool_get_stats(s->pool, &g.pool);
    return srv_metrics_text(&s->metrics, &g, len);
}

/* ---- /v1/embeddings ---------------------------------------------------- */

static void on_job_done(srv_job *job, void *user) {
    (void)job;
    /* The connection is suspended until now, so it is still there. */
    MHD_resume_connection(((request *)user)->conn);
}

static int fail_request(srv_api_error *err, int status, const char *code, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

static int fail_request(srv_api_error *err, int status, const char *code, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    srv_api_set_errorv(err, status, status >= 500 ? "server_error" : "invalid_request_error",
                       status == 413 || status == 400 ? "input" : NULL, code, fmt, ap);
    va_end(ap);
    return -1;
}

static void fmt_mib(size_t bytes, char *buf, size_t n) { snprintf(buf, n, "%.1f MiB", bytes / 1048576.0); }

/* Tokenizes and checks every input; on success *job is ready to submit. */
static int prepare_job(server *s, request *r, srv_embed_request *req, srv_job **job, srv_api_error *err) {
    const int64_t n = req->n_inputs;
    int32_t **ids = calloc((size_t)n, sizeof *ids);
    int64_t *n_ids = calloc((size_t)n, sizeof *n_ids);
    int rc = 0;
    int64_t total = 0;
    if (!ids || !n_ids) rc = fail_request(err, 500, "out_of_memory", "out of memory");
    for (int64_t i = 0; i < n && !rc; i++) {
        srv_embed_input *in = &req->inputs[i];
        if (in->ids) {
            n_ids[i] = in->n_ids;
        } else {
            n_ids[i] = spectral_tokenize(s->model, in->text, in->len, NULL, 0);
            if (n_ids[i] < 0) {
                rc = fail_request(err, 400, "invalid_input", "input[%lld] cannot be tokenized: %s", (long long)i, spectral_last_error());
                break;
            }
            if (n_ids[i] == 0) {
                rc = fail_request(err, 400, "empty_input", "input[%lld] gives no tokens", (long long)i);
                break;
            }
        }
        if (n_ids[i] > s->max_tokens) {
            srv_metrics_rejected(&s->metrics, SRV_REJECT_TOO_LARGE);
            rc = fail_request(err, 413, "input_too_long",
                              "input[%lld] has %lld tokens, more than this server's limit of %lld (--max-tokens)",
                              (long long)i, (long long)n_ids[i], (long long)s->max_tokens);
            break;
        }
        const size_t cap = srv_pool_context_limit(s->pool);
        if (cap) {
            const size_t need = srv_pool_memory_minimum(s->pool, n_ids[i]);
            if (need > cap) {
                char b1[32], b2[32], b3[32];
                fmt_mib(need, b1, sizeof b1);
                fmt_mib(cap, b2, sizeof b2);
                fmt_mib(s->o.mem_limit, b3, sizeof b3);
                srv_metrics_rejected(&s->metrics, SRV_REJECT_TOO_LARGE);
                rc = fail_request(err, 413, "input_too_large",
                                  "input[%lld] (%lld tokens) needs %zu bytes (%s) of activation memory; this "
                                  "server gives each context %zu bytes (%s: --mem-limit %s / --parallel %d)",
                                  (long long)i, (long long)n_ids[i], need, b1, cap, b2, b3, s->o.parallel);
                break;
            }
        }
        if (in->ids) {
            ids[i] = in->ids; /* taken */
            in->ids = NULL;
        } else {
            ids[i] = malloc((size_t)n_ids[i] * sizeof **ids);
            if (!ids[i]) {
                rc = fail_request(err, 500, "out_of_memory", "out of memory for input[%lld]'s tokens", (long long)i);
                break;
            }
            if (spectral_tokenize(s->model, in->text, in->len, ids[i], n_ids[i]) != n_ids[i]) {
                rc = fail_request(err, 500, "server_error", "input[%lld]: tokenizing twice gave different counts", (long long)i);
                break;
            }
            free(in->text); /* the tokens are all we keep while it waits */
            in->text = NULL;
        }
        total += n_ids[i];
    }
    if (!rc) {
        *job = srv_job_create(n, ids, n_ids, on_job_done, r);
        if (*job) {
            r->prompt_tokens = total;
            return 0;
        }
        rc = fail_request(err, 500, "out_of_memory", "out of memory");
    }
    for (int64_t i = 0; ids && i < n; i++) free(ids[i]);
    free(ids);
    free(n_ids);
    return rc;
}

/* The whole body is in: parse, check, queue (suspending the connection). */
static enum MHD_Result embeddings_received(server *s, struct MHD_Connection *c, request *r) {
    srv_api_error err;
    if (r->too_large) {
        srv_metrics_rejected(&s->metrics, SRV_REJECT_TOO_LARGE);
        srv_api_set_error(&err, 413, "invalid_request_error", NULL, "request_too_large",
                         "the request body is larger than this server's limit of %zu bytes (--max-body)", s->o.max_body);
        return respond_error(s, c, r, &err);
    }
    if (atomic_load(&s->draining) && !r->before_drain) {
        srv_api_set_error(&err, 503, "server_error", NULL, "shutting_down", "the server is shutting down");
        return respond_error(s, c, r, &err);
    }
    const srv_api_limits lim = {.n_vocab = s->n_vocab, .max_inputs = s->o.max_inputs};
    srv_embed_request req;
    int64_t dims = 0;
    if (srv_api_parse_embed(r->body ? r->body : "", r->len, &lim, &req, &dims, &err)) return respond_error(s, c, r, &err);
    free(r->body);
    r->body = NULL;
    if (dims && dims != s->n_embd && !offers_dims(s, dims)) {
        srv_embed_request_free(&req);
        srv_buf b = {0};
        for (int i = 0; i < s->n_prefixes; i++)
            if (s->prefixes[i] != s->n_embd) srv_buf_printf(&b, "%d, ", (int)s->prefixes[i]);
        srv_buf_printf(&b, "%lld", (long long)s->n_embd);
        size_t len = 0;
        char *list = srv_buf_take(&b, &len);
        srv_api_set_error(&err, 400, "invalid_request_error", "dimensions", "invalid_value",
                         "this model offers 'dimensions' %s", list ? list : "");
        free(list);
        return respond_error(s, c, r, &err);
    }
    r->dims = dims;
    r->base64 = req.base64;
    srv_job *job = NULL;
    const int rc = prepare_job(s, r, &req, &job, &err);
    srv_embed_request_free(&req);
    if (rc) return respond_error(s, c, r, &err);
    if (srv_pool_reserve(s->pool)) {
        srv_job_free(job);
        srv_metrics_rejected(&s->metrics, SRV_REJECT_QUEUE_FULL);
        srv_api_set_error(&err, 503, "server_error", NULL, "queue_full",
                         "the server's queue is full (%d requests); retry later", s->o.queue);
        return respond_error(s, c, r, &err);
    }
    r->job = job;
    r->stage = ST_WAIT;
    r->conn = c;
    /* Suspend before submitting: the job may be done (and resume called)
     * before this function returns. */
    MHD_suspend_connection(c);
    srv_pool_submit(s->pool, job);
    return MHD_YES;
}

/* Resumed: the job is done. */
static enum MHD_Result embeddings_answer(server *s, struct MHD_Connection *c, request *r) {
    srv_job *job = r->job;
    r->job = NULL;
    const char *msg = NULL;
    int64_t input = 0;
    const spectral_status st = srv_job_status(job, &msg, &input);
    enum MHD_Result ret;
    if (st == SPECTRAL_OK) {
        size_t len = 0;
        const int64_t n = srv_job_n_inputs(job);
        const float *vectors = srv_job_vectors(job);
        float *dense = NULL;
        int64_t width = s->n_embd;
        if (r->dims && r->dims < s->n_embd && n > 0) {
            /* A prefix of the dense part: its first values, unit length again. */
            width = r->dims;
            dense = malloc((size_t)(n * width) * sizeof *dense);
            for (int64_t i = 0; dense && i < n; i++) {
                const float *src = vectors + i * s->n_embd;
                double ss = 0;
                for (int64_t j = 0; j < width; j++) ss += (double)src[j] * src[j];
                const float inv = ss > 0 ? (float)(1.0 / sqrt(ss)) : 1.0f;
                for (int64_t j = 0; j < width; j++) dense[i * width + j] = src[j] * inv;
            }
            vectors = dense;
        }
        char *body = vectors ? srv_api_embeddings_json(vectors, n, width, r->base64, s->model_id,
                                                       r->prompt_tokens, &len)
                             : NULL;
        free(dense);
        srv_metrics_embedded(&s->metrics, n, r->prompt_tokens);
        ret = respond_json(s, c, r, 200, body, len);
    } else {
        srv_api_error err;
        const int status = st == SPECTRAL_ERR_MEMORY_LIMIT ? 413 : st == SPECTRAL_ERR_INVALID_ARGUMENT ? 400 : 500;
        if (status == 413) srv_metrics_rejected(&s->metrics, SRV_REJECT_TOO_LARGE);
        fail_request(&err, status, status == 413 ? "input_too_large" : status == 400 ? "invalid_input" : "server_error",
                     "input[%lld]: %s", (long long)input, msg);
        ret = respond_error(s, c, r, &err);
    }
    srv_job_free(job);
    return ret;
}

/* ---- routing ----------------------------------------------------------- */

static srv_endpoint route(const char *url) {
    if (!strcmp(url, "/v1/embeddings") || !strcmp(url, "/embeddings")) return SRV_EP_EMBEDDINGS;
    if (!strcmp(url, "/v1/models") || !strcmp(url, "/models")) return SRV_EP_MODELS;
    if (!strcmp(url, "/health")) return SRV_EP_HEALTH;
    if (!strcmp(url, "/metrics")) return SRV_EP_METRICS;
    return SRV_EP_OTHER;
}

/* The first call for a request (its headers are in, its body is not): what
 * can be answered from the headers alone is answered now, so that a
 * refused upload is never read. */
static enum MHD_Result request_started(server *s, struct MHD_Connection *c, const char *url,
                                       const char *method, request *r) {
    srv_api_error err;
    r->ep = route(url);
    const bool get = !strcmp(method, MHD_HTTP_METHOD_GET) || !strcmp(method, MHD_HTTP_METHOD_HEAD);
    const bool post = !strcmp(method, MHD_HTTP_METHOD_POST);
    if (r->ep == SRV_EP_OTHER) {
        srv_api_set_error(&err, 404, "invalid_request_error", NULL, "not_found",
                         "no such endpoint (POST /v1/embeddings, GET /v1/models, GET /health, GET /metrics)");
        return respond_error(s, c, r, &err);
    }
    if (r->ep == SRV_EP_HEALTH) {
        if (!get) {
            srv_api_set_error(&err, 405, "invalid_request_error", NULL, "method_not_allowed", "/health takes GET");
            return respond_error(s, c, r, &err);
        }
        const bool d = atomic_load(&s->draining);
        char *body = strdup(d ? "{\"status\":\"draining\"}\n" : "{\"status\":\"ok\"}\n");
        return respond_json(s, c, r, d ? 503 : 200, body, body ? strlen(body) : 0);
    }
    if (s->api_key &&
        !srv_api_bearer_ok(MHD_lookup_connection_value(c, MHD_HEADER_KIND, MHD_HTTP_HEADER_AUTHORIZATION), s->api_key)) {
        srv_api_set_error(&err, 401, "invalid_request_error", NULL, "invalid_api_key",
                         "missing or wrong API key (send 'Authorization: Bearer KEY')");
        return respond_error(s, c, r, &err);
    }
    if (r->ep != SRV_EP_EMBEDDINGS) {
        if (!get) {
            srv_api_set_error(&err, 405, "invalid_request_error", NULL, "method_not_allowed", "%s takes GET", url);
            return respond_error(s, c, r, &err);
        }
        size_t len = 0;
        if (r->ep == SRV_EP_MODELS) {
            char *body = models_json(s, &len);
            return respond_json(s, c, r, 200, body, len);
        }
        char *body = metrics_text(s, &len);
        return respond(s, c, r, 200, body, len, "text/plain; version=0.0.4", NULL, NULL);
    }
    if (!post) {
        srv_api_set_error(&err, 405, "invalid_request_error", NULL, "method_not_allowed", "/v1/embeddings takes POST");
        return respond_error(s, c, r, &err);
    }
    if (atomic_load(&s->draining)) {
        srv_api_set_error(&err, 503, "server_error", NULL, "shutting_down", "the server is shutting down");
        return respond_error(s, c, r, &err);
    }
    if (srv_pool_full(s->pool)) {
        srv_metrics_rejected(&s->metrics, SRV_REJECT_QUEUE_FULL);
        srv_api_set_error(&err, 503, "server_error", NULL, "queue_full",
                         "the server's queue is full (%d requests); retry later", s->o.queue);
        return respond_error(s, c, r, &err);
    }
    const char *cl = MHD_lookup_connection_value(c, MHD_HEADER_KIND, MHD_HTTP_HEADER_CONTENT_LENGTH);
    if (cl) {
        char *end;
        errno = 0;
        const unsigned long long n = strtoull(cl, &end, 10);
        if (errno || end == cl || n > s->o.max_body) {
            srv_metrics_rejected(&s->metrics, SRV_REJECT_TOO_LARGE);
            srv_api_set_error(&err, 413, "invalid_request_error", NULL, "request_too_large",
                             "the request body is larger than this server's limit of %zu bytes (--max-body)",
                             s->o.max_body);
            return respond_error(s, c, r, &err);
        }
        if (n > 0) {
            r->body = malloc((size_t)n + 1);
            if (!r->body) {
                srv_api_set_error(&err, 500, "server_error", NULL, "out_of_memory", "out of memory for the request body");
                return respond_error(s, c, r, &err);
            }
            r->cap = (size_t)n + 1;
        }
    }
    r->stage = ST_BODY;
    return MHD_YES;
}

/* A piece of the body. Past --max-body (a chunked upload, whose size is
 * not known in advance) the rest is read and dropped so that the client
 * still gets its 413; one that goes on past four times the limit is cut. */
static enum MHD_Result body_piece(server *s, request *r, const char *data, size_t n) {
    if (!r->too_large && r->len + n > s->o.max_body) {
        r->too_large = true;
        free(r->body);
        r->body = NULL;
        r->len = r->cap = 0;
    }
    if (r->too_large) {
        r->discarded += n;
        return r->discarded > 4 * s->o.max_body ? MHD_NO : MHD_YES;
    }
    if (r->len + n + 1 > r->cap) {
        size_t cap = r->cap ? r->cap : 4096;
        while (cap < r->len + n + 1) cap *= 2;
        if (cap > s->o.max_body + 1) cap = s->o.max_body + 1;
        char *b = realloc(r->body, cap);
        if (!b) return MHD_NO; /* out of memory: the connection is closed */
        r->body = b;
        r->cap = cap;
    }
    memcpy(r->body + r->len, data, n);
    r->len += n;
    return MHD_YES;
}

static enum MHD_Result on_request(void *cls, struct MHD_Connection *c, const char *url,
                                  const char *method, const char *version,
                                  const char *upload_data, size_t *upload_size, void **con_cls) {
    (void)version;
    server *s = cls;
    request *r = *con_cls;
    if (!r) {
        r = calloc(1, sizeof *r);
        if (!r) return MHD_NO;
        *con_cls = r;
        r->t0 = now_s();
        r->before_drain = !atomic_load(&s->draining);
        atomic_fetch_add(&s->in_flight, 1);
        return request_started(s, c, url, method, r);
    }
    switch (r->stage) {
    case ST_BODY:
        if (*upload_size) {
            const enum MHD_Result ok = body_piece(s, r, upload_data, *upload_size);
            *upload_size = 0;
            return ok;
        }
        return embeddings_received(s, c, r);
    case ST_WAIT:
        return embeddings_answer(s, c, r);
    case ST_DONE:
    default:
        /* Answered already (more body after an early answer is discarded). */
        *upload_size = 0;
        return MHD_YES;
    }
}

static void on_completed(void *cls, struct MHD_Connection *c, void **con_cls,
                         enum MHD_RequestTerminationCode why) {
    (void)c;
    (void)why;
    server *s = cls;
    request *r = *con_cls;
    if (!r) return;
    *con_cls = NULL;
    /* A suspended request is never completed (libmicrohttpd neither times
     * it out nor notices the client leaving, and the daemon is stopped only
     * when nothing is in flight), so the job is no longer the pool's. */
    srv_job_free(r->job);
    free(r->body);
    free(r);
    atomic_fetch_sub(&s->in_flight, 1);
}

static void mhd_log(void *cls, const char *fmt, va_list ap) {
    const server *s = cls;
    if (!s->o.verbose) return;
    fprintf(stderr, "spectral-server: libmicrohttpd: ");
    vfprintf(stderr, fmt, ap);
}

/* ---- main -------------------------------------------------------------- */

static volatile sig_atomic_t g_signal;
static int g_signal_pipe[2];

/* The first SIGINT/SIGTERM starts the drain; a second one exits at once. */
static void on_stop_signal(int sig) {
    if (g_signal) _exit(1);
    g_signal = sig;
    const int saved = errno;
    if (write(g_signal_pipe[1], "x", 1) < 0) {
        /* nothing to do in a handler; main would then wait for the next signal */
    }
    errno = saved;
}

static char *read_key_file(const char *path) {
    FILE *f = fopen(path, "r");
    if (!f) return NULL;
    char line[4096];
    char *key = NULL;
    if (fgets(line, sizeof line, f)) {
        line[strcspn(line, "\r\n")] = 0;
        if (line[0]) key = strdup(line);
    }
    fclose(f);
    return key;
}

static void model_id_from_path(const char *path, char *out, size_t n) {
    const char *base = strrchr(path, '/');
    base = base ? base + 1 : path;
    snprintf(out, n, "%s", base);
    const size_t len = strlen(out);
    if (len > 5 && !strcmp(out + len - 5, ".gguf")) out[len - 5] = 0;
}

static int start_daemon(server *s) {
    struct addrinfo hints = {0}, *ai = NULL;
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_STREAM;
    hints.ai_flags = AI_PASSIVE | AI_NUMERICSERV;
    char port[16];
    snprintf(port, sizeof port, "%d", s->o.port);
    const int gai = getaddrinfo(s->o.host, port, &hints, &ai);
    if (gai) {
        fprintf(stderr, "spectral-server: cannot resolve --host %s: %s\n", s->o.host, gai_strerror(gai));
        return -1;
    }
    /* poll(), not epoll (MHD_USE_AUTO's pick on Linux): libmicrohttpd's
     * MHD_quiesce_daemon races its own epoll worker threads to remove the
     * listening socket and aborts the process when it loses ("Failed to
     * remove listen FD from epoll set", seen once in CI at SIGTERM; the
     * worker-pool branch is unguarded in 0.9.75 and still in 1.0.1). Its
     * poll() path only sets a flag and wakes the workers. poll() costs
     * O(connections) per wake-up, nothing next to computing an embedding. */
    unsigned flags = MHD_USE_POLL_INTERNAL_THREAD | MHD_ALLOW_SUSPEND_RESUME | MHD_USE_ERROR_LOG;
    if (ai->ai_family == AF_INET6) flags |= MHD_USE_IPv6;
    s->daemon = MHD_start_daemon(
        flags, (uint16_t)s->o.port, NULL, NULL, on_request, s,
        MHD_OPTION_SOCK_ADDR, ai->ai_addr,
        MHD_OPTION_THREAD_POOL_SIZE, (unsigned)s->o.http_threads,
        MHD_OPTION_CONNECTION_TIMEOUT, s->o.timeout,
        MHD_OPTION_CONNECTION_LIMIT, s->o.max_connections,
        /* Request line and headers must fit here (larger: 431 from libmicrohttpd). */
        MHD_OPTION_CONNECTION_MEMORY_LIMIT, (size_t)64 << 10,
        MHD_OPTION_NOTIFY_COMPLETED, on_completed, s,
        MHD_OPTION_EXTERNAL_LOGGER, mhd_log, s,
        MHD_OPTION_END);
    freeaddrinfo(ai);
    if (!s->daemon) {
        fprintf(stderr, "spectral-server: cannot listen on %s:%d: %s\n", s->o.host, s->o.port,
                errno ? strerror(errno) : "libmicrohttpd could not start");
        return -1;
    }
    const union MHD_DaemonInfo *info = MHD_get_daemon_info(s->daemon, MHD_DAEMON_INFO_BIND_PORT);
    if (info) s->o.port = info->port;
    return 0;
}

int main(int argc, char **argv) {
    static server s; /* one per process; zeroed, which the metrics need */
    int rc = parse_args(argc, argv, &s.o);
    if (rc) return rc;
    if (s.o.api_key_file) {
        s.api_key = read_key_file(s.o.api_key_file);
        if (!s.api_key) {
            fprintf(stderr, "spectral-server: cannot read an API key from %s\n", s.o.api_key_file);
            return 2;
        }
    } else if (s.o.api_key) {
        s.api_key = strdup(s.o.api_key);
    }
    /* SIGINT/SIGTERM may land on any thread (OpenBLAS starts its own before
     * main), so they are caught, not masked: the handler wakes main through
     * a pipe. A client closing early must not kill the process. */
    if (pipe(g_signal_pipe)) {
        fprintf(stderr, "spectral-server: pipe: %s\n", strerror(errno));
        return 2;
    }
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_stop_signal;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);
    signal(SIGPIPE, SIG_IGN);

    if (spectral_model_load(s.o.model_path, spectral_model_default_params(), &s.model) != SPECTRAL_OK) {
        fprintf(stderr, "spectral-server: %s\n", spectral_last_error());
        free(s.api_key);
        return 2;
    }
    s.n_embd = spectral_model_n_pooled(s.model);
    s.n_prefixes = spectral_model_dense_prefixes(s.model, s.prefixes, SPECTRAL_MAX_PREFIXES);
    s.n_vocab = spectral_model_n_vocab(s.model);
    s.max_tokens = s.o.max_tokens;
    const int64_t hard = spectral_model_max_tokens(s.model);
    if (hard > 0 && hard < s.max_tokens) s.max_tokens = hard;
    if (s.o.alias) snprintf(s.model_id, sizeof s.model_id, "%s", s.o.alias);
    else model_id_from_path(s.o.model_path, s.model_id, sizeof s.model_id);
    s.created = time(NULL);
    if (s.o.pooling == SPECTRAL_POOLING_UNSPECIFIED && spectral_model_pooling(s.model) == SPECTRAL_POOLING_NONE) {
        fprintf(stderr, "spectral-server: the model has no pooling; choose one with --pooling mean|cls|last\n");
        spectral_model_free(s.model);
        free(s.api_key);
        return 2;
    }
    int threads = s.o.threads;
    if (threads == 0) {
        const long cores = sysconf(_SC_NPROCESSORS_ONLN);
        threads = cores > s.o.parallel ? (int)(cores / s.o.parallel) : 1;
    }
    srv_pool_params pp = {
        .model = s.model,
        .n_contexts = s.o.parallel,
        .n_threads = threads,
        .backend = s.o.device,
        .mem_limit = s.o.mem_limit,
        .pooling = s.o.pooling,
        .batch_tokens = s.o.batch_tokens,
        .queue = s.o.queue,
    };
    char err[512];
    s.pool = srv_pool_create(&pp, err, sizeof err);
    if (!s.pool) {
        fprintf(stderr, "spectral-server: %s\n", err);
        spectral_model_free(s.model);
        free(s.api_key);
        return 2;
    }
    if (start_daemon(&s)) {
        srv_pool_free(s.pool);
        spectral_model_free(s.model);
        free(s.api_key);
        return 2;
    }
    const int ipv6 = strchr(s.o.host, ':') != NULL;
    printf("spectral-server: listening on http://%s%s%s:%d (model %s, %lld-dim, %d context%s x %d thread%s, "
           "mem-limit %zu bytes, max-tokens %lld, batch-tokens %lld, queue %d%s)\n",
           ipv6 ? "[" : "", s.o.host, ipv6 ? "]" : "", s.o.port, s.model_id, (long long)s.n_embd, s.o.parallel,
           s.o.parallel == 1 ? "" : "s", threads, threads == 1 ? "" : "s", s.o.mem_limit,
           (long long)s.max_tokens, (long long)srv_pool_batch_tokens(s.pool), s.o.queue, s.api_key ? ", API key required" : "");
    fflush(stdout);

    char byte;
    while (read(g_signal_pipe[0], &byte, 1) != 1 && errno == EINTR) {
    }
    const int sig = g_signal;
    fprintf(stderr, "spectral-server: %s: draining %lld request%s in flight\n", sig == SIGINT ? "SIGINT" : "SIGTERM",
            (long long)atomic_load(&s.in_flight), atomic_load(&s.in_flight) == 1 ? "" : "s");
    atomic_store(&s.draining, true);
    /* No new connections; the listening socket is closed after the stop. */
    const MHD_socket listen_fd = MHD_quiesce_daemon(s.daemon);
    /* Wait for every request received so far to be answered and sent (each
     * is bounded: computing is, and a client that stops reading is timed
     * out by libmicrohttpd). A second signal ends the process at once. */
    const struct timespec tick = {0, 20 * 1000 * 1000};
    while (atomic_load(&s.in_flight) > 0) nanosleep(&tick, NULL);
    MHD_stop_daemon(s.daemon);
    if (listen_fd != MHD_INVALID_SOCKET) close(listen_fd);
    srv_pool_free(s.pool);
    spectral_model_free(s.model);
    free(s.api_key);
    fprintf(stderr, "spectral-server: stopped\n");
    return 0;
}
