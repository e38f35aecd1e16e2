# CUDA backend ops against the CPU backend (tests/test_gpu_ops.c). Exits 77
# (reported as skipped) when the machine has no CUDA device.
if(SPECTRAL_HAVE_CUDA)
  spectral_add_c_test(test_gpu_ops test_gpu_ops.c)
  set_tests_properties(test_gpu_ops PROPERTIES SKIP_RETURN_CODE ${SPECTRAL_GPU_SKIP} TIMEOUT 900)

  # The loader of the CUDA module (tests/test_cuda_loader.c): needs no GPU.
  # Two shared objects it must refuse: a stale module and a foreign library.
  foreach(kind STALE FOREIGN)
    string(TOLOWER ${kind} name)
    add_library(test_cuda_fake_${name} MODULE cuda_fake_module.c)
    target_compile_definitions(test_cuda_fake_${name} PRIVATE FAKE_${kind}=1)
    target_include_directories(test_cuda_fake_${name} PRIVATE ${PROJECT_SOURCE_DIR} ${PROJECT_SOURCE_DIR}/runtime)
  endforeach()
  add_executable(test_cuda_loader test_cuda_loader.c)
  target_link_libraries(test_cuda_loader PRIVATE spectral_internal Threads::Threads)
  add_dependencies(test_cuda_loader test_cuda_fake_stale test_cuda_fake_foreign)
  macro(loader_test name)
    add_test(NAME test_cuda_loader_${name} COMMAND test_cuda_loader ${ARGN})
  endmacro()
  loader_test(missing missing ${CMAKE_CURRENT_BINARY_DIR}/no-such-dir/libspectral-cuda.so)
  loader_test(notelf notelf ${CMAKE_CURRENT_SOURCE_DIR}/test_cuda_loader.c)
  loader_test(foreign foreign $<TARGET_FILE:test_cuda_fake_foreign>)
  loader_test(stale stale $<TARGET_FILE:test_cuda_fake_stale>)
  loader_test(real real $<TARGET_FILE:spectral-cuda>)
  loader_test(real_dir real $<TARGET_FILE_DIR:spectral-cuda>)
  loader_test(search search)
else()
  # Without CUDA only the stub exists: check it fails cleanly.
  spectral_add_c_test(test_gpu_stub test_gpu_ops.c)
  target_compile_definitions(test_gpu_stub PRIVATE SPECTRAL_GPU_STUB_TEST=1)
endif()
