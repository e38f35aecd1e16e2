/* bench_gemm - one tile's GEMM (128 rows, the CPU backend's tile) on one
 * thread: the paths the CPU backend can take, and oneDNN's when built with
 * it (a development aid for docs/precision.md's choice, not installed).
 *
 *   build/tools/bench/bench_gemm [-r REPS] [ROWSxINxOUT ...]
 *
 * For each shape, GFLOP/s (2 x rows x IN x OUT per call, best of REPS
 * batches of 10 calls, thread CPU time so a busy machine's other processes
 * do not count) of:
 *   openblas     the backend's linear op on float32 weights (cblas_sgemm,
 *                which packs the weights inside every call)
 *   f32 packed   linear_packed, F32: weights packed once, our AVX2 kernel
 *   int8 packed  linear_packed, INT8 on Q8_0 weights (activations quantized
 *                in the call, counted)
 *   bf16 packed  linear_packed, BF16 (emulated where AVX512_BF16 is missing)
 *   onednn f32 / u8s8s32 / bf16: a matmul primitive with its weights
 *                reordered once to the primitive's own layout, and its
 *                implementation's name (only with -DSPECTRAL_BENCH_ONEDNN:
 *                tools/bench/CMakeLists.txt adds it when libdnnl-dev is found;
 *                run it with OMP_NUM_THREADS=1). u8s8s32 is the int8 product
 *                without Q8_0's per-32-block scales, which oneDNN 2.6's
 *                matmul cannot apply. */
#define _POSIX_C_SOURCE 200809L
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "formats/gguf.h"
#include "formats/quant.h"
#include "kernels/backend.h"
#include "spectral.h"

#ifdef SPECTRAL_BENCH_ONEDNN
#include <oneapi/dnnl/dnnl.h>
#endif

static double cpu_now(void) {
    struct timespec t;
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &t);
    return (double)t.tv_sec + 1e-9 * (double)t.tv_nsec;
}

typedef struct {
    sp_backend *be;
    const float *x;
    const float *W;     /* openblas */
    const sp_packed *P; /* packed */
    void *ws;
    float *y;
    int64_t rows, IN, OUT;
} call;

static int run_call(const call *c) {
    return c->P ? c->be->ops->linear_packed(c->be, c->x, c->P, NULL, c->rows, SP_ACT_NONE, 0, c->ws, c->y)
                : c->be->ops->linear(c->be, c->x, c->W, NULL, c->rows, c->IN, c->OUT, SP_ACT_NONE, 0, c->y);
}

/* Best seconds per call over reps batches of 10. */
static double best_time(int (*fn)(const void *), const void *arg, int reps) {
    double best = 1e30;
    fn(arg); /* warm-up */
    for (int r = 0; r < reps; r++) {
        const double t0 = cpu_now();
        for (int i = 0; i < 10; i++) fn(arg);
        const double t = (cpu_now() - t0) / 10;
        if (t < best) best = t;
    }
    return best;
}

static int call_fn(const void *arg) { return run_call(arg); }

#ifdef SPECTRAL_BENCH_ONEDNN
typedef struct {
    dnnl_primitive_t prim;
    dnnl_stream_t stream;
    dnnl_exec_arg_t args[3];
} dnnl_call;

static int dnnl_fn(const void *arg) {
    const dnnl_call *d = arg;
    return dnnl_primitive_execute(d->prim, d->stream, 3, d->args) != dnnl_success ||
           dnnl_stream_wait(d->stream) != dnnl_success;
}

/* A matmul rows x IN x OUT with weights given OUT x IN and reordered once.
 * Returns seconds per call, or 0 when this oneDNN has no implementation. */
