/* bench_attention - spectral-bench's attention baseline (see bench_attention.h). */
#define _POSIX_C_SOURCE 200809L
#include "bench_attention.h"

#include "kernels/backend.h"

#include <cblas.h>
#include <math.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define ATTN_BQ 128       /* query rows per attention block */
#define ATTN_BK 256       /* key rows per attention block */
#define ATTN_MAX_THREADS 256
#define LN_EPS 1e-5f

struct bench_attn {
    int64_t D, F, L, hd, nh;
    int threads;
    sp_backend *be; /* CPU backend: layer_norm, linear, get_rows, pool */
    uint64_t rng;   /* xorshift64* state: weights and inputs are reproducible */
    float *emb;     /* 256 x D */
    float **ln1w, **ln1b, **wqkv, **bqkv, **wo, **bo, **ln2w, **ln2b, **wup, **bup, **wdn, **bdn;
    float *pooled; /* D, the model's output (a weight-sized buffer, not counted) */
    /* activations, counted */
    size_t mem_cur, mem_peak;
    bench_attn_mode mode;
    int64_t T; /* prepared length, 0 = none */
    float *h, *x, *big, *scratch;
    int32_t *ids;
};

/* ------------------------------------------------------------ helpers */

static uint64_t rng_u64(uint64_t *s) {
    *s ^= *s >> 12;
    *s ^= *s << 25;
    *s ^= *s >> 27;
    return *s * 2685821657736338717ull;
}

static void fill_uniform(uint64_t *s, float *p, size_t n, float a) { /* U(-a, a) */
    for (size_t i = 0; i < n; i++)
        p[i] = a * (2.0f * (float)((rng_u64(s) >> 40) * (1.0 / 16777216.0)) - 1.0f);
}

static float *alloc_uniform(uint64_t *s, size_t n, float a) {
    float *p = malloc(n * sizeof *p);
    if (p) fill_uniform(s, p, n, a);
    return p;
}

static float *alloc_const(size_t n, float v) {
    float *p = malloc(n * sizeof *p);
    if (p)
        for (size_t i = 0; i < n; i++) p[i] = v;
    return p;
}

static size_t round256(size_t b) { return (b + 255) / 256 * 256; }

/* Every activation buffer goes through here: the peak is the bench's count. */
static void *counted_alloc(bench_attn *m, size_t bytes) {
    size_t n = round256(bytes);
    if (n == 0) n = 256;
    if (n < bytes) return NULL;
    void *p = aligned_alloc(256, n);
    if (!p) return NULL;
    m->mem_cur += n;
    if (m->mem_cur > m->mem_peak) m->mem_peak = m->mem_cur;
    return p;
}

static int64_t head_dim_for(int64_t D) {
    if (D % 64 == 0) return 64;
    if (D < 64) return D;
    for (int64_t d = 64; d > 1; d--)
        if (D % d == 0) return d;
    return 1;
}

/* Per-worker block scratch: S[BQ*BK], O[BQ*hd], running max m[BQ], sum l[BQ]. */
static size_t scratch_floats(int64_t hd) {
    return (size_t)ATTN_BQ * ATTN_BK + (size_t)ATTN_BQ * hd + 2 * ATTN_BQ;
}

/* Width of the shared wide buffer: QKV (3D), or the MLP hidden layer (F). */
static int64_t wide_cols(const bench_attn *m, bench_attn_mode mode) {
    return mode == BENCH_ATTN_MIX || 3 * m->D > m->F ? 3 * m->D : m->F;
}

/* ------------------------------------------------------------ softmax pieces */

/* 2^x for x <= 0 (below -126 it returns 2^-126), free of branches and of
 * float compares (which -ftrapping-math keeps from being if-converted), so
 * the loop over a row vectorizes: floor split, degree-6 Taylor polynomial of
 * 2^f on [0, 1) (relative error ~2e-6), exponent bits. */
