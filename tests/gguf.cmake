# GGUF reader/writer tests (formats/gguf.c, formats/gguf_writer.c).

spectral_add_c_test(test_gguf_malformed test_gguf_malformed.c)
spectral_add_c_test(test_gguf_roundtrip test_gguf_roundtrip.c)

# Interop with the reference Python `gguf` package, both directions.
add_executable(test_gguf_dump test_gguf_dump.c)
target_link_libraries(test_gguf_dump PRIVATE spectral_internal m)
target_include_directories(test_gguf_dump PRIVATE ${PROJECT_SOURCE_DIR})
add_test(NAME test_gguf_interop
  COMMAND ${Python3_EXECUTABLE} ${CMAKE_CURRENT_SOURCE_DIR}/gguf_interop.py
          $<TARGET_FILE:test_gguf_dump> ${CMAKE_CURRENT_BINARY_DIR}/gguf_interop_work)

# libFuzzer harness over the reader and the model loader (clang only).
if(SPECTRAL_FUZZ)
  if(NOT CMAKE_C_COMPILER_ID MATCHES "Clang")
    message(FATAL_ERROR "SPECTRAL_FUZZ needs clang (CMAKE_C_COMPILER=clang)")
  endif()
  # Coverage feedback from inside the library, not just the harness. Only with
  # SPECTRAL_SANITIZE: the sanitizer runtime then supplies the coverage hooks
  # to every other program that links the library.
  if(SPECTRAL_SANITIZE)
    target_compile_options(spectral PRIVATE $<$<COMPILE_LANGUAGE:C>:-fsanitize=fuzzer-no-link>)
  else()
    message(WARNING "SPECTRAL_FUZZ without SPECTRAL_SANITIZE: the library gives the fuzzer no coverage feedback")
  endif()
  add_executable(fuzz_gguf fuzz_gguf.c)
  target_compile_definitions(fuzz_gguf PRIVATE SPECTRAL_FUZZ_MODEL=1)
  target_compile_options(fuzz_gguf PRIVATE -fsanitize=fuzzer,address,undefined -fno-omit-frame-pointer)
  target_link_options(fuzz_gguf PRIVATE -fsanitize=fuzzer,address,undefined)
  target_link_libraries(fuzz_gguf PRIVATE spectral_internal m)
  target_include_directories(fuzz_gguf PRIVATE ${PROJECT_SOURCE_DIR})
  # A short smoke run over the committed seeds; long runs are done by hand.
  # libFuzzer writes new inputs into the first directory, so that one lives
  # in the build tree and the committed seeds stay untouched.
  set(SPECTRAL_FUZZ_CORPUS ${CMAKE_CURRENT_BINARY_DIR}/fuzz_gguf_corpus)
  file(MAKE_DIRECTORY ${SPECTRAL_FUZZ_CORPUS})
  add_test(NAME fuzz_gguf_smoke
    COMMAND fuzz_gguf -runs=2000 -max_len=16384 ${SPECTRAL_FUZZ_CORPUS} ${SPECTRAL_TEST_DATA}/fuzz_seeds)
endif()
