/* Micro-benchmark of the CPU backend's spectral mixing against the two
 * linears of an MLP block (T x D -> F with GELU, F -> D accumulate).
 *
 * Build (from the repository root, a development aid; not installed):
 *   cmake --build build --target bench_mix_cpu
 * Run: build/tools/bench_mix_cpu [n_threads (0 = all)] [runs (default 10)] [K (default 64)]
 * Prints medians in ms, for mixing tiles of 8 and 16 channels. */
#define _POSIX_C_SOURCE 200809L
#include "kernels/backend.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static double now_ms(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec * 1e3 + ts.tv_nsec * 1e-6;
}

static int cmp_d(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

/* Median, and the minimum in g_min (less sensitive to a busy machine). */
static double g_min;
static double median(double *v, int n) {
    qsort(v, (size_t)n, sizeof *v, cmp_d);
    g_min = v[0];
    return n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
}

static void fill(float *p, size_t n, float scale) {
    uint32_t s = 12345u;
    for (size_t i = 0; i < n; i++) {
        s = s * 1664525u + 1013904223u;
        p[i] = scale * ((float)(s >> 8) / 8388608.0f - 1.0f);
    }
}

#define FAILRC(call)                                                                               \
    do {                                                                                           \
        if ((call) != 0) {                                                                         \
            fprintf(stderr, "error: %s\n", be->err);                                               \
            return 1;                                                                              \
        }                                                                                          \
    } while (0)

int main(int argc, char **argv) {
    const int n_threads = argc > 1 ? atoi(argv[1]) : 0;
    int runs = argc > 2 ? atoi(argv[2]) : 10;
    const int64_t K = argc > 3 ? atoll(argv[3]) : 64;
    if (runs < 1 || runs > 1000) runs = 10;
    const int64_t D = 256, F = 1024;
    const int64_t Ts[] = {4096, 16384};
    const char *tiles[] = {"8", "16"};
    double *tm = malloc(sizeof(double) * (size_t)runs);

    for (size_t ti = 0; ti < 2; ti++) {
        const int64_t T = Ts[ti];
        float *u = malloc(sizeof(float) * (size_t)(T * D));
        float *h = malloc(sizeof(float) * (size_t)(T * D));
        float *a = malloc(sizeof(float) * (size_t)(T * F));
        float *filt = malloc(sizeof(float) * (size_t)(D * K * 2));
        float *bias = malloc(sizeof(float) * (size_t)D);
        float *W1 = malloc(sizeof(float) * (size_t)(F * D)), *b1 = malloc(sizeof(float) * (size_t)F);
        float *W2 = malloc(sizeof(float) * (size_t)(D * F)), *b2 = malloc(sizeof(float) * (size_t)D);
        if (!u || !h || !a || !filt || !bias || !W1 || !b1 || !W2 || !b2) {
            fprintf(stderr, "out of memory\n");
            return 1;
        }
        fill(u, (size_t)(T * D), 1.0f);
        fill(h, (size_t)(T * D), 1.0f);
        fill(filt, (size_t)(D * K * 2), 0.1f);
        fill(bias, (size_t)D, 0.02f);
        fill(W1, (size_t)(F * D), 0.06f);
        fill(b1, (size_t)F, 0.02f);
        fill(W2, (size_t)(D * F), 0.03f);
        fill(b2, (size_t)D, 0.02f);

        double mix_ms[2] = {0, 0}, mix_min[2] = {0, 0}, l1min = 0, l2min = 0, l1 = 0, l2 = 0, l1raw = 0;
        for (int tl = 0; tl < 2; tl++) {
            setenv("SPECTRAL_CPU_MIX_TILE", tiles[tl], 1);
            char err[256];
            sp_backend *be = sp_backend_cpu_create(n_threads, err, sizeof err);
            if (!be) {
                fprintf(stderr, "create: %s\n", err);
                return 1;
            }
            size_t wsb = be->ops->mix_workspace_size(be, T, D);
            void *ws = be->ops->buffer_alloc(be, wsb);
            if (!ws) {
                fprintf(stderr, "%s\n", be->err);
                return 1;
            }
            /* one untimed call plans the FFTs and warms the caches */
            FAILRC(be->ops->spectral_mix(be, u, filt, bias, K, T, D, ws, h));
            for (int r = 0; r < runs; r++) {
                double t0 = now_ms();
                FAILRC(be->ops->spectral_mix(be, u, filt, bias, K, T, D, ws, h));
                tm[r] = now_ms() - t0;
            }
            mix_ms[tl] = median(tm, runs);
            mix_min[tl] = g_min;
            if (tl == 1) {
                FAILRC(be->ops->linear(be, h, W1, b1, T, D, F, SP_ACT_GELU, 0, a));
                for (int r = 0; r < runs; r++) {
                    double t0 = now_ms();
                    FAILRC(be->ops->linear(be, h, W1, b1, T, D, F, SP_ACT_GELU, 0, a));
                    tm[r] = now_ms() - t0;
                }
                l1 = median(tm, runs);
                l1min = g_min;
                for (int r = 0; r < runs; r++) {
                    double t0 = now_ms();
                    FAILRC(be->ops->linear(be, h, W1, NULL, T, D, F, SP_ACT_NONE, 0, a));
                    tm[r] = now_ms() - t0;
                }
                l1raw = median(tm, runs);
                for (int r = 0; r < runs; r++) {
                    double t0 = now_ms();
                    FAILRC(be->ops->linear(be, a, W2, b2, T, F, D, SP_ACT_NONE, 1, h));
                    tm[r] = now_ms() - t0;
                }
                l2 = median(tm, runs);
                l2min = g_min;
            }
            be->ops->buffer_free(be, ws);
            be->ops->destroy(be);
        }
        const double mix = mix_ms[1] < mix_ms[0] ? mix_ms[1] : mix_ms[0];
        printf("T=%lld D=%lld F=%lld K=%lld threads=%d runs=%d (medians)\n", (long long)T,
               (long long)D, (long long)F, (long long)K, n_threads, runs);
        printf("  spectral_mix  tile 8: %8.2f ms   tile 16: %8.2f ms\n", mix_ms[0], mix_ms[1]);
        printf("  linear D->F + bias + GELU: %8.2f ms (sgemm alone %8.2f ms)\n", l1, l1raw);
        printf("  linear F->D accumulate   : %8.2f ms\n", l2);
        printf("  mixing share of mix + MLP block (best tile): %.1f %%\n",
               100.0 * mix / (mix + l1 + l2));
        printf("  minima: mix tile 8 %.2f, tile 16 %.2f, linear1 %.2f, linear2 %.2f ms\n",
               mix_min[0], mix_min[1], l1min, l2min);
        free(u);
        free(h);
        free(a);
        free(filt);
        free(bias);
        free(W1);
        free(b1);
        free(W2);
        free(b2);
    }
    free(tm);
    return 0;
}
