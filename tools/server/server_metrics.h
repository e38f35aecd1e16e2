/* server_metrics.h - spectral-server's Prometheus counters and their text
 * exposition (GET /metrics, text format 0.0.4).
 *
 * Usage:
 *
 *     static srv_metrics m;                         // zeroed: ready
 *     srv_metrics_response(&m, SRV_EP_EMBEDDINGS, 200, seconds);
 *     srv_metrics_embedded(&m, n_inputs, n_tokens);
 *     srv_metrics_rejected(&m, SRV_REJECT_QUEUE_FULL);
 *     srv_metrics_gauges g = {...};                 // the pool's stats and settings
 *     char *text = srv_metrics_text(&m, &g, &len);  // malloc'd, NULL when out of memory
 *
 * Thread safety: every counter is atomic; all functions may be called from
 * any thread at once. */
#ifndef SPECTRAL_SERVER_METRICS_H
#define SPECTRAL_SERVER_METRICS_H

#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>

#include "server_pool.h"

typedef enum {
    SRV_EP_OTHER,
    SRV_EP_EMBEDDINGS,
    SRV_EP_MODELS,
    SRV_EP_HEALTH,
    SRV_EP_METRICS,
    SRV_EP_TOKENIZE,
    SRV_N_ENDPOINTS
} srv_endpoint;

typedef enum { SRV_REJECT_QUEUE_FULL, SRV_REJECT_TOO_LARGE, SRV_REJECT_BUSY, SRV_N_REJECTS } srv_reject;

/* Statuses counted one by one (anything else is counted as "other") and
 * latency buckets in seconds. */
#define SRV_N_CODES 11
#define SRV_N_BUCKETS 13

typedef struct {
    atomic_uint_fast64_t responses[SRV_N_ENDPOINTS][SRV_N_CODES + 1];
    atomic_uint_fast64_t latency_bucket[SRV_N_BUCKETS + 1]; /* /v1/embeddings, any status */
    atomic_uint_fast64_t latency_us_sum, latency_count;
    atomic_uint_fast64_t inputs, tokens;
    atomic_uint_fast64_t rejected[SRV_N_REJECTS];
} srv_metrics;

/* What the text shows besides the counters. */
typedef struct {
    srv_pool_stats pool;
    int queue_limit;
    int64_t in_flight;
    int contexts;
    size_t mem_limit;
    size_t request_mem, request_mem_limit; /* --request-mem: in use, the cap */
    uint64_t connections_cut;              /* by the deadlines (server_watch.h) */
} srv_metrics_gauges;

const char *srv_endpoint_name(srv_endpoint ep);
/* One answer; seconds (from the request's headers) counts for the embedding routes only. */
void srv_metrics_response(srv_metrics *m, srv_endpoint ep, int status, double seconds);
void srv_metrics_embedded(srv_metrics *m, int64_t inputs, int64_t tokens);
void srv_metrics_rejected(srv_metrics *m, srv_reject why);
char *srv_metrics_text(srv_metrics *m, const srv_metrics_gauges *g, size_t *len);

#endif
