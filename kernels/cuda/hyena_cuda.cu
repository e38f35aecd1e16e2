/* M2-BERT's ops on the GPU (kernels/backend.h): add_row, hyena_filter,
 * hyena_mix and glu_ffn_block.
 *
 * The long convolutions stay in the row-major T x C layout: cuFFT
 * transforms every channel along the sequence with the interleaved layout
 * (stride C between a channel's samples, distance 1 between channels), so
 * no transposes are needed and every elementwise kernel reads and writes
 * whole rows. A channel's N-point transform (N >= 2T, 7-smooth) zero-pads
 * rows [T, N) of an N x C buffer. The spectrum table hyena_filter writes is
 * (N/2+1) x D complex values, bin-major, divided by N. The filter's Sin MLP
 * runs in double precision (cuBLAS DGEMM), as on the CPU. Work areas of
 * cuFFT's plans come from the workspaces, so the arena counts every byte. */
#include "kernels/cuda/cuda_internal.cuh"

#include <math.h>
#include <stdint.h>

/* ------------------------------------------------------------- sizes */

/* The transform length for T tokens: 2T when its prime factors are 2, 3, 5
 * and 7 (cuFFT's fast radices), else the next such length. */
static int64_t hyena_n(int64_t T) {
    for (int64_t n = 2 * T;; n++) {
        int64_t r = n;
        for (int p = 2; p <= 7; p++)
            while (r % p == 0) r /= p;
        if (r == 1) return n;
    }
}

size_t sp_cuda_hyena_spectrum_size(sp_backend *be, int64_t T, int64_t D) {
    (void)be;
    if (T <= 0 || D <= 0 || T > INT32_MAX / 4 || D > INT32_MAX / 2) return 0;
    return (size_t)(hyena_n(T) / 2 + 1) * (size_t)D * sizeof(float2);
}

/* --------------------------------------------------------- plan cache */

/* The R2C and C2R plans of length N over `batch` interleaved channels. */
static void drop_hyena_plan(struct cuda_impl *im, struct hyena_plan *p) {
    cufftDestroy(p->r2c);
    cufftDestroy(p->c2r);
    p->valid = 0;
}

void sp_cuda_hyena_release(struct cuda_impl *im) {
    for (int i = 0; i < HYENA_PLAN_CACHE; i++)
        if (im->hyena[i].valid) drop_hyena_plan(im, &im->hyena[i]);
}

static struct hyena_plan *hyena_plan(sp_backend *be, int64_t N, int64_t batch) {
    struct cuda_impl *im = IMPL(be);
    struct hyena_plan *p = NULL, *lru = NULL;
    for (int i = 0; i < HYENA_PLAN_CACHE; i++) {
        struct hyena_plan *q = &im->hyena[i];
        if (q->valid && q->N == N && q->batch == batch) {
            q->used = ++im->clock;
            return q;
        }
        if (!q->valid) p = p ? p : q;
        else if (!lru || q->used < lru->used) lru = q;
    }
    if (!p) { /* the plan may still be in use by queued work */
        if (sp_cuda_evict_sync(be)) return NULL;
        drop_hyena_plan(im, lru);
        p = lru;
    }
    long long n[1] = {(long long)N}, nr[1] = {(long long)N}, nc[1] = {(long long)(N / 2 + 1)};
    const char *what;
    size_t w1 = 0, w2 = 0;
    cufftResult r = sp_cuda_make_plan(im->stream, 1, n, nr, batch, 1, nc, batch, 1, CUFFT_R2C, batch,
                                      &p->r2c, &w1, &what);
    if (r == CUFFT_SUCCESS) {
        r = sp_cuda_make_plan(im->stream, 1, n, nc, batch, 1, nr, batch, 1, CUFFT_C2R, batch, &p->c2r,
                              &w2, &what);
        if (r != CUFFT_SUCCESS) cufftDestroy(p->r2c);
    }
    if (r != CUFFT_SUCCESS) {
        sp_cuda_set_err(be, "cuda hyena: %s failed for N=%lld x %lld: %s (%d)", what, (long long)N,
                        (long long)batch, sp_cuda_cufft_str(r), (int)r);
        return NULL;
    }
    p->valid = 1;
    p->used = ++im->clock;
    p->N = N;
    p->batch = batch;
    p->work = w1 > w2 ? w1 : w2;
    return p;
}

