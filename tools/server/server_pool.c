/* server_pool.c - contexts, the request queue and the batching workers
 * (see server_pool.h). */
#define _POSIX_C_SOURCE 200809L
#include "server_pool.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Inputs in one pass at most: a bound on the per-pass bookkeeping when many
 * tiny inputs are waiting (the token budget is the real limit). */
#define MAX_BATCH_INPUTS 1024

struct srv_job {
    int64_t n;
    bool normalize;         /* L2-normalized vectors (the context's normalize) */
    bool cancelled;         /* the drain gave up on its inputs not yet started (pool lock) */
    int32_t **ids;
    int64_t *n_ids;
    float *vectors;         /* n x n_embd */
    int64_t next;           /* next input to hand to a worker (pool lock) */
    int64_t remaining;      /* inputs not yet computed (pool lock) */
    spectral_status status; /* first failure (written by the worker that saw it, pool lock) */
    int64_t failed_input;
    char message[512];
    srv_job_done_fn on_done;
    void *user;
    struct srv_job *queue_next;
};

typedef struct worker worker;

typedef struct {
    worker *w;
    int64_t n_embd;
    /* failures seen in this pass, applied under the lock afterwards */
    spectral_status status[MAX_BATCH_INPUTS];
    char *message[MAX_BATCH_INPUTS];
} pass_state;

struct worker {
    srv_pool *pool;
    spectral_context *ctx;
    pthread_t thread;
    bool started;
    bool normalize; /* the context's normalize setting now */
    size_t peak; /* this context's arena peak (pool lock) */
    /* the pass being run: which job and input each document is */
    srv_job *job[MAX_BATCH_INPUTS];
    int64_t index[MAX_BATCH_INPUTS];
    const int32_t *tokens[MAX_BATCH_INPUTS];
    int64_t n_tokens[MAX_BATCH_INPUTS];
    /* allocated with the pool, so that a started worker cannot fail */
    pass_state ps;
    srv_job *finished[MAX_BATCH_INPUTS];
};

struct srv_pool {
    srv_pool_params p;
    int64_t n_embd;
    size_t ctx_limit;
    pthread_mutex_t lock;
    pthread_cond_t wake;
    srv_job *head, *tail; /* jobs with inputs not yet handed out */
    int64_t reserved;    /* admitted and not done */
    int64_t busy;
    int64_t callbacks;   /* on_done calls under way */
    bool stop;
    bool closing;        /* srv_pool_close: nothing more is admitted */
    pthread_cond_t idle; /* signalled when reserved and callbacks reach 0 */
    uint64_t batches, batch_inputs, batch_tokens;
    worker *workers;
    spectral_context *probe; /* for memory_minimum only (never encodes) */
    pthread_mutex_t probe_lock;
};

srv_job *srv_job_create(int64_t n_inputs, int32_t **ids, int64_t *n_ids, bool normalize,
                      srv_job_done_fn on_done, void *user) {
    srv_job *j = calloc(1, sizeof *j);
    if (!j) return NULL;
    j->n = n_inputs;
    j->normalize = normalize;
    j->ids = ids;
    j->n_ids = n_ids;
    j->remaining = n_inputs;
    j->on_done = on_done;
    j->user = user;
    return j;
}

void srv_job_free(srv_job *j) {
    if (!j) return;
    for (int64_t i = 0; i < j->n; i++) free(j->ids[i]);
    free(j->ids);
    free(j->n_ids);
    free(j->vectors);
    free(j);
}

const float *srv_job_vectors(const srv_job *j) { return j->vectors; }

int64_t srv_job_n_inputs(const srv_job *j) { return j->n; }

bool srv_job_cancelled(const srv_job *j) { return j->cancelled; }

spectral_status srv_job_status(const srv_job *j, const char **message, int64_t *input) {
    if (message) *message = j->message;
    if (input) *input = j->failed_input;
    return j->status;
}

/* Records a failure of input i (the first one wins). Called with the lock. */
static void job_fail(srv_job *j, int64_t i, spectral_status s, const char *msg) {
    if (j->status != SPECTRAL_OK) return;
    j->status = s;
    j->failed_input = i;
    snprintf(j->message, sizeof j->message, "%s", msg);
}

/* ---- workers ----------------------------------------------------------- */

