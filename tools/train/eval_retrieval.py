#!/usr/bin/env python3
"""Half-document retrieval on held-out documents, with our C binary.

Two modes.

(1) The distilled default model (tools/train/distill_corpus.py, tools/train/distill_teacher.py,
tools/train/distill.py):

    python3 tools/train/eval_retrieval.py --cli build/tools/spectral-embed --teacher /work/data/teacher \
        --model spectral-default=models/spectral-default.gguf --model static=/work/data/static.gguf \
        [--json results.json] [--throughput]

Sets: eval_heldout (in-domain: files of the training sources never trained on) and
eval_ood (out-of-domain: man pages, a source never trained on), >= 2 KB documents,
each cut at the whitespace nearest its byte midpoint by distill_teacher.py (halves in
eval_SPLIT.jsonl). Every half is embedded by `spectral-embed` for each --model; next to
them, on the same halves: byte histogram, word TF-IDF and char-3-gram TF-IDF (sublinear tf,
idf over all halves of the set), and all-MiniLM-L6-v2 truncated at 256 and 512 tokens and
as the mean of its 254-token chunk embeddings (cached in eval_SPLIT.npz). Top-1 (both
directions, averaged) and MRR among all halves of the set; paired bootstrap 95% intervals
of every model's top-1 minus every anchor's. --throughput: documents/s of spectral-embed
and of sentence-transformers running MiniLM (truncated at 256, and chunked over the whole
document) on 2 KB and 32 KB documents, same thread count (--threads).

(2) The previous byte-level model on python3-doc (tools/train/doc_corpus.py):

    python3 tools/train/eval_retrieval.py --cli build/tools/spectral-embed \
        --model trained=tests/data/byte-model/spectral-byte.gguf --model placeholder=/tmp/placeholder.gguf \
        [--json results.json]

Documents: the held-out split of tools/train/doc_corpus.py (pages never seen in
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
import os
import subprocess
import sys
import tempfile
import time
import zlib
from collections import Counter

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)


def scores(q: np.ndarray, t: np.ndarray) -> dict:
    """q, t: (N, E) L2-normalized rows; row i of q matches row i of t."""
    return scores_sim(q @ t.T)


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


def write_texts(folder: str, texts: list, name: str = "{:05d}.txt") -> list[str]:
    """Each text (str, written as UTF-8, or bytes as they are) to its own file in folder (name
    formatted with its index): the paths."""
    paths = []
    for i, t in enumerate(texts):
        p = os.path.join(folder, name.format(i))
        with open(p, "wb") as fh:
            fh.write(t if isinstance(t, bytes) else t.encode("utf-8"))
        paths.append(p)
    return paths


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


def sparse_tfidf(texts: list[str], analyzer: str) -> "np.ndarray":
    from sklearn.feature_extraction.text import TfidfVectorizer
    if analyzer == "word":
        v = TfidfVectorizer(lowercase=True, token_pattern=r"(?u)\b\w+\b", sublinear_tf=True)
    else:
        v = TfidfVectorizer(lowercase=False, analyzer="char", ngram_range=(3, 3), sublinear_tf=True)
    return v.fit_transform(texts)  # rows L2-normalized


def scores_sparse(m, n: int) -> dict:
    s = (m[:n] @ m[n:].T).toarray()
    return scores_sim(s)


def scores_sim(s: np.ndarray) -> dict:
    n = s.shape[0]
    idx = np.arange(n)

    def one(sim):
        hit = np.argmax(sim, axis=1) == idx
        own = sim[idx, idx][:, None]
        rank = 1 + np.sum(sim > own, axis=1)
        return hit, 1.0 / rank

    a, rr_a = one(s)
    b, rr_b = one(s.T)
    return {"top1_q2t": float(a.mean()), "top1_t2q": float(b.mean()),
            "top1": float((a.mean() + b.mean()) / 2), "mrr": float((rr_a.mean() + rr_b.mean()) / 2), "n": n,
            "hits": (a.astype(np.float64) + b) / 2, "rr": (rr_a + rr_b) / 2}


def eval_set(a, split: str) -> dict:
    with open(os.path.join(a.teacher, f"eval_{split}.jsonl")) as fh:
        rows = [json.loads(line) for line in fh]
    z = np.load(os.path.join(a.teacher, f"eval_{split}.npz"))
    if a.limit:
        rows = rows[:a.limit]
    n = len(rows)
    q = [r["a"] for r in rows]
    t = [r["b"] for r in rows]
    docb = [len((x + " " + y).encode()) for x, y in zip(q, t)]
    ntok = z["n_tokens"][:2 * n]
    print(f"\n## {split}: {n} documents from {len({r['path'] for r in rows})} files, "
          f"{len({r['src'] for r in rows})} sources; document bytes mean {np.mean(docb):.0f} "
          f"(min {min(docb)}, max {max(docb)}); half word-pieces mean {np.mean(ntok):.0f} "
          f"(> 254: {np.mean(ntok > 254):.2f}, > 510: {np.mean(ntok > 510):.2f})", flush=True)
    res = {}
    hb = byte_hist([x.encode() for x in q + t])
    res["byte histogram"] = scores(l2n(hb[:n]), l2n(hb[n:]))
    res["word TF-IDF"] = scores_sparse(sparse_tfidf(q + t, "word"), n)
    res["char 3-gram TF-IDF"] = scores_sparse(sparse_tfidf(q + t, "char"), n)
    for key, label in (("trunc256", "MiniLM, truncated at 256 tokens"),
                       ("trunc512", "MiniLM, truncated at 512 tokens"),
                       ("chunked", "MiniLM, mean of 254-token chunks")):
        e = z[key].astype(np.float64)
        res[label] = scores(l2n(e[0:2 * n:2]), l2n(e[1:2 * n:2]))
    anchors = list(res)
    with tempfile.TemporaryDirectory(prefix="spectral-eval-") as tmp:
        pq, pt = write_texts(tmp, q, "{:05d}a.txt"), write_texts(tmp, t, "{:05d}b.txt")
        for spec in a.model:
            label, _, path = spec.partition("=")
            t0 = time.time()
            st = os.stat(path)
            key = f"{split}-{zlib.crc32(f'{os.path.abspath(path)}:{st.st_size}:{st.st_mtime_ns}:{n}'.encode()):08x}"
            cache = os.path.join(a.cache, key + ".npz") if a.cache else None
            if cache and os.path.exists(cache):
                with np.load(cache) as zc:
                    eq, et = zc["q"], zc["t"]
            else:
                eq = embed_cli(a.cli, path, pq, a.threads)
                et = embed_cli(a.cli, path, pt, a.threads)
                if cache:
                    os.makedirs(a.cache, exist_ok=True)
                    np.savez(cache, q=eq, t=et)
            r = scores(l2n(eq), l2n(et))
            r["embed_seconds"] = round(time.time() - t0, 1)
            res[label] = r
    print("\n| method | top-1 | MRR |\n|---|---|---|")
    for k, r in res.items():
        print(f"| {k} | {r['top1']:.3f} | {r['mrr']:.3f} |")
    print(f"\n(N = {n} candidates each way; top-1 is the mean of both directions)")
    for spec in a.model:
        label = spec.partition("=")[0]
        res[label]["paired"] = {}
        for base in anchors + [s.partition("=")[0] for s in a.model if s.partition("=")[0] != label]:
            mean, lo, hi = paired_bootstrap(res[label]["hits"], res[base]["hits"])
            mm, mlo, mhi = paired_bootstrap(res[label]["rr"], res[base]["rr"])
            res[label]["paired"][base] = {"mean": mean, "ci95": [lo, hi], "mrr": [mm, mlo, mhi]}
            print(f"{label} - {base}: top-1 {mean:+.3f} (95% CI {lo:+.3f} .. {hi:+.3f}), "
                  f"MRR {mm:+.3f} ({mlo:+.3f} .. {mhi:+.3f})")
    for r in res.values():
        r.pop("hits")
        r.pop("rr")
    return res


def throughput(a) -> dict:
    """Documents/s of spectral-embed vs sentence-transformers MiniLM, same threads."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import re
    import torch
    from sentence_transformers import SentenceTransformer
    from distill_teacher import CHUNK, teacher_path
    torch.set_num_threads(a.threads)
    with open(os.path.join(a.teacher, "eval_ood.jsonl")) as fh:
        text = "\n\n".join(json.loads(line)["a"] + " " + json.loads(line)["b"] for line in fh)
    st = SentenceTransformer(teacher_path(), device="cpu")
    out = {}
    label, _, model = a.model[0].partition("=")
    # spectral-embed gets more documents than MiniLM (it is much faster): enough for a
    # wall time well above its start-up; the median of three runs.
    for size, n_docs, n_st in ((2048, 128, 32), (32768, 32, 4)):
        docs, pos = [], 0
        for _ in range(n_docs):
            b = text.encode()[pos:pos + size]
            docs.append(b.decode("utf-8", "ignore"))
            pos += size
        with tempfile.TemporaryDirectory() as tmp:
            paths = write_texts(tmp, docs)
            # documents/s from wall clock, less a one-document run (model load, start-up)
            rates = []
            for _ in range(3):
                t0 = time.time()
                subprocess.run([a.cli, "-m", model, "-t", str(a.threads), paths[0]], capture_output=True)
                wall1 = time.time() - t0
                t0 = time.time()
                r = subprocess.run([a.cli, "-m", model, "-v", "-t", str(a.threads)] + paths,
                                   capture_output=True, text=True)
                wall = time.time() - t0
                rates.append((len(paths) - 1) / max(wall - wall1, 1e-6))
            ntok = [int(m) for m in re.findall(r": ([0-9]+) tokens", r.stderr)]
        ours = float(np.median(rates))
        tok = st.tokenizer
        ids = [tok(d, add_special_tokens=False)["input_ids"] for d in docs[:n_st]]
        t0 = time.time()
        st.encode(docs[:n_st], batch_size=16)
        tr = n_st / (time.time() - t0)
        chunks = [tok.decode(x[i:i + CHUNK]) for x in ids for i in range(0, len(x), CHUNK)]
        t0 = time.time()
        st.encode(chunks, batch_size=16)
        ch = n_st / (time.time() - t0)
        out[size] = {"spectral_docs_per_s": ours, "spectral_docs_per_s_runs": rates,
                     "spectral_wall_s": wall, "tokens_mean": float(np.mean(ntok)),
                     "minilm_trunc256_docs_per_s": tr, "minilm_chunked_docs_per_s": ch,
                     "speedup_vs_chunked": ours / ch, "speedup_vs_trunc256": ours / tr}
        print(f"throughput {size} B ({np.mean(ntok):.0f} word-pieces, {a.threads} threads): "
              f"{label} {ours:.1f} docs/s; MiniLM truncated at 256 {tr:.1f} docs/s; "
              f"MiniLM chunked (whole document) {ch:.2f} docs/s; ratio {ours / ch:.1f}x chunked, "
              f"{ours / tr:.1f}x truncated", flush=True)
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description="held-out half-document retrieval")
    ap.add_argument("--teacher", help="distill_teacher.py output directory: mode (1)")
    ap.add_argument("--sets", default="heldout,ood")
    ap.add_argument("--throughput", action="store_true")
    ap.add_argument("--cache", help="directory caching each model's embeddings (keyed by file path, size, mtime)")
    ap.add_argument("--cli", required=True, help="path to spectral-embed")
    ap.add_argument("--model", action="append", default=[], metavar="LABEL=GGUF")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--limit", type=int, default=0, help="use only the first N held-out documents")
    ap.add_argument("--json", help="write the results here")
    a = ap.parse_args(argv)
    for i, spec in enumerate(a.model):
        if "=" not in spec:
            a.model[i] = f"{os.path.basename(spec)}={spec}"
    if a.teacher:
        results = {}
        for split in a.sets.split(","):
            if split:
                results[split] = eval_set(a, split)
        if a.throughput:
            results["throughput"] = throughput(a)
        if a.json:
            with open(a.json, "w") as fh:
                json.dump(results, fh, indent=1)
        return 0

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
        r.pop("rr")
    if a.json:
        with open(a.json, "w") as fh:
            json.dump(results, fh, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
