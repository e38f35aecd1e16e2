/* FNet's token mixing on the GPU: fourier2d_real, out = Re(FFT2(x)). */
#include "kernels/cuda/cuda_internal.cuh"

#include <stdint.h>
#include <stdio.h>

/* FNet's 2-D Fourier mixing: out = Re(FFT2(x)) over (sequence, hidden).
 * One cuFFT 2-D real-to-complex transform of the row-major T x D array gives
 * Y[t][k] for k <= D/2 (T x (D/2+1) complex, in the workspace); k_f2d_expand
 * fills the other half from Hermitian symmetry, Re X[t][k] = Re Y[(T-t)%T][D-k],
 * as kernels/cpu/fourier2d_cpu.c does. cuFFT's work area comes from the
 * workspace too, so the arena accounts for every byte. When T or D is 1 the
 * 2-D transform is the 1-D one of the n = T * D vector, planned as such (no
 * degenerate dimension handed to cuFFT): Re X[i] = Re Z[min(i, n - i)]. */
__global__ void k_f2d_expand(const float2 *__restrict__ Y, int64_t T, int64_t D,
                             float *__restrict__ out) {
    const int64_t nc = D / 2 + 1;
    ROWS_COLS(t, k, T, D) {
        const int64_t tm = t == 0 ? 0 : T - t;
        out[t * D + k] = k < nc ? Y[t * nc + k].x : Y[tm * nc + (D - k)].x;
    }
}

__global__ void k_f2d_expand_1d(const float2 *__restrict__ Z, int64_t n, float *__restrict__ out) {
    GRID_STRIDE(i, n) { out[i] = Z[i <= n / 2 ? i : n - i].x; }
}

static void drop_f2d(struct cuda_impl *im, struct f2d_plan *p) {
    cufftDestroy(p->r2c);
    im->f2d_elems -= p->T * p->D;
    p->valid = 0;
}

void sp_cuda_f2d_release(struct cuda_impl *im) {
    for (int i = 0; i < F2D_PLAN_CACHE; i++)
        if (im->f2d[i].valid) drop_f2d(im, &im->f2d[i]);
}

/* Cached 2-D plan for (T, D), LRU (F2D_PLAN_CACHE entries, PLAN_CACHE_ELEMS
 * summed T x D); NULL + err on failure. A hit does not synchronize. */
static struct f2d_plan *get_f2d_plan(sp_backend *be, int64_t T, int64_t D) {
    struct cuda_impl *im = IMPL(be);
    for (int i = 0; i < F2D_PLAN_CACHE; i++) {
        struct f2d_plan *q = &im->f2d[i];
        if (q->valid && q->T == T && q->D == D) {
            q->used = ++im->clock;
            return q;
        }
    }
    struct f2d_plan *p;
    int synced = 0;
    for (;;) {
        struct f2d_plan *lru = NULL;
        p = NULL;
        for (int i = 0; i < F2D_PLAN_CACHE; i++) {
            struct f2d_plan *q = &im->f2d[i];
            if (!q->valid) p = p ? p : q;
            else if (!lru || q->used < lru->used) lru = q;
        }
        if (p && (im->f2d_elems + T * D <= PLAN_CACHE_ELEMS || !lru)) break;
        if (!synced) { /* the plan may still be in use by queued work */
            if (sp_cuda_evict_sync(be)) return NULL;
            synced = 1;
        }
        drop_f2d(im, lru);
    }
    cufftHandle h = 0;
    cufftResult r;
    size_t work = 0;
    const int rank = (T == 1 || D == 1) ? 1 : 2;
    long long n[2] = {(long long)T, (long long)D};
    if (rank == 1) n[0] = (long long)(T * D);
    const char *what;
    if ((r = sp_cuda_make_plan(im->stream, rank, n, NULL, 1, 0, NULL, 1, 0, CUFFT_R2C, 1, &h, &work,
                               &what)) != CUFFT_SUCCESS) {
        sp_cuda_set_err(be, "cuda fourier2d_real: %s failed for T=%lld D=%lld (rank %d): %s (%d)",
                        what, (long long)T, (long long)D, rank, sp_cuda_cufft_str(r), (int)r);
        return NULL;
    }
    p->valid = 1;
    p->used = ++im->clock;
    p->T = T;
    p->D = D;
    p->r2c = h;
    p->work = work;
    im->f2d_elems += T * D;
    return p;
}

static size_t f2d_spec_bytes(int64_t T, int64_t D) {
    return align_up((size_t)T * (size_t)(D / 2 + 1) * sizeof(float2));
}

size_t sp_cuda_fourier2d_workspace_size(sp_backend *be, int64_t T, int64_t D) {
    if (T <= 0 || D <= 0) return 0;
    if (T * D == 1) return f2d_spec_bytes(1, 1); /* unused: a copy, no plan */
    /* A failure is reported by fourier2d_real; size the spectrum (and as
     * much again for cuFFT's work) anyway: never 0. */
    if (sp_cuda_enter(be)) return 2 * f2d_spec_bytes(T, D);
    struct f2d_plan *p = get_f2d_plan(be, T, D);
    return f2d_spec_bytes(T, D) + (p ? align_up(p->work) : f2d_spec_bytes(T, D));
}

int sp_cuda_fourier2d_real(sp_backend *be, const float *x, int64_t T, int64_t D, void *ws,
                           float *out) {
    /* the CPU op's checks, in its order */
    if (T < 0 || D < 0 || T > INT32_MAX || D > INT32_MAX)
        return sp_cuda_set_err(be, "cuda fourier2d_real: bad shape T=%lld D=%lld", (long long)T,
                               (long long)D);
    if (T == 0 || D == 0) return 0;
    if (!x || !ws || !out) return sp_cuda_set_err(be, "cuda fourier2d_real: NULL argument");
    if ((const char *)x < (const char *)(out + T * D) &&
        (const char *)out < (const char *)(x + T * D))
        return sp_cuda_set_err(be, "cuda fourier2d_real: out must not alias x");
    if (sp_cuda_enter(be)) return -1;
    struct cuda_impl *im = IMPL(be);
    if (T * D == 1) { /* the DFT of one value is itself */
        CU_CHECK(be, cudaMemcpyAsync(out, x, sizeof(float), cudaMemcpyDeviceToDevice, im->stream));
        return 0;
    }
    struct f2d_plan *p = get_f2d_plan(be, T, D);
    if (!p) return -1;
    float2 *spec = (float2 *)ws;
    void *work = (char *)ws + f2d_spec_bytes(T, D);
    FFT_CHECK(be, cufftSetWorkArea(p->r2c, work));
    /* An out-of-place R2C leaves its input intact (only C2R overwrites it). */
    FFT_CHECK(be, cufftExecR2C(p->r2c, (cufftReal *)x, (cufftComplex *)spec));
    if (T == 1 || D == 1)
        k_f2d_expand_1d<<<grid_for(T * D, 256), 256, 0, im->stream>>>(spec, T * D, out);
    else
        k_f2d_expand<<<grid2d(T, D, 256), 256, 0, im->stream>>>(spec, T, D, out);
    LAUNCH_CHECK(be, "f2d_expand");
    return 0;
}
