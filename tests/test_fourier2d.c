/* kernels/cpu/fourier2d_cpu.c through the CPU backend's ops table: Re(FFT2(x))
 * against a naive double-precision 2-D DFT, on even and odd shapes, T or D of
 * 1, an unaligned input (FFTW_UNALIGNED plan), repeated calls (cached plans),
 * and bad arguments (errors, never aborts). Also checks SP_ACT_GELU_TANH and
 * SP_ACT_TANH (FNet's activation and pooler). */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "kernels/backend.h"
#include "check.h"

#define PI 3.14159265358979323846

static double naive(const float *x, int64_t T, int64_t D, int64_t t, int64_t k) {
    double s = 0.0;
    for (int64_t a = 0; a < T; a++)
        for (int64_t b = 0; b < D; b++) {
            /* exact phase reduction keeps the reference accurate */
            int64_t ph = ((a * t) % T) * D + ((b * k) % D) * T; /* over T*D */
            s += x[a * D + b] * cos(2.0 * PI * (double)(ph % (T * D)) / (double)(T * D));
        }
    return s;
}

static void test_shape(sp_backend *be, int64_t T, int64_t D, int misalign) {
    size_t ws_bytes = be->ops->fourier2d_workspace_size(be, T, D);
    float *xbuf = malloc((size_t)(T * D + 4) * sizeof(float));
    float *out = malloc((size_t)(T * D) * sizeof(float));
    void *ws = malloc(ws_bytes ? ws_bytes : 1);
    float *x = xbuf + misalign;
    for (int64_t i = 0; i < T * D; i++) x[i] = (float)((rand() % 2001) - 1000) / 1000.0f;
    double maxerr = 0.0, maxref = 0.0;
    for (int rep = 0; rep < 2; rep++) {
        memset(out, 0, (size_t)(T * D) * sizeof(float));
        int rc = be->ops->fourier2d_real(be, x, T, D, ws, out);
        CHECK(rc == 0, be->err);
        for (int64_t t = 0; t < T; t++)
            for (int64_t k = 0; k < D; k++) {
                double r = naive(x, T, D, t, k);
                if (fabs(r) > maxref) maxref = fabs(r);
                if (fabs(r - out[t * D + k]) > maxerr) maxerr = fabs(r - out[t * D + k]);
            }
    }
    double rel = maxerr / (maxref > 0 ? maxref : 1.0);
    char what[128];
    snprintf(what, sizeof what, "fourier2d T=%lld D=%lld misalign=%d rel err %.3g", (long long)T,
             (long long)D, misalign, rel);
    printf("%s\n", what);
    CHECK(rel < 1e-5, what);
    free(xbuf);
    free(out);
    free(ws);
}

int main(void) {
    char err[256];
    sp_backend *be = sp_backend_cpu_create(2, err, sizeof err);
    if (!be) {
        printf("FAIL: %s\n", err);
        return 1;
    }
    srand(7);
    const int64_t shapes[][2] = {{1, 1}, {1, 8}, {8, 1}, {2, 3}, {7, 5}, {5, 64}, {64, 64}, {33, 17}, {128, 48}};
    for (size_t i = 0; i < sizeof shapes / sizeof shapes[0]; i++)
        test_shape(be, shapes[i][0], shapes[i][1], 0);
    test_shape(be, 7, 5, 1);
    test_shape(be, 16, 12, 3);

    /* bad arguments */
    float x[4] = {1, 2, 3, 4}, out[8];
    char ws[256];
    CHECK(be->ops->fourier2d_real(be, x, -1, 2, ws, out) != 0, "negative T rejected");
    CHECK(be->ops->fourier2d_real(be, NULL, 2, 2, ws, out) != 0, "NULL x rejected");
    CHECK(be->ops->fourier2d_real(be, x, 2, 2, NULL, out) != 0, "NULL workspace rejected");
    CHECK(be->ops->fourier2d_real(be, x, 2, 2, ws, x) != 0, "aliased out rejected");
    CHECK(be->ops->fourier2d_real(be, x, 0, 2, ws, out) == 0, "T = 0 is a no-op");

    /* SP_ACT_GELU_TANH through linear: W = identity, b = 0. */
    float W[4] = {1, 0, 0, 1}, in[6] = {-3.0f, -0.5f, 0.0f, 0.7f, 2.0f, 10.0f}, y[6];
    CHECK(be->ops->linear(be, in, W, NULL, 3, 2, 2, SP_ACT_GELU_TANH, 0, y) == 0, "gelu_tanh linear");
    for (int i = 0; i < 6; i++) {
        double v = in[i];
        double r = 0.5 * v * (1.0 + tanh(sqrt(2.0 / PI) * (v + 0.044715 * v * v * v)));
        CHECK(fabs(y[i] - r) < 1e-6 * (1.0 + fabs(r)), "gelu_tanh value");
    }
    CHECK(be->ops->linear(be, in, W, NULL, 3, 2, 2, SP_ACT_GELU_TANH, 1, y) != 0,
          "gelu_tanh with accumulate rejected");
    /* SP_ACT_TANH after the bias: y = tanh(x + b). */
    float bias[2] = {0.25f, -1.5f};
    CHECK(be->ops->linear(be, in, W, bias, 3, 2, 2, SP_ACT_TANH, 0, y) == 0, "tanh linear");
    for (int i = 0; i < 6; i++) {
        double r = tanh((double)in[i] + bias[i % 2]);
        CHECK(fabs(y[i] - r) < 1e-6, "tanh value");
    }
    be->ops->destroy(be);
    return check_report("test_fourier2d");
}
