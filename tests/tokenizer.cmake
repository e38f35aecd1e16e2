# Tokenizers (formats/tokenizer.c, formats/tok_*.c) against committed
# reference ids; regenerate with tests/fixtures/make_tokenizer_fixtures.py.
spectral_add_c_test(test_tokenizer test_tokenizer.c)
target_compile_definitions(test_tokenizer PRIVATE TOK_DATA_DIR="${SPECTRAL_TEST_DATA}/tokenizer")
# A lookup that costs the longest token again would make the long-token
# case take hours: fail it instead of hanging CI (it takes well under 1 s).
set_tests_properties(test_tokenizer PROPERTIES TIMEOUT 120)
