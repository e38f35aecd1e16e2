#!/usr/bin/env python3
"""Development set for choosing between distillation runs, without touching the test sets.

    python3 tools/train/distill_dev.py --corpus DATA/corpus.jsonl --teacher DATA/teacher \
        --cli build/tools/spectral-embed [--tfidf] LABEL=GGUF ...

The documents: training-split documents of tools/train/distill_corpus.py whose *files* gave no
document to the teacher cache (distill_teacher.py --part train takes the training split in
a seeded random order until its chunk budget is spent; the documents it took are the first
len(train.npz doc_off) - 1 of that order), at least 2 KB, cut to 4 KB and at most 4 per file,
halved at the space nearest the middle. Same sources as the in-domain held-out set, disjoint
files from both training and the held-out set. Scores: half-document top-1 and MRR through
`spectral-embed` (tools/train/eval_retrieval.py's), and word TF-IDF with --tfidf.

Model choices (which run to ship) are made here; tools/train/eval_retrieval.py's held-out and
out-of-domain sets are only reported.
"""
from __future__ import annotations

import argparse
import collections
import json
import os
import sys
import tempfile

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from eval_retrieval import embed_cli, scores, scores_sparse, sparse_tfidf, write_texts  # noqa: E402


def dev_halves(corpus: str, teacher: str, per_file: int = 4) -> list[tuple[str, str]]:
    docs = [json.loads(line) for line in open(corpus, encoding="utf-8")]
    train = [d for d in docs if d["split"] == "train"]
    n_used = len(np.load(os.path.join(teacher, "train.npz"))["doc_off"]) - 1
    order = np.random.default_rng(0).permutation(len(train))  # as distill_teacher.py --part train
    used = set(int(i) for i in order[:n_used])
    used_files = {(train[i]["src"], train[i]["path"]) for i in used}
    taken = collections.Counter()
    out = []
    for i, d in enumerate(train):
        key = (d["src"], d["path"])
        if i in used or key in used_files or len(d["text"].encode()) < 2048 or taken[key] >= per_file:
            continue
        taken[key] += 1
        t = d["text"][:4096]
        cut = t.rfind(" ", 0, len(t) // 2)
        cut = cut if cut > 0 else len(t) // 2
        out.append((t[:cut], t[cut + 1:]))
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--corpus", required=True)
    ap.add_argument("--teacher", required=True)
    ap.add_argument("--cli", default="build/tools/spectral-embed")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--tfidf", action="store_true")
    ap.add_argument("models", nargs="+", metavar="LABEL=GGUF")
    a = ap.parse_args(argv)
    halves = dev_halves(a.corpus, a.teacher)
    n = len(halves)
    texts = [h[0] for h in halves] + [h[1] for h in halves]
    print(f"dev: {n} documents", flush=True)
    scalars = lambda s: {k: round(float(v), 4) for k, v in s.items() if np.ndim(v) == 0}  # noqa: E731
    if a.tfidf:
        print("word TF-IDF", scalars(scores_sparse(sparse_tfidf(texts, "word"), n)), flush=True)
    with tempfile.TemporaryDirectory() as tmp:
        paths = write_texts(tmp, texts)
        for spec in a.models:
            label, _, model = spec.partition("=")
            e = embed_cli(a.cli, model, paths, a.threads)
            print(label, scalars(scores(e[:n], e[n:])), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
