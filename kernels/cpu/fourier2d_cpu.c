/* FNet's token mixing on the CPU: out = Re(FFT2(x)) over (sequence, hidden).
 *
 * One FFTW 2-D real-to-complex transform of the contiguous row-major T x D
 * array gives Y[t][k] = X[t][k] for k <= D/2. The other half follows from
 * Hermitian symmetry of the transform of a real array,
 *     X[t][k] = conj(X[(T - t) % T][D - k]),
 * so Re X[t][k] = Re Y[(T - t) % T][D - k] for k > D/2.
 *
 * Plans: one per (T, D, flags), made once under the same process-wide mutex
 * that kernels/cpu/mix_cpu.c holds while it plans (FFTW's planner is not
 * thread-safe, whichever op plans), kept for the life of the process and
 * executed with the new-array interface, which is thread-safe. */
#include "kernels/cpu/cpu_internal.h"

/* As in mix_cpu.c: fftwf_complex stays a float[2]. */
#define FFTW_NO_Complex
#include <fftw3.h>
#include <limits.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Alignment of the complex half-spectrum in the workspace (and of the
 * scratch the plans are made on). */
#define SP_F2D_ALIGN 64

/* Rows per task of the Hermitian expansion below. */
#define SP_F2D_ROWS 64

typedef struct {
    const fftwf_complex *c;
    float *out;
    int64_t T, D, nc;
} f2d_expand_job;

/* Re of the full spectrum from the half one: bins past D/2 mirror row T-t. */
static void f2d_expand_task(void *arg, int64_t task, int worker) {
    (void)worker;
    const f2d_expand_job *j = arg;
    const int64_t T = j->T, D = j->D, nc = j->nc;
    const int64_t t1 = (task + 1) * SP_F2D_ROWS < T ? (task + 1) * SP_F2D_ROWS : T;
    for (int64_t t = task * SP_F2D_ROWS; t < t1; t++) {
        const fftwf_complex *row = j->c + t * nc;
        const fftwf_complex *mirror = j->c + ((T - t) % T) * nc;
        float *o = j->out + t * D;
        for (int64_t k = 0; k < nc; k++) o[k] = row[k][0];
        for (int64_t k = nc; k < D; k++) o[k] = mirror[D - k][0];
    }
}

int sp_cpu_fourier2d_real(sp_backend *be, const float *x, int64_t T, int64_t D, void *workspace,
                          float *out);

typedef struct sp_f2d_plan {
    struct sp_f2d_plan *next;
    int64_t T, D;
    unsigned flags;
    fftwf_plan r2c;
} sp_f2d_plan;

static sp_f2d_plan *sp_f2d_plans; /* guarded by sp_fft_mutex */

static unsigned sp_f2d_base_flags(void) {
    /* As backend_cpu.c: estimate unless measuring is asked for. */
    const char *m = getenv("SPECTRAL_FFTW_MEASURE");
    return (m && m[0] == '1') ? FFTW_MEASURE : FFTW_ESTIMATE;
}

static const sp_f2d_plan *sp_f2d_get(int64_t T, int64_t D, unsigned flags, char *err,
                                     size_t err_len) {
    const sp_f2d_plan *found = NULL;
    pthread_mutex_lock(&sp_fft_mutex);
    for (sp_f2d_plan *p = sp_f2d_plans; p; p = p->next)
        if (p->T == T && p->D == D && p->flags == flags) {
            found = p;
            break;
        }
    if (!found) {
        const int64_t nc = D / 2 + 1;
        sp_f2d_plan *p = calloc(1, sizeof *p);
        /* Private scratch: FFTW_MEASURE overwrites its arrays. */
        float *r = fftwf_malloc((size_t)(T * D) * sizeof(float) + SP_F2D_ALIGN);
        fftwf_complex *c = fftwf_malloc((size_t)(T * nc) * sizeof(fftwf_complex) + SP_F2D_ALIGN);
        if (p && r && c) {
            float *ra = (float *)(((uintptr_t)r + SP_F2D_ALIGN - 1) & ~(uintptr_t)(SP_F2D_ALIGN - 1));
            fftwf_complex *ca = (fftwf_complex *)(((uintptr_t)c + SP_F2D_ALIGN - 1) &
                                                  ~(uintptr_t)(SP_F2D_ALIGN - 1));
            p->T = T;
            p->D = D;
            p->flags = flags;
            p->r2c = fftwf_plan_dft_r2c_2d((int)T, (int)D, ra, ca, flags | FFTW_PRESERVE_INPUT);
            if (p->r2c) {
                p->next = sp_f2d_plans;
                sp_f2d_plans = p;
                found = p;
            } else {
                snprintf(err, err_len, "cpu fourier2d_real: FFTW could not plan %lld x %lld",
                         (long long)T, (long long)D);
                free(p);
            }
        } else {
            snprintf(err, err_len, "cpu fourier2d_real: out of memory planning %lld x %lld",
                     (long long)T, (long long)D);
            free(p);
        }
        fftwf_free(r);
        fftwf_free(c);
    }
    pthread_mutex_unlock(&sp_fft_mutex);
    return found;
}

size_t sp_cpu_fourier2d_workspace(int64_t T, int64_t D) {
    if (T <= 0 || D <= 0 || T > INT_MAX || D > INT_MAX) return 0;
    /* The half spectrum plus slack to align it whatever the caller gives. */
    return (size_t)T * (size_t)(D / 2 + 1) * sizeof(fftwf_complex) + SP_F2D_ALIGN;
}

int sp_cpu_fourier2d_real(sp_backend *be, const float *x, int64_t T, int64_t D, void *workspace,
                          float *out) {
    if (T < 0 || D < 0 || T > INT_MAX || D > INT_MAX || (T > 0 && D > 0 && T > INT_MAX / D)) {
        snprintf(be->err, sizeof be->err, "cpu fourier2d_real: bad shape T=%lld D=%lld",
                 (long long)T, (long long)D);
        return 1;
    }
    if (T == 0 || D == 0) return 0;
    if (!x || !out || !workspace) {
        snprintf(be->err, sizeof be->err, "cpu fourier2d_real: NULL argument");
        return 1;
    }
    const int64_t nc = D / 2 + 1;
    if ((const char *)x < (const char *)(out + T * D) && (const char *)out < (const char *)(x + T * D)) {
        snprintf(be->err, sizeof be->err, "cpu fourier2d_real: out must not alias x");
        return 1;
    }
    fftwf_complex *c = (fftwf_complex *)(((uintptr_t)workspace + SP_F2D_ALIGN - 1) &
                                         ~(uintptr_t)(SP_F2D_ALIGN - 1));
    /* New-array execution needs the planning alignment; the arena gives
     * 256-byte blocks, anything else gets an unaligned (non-SIMD) plan. */
    unsigned flags = sp_f2d_base_flags();
    if (fftwf_alignment_of((float *)x) != 0) flags |= FFTW_UNALIGNED;
    char perr[256] = "";
    const sp_f2d_plan *p = sp_f2d_get(T, D, flags, perr, sizeof perr);
    if (!p) {
        snprintf(be->err, sizeof be->err, "%s", perr);
        return 1;
    }
    /* FFTW_PRESERVE_INPUT: x is only read. */
    fftwf_execute_dft_r2c(p->r2c, (float *)x, c);
    f2d_expand_job j = {c, out, T, D, nc};
    const int64_t n_tasks = (T + SP_F2D_ROWS - 1) / SP_F2D_ROWS;
    sp_pool_run(sp_cpu_pool(be), n_tasks, sp_cpu_slots(be, n_tasks), f2d_expand_task, &j);
    return 0;
}
