/* GPU timing of the spectral mixing paths (fused / dftgemm / cufft) through
 * the backend interface, against the device's copy bandwidth.
 *
 *   bench_mix_gpu [--D 768] [--K 64] [--tokens 1048576] [--reps 7]
 *                 [--T 1024,4096,...] [--modes fused,dftgemm,cufft,auto]
 *                 [--csv out.csv]
 *
 * For each T it mixes B = max(1, tokens / T) distinct documents of T x D
 * (so every measurement touches >= tokens x D floats and small shapes do not
 * run out of L2), B calls back to back between two synchronizations,
 * repeated --reps times; the median is reported. The backend's stream is
 * private, so the clock is the host's (CLOCK_MONOTONIC around
 * ops->synchronize), which with B back-to-back launches hides launch
 * latency. Effective bandwidth counts the bytes the op must move at least:
 * u read + h read + h written = 3 T D 4 bytes per document; it is compared
 * with cudaMemcpy device-to-device (2 x bytes per copy, cudaEvent-timed). */
#include "kernels/backend.h"

#include <cuda_runtime.h>

#include <algorithm>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <string>
#include <time.h>
#include <vector>

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static double median(std::vector<double> v) {
    std::sort(v.begin(), v.end());
    size_t n = v.size();
    return n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
}

static std::vector<std::string> split(const char *s) {
    std::vector<std::string> out;
    std::string cur;
    for (const char *p = s; *p; p++) {
        if (*p == ',') {
            if (!cur.empty()) out.push_back(cur);
            cur.clear();
        } else {
            cur += *p;
        }
    }
    if (!cur.empty()) out.push_back(cur);
    return out;
}

