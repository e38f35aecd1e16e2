# CUDA backend ops against the CPU backend (tests/test_gpu_ops.c). Exits 77
# (reported as skipped) when the machine has no CUDA device.
if(SPECTRAL_HAVE_CUDA)
  spectral_add_c_test(test_gpu_ops test_gpu_ops.c)
  set_tests_properties(test_gpu_ops PROPERTIES SKIP_RETURN_CODE ${SPECTRAL_GPU_SKIP} TIMEOUT 900)
else()
  # Without CUDA only the stub exists: check it fails cleanly.
  spectral_add_c_test(test_gpu_stub test_gpu_ops.c)
  target_compile_definitions(test_gpu_stub PRIVATE SPECTRAL_GPU_STUB_TEST=1)
endif()
