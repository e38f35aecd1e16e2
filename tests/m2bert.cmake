# The m2bert architecture (models/m2bert.c, kernels/cpu/hyena_cpu.c and the
# CUDA backend's counterparts).

# Its backend ops against naive double-precision references; the CUDA run
# skips (77) without a device.
spectral_add_c_test(test_m2bert_ops test_m2bert_ops.c)
add_test(NAME test_m2bert_ops_cuda COMMAND test_m2bert_ops --cuda)
set_tests_properties(test_m2bert_ops_cuda PROPERTIES SKIP_RETURN_CODE ${SPECTRAL_GPU_SKIP})
