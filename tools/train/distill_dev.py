#!/usr/bin/env python3
"""Development sets for choosing between distillation runs, without touching the test sets.

    python3 tools/train/distill_dev.py --corpus DATA/corpus.jsonl --search DATA/search.jsonl \
        --cli build/tools/spectral-embed [--tfidf] [--scales] [--baseline LABEL] LABEL=GGUF ...

Two tasks, both on files of the training sources that are neither trained on nor held out
(tools/train/distill_corpus.py's "dev" split):
  half-document retrieval: the development documents (2..4 KB) halved at the space nearest the
      middle; top-1 and MRR among all halves (tools/train/eval_retrieval.py's scores);
  search: the "dev" pairs of tools/train/search_sets.py; MRR@10, top-1 and top-10 of each
      query's document among all documents of the set (tools/train/eval_search.py's).
Every text goes through `spectral-embed`. --tfidf adds word TF-IDF (and BM25 for search).
--scales: for a model with a lexical sketch, both tasks again with its dense part alone, its
sketch alone, the two mixed at other weights than the file's ([dense, s * sketch], the parts
unit length), and the dense part's prefixes (its first 64, 128, 256 values) -- all from the
same embeddings, so the weight of the sketch can be chosen here.
--baseline LABEL: every configuration minus that model, paired bootstrap 95% intervals over the
queries (search MRR@10) and the documents (half-document top-1 and MRR).

Model choices (which run to ship, the sketch's weight) are made here; the held-out and
out-of-domain sets of tools/train/eval_retrieval.py and eval_search.py are only reported.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from eval_retrieval import embed_cli, l2n, paired_bootstrap, scores_sim, scores_sparse, sparse_tfidf, write_texts  # noqa: E402
from eval_search import bm25_sim, gguf_parts, metrics, ranks, tfidf_sim  # noqa: E402
from search_sets import load_pairs  # noqa: E402

SCALES = (0.5, 1.0, 1.25, 1.5, 2.0, 3.0)


def dev_halves(corpus: str) -> list[tuple[str, str]]:
    """The corpus's development documents, halved at the space nearest the middle."""
    out = []
    with open(corpus, encoding="utf-8") as fh:
        for line in fh:
            d = json.loads(line)
            if d["split"] != "dev":
                continue
            t = d["text"]
            cut = t.rfind(" ", 0, len(t) // 2)
            cut = cut if cut > 0 else len(t) // 2
            out.append((t[:cut], t[cut + 1:]))
    return out


def mixed(e: np.ndarray, k: int, scale) -> np.ndarray:
    """[unit(dense), scale * unit(sketch)] of embeddings whose first k values are the dense
    part; scale 0: the dense part alone, None: the sketch alone."""
    if scale is None:
        return l2n(e[:, k:])
    d = l2n(e[:, :k])
    return d if scale == 0 else l2n(np.hstack([d, scale * l2n(e[:, k:])]))


def report(label: str, eq, ed, eh, n: int, per_item: dict, key: str) -> dict:
    """Prints and returns both tasks' scores; per_item[key] keeps the per-query and per-document
    values (search reciprocal rank at 10, half-document top-1 and reciprocal rank) for --baseline."""
    s = metrics(ranks(eq @ ed.T))
    h = scores_sim(eh[:n] @ eh[n:].T)
    print(f"{label}: search MRR@10 {s['mrr10']:.3f} top-1 {s['top1']:.3f} top-10 {s['top10']:.3f} | "
          f"half-document top-1 {h['top1']:.3f} MRR {h['mrr']:.3f}", flush=True)
    per_item[key] = {"search MRR@10": s["rr10"], "half-document top-1": h["hits"], "half-document MRR": h["rr"]}
    return {"search": {k: s[k] for k in ("mrr10", "top1", "top10")}, "half": {k: h[k] for k in ("top1", "mrr")}}


def compare(out: dict, per_item: dict, baseline: str) -> None:
    """Paired bootstrap 95% intervals of every configuration minus the baseline, both tasks."""
    print(f"\nminus {baseline} (paired bootstrap, 95% interval):", flush=True)
    for key, items in per_item.items():
        if key == baseline:
            continue
        diffs = {m: paired_bootstrap(v, per_item[baseline][m]) for m, v in items.items()}
        out[key][f"minus {baseline}"] = diffs
        print(f"{key}: " + "; ".join(f"{m} {d[0]:+.3f} ({d[1]:+.3f} .. {d[2]:+.3f})" for m, d in diffs.items()),
              flush=True)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--corpus", required=True)
    ap.add_argument("--search", required=True)
    ap.add_argument("--cli", default="build/tools/spectral-embed")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--tfidf", action="store_true")
    ap.add_argument("--scales", action="store_true")
    ap.add_argument("--baseline", metavar="LABEL", help="also each configuration minus this model's, "
                    "with paired bootstrap intervals (the comparison a shipped model must win)")
    ap.add_argument("--json")
    ap.add_argument("models", nargs="+", metavar="LABEL=GGUF")
    a = ap.parse_args(argv)
    halves = dev_halves(a.corpus)
    pairs = load_pairs(a.search, "dev")
    n = len(halves)
    q, d = [r["query"] for r in pairs], [r["doc"] for r in pairs]
    texts = [h[0] for h in halves] + [h[1] for h in halves]
    print(f"dev: {n} documents halved; {len(pairs)} search queries and documents", flush=True)
    out, per_item = {}, {}
    if a.tfidf:
        s = metrics(ranks(tfidf_sim(q, d)))
        b = metrics(ranks(bm25_sim(q, d)))
        h = scores_sparse(sparse_tfidf(texts, "word"), n)
        print(f"word TF-IDF: search MRR@10 {s['mrr10']:.3f} | half-document top-1 {h['top1']:.3f} MRR {h['mrr']:.3f}; "
              f"BM25: search MRR@10 {b['mrr10']:.3f}", flush=True)
    with tempfile.TemporaryDirectory() as tmp:
        ph = write_texts(tmp, texts, "{:05d}h.txt")
        pq, pd = write_texts(tmp, q, "{:05d}q.txt"), write_texts(tmp, d, "{:05d}d.txt")
        for spec in a.models:
            label, _, model = spec.partition("=")
            eh, eq, ed = (l2n(embed_cli(a.cli, model, p, a.threads)) for p in (ph, pq, pd))
            out[label] = report(label, eq, ed, eh, n, per_item, label)
            dims, scale = gguf_parts(model)
            if not (a.scales and dims):
                continue
            k = eq.shape[1] - dims
            for s in (0, None) + SCALES:
                name = "dense part" if s == 0 else "sketch alone" if s is None else f"sketch weight {s:g}"
                out[f"{label}: {name}"] = report(f"  {name}" + (" (the file's)" if s == scale else ""),
                                                 mixed(eq, k, s), mixed(ed, k, s), mixed(eh, k, s), n,
                                                 per_item, f"{label}: {name}")
            for p in (64, 128, 256):
                if p < k:
                    out[f"{label}: first {p}"] = report(f"  dense prefix {p}", l2n(eq[:, :p]), l2n(ed[:, :p]),
                                                        l2n(eh[:, :p]), n, per_item, f"{label}: first {p}")
    if a.baseline:
        compare(out, per_item, a.baseline)
    if a.json:
        with open(a.json, "w") as fh:
            json.dump(out, fh, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
