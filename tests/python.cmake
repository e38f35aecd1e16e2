# The Python package (python/) and the corpus tool (tools/corpus/embed_corpus.py):
#   python_install   pip-installs ./python into <build>/python/pkg through scikit-build-core
#                    (the CMake project built as the wheel builds it), once for the tests below
#   python_binding   the ctypes declarations against runtime/spectral.h
#   python_model     spectral.Model against spectral-embed bit for bit, errors, threads,
#                    the memory cap, input checks, Ctrl-C, long inputs
#   python_encode    Model.encode as sentence-transformers' encode, its progress bar
#   python_leak      RSS bounded over 10,000 calls and 100 model open/close cycles
#   python_corpus_*  tools/corpus/embed_corpus.py on a local Dask cluster of two workers
#                    (and its progress bar, without Dask)
# SKIP (77) when a Python dependency is missing (tools/deps.sh installs them).
set(spectral_py_tests python_install python_binding python_model python_encode python_leak python_corpus_dir
    python_corpus_jsonl)
set(spectral_py_run ${PROJECT_SOURCE_DIR}/python/tests/ctest_run.py)
if(SPECTRAL_SANITIZE OR NOT TARGET spectral-embed)
  # The package builds its own, uninstrumented library, and the interpreter is not
  # built for ASan: the sanitizer build has nothing to add. Without the CLI there
  # is nothing to compare with.
  foreach(t ${spectral_py_tests})
    add_test(NAME ${t} COMMAND ${Python3_EXECUTABLE} -c
      "print('SKIP: the Python tests run in the release build (not under sanitizers, and they need spectral-embed)'); raise SystemExit(77)")
    set_tests_properties(${t} PROPERTIES SKIP_RETURN_CODE 77 LABELS python)
  endforeach()
else()
  add_test(NAME python_install COMMAND ${Python3_EXECUTABLE} ${spectral_py_run} install ${PROJECT_BINARY_DIR})
  set_tests_properties(python_install PROPERTIES FIXTURES_SETUP spectral_python TIMEOUT 600)
  set(spectral_py_pytest ${Python3_EXECUTABLE} ${spectral_py_run} pytest ${PROJECT_BINARY_DIR} $<TARGET_FILE:spectral-embed>)
  add_test(NAME python_binding COMMAND ${spectral_py_pytest} test_binding.py)
  add_test(NAME python_model COMMAND ${spectral_py_pytest} test_model.py -k "not leak")
  add_test(NAME python_encode COMMAND ${spectral_py_pytest} test_encode.py)
  add_test(NAME python_leak COMMAND ${spectral_py_pytest} test_model.py -k leak)
  add_test(NAME python_corpus_dir COMMAND ${spectral_py_pytest} --need pyarrow,distributed
           test_corpus.py -k "directory or progress")
  add_test(NAME python_corpus_jsonl COMMAND ${spectral_py_pytest} --need pyarrow,distributed
           test_corpus.py -k jsonl)
  foreach(t ${spectral_py_tests})
    set_tests_properties(${t} PROPERTIES SKIP_RETURN_CODE 77 LABELS python)
    if(NOT t STREQUAL python_install)
      set_tests_properties(${t} PROPERTIES FIXTURES_REQUIRED spectral_python TIMEOUT 300)
    endif()
  endforeach()
endif()
