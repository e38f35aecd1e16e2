# The fnet architecture (models/fnet.c, kernels/cpu/fourier2d_cpu.c): parity
# against committed transformers FNetModel outputs (tests/data/fnet, made by
# tests/fixtures/make_fnet_fixture.py), and refusal of documents past the context length.
add_executable(fnet_dump fnet_dump.c)
target_link_libraries(fnet_dump PRIVATE spectral_internal m)
target_include_directories(fnet_dump PRIVATE ${PROJECT_SOURCE_DIR})
add_test(NAME test_fnet_parity
  COMMAND ${Python3_EXECUTABLE} ${CMAKE_CURRENT_SOURCE_DIR}/fnet_parity.py
          $<TARGET_FILE:fnet_dump> --data ${SPECTRAL_TEST_DATA}/fnet)
add_test(NAME test_fnet_parity_cuda
  COMMAND ${Python3_EXECUTABLE} ${CMAKE_CURRENT_SOURCE_DIR}/fnet_parity.py
          $<TARGET_FILE:fnet_dump> --data ${SPECTRAL_TEST_DATA}/fnet --backend cuda)
set_tests_properties(test_fnet_parity_cuda PROPERTIES SKIP_RETURN_CODE ${SPECTRAL_GPU_SKIP})

# The CPU 2-D Fourier op and the gelu_new activation against naive references.
spectral_add_c_test(test_fourier2d test_fourier2d.c)
