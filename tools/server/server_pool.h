/* server_pool.h - spectral-server's scheduler: a pool of contexts on one
 * model, a bounded FIFO of requests, and workers that pack the inputs of
 * whichever requests are waiting into shared spectral_encode_batch passes.
 *
 * Usage:
 *
 *     srv_pool_params pp = {.model = model, .n_contexts = 2, .n_threads = 1,
 *                          .mem_limit = 1u << 30, .queue = 64};
 *     srv_pool *pool = srv_pool_create(&pp, err, sizeof err);
 *     if (srv_pool_memory_minimum(pool, n) > srv_pool_context_limit(pool)) refuse(413);
 *     srv_job *job = srv_job_create(n_inputs, ids, n_ids, true, on_done, conn);  // takes ids
 *     if (srv_pool_reserve(pool)) refuse(503);      // the queue is full
 *     srv_pool_submit(pool, job);                   // on_done(job) runs on a worker
 *     ... srv_job_vectors(job), srv_job_failed(job) ...
 *     srv_job_free(job);
 *     srv_pool_close(pool); srv_pool_wait_idle(pool);  // a drain's deadline: queued jobs end
 *     srv_pool_free(pool);                          // after every job is done
 *
 * Memory: the cap is global. Each of the n_contexts contexts gets
 * mem_limit / n_contexts bytes of activation memory (its arena never grows
 * past that); one more context, used only to measure what an input needs
 * (spectral_context_memory_minimum; CPU only), never allocates an arena.
 *
 * Thread safety: every srv_pool_* function may be called from any thread at
 * once. A job belongs to its creator except between srv_pool_submit and its
 * on_done call, during which only the pool touches it; on_done is called
 * once, on a worker thread, without the pool's lock held, and the worker
 * does not touch the job after it. */
#ifndef SPECTRAL_SERVER_POOL_H
#define SPECTRAL_SERVER_POOL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "spectral.h"

typedef struct srv_pool srv_pool;
typedef struct srv_job srv_job;
typedef void (*srv_job_done_fn)(srv_job *job, void *user);

typedef struct {
    spectral_model *model;
    int n_contexts;           /* --parallel */
    int n_threads;            /* CPU threads per context */
    spectral_backend backend; /* cpu or cuda */
    size_t mem_limit;         /* all contexts together; SPECTRAL_MEM_UNLIMITED = no cap */
    spectral_pooling pooling; /* UNSPECIFIED = the model's */
    int64_t batch_tokens;     /* tokens per packed pass (0 = 4096) */
    bool no_pad;             /* spectral_context_params.no_pad */
    int queue;                /* requests admitted and not yet computed */
} srv_pool_params;

typedef struct {
    int64_t queued;          /* requests admitted, not yet done */
    int64_t busy_contexts;   /* contexts encoding now */
    uint64_t batches;        /* spectral_encode_batch calls */
    uint64_t batch_inputs;   /* inputs over all of them */
    uint64_t batch_tokens;   /* tokens over all of them */
    size_t arena_peak;       /* sum over contexts of the largest arena each used */
} srv_pool_stats;

srv_pool *srv_pool_create(const srv_pool_params *p, char *err, size_t err_len);
/* Waits for the workers to finish what is queued, then frees everything. */
void srv_pool_free(srv_pool *pool);

/* Activation bytes each context may use (SPECTRAL_MEM_UNLIMITED: no cap). */
size_t srv_pool_context_limit(const srv_pool *pool);
/* Tokens per packed pass: batch_tokens, halved until such a pass fits. */
int64_t srv_pool_batch_tokens(const srv_pool *pool);
/* The least activation memory one input of n tokens runs in, or 0 when it
 * cannot be told before running (a non-CPU backend, a planning failure):
 * the worker's own plan then decides. */
size_t srv_pool_memory_minimum(srv_pool *pool, int64_t n_tokens);

/* Takes ownership of ids[i] (malloc'd) and of the arrays ids and n_ids.
 * normalize: L2-normalized vectors, or as the model pools them (a pass runs
 * inputs of one setting; spectral_context_set_normalize switches it). */
srv_job *srv_job_create(int64_t n_inputs, int32_t **ids, int64_t *n_ids, bool normalize,
                      srv_job_done_fn on_done, void *user);
void srv_job_free(srv_job *job);
int64_t srv_job_n_inputs(const srv_job *job);
/* n_inputs x n_embd floats, in input order, once the job is done. */
const float *srv_job_vectors(const srv_job *job);
/* Whether srv_pool_close gave up on some of its inputs (then its vectors are
 * not all there: answer 503). */
bool srv_job_cancelled(const srv_job *job);
/* SPECTRAL_OK, or the first failure's status, message and input index. */
spectral_status srv_job_status(const srv_job *job, const char **message, int64_t *input);

/* Takes a place in the queue: 0, or -1 when --queue requests are already
 * waiting (answer 503 at once). Every successful reserve is followed by
 * exactly one srv_pool_submit or srv_pool_unreserve. */
int srv_pool_reserve(srv_pool *pool);
void srv_pool_unreserve(srv_pool *pool);
void srv_pool_submit(srv_pool *pool, srv_job *job);
/* Whether a request would find the queue full right now (a hint: the
 * reservation decides). */
bool srv_pool_full(srv_pool *pool);

/* The drain's deadline: nothing more is admitted (reserve fails, a submit
 * is cancelled at once) and queued inputs not yet handed to a worker are
 * given up; every job still ends with one on_done. */
void srv_pool_close(srv_pool *pool);
/* Waits until every admitted job has ended and its on_done returned (the
 * passes being computed finish first). */
void srv_pool_wait_idle(srv_pool *pool);

void srv_pool_get_stats(srv_pool *pool, srv_pool_stats *out);

#endif
