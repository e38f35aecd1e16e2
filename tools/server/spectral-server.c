/* spectral-server: an embeddings server over HTTP that speaks the OpenAI
 * schema, text-embeddings-inference's and llama-server's.
 *
 * HTTP is libmicrohttpd's (an internal poll() thread pool; each request that
 * needs the model is suspended while it waits, so no HTTP thread ever
 * blocks on encoding); requests are server_http.c's, their JSON
 * server_api.c's; batching, the queue and the memory cap are
 * server_pool.c's; request memory server_budget.c's; connection deadlines
 * server_watch.c's; /metrics server_metrics.c's. This file: options,
 * start, and the drain on SIGTERM. Uses only spectral.h.
 * See docs/server.md. */
#define _POSIX_C_SOURCE 200809L
#include <errno.h>
#include <microhttpd.h>
#include <netdb.h>
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
#include "server.h"

/* ---- options ----------------------------------------------------------- */


static void print_usage(FILE *f) {
    fprintf(f,
        "usage: spectral-server -m MODEL [options]\n"
        "\n"
        "Serves embeddings from a spectral GGUF model over HTTP to the clients of OpenAI\n"
        "(POST /v1/embeddings, GET /v1/models[/ID]), text-embeddings-inference (POST /embed,\n"
        "POST /, /tokenize, GET /info) and llama-server (POST /embedding, /tokenize,\n"
        "/detokenize, GET /props); GET /health, GET /metrics (Prometheus).\n"
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
        "                          own maximum if lower); longer inputs get 413, or are\n"
        "                          truncated to it when the request says \"truncate\": true\n"
        "      --auto-truncate     truncate longer inputs when the request does not say\n"
        "                          (default: refuse them)\n"
        "      --queue N           requests admitted and not yet computed (default 32);\n"
        "                          beyond that 503 with Retry-After at once\n"
        "      --api-key KEY       require 'Authorization: Bearer KEY' (all but /health)\n"
        "      --api-key-file F    the same, the key read from the first line of F\n"
        "      --timeout S         close a connection idle for S seconds (default 30)\n"
        "      --request-timeout S close a connection that takes longer than S seconds to\n"
        "                          send a request or to read an answer (default 60)\n"
        "      --drain-timeout S   on SIGTERM, wait S seconds for requests in flight, then\n"
        "                          refuse those not started and close slow clients (default 30)\n"
        "      --max-body SIZE     largest request body (default 32M); larger gets 413\n"
        "      --request-mem SIZE  memory of the requests in flight together: bodies,\n"
        "                          parses, tokens, vectors, answers (default: --mem-limit);\n"
        "                          beyond it 503 with Retry-After\n"
        "      --max-inputs N      inputs per request (default 2048, as OpenAI)\n"
        "  -b, --batch-tokens N    pack queued inputs into passes of up to N tokens\n"
        "                          (default 4096; 1 = one input per pass)\n"
        "  -p, --pooling TYPE      mean | cls | last (default: the model's)\n"
        "      --no-pad            a model that pads every input to its length (M2-BERT, as\n"
        "                          its model card does) runs each at its own length instead:\n"
        "                          faster, and a different embedding\n"
        "      --alias NAME        model id reported to clients (default: file name)\n"
        "      --cors ORIGINS      allow browser pages from ORIGINS (comma-separated, or *)\n"
        "                          to call the server (default: none)\n"
        "      --http-threads N    HTTP threads (default 2)\n"
        "      --max-connections N open connections at most (default 512)\n"
        "  -v, --verbose           one log line per request on stderr\n"
        "  -h, --help / --version\n"
        "\n"
        "SIGTERM or SIGINT: stop accepting at once, answer the requests already received\n"
        "(within --drain-timeout), exit 0 (a second signal exits at once with status 1).\n");
}

