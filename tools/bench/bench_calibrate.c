/* bench_calibrate - spectral-bench's roofline calibration (see bench_calibrate.h). */
#define _POSIX_C_SOURCE 200809L /* clock_gettime, pthread barriers */
#include "bench_calibrate.h"

#include "kernels/backend.h"

#include <cblas.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

/* U(-1, 1) from a small LCG: any non-degenerate values do for a timing. */
static void fill_pattern(float *p, size_t n, uint32_t seed) {
    uint32_t s = seed * 2654435761u + 1u;
    for (size_t i = 0; i < n; i++) {
        s = s * 1664525u + 1013904223u;
        p[i] = (float)(s >> 8) * (2.0f / 16777216.0f) - 1.0f;
    }
}

/* ------------------------------------------------------------ sgemm peak */

#define SGEMM_MIN_ROUNDS 3
#define SGEMM_MAX_ROUNDS 10
#define SGEMM_MIN_SECONDS 1.0

typedef struct {
    int64_t N;
    int n; /* threads taking part, the caller included */
    /* start gate: workers wait here until every thread exists (go = 1) or
     * one could not be created (go = -1); the barrier needs all n. */
    pthread_mutex_t mu;
    pthread_cond_t cv;
    int go;
    pthread_barrier_t bar;
    atomic_int failed;   /* a worker could not allocate its matrices */
    double *t0, *t1;     /* this round's start and end, per thread */
    int rounds, stop;    /* written by worker 0 between barriers */
    double elapsed, best;
} sgemm_calib;

typedef struct {
    sgemm_calib *c;
    int id;
} sgemm_arg;

/* Worker 0, between rounds: the round's aggregate rate, and whether to go on. */
static void sgemm_round_done(sgemm_calib *c) {
    double first = c->t0[0], last = c->t1[0];
    for (int i = 1; i < c->n; i++) {
        if (c->t0[i] < first) first = c->t0[i];
        if (c->t1[i] > last) last = c->t1[i];
    }
    const double dt = last - first;
    const double N = (double)c->N;
    const double g = dt > 0 ? (double)c->n * 2.0 * N * N * N / dt / 1e9 : 0;
    if (g > c->best) c->best = g;
    c->elapsed += dt;
    c->rounds++;
    c->stop = c->rounds >= SGEMM_MAX_ROUNDS ||
              (c->rounds >= SGEMM_MIN_ROUNDS && c->elapsed >= SGEMM_MIN_SECONDS);
}

static void sgemm_run(sgemm_calib *c, int id) {
    const int N = (int)c->N;
    const size_t nn = (size_t)N * (size_t)N;
    /* Each thread allocates and first-touches its own matrices (NUMA-local). */
    float *a = malloc(nn * sizeof(float));
    float *b = malloc(nn * sizeof(float));
    float *y = malloc(nn * sizeof(float));
    if (a && b && y) {
        fill_pattern(a, nn, 2u * (uint32_t)id);
        fill_pattern(b, nn, 2u * (uint32_t)id + 1u);
        memset(y, 0, nn * sizeof(float));
    } else {
        atomic_store(&c->failed, 1);
    }
    pthread_barrier_wait(&c->bar);
    if (!atomic_load(&c->failed)) {
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, N, N, N, 1.0f, a, N, b, N, 0.0f,
                    y, N); /* warm-up: pages, caches, BLAS buffers */
        for (;;) {
            pthread_barrier_wait(&c->bar); /* start together */
            c->t0[id] = now_s();
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, N, N, N, 1.0f, a, N, b, N,
                        0.0f, y, N);
            c->t1[id] = now_s();
            pthread_barrier_wait(&c->bar); /* all finished */
            if (id == 0) sgemm_round_done(c);
            pthread_barrier_wait(&c->bar); /* the decision is visible */
            if (c->stop) break;
        }
    }
    free(a);
    free(b);
    free(y);
}

static void *sgemm_worker(void *arg) {
    sgemm_arg *wa = arg;
    sgemm_calib *c = wa->c;
    pthread_mutex_lock(&c->mu);
    while (c->go == 0) pthread_cond_wait(&c->cv, &c->mu);
    const int go = c->go;
    pthread_mutex_unlock(&c->mu);
    if (go > 0) sgemm_run(c, wa->id);
    return NULL;
}

/* One N^3 sgemm on OpenBLAS's own n threads (best of 3 after a warm-up),
 * or 0 when the library is not threaded. Restores its thread count. */
static double sgemm_threaded(int64_t N, int n) {
    if (!openblas_get_parallel() || n < 2) return 0;
    const size_t nn = (size_t)N * (size_t)N;
    float *a = malloc(nn * sizeof(float)), *b = malloc(nn * sizeof(float)), *y = malloc(nn * sizeof(float));
    double best = 0;
    if (a && b && y) {
        fill_pattern(a, nn, 7u);
        fill_pattern(b, nn, 8u);
        const int prev = openblas_get_num_threads();
        openblas_set_num_threads(n);
        for (int r = 0; r < 4; r++) {
            const double t0 = now_s();
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, (int)N, (int)N, (int)N, 1.0f, a,
                        (int)N, b, (int)N, 0.0f, y, (int)N);
            const double dt = now_s() - t0, g = 2.0 * (double)N * N * N / dt / 1e9;
            if (r > 0 && g > best) best = g; /* r = 0 warms up */
        }
        openblas_set_num_threads(prev);
    }
    free(a);
    free(b);
    free(y);
    return best;
}

