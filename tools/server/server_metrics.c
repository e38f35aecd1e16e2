/* server_metrics.c - counters and the /metrics text (see server_metrics.h). */
#include "server_metrics.h"

#include "server_api.h"

static const int k_codes[SRV_N_CODES] = {200, 204, 400, 401, 404, 405, 413, 422, 429, 500, 503};
static const double k_buckets[SRV_N_BUCKETS] = {0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5,
                                                1, 2.5, 5, 10, 30, 60};
static const char *const k_endpoints[SRV_N_ENDPOINTS] = {"other", "embeddings", "models", "health",
                                                         "metrics", "tokenize"};
static const char *const k_rejects[SRV_N_REJECTS] = {"queue_full", "too_large", "busy"};

const char *srv_endpoint_name(srv_endpoint ep) {
    return ep >= 0 && ep < SRV_N_ENDPOINTS ? k_endpoints[ep] : "other";
}

void srv_metrics_response(srv_metrics *m, srv_endpoint ep, int status, double seconds) {
    if (ep < 0 || ep >= SRV_N_ENDPOINTS) ep = SRV_EP_OTHER;
    size_t k = SRV_N_CODES;
    for (size_t i = 0; i < SRV_N_CODES; i++)
        if (k_codes[i] == status) k = i;
    atomic_fetch_add(&m->responses[ep][k], 1);
    if (ep != SRV_EP_EMBEDDINGS) return;
    size_t b = 0;
    while (b < SRV_N_BUCKETS && seconds > k_buckets[b]) b++;
    atomic_fetch_add(&m->latency_bucket[b], 1);
    atomic_fetch_add(&m->latency_us_sum, (uint64_t)(seconds * 1e6));
    atomic_fetch_add(&m->latency_count, 1);
}

void srv_metrics_embedded(srv_metrics *m, int64_t inputs, int64_t tokens) {
    atomic_fetch_add(&m->inputs, (uint64_t)inputs);
    atomic_fetch_add(&m->tokens, (uint64_t)tokens);
}

void srv_metrics_rejected(srv_metrics *m, srv_reject why) { atomic_fetch_add(&m->rejected[why], 1); }

static void metric(srv_buf *b, const char *name, const char *type, const char *help) {
    srv_buf_printf(b, "# HELP %s %s\n# TYPE %s %s\n", name, help, name, type);
}