static inline float exp2_neg(float x) {
    uint32_t xb;
    memcpy(&xb, &x, sizeof xb);
    const uint32_t lim = 0xC2FC0000u; /* bits of -126.0f */
    xb = (xb > lim && (xb >> 31)) ? lim : xb;
    memcpy(&x, &xb, sizeof x);
    int32_t i = (int32_t)x;
    float d = x - (float)i;
    uint32_t db;
    memcpy(&db, &d, sizeof db);
    i -= (int32_t)(db >> 31); /* floor */
    float f = x - (float)i;
    float p = 1.0f + f * (0.69314718f +
                          f * (0.24022651f +
                               f * (0.05550411f + f * (0.00961813f + f * (0.00133336f + f * 0.00015404f)))));
    int32_t eb = (i + 127) << 23;
    float s;
    memcpy(&s, &eb, sizeof s);
    return p * s;
}

/* Row maximum on order-preserving integer keys of the float bits (no NaNs
 * here): integer compares vectorize where float ones do not. */
static float row_max(const float *r, int64_t n) {
    int32_t m8[8];
    for (int k = 0; k < 8; k++) m8[k] = INT32_MIN;
    int64_t j = 0;
    for (; j + 8 <= n; j += 8)
        for (int k = 0; k < 8; k++) {
            int32_t v;
            memcpy(&v, &r[j + k], sizeof v);
            v ^= (v >> 31) & 0x7FFFFFFF;
            m8[k] = v > m8[k] ? v : m8[k];
        }
    for (; j < n; j++) {
        int32_t v;
        memcpy(&v, &r[j], sizeof v);
        v ^= (v >> 31) & 0x7FFFFFFF;
        m8[0] = v > m8[0] ? v : m8[0];
    }
    int32_t m = INT32_MIN;
    for (int k = 0; k < 8; k++) m = m8[k] > m ? m8[k] : m;
    m ^= (m >> 31) & 0x7FFFFFFF;
    float f;
    memcpy(&f, &m, sizeof f);
    return f;
}

/* r[j] = 2^(r[j] - m); returns the sum. Separate passes so each vectorizes. */
static float row_exp2_sum(float *restrict r, int64_t n, float m) {
    for (int64_t j = 0; j < n; j++) r[j] = exp2_neg(r[j] - m);
    float s8[8] = {0};
    int64_t j = 0;
    for (; j + 8 <= n; j += 8)
        for (int k = 0; k < 8; k++) s8[k] += r[j + k];
    float s = 0;
    for (; j < n; j++) s += r[j];
    for (int k = 0; k < 8; k++) s += s8[k];
    return s;
}

/* ------------------------------------------------------------ blockwise attention */

typedef struct {
    const float *qkv; /* T x 3D: q | k | v */
    float *out;       /* T x D */
    int64_t T, D, hd, nh, nqb;
    float alpha; /* log2(e) / sqrt(hd): scores come out in base 2 */
    atomic_llong next;
    float *scratch; /* scratch_floats(hd) per worker */
    size_t scratch_floats;
} attn_job;

typedef struct {
    attn_job *job;
    int tid;
} attn_worker_arg;

/* Takes (head, query block) items until none are left. For each: walk the
 * key blocks, S = alpha Q K^T, update the running row max and sum, rescale
 * the accumulator O and add P V; finally O / sum into out. */