static int on_document(spectral_context *ctx, int64_t k, spectral_status s, void *user) {
    pass_state *ps = user;
    worker *w = ps->w;
    srv_job *j = w->job[k];
    ps->status[k] = s;
    if (s == SPECTRAL_OK) {
        const float *e = spectral_get_embedding(ctx);
        /* Each input is written by exactly one worker; the job's owner reads
         * it after on_done, which the pool lock orders after this. */
        if (e && j->vectors) {
            memcpy(j->vectors + w->index[k] * ps->n_embd, e, (size_t)ps->n_embd * sizeof *e);
        } else {
            ps->status[k] = SPECTRAL_ERR_BACKEND;
            ps->message[k] = strdup("no embedding for this input");
        }
    } else {
        ps->message[k] = strdup(spectral_last_error());
    }
    return 0;
}

/* Hands out the next inputs, in arrival order, up to the token budget (the
 * first one always, however long), all of one normalize setting (a pass
 * has one). Called with the lock; returns the count. */
static int take_inputs(srv_pool *pool, worker *w) {
    const int64_t budget = pool->p.batch_tokens > 0 ? pool->p.batch_tokens : 4096;
    int64_t total = 0;
    int n = 0;
    while (pool->head && n < MAX_BATCH_INPUTS) {
        srv_job *j = pool->head;
        const int64_t len = j->n_ids[j->next];
        if (n > 0 && (total + len > budget || j->normalize != w->job[0]->normalize)) break;
        w->job[n] = j;
        w->index[n] = j->next;
        w->tokens[n] = j->ids[j->next];
        w->n_tokens[n] = len;
        total += len;
        n++;
        if (++j->next == j->n) {
            pool->head = j->queue_next;
            if (!pool->head) pool->tail = NULL;
        }
    }
    return n;
}

static void *worker_main(void *arg) {
    worker *w = arg;
    srv_pool *pool = w->pool;
    pass_state *ps = &w->ps;
    srv_job **finished = w->finished;
    ps->w = w;
    ps->n_embd = pool->n_embd;
    pthread_mutex_lock(&pool->lock);
    for (;;) {
        while (!pool->head && !pool->stop) pthread_cond_wait(&pool->wake, &pool->lock);
        if (!pool->head) break; /* stopping and nothing left */
        const int n = take_inputs(pool, w);
        pool->busy++;
        pthread_mutex_unlock(&pool->lock);
        if (w->job[0]->normalize != w->normalize) {
            spectral_context_set_normalize(w->ctx, w->job[0]->normalize);
            w->normalize = w->job[0]->normalize;
        }

        /* A document the callback never reports is a failure, not zeros. */
        for (int k = 0; k < n; k++) {
            ps->status[k] = SPECTRAL_ERR_BACKEND;
            ps->message[k] = NULL;
        }
        spectral_encode_batch(w->ctx, w->tokens, w->n_tokens, n, on_document, ps);
        int64_t tokens = 0;
        for (int k = 0; k < n; k++) tokens += w->n_tokens[k];
        const size_t peak = spectral_context_peak_memory(w->ctx);

        int n_finished = 0;
        pthread_mutex_lock(&pool->lock);
        pool->busy--;
        pool->batches++;
        pool->batch_inputs += (uint64_t)n;
        pool->batch_tokens += (uint64_t)tokens;
        w->peak = peak;
        for (int k = 0; k < n; k++) {
            srv_job *j = w->job[k];
            if (ps->status[k] != SPECTRAL_OK)
                job_fail(j, w->index[k], ps->status[k], ps->message[k] ? ps->message[k] : "the encoder did not report this input");
            free(ps->message[k]);
            if (--j->remaining == 0) {
                pool->reserved--;
                finished[n_finished++] = j;
            }
        }
        pool->callbacks++;
        pthread_mutex_unlock(&pool->lock);
        /* Outside the lock: on_done may take the HTTP library's locks. */
        for (int k = 0; k < n_finished; k++) finished[k]->on_done(finished[k], finished[k]->user);
        pthread_mutex_lock(&pool->lock);
        pool->callbacks--;
        if (!pool->reserved && !pool->callbacks) pthread_cond_broadcast(&pool->idle);
    }
    pthread_mutex_unlock(&pool->lock);
    return NULL;
}

/* ---- the pool ---------------------------------------------------------- */