static double onednn_time(dnnl_engine_t eng, dnnl_stream_t str, int64_t rows, int64_t IN, int64_t OUT,
                          dnnl_data_type_t st, dnnl_data_type_t wt, dnnl_data_type_t dt, int reps,
                          const char **impl) {
    dnnl_memory_desc_t smd, wmd, wany, dmd;
    dnnl_dims_t sd = {rows, IN}, wd = {IN, OUT}, dd = {rows, OUT};
    dnnl_matmul_desc_t md;
    dnnl_primitive_desc_t pd = NULL, rpd = NULL;
    dnnl_primitive_t prim = NULL, reorder = NULL;
    dnnl_memory_t src = NULL, wuser = NULL, w = NULL, dst = NULL;
    double t = 0;
    *impl = "not implemented on this CPU";
    if (dnnl_memory_desc_init_by_tag(&smd, 2, sd, st, dnnl_ab) ||
        dnnl_memory_desc_init_by_tag(&wmd, 2, wd, wt, dnnl_ba) ||
        dnnl_memory_desc_init_by_tag(&wany, 2, wd, wt, dnnl_format_tag_any) ||
        dnnl_memory_desc_init_by_tag(&dmd, 2, dd, dt, dnnl_ab) || dnnl_matmul_desc_init(&md, &smd, &wany, NULL, &dmd) ||
        dnnl_primitive_desc_create(&pd, &md, NULL, eng, NULL))
        return 0;
    const char *name = NULL;
    dnnl_primitive_desc_query(pd, dnnl_query_impl_info_str, 0, &name);
    const dnnl_memory_desc_t *wmd_p = dnnl_primitive_desc_query_md(pd, dnnl_query_weights_md, 0);
    void *h = NULL;
    if (!dnnl_memory_create(&src, &smd, eng, DNNL_MEMORY_ALLOCATE) &&
        !dnnl_memory_create(&wuser, &wmd, eng, DNNL_MEMORY_ALLOCATE) &&
        !dnnl_memory_create(&w, wmd_p, eng, DNNL_MEMORY_ALLOCATE) &&
        !dnnl_memory_create(&dst, &dmd, eng, DNNL_MEMORY_ALLOCATE) && !dnnl_memory_get_data_handle(src, &h)) {
        memset(h, 1, dnnl_memory_desc_get_size(&smd));
        dnnl_memory_get_data_handle(wuser, &h);
        memset(h, 1, dnnl_memory_desc_get_size(&wmd));
        dnnl_exec_arg_t ra[2] = {{DNNL_ARG_FROM, wuser}, {DNNL_ARG_TO, w}};
        if (!dnnl_reorder_primitive_desc_create(&rpd, &wmd, eng, wmd_p, eng, NULL) &&
            !dnnl_primitive_create(&reorder, rpd) && !dnnl_primitive_execute(reorder, str, 2, ra) &&
            !dnnl_stream_wait(str) && !dnnl_primitive_create(&prim, pd)) {
            dnnl_call d = {prim, str, {{DNNL_ARG_SRC, src}, {DNNL_ARG_WEIGHTS, w}, {DNNL_ARG_DST, dst}}};
            t = best_time(dnnl_fn, &d, reps);
            *impl = name ? name : "?";
        }
    }
    if (prim) dnnl_primitive_destroy(prim);
    if (reorder) dnnl_primitive_destroy(reorder);
    if (rpd) dnnl_primitive_desc_destroy(rpd);
    dnnl_primitive_desc_destroy(pd);
    dnnl_memory_destroy(src);
    dnnl_memory_destroy(wuser);
    dnnl_memory_destroy(w);
    dnnl_memory_destroy(dst);
    return t;
}
#endif