/* ----------------------------------------------------------- kernels */

__global__ void k_add_row(const float *__restrict__ row, int64_t T, int64_t D, float *y) {
    ROWS_COLS(t, d, T, D) { y[t * D + d] += row[d]; }
}

__global__ void k_to_double(const float *__restrict__ x, int64_t n, double *__restrict__ y) {
    GRID_STRIDE(i, n) { y[i] = x[i]; }
}

__global__ void k_to_float(const double *__restrict__ x, int64_t n, float *__restrict__ y) {
    GRID_STRIDE(i, n) { y[i] = (float)x[i]; }
}

/* x = sin((w_mod * freq) * (x + b)) over T x O, in double. */
__global__ void k_bias_sin(double *x, const float *__restrict__ b, const float *__restrict__ freq,
                           float w_mod, int64_t T, int64_t O) {
    ROWS_COLS(t, j, T, O) {
        const double wf = (double)w_mod * (double)freq[j];
        x[t * O + j] = sin(wf * (x[t * O + j] + (double)b[j]));
    }
}

/* The N x D kernel buffer: rows [0, T) hold k_0 (unmodulated, in place),
 * rows [N-T, N) k_1 reversed (from kr, T x D), the rest zeros; both times
 * exp(-t |decay|). */
__global__ void k_assemble(float *buf, const float *__restrict__ kr, const float *__restrict__ tpos,
                           const float *__restrict__ decay, int64_t T, int64_t N, int64_t D) {
    ROWS_COLS(j, d, N, D) {
        const float a = fabsf(decay[d]);
        float v = 0.0f;
        if (j < T) v = buf[j * D + d] * expf(-tpos[j] * a);
        else if (j >= N - T) {
            const int64_t s = N - 1 - j;
            v = kr[s * D + d] * expf(-tpos[s] * a);
        }
        buf[j * D + d] = v;
    }
}

/* s /= n: torch divides the kernel's spectrum by the transform length */
__global__ void k_scale(float2 *s, int64_t count, float n) {
    GRID_STRIDE(i, count) {
        s[i].x /= n;
        s[i].y /= n;
    }
}

/* The short convolution of a (T x 3D) at row t, channel j. */
__device__ __forceinline__ float short_conv(const float *a, const float *w, const float *b, int64_t t,
                                            int64_t j, int64_t C) {
    const float xm2 = t >= 2 ? a[(t - 2) * C + j] : 0.0f, xm1 = t >= 1 ? a[(t - 1) * C + j] : 0.0f;
    return w[3 * j] * xm2 + w[3 * j + 1] * xm1 + w[3 * j + 2] * a[t * C + j] + b[j];
}

/* buf (N x 2D): columns [0, D) v * x1, [D, 2D) u, rows [T, N) zero. */
__global__ void k_mix_in(const float *__restrict__ a, const float *__restrict__ w,
                         const float *__restrict__ b, const float *__restrict__ u, int64_t T,
                         int64_t N, int64_t D, float *__restrict__ buf) {
    ROWS_COLS(t, c, N, 2 * D) {
        float v = 0.0f;
        if (t < T) {
            if (c < D) v = short_conv(a, w, b, t, 2 * D + c, 3 * D) * short_conv(a, w, b, t, c, 3 * D);
            else v = u[t * D + c - D];
        }
        buf[t * 2 * D + c] = v;
    }
}

/* X[f, c] *= S[f, c] (c < D) or S_res[f, c - D]: X is (N/2+1) x 2D. */
__global__ void k_mix_mul(float2 *X, const float2 *__restrict__ S, const float2 *__restrict__ Sr,
                          int64_t nf, int64_t D) {
    ROWS_COLS(f, c, nf, 2 * D) {
        const float2 s = c < D ? S[f * D + c] : Sr[f * D + c - D];
        X[f * 2 * D + c] = cmul(X[f * 2 * D + c], s);
    }
}