srv_pool *srv_pool_create(const srv_pool_params *p, char *err, size_t err_len) {
    if (p->n_contexts < 1 || p->queue < 1) {
        snprintf(err, err_len, "need at least one context and a queue of at least one");
        return NULL;
    }
    srv_pool *pool = calloc(1, sizeof *pool);
    if (!pool) {
        snprintf(err, err_len, "out of memory");
        return NULL;
    }
    pool->p = *p;
    pool->n_embd = spectral_model_n_pooled(p->model); /* the length of one embedding */
    /* Each context's share. One below a byte is a byte: the same refusal
     * (spectral-server.c reads a share of 0 as no cap). */
    pool->ctx_limit = p->mem_limit == SPECTRAL_MEM_UNLIMITED ? SPECTRAL_MEM_UNLIMITED
                                                             : p->mem_limit / (size_t)p->n_contexts;
    if (!pool->ctx_limit) pool->ctx_limit = 1;
    pthread_mutex_init(&pool->lock, NULL);
    pthread_mutex_init(&pool->probe_lock, NULL);
    pthread_cond_init(&pool->wake, NULL);
    pthread_cond_init(&pool->idle, NULL);
    pool->workers = calloc((size_t)p->n_contexts, sizeof *pool->workers);
    if (!pool->workers) {
        snprintf(err, err_len, "out of memory");
        srv_pool_free(pool);
        return NULL;
    }
    spectral_context_params cp = spectral_context_default_params();
    cp.n_threads = p->n_threads;
    cp.backend = p->backend;
    cp.mem_limit = pool->ctx_limit;
    cp.pooling = p->pooling;
    cp.normalize = true;
    cp.batch_tokens = p->batch_tokens;
    cp.no_pad = p->no_pad;
    for (int i = 0; i < p->n_contexts; i++) {
        worker *w = &pool->workers[i];
        w->pool = pool;
        w->normalize = cp.normalize;
        if (spectral_context_create(p->model, cp, &w->ctx) != SPECTRAL_OK) {
            snprintf(err, err_len, "context %d: %s", i, spectral_last_error());
            srv_pool_free(pool);
            return NULL;
        }
    }
    /* The probe only plans (measure mode): one thread is enough, since one
     * tile at a time is what memory_minimum measures, the same on any
     * thread count. The CPU backend's plan is only the CPU's, so on another
     * backend there is no probe and the workers' own plans refuse what
     * does not fit (the same 413, after queueing). */
    if (p->backend == SPECTRAL_BACKEND_CPU) {
        spectral_context_params probe = cp;
        probe.n_threads = 1;
        if (spectral_context_create(p->model, probe, &pool->probe) != SPECTRAL_OK) {
            snprintf(err, err_len, "measuring context: %s", spectral_last_error());
            srv_pool_free(pool);
            return NULL;
        }
    }
    /* A packed pass needs about what one document of all its tokens needs:
     * shrink the token budget until such a pass fits a context, so packs
     * are not planned only to be refused and split (results are the same
     * either way). */
    if (pool->ctx_limit != SPECTRAL_MEM_UNLIMITED && pool->probe) {
        if (pool->p.batch_tokens <= 0) pool->p.batch_tokens = 4096;
        while (pool->p.batch_tokens > 1 &&
               spectral_context_memory_minimum(pool->probe, pool->p.batch_tokens) > pool->ctx_limit)
            pool->p.batch_tokens /= 2;
    }
    for (int i = 0; i < p->n_contexts; i++) {
        worker *w = &pool->workers[i];
        if (pthread_create(&w->thread, NULL, worker_main, w)) {
            snprintf(err, err_len, "cannot start worker thread %d", i);
            srv_pool_free(pool);
            return NULL;
        }
        w->started = true;
    }
    return pool;
}

void srv_pool_free(srv_pool *pool) {
    if (!pool) return;
    pthread_mutex_lock(&pool->lock);
    pool->stop = true;
    pthread_cond_broadcast(&pool->wake);
    pthread_mutex_unlock(&pool->lock);
    if (pool->workers) {
        for (int i = 0; i < pool->p.n_contexts; i++) {
            worker *w = &pool->workers[i];
            if (w->started) pthread_join(w->thread, NULL);
            spectral_context_free(w->ctx);
        }
    }
    spectral_context_free(pool->probe);
    free(pool->workers);
    pthread_cond_destroy(&pool->wake);
    pthread_cond_destroy(&pool->idle);
    pthread_mutex_destroy(&pool->probe_lock);
    pthread_mutex_destroy(&pool->lock);
    free(pool);
}

size_t srv_pool_context_limit(const srv_pool *pool) { return pool->ctx_limit; }

int64_t srv_pool_batch_tokens(const srv_pool *pool) { return pool->p.batch_tokens; }

