/* The CPU backend's fork-join pool (see threadpool.h for why it exists). */
#define _POSIX_C_SOURCE 200809L
#include "kernels/cpu/threadpool.h"

#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Spin iterations before a waiting thread blocks. Long enough to cover the
 * gap between two back-to-back jobs of one forward pass (microseconds),
 * short enough that an idle or oversubscribed pool gives its cores away. */
#define SP_POOL_SPIN 4000

#if defined(__x86_64__) || defined(__i386__)
#define SP_CPU_RELAX() __builtin_ia32_pause()
#elif defined(__aarch64__)
#define SP_CPU_RELAX() __asm__ __volatile__("yield")
#else
#define SP_CPU_RELAX() ((void)0)
#endif

typedef struct {
    sp_pool *pool;
    int index; /* 1..n-1; the caller is worker 0 */
} sp_pool_worker;

struct sp_pool {
    int n; /* threads, caller included */
    pthread_t *threads;
    sp_pool_worker *workers;
    pthread_mutex_t mu;
    pthread_cond_t wake;    /* workers wait here for a new job */
    pthread_cond_t done_cv; /* the caller waits here for the last worker */
    /* the current job, published by bumping gen */
    sp_pool_fn fn;
    void *arg;
    int64_t n_tasks;
    int n_active; /* threads taking part, caller included */
    atomic_int_fast64_t next;
    atomic_uint gen;
    atomic_int pending; /* workers that have not yet finished (or skipped) this job */
    atomic_int stop;
};

static void run_tasks(sp_pool *p, int worker) {
    const int64_t n = p->n_tasks;
    for (;;) {
        const int64_t t = atomic_fetch_add_explicit(&p->next, 1, memory_order_relaxed);
        if (t >= n) break;
        p->fn(p->arg, t, worker);
    }
}

static void *worker_main(void *v) {
    sp_pool_worker *w = v;
    sp_pool *p = w->pool;
    unsigned seen = 0;
    for (;;) {
        unsigned g = atomic_load_explicit(&p->gen, memory_order_acquire);
        for (int i = 0; i < SP_POOL_SPIN && g == seen; i++) {
            SP_CPU_RELAX();
            g = atomic_load_explicit(&p->gen, memory_order_acquire);
        }
        if (g == seen) {
            pthread_mutex_lock(&p->mu);
            while ((g = atomic_load_explicit(&p->gen, memory_order_acquire)) == seen)
                pthread_cond_wait(&p->wake, &p->mu);
            pthread_mutex_unlock(&p->mu);
        }
        seen = g;
        if (atomic_load(&p->stop)) return NULL;
        /* Every worker acknowledges every job, taking part or not, so none
         * can still be reading this job's fields when the next one starts. */
        if (w->index < p->n_active) run_tasks(p, w->index);
        if (atomic_fetch_sub_explicit(&p->pending, 1, memory_order_acq_rel) == 1) {
            pthread_mutex_lock(&p->mu);
            pthread_cond_signal(&p->done_cv);
            pthread_mutex_unlock(&p->mu);
        }
    }
}

/* Publishes a new generation (a job or the stop flag) and wakes sleepers. */
static void publish(sp_pool *p) {
    pthread_mutex_lock(&p->mu);
    atomic_fetch_add_explicit(&p->gen, 1, memory_order_acq_rel);
    pthread_cond_broadcast(&p->wake);
    pthread_mutex_unlock(&p->mu);
}

static void stop_and_join(sp_pool *p, int n_started) {
    atomic_store(&p->stop, 1);
    publish(p);
    for (int i = 0; i < n_started; i++) pthread_join(p->threads[i], NULL);
}

/* Frees a pool whose workers have all been joined. */
static void pool_free(sp_pool *p) {
    pthread_mutex_destroy(&p->mu);
    pthread_cond_destroy(&p->wake);
    pthread_cond_destroy(&p->done_cv);
    free(p->threads);
    free(p->workers);
    free(p);
}

sp_pool *sp_pool_create(int n_threads, char *err, size_t err_len) {
    if (n_threads < 1) {
        snprintf(err, err_len, "thread pool: n_threads must be >= 1, got %d", n_threads);
        return NULL;
    }
    sp_pool *p = calloc(1, sizeof *p);
    if (p) {
        p->threads = calloc((size_t)n_threads, sizeof *p->threads);
        p->workers = calloc((size_t)n_threads, sizeof *p->workers);
    }
    if (!p || !p->threads || !p->workers) {
        if (p) {
            free(p->threads);
            free(p->workers);
        }
        free(p);
        snprintf(err, err_len, "thread pool: out of memory");
        return NULL;
    }
    p->n = n_threads;
    pthread_mutex_init(&p->mu, NULL);
    pthread_cond_init(&p->wake, NULL);
    pthread_cond_init(&p->done_cv, NULL);
    atomic_init(&p->next, 0);
    atomic_init(&p->gen, 0);
    atomic_init(&p->pending, 0);
    atomic_init(&p->stop, 0);
    /* Workers take no asynchronous signals: those belong to the app's threads. */
    sigset_t all, old;
    sigfillset(&all);
    pthread_sigmask(SIG_SETMASK, &all, &old);
    int started = 0, rc = 0;
    for (int i = 1; i < n_threads; i++) {
        p->workers[i].pool = p;
        p->workers[i].index = i;
        rc = pthread_create(&p->threads[started], NULL, worker_main, &p->workers[i]);
        if (rc) break;
        started++;
    }
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    if (rc) {
        stop_and_join(p, started);
        snprintf(err, err_len, "thread pool: cannot create thread %d of %d: %s", started + 2,
                 n_threads, strerror(rc));
        pool_free(p);
        return NULL;
    }
    return p;
}

void sp_pool_destroy(sp_pool *p) {
    if (!p) return;
    stop_and_join(p, p->n - 1);
    pool_free(p);
}

int sp_pool_size(const sp_pool *p) { return p ? p->n : 0; }

void sp_pool_run(sp_pool *p, int64_t n_tasks, int max_workers, sp_pool_fn fn, void *arg) {
    if (n_tasks <= 0) return;
    int n = max_workers <= 0 || max_workers > p->n ? p->n : max_workers;
    if ((int64_t)n > n_tasks) n = (int)n_tasks;
    if (n == 1) {
        for (int64_t t = 0; t < n_tasks; t++) fn(arg, t, 0);
        return;
    }
    p->fn = fn;
    p->arg = arg;
    p->n_tasks = n_tasks;
    p->n_active = n;
    atomic_store_explicit(&p->next, 0, memory_order_relaxed);
    atomic_store_explicit(&p->pending, p->n - 1, memory_order_relaxed);
    publish(p);
    run_tasks(p, 0);
    int left = atomic_load_explicit(&p->pending, memory_order_acquire);
    for (int i = 0; i < SP_POOL_SPIN && left; i++) {
        SP_CPU_RELAX();
        left = atomic_load_explicit(&p->pending, memory_order_acquire);
    }
    if (left) {
        pthread_mutex_lock(&p->mu);
        while (atomic_load_explicit(&p->pending, memory_order_acquire))
            pthread_cond_wait(&p->done_cv, &p->mu);
        pthread_mutex_unlock(&p->mu);
    }
}
