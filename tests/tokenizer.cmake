# Tokenizers (formats/tokenizer.c, formats/tok_*.c) against committed
# reference ids; regenerate with tools/make_tokenizer_fixtures.py.
spectral_add_c_test(test_tokenizer test_tokenizer.c)
target_compile_definitions(test_tokenizer PRIVATE TOK_DATA_DIR="${SPECTRAL_TEST_DATA}/tokenizer")