/* y = (Y[:, :D] + v bias) * x2 + (Y[:, D:] + u bias_res), v and x2 recomputed from a. */
__global__ void k_mix_out(const float *__restrict__ Y, const float *__restrict__ a,
                          const float *__restrict__ w, const float *__restrict__ b,
                          const float *__restrict__ u, const float *__restrict__ bias,
                          const float *__restrict__ bias_res, int64_t T, int64_t D,
                          float *__restrict__ y) {
    ROWS_COLS(t, d, T, D) {
        const float v = short_conv(a, w, b, t, 2 * D + d, 3 * D) * short_conv(a, w, b, t, d, 3 * D);
        const float x2 = short_conv(a, w, b, t, D + d, 3 * D);
        const float uu = u[t * D + d];
        y[t * D + d] = (Y[t * 2 * D + d] + v * bias[d]) * x2 + (Y[t * 2 * D + D + d] + uu * bias_res[d]);
    }
}

/* g[:, :F] = gelu(g[:, :F]) * g[:, F:] over rows x F (g rows 2F wide). */
__global__ void k_glu(float *g, int64_t rows, int64_t F) {
    ROWS_COLS(r, i, rows, F) {
        const float v = g[r * 2 * F + i];
        g[r * 2 * F + i] = 0.5f * v * (1.0f + erff(v * 0.70710678118654752440f)) * g[r * 2 * F + F + i];
    }
}

/* z = z + b + h over rows x D */
__global__ void k_bias_residual(float *z, const float *__restrict__ b, const float *__restrict__ h,
                                int64_t rows, int64_t D) {
    ROWS_COLS(r, d, rows, D) { z[r * D + d] = (z[r * D + d] + b[d]) + h[r * D + d]; }
}

/* ----------------------------------------------------------- add_row */

int sp_cuda_add_row(sp_backend *be, const float *row, int64_t T, int64_t D, float *y) {
    if (T < 0 || D < 0 || (T > 0 && D > 0 && (!row || !y)))
        return sp_cuda_set_err(be, "cuda add_row: bad arguments (T=%lld D=%lld)", (long long)T,
                               (long long)D);
    if (T == 0 || D == 0) return 0;
    if (sp_cuda_enter(be)) return -1;
    k_add_row<<<grid2d(T, D, 256), 256, 0, IMPL(be)->stream>>>(row, T, D, y);
    LAUNCH_CHECK(be, "add_row");
    return 0;
}

/* ------------------------------------------------------ hyena_filter */

/* Row-major C[M x N] = A[M x K] B[N x K]^T in double. */
static int dgemm_nt(sp_backend *be, const double *A, const double *B, int64_t M, int64_t N, int64_t K,
                    double *C) {
    const double one = 1.0, zero = 0.0;
    BLAS_CHECK(be, cublasDgemm(IMPL(be)->blas, CUBLAS_OP_T, CUBLAS_OP_N, (int)N, (int)M, (int)K, &one,
                               B, (int)K, A, (int)K, &zero, C, (int)N));
    return 0;
}

/* Workspace layout: weights in double (W_in, W_mid0, W_mid1 of one direction),
 * z in double, two T x O double tiles, a3 (T x O float), k_1 (T x D),
 * the N x D kernel buffer, cuFFT's work area. */
typedef struct {
    size_t w, z, t, a3, kr, buf, work, total;
} filter_layout;

static int filter_layout_of(sp_backend *be, int64_t T, int64_t D, int64_t E, int64_t O,
                            filter_layout *L, struct hyena_plan **plan) {
    const int64_t N = hyena_n(T);
    *plan = hyena_plan(be, N, D);
    if (!*plan) return -1;
    L->w = align_up((size_t)(O * E + 2 * O * O) * sizeof(double));
    L->z = align_up((size_t)(T * E) * sizeof(double));
    L->t = align_up((size_t)(T * O) * sizeof(double));
    L->a3 = align_up((size_t)(T * O) * sizeof(float));
    L->kr = align_up((size_t)(T * D) * sizeof(float));
    L->buf = align_up((size_t)(N * D) * sizeof(float));
    L->work = align_up((*plan)->work);
    L->total = WS_ALIGN + L->w + L->z + 2 * L->t + L->a3 + L->kr + L->buf + L->work;
    return 0;
}

