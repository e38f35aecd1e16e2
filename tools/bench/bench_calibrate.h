/* bench_calibrate - the machine's roofline, measured by spectral-bench in
 * the same process and with the same thread count as the rows it prints.
 *
 *   double gemm = bench_calib_sgemm(2048, n_threads);        // GFLOP/s, CPU
 *   double bw   = bench_calib_memcpy(256u << 20, n_threads); // GB/s, CPU
 *   double gpu  = bench_calib_linear(cuda_backend, 2048);    // GFLOP/s, any backend
 *
 * Each returns 0 when it could not measure (out of memory, no threads). */
#ifndef SPECTRAL_BENCH_CALIBRATE_H
#define SPECTRAL_BENCH_CALIBRATE_H

#include <stddef.h>
#include <stdint.h>

typedef struct sp_backend sp_backend;

/* The n-thread sgemm peak, whichever OpenBLAS flavour is linked (serial,
 * pthreads or OpenMP): n_threads concurrent single-threaded cblas_sgemm of
 * N x N x N, one per thread, each on its own matrices (allocated and first
 * touched by that thread). After a warm-up, rounds of one sgemm per thread
 * start together; a round's rate is n_threads * 2 N^3 over the time from the
 * first start to the last finish. At least 3 rounds, up to 10 until a second
 * has passed; the best round's aggregate GFLOP/s is returned.
 *
 * With a threaded OpenBLAS its thread count is set to 1 for that measurement;
 * then one N^3 sgemm also runs on OpenBLAS's own n threads, and the better of
 * the two rates is returned (its thread count is restored afterwards). The
 * threaded call can be faster (one packed panel shared by all threads), and
 * the roof must be the machine's best sgemm, not our way of calling it. */
double bench_calib_sgemm(int64_t N, int n_threads);

/* Memory bandwidth: a memcpy of `bytes` split over n_threads threads, best
 * of 5, as bytes read + written per second (GB/s). */
double bench_calib_memcpy(size_t bytes, int n_threads);

/* GEMM peak through a backend's linear op (used for CUDA): N x N x N, one
 * warm-up, best of 5 batches of 4 calls, GFLOP/s. */
double bench_calib_linear(sp_backend *be, int64_t N);

#endif