static int parse_args(int argc, char **argv, srv_options *o) {
    memset(o, 0, sizeof *o);
    o->host = "127.0.0.1";
    o->port = 8080;
    o->parallel = 1;
    o->http_threads = 2;
    o->mem_limit = (size_t)1 << 30;
    o->max_tokens = 32768;
    o->queue = 32;
    o->timeout = 30;
    o->request_timeout = 60;
    o->drain_timeout = 30;
    o->max_body = (size_t)32 << 20;
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
        } else if (!strcmp(a, "--request-timeout")) {
            if (!(val = cli_value(&c))) return CLI_EXIT_USAGE;
            if (cli_parse_int(val, 1, 86400, &v)) return cli_usage_error(&c, "--request-timeout needs seconds from 1 to 86400, got '%s'", val);
            o->request_timeout = (unsigned)v;
        } else if (!strcmp(a, "--drain-timeout")) {
            if (!(val = cli_value(&c))) return CLI_EXIT_USAGE;
            if (cli_parse_int(val, 1, 86400, &v)) return cli_usage_error(&c, "--drain-timeout needs seconds from 1 to 86400, got '%s'", val);
            o->drain_timeout = (unsigned)v;
        } else if (!strcmp(a, "--request-mem")) {
            if (!(val = cli_value(&c))) return CLI_EXIT_USAGE;
            if (cli_parse_size(val, &o->request_mem) || !o->request_mem)
                return cli_usage_error(&c, "--request-mem needs a size such as 256M or 1G, got '%s'", val);
        } else if (!strcmp(a, "--auto-truncate")) {
            o->auto_truncate = true;
        } else if (!strcmp(a, "--cors")) {
            if (!(val = cli_value(&c))) return CLI_EXIT_USAGE;
            if (!val[0]) return cli_usage_error(&c, "%s", "--cors needs origins (https://app.example, or *)");
            o->cors = val;
        } else if (!strcmp(a, "--max-body")) {
            if (!(val = cli_value(&c))) return CLI_EXIT_USAGE;
            if (cli_parse_size(val, &o->max_body) || o->max_body > ((size_t)1 << 32))
                return cli_usage_error(&c, "--max-body needs a size up to 4G such as 32M, got '%s'", val);
        } else if (!strcmp(a, "--max-inputs")) {
            if (!(val = cli_value(&c))) return CLI_EXIT_USAGE;
            if (cli_parse_int(val, 1, 1 << 20, &o->max_inputs)) return cli_usage_error(&c, "--max-inputs needs a number from 1 to 2^20, got '%s'", val);
        } else if (!strcmp(a, "-b") || !strcmp(a, "--batch-tokens")) {
            if (!(val = cli_value(&c))) return CLI_EXIT_USAGE;
            if (cli_parse_int(val, 1, INT64_C(1) << 34, &o->batch_tokens)) return cli_usage_error(&c, "--batch-tokens needs a number from 1 to 2^34, got '%s'", val);
        } else if (!strcmp(a, "--no-pad")) {
            o->no_pad = true;
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
        flags, (uint16_t)s->o.port, NULL, NULL, srv_on_request, s,
        MHD_OPTION_EXTERNAL_LOGGER, mhd_log, s, /* first, so that every message goes through it */
        MHD_OPTION_SOCK_ADDR, ai->ai_addr,
        MHD_OPTION_THREAD_POOL_SIZE, (unsigned)s->o.http_threads,
        MHD_OPTION_CONNECTION_TIMEOUT, s->o.timeout,
        MHD_OPTION_CONNECTION_LIMIT, s->o.max_connections,
        /* Request line and headers must fit here (larger: 431 from libmicrohttpd). */
        MHD_OPTION_CONNECTION_MEMORY_LIMIT, (size_t)64 << 10,
        MHD_OPTION_NOTIFY_COMPLETED, srv_on_completed, s,
        MHD_OPTION_NOTIFY_CONNECTION, srv_on_connection, s,
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

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + ts.tv_nsec * 1e-9;
}

/* Waits up to seconds for the requests in flight to end; whether they did. */
static bool wait_in_flight(server *s, double seconds) {
    const double until = now_s() + seconds;
    const struct timespec tick = {0, 20 * 1000 * 1000};
    while (atomic_load(&s->in_flight) > 0 && now_s() < until) nanosleep(&tick, NULL);
    return atomic_load(&s->in_flight) == 0;
}

/* SIGTERM / SIGINT: stop accepting at once, let the requests in flight end
 * within --drain-timeout, then refuse those not started (503), cut clients
 * still sending or reading, finish the passes being computed and answer
 * them. Bounded: drain-timeout + the longest pass + 2 s for the last answers. */
static void drain(server *s) {
    atomic_store(&s->draining, true);
    const MHD_socket listen_fd = MHD_quiesce_daemon(s->daemon);
    /* shutdown, not close: the kernel refuses new connections (and resets
     * those waiting in its backlog) from now on, while the descriptor stays
     * valid for libmicrohttpd's threads until MHD_stop_daemon. */
    if (listen_fd != MHD_INVALID_SOCKET) shutdown(listen_fd, SHUT_RDWR);
    if (!wait_in_flight(s, s->o.drain_timeout)) {
        fprintf(stderr, "spectral-server: --drain-timeout %us passed with %lld request%s in flight: queued ones "
                        "get 503, slow clients are closed\n",
                s->o.drain_timeout, (long long)atomic_load(&s->in_flight), atomic_load(&s->in_flight) == 1 ? "" : "s");
        srv_pool_close(s->pool);
        srv_watch_cut_all(s->watch);
    }
    /* Every job ends (and resumes its connection) before the daemon stops:
     * libmicrohttpd aborts when stopped with a connection suspended. */
    srv_pool_wait_idle(s->pool);
    if (!wait_in_flight(s, 2.0)) srv_watch_cut_all(s->watch);
    MHD_stop_daemon(s->daemon);
    if (listen_fd != MHD_INVALID_SOCKET) close(listen_fd);
}