#define CK(call)                                                                                   \
    do {                                                                                           \
        cudaError_t e_ = (call);                                                                   \
        if (e_ != cudaSuccess) {                                                                   \
            fprintf(stderr, "%s: %s\n", #call, cudaGetErrorString(e_));                            \
            return 1;                                                                              \
        }                                                                                          \
    } while (0)

/* cudaMemcpy D2D bandwidth in GB/s (read + write), median of reps. */
static int memcpy_bw(size_t bytes, int reps, double *gbps) {
    void *a = NULL, *b = NULL;
    CK(cudaMalloc(&a, bytes));
    CK(cudaMalloc(&b, bytes));
    CK(cudaMemset(a, 0, bytes));
    cudaEvent_t e0, e1;
    CK(cudaEventCreate(&e0));
    CK(cudaEventCreate(&e1));
    std::vector<double> t;
    for (int r = 0; r < reps + 2; r++) {
        CK(cudaEventRecord(e0));
        CK(cudaMemcpy(b, a, bytes, cudaMemcpyDeviceToDevice));
        CK(cudaEventRecord(e1));
        CK(cudaEventSynchronize(e1));
        float ms = 0;
        CK(cudaEventElapsedTime(&ms, e0, e1));
        if (r >= 2) t.push_back(ms * 1e-3);
    }
    *gbps = 2.0 * (double)bytes / median(t) / 1e9;
    cudaEventDestroy(e0);
    cudaEventDestroy(e1);
    cudaFree(a);
    cudaFree(b);
    return 0;
}

int main(int argc, char **argv) {
    int64_t D = 768, K = 64, tokens = (int64_t)1 << 20;
    int reps = 7;
    const char *Tlist = "1024,4096,8192,16384,65536,262144,1048576";
    const char *modes_s = "fused,dftgemm,cufft,auto";
    const char *csv = NULL;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (!v) {
            fprintf(stderr, "missing value for %s\n", a);
            return 2;
        }
        if (!strcmp(a, "--D")) D = atoll(v);
        else if (!strcmp(a, "--K")) K = atoll(v);
        else if (!strcmp(a, "--tokens")) tokens = atoll(v);
        else if (!strcmp(a, "--reps")) reps = atoi(v);
        else if (!strcmp(a, "--T")) Tlist = v;
        else if (!strcmp(a, "--modes")) modes_s = v;
        else if (!strcmp(a, "--csv")) csv = v;
        else {
            fprintf(stderr, "unknown option %s\n", a);
            return 2;
        }
        i++;
    }
    if (sp_backend_cuda_device_count() == 0) {
        fprintf(stderr, "bench_mix_gpu: no CUDA device\n");
        return 77;
    }
    cudaDeviceProp prop;
    CK(cudaGetDeviceProperties(&prop, 0));
    double bw_copy = 0;
    if (memcpy_bw((size_t)1 << 30, 10, &bw_copy)) return 1;
    printf("device: %s\ncudaMemcpy D2D: %.0f GB/s (read + write)\n", prop.name, bw_copy);
    printf("D=%lld K=%lld tokens per measurement >= %lld, median of %d\n\n", (long long)D,
           (long long)K, (long long)tokens, reps);
    printf("%-8s %9s %5s %12s %12s %9s %8s\n", "mode", "T", "B", "ms/doc", "ns/token", "GB/s",
           "of copy");
    FILE *fc = csv ? fopen(csv, "w") : NULL;
    if (csv && !fc) {
        fprintf(stderr, "cannot write %s\n", csv);
        return 1;
    }
    if (fc) fprintf(fc, "mode,path,T,B,D,K,ms_per_doc,gbps,copy_gbps\n");

    std::vector<std::string> Ts = split(Tlist), modes = split(modes_s);
    for (const std::string &ts : Ts) {
        const int64_t T = atoll(ts.c_str());
        const int64_t B = std::max<int64_t>(1, (tokens + T - 1) / T);
        const size_t doc = (size_t)(T * D);
        for (const std::string &mode : modes) {
            setenv("SPECTRAL_CUDA_MIX", mode.c_str(), 1);
            char err[512] = "";
            sp_backend *be = sp_backend_cuda_create(0, err, sizeof err);
            if (!be) {
                fprintf(stderr, "create: %s\n", err);
                return 1;
            }
            const size_t ws = be->ops->mix_workspace_size(be, T, D);
            float *u = (float *)be->ops->buffer_alloc(be, doc * B * sizeof(float));
            float *h = (float *)be->ops->buffer_alloc(be, doc * B * sizeof(float));
            float *filt = (float *)be->ops->buffer_alloc(be, (size_t)(D * K * 2) * sizeof(float));
            float *bias = (float *)be->ops->buffer_alloc(be, (size_t)D * sizeof(float));
            void *w = be->ops->buffer_alloc(be, ws ? ws : 256);
            if (!u || !h || !filt || !bias || !w) {
                printf("%-8s %9lld  skipped: %s\n", mode.c_str(), (long long)T, be->err);
                be->ops->buffer_free(be, u);
                be->ops->buffer_free(be, h);
                be->ops->buffer_free(be, filt);
                be->ops->buffer_free(be, bias);
                be->ops->buffer_free(be, w);
                be->ops->destroy(be);
                continue;
            }
            CK(cudaMemset(u, 0, doc * B * sizeof(float)));
            CK(cudaMemset(h, 0, doc * B * sizeof(float)));
            CK(cudaMemset(filt, 0, (size_t)(D * K * 2) * sizeof(float)));
            CK(cudaMemset(bias, 0, (size_t)D * sizeof(float)));
            CK(cudaDeviceSynchronize());
            /* forced paths that cannot take the shape fall back to cufft;
             * a forced fused run with a workspace is such a fallback */
            std::string path = mode;
            if (mode == "fused" && ws) path = "cufft*";
            std::vector<double> t;
            int bad = 0;
            for (int r = 0; r < reps + 1 && !bad; r++) {
                if (be->ops->synchronize(be)) bad = 1;
                const double t0 = now_s();
                for (int64_t b = 0; b < B && !bad; b++)
                    if (be->ops->spectral_mix(be, u + b * doc, filt, bias, K, T, D, w,
                                              h + b * doc))
                        bad = 1;
                if (be->ops->synchronize(be)) bad = 1;
                if (r > 0) t.push_back((now_s() - t0) / (double)B); /* first run warms up */
            }
            if (bad) {
                printf("%-8s %9lld  failed: %s\n", mode.c_str(), (long long)T, be->err);
            } else {
                const double s = median(t);
                const double gbps = 3.0 * (double)doc * 4.0 / s / 1e9;
                printf("%-8s %9lld %5lld %12.4f %12.4f %9.0f %7.0f%%\n", path.c_str(), (long long)T,
                       (long long)B, s * 1e3, s * 1e9 / (double)T, gbps, 100.0 * gbps / bw_copy);
                if (fc)
                    fprintf(fc, "%s,%s,%lld,%lld,%lld,%lld,%.6f,%.1f,%.1f\n", mode.c_str(),
                            path.c_str(), (long long)T, (long long)B, (long long)D, (long long)K,
                            s * 1e3, gbps, bw_copy);
            }
            be->ops->buffer_free(be, u);
            be->ops->buffer_free(be, h);
            be->ops->buffer_free(be, filt);
            be->ops->buffer_free(be, bias);
            be->ops->buffer_free(be, w);
            be->ops->destroy(be);
        }
        printf("\n");
    }
    if (fc) fclose(fc);
    return 0;
}
