/* The CPU backend: host memory, FFTW3f for the mixing, OpenBLAS for the
 * GEMMs, and one thread pool of its own for all parallel work.
 *
 * Threading: each backend owns a pool of n_threads (kernels/cpu/threadpool.h)
 * and cuts every op into tasks of fixed size; BLAS is called single-threaded
 * inside the tasks. OpenBLAS has no per-call thread count, so creating a
 * backend sets its process-wide count to 1 (spectral.h documents it): two
 * pools on the same cores only fight. Its serial build would avoid that, but
 * Debian's (0.3.21) gives wrong results when called from several threads at
 * once (measured), while the threaded build at one thread does not.
 *
 * The ops live in three files: this one (memory, rows, LayerNorm, add,
 * pooling), linear_cpu.c (GEMMs and the fused MLP), mix_cpu.c (FFTs); the
 * packed weights and their kernels in packed_cpu.c and gemm_*.c. */
#define _DEFAULT_SOURCE /* sysconf, MAP_ANONYMOUS */
#include <cblas.h>
/* OpenBLAS's cblas.h pulls in <complex.h>; keep fftwf_complex a float[2]. */
#define FFTW_NO_Complex
#include <fftw3.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "kernels/cpu/cpu_internal.h"

/* Rows per task of the memory-bound row ops. */
#define SP_ROWS_PER_TASK 256

void sp_cpu_set_err(sp_backend *be, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(be->err, sizeof be->err, fmt, ap);
    va_end(ap);
}

int sp_cpu_slots(const sp_backend *be, int64_t n_tasks) {
    int n = be->n_threads;
    if (be->max_parallel > 0 && be->max_parallel < n) n = be->max_parallel;
    if ((int64_t)n > n_tasks) n = (int)n_tasks;
    return n < 1 ? 1 : n;
}

static int64_t row_tasks(int64_t T) { return (T + SP_ROWS_PER_TASK - 1) / SP_ROWS_PER_TASK; }

/* ------------------------------------------------------------------ memory */

/* Buffers of 1 MiB and more (arenas, weights) get a mapping of their own:
 * freed, they go back to the system at once. From the heap, an arena that
 * grows pass after pass would leave its old blocks behind as fragmentation
 * (measured: +4.5 MiB of RSS over 10,000 documents of distinct lengths).
 * The size sits just before the pointer: 0 for a heap block. Sanitizer
 * builds keep the heap, where ASan sees overruns. */
#define SP_CPU_MAP_MIN ((size_t)1 << 20)
#define SP_CPU_MAP_HEADER ((size_t)4096)
#define SP_CPU_HEAP_HEADER ((size_t)256)