char *srv_metrics_text(srv_metrics *m, const srv_metrics_gauges *g, size_t *len) {
    srv_buf b = {0};
    metric(&b, "spectral_requests_total", "counter", "HTTP requests answered, by endpoint and status.");
    for (int e = 0; e < SRV_N_ENDPOINTS; e++)
        for (size_t k = 0; k <= SRV_N_CODES; k++) {
            const unsigned long long v = atomic_load(&m->responses[e][k]);
            if (k < SRV_N_CODES)
                srv_buf_printf(&b, "spectral_requests_total{endpoint=\"%s\",code=\"%d\"} %llu\n", k_endpoints[e],
                               k_codes[k], v);
            else
                srv_buf_printf(&b, "spectral_requests_total{endpoint=\"%s\",code=\"other\"} %llu\n", k_endpoints[e], v);
        }
    metric(&b, "spectral_inputs_total", "counter", "Inputs embedded (successful requests).");
    srv_buf_printf(&b, "spectral_inputs_total %llu\n", (unsigned long long)atomic_load(&m->inputs));
    metric(&b, "spectral_tokens_total", "counter", "Tokens embedded (successful requests).");
    srv_buf_printf(&b, "spectral_tokens_total %llu\n", (unsigned long long)atomic_load(&m->tokens));
    metric(&b, "spectral_rejected_total", "counter", "Requests refused before or while encoding, by reason.");
    for (int r = 0; r < SRV_N_REJECTS; r++)
        srv_buf_printf(&b, "spectral_rejected_total{reason=\"%s\"} %llu\n", k_rejects[r],
                       (unsigned long long)atomic_load(&m->rejected[r]));
    metric(&b, "spectral_queue_depth", "gauge", "Requests admitted and not yet computed.");
    srv_buf_printf(&b, "spectral_queue_depth %lld\n", (long long)g->pool.queued);
    metric(&b, "spectral_queue_limit", "gauge", "The --queue bound.");
    srv_buf_printf(&b, "spectral_queue_limit %d\n", g->queue_limit);
    metric(&b, "spectral_requests_in_flight", "gauge", "Requests being received, queued, computed or sent.");
    srv_buf_printf(&b, "spectral_requests_in_flight %lld\n", (long long)g->in_flight);
    metric(&b, "spectral_busy_contexts", "gauge", "Contexts encoding now.");
    srv_buf_printf(&b, "spectral_busy_contexts %lld\n", (long long)g->pool.busy_contexts);
    metric(&b, "spectral_contexts", "gauge", "Contexts in the pool (--parallel).");
    srv_buf_printf(&b, "spectral_contexts %d\n", g->contexts);
    metric(&b, "spectral_batches_total", "counter", "Packed forward passes (spectral_encode_batch calls).");
    srv_buf_printf(&b, "spectral_batches_total %llu\n", (unsigned long long)g->pool.batches);
    metric(&b, "spectral_batch_inputs_total", "counter", "Inputs over all passes.");
    srv_buf_printf(&b, "spectral_batch_inputs_total %llu\n", (unsigned long long)g->pool.batch_inputs);
    metric(&b, "spectral_batch_tokens_total", "counter", "Tokens over all passes.");
    srv_buf_printf(&b, "spectral_batch_tokens_total %llu\n", (unsigned long long)g->pool.batch_tokens);
    metric(&b, "spectral_arena_peak_bytes", "gauge", "Sum over contexts of the largest activation arena each used.");
    srv_buf_printf(&b, "spectral_arena_peak_bytes %zu\n", g->pool.arena_peak);
    metric(&b, "spectral_mem_limit_bytes", "gauge", "The --mem-limit cap on all contexts together.");
    srv_buf_printf(&b, "spectral_mem_limit_bytes %zu\n", g->mem_limit);
    metric(&b, "spectral_request_memory_bytes", "gauge",
           "Memory requests hold outside the arenas (bodies, parses, tokens, vectors, answers).");
    srv_buf_printf(&b, "spectral_request_memory_bytes %zu\n", g->request_mem);
    metric(&b, "spectral_request_memory_limit_bytes", "gauge", "The --request-mem cap.");
    srv_buf_printf(&b, "spectral_request_memory_limit_bytes %zu\n", g->request_mem_limit);
    metric(&b, "spectral_connections_cut_total", "counter",
           "Connections closed for holding a request or an answer past --request-timeout (or the drain's).");
    srv_buf_printf(&b, "spectral_connections_cut_total %llu\n", (unsigned long long)g->connections_cut);
    metric(&b, "spectral_request_duration_seconds", "histogram",
           "Embedding latency (every embedding route), from the request's headers to its answer, any status.");
    unsigned long long cum = 0;
    for (size_t i = 0; i <= SRV_N_BUCKETS; i++) {
        cum += atomic_load(&m->latency_bucket[i]);
        if (i < SRV_N_BUCKETS)
            srv_buf_printf(&b, "spectral_request_duration_seconds_bucket{le=\"%g\"} %llu\n", k_buckets[i], cum);
        else
            srv_buf_printf(&b, "spectral_request_duration_seconds_bucket{le=\"+Inf\"} %llu\n", cum);
    }
    srv_buf_printf(&b, "spectral_request_duration_seconds_sum %.6f\nspectral_request_duration_seconds_count %llu\n",
                   (double)atomic_load(&m->latency_us_sum) * 1e-6, (unsigned long long)atomic_load(&m->latency_count));
    return srv_buf_take(&b, len);
}