static void *attn_worker(void *arg) {
    attn_worker_arg *wa = arg;
    attn_job *j = wa->job;
    const int64_t T = j->T, D = j->D, hd = j->hd, ld = 3 * D;
    float *S = j->scratch + (size_t)wa->tid * j->scratch_floats;
    float *O = S + ATTN_BQ * ATTN_BK;
    float *M = O + (size_t)ATTN_BQ * hd;
    float *Lsum = M + ATTN_BQ;
    const long long n_items = (long long)(j->nh * j->nqb);
    for (;;) {
        long long it = atomic_fetch_add(&j->next, 1);
        if (it >= n_items) break;
        const int64_t h = it / j->nqb, i0 = (it % j->nqb) * ATTN_BQ;
        const int64_t bq = T - i0 < ATTN_BQ ? T - i0 : ATTN_BQ;
        const float *Q = j->qkv + i0 * ld + h * hd;
        const float *K0 = j->qkv + D + h * hd;
        const float *V0 = j->qkv + 2 * D + h * hd;
        for (int64_t r = 0; r < bq; r++) {
            M[r] = -1e30f;
            Lsum[r] = 0;
        }
        memset(O, 0, (size_t)(bq * hd) * sizeof(float));
        for (int64_t j0 = 0; j0 < T; j0 += ATTN_BK) {
            const int64_t bk = T - j0 < ATTN_BK ? T - j0 : ATTN_BK;
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, (int)bq, (int)bk, (int)hd,
                        j->alpha, Q, (int)ld, K0 + j0 * ld, (int)ld, 0.0f, S, (int)bk);
            for (int64_t r = 0; r < bq; r++) {
                float *row = S + r * bk;
                float mx = row_max(row, bk);
                float mnew = mx > M[r] ? mx : M[r];
                float corr = exp2_neg(M[r] - mnew);
                Lsum[r] = Lsum[r] * corr + row_exp2_sum(row, bk, mnew);
                if (corr != 1.0f) {
                    float *o = O + r * hd;
                    for (int64_t c = 0; c < hd; c++) o[c] *= corr;
                }
                M[r] = mnew;
            }
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, (int)bq, (int)hd, (int)bk, 1.0f,
                        S, (int)bk, V0 + j0 * ld, (int)ld, 1.0f, O, (int)hd);
        }
        for (int64_t r = 0; r < bq; r++) {
            const float inv = 1.0f / Lsum[r];
            float *dst = j->out + (i0 + r) * D + h * hd;
            const float *o = O + r * hd;
            for (int64_t c = 0; c < hd; c++) dst[c] = o[c] * inv;
        }
    }
    return NULL;
}

/* Multi-head attention over qkv (T x 3D) into out (T x D) on the model's own
 * threads, each calling BLAS single-threaded. A threaded OpenBLAS is set to
 * one thread for the call (several threads calling one threaded OpenBLAS at
 * once would share, or fight over, its pool) and restored afterwards; a
 * serial OpenBLAS is left alone. */
static int attn_core(bench_attn *m, const float *qkv, float *out, int64_t T) {
    attn_job job;
    job.qkv = qkv;
    job.out = out;
    job.T = T;
    job.D = m->D;
    job.hd = m->hd;
    job.nh = m->nh;
    job.nqb = (T + ATTN_BQ - 1) / ATTN_BQ;
    job.alpha = (float)(1.4426950408889634 / sqrt((double)m->hd));
    atomic_init(&job.next, 0);
    job.scratch = m->scratch;
    job.scratch_floats = scratch_floats(m->hd);
    int nt = m->threads;
    if ((int64_t)nt > job.nh * job.nqb) nt = (int)(job.nh * job.nqb);
    if (nt < 1) nt = 1;

    const int blas_prev = openblas_get_parallel() ? openblas_get_num_threads() : 0;
    if (blas_prev > 1) openblas_set_num_threads(1);
    pthread_t tid[ATTN_MAX_THREADS];
    attn_worker_arg args[ATTN_MAX_THREADS];
    int started = 0; /* workers 1..started run in threads; items are shared, so fewer is fine */
    for (int i = 1; i < nt; i++) {
        args[i].job = &job;
        args[i].tid = i;
        if (pthread_create(&tid[i], NULL, attn_worker, &args[i])) break;
        started = i;
    }
    args[0].job = &job;
    args[0].tid = 0;
    attn_worker(&args[0]);
    for (int i = 1; i <= started; i++) pthread_join(tid[i], NULL);
    if (blas_prev > 1) openblas_set_num_threads(blas_prev);
    return 0;
}

/* ------------------------------------------------------------ forward passes */

/* QKV projection of x, attention into o, output projection added into h.
 * o may equal x (x is no longer needed once QKV is computed). */
static int mix_sublayer(bench_attn *m, int64_t l, const float *x, float *o, float *qkv, float *h,
                        int64_t T) {
    sp_backend *be = m->be;
    const int64_t D = m->D;
    if (be->ops->linear(be, x, m->wqkv[l], m->bqkv[l], T, D, 3 * D, SP_ACT_NONE, 0, qkv)) return -1;
    if (attn_core(m, qkv, o, T)) return -1;
    return be->ops->linear(be, o, m->wo[l], m->bo[l], T, D, D, SP_ACT_NONE, 1, h) ? -1 : 0;
}

