# Runtime through the public API (arena limits, errors, batch, threads).
spectral_add_c_test(test_runtime test_runtime.c)
target_link_libraries(test_runtime PRIVATE Threads::Threads)

# The CLI: exit codes, formats, streaming order, bad inputs mixed with good ones.
if(TARGET spectral-embed)
  add_test(NAME test_cli COMMAND ${Python3_EXECUTABLE} ${CMAKE_CURRENT_SOURCE_DIR}/test_cli.py
           $<TARGET_FILE:spectral-embed> ${PROJECT_SOURCE_DIR}/tests/data/byte-model/spectral-byte.gguf)
  if(SPECTRAL_SANITIZE)
    set_tests_properties(test_cli PROPERTIES ENVIRONMENT SPECTRAL_SANITIZED=1)
  endif()
endif()

# An app builds against the installed package (CMake and pkg-config).
add_test(NAME test_install COMMAND bash ${CMAKE_CURRENT_SOURCE_DIR}/install/test_install.sh
         ${PROJECT_BINARY_DIR} ${CMAKE_CURRENT_SOURCE_DIR}/install)
set_tests_properties(test_install PROPERTIES TIMEOUT 600)
