# The documentation, run (tests/test_docs.py, issue 25): every shell and Python block of
# README.md, docs/, python/README.md and tools/README.md, in a sandbox copy of the sources
# whose build/ is this build, with the markers the Markdown carries (docs/testing.md).
# The blocks run the programs, the server and the Python package as a user does: release
# build only (under the sanitizers the package is not built, see python.cmake), and only
# with every program the docs use.
if(SPECTRAL_SANITIZE OR NOT TARGET spectral-embed OR NOT TARGET spectral-server
   OR NOT TARGET spectral-bench OR NOT TARGET spectral-quantize)
  add_test(NAME test_docs COMMAND ${Python3_EXECUTABLE} -c
    "print('SKIP: the docs run in the release build with every program built'); raise SystemExit(77)")
  set_tests_properties(test_docs PROPERTIES SKIP_RETURN_CODE 77)
else()
  add_test(NAME test_docs
           COMMAND ${Python3_EXECUTABLE} ${CMAKE_CURRENT_SOURCE_DIR}/test_docs.py ${PROJECT_SOURCE_DIR} ${PROJECT_BINARY_DIR})
  # The package from python_install; servers of its own (free ports) and benchmarks, so
  # not beside the server's load test. About 3 minutes on a 2-core machine; where torch is
  # installed (not in tools/deps.sh's environment) the comparison blocks add about 7.
  set_tests_properties(test_docs PROPERTIES FIXTURES_REQUIRED spectral_python RESOURCE_LOCK spectral_server
                       TIMEOUT 1800)
endif()
