# FourierFT adapters (runtime/adapter.c, tools/convert/convert_fourierft.py, spectral-embed --adapter):
#   test_adapter         C API: delta_W vs a float64 direct sum, contexts of one model with and
#                        without adapters, every refusal (random tiny model, no fixture)
#   test_adapter_parity  peft's merged models (tests/data/fourierft, made by
#                        tests/fixtures/make_fourierft_fixture.py) for fnet; the numpy reference
#                        (tools/convert/reference.py) with delta_W applied in numpy for spectralmlp; the
#                        converter on the committed peft adapter directories (no torch needed)
spectral_add_c_test(test_adapter test_adapter.c)
target_link_libraries(test_adapter PRIVATE Threads::Threads)
set(_adapter_cli "")
if(TARGET spectral-embed)
  set(_adapter_cli --cli $<TARGET_FILE:spectral-embed>)
endif()
add_test(NAME test_adapter_parity
  COMMAND ${Python3_EXECUTABLE} ${CMAKE_CURRENT_SOURCE_DIR}/test_adapter.py
          --dump $<TARGET_FILE:test_adapter> ${_adapter_cli} --data ${SPECTRAL_TEST_DATA})
set_tests_properties(test_adapter_parity PROPERTIES LABELS "parity;python" TIMEOUT 300)
add_test(NAME test_adapter_parity_cuda
  COMMAND ${Python3_EXECUTABLE} ${CMAKE_CURRENT_SOURCE_DIR}/test_adapter.py
          --dump $<TARGET_FILE:test_adapter> --data ${SPECTRAL_TEST_DATA} --backend cuda)
set_tests_properties(test_adapter_parity_cuda PROPERTIES LABELS "parity;python;gpu" TIMEOUT 300
  SKIP_RETURN_CODE ${SPECTRAL_GPU_SKIP})