size_t sp_cuda_hyena_filter_workspace_size(sp_backend *be, int64_t T, int64_t D, int64_t E,
                                           int64_t O) {
    if (T <= 0 || D <= 0 || E <= 0 || O <= 0 || T > INT32_MAX / 4 || D > INT32_MAX / 2) return 0;
    if (sp_cuda_enter(be)) return 0;
    filter_layout L;
    struct hyena_plan *p;
    return filter_layout_of(be, T, D, E, O, &L, &p) ? 0 : L.total;
}

int sp_cuda_hyena_filter(sp_backend *be, const sp_hyena_filter *f, int64_t T, int64_t D,
                         void *workspace, void *spectrum) {
    if (!f || T <= 0 || D <= 0 || T > INT32_MAX / 4 || D > INT32_MAX / 2 || f->E <= 0 ||
        f->order <= 0 || f->E > INT32_MAX || f->order > INT32_MAX)
        return sp_cuda_set_err(be, "cuda hyena_filter: bad shape T=%lld D=%lld", (long long)T,
                               (long long)D);
    int ok = f->z && f->t && f->decay && workspace && spectrum;
    for (int d = 0; d < 2; d++)
        ok = ok && f->dir[d].W_in && f->dir[d].b_in && f->dir[d].W_mid[0] && f->dir[d].b_mid[0] &&
             f->dir[d].W_mid[1] && f->dir[d].b_mid[1] && f->dir[d].freq && f->dir[d].W_out;
    if (!ok) return sp_cuda_set_err(be, "cuda hyena_filter: NULL argument");
    if (sp_cuda_enter(be)) return -1;
    struct cuda_impl *im = IMPL(be);
    const int64_t E = f->E, O = f->order, N = hyena_n(T), nf = N / 2 + 1;
    filter_layout L;
    struct hyena_plan *plan;
    if (filter_layout_of(be, T, D, E, O, &L, &plan)) return -1;
    char *ws = (char *)align_ptr(workspace);
    double *w_in = (double *)ws, *w_mid0 = w_in + O * E, *w_mid1 = w_mid0 + O * O;
    double *zd = (double *)(ws + L.w), *t1 = (double *)(ws + L.w + L.z), *t2 = (double *)((char *)t1 + L.t);
    float *a3 = (float *)((char *)t2 + L.t), *kr = (float *)((char *)a3 + L.a3);
    float *buf = (float *)((char *)kr + L.kr);
    void *work = (char *)buf + L.buf;
    const unsigned g = grid_for(T * O, 256);
    k_to_double<<<grid_for(T * E, 256), 256, 0, im->stream>>>(f->z, T * E, zd);
    LAUNCH_CHECK(be, "to_double");
    for (int d = 0; d < 2; d++) {
        const float *wsrc[3] = {f->dir[d].W_in, f->dir[d].W_mid[0], f->dir[d].W_mid[1]};
        double *wdst[3] = {w_in, w_mid0, w_mid1};
        const float *bias[3] = {f->dir[d].b_in, f->dir[d].b_mid[0], f->dir[d].b_mid[1]};
        for (int i = 0; i < 3; i++) {
            const int64_t n = O * (i ? O : E);
            k_to_double<<<grid_for(n, 256), 256, 0, im->stream>>>(wsrc[i], n, wdst[i]);
            LAUNCH_CHECK(be, "to_double");
        }
        const double *in = zd;
        double *outs[3] = {t1, t2, t1};
        for (int i = 0; i < 3; i++) {
            if (dgemm_nt(be, in, wdst[i], T, O, i ? O : E, outs[i])) return -1;
            k_bias_sin<<<grid2d(T, O, 128), 128, 0, im->stream>>>(outs[i], bias[i],
                                                                  f->dir[d].freq + i * O, f->w_mod, T, O);
            LAUNCH_CHECK(be, "bias_sin");
            in = outs[i];
        }
        k_to_float<<<g, 256, 0, im->stream>>>(t1, T * O, a3);
        LAUNCH_CHECK(be, "to_float");
        /* k_0 straight into the kernel buffer's first T rows, k_1 aside */
        if (sp_cuda_linear(be, a3, f->dir[d].W_out, NULL, T, O, D, SP_ACT_NONE, 0, d ? kr : buf))
            return -1;
    }
    k_assemble<<<grid2d(N, D, 256), 256, 0, im->stream>>>(buf, kr, f->t, f->decay, T, N, D);
    LAUNCH_CHECK(be, "assemble");
    FFT_CHECK(be, cufftSetWorkArea(plan->r2c, work));
    FFT_CHECK(be, cufftExecR2C(plan->r2c, buf, (cufftComplex *)spectrum));
    k_scale<<<grid_for(nf * D, 256), 256, 0, im->stream>>>((float2 *)spectrum, nf * D, (float)N);
    LAUNCH_CHECK(be, "scale");
    return 0;
}

