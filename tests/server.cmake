# spectral-server (tools/server/spectral-server.c): end to end against a real server
# on 127.0.0.1, a bounded load test, and a libFuzzer harness over its request
# parser. Only when the server was built (libmicrohttpd and jansson found).
if(TARGET spectral-server)
  set(spectral_server_args $<TARGET_FILE:spectral-server> $<TARGET_FILE:spectral-embed>
      ${PROJECT_SOURCE_DIR}/models/spectral-default.gguf)
  add_test(NAME test_server
    COMMAND ${Python3_EXECUTABLE} ${CMAKE_CURRENT_SOURCE_DIR}/test_server.py api ${spectral_server_args}
            ${SPECTRAL_TEST_DATA}/byte-model/spectral-byte.gguf)
  add_test(NAME test_server_ops
    COMMAND ${Python3_EXECUTABLE} ${CMAKE_CURRENT_SOURCE_DIR}/test_server.py ops ${spectral_server_args}
            ${SPECTRAL_TEST_DATA}/byte-model/spectral-byte.gguf)
  add_test(NAME test_server_openai
    COMMAND ${Python3_EXECUTABLE} ${CMAKE_CURRENT_SOURCE_DIR}/test_server.py openai ${spectral_server_args}
            ${SPECTRAL_TEST_DATA}/byte-model/spectral-byte.gguf)
  set_tests_properties(test_server_openai PROPERTIES SKIP_RETURN_CODE 77)
  # 24 clients for 20 s (10 s under the sanitizers, where RSS is not the
  # server's own: ASan's shadow memory and quarantine, so no RSS bound).
  if(SPECTRAL_SANITIZE)
    set(spectral_load_args --seconds 10 --no-rss)
  else()
    set(spectral_load_args --seconds 20)
  endif()
  add_test(NAME test_server_load
    COMMAND ${Python3_EXECUTABLE} ${CMAKE_CURRENT_SOURCE_DIR}/server_load.py ${spectral_server_args}
            --clients 24 ${spectral_load_args})
  # Each starts servers on port 0 (the kernel picks a free one) and the load
  # test wants the CPUs to itself: not alongside the other server tests.
  set_tests_properties(test_server test_server_ops test_server_openai test_server_load PROPERTIES
    RESOURCE_LOCK spectral_server TIMEOUT 300)

  if(SPECTRAL_FUZZ)
    add_executable(fuzz_server_request fuzz_server_request.c ${PROJECT_SOURCE_DIR}/tools/server/server_api.c)
    target_include_directories(fuzz_server_request PRIVATE ${PROJECT_SOURCE_DIR}/tools/server)
    target_compile_options(fuzz_server_request PRIVATE -fsanitize=fuzzer,address,undefined -fno-omit-frame-pointer)
    target_link_options(fuzz_server_request PRIVATE -fsanitize=fuzzer,address,undefined)
    pkg_check_modules(SPECTRAL_FUZZ_JANSSON REQUIRED IMPORTED_TARGET jansson)
    target_link_libraries(fuzz_server_request PRIVATE PkgConfig::SPECTRAL_FUZZ_JANSSON)
    # Seeds: one request of each shape; libFuzzer writes new inputs into the
    # build-tree corpus, never into the sources.
    set(spectral_server_seeds ${CMAKE_CURRENT_BINARY_DIR}/fuzz_server_seeds)
    file(MAKE_DIRECTORY ${spectral_server_seeds} ${CMAKE_CURRENT_BINARY_DIR}/fuzz_server_corpus)
    file(WRITE ${spectral_server_seeds}/text "{\"input\": \"hello world\", \"model\": \"m\"}")
    file(WRITE ${spectral_server_seeds}/texts "{\"input\": [\"a\", \"b c\"], \"encoding_format\": \"base64\", \"user\": \"u\"}")
    file(WRITE ${spectral_server_seeds}/ids "{\"input\": [1, 2, 999], \"encoding_format\": \"float\", \"dimensions\": 3}")
    file(WRITE ${spectral_server_seeds}/idss "{\"input\": [[1, 2], [3]], \"model\": null}")
    file(WRITE ${spectral_server_seeds}/escapes "{\"input\": \"\\u00e9\\ud83c\\udf89\\u0000\\n\"}")
    file(WRITE ${spectral_server_seeds}/bearer "Bearer key-123")
    add_test(NAME fuzz_server_request_smoke
      COMMAND fuzz_server_request -runs=5000 -max_len=4096 ${CMAKE_CURRENT_BINARY_DIR}/fuzz_server_corpus
              ${spectral_server_seeds})
  endif()
endif()