double bench_calib_sgemm(int64_t N, int n_threads) {
    if (N < 1 || N > 65536) return 0;
    const int n = n_threads > 0 ? n_threads : 1;
    sgemm_calib c;
    memset(&c, 0, sizeof c);
    c.N = N;
    c.n = n;
    atomic_init(&c.failed, 0);
    c.t0 = calloc((size_t)n, sizeof(double));
    c.t1 = calloc((size_t)n, sizeof(double));
    pthread_t *tid = calloc((size_t)n, sizeof *tid);
    sgemm_arg *args = calloc((size_t)n, sizeof *args);
    if (!c.t0 || !c.t1 || !tid || !args) {
        free(c.t0);
        free(c.t1);
        free(tid);
        free(args);
        return 0;
    }
    /* n threads calling one threaded OpenBLAS at once would share (or fight
     * over) its pool: make each call single-threaded, as our backend's are. */
    const int blas_prev = openblas_get_parallel() ? openblas_get_num_threads() : 0;
    if (blas_prev > 1) openblas_set_num_threads(1);

    pthread_mutex_init(&c.mu, NULL);
    pthread_cond_init(&c.cv, NULL);
    int created = 0; /* workers 1..created exist */
    for (int i = 1; i < n; i++) {
        args[i].c = &c;
        args[i].id = i;
        if (pthread_create(&tid[i], NULL, sgemm_worker, &args[i])) break;
        created = i;
    }
    const int all = created == n - 1;
    if (all) pthread_barrier_init(&c.bar, NULL, (unsigned)n);
    pthread_mutex_lock(&c.mu);
    c.go = all ? 1 : -1;
    pthread_cond_broadcast(&c.cv);
    pthread_mutex_unlock(&c.mu);
    if (all) sgemm_run(&c, 0);
    for (int i = 1; i <= created; i++) pthread_join(tid[i], NULL);
    if (all) pthread_barrier_destroy(&c.bar);
    pthread_cond_destroy(&c.cv);
    pthread_mutex_destroy(&c.mu);

    if (blas_prev > 1) openblas_set_num_threads(blas_prev);
    double best = all && !atomic_load(&c.failed) ? c.best : 0;
    free(c.t0);
    free(c.t1);
    free(tid);
    free(args);
    /* A threaded OpenBLAS shares one packed panel among its threads and can
     * beat n independent sgemms (measured here: 172 vs 99 GFLOP/s on 2
     * cores). The peak is the better of the two, so %peak never flatters. */
    const double threaded = sgemm_threaded(N, n);
    return threaded > best ? threaded : best;
}

/* ------------------------------------------------------------ memory bandwidth */

typedef struct {
    char *dst;
    const char *src;
    size_t n;
} copy_job;

static void *copy_worker(void *arg) {
    copy_job *j = arg;
    memcpy(j->dst, j->src, j->n);
    return NULL;
}

double bench_calib_memcpy(size_t bytes, int n_threads) {
    char *src = malloc(bytes), *dst = malloc(bytes);
    double best = 0;
    if (src && dst) {
        memset(src, 1, bytes);
        memset(dst, 2, bytes);
        int threads = n_threads < 1 ? 1 : n_threads > 64 ? 64 : n_threads;
        pthread_t tid[64];
        copy_job jobs[64];
        size_t chunk = bytes / (size_t)threads / 4096 * 4096;
        for (int rep = 0; rep < 5; rep++) {
            double t0 = now_s();
            int started = 0; /* workers 0..started-1 run in threads, the rest here */
            for (int i = 0; i < threads; i++) {
                size_t off = (size_t)i * chunk;
                jobs[i].dst = dst + off;
                jobs[i].src = src + off;
                jobs[i].n = i == threads - 1 ? bytes - off : chunk;
            }
            for (int i = 0; i < threads - 1; i++) {
                if (pthread_create(&tid[i], NULL, copy_worker, &jobs[i])) break;
                started = i + 1;
            }
            for (int i = started; i < threads; i++) copy_worker(&jobs[i]);
            for (int i = 0; i < started; i++) pthread_join(tid[i], NULL);
            double dt = now_s() - t0;
            double g = 2.0 * (double)bytes / dt / 1e9;
            if (g > best) best = g;
        }
    }
    free(src);
    free(dst);
    return best;
}

/* ------------------------------------------------------------ backend linear */

double bench_calib_linear(sp_backend *be, int64_t N) {
    size_t bytes = (size_t)(N * N) * sizeof(float);
    float *h = malloc(bytes);
    float *x = be->ops->buffer_alloc(be, bytes);
    float *w = be->ops->buffer_alloc(be, bytes);
    float *y = be->ops->buffer_alloc(be, bytes);
    double best = 0;
    if (h && x && w && y) {
        fill_pattern(h, (size_t)(N * N), 0);
        if (!be->ops->upload(be, x, h, bytes) && !be->ops->upload(be, w, h, bytes)) {
            be->ops->linear(be, x, w, NULL, N, N, N, SP_ACT_NONE, 0, y);
            be->ops->synchronize(be);
            for (int i = 0; i < 5; i++) {
                double t0 = now_s();
                for (int k = 0; k < 4; k++) be->ops->linear(be, x, w, NULL, N, N, N, SP_ACT_NONE, 0, y);
                if (be->ops->synchronize(be)) break;
                double dt = now_s() - t0;
                double g = 4 * 2.0 * (double)N * N * N / dt / 1e9;
                if (g > best) best = g;
            }
        }
    }
    free(h);
    if (x) be->ops->buffer_free(be, x);
    if (w) be->ops->buffer_free(be, w);
    if (y) be->ops->buffer_free(be, y);
    return best;
}
