/* A small fork-join thread pool: the only threads the CPU backend uses.
 *
 * Why our own: OpenMP workers and a threaded BLAS each keep a pool and spin
 * while the other works, so on a busy machine they fight for the same cores
 * (measured 2-7x slower); libgomp also calls exit() when it cannot create a
 * thread. Here BLAS runs single-threaded inside our tasks, every wait blocks
 * after a short spin, and a thread that cannot be created is an error the
 * caller gets back.
 *
 * Determinism: a job is a list of tasks whose outputs do not depend on which
 * thread runs them, so results are identical for any thread count as long as
 * the caller cuts the work into tasks independently of the thread count.
 *
 * One pool belongs to one backend, used by one thread at a time. */
#ifndef SP_THREADPOOL_H
#define SP_THREADPOOL_H

#include <stddef.h>
#include <stdint.h>

typedef struct sp_pool sp_pool;

/* fn runs task `task` on worker `worker` (0 = the calling thread, then
 * 1..n_workers-1): per-worker scratch is indexed by worker. */
typedef void (*sp_pool_fn)(void *arg, int64_t task, int worker);

/* Starts n_threads - 1 worker threads (the caller is the n-th). Returns NULL
 * with a message in err when a thread cannot be created; nothing is left
 * running then. */
sp_pool *sp_pool_create(int n_threads, char *err, size_t err_len);
void sp_pool_destroy(sp_pool *pool);
int sp_pool_size(const sp_pool *pool);

/* Runs fn for every task in [0, n_tasks) on at most max_workers threads
 * (caller included; <= 0 means all), handing tasks out in order as threads
 * free up, and returns when all have finished. */
void sp_pool_run(sp_pool *pool, int64_t n_tasks, int max_workers, sp_pool_fn fn, void *arg);

#endif