/* The whole encoder: embed, L x (LN, attention, LN, MLP), mean pool. */
static int forward(bench_attn *m, int64_t T) {
    sp_backend *be = m->be;
    const int64_t D = m->D, F = m->F;
    if (be->ops->get_rows(be, m->emb, D, m->ids, T, m->h)) return -1;
    for (int64_t l = 0; l < m->L; l++) {
        if (be->ops->layer_norm(be, m->h, m->ln1w[l], m->ln1b[l], LN_EPS, T, D, m->x)) return -1;
        if (mix_sublayer(m, l, m->x, m->x, m->big, m->h, T)) return -1;
        if (be->ops->layer_norm(be, m->h, m->ln2w[l], m->ln2b[l], LN_EPS, T, D, m->x)) return -1;
        if (be->ops->linear(be, m->x, m->wup[l], m->bup[l], T, D, F, SP_ACT_GELU, 0, m->big))
            return -1;
        if (be->ops->linear(be, m->big, m->wdn[l], m->bdn[l], T, F, D, SP_ACT_NONE, 1, m->h))
            return -1;
    }
    return be->ops->pool(be, m->h, T, D, SP_POOL_MEAN, m->pooled) ? -1 : 0;
}

int bench_attn_run(bench_attn *m) {
    if (m->T <= 0) {
        snprintf(m->be->err, sizeof m->be->err, "attention baseline: nothing prepared");
        return -1;
    }
    if (m->mode == BENCH_ATTN_MIX) return mix_sublayer(m, 0, m->x, m->x, m->big, m->h, m->T);
    return forward(m, m->T);
}

/* ------------------------------------------------------------ activations */

size_t bench_attn_memory_needed(const bench_attn *m, int64_t T, bench_attn_mode mode) {
    size_t r = 0;
    r += round256((size_t)(T * m->D) * 4) * 2;                  /* h, x */
    r += round256((size_t)(T * wide_cols(m, mode)) * 4);        /* QKV / MLP hidden */
    r += round256(scratch_floats(m->hd) * (size_t)m->threads * 4); /* block scratch */
    if (mode == BENCH_ATTN_MODEL) r += round256((size_t)T * 4); /* token ids */
    return r;
}

void bench_attn_release(bench_attn *m) {
    if (!m) return;
    free(m->h);
    free(m->x);
    free(m->big);
    free(m->scratch);
    free(m->ids);
    m->h = m->x = m->big = m->scratch = NULL;
    m->ids = NULL;
    m->mem_cur = 0;
    m->T = 0;
}

int bench_attn_prepare(bench_attn *m, int64_t T, bench_attn_mode mode) {
    bench_attn_release(m);
    m->mem_peak = 0;
    m->h = counted_alloc(m, (size_t)(T * m->D) * 4);
    m->x = counted_alloc(m, (size_t)(T * m->D) * 4);
    m->big = counted_alloc(m, (size_t)(T * wide_cols(m, mode)) * 4);
    m->scratch = counted_alloc(m, scratch_floats(m->hd) * (size_t)m->threads * 4);
    if (mode == BENCH_ATTN_MODEL) m->ids = counted_alloc(m, (size_t)T * 4);
    if (!m->h || !m->x || !m->big || !m->scratch || (mode == BENCH_ATTN_MODEL && !m->ids)) {
        bench_attn_release(m);
        return -1;
    }
    fill_uniform(&m->rng, m->h, (size_t)(T * m->D), 1.0f);
    fill_uniform(&m->rng, m->x, (size_t)(T * m->D), 1.0f);
    if (mode == BENCH_ATTN_MODEL)
        for (int64_t t = 0; t < T; t++) m->ids[t] = (int32_t)(rng_u64(&m->rng) % 256);
    m->mode = mode;
    m->T = T;
    return 0;
}

size_t bench_attn_peak_memory(const bench_attn *m) { return m->mem_peak; }

/* ------------------------------------------------------------ model */

int64_t bench_attn_n_heads(const bench_attn *m) { return m->nh; }
int64_t bench_attn_head_dim(const bench_attn *m) { return m->hd; }
const char *bench_attn_error(const bench_attn *m) { return m->be->err; }

