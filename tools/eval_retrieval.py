#!/usr/bin/env python3
"""Half-document retrieval on held-out python3-doc documents, with our C binary.

    python3 tools/eval_retrieval.py --cli build/tools/spectral-embed \
        --model trained=models/spectral-default.gguf --model placeholder=/tmp/placeholder.gguf \
        [--json results.json]

Documents: the held-out split of tools/doc_corpus.py (pages never seen in
training; >= 1000 documents of 256..2048 bytes). Each document is cut at its
byte midpoint into a first half (the query) and a second half (the target).

For each model, every half is embedded by `spectral-embed -m MODEL
--output-format jsonl` (the model's default pooling, mean for ours, and the
default L2 normalization). Score = top-1 accuracy: the fraction of queries
whose most cosine-similar target among ALL targets is their own second half
(and the same from targets to queries; both and their mean are reported,
plus mean reciprocal rank).

Baselines, in numpy on the same halves:
  byte-hist       cosine of byte histograms (= mean of one-hot byte embeddings)
  byte-tfidf      byte-unigram TF-IDF cosine (idf over all halves)
  char3-tfidf     byte 3-gram TF-IDF cosine (sublinear tf, idf over all halves)

Each model is compared with each byte baseline on the same documents: the
difference of top-1 means with a 95% paired bootstrap interval (10,000
resamples of the documents, seeded), so "beats the baseline" is a statement
about more than noise.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import tempfile
import time
from collections import Counter

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)


def scores(q: np.ndarray, t: np.ndarray) -> dict:
    """q, t: (N, E) L2-normalized rows; row i of q matches row i of t."""
    s = q @ t.T
    n = s.shape[0]
    idx = np.arange(n)

    def one(sim):
        hit = np.argmax(sim, axis=1) == idx
        own = sim[idx, idx][:, None]
        rank = 1 + np.sum(sim > own, axis=1)
        return hit, float(np.mean(1.0 / rank))

    a, mrr_a = one(s)
    b, mrr_b = one(s.T)
    return {"top1_q2t": float(a.mean()), "top1_t2q": float(b.mean()),
            "top1": float((a.mean() + b.mean()) / 2), "mrr": (mrr_a + mrr_b) / 2, "n": n,
            "hits": (a.astype(np.float64) + b) / 2}  # per document, both directions


def paired_bootstrap(x: np.ndarray, y: np.ndarray, reps: int = 10000, seed: int = 0):
    """Mean of x - y and its 95% bootstrap interval over resampled documents."""
    d = x - y
    rng = np.random.default_rng(seed)
    means = d[rng.integers(0, len(d), size=(reps, len(d)))].mean(axis=1)
    lo, hi = np.percentile(means, [2.5, 97.5])
    return float(d.mean()), float(lo), float(hi)


def l2n(x: np.ndarray) -> np.ndarray:
    n = np.linalg.norm(x, axis=1, keepdims=True)
    return x / np.maximum(n, 1e-12)


def byte_hist(halves: list[bytes]) -> np.ndarray:
    h = np.zeros((len(halves), 256))
    for i, b in enumerate(halves):
        h[i] = np.bincount(np.frombuffer(b, dtype=np.uint8), minlength=256)
    return h


def tfidf(counts: np.ndarray, sublinear: bool = False) -> np.ndarray:
    n = counts.shape[0]
    df = np.sum(counts > 0, axis=0)
    idf = np.log((1 + n) / (1 + df)) + 1.0
    tf = np.where(counts > 0, 1.0 + np.log(np.maximum(counts, 1)), 0.0) if sublinear else counts
    return l2n(tf * idf)


def char3_counts(halves: list[bytes]) -> np.ndarray:
    vocab = {}
    rows = []
    for b in halves:
        c = Counter(b[i:i + 3] for i in range(len(b) - 2))
        rows.append({vocab.setdefault(k, len(vocab)): v for k, v in c.items()})
    m = np.zeros((len(halves), len(vocab)), dtype=np.float32)
    for i, r in enumerate(rows):
        m[i, list(r.keys())] = list(r.values())
    return m


def embed_cli(cli: str, model: str, paths: list[str], threads: int, chunk: int = 400) -> np.ndarray:
    out = []
    for i in range(0, len(paths), chunk):
        part = paths[i:i + chunk]
        p = subprocess.run([cli, "-m", model, "--output-format", "jsonl", "--threads", str(threads)]
                           + part, capture_output=True, text=True)
        if p.returncode != 0:
            raise SystemExit(f"{cli} failed ({p.returncode}) on {model}:\n{p.stderr[-2000:]}")
        recs = [json.loads(l) for l in p.stdout.splitlines() if l.strip()]
        if [r["input"] for r in recs] != part:
            raise SystemExit("spectral-embed output does not match its inputs")
        out.extend(r["embedding"] for r in recs)
    return np.asarray(out, dtype=np.float64)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description="held-out half-document retrieval")
    ap.add_argument("--cli", required=True, help="path to spectral-embed")
    ap.add_argument("--model", action="append", default=[], metavar="LABEL=GGUF")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--limit", type=int, default=0, help="use only the first N held-out documents")
    ap.add_argument("--json", help="write the results here")
    a = ap.parse_args(argv)

    from doc_corpus import load_corpus

    _, held = load_corpus()
    docs = [d for _, d in held]
    if a.limit:
        docs = docs[:a.limit]
    q = [d[:len(d) // 2] for d in docs]
    t = [d[len(d) // 2:] for d in docs]
    print(f"{len(docs)} held-out documents from {len({r for r, _ in held})} pages; "
          f"half length mean {np.mean([len(x) for x in q]):.0f} B "
          f"(min {min(len(x) for x in q)}, max {max(len(x) for x in t)})", flush=True)
    results = {}
    n = len(docs)
    hb = byte_hist(q + t)
    results["byte-hist"] = scores(l2n(hb[:n]), l2n(hb[n:]))
    results["byte-tfidf"] = scores(*np.split(tfidf(hb), [n]))
    c3 = char3_counts(q + t)
    results["char3-tfidf"] = scores(*np.split(tfidf(c3, sublinear=True), [n]))

    with tempfile.TemporaryDirectory(prefix="spectral-eval-") as tmp:
        paths_q, paths_t = [], []
        for i in range(n):
            for lst, data, tag in ((paths_q, q[i], "a"), (paths_t, t[i], "b")):
                pth = os.path.join(tmp, f"{i:05d}{tag}.txt")
                with open(pth, "wb") as fh:
                    fh.write(data)
                lst.append(pth)
        for spec in a.model:
            label, _, path = spec.partition("=")
            if not path:
                label, path = os.path.basename(spec), spec
            t0 = time.time()
            eq = embed_cli(a.cli, path, paths_q, a.threads)
            et = embed_cli(a.cli, path, paths_t, a.threads)
            r = scores(l2n(eq), l2n(et))
            r["embed_seconds"] = round(time.time() - t0, 1)
            results[label] = r
    print(f"\n| method | top-1 (q->t) | top-1 (t->q) | top-1 mean | MRR |")
    print("|---|---|---|---|---|")
    for k, r in results.items():
        print(f"| {k} | {r['top1_q2t']:.3f} | {r['top1_t2q']:.3f} | {r['top1']:.3f} | {r['mrr']:.3f} |")
    print(f"\n(N = {n} candidates each way)")
    baselines = ("byte-hist", "byte-tfidf", "char3-tfidf")
    for spec in a.model:
        label = spec.partition("=")[0] if "=" in spec else os.path.basename(spec)
        for base in baselines:
            mean, lo, hi = paired_bootstrap(results[label]["hits"], results[base]["hits"])
            results[label][f"minus_{base}"] = {"mean": mean, "ci95": [lo, hi]}
            print(f"{label} - {base}: top-1 {mean:+.3f} (95% CI {lo:+.3f} .. {hi:+.3f})")
    for r in results.values():
        r.pop("hits")
    if a.json:
        with open(a.json, "w") as fh:
            json.dump(results, fh, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