size_t srv_pool_memory_minimum(srv_pool *pool, int64_t n_tokens) {
    if (!pool->probe) return 0;
    pthread_mutex_lock(&pool->probe_lock);
    const size_t need = spectral_context_memory_minimum(pool->probe, n_tokens);
    pthread_mutex_unlock(&pool->probe_lock);
    return need;
}

int srv_pool_reserve(srv_pool *pool) {
    pthread_mutex_lock(&pool->lock);
    const int ok = !pool->stop && !pool->closing && pool->reserved < pool->p.queue;
    if (ok) pool->reserved++;
    pthread_mutex_unlock(&pool->lock);
    return ok ? 0 : -1;
}

void srv_pool_unreserve(srv_pool *pool) {
    pthread_mutex_lock(&pool->lock);
    pool->reserved--;
    if (!pool->reserved && !pool->callbacks) pthread_cond_broadcast(&pool->idle);
    pthread_mutex_unlock(&pool->lock);
}

bool srv_pool_full(srv_pool *pool) {
    pthread_mutex_lock(&pool->lock);
    const bool full = pool->reserved >= pool->p.queue;
    pthread_mutex_unlock(&pool->lock);
    return full;
}

/* Ends a job that will not run (or not all of it) with the lock held:
 * the caller calls on_done after unlocking. */
static void job_done_early(srv_pool *pool) {
    pool->reserved--;
    pool->callbacks++;
}

static void job_done_early_unlocked(srv_pool *pool, srv_job *job) {
    job->on_done(job, job->user);
    pthread_mutex_lock(&pool->lock);
    pool->callbacks--;
    if (!pool->reserved && !pool->callbacks) pthread_cond_broadcast(&pool->idle);
    pthread_mutex_unlock(&pool->lock);
}

void srv_pool_submit(srv_pool *pool, srv_job *job) {
    job->vectors = job->n ? malloc((size_t)(job->n * pool->n_embd) * sizeof(float)) : NULL;
    pthread_mutex_lock(&pool->lock);
    if (!job->vectors || job->n == 0 || pool->closing) {
        /* Nothing to run, no room for the answer, or draining: done at once. */
        if (pool->closing) job->cancelled = true;
        else if (!job->vectors) job_fail(job, 0, SPECTRAL_ERR_OUT_OF_MEMORY, "out of memory for the embeddings");
        job_done_early(pool);
        pthread_mutex_unlock(&pool->lock);
        job_done_early_unlocked(pool, job);
        return;
    }
    job->queue_next = NULL;
    if (pool->tail) pool->tail->queue_next = job;
    else pool->head = job;
    pool->tail = job;
    pthread_cond_broadcast(&pool->wake);
    pthread_mutex_unlock(&pool->lock);
}

void srv_pool_close(srv_pool *pool) {
    srv_job *done[64];
    pthread_mutex_lock(&pool->lock);
    pool->closing = true;
    /* Queued inputs never handed to a worker are given up; a job with some
     * inputs being computed ends when those do. */
    while (pool->head) {
        int n = 0;
        for (srv_job *j = pool->head; j && n < 64; j = pool->head) {
            pool->head = j->queue_next;
            j->cancelled = true;
            j->remaining -= j->n - j->next;
            j->next = j->n;
            if (j->remaining == 0) {
                job_done_early(pool);
                done[n++] = j;
            }
        }
        if (!pool->head) pool->tail = NULL;
        pthread_mutex_unlock(&pool->lock);
        for (int k = 0; k < n; k++) job_done_early_unlocked(pool, done[k]);
        pthread_mutex_lock(&pool->lock);
    }
    pthread_mutex_unlock(&pool->lock);
}

void srv_pool_wait_idle(srv_pool *pool) {
    pthread_mutex_lock(&pool->lock);
    while (pool->reserved || pool->callbacks) pthread_cond_wait(&pool->idle, &pool->lock);
    pthread_mutex_unlock(&pool->lock);
}

void srv_pool_get_stats(srv_pool *pool, srv_pool_stats *out) {
    pthread_mutex_lock(&pool->lock);
    out->queued = pool->reserved;
    out->busy_contexts = pool->busy;
    out->batches = pool->batches;
    out->batch_inputs = pool->batch_inputs;
    out->batch_tokens = pool->batch_tokens;
    out->arena_peak = 0;
    for (int i = 0; i < pool->p.n_contexts; i++) out->arena_peak += pool->workers[i].peak;
    pthread_mutex_unlock(&pool->lock);
}
