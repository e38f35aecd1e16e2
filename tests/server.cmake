# spectral-server (tools/server/): end to end against a real server on
# 127.0.0.1, the clients people run, a bounded load test, and the request
# parsers' fuzz harness. Only when the server was built (libmicrohttpd and
# jansson found).
if(TARGET spectral-server)
  set(spectral_server_args $<TARGET_FILE:spectral-server> $<TARGET_FILE:spectral-embed>
      ${PROJECT_SOURCE_DIR}/models/spectral-default.gguf ${SPECTRAL_TEST_DATA}/byte-model/spectral-byte.gguf)
  #   test_server          the OpenAI schema: numbers equal to spectral-embed's, the bad-request catalogue
  #   test_server_ops      the memory cap, the API key, a full queue, slow clients, draining
  #   test_server_guard    issue 21's defects: ambiguous framing, --request-timeout, the drain's bound and
  #                        refusal of new connections, --request-mem while bodies are received
  #   test_server_compat   TEI's and llama-server's routes, /v1/models/ID, truncation, the training
  #                        length, CORS, the body limit
  #   test_server_openai   the openai package        } SKIP (77) when the package is missing
  #   test_server_clients  huggingface_hub, langchain-openai, openai, with their defaults }
  foreach(part api ops guard compat openai clients)
    set(name test_server_${part})
    if(part STREQUAL "api")
      set(name test_server)
    endif()
    add_test(NAME ${name} COMMAND ${Python3_EXECUTABLE} ${CMAKE_CURRENT_SOURCE_DIR}/test_server.py ${part}
             ${spectral_server_args})
    # Each starts servers on port 0 (the kernel picks a free one) and the load
    # test wants the CPUs to itself: not alongside the other server tests.
    set_tests_properties(${name} PROPERTIES RESOURCE_LOCK spectral_server TIMEOUT 300 SKIP_RETURN_CODE 77)
    if(SPECTRAL_SANITIZE)
      # RSS under ASan is its shadow memory's and quarantine's: no RSS bounds
      set_tests_properties(${name} PROPERTIES ENVIRONMENT SPECTRAL_SANITIZED=1)
    endif()
  endforeach()
  # 24 clients for 20 s (10 s under the sanitizers, and no RSS bound there).
  if(SPECTRAL_SANITIZE)
    set(spectral_load_args --seconds 10 --no-rss)
  else()
    set(spectral_load_args --seconds 20)
  endif()
  list(SUBLIST spectral_server_args 0 3 spectral_load_server)
  add_test(NAME test_server_load
    COMMAND ${Python3_EXECUTABLE} ${CMAKE_CURRENT_SOURCE_DIR}/server_load.py ${spectral_load_server}
            --clients 24 ${spectral_load_args})
  set_tests_properties(test_server_load PROPERTIES RESOURCE_LOCK spectral_server TIMEOUT 300)

  # The request parsers' harness (fuzz_server_request.c). In every build, with
  # fuzz_replay.c's main: the seeds, their prefixes and mutations of them, so
  # its properties are checked in the release and the ASan + UBSan phases; in
  # the fuzz phase (SPECTRAL_FUZZ), with libFuzzer (tools/test.sh runs it).
  set(spectral_server_seeds ${SPECTRAL_TEST_DATA}/fuzz_server_seeds)
  file(GLOB spectral_server_seed_files ${spectral_server_seeds}/*)
  pkg_check_modules(SPECTRAL_TEST_JANSSON REQUIRED IMPORTED_TARGET jansson)
  set(spectral_server_api ${PROJECT_SOURCE_DIR}/tools/server/server_api.c ${PROJECT_SOURCE_DIR}/tools/server/server_budget.c)
  if(SPECTRAL_FUZZ)
    add_executable(fuzz_server_request fuzz_server_request.c ${spectral_server_api})
    target_compile_options(fuzz_server_request PRIVATE -fsanitize=fuzzer,address,undefined -fno-omit-frame-pointer)
    target_link_options(fuzz_server_request PRIVATE -fsanitize=fuzzer,address,undefined)
    # libFuzzer writes new inputs into the build-tree corpus, never into the sources.
    file(MAKE_DIRECTORY ${CMAKE_CURRENT_BINARY_DIR}/fuzz_server_corpus)
    set(spectral_fuzz_server fuzz_server_request)
  else()
    add_executable(fuzz_server_replay fuzz_server_request.c fuzz_replay.c ${spectral_server_api})
    set(spectral_fuzz_server fuzz_server_replay)
    add_test(NAME fuzz_server_request_smoke COMMAND fuzz_server_replay ${spectral_server_seed_files})
  endif()
  target_include_directories(${spectral_fuzz_server} PRIVATE ${PROJECT_SOURCE_DIR}/tools/server ${PROJECT_SOURCE_DIR}/tools/common)
  target_link_libraries(${spectral_fuzz_server} PRIVATE PkgConfig::SPECTRAL_TEST_JANSSON)
endif()
