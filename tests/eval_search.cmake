# The scoring of the search and development evaluations (tools/train/eval_search.py,
# distill_dev.py, eval_retrieval.py) on hand-made cases: ranks with ties, MRR@10, BM25 against
# rank_bm25, mixing the dense part and the sketch, the paired bootstrap. Needs python3 with
# numpy, scipy and rank_bm25 (tools/deps.sh); no model.
add_test(NAME test_eval_search
  COMMAND ${Python3_EXECUTABLE} ${CMAKE_CURRENT_SOURCE_DIR}/test_eval_search.py)
set_tests_properties(test_eval_search PROPERTIES LABELS "tools;python" TIMEOUT 120 SKIP_RETURN_CODE 77)
