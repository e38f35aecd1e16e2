# Parity against the float64 numpy reference (tools/convert/reference.py).
#   reference_selftest: the reference itself (erf vs math.erf, forward vs a naive O(T^2) DFT model)
#   parity_cpu:         spectral-embed CLI and the C API (api_dump) on the CPU backend
#   parity_cuda:        the C API on the CUDA backend (skipped, exit 77, without CUDA)
# Needs python3 with numpy and gguf.

add_executable(api_dump ${CMAKE_CURRENT_SOURCE_DIR}/api_dump.c)
target_link_libraries(api_dump PRIVATE spectral)

add_test(NAME reference_selftest
  COMMAND ${Python3_EXECUTABLE} ${CMAKE_CURRENT_SOURCE_DIR}/test_reference.py)
set_tests_properties(reference_selftest PROPERTIES LABELS "parity;python" TIMEOUT 120)

if(TARGET spectral-embed)
  add_test(NAME parity_cpu
    COMMAND ${Python3_EXECUTABLE} ${CMAKE_CURRENT_SOURCE_DIR}/parity.py
            --cli $<TARGET_FILE:spectral-embed> --api-dump $<TARGET_FILE:api_dump> --backend cpu)
else()
  add_test(NAME parity_cpu
    COMMAND ${Python3_EXECUTABLE} ${CMAKE_CURRENT_SOURCE_DIR}/parity.py
            --api-dump $<TARGET_FILE:api_dump> --backend cpu)
endif()
set_tests_properties(parity_cpu PROPERTIES LABELS "parity;python" TIMEOUT 300)

add_test(NAME parity_cuda
  COMMAND ${Python3_EXECUTABLE} ${CMAKE_CURRENT_SOURCE_DIR}/parity.py
          --api-dump $<TARGET_FILE:api_dump> --backend cuda)
set_tests_properties(parity_cuda PROPERTIES LABELS "parity;python;gpu" TIMEOUT 300
  SKIP_RETURN_CODE ${SPECTRAL_GPU_SKIP})
