#!/usr/bin/env python3
"""Checks the scoring of the search and development evaluations (tools/train/eval_search.py,
distill_dev.py, eval_retrieval.py) on small hand-made cases, without a model:

1. ranks(): a relevant document tied with others ranks below them;
2. metrics(): MRR@10 counts nothing past rank 10, top-1 and top-10;
3. bm25_matrix() (the sparse BM25 training takes hard negatives from) gives rank_bm25's
   BM25Okapi scores, its idf floor for words in more than half the documents included;
4. scores_sim(): per-document reciprocal ranks of both directions, their mean the MRR;
5. distill_dev.mixed(): the dense part alone, the sketch alone, or both at the given weight;
6. paired_bootstrap(): a constant difference has that difference as its interval.

Usage: python3 tests/test_eval_search.py
"""
import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "tools", "train"))

import harness  # noqa: E402
from harness import check  # noqa: E402

harness.require("numpy", "scipy", "rank_bm25")
import numpy as np  # noqa: E402
from rank_bm25 import BM25Okapi  # noqa: E402

import distill_dev  # noqa: E402
from eval_retrieval import paired_bootstrap, scores_sim  # noqa: E402
from eval_search import WORD, bm25_matrix, metrics, ranks  # noqa: E402

# 1. ties count against the query: query 0's document ties with document 1 -> rank 2
sim = np.array([[0.5, 0.5, 0.1],
                [0.2, 0.9, 0.3],
                [0.8, 0.7, 0.6]])
got = ranks(sim)
check(list(got) == [2, 1, 3], f"ranks {list(got)}, want [2, 1, 3]")

# 2. metrics from ranks 1, 2, 10, 11
m = metrics(np.array([1, 2, 10, 11]))
check(abs(m["mrr10"] - (1 + 0.5 + 0.1 + 0) / 4) < 1e-12, f"MRR@10 {m['mrr10']}")
check(m["top1"] == 0.25 and m["top10"] == 0.75 and m["n"] == 4, f"top-1 {m['top1']}, top-10 {m['top10']}")

# 3. BM25: "the" is in every document (negative idf, floored at epsilon times the mean idf)
docs = ["the cat sat on the mat", "the dog ate the bone", "a cat and a dog", "the end of the story",
        "list open files with lsof", "the disk usage of a directory: du"]
queries = ["the cat", "open files", "dog bone the", "nothing matches here", "directory disk usage du du"]
want = np.stack([BM25Okapi([WORD.findall(d.lower()) for d in docs]).get_scores(WORD.findall(q.lower()))
                 for q in queries])
got = bm25_matrix(queries, docs)
check(got.shape == want.shape and np.max(np.abs(got - want)) < 1e-9,
      f"bm25_matrix differs from rank_bm25 by {np.max(np.abs(got - want)):.3g}")

# 4. scores_sim: rows are first halves, columns second halves
s = np.array([[0.9, 0.1, 0.0],
              [0.95, 0.8, 0.0],
              [0.0, 0.2, 0.1]])
r = scores_sim(s)
# first -> second: ranks 1, 2, 2; second -> first: ranks 2, 1, 1
want_rr = (np.array([1, 0.5, 0.5]) + np.array([0.5, 1, 1])) / 2
check(np.allclose(r["rr"], want_rr) and abs(r["mrr"] - want_rr.mean()) < 1e-12,
      f"scores_sim rr {r['rr']}, mrr {r['mrr']}; want {want_rr}")
check(np.allclose(r["hits"], [0.5, 0.5, 0.5]) and abs(r["top1"] - 0.5) < 1e-12, f"hits {r['hits']}")

# 5. mixing: 2 dense values then 3 sketch values
e = np.array([[3.0, 4.0, 0.0, 0.0, 2.0]])
check(np.allclose(distill_dev.mixed(e, 2, 0), [[0.6, 0.8]]), "scale 0: the dense part alone, unit length")
check(np.allclose(distill_dev.mixed(e, 2, None), [[0, 0, 1]]), "scale None: the sketch alone, unit length")
mix = distill_dev.mixed(e, 2, 3.0)
check(np.allclose(mix, np.array([[0.6, 0.8, 0, 0, 3.0]]) / np.sqrt(10)),
      f"scale 3: [unit dense, 3 * unit sketch], unit length; got {mix}")

# 6. the bootstrap of a constant difference
x = np.linspace(0, 1, 50)
mean, lo, hi = paired_bootstrap(x + 0.25, x, reps=200)
check(abs(mean - 0.25) < 1e-12 and abs(lo - 0.25) < 1e-12 and abs(hi - 0.25) < 1e-12,
      f"constant difference 0.25: {mean} ({lo} .. {hi})")
mean, lo, hi = paired_bootstrap(x, x[::-1], reps=2000)
check(lo < mean < hi and lo < 0 < hi, f"a difference with mean 0 spreads around it: {mean} ({lo} .. {hi})")

sys.exit(harness.report("test_eval_search"))