/* --------------------------------------------------------- hyena_mix */

/* Workspace: the N x 2D real buffer, its (N/2+1) x 2D spectrum, cuFFT's work area. */
static int mix_layout_of(sp_backend *be, int64_t T, int64_t D, size_t *buf, size_t *spec,
                         size_t *total, struct hyena_plan **plan) {
    const int64_t N = hyena_n(T);
    *plan = hyena_plan(be, N, 2 * D);
    if (!*plan) return -1;
    *buf = align_up((size_t)(N * 2 * D) * sizeof(float));
    *spec = align_up((size_t)((N / 2 + 1) * 2 * D) * sizeof(float2));
    *total = WS_ALIGN + *buf + *spec + align_up((*plan)->work);
    return 0;
}

size_t sp_cuda_hyena_mix_workspace_size(sp_backend *be, int64_t T, int64_t D) {
    if (T <= 0 || D <= 0 || T > INT32_MAX / 4 || D > INT32_MAX / 3) return 0;
    if (sp_cuda_enter(be)) return 0;
    size_t b, s, total;
    struct hyena_plan *p;
    return mix_layout_of(be, T, D, &b, &s, &total, &p) ? 0 : total;
}

int sp_cuda_hyena_mix(sp_backend *be, const float *a, const float *conv_w, const float *conv_b,
                      const float *u, const void *spec, const float *bias, const void *spec_res,
                      const float *bias_res, int64_t T, int64_t D, void *workspace, float *y) {
    if (T <= 0 || D <= 0 || T > INT32_MAX / 4 || D > INT32_MAX / 3)
        return sp_cuda_set_err(be, "cuda hyena_mix: bad shape T=%lld D=%lld", (long long)T,
                               (long long)D);
    if (!a || !conv_w || !conv_b || !u || !spec || !bias || !spec_res || !bias_res || !workspace || !y)
        return sp_cuda_set_err(be, "cuda hyena_mix: NULL argument");
    if (sp_cuda_enter(be)) return -1;
    struct cuda_impl *im = IMPL(be);
    const int64_t N = hyena_n(T), nf = N / 2 + 1;
    size_t lb, ls, total;
    struct hyena_plan *plan;
    if (mix_layout_of(be, T, D, &lb, &ls, &total, &plan)) return -1;
    float *buf = (float *)align_ptr(workspace);
    float2 *X = (float2 *)((char *)buf + lb);
    void *work = (char *)X + ls;
    k_mix_in<<<grid2d(N, 2 * D, 256), 256, 0, im->stream>>>(a, conv_w, conv_b, u, T, N, D, buf);
    LAUNCH_CHECK(be, "mix_in");
    FFT_CHECK(be, cufftSetWorkArea(plan->r2c, work));
    FFT_CHECK(be, cufftExecR2C(plan->r2c, buf, (cufftComplex *)X));
    k_mix_mul<<<grid2d(nf, 2 * D, 256), 256, 0, im->stream>>>(X, (const float2 *)spec,
                                                             (const float2 *)spec_res, nf, D);
    LAUNCH_CHECK(be, "mix_mul");
    FFT_CHECK(be, cufftSetWorkArea(plan->c2r, work));
    FFT_CHECK(be, cufftExecC2R(plan->c2r, (cufftComplex *)X, buf));
    k_mix_out<<<grid2d(T, D, 256), 256, 0, im->stream>>>(buf, a, conv_w, conv_b, u, bias, bias_res,
                                                        T, D, y);
    LAUNCH_CHECK(be, "mix_out");
    return 0;
}

