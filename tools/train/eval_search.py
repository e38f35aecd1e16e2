#!/usr/bin/env python3
"""Query -> document search on the sets of tools/train/search_sets.py, with our C binary and anchors.

    python3 tools/train/eval_search.py --search DATA/search.jsonl --teacher DATA/teacher \
        --cli build/tools/spectral-embed --model LABEL=GGUF ... [--sets dev,test,ood] \
        [--anchors] [--model2vec DIR] [--parts] [--json OUT] [--cache DIR]

For each set every query is ranked against all documents of the set (one relevant document
per query); metrics MRR@10, top-1 and top-10, with paired bootstrap 95% intervals (10,000
resamples of the queries) of each model minus each anchor (and minus each other model).
Ties count against the query (a relevant document tied with k others ranks k lower).

Anchors (--anchors): BM25 (rank_bm25's BM25Okapi, k1 1.5, b 0.75, lowercased \\w+ words),
word TF-IDF (scikit-learn, sublinear tf, idf over the set's documents), all-MiniLM-L6-v2
truncated at 256 tokens and as the mean of its 254-token chunk embeddings (distill_teacher.py
--part search caches both), model2vec (--model2vec: a StaticModel folder, e.g. the one
`--make-model2vec DIR` distils from the MiniLM teacher, reading whole documents).
--parts: for a model with a lexical sketch, also its dense part alone (the first values,
renormalized) and its sketch alone, from the same embeddings.
"""
from __future__ import annotations

import argparse
import json
import os
import re
import sys
import tempfile
import zlib

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
from eval_retrieval import embed_cli, l2n, paired_bootstrap, write_texts  # noqa: E402
from search_sets import load_pairs  # noqa: E402

WORD = re.compile(r"\w+")


def ranks(sim: np.ndarray) -> np.ndarray:
    """Rank of document i for query i (row i), ties counted against it."""
    own = np.diagonal(sim)[:, None]
    return 1 + np.sum(sim > own, axis=1) + np.sum(sim == own, axis=1) - 1


def metrics(r: np.ndarray) -> dict:
    rr10 = np.where(r <= 10, 1.0 / r, 0.0)
    return {"mrr10": float(rr10.mean()), "top1": float((r == 1).mean()), "top10": float((r <= 10).mean()),
            "n": int(len(r)), "rr10": rr10, "hit1": (r == 1).astype(np.float64)}


def bm25_sim(queries: list[str], docs: list[str]) -> np.ndarray:
    from rank_bm25 import BM25Okapi
    bm = BM25Okapi([WORD.findall(d.lower()) for d in docs])
    return np.stack([bm.get_scores(WORD.findall(q.lower())) for q in queries])


def bm25_matrix(queries: list[str], docs: list[str], k1: float = 1.5, b: float = 0.75,
                epsilon: float = 0.25) -> np.ndarray:
    """rank_bm25's BM25Okapi scores (its idf floor included) as sparse products: the same
    numbers, fast enough to score thousands of queries (hard negatives for training)."""
    import scipy.sparse as sp
    vocab = {}
    def counts(texts):
        rows, cols, vals = [], [], []
        for i, t in enumerate(texts):
            c = {}
            for w in WORD.findall(t.lower()):
                j = vocab.setdefault(w, len(vocab))
                c[j] = c.get(j, 0) + 1
            rows += [i] * len(c)
            cols += list(c)
            vals += list(c.values())
        return rows, cols, vals
    dr, dc, dv = counts(docs)
    qr, qc, qv = counts(queries)
    n_v = len(vocab)
    tf = sp.csr_matrix((np.asarray(dv, dtype=np.float64), (dr, dc)), shape=(len(docs), n_v))
    dl = np.asarray(tf.sum(1)).ravel()
    df = np.bincount(tf.indices, minlength=n_v)
    idf = np.log(len(docs) - df + 0.5) - np.log(df + 0.5)
    seen = df > 0
    idf[seen & (idf < 0)] = epsilon * idf[seen].mean()
    t = tf.tocoo()
    denom = t.data + k1 * (1 - b + b * dl[t.row] / dl.mean())
    w = sp.csr_matrix((t.data * (k1 + 1) / denom * idf[t.col], (t.row, t.col)), shape=tf.shape)
    q = sp.csr_matrix((np.asarray(qv, dtype=np.float64), (qr, qc)), shape=(len(queries), n_v))
    return (q @ w.T).toarray()


def tfidf_sim(queries: list[str], docs: list[str]) -> np.ndarray:
    from sklearn.feature_extraction.text import TfidfVectorizer
    v = TfidfVectorizer(lowercase=True, token_pattern=r"(?u)\b\w+\b", sublinear_tf=True)
    d = v.fit_transform(docs)
    return (v.transform(queries) @ d.T).toarray()


def gguf_parts(path: str) -> tuple[int, float]:
    """(lexical sketch length, its scale) of a GGUF; (0, 0) without a sketch."""
    import gguf
    r = gguf.GGUFReader(path)
    f = r.fields.get("spectralmlp.lexical.dims")
    if not f:
        return 0, 0.0
    return int(f.parts[f.data[0]][0]), float(r.fields["spectralmlp.lexical.scale"].parts[r.fields["spectralmlp.lexical.scale"].data[0]][0])