int main(int argc, char **argv) {
    int reps = 20;
    int64_t shapes[16][3], n_shapes = 0;
    for (int i = 1; i < argc; i++) {
        long long r, a, b;
        if (!strcmp(argv[i], "-r") && i + 1 < argc) {
            reps = atoi(argv[++i]);
        } else if (n_shapes < 16 && sscanf(argv[i], "%lldx%lldx%lld", &r, &a, &b) == 3 && r > 0 && a > 0 &&
                   b > 0 && a % 32 == 0) {
            shapes[n_shapes][0] = r;
            shapes[n_shapes][1] = a;
            shapes[n_shapes++][2] = b;
        } else {
            fprintf(stderr, "usage: bench_gemm [-r REPS] [ROWSxINxOUT ...] (IN a multiple of 32)\n");
            return 2;
        }
    }
    if (reps < 1) reps = 1;
    if (!n_shapes) {
        const int64_t d[5][3] = {{128, 256, 1024}, {128, 1024, 256}, {128, 256, 384}, {128, 768, 3072}, {128, 3072, 768}};
        memcpy(shapes, d, sizeof d);
        n_shapes = 5;
    }
    char err[256];
    sp_backend *be = sp_backend_cpu_create(1, err, sizeof err);
    if (!be) {
        fprintf(stderr, "bench_gemm: %s\n", err);
        return 1;
    }
    printf("bench_gemm: one thread, one tile; %s\n", spectral_system_info());
#ifdef SPECTRAL_BENCH_ONEDNN
    dnnl_engine_t eng;
    dnnl_stream_t str;
    if (dnnl_engine_create(&eng, dnnl_cpu, 0) || dnnl_stream_create(&str, eng, dnnl_stream_default_flags)) {
        fprintf(stderr, "bench_gemm: oneDNN engine\n");
        return 1;
    }
    const dnnl_version_t *v = dnnl_version();
    printf("oneDNN %d.%d.%d\n", v->major, v->minor, v->patch);
#endif
    printf("\n| rows x IN x OUT | openblas | f32 packed | int8 packed | bf16 packed |"
#ifdef SPECTRAL_BENCH_ONEDNN
           " onednn f32 | onednn u8s8s32 | onednn bf16 |"
#endif
           "\n|---|--:|--:|--:|--:|"
#ifdef SPECTRAL_BENCH_ONEDNN
           "--:|--:|--:|"
#endif
           "\n");
    for (int64_t s = 0; s < n_shapes; s++) {
        const int64_t rows = shapes[s][0], IN = shapes[s][1], OUT = shapes[s][2];
        float *x = malloc((size_t)(rows * IN) * sizeof(float)), *W = malloc((size_t)(OUT * IN) * sizeof(float));
        float *y = malloc((size_t)(rows * OUT) * sizeof(float));
        const size_t rb = sp_quant_row_bytes(SP_TENSOR_Q8_0, IN);
        uint8_t *q = malloc(rb * (size_t)OUT);
        if (!x || !W || !y || !q) return 1;
        for (int64_t i = 0; i < rows * IN; i++) x[i] = (float)((i * 2654435761u) % 1000) / 500.0f - 1.0f;
        for (int64_t i = 0; i < OUT * IN; i++) W[i] = (float)((i * 40503u) % 1000) / 5000.0f - 0.1f;
        for (int64_t o = 0; o < OUT; o++) sp_quantize_row(SP_TENSOR_Q8_0, W + o * IN, q + rb * (size_t)o, IN);
        const double flop = 2.0 * (double)rows * (double)IN * (double)OUT;
        call c = {be, x, W, NULL, NULL, y, rows, IN, OUT};
        printf("| %lldx%lldx%lld | %.1f |", (long long)rows, (long long)IN, (long long)OUT,
               flop / best_time(call_fn, &c, reps) / 1e9);
        const struct {
            sp_weight_type t;
            const void *w;
            sp_compute compute;
        } packed[3] = {{SP_WEIGHT_F32, W, SP_COMPUTE_F32}, {SP_WEIGHT_Q8_0, q, SP_COMPUTE_INT8},
                       {SP_WEIGHT_F32, W, SP_COMPUTE_BF16}};
        for (int k = 0; k < 3; k++) {
            sp_packed *P = be->ops->pack_weight(be, packed[k].t, packed[k].w, OUT, IN, packed[k].compute);
            void *ws = P ? malloc(be->ops->linear_packed_workspace_size(be, P, rows) + 1) : NULL;
            if (!P || !ws) {
                printf(" - |");
            } else {
                c.P = P;
                c.ws = ws;
                printf(" %.1f |", flop / best_time(call_fn, &c, reps) / 1e9);
            }
            free(ws);
            if (P) be->ops->packed_free(be, P);
        }
#ifdef SPECTRAL_BENCH_ONEDNN
        const dnnl_data_type_t types[3][3] = {{dnnl_f32, dnnl_f32, dnnl_f32}, {dnnl_u8, dnnl_s8, dnnl_s32},
                                              {dnnl_bf16, dnnl_bf16, dnnl_f32}};
        const char *impl[3];
        for (int k = 0; k < 3; k++) {
            const double t = onednn_time(eng, str, rows, IN, OUT, types[k][0], types[k][1], types[k][2], reps, &impl[k]);
            if (t > 0) printf(" %.1f (%s) |", flop / t / 1e9, impl[k]);
            else printf(" %s |", impl[k]);
        }
#endif
        printf("\n");
        fflush(stdout);
        free(x);
        free(W);
        free(y);
        free(q);
    }
    be->ops->destroy(be);
    return 0;
}