static void *cpu_buffer_alloc(sp_backend *be, size_t bytes) {
    /* aligned_alloc wants a multiple of the alignment and a non-zero size. */
    size_t n = (bytes + 255) / 256 * 256;
    if (n == 0) n = 256;
    if (n < bytes || n > SIZE_MAX - SP_CPU_MAP_HEADER) {
        sp_cpu_set_err(be, "cpu: allocation of %zu bytes overflows", bytes);
        return NULL;
    }
#if !defined(__SANITIZE_ADDRESS__) && !defined(__SANITIZE_THREAD__)
    if (n >= SP_CPU_MAP_MIN) {
        const size_t total = n + SP_CPU_MAP_HEADER;
        char *m = mmap(NULL, total, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
        if (m == MAP_FAILED) {
            sp_cpu_set_err(be, "cpu: out of memory allocating %zu bytes", bytes);
            return NULL;
        }
        ((size_t *)(m + SP_CPU_MAP_HEADER))[-1] = total;
        return m + SP_CPU_MAP_HEADER;
    }
#endif
    char *p = aligned_alloc(256, n + SP_CPU_HEAP_HEADER);
    if (!p) {
        sp_cpu_set_err(be, "cpu: out of memory allocating %zu bytes", bytes);
        return NULL;
    }
    ((size_t *)(p + SP_CPU_HEAP_HEADER))[-1] = 0;
    return p + SP_CPU_HEAP_HEADER;
}

static void cpu_buffer_free(sp_backend *be, void *p) {
    (void)be;
    if (!p) return;
    const size_t mapped = ((size_t *)p)[-1];
    if (mapped) munmap((char *)p - SP_CPU_MAP_HEADER, mapped);
    else free((char *)p - SP_CPU_HEAP_HEADER);
}

static int cpu_upload(sp_backend *be, void *dst, const void *src, size_t bytes) {
    if (bytes && (!dst || !src)) {
        sp_cpu_set_err(be, "cpu: upload with a NULL pointer");
        return 1;
    }
    if (bytes) memmove(dst, src, bytes);
    return 0;
}

static int cpu_download(sp_backend *be, void *dst, const void *src, size_t bytes) {
    if (bytes && (!dst || !src)) {
        sp_cpu_set_err(be, "cpu: download with a NULL pointer");
        return 1;
    }
    if (bytes) memmove(dst, src, bytes);
    return 0;
}

static int cpu_synchronize(sp_backend *be) {
    (void)be;
    return 0;
}

/* --------------------------------------------------------------- get_rows */

typedef struct {
    const float *table;
    const int32_t *ids;
    int64_t T, D;
    float *out;
} rows_job;

static void get_rows_task(void *arg, int64_t task, int worker) {
    (void)worker;
    const rows_job *j = arg;
    const int64_t t1 = (task + 1) * SP_ROWS_PER_TASK < j->T ? (task + 1) * SP_ROWS_PER_TASK : j->T;
    for (int64_t t = task * SP_ROWS_PER_TASK; t < t1; t++)
        memcpy(j->out + t * j->D, j->table + (int64_t)j->ids[t] * j->D, (size_t)j->D * sizeof(float));
}

static int cpu_get_rows(sp_backend *be, const float *table, int64_t D, const int32_t *ids,
                        int64_t T, float *out) {
    if (T < 0 || D < 0) {
        sp_cpu_set_err(be, "cpu get_rows: negative shape T=%lld D=%lld", (long long)T, (long long)D);
        return 1;
    }
    if (T == 0 || D == 0) return 0;
    if (!table || !ids || !out) {
        sp_cpu_set_err(be, "cpu get_rows: NULL argument");
        return 1;
    }
    /* The vocabulary size is unknown here (the caller checked ids < V); a
     * negative id is still caught rather than read before the table. */
    for (int64_t t = 0; t < T; t++) {
        if (ids[t] < 0) {
            sp_cpu_set_err(be, "cpu get_rows: negative id %d at row %lld", (int)ids[t], (long long)t);
            return 1;
        }
    }
    rows_job j = {table, ids, T, D, out};
    sp_pool_run(sp_cpu_pool(be), row_tasks(T), sp_cpu_slots(be, row_tasks(T)), get_rows_task, &j);
    return 0;
}

/* ------------------------------------------------------------- layer_norm */

typedef struct {
    const float *x, *w, *b;
    float eps;
    int64_t T, D;
    float *out;
} ln_job;

static void layer_norm_task(void *arg, int64_t task, int worker) {
    (void)worker;
    const ln_job *j = arg;
    const int64_t t1 = (task + 1) * SP_ROWS_PER_TASK < j->T ? (task + 1) * SP_ROWS_PER_TASK : j->T;
    for (int64_t t = task * SP_ROWS_PER_TASK; t < t1; t++)
        sp_cpu_layer_norm_row(j->x + t * j->D, j->w, j->b, j->eps, j->D, j->out + t * j->D);
}

static int cpu_layer_norm(sp_backend *be, const float *x, const float *w, const float *b,
                          float eps, int64_t T, int64_t D, float *out) {
    if (T < 0 || D <= 0) {
        if (T == 0) return 0;
        sp_cpu_set_err(be, "cpu layer_norm: bad shape T=%lld D=%lld", (long long)T, (long long)D);
        return 1;
    }
    if (T == 0) return 0;
    if (!x || !w || !b || !out) {
        sp_cpu_set_err(be, "cpu layer_norm: NULL argument");
        return 1;
    }
    ln_job j = {x, w, b, eps, T, D, out};
    sp_pool_run(sp_cpu_pool(be), row_tasks(T), sp_cpu_slots(be, row_tasks(T)), layer_norm_task, &j);
    return 0;
}

/* -------------------------------------------------------------------- add */

#define SP_ADD_CHUNK (INT64_C(1) << 16)

typedef struct {
    const float *x;
    float *y;
    int64_t n;
} add_job;

static void add_task(void *arg, int64_t task, int worker) {
    (void)worker;
    const add_job *j = arg;
    const int64_t i1 = (task + 1) * SP_ADD_CHUNK < j->n ? (task + 1) * SP_ADD_CHUNK : j->n;
    for (int64_t i = task * SP_ADD_CHUNK; i < i1; i++) j->y[i] += j->x[i];
}

static int cpu_add(sp_backend *be, const float *x, int64_t n, float *y) {
    if (n < 0 || (n > 0 && (!x || !y))) {
        sp_cpu_set_err(be, "cpu add: bad arguments (n=%lld)", (long long)n);
        return 1;
    }
    add_job j = {x, y, n};
    const int64_t n_tasks = (n + SP_ADD_CHUNK - 1) / SP_ADD_CHUNK;
    sp_pool_run(sp_cpu_pool(be), n_tasks, sp_cpu_slots(be, n_tasks), add_task, &j);
    return 0;
}

/* ---------------------------------------------------------------- add_row */

typedef struct {
    const float *row;
    int64_t T, D;
    float *y;
} add_row_job;

static void add_row_task(void *arg, int64_t task, int worker) {
    (void)worker;
    const add_row_job *j = arg;
    const int64_t t1 = (task + 1) * SP_ROWS_PER_TASK < j->T ? (task + 1) * SP_ROWS_PER_TASK : j->T;
    for (int64_t t = task * SP_ROWS_PER_TASK; t < t1; t++)
        for (int64_t d = 0; d < j->D; d++) j->y[t * j->D + d] += j->row[d];
}

static int cpu_add_row(sp_backend *be, const float *row, int64_t T, int64_t D, float *y) {
    if (T < 0 || D < 0 || ((T > 0 && D > 0) && (!row || !y))) {
        sp_cpu_set_err(be, "cpu add_row: bad arguments (T=%lld D=%lld)", (long long)T, (long long)D);
        return 1;
    }
    add_row_job j = {row, T, D, y};
    sp_pool_run(sp_cpu_pool(be), row_tasks(T), sp_cpu_slots(be, row_tasks(T)), add_row_task, &j);
    return 0;
}

/* ------------------------------------------------------------------- pool */

/* Mean pooling sums fixed row chunks in parallel, then adds the chunk sums
 * in chunk order: the same additions for any thread count. */
typedef struct {
    const float *x;
    int64_t T, D;
    double *partial; /* n_chunks x D */
} mean_job;

static void mean_task(void *arg, int64_t task, int worker) {
    (void)worker;
    const mean_job *j = arg;
    double *acc = j->partial + task * j->D;
    const int64_t t1 = (task + 1) * SP_ROWS_PER_TASK < j->T ? (task + 1) * SP_ROWS_PER_TASK : j->T;
    for (int64_t d = 0; d < j->D; d++) acc[d] = 0.0;
    for (int64_t t = task * SP_ROWS_PER_TASK; t < t1; t++) {
        const float *xr = j->x + t * j->D;
        for (int64_t d = 0; d < j->D; d++) acc[d] += xr[d];
    }
}

static int cpu_pool(sp_backend *be, const float *x, int64_t T, int64_t D, sp_pool_op op,
                    float *out_host) {
    if (T <= 0 || D < 0) {
        sp_cpu_set_err(be, "cpu pool: bad shape T=%lld D=%lld", (long long)T, (long long)D);
        return 1;
    }
    if (D == 0) return 0;
    if (!x || !out_host) {
        sp_cpu_set_err(be, "cpu pool: NULL argument");
        return 1;
    }
    switch (op) {
    case SP_POOL_FIRST:
        memcpy(out_host, x, (size_t)D * sizeof(float));
        return 0;
    case SP_POOL_LAST:
        memcpy(out_host, x + (T - 1) * D, (size_t)D * sizeof(float));
        return 0;
    case SP_POOL_MEAN: {
        const int64_t n_chunks = row_tasks(T);
        double *partial = malloc((size_t)(n_chunks * D) * sizeof(double));
        if (!partial) {
            sp_cpu_set_err(be, "cpu pool: out of memory");
            return 1;
        }
        mean_job j = {x, T, D, partial};
        sp_pool_run(sp_cpu_pool(be), n_chunks, sp_cpu_slots(be, n_chunks), mean_task, &j);
        for (int64_t c = 1; c < n_chunks; c++)
            for (int64_t d = 0; d < D; d++) partial[d] += partial[c * D + d];
        for (int64_t d = 0; d < D; d++) out_host[d] = (float)(partial[d] / (double)T);
        free(partial);
        return 0;
    }
    }
    sp_cpu_set_err(be, "cpu pool: unknown op %d", (int)op);
    return 1;
}

/* ---------------------------------------------------------------- create */

static void cpu_destroy(sp_backend *be) {
    if (!be) return;
    sp_cpu_impl *impl = be->impl;
    if (impl) sp_pool_destroy(impl->pool);
    free(impl);
    free(be);
}

static size_t cpu_fourier2d_workspace_size(sp_backend *be, int64_t T, int64_t D) {
    (void)be;
    return sp_cpu_fourier2d_workspace(T, D);
}

static const sp_backend_ops sp_cpu_ops = {
    .name = "cpu",
    .destroy = cpu_destroy,
    .buffer_alloc = cpu_buffer_alloc,
    .buffer_free = cpu_buffer_free,
    .upload = cpu_upload,
    .download = cpu_download,
    .synchronize = cpu_synchronize,
    .get_rows = cpu_get_rows,
    .layer_norm = cpu_layer_norm,
    .linear = sp_cpu_linear,
    .mix_workspace_size = sp_cpu_mix_workspace_size,
    .spectral_mix = sp_cpu_spectral_mix,
    .pool = cpu_pool,
    .fourier2d_workspace_size = cpu_fourier2d_workspace_size,
    .fourier2d_real = sp_cpu_fourier2d_real,
    .add = cpu_add,
    .mix_block_workspace_size = sp_cpu_mix_block_workspace_size,
    .mix_block = sp_cpu_mix_block,
    .ffn_block_workspace_size = sp_cpu_ffn_block_workspace_size,
    .ffn_block = sp_cpu_ffn_block,
    .external_memory = sp_cpu_external_memory,
    .dequantize_rows = sp_cpu_dequantize_rows,
    .packed_size = sp_cpu_packed_size,
    .pack_weight = sp_cpu_pack_weight,
    .packed_free = sp_cpu_packed_free,
    .linear_packed_workspace_size = sp_cpu_linear_packed_workspace_size,
    .linear_packed = sp_cpu_linear_packed,
    .ffn_block_packed_workspace_size = sp_cpu_ffn_block_packed_workspace_size,
    .ffn_block_packed = sp_cpu_ffn_block_packed,
    .add_row = cpu_add_row,
    .hyena_spectrum_size = sp_cpu_hyena_spectrum_size,
    .hyena_filter_workspace_size = sp_cpu_hyena_filter_workspace_size,
    .hyena_filter = sp_cpu_hyena_filter,
    .hyena_mix_workspace_size = sp_cpu_hyena_mix_workspace_size,
    .hyena_mix = sp_cpu_hyena_mix,
    .glu_ffn_block_workspace_size = sp_cpu_glu_ffn_block_workspace_size,
    .glu_ffn_block = sp_cpu_glu_ffn_block,
    .glu_ffn_block_packed_workspace_size = sp_cpu_glu_ffn_block_packed_workspace_size,
    .glu_ffn_block_packed = sp_cpu_glu_ffn_block_packed,
};

void sp_cpu_set_kernel_level(sp_backend *be, sp_kernel_level level) {
    ((sp_cpu_impl *)be->impl)->kernels = level;
}

/* A threaded OpenBLAS would run a second pool under ours: one thread. */
static void blas_single_threaded(void) {
    if (openblas_get_parallel() != 0 && openblas_get_num_threads() != 1) openblas_set_num_threads(1);
}

sp_backend *sp_backend_cpu_create(int n_threads, char *err, size_t err_len) {
    if (n_threads < 0) {
        if (err && err_len) snprintf(err, err_len, "cpu: n_threads must be >= 0, got %d", n_threads);
        return NULL;
    }
    if (n_threads == 0) {
        long n = sysconf(_SC_NPROCESSORS_ONLN);
        n_threads = n > 0 ? (n > 1024 ? 1024 : (int)n) : 1;
    }
    blas_single_threaded();
    sp_backend *be = calloc(1, sizeof *be);
    sp_cpu_impl *impl = calloc(1, sizeof *impl);
    char perr[256] = "";
    if (be && impl) impl->pool = sp_pool_create(n_threads, perr, sizeof perr);
    if (!be || !impl || !impl->pool) {
        free(be);
        free(impl);
        if (err && err_len)
            snprintf(err, err_len, "cpu: %s", perr[0] ? perr : "out of memory creating the backend");
        return NULL;
    }
    /* Documents arrive with many lengths: estimating is cheap, measuring
     * costs tens of ms per new length but can give faster plans. */
    const char *ms = getenv("SPECTRAL_FFTW_MEASURE");
    impl->fft_flags = (ms && ms[0] == '1') ? FFTW_MEASURE : FFTW_ESTIMATE;
    impl->kernels = sp_cpu_kernel_cap();
    impl->tile = SP_MIX_TILE_DEFAULT;
    const char *ts = getenv("SPECTRAL_CPU_MIX_TILE");
    if (ts) {
        int v = atoi(ts);
        if (v >= 1 && v <= SP_MIX_TILE_MAX) impl->tile = v;
    }
    be->ops = &sp_cpu_ops;
    be->host_memory = 1;
    be->n_threads = n_threads;
    be->impl = impl;
    return be;
}