void bench_attn_free(bench_attn *m) {
    if (!m) return;
    bench_attn_release(m);
    float **lists[] = {m->ln1w, m->ln1b, m->wqkv, m->bqkv, m->wo,  m->bo,
                       m->ln2w, m->ln2b, m->wup,  m->bup,  m->wdn, m->bdn};
    for (size_t i = 0; i < sizeof lists / sizeof lists[0]; i++) {
        if (!lists[i]) continue;
        for (int64_t l = 0; l < m->L; l++) free(lists[i][l]);
        free(lists[i]);
    }
    free(m->emb);
    free(m->pooled);
    if (m->be) m->be->ops->destroy(m->be);
    free(m);
}

bench_attn *bench_attn_create(int64_t D, int64_t F, int64_t L, int n_threads, char *err,
                              size_t err_len) {
    if (D < 1 || F < 1 || L < 1) {
        snprintf(err, err_len, "attention baseline: bad shape D%lld F%lld L%lld", (long long)D,
                 (long long)F, (long long)L);
        return NULL;
    }
    bench_attn *m = calloc(1, sizeof *m);
    if (!m) {
        snprintf(err, err_len, "out of memory");
        return NULL;
    }
    m->D = D;
    m->F = F;
    m->L = L;
    m->hd = head_dim_for(D);
    m->nh = D / m->hd;
    m->rng = 0x2545F4914F6CDD1Dull;
    m->be = sp_backend_cpu_create(n_threads, err, err_len);
    if (!m->be) {
        free(m);
        return NULL;
    }
    m->threads = n_threads > 0 ? n_threads : m->be->n_threads;
    if (m->threads < 1) m->threads = 1;
    if (m->threads > ATTN_MAX_THREADS) m->threads = ATTN_MAX_THREADS;
    float ***lists[] = {&m->ln1w, &m->ln1b, &m->wqkv, &m->bqkv, &m->wo,  &m->bo,
                        &m->ln2w, &m->ln2b, &m->wup,  &m->bup,  &m->wdn, &m->bdn};
    int bad = 0;
    for (size_t i = 0; i < sizeof lists / sizeof lists[0]; i++) {
        *lists[i] = calloc((size_t)L, sizeof(float *));
        bad |= !*lists[i];
    }
    m->emb = alloc_uniform(&m->rng, (size_t)(256 * D), 1.0f);
    m->pooled = malloc((size_t)D * sizeof(float));
    bad |= !m->emb || !m->pooled;
    const float sd = 1.0f / sqrtf((float)D), sf = 1.0f / sqrtf((float)F);
    for (int64_t l = 0; l < L && !bad; l++) {
        m->ln1w[l] = alloc_const((size_t)D, 1.0f);
        m->ln1b[l] = alloc_const((size_t)D, 0.0f);
        m->ln2w[l] = alloc_const((size_t)D, 1.0f);
        m->ln2b[l] = alloc_const((size_t)D, 0.0f);
        m->wqkv[l] = alloc_uniform(&m->rng, (size_t)(3 * D * D), sd);
        m->bqkv[l] = alloc_uniform(&m->rng, (size_t)(3 * D), 0.02f);
        m->wo[l] = alloc_uniform(&m->rng, (size_t)(D * D), sd);
        m->bo[l] = alloc_uniform(&m->rng, (size_t)D, 0.02f);
        m->wup[l] = alloc_uniform(&m->rng, (size_t)(F * D), sd);
        m->bup[l] = alloc_uniform(&m->rng, (size_t)F, 0.02f);
        m->wdn[l] = alloc_uniform(&m->rng, (size_t)(D * F), sf);
        m->bdn[l] = alloc_uniform(&m->rng, (size_t)D, 0.02f);
        bad |= !m->ln1w[l] || !m->ln2w[l] || !m->ln1b[l] || !m->ln2b[l] || !m->wqkv[l] ||
               !m->bqkv[l] || !m->wo[l] || !m->bo[l] || !m->wup[l] || !m->bup[l] ||
               !m->wdn[l] || !m->bdn[l];
    }
    if (bad) {
        snprintf(err, err_len, "out of memory creating the attention baseline");
        bench_attn_free(m);
        return NULL;
    }
    return m;
}