def embed_model(a, path: str, split: str, paths: list[str], tag: str) -> np.ndarray:
    st = os.stat(path)
    key = f"{split}{tag}-{zlib.crc32(f'{os.path.abspath(path)}:{st.st_size}:{st.st_mtime_ns}:{len(paths)}'.encode()):08x}"
    cache = os.path.join(a.cache, key + ".npy") if a.cache else None
    if cache and os.path.exists(cache):
        return np.load(cache)
    e = embed_cli(a.cli, path, paths, a.threads)
    if cache:
        os.makedirs(a.cache, exist_ok=True)
        np.save(cache, e)
    return e


def model2vec_make(teacher_dir: str, out: str) -> None:
    from model2vec.distill import distill
    from distill_teacher import teacher_path
    distill(model_name=teacher_path(), pca_dims=256).save_pretrained(out)


def eval_split(a, split: str) -> dict:
    rows = load_pairs(a.search, split)
    q = [r["query"] for r in rows]
    d = [r["doc"] for r in rows]
    n = len(rows)
    sets = sorted({r["set"] for r in rows})
    per_set = ", ".join(f"{s} {sum(r['set'] == s for r in rows)}" for s in sets)
    print(f"\n## {split}: {n} queries and documents ({per_set}); "
          f"document bytes mean {np.mean([len(x.encode()) for x in d]):.0f}, query words mean "
          f"{np.mean([len(WORD.findall(x)) for x in q]):.1f}", flush=True)
    res, anchors = {}, []
    if a.anchors:
        res["BM25"] = metrics(ranks(bm25_sim(q, d)))
        res["word TF-IDF"] = metrics(ranks(tfidf_sim(q, d)))
        zq = np.load(os.path.join(a.teacher, "search_queries.npz"))["emb"]
        zd = np.load(os.path.join(a.teacher, f"search_docs_{split}.npz"))
        if list(zd["line"]) != [r["line"] for r in rows]:
            raise SystemExit(f"eval_search: the teacher cache of {split} is for other pairs: rerun "
                             "tools/train/distill_teacher.py --part search")
        eq = l2n(zq[[r["line"] for r in rows]].astype(np.float64))
        for key, label in (("trunc256", "MiniLM, truncated at 256 tokens"), ("chunked", "MiniLM, mean of 254-token chunks")):
            res[label] = metrics(ranks(eq @ l2n(zd[key].astype(np.float64)).T))
        if a.model2vec:
            from model2vec import StaticModel
            m2v = StaticModel.from_pretrained(a.model2vec)
            e1 = l2n(m2v.encode(q, max_length=None).astype(np.float64))
            e2 = l2n(m2v.encode(d, max_length=None).astype(np.float64))
            res["model2vec (distilled from MiniLM)"] = metrics(ranks(e1 @ e2.T))
        anchors = list(res)
    with tempfile.TemporaryDirectory(prefix="spectral-search-") as tmp:
        pq, pd = write_texts(tmp, q, "{:05d}q.txt"), write_texts(tmp, d, "{:05d}d.txt")
        for spec in a.model:
            label, _, path = spec.partition("=")
            eq = embed_model(a, path, split, pq, "q")
            ed = embed_model(a, path, split, pd, "d")
            res[label] = metrics(ranks(l2n(eq) @ l2n(ed).T))
            dims, scale = gguf_parts(path)
            if a.parts and dims:
                k = eq.shape[1] - dims
                res[label + ": dense part"] = metrics(ranks(l2n(eq[:, :k]) @ l2n(ed[:, :k]).T))
                res[label + ": sketch part"] = metrics(ranks(l2n(eq[:, k:]) @ l2n(ed[:, k:]).T))
    print("\n| method | MRR@10 | top-1 | top-10 |\n|---|---|---|---|")
    for k, r in res.items():
        print(f"| {k} | {r['mrr10']:.3f} | {r['top1']:.3f} | {r['top10']:.3f} |")
    models = [k for k in res if k not in anchors]
    for m in models:
        res[m]["paired"] = {}
        for base in anchors + [x for x in models if x != m]:
            mrr = paired_bootstrap(res[m]["rr10"], res[base]["rr10"])
            t1 = paired_bootstrap(res[m]["hit1"], res[base]["hit1"])
            res[m]["paired"][base] = {"mrr10": mrr, "top1": t1}
            print(f"{m} - {base}: MRR@10 {mrr[0]:+.3f} ({mrr[1]:+.3f} .. {mrr[2]:+.3f}), "
                  f"top-1 {t1[0]:+.3f} ({t1[1]:+.3f} .. {t1[2]:+.3f})")
    for r in res.values():
        r.pop("rr10")
        r.pop("hit1")
    return res


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--search", help="tools/train/search_sets.py output")
    ap.add_argument("--teacher", help="distill_teacher.py output directory (MiniLM anchors)")
    ap.add_argument("--cli", default="build/tools/spectral-embed")
    ap.add_argument("--model", action="append", default=[], metavar="LABEL=GGUF")
    ap.add_argument("--sets", default="dev")
    ap.add_argument("--anchors", action="store_true")
    ap.add_argument("--model2vec", help="a model2vec StaticModel folder (an anchor)")
    ap.add_argument("--make-model2vec", metavar="DIR", help="distil model2vec from the MiniLM teacher into DIR and exit")
    ap.add_argument("--parts", action="store_true")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--cache", help="directory caching each model's embeddings")
    ap.add_argument("--json")
    a = ap.parse_args(argv)
    if a.make_model2vec:
        model2vec_make(a.teacher, a.make_model2vec)
        return 0
    out = {s: eval_split(a, s) for s in a.sets.split(",") if s}
    if a.json:
        with open(a.json, "w") as fh:
            json.dump(out, fh, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
