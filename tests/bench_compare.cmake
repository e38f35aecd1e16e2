# tools/bench/bench_compare.py without PyTorch (CI never has it): the report from
# synthetic rows, the spectral-bench / spectral-embed command lines it runs,
# and a clear message when torch is missing. Needs python3 with numpy and gguf.
if(TARGET spectral-bench AND TARGET spectral-embed)
  add_test(NAME bench_compare_selftest
    COMMAND ${Python3_EXECUTABLE} ${CMAKE_CURRENT_SOURCE_DIR}/test_bench_compare.py
            $<TARGET_FILE:spectral-bench> $<TARGET_FILE:spectral-embed>)
else()
  add_test(NAME bench_compare_selftest
    COMMAND ${Python3_EXECUTABLE} ${CMAKE_CURRENT_SOURCE_DIR}/test_bench_compare.py)
endif()
set_tests_properties(bench_compare_selftest PROPERTIES LABELS "bench;tools;python" TIMEOUT 120)
