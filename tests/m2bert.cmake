# The m2bert architecture (models/m2bert.c, kernels/cpu/hyena_cpu.c and the
# CUDA backend's counterparts).

# Its backend ops against naive double-precision references; the CUDA run
# skips (77) without a device.
spectral_add_c_test(test_m2bert_ops test_m2bert_ops.c)
add_test(NAME test_m2bert_ops_cuda COMMAND test_m2bert_ops --cuda)
set_tests_properties(test_m2bert_ops_cuda PROPERTIES SKIP_RETURN_CODE ${SPECTRAL_GPU_SKIP})

# Parity with the reference PyTorch code's outputs (tests/data/m2bert, made by
# tests/fixtures/make_m2bert_fixture.py): tiny and published widths, padded
# and unpadded; over-long documents and broken files refused; quantized files.
set(M2BERT_PARITY ${Python3_EXECUTABLE} ${CMAKE_CURRENT_SOURCE_DIR}/m2bert_parity.py
    $<TARGET_FILE:fnet_dump> --data ${SPECTRAL_TEST_DATA}/m2bert)
set(M2BERT_PROGRAMS)
foreach(tool quantize embed server)
  if(TARGET spectral-${tool})
    list(APPEND M2BERT_PROGRAMS --${tool} $<TARGET_FILE:spectral-${tool}>)
  endif()
endforeach()
add_test(NAME test_m2bert_parity COMMAND ${M2BERT_PARITY} ${M2BERT_PROGRAMS})
add_test(NAME test_m2bert_parity_cuda COMMAND ${M2BERT_PARITY} --backend cuda --tol 1e-4)
set_tests_properties(test_m2bert_parity test_m2bert_parity_cuda PROPERTIES
  SKIP_RETURN_CODE ${SPECTRAL_GPU_SKIP} TIMEOUT 300)

# The converter without torch: the tiny fixture round-trips through a
# reference-style checkpoint; --dtype f16/bf16; refusals by name.
add_test(NAME test_convert_m2bert
  COMMAND ${Python3_EXECUTABLE} ${CMAKE_CURRENT_SOURCE_DIR}/test_convert_m2bert.py
          $<TARGET_FILE:fnet_dump> --data ${SPECTRAL_TEST_DATA}/m2bert/tiny)
set_tests_properties(test_convert_m2bert PROPERTIES SKIP_RETURN_CODE 77 TIMEOUT 300)

# The derived-table cache, padding and --mem-limit through the API.
add_executable(test_m2bert_runtime test_m2bert_runtime.c)
target_link_libraries(test_m2bert_runtime PRIVATE spectral_internal m)
target_include_directories(test_m2bert_runtime PRIVATE ${PROJECT_SOURCE_DIR} ${CMAKE_CURRENT_SOURCE_DIR})
add_test(NAME test_m2bert_runtime COMMAND test_m2bert_runtime ${SPECTRAL_TEST_DATA}/m2bert/tiny)
