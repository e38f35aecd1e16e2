# Compressed weights (formats/quant.c, formats/codec_sst.c, runtime/quantize.c,
# tools/quantize/spectral-quantize.c):
#   test_codecs:   C unit tests (blocks, sst round trips, index validation,
#                  malformed compressed tensors refused by the loader)
#   test_quantize: against numpy and gguf-py (byte-exact Q8_0/Q4_0, sst vs
#                  numpy.fft.rfft2), the CLI, and a quantized model's outputs
#                  vs the numpy reference forward (tools/convert/reference.py)
#   test_quant_compute: the CPU backend computing with Q8_0/Q4_0 weights kept
#                  quantized: outputs bit-identical to a float32 file with the
#                  dequantized weights, the decode scratch in the arena plan
#                  (exact --mem-limit), lower peak RSS than float32
add_executable(test_codecs test_codecs.c)
target_link_libraries(test_codecs PRIVATE spectral_internal m)
target_include_directories(test_codecs PRIVATE ${PROJECT_SOURCE_DIR} ${CMAKE_CURRENT_SOURCE_DIR})
set(SPECTRAL_QUANT_WORK ${CMAKE_CURRENT_BINARY_DIR}/quantize_work)
file(MAKE_DIRECTORY ${SPECTRAL_QUANT_WORK})
add_test(NAME test_codecs
  COMMAND test_codecs ${SPECTRAL_TEST_DATA}/seed/model.gguf ${SPECTRAL_QUANT_WORK})
set_tests_properties(test_codecs PROPERTIES TIMEOUT 120)
if(TARGET spectral-quantize AND TARGET spectral-embed)
  add_test(NAME test_quantize
    COMMAND ${Python3_EXECUTABLE} ${CMAKE_CURRENT_SOURCE_DIR}/test_quantize.py
            --quantize $<TARGET_FILE:spectral-quantize> --embed $<TARGET_FILE:spectral-embed>
            --dump $<TARGET_FILE:test_codecs> --data ${SPECTRAL_TEST_DATA} --work ${SPECTRAL_QUANT_WORK})
  set_tests_properties(test_quantize PROPERTIES LABELS "python" TIMEOUT 300 SKIP_RETURN_CODE 77)
  add_test(NAME test_quant_compute
    COMMAND ${Python3_EXECUTABLE} ${CMAKE_CURRENT_SOURCE_DIR}/test_quant_compute.py
            --quantize $<TARGET_FILE:spectral-quantize> --embed $<TARGET_FILE:spectral-embed>
            --data ${SPECTRAL_TEST_DATA} --default ${PROJECT_SOURCE_DIR}/models/spectral-default.gguf
            --work ${CMAKE_CURRENT_BINARY_DIR}/quant_compute_work)
  set_tests_properties(test_quant_compute PROPERTIES LABELS "python" TIMEOUT 300 SKIP_RETURN_CODE 77)
endif()
