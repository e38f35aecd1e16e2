# CPU backend ops against naive double-precision references.
spectral_add_c_test(test_cpu_ops test_cpu_ops.c)
# The packed GEMMs (INT8, BF16, F32) at every kernel level this machine runs,
# the AVX-512 code emulated, against an independent reference of backend.h's
# arithmetic, bit for bit; their stated tolerances; dispatch.
spectral_add_c_test(test_gemm_packed test_gemm_packed.c)
