# CPU backend ops against naive double-precision references.
spectral_add_c_test(test_cpu_ops test_cpu_ops.c)