static void describe(server *s) {
    const char *arch = spectral_model_arch(s->model);
    const spectral_pooling p = s->o.pooling != SPECTRAL_POOLING_UNSPECIFIED ? s->o.pooling : spectral_model_pooling(s->model);
    s->card = (srv_model_card){
        .id = s->model_id,
        .file = s->model_file,
        .arch = arch,
        .pooling = p == SPECTRAL_POOLING_CLS ? "cls" : p == SPECTRAL_POOLING_LAST ? "last" : "mean",
        .version = spectral_version(),
        .created = (int64_t)time(NULL),
        .n_embd = spectral_model_n_embd(s->model),
        .n_pooled = s->n_embd,
        .n_lexical = spectral_model_n_lexical(s->model),
        .lexical_scale = spectral_model_lexical_scale(s->model),
        .dimensions = s->dims,
        .n_dimensions = s->n_dims,
        .n_vocab = s->n_vocab,
        .n_ctx_train = spectral_model_n_ctx_train(s->model),
        .max_tokens = s->max_tokens,
        .n_params = spectral_model_n_params(s->model),
        .parallel = s->o.parallel,
        .queue = s->o.queue,
        .batch_tokens = srv_pool_batch_tokens(s->pool),
        .max_inputs = s->o.max_inputs,
        .http_threads = s->o.http_threads,
        .auto_truncate = s->o.auto_truncate,
    };
}

static void cleanup(server *s) {
    srv_pool_free(s->pool);
    srv_watch_free(s->watch);
    spectral_model_free(s->model);
    free(s->api_key);
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
    cli_on_stop_signals(on_stop_signal);
    signal(SIGPIPE, SIG_IGN);
    srv_api_init();
    /* Everything requests hold outside the arenas; by default as much as the arenas may. */
    srv_budget_init(&s.budget, s.o.request_mem ? s.o.request_mem : s.o.mem_limit ? s.o.mem_limit : SIZE_MAX);

    if (spectral_model_load(s.o.model_path, spectral_model_default_params(), &s.model) != SPECTRAL_OK) {
        fprintf(stderr, "spectral-server: %s\n", spectral_last_error());
        free(s.api_key);
        return 2;
    }
    s.n_embd = spectral_model_n_pooled(s.model);
    s.n_dims = spectral_model_dense_prefixes(s.model, s.dims, SPECTRAL_MAX_PREFIXES);
    if (s.dims[s.n_dims - 1] != s.n_embd) s.dims[s.n_dims++] = (int32_t)s.n_embd; /* the sketch too */
    s.n_vocab = spectral_model_n_vocab(s.model);
    s.max_tokens = s.o.max_tokens;
    const int64_t hard = spectral_model_max_tokens(s.model);
    if (hard > 0 && hard < s.max_tokens) s.max_tokens = hard;
    /* A model with a hard maximum refuses longer inputs; one without runs
     * them, and answers say when an input is past the training length. */
    s.n_ctx_train = hard ? 0 : spectral_model_n_ctx_train(s.model);
    if (s.o.alias) snprintf(s.model_id, sizeof s.model_id, "%s", s.o.alias);
    else model_id_from_path(s.o.model_path, s.model_id, sizeof s.model_id);
    const char *base = strrchr(s.o.model_path, '/');
    snprintf(s.model_file, sizeof s.model_file, "%s", base ? base + 1 : s.o.model_path);
    if (s.o.pooling == SPECTRAL_POOLING_UNSPECIFIED && spectral_model_pooling(s.model) == SPECTRAL_POOLING_NONE) {
        fprintf(stderr, "spectral-server: the model has no pooling; choose one with --pooling mean|cls|last\n");
        cleanup(&s);
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
        .no_pad = s.o.no_pad,
        .queue = s.o.queue,
    };
    char err[512];
    s.pool = srv_pool_create(&pp, err, sizeof err);
    s.watch = s.pool ? srv_watch_create(s.o.request_timeout) : NULL;
    if (!s.pool || !s.watch) {
        fprintf(stderr, "spectral-server: %s\n", s.pool ? "cannot start the deadline watchdog" : err);
        cleanup(&s);
        return 2;
    }
    describe(&s);
    if (start_daemon(&s)) {
        cleanup(&s);
        return 2;
    }
    const int ipv6 = strchr(s.o.host, ':') != NULL;
    printf("spectral-server: listening on http://%s%s%s:%d (model %s, %lld-dim, %d context%s x %d thread%s, "
           "mem-limit %zu bytes, request-mem %zu bytes, max-tokens %lld, batch-tokens %lld, queue %d%s)\n",
           ipv6 ? "[" : "", s.o.host, ipv6 ? "]" : "", s.o.port, s.model_id, (long long)s.n_embd, s.o.parallel,
           s.o.parallel == 1 ? "" : "s", threads, threads == 1 ? "" : "s", s.o.mem_limit, s.budget.limit,
           (long long)s.max_tokens, (long long)srv_pool_batch_tokens(s.pool), s.o.queue,
           s.api_key ? ", API key required" : "");
    fflush(stdout);

    char byte;
    while (read(g_signal_pipe[0], &byte, 1) != 1 && errno == EINTR) {
    }
    const int sig = g_signal;
    fprintf(stderr, "spectral-server: %s: draining %lld request%s in flight\n", sig == SIGINT ? "SIGINT" : "SIGTERM",
            (long long)atomic_load(&s.in_flight), atomic_load(&s.in_flight) == 1 ? "" : "s");
    drain(&s);
    cleanup(&s);
    fprintf(stderr, "spectral-server: stopped\n");
    return 0;
}