/* ----------------------------------------------------- glu_ffn_block */

/* Rows per chunk: bounds the gate activations to FFN chunk x 2F floats. */
#define GLU_CHUNK_ROWS 2048

size_t sp_cuda_glu_ffn_block_workspace_size(sp_backend *be, const int64_t *offsets, int64_t n_docs,
                                            int64_t D, int64_t F, int64_t n_blocks) {
    (void)be;
    int64_t bad;
    if (F <= 0 || n_blocks <= 0 || sp_cuda_longest_doc(offsets, n_docs, D, &bad) < 0) return 0;
    const int64_t T = offsets[n_docs], rows = T < GLU_CHUNK_ROWS ? T : GLU_CHUNK_ROWS;
    return WS_ALIGN + align_up((size_t)(rows * 2 * F) * sizeof(float)) +
           align_up((size_t)(rows * D) * sizeof(float));
}

/* Row-major C[rows x nb*Ob] (ldc) = per block b: A[:, b*Ib..] (lda) W_b^T, W_b = W + b*Ob*Ib (Ob x Ib). */
static int block_gemm(sp_backend *be, const float *A, int64_t lda, const float *W, int64_t Ib,
                      int64_t Ob, int64_t nb, int64_t rows, float *C, int64_t ldc) {
    const float one = 1.0f, zero = 0.0f;
    BLAS_CHECK(be, cublasSgemmStridedBatched(IMPL(be)->blas, CUBLAS_OP_T, CUBLAS_OP_N, (int)Ob,
                                             (int)rows, (int)Ib, &one, W, (int)Ib, Ob * Ib, A,
                                             (int)lda, Ib, &zero, C, (int)ldc, Ob, (int)nb));
    return 0;
}

int sp_cuda_glu_ffn_block(sp_backend *be, float *h, const float *W_gate, const float *W_down,
                          const float *b_down, const float *ln_w, const float *ln_b, float eps,
                          int64_t D, int64_t F, int64_t nb, const int64_t *offsets, int64_t n_docs,
                          void *workspace) {
    if (D <= 0 || F <= 0 || nb <= 0 || D % nb || F % nb || 2 * F > INT32_MAX || D > INT32_MAX)
        return sp_cuda_set_err(be, "cuda glu_ffn_block: bad shape D=%lld F=%lld blocks=%lld",
                               (long long)D, (long long)F, (long long)nb);
    if (sp_cuda_check_docs(be, "glu_ffn_block", offsets, n_docs, D)) return -1;
    if (!h || !W_gate || !W_down || !b_down || !ln_w || !ln_b || !workspace)
        return sp_cuda_set_err(be, "cuda glu_ffn_block: NULL argument");
    if (sp_cuda_enter(be)) return -1;
    struct cuda_impl *im = IMPL(be);
    const int64_t T = offsets[n_docs], chunk = T < GLU_CHUNK_ROWS ? T : GLU_CHUNK_ROWS;
    float *g = (float *)align_ptr(workspace);
    float *z = (float *)((char *)g + align_up((size_t)(chunk * 2 * F) * sizeof(float)));
    for (int64_t r0 = 0; r0 < T; r0 += chunk) {
        const int64_t rows = T - r0 < chunk ? T - r0 : chunk;
        float *hc = h + r0 * D;
        if (block_gemm(be, hc, D, W_gate, D / nb, 2 * F / nb, nb, rows, g, 2 * F)) return -1;
        k_glu<<<grid2d(rows, F, 256), 256, 0, im->stream>>>(g, rows, F);
        LAUNCH_CHECK(be, "glu");
        if (block_gemm(be, g, 2 * F, W_down, F / nb, D / nb, nb, rows, z, D)) return -1;
        k_bias_residual<<<grid2d(rows, D, 256), 256, 0, im->stream>>>(z, b_down, hc, rows, D);
        LAUNCH_CHECK(be, "bias_residual");
        if (sp_cuda_layer_norm(be, z, ln_w, ln_b, eps, rows, D, hc)) return -1;
    }
    return 0;
}
