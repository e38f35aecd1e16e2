/* server.h - what spectral-server's two halves share: the options and the
 * server's state (spectral-server.c: options, start, drain) and the
 * libmicrohttpd callbacks that handle requests (server_http.c: routing,
 * bodies, the embedding, tokenizing and description routes, answers).
 *
 * Thread safety: the state is written before the daemon starts and read
 * after; what changes while it runs is atomic or has its own lock (the
 * pool, the watch, the budget, the metrics). */
#ifndef SPECTRAL_SERVER_H
#define SPECTRAL_SERVER_H

#include <microhttpd.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>

#include "server_api.h"
#include "server_budget.h"
#include "server_metrics.h"
#include "server_pool.h"
#include "server_watch.h"
#include "spectral.h"

typedef struct {
    const char *model_path;
    const char *host;
    int port;
    int parallel;
    int threads;
    int http_threads;
    spectral_backend device;
    size_t mem_limit;
    size_t request_mem; /* 0: the same as mem_limit */
    int64_t max_tokens;
    int queue;
    const char *api_key;
    const char *api_key_file;
    unsigned timeout;       /* idle, per connection (libmicrohttpd's) */
    unsigned request_timeout; /* receiving a request, or reading its answer */
    unsigned drain_timeout;
    size_t max_body;
    int64_t max_inputs;
    int64_t batch_tokens;
    bool no_pad; /* spectral_context_params.no_pad */
    spectral_pooling pooling;
    const char *alias;
    const char *cors; /* allowed origins, comma-separated, or "*"; NULL: none */
    bool auto_truncate;
    unsigned max_connections;
    bool verbose;
} srv_options;

typedef struct {
    srv_options o;
    spectral_model *model;
    srv_pool *pool;
    srv_watch *watch;
    srv_budget budget; /* --request-mem */
    srv_model_card card;
    int64_t n_embd;  /* the length of one embedding (spectral_model_n_pooled) */
    /* The lengths 'dimensions' accepts, ascending: the dense part's prefixes the
     * model was trained for (spectral_model_dense_prefixes, the whole dense part
     * among them), then n_embd when the model has a lexical sketch. */
    int32_t dims[SPECTRAL_MAX_PREFIXES + 1];
    int n_dims;
    int32_t n_vocab;
    int64_t max_tokens;
    int64_t n_ctx_train; /* past it, answers say so; 0: a model with a hard maximum refuses instead */
    char model_id[256];
    char model_file[256];
    char *api_key; /* NULL: no check */
    struct MHD_Daemon *daemon;
    atomic_bool draining;
    atomic_int_fast64_t in_flight; /* requests started and not completed */
    srv_metrics metrics;
} server;

/* libmicrohttpd's callbacks; cls is the server. */
enum MHD_Result srv_on_request(void *cls, struct MHD_Connection *c, const char *url, const char *method,
                               const char *version, const char *upload_data, size_t *upload_size,
                               void **con_cls);
void srv_on_completed(void *cls, struct MHD_Connection *c, void **con_cls,
                      enum MHD_RequestTerminationCode why);
void srv_on_connection(void *cls, struct MHD_Connection *c, void **socket_context,
                       enum MHD_ConnectionNotificationCode code);

#endif
