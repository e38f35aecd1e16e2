# CPU backend ops against naive double-precision references.
spectral_add_c_test(test_cpu_ops test_cpu_ops.c)
# The packed GEMMs (INT8, BF16, F32) at every kernel level this machine runs,
# the AVX-512 code emulated, against an independent reference of backend.h's
# arithmetic, bit for bit; their stated tolerances; dispatch.
spectral_add_c_test(test_gemm_packed test_gemm_packed.c)
# clang at -O1 with the sanitizers (the ASan and fuzzing builds) cannot honour
# `#pragma omp simd` and warned (-Wpass-failed) on the CPU kernels: compile
# every kernel file that way with the warning as an error.
# Once, in the unsanitized build (the ASan phase would only repeat it).
find_program(SPECTRAL_CLANG clang)
if(SPECTRAL_CLANG AND NOT SPECTRAL_SANITIZE)
  file(GLOB SPECTRAL_CPU_KERNEL_SOURCES ${PROJECT_SOURCE_DIR}/kernels/cpu/*.c)
  add_test(NAME cpu_kernels_clang_O1_vectorize
    COMMAND sh -c "for f in \"$@\"; do ${SPECTRAL_CLANG} -std=c11 -O1 -fsanitize=address,undefined -fopenmp-simd -Werror=pass-failed -I${PROJECT_SOURCE_DIR} -c \"$f\" -o /dev/null || exit 1; done"
            sh ${SPECTRAL_CPU_KERNEL_SOURCES})
endif()
