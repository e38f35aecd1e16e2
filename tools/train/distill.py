#!/usr/bin/env python3
"""Distill all-MiniLM-L6-v2 into the default `spectralmlp` model (models/spectral-default.gguf).

    python3 tools/train/distill.py --teacher /work/data/teacher --out /work/data/run1 \
        [--dim 256 --ffn 1024 --layers 4 --filters 128] [--deadline 20:30] [--threads 2]
    python3 tools/train/distill.py --teacher /work/data/teacher --out /work/data/run1 --export-only \
        [--ckpt best|last] -o model.gguf
    python3 tools/train/distill.py --teacher /work/data/teacher --out /work/data/static --init-only -o static.gguf

Inputs (made by tools/train/distill_teacher.py): static.npz (teacher output for every vocabulary
id alone, word-piece counts of the training split) and train.npz (training documents as
teacher word-piece ids, one cached teacher embedding per 254-id chunk).

Student: tools/convert/seed_model.py's DocumentEncoder with the teacher's vocabulary (30,522
WordPiece ids; the GGUF carries tokenizer.ggml.model = bert and the teacher's vocab), an
output projection D -> 384 into the teacher's embedding space, mean pooling.

Initialisation (the student starts as a bag-of-tokens embedder):
  token_embd[t] = w_t * PCA_D(x_t - mu), x_t = the teacher's mean-pooled output for
      [CLS] t [SEP], PCA over the vocabulary, w_t = a / (a + p_t) (SIF weighting, p_t the
      smoothed word-piece frequency in the training split, a = --sif); [CLS], [SEP], [PAD]
      rows are zero.
  output.weight = the PCA basis (D -> 384), output.bias = 0.
  In every block the mixing filter and the MLP's down projection start at zero, so each
  residual branch adds nothing: the initial model's embedding is the weighted mean of the
  static token vectors, mapped back to the teacher's space.
`--init-only` exports exactly that model (the "static embeddings" anchor).
`--lexical-dims R` exports (any of the three ways) with an R-bucket lexical sketch appended
to the embedding (docs/format.md; docs/default-model.md, "The lexical sketch"), at
weight --lexical-scale; `--train-lexical` also trains with it (InfoNCE on the whole
embedding). `--init-from CKPT` starts from an earlier run's weights instead; with a smaller --ffn than
the checkpoint's, each block keeps the MLP hidden units with the largest
|w_up_i| * |w_down_:,i| (with --init-only: the pruned model, untrained); `--init-gguf FILE`
starts from a GGUF's weights (e.g. an earlier default model). `--freeze-emb` keeps the token
embeddings where they start (the shipped model: the static ones).

Objective, per step: B documents with at least n_a + n_b whole chunks; two adjacent spans
(n_a and n_b chunks, drawn per step from 1..--max-span, cut at a random chunk boundary),
each fed as [CLS] ids [SEP] (what the runtime's bert tokenizer emits). Loss =
  (1 - cos(student(A), t(A))) + (1 - cos(student(B), t(B)))
  + --con * symmetric InfoNCE(student(A), student(B); in-batch negatives, --temp)
where t(span) = mean of the span's teacher chunk embeddings minus the mean teacher chunk
embedding of the training set (the student learns a centred target), times --chunk-weight.
Search (--search PAIRS, tools/train/search_sets.py; its training split only): --search-batch
queries, their documents (cut to --max-doc-tokens) and --hard-neg hard negatives each (the
other documents of the same source that BM25 ranks highest for the query, and the same
file's), adding
  --query-weight * (1 - cos(student(query), t(query)))      t(query): the teacher's, centred
  --search-weight * symmetric InfoNCE(queries, documents)    (--temp; queries over all the
      batch's documents, documents over the queries), averaged with the same InfoNCE on
      the first m values of the dense embedding for each m of --matryoshka (exported as
      the key spectralmlp.dense.prefixes: those lengths work alone)
and with --sentences N, N short training sentences per step (distill_teacher.py --part
sentences) with --sentence-weight * (1 - cos(student, t)). Every sequence runs at its own
length (equal lengths batched): the FFT mixing must never see padding. The output
projection is applied after mean pooling (the same value: pooling is linear).
AdamW, linear warm-up then cosine decay over the step count estimated from the first steps
and --deadline (UTC HH:MM); checkpoints every --ckpt-every steps (resumed automatically from
OUT/last.pt), validation (adjacent-span top-1 on --n-val training documents kept out of
training) every --val-every steps; the best validation checkpoint is OUT/best.pt.
"""
from __future__ import annotations

import argparse
import datetime as dt
import json
import math
import os
import sys
import time

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
sys.path.insert(1, os.path.join(HERE, "..", "convert"))  # seed_model, the GGUF writer, reference
CHUNK = 254
V = 30522


def teacher_vocab():
    from distill_teacher import teacher_path
    with open(os.path.join(teacher_path(), "vocab.txt"), encoding="utf-8") as fh:
        toks = [ln.rstrip("\n") for ln in fh]
    assert len(toks) == V, len(toks)
    return toks


def static_init(static_path: str, dim: int, sif: float):
    z = np.load(static_path)
    x = z["emb"].astype(np.float64)
    counts = z["counts"].astype(np.float64)
    mu = x.mean(0)
    xc = x - mu
    _, _, vt = np.linalg.svd(xc, full_matrices=False)
    P = vt[:dim]                                  # (dim, 384)
    e = xc @ P.T                                  # (V, dim)
    p = (counts + 1.0) / (counts.sum() + len(counts))
    w = sif / (sif + p)
    e = e * w[:, None]
    toks = teacher_vocab()
    for s in ("[CLS]", "[SEP]", "[PAD]"):
        e[toks.index(s)] = 0.0
    return e.astype(np.float32), P.astype(np.float32)


def lexical_sketch(static_path: str, dims: int, scale: float, seed: int, sif: float) -> dict:
    """The lexical sketch's tables (docs/format.md): every word piece hashed to one
    of `dims` buckets with a random sign, weighted a / (a + p_t) (the SIF weight of the
    static embeddings, p_t its smoothed frequency in the training split); [CLS], [SEP] and
    [PAD], in every document, weigh 0."""
    counts = np.load(static_path)["counts"].astype(np.float64)
    p = (counts + 1.0) / (counts.sum() + len(counts))
    weight = sif / (sif + p)
    weight *= np.random.default_rng(seed + 1).choice([-1.0, 1.0], len(counts))
    toks = teacher_vocab()
    for s in ("[CLS]", "[SEP]", "[PAD]"):
        weight[toks.index(s)] = 0.0
    bucket = np.random.default_rng(seed).integers(0, dims, len(counts)).astype(np.int32)
    return {"dims": dims, "scale": scale, "bucket": bucket, "weight": weight.astype(np.float32)}


def export_gguf(sd: dict, path: str, *, name: str, dtype: str = "f16", ctx: int = 8192,
                eps: float = 1e-5, lexical: dict | None = None, prefixes: list | None = None) -> None:
    """State dict (numpy) -> spectralmlp GGUF with the teacher's WordPiece tokenizer
    (and a lexical sketch, see lexical_sketch, when given)."""
    from convert_seed import ARCH, map_state_dict, new_writer
    from gguf_tensors import add_bert_tokenizer, add_tensors, finish

    tensors, hp = map_state_dict(sd)
    wr = new_writer(path, hp, name=name, pooling="mean", ctx=ctx, eps=eps,
                    description="spectralmlp document encoder distilled from "
                    "sentence-transformers/all-MiniLM-L6-v2 (Apache-2.0); see docs/default-model.md")
    add_bert_tokenizer(wr, teacher_vocab())
    if prefixes:  # the dense part's prefix lengths trained to be used alone (--matryoshka)
        import gguf
        wr.add_key_value(f"{ARCH}.dense.prefixes", sorted(prefixes), gguf.GGUFValueType.ARRAY,
                         sub_type=gguf.GGUFValueType.UINT32)
    if lexical:
        wr.add_uint32(f"{ARCH}.lexical.dims", lexical["dims"])
        wr.add_float32(f"{ARCH}.lexical.scale", lexical["scale"])
        wr.add_tensor("lexical.bucket", lexical["bucket"])
        tensors = dict(tensors, **{"lexical.weight": lexical["weight"]})  # a vector: stays F32
    add_tensors(wr, tensors, dtype)
    finish(wr)


def state_dict_from_gguf(path: str) -> dict:
    """DocumentEncoder state dict (float32 numpy) of a spectralmlp GGUF read by
    tools/convert/reference.py: convert_seed.map_state_dict's naming, inverted."""
    import reference
    t = {k: v.astype(np.float32) for k, v in reference.load_gguf(path).tensors.items() if not k.startswith("lexical.")}
    sd = {"embedding.weight": t.pop("token_embd.weight"), "output.weight": t.pop("output.weight"),
          "output.bias": t.pop("output.bias")}
    names = {"mix_norm.weight": "norm1.weight", "mix_norm.bias": "norm1.bias", "mix_filter.bias": "spectral_mix.bias",
             "ffn_norm.weight": "norm2.weight", "ffn_norm.bias": "norm2.bias", "ffn_up.weight": "mlp.0.weight",
             "ffn_up.bias": "mlp.0.bias", "ffn_down.weight": "mlp.3.weight", "ffn_down.bias": "mlp.3.bias"}
    for name, v in t.items():
        _, i, rest = name.split(".", 2)
        if rest == "mix_filter.weight":  # (D, K, 2): the (re, im) pairs
            sd[f"blocks.{i}.spectral_mix.weight_real"] = np.ascontiguousarray(v[..., 0])
            sd[f"blocks.{i}.spectral_mix.weight_imag"] = np.ascontiguousarray(v[..., 1])
        else:
            sd[f"blocks.{i}.{names[rest]}"] = v
    return sd


def prune_ffn(sd: dict, ffn: int):
    """Keep each block's `ffn` MLP hidden units with the largest |w_up_i| * |w_down_:,i|.

    A hidden unit's contribution to the residual stream is bounded by that product, so
    this keeps the units that move the output most. Returns (state dict, old width)."""
    sd = dict(sd)
    old = None
    for k in [k for k in sd if k.endswith(".mlp.0.weight")]:
        pre = k[:-len("0.weight")]
        up, dn = sd[k], sd[pre + "3.weight"]
        old = up.shape[0]
        if ffn > old:
            raise SystemExit(f"distill: --ffn {ffn} is wider than the checkpoint's {old}")
        imp = up.float().norm(dim=1) * dn.float().norm(dim=0)
        keep = imp.argsort(descending=True)[:ffn].sort().values
        sd[k], sd[pre + "0.bias"], sd[pre + "3.weight"] = up[keep], sd[pre + "0.bias"][keep], dn[:, keep]
    return sd, old


def load_search(a, lexical: dict | None) -> dict:
    """Training pairs of tools/search_sets.py as teacher word-piece ids ([CLS] ... [SEP];
    documents cut to --max-doc-tokens, then to a multiple of 16 tokens past 64 so more of them
    share a length), the teacher's query embeddings (centred like the span targets), each
    query's hard negatives (the 8 other documents of its source that BM25 ranks highest, and
    up to 8 of its own file's), and the sketches of queries and whole documents."""
    from transformers import AutoTokenizer
    from eval_search import bm25_matrix
    from distill_teacher import teacher_path
    from search_sets import load_pairs
    rows = load_pairs(a.search, "train")
    tok = AutoTokenizer.from_pretrained(teacher_path())
    qz = np.load(os.path.join(a.teacher, "search_queries.npz"))["emb"]
    t_mean = np.load(os.path.join(a.teacher, "train.npz"))["chunk_emb"].mean(0)
    wrap = lambda x: np.asarray([101] + list(x) + [102], dtype=np.int64)  # noqa: E731
    q_full = tok([r["query"] for r in rows], add_special_tokens=False)["input_ids"]
    d_full = tok([r["doc"] for r in rows], add_special_tokens=False)["input_ids"]
    d_ids = []
    for x in d_full:
        x = x[:a.max_doc_tokens - 2]
        if len(x) > 64:
            x = x[:len(x) // 16 * 16]
        d_ids.append(wrap(x))
    by_set = {}
    for i, r in enumerate(rows):
        by_set.setdefault(r["set"], []).append(i)
    neg = [None] * len(rows)
    for src, idx in by_set.items():
        sc_all = bm25_matrix([rows[i]["query"] for i in idx], [rows[i]["doc"] for i in idx])
        by_file = {}
        for k, i in enumerate(idx):
            by_file.setdefault(rows[i]["key"], []).append(i)
        for k, i in enumerate(idx):
            sc = sc_all[k]
            sc[k] = -np.inf
            best = [idx[j] for j in np.argsort(-sc)[:8]]
            same = [j for j in by_file[rows[i]["key"]] if j != i][:8]
            neg[i] = np.asarray(sorted(set(best + same)), dtype=np.int64)
    out = {"q_ids": [wrap(x[:254]) for x in q_full], "d_ids": d_ids, "neg": neg,
           "q_target": (qz[[r["line"] for r in rows]] - t_mean).astype(np.float32)}
    if lexical:  # the runtime's sketch (reference.py's), unit length
        import types
        import reference
        tables = types.SimpleNamespace(n_vocab=V, lexical_dims=lexical["dims"], lexical_bucket=lexical["bucket"],
                                       tensors={"lexical.weight": lexical["weight"].astype(np.float64)})

        def sk(ids_list):
            m = np.stack([reference.lexical_sketch(tables, x) for x in ids_list])
            return (m / np.maximum(np.linalg.norm(m, axis=1, keepdims=True), 1e-12)).astype(np.float32)
        out["q_sketch"], out["d_sketch"] = sk(q_full), sk(d_full)
    print(f"distill: {len(rows)} search pairs from {len({(r['set'], r['key']) for r in rows})} files; "
          f"documents {np.mean([len(x) for x in d_ids]):.0f} tokens on average in training", flush=True)
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--teacher", required=True, help="directory of distill_teacher.py outputs")
    ap.add_argument("--out", required=True)
    ap.add_argument("-o", "--output", help="GGUF to write (default OUT/model.gguf)")
    ap.add_argument("--dim", type=int, default=256)
    ap.add_argument("--ffn", type=int, default=1024)
    ap.add_argument("--layers", type=int, default=4)
    ap.add_argument("--filters", type=int, default=128)
    ap.add_argument("--sif", type=float, default=3e-3)
    ap.add_argument("--batch", type=int, default=16, help="document pairs per step")
    ap.add_argument("--max-span", type=int, default=3, help="chunks per span, at most")
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--emb-lr", type=float, default=2e-4, help="lr of the token embeddings")
    ap.add_argument("--wd", type=float, default=0.01)
    ap.add_argument("--warmup", type=int, default=20)
    ap.add_argument("--temp", type=float, default=0.05)
    ap.add_argument("--con", type=float, default=0.5, help="weight of the InfoNCE term")
    ap.add_argument("--deadline", default=None, help="UTC HH:MM at which training stops")
    ap.add_argument("--steps", type=int, default=0, help="fixed step count instead of --deadline")
    ap.add_argument("--n-val", type=int, default=200)
    ap.add_argument("--val-every", type=int, default=50)
    ap.add_argument("--ckpt-every", type=int, default=25)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--init-only", action="store_true", help="export the initial (static) model")
    ap.add_argument("--export-only", action="store_true")
    ap.add_argument("--ckpt", choices=["best", "last"], default="best")
    ap.add_argument("--max-chunks", type=int, default=0,
                    help="train on the documents of the first N teacher chunks only (0 = all; "
                    "the document that crosses N is kept whole, as distill_teacher.py does)")
    ap.add_argument("--init-from", help="start from this checkpoint's weights (not its optimizer or "
                    "schedule) instead of the static embeddings, e.g. an earlier run's best.pt")
    ap.add_argument("--init-gguf", help="start from the weights of a spectralmlp GGUF of this shape (e.g. an "
                    "earlier default model) instead of the static embeddings")
    ap.add_argument("--freeze-emb", action="store_true",
                    help="keep the token embeddings at their initial values (static or --init-from)")
    ap.add_argument("--name", default="spectral-default")
    ap.add_argument("--lexical-dims", type=int, default=0, metavar="R",
                    help="export with an R-dim lexical sketch appended to the embedding (0: none)")
    ap.add_argument("--lexical-scale", type=float, default=2.0, help="its weight next to the unit dense part")
    ap.add_argument("--lexical-seed", type=int, default=2, help="seed of its buckets (and, +1, its signs)")
    ap.add_argument("--train-lexical", action="store_true",
                    help="the InfoNCE term (and validation) on the exported embedding, dense part and "
                         "lexical sketch together, so the dense part learns what the sketch misses")
    ap.add_argument("--search", metavar="PAIRS", help="tools/search_sets.py pairs: also train query -> document "
                    "search on the training split (teacher query targets from distill_teacher.py --part search)")
    ap.add_argument("--search-batch", type=int, default=32, help="queries per step")
    ap.add_argument("--hard-neg", type=int, default=1, help="hard negative documents per query (same source: "
                    "BM25's best other documents and the same file's)")
    ap.add_argument("--search-weight", type=float, default=1.0, help="weight of the query -> document InfoNCE")
    ap.add_argument("--query-weight", type=float, default=1.0, help="weight of 1 - cos(student(query), teacher(query))")
    ap.add_argument("--chunk-weight", type=float, default=1.0, help="weight of the chunk-target loss (spans)")
    ap.add_argument("--sentences", type=int, default=0, help="sentences per step with the teacher's embedding as "
                    "target (distill_teacher.py --part sentences: short texts, like queries)")
    ap.add_argument("--sentence-weight", type=float, default=1.0)
    ap.add_argument("--max-doc-tokens", type=int, default=512, help="search documents are cut to this many tokens in training")
    ap.add_argument("--matryoshka", default="", help="comma-separated prefix lengths of the dense embedding also "
                    "trained for search (e.g. 64,128,256)")
    ap.add_argument("--search-lexical", action="store_true", help="the search InfoNCE on the exported embedding "
                    "(dense part and lexical sketch), so the dense part learns what the sketch misses")
    a = ap.parse_args(argv)
    mat_dims = [int(x) for x in a.matryoshka.split(",") if x]
    lexical = (lexical_sketch(os.path.join(a.teacher, "static.npz"), a.lexical_dims, a.lexical_scale,
                              a.lexical_seed, a.sif) if a.lexical_dims else None)
    if (a.train_lexical or a.search_lexical) and not lexical:
        ap.error("--train-lexical and --search-lexical need --lexical-dims")

    import torch
    import torch.nn.functional as Fn
    from seed_model import DocumentEncoder

    torch.set_num_threads(a.threads)
    torch.manual_seed(a.seed)
    rng = np.random.default_rng(a.seed)
    os.makedirs(a.out, exist_ok=True)
    out_gguf = a.output or os.path.join(a.out, "model.gguf")

    model = DocumentEncoder(vocab=V, dim=a.dim, ffn=a.ffn, n_layers=a.layers, n_filters=a.filters,
                            dropout=0.0, out_dim=384)

    def to_np(m):
        return {k: v.detach().float().cpu().numpy() for k, v in m.state_dict().items()}

    last_pt, best_pt = os.path.join(a.out, "last.pt"), os.path.join(a.out, "best.pt")
    if a.export_only:
        ck = torch.load(best_pt if a.ckpt == "best" else last_pt, map_location="cpu", weights_only=False)
        model.load_state_dict(ck["model"])
        export_gguf(to_np(model), out_gguf, name=a.name, lexical=lexical, prefixes=mat_dims)
        print(f"distill: wrote {out_gguf} from {a.ckpt} (step {ck['step']}, val {ck.get('val')})")
        return 0

    emb, P = static_init(os.path.join(a.teacher, "static.npz"), a.dim, a.sif)
    with torch.no_grad():
        model.embedding.weight.copy_(torch.from_numpy(emb))
        for blk in model.blocks:
            blk.spectral_mix.weight_real.zero_()
            blk.spectral_mix.weight_imag.zero_()
            blk.mlp[3].weight.zero_()
            blk.mlp[3].bias.zero_()
        model.output.weight.copy_(torch.from_numpy(P.T.copy()))
        model.output.bias.zero_()
    if a.init_from and not os.path.exists(os.path.join(a.out, "last.pt")):
        ck = torch.load(a.init_from, map_location="cpu", weights_only=False)
        sd, kept = prune_ffn(ck["model"], a.ffn)
        model.load_state_dict(sd)
        print(f"distill: weights from {a.init_from} (step {ck['step']} of its run)"
              + (f"; MLP hidden units pruned {kept} -> {a.ffn}" if kept != a.ffn else ""), flush=True)
    if a.init_gguf and not os.path.exists(os.path.join(a.out, "last.pt")):
        model.load_state_dict({k: torch.from_numpy(v) for k, v in state_dict_from_gguf(a.init_gguf).items()})
        print(f"distill: weights from {a.init_gguf}", flush=True)
    if a.init_only:
        what = "--init-from weights" if a.init_from else "initial bag-of-tokens model"
        export_gguf(to_np(model), out_gguf, name=a.name + (" (init-from)" if a.init_from else " (static init)"),
                    lexical=lexical)
        print(f"distill: wrote {out_gguf} ({what})")
        return 0

    z = np.load(os.path.join(a.teacher, "train.npz"))
    tokens, doc_off = z["tokens"], z["doc_off"]
    chunk_emb, chunk_doc, chunk_start = z["chunk_emb"], z["chunk_doc"], z["chunk_start"]
    if a.max_chunks and a.max_chunks < len(chunk_doc):
        last = int(chunk_doc[a.max_chunks - 1])  # documents 0 .. last, chunks in document order
        n_chunks = int(np.searchsorted(chunk_doc, last, side="right"))
        chunk_emb, chunk_doc, chunk_start = chunk_emb[:n_chunks], chunk_doc[:n_chunks], chunk_start[:n_chunks]
        doc_off = doc_off[:last + 2]
        tokens = tokens[:doc_off[-1]]
    n_docs = len(doc_off) - 1
    t_mean = chunk_emb.mean(0)
    first_chunk = np.full(n_docs, -1, dtype=np.int64)
    n_full = np.zeros(n_docs, dtype=np.int64)
    for c in range(len(chunk_doc)):
        d = chunk_doc[c]
        if first_chunk[d] < 0:
            first_chunk[d] = c
        if doc_off[d] + chunk_start[c] + CHUNK <= doc_off[d + 1]:
            n_full[d] += 1
    eligible = np.nonzero(n_full >= 2)[0]
    perm = np.random.default_rng(1234).permutation(eligible)
    val_docs, train_docs = perm[:a.n_val], perm[a.n_val:]
    print(f"distill: {n_docs} documents, {len(chunk_doc)} chunks; {len(train_docs)} train "
          f"and {len(val_docs)} validation documents with >= 2 whole chunks", flush=True)
    cls_id, sep_id = 101, 102
    search = load_search(a, lexical) if a.search else None
    if a.sentences:
        zs = np.load(os.path.join(a.teacher, "sentences.npz"))
        off = zs["offsets"]
        sent_ids = [np.concatenate([[cls_id], zs["tokens"][off[i]:off[i + 1]], [sep_id]]).astype(np.int64)
                    for i in range(len(off) - 1)]
        sent_target = (zs["emb"] - t_mean).astype(np.float32)
        print(f"distill: {len(sent_ids)} sentences with teacher targets", flush=True)

    def span(d, c0, n):
        """(ids with [CLS]/[SEP], centred teacher target) for whole chunks c0..c0+n-1 of doc d."""
        s = doc_off[d] + c0 * CHUNK
        ids = np.concatenate([[cls_id], tokens[s:s + n * CHUNK], [sep_id]]).astype(np.int64)
        fc = first_chunk[d] + c0
        t = chunk_emb[fc:fc + n].mean(0) - t_mean
        return ids, t

    def batch(docs, n_a, n_b, r):
        xa, xb, ta, tb = [], [], [], []
        for d in docs:
            cut = r.integers(n_a, n_full[d] - n_b + 1)
            ia, t1 = span(d, cut - n_a, n_a)
            ib, t2 = span(d, cut, n_b)
            xa.append(ia); xb.append(ib); ta.append(t1); tb.append(t2)
        return (torch.from_numpy(np.stack(xa)), torch.from_numpy(np.stack(xb)),
                torch.from_numpy(np.stack(ta)), torch.from_numpy(np.stack(tb)))

    def embed(x):
        # the output projection after mean pooling: the same value (pooling is linear), less work
        return Fn.normalize(model.output(model.token_states(x).mean(1)), dim=-1)

    if a.train_lexical:
        lex_bucket = torch.from_numpy(lexical["bucket"].astype(np.int64))
        lex_weight = torch.from_numpy(lexical["weight"])

    def hybrid(e, x):
        """The exported embedding (runtime/spectral.c): [e, scale * unit(sketch(x))], unit
        length; the dense part alone without --train-lexical."""
        if not a.train_lexical:
            return e
        with torch.no_grad():
            counts = torch.zeros(x.shape[0], V).scatter_add_(1, x, torch.ones(x.shape, dtype=torch.float32))
            s = torch.zeros(x.shape[0], a.lexical_dims).index_add_(1, lex_bucket, counts.sqrt() * lex_weight)
            s = Fn.normalize(s, dim=-1) * a.lexical_scale
        return torch.cat([e, s], dim=1) / math.sqrt(1 + a.lexical_scale ** 2)

    def pooled(seqs):
        """Mean-pooled output (unnormalized) of each id sequence at its own length (the FFT
        mixing sees no padding): sequences of equal length go through the model together."""
        out = [None] * len(seqs)
        by_len = {}
        for i, x in enumerate(seqs):
            by_len.setdefault(len(x), []).append(i)
        for idx in by_len.values():
            e = model.output(model.token_states(torch.from_numpy(np.stack([seqs[i] for i in idx]))).mean(1))
            for k, i in enumerate(idx):
                out[i] = e[k]
        return torch.stack(out)

    def search_loss(sd, r):
        """(1 - cos to the teacher's query embeddings, InfoNCE of queries over the batch's
        documents: their own, the other queries', and hard negatives)."""
        qi = r.choice(len(sd["q_ids"]), size=a.search_batch, replace=False)
        docs = list(qi)
        for i in qi:
            if len(sd["neg"][i]):
                docs += [int(j) for j in r.choice(sd["neg"][i], size=min(a.hard_neg, len(sd["neg"][i])), replace=False)
                         if j not in docs]
        eq = pooled([sd["q_ids"][i] for i in qi])
        ed = pooled([sd["d_ids"][j] for j in docs])
        tq = torch.from_numpy(sd["q_target"][qi])
        l_q = 1 - Fn.cosine_similarity(eq, tq).mean()
        lab = torch.arange(len(qi))

        def nce(x, y):
            sim = x @ y.T / a.temp
            return 0.5 * (Fn.cross_entropy(sim, lab) + Fn.cross_entropy(sim[:, :len(qi)].T, lab))

        uq, ud = Fn.normalize(eq, dim=-1), Fn.normalize(ed, dim=-1)
        if a.search_lexical:
            k = math.sqrt(1 + a.lexical_scale ** 2)
            uq = torch.cat([uq, a.lexical_scale * torch.from_numpy(sd["q_sketch"][qi])], 1) / k
            ud = torch.cat([ud, a.lexical_scale * torch.from_numpy(sd["d_sketch"][docs])], 1) / k
        l_s = nce(uq, ud)
        for m in mat_dims:
            l_s = l_s + nce(Fn.normalize(eq[:, :m], dim=-1), Fn.normalize(ed[:, :m], dim=-1))
        return l_q, l_s / (1 + len(mat_dims))

    def validate():
        model.eval()
        with torch.no_grad():
            xa, xb, ta, tb = batch(val_docs, 1, 1, np.random.default_rng(7))
            ea = torch.cat([embed(xa[i:i + 50]) for i in range(0, len(xa), 50)])
            eb = torch.cat([embed(xb[i:i + 50]) for i in range(0, len(xb), 50)])
            s = hybrid(ea, xa) @ hybrid(eb, xb).T
            lab = torch.arange(len(ea))
            top1 = 0.5 * ((s.argmax(1) == lab).float().mean() + (s.argmax(0) == lab).float().mean())
            cos = 0.5 * (Fn.cosine_similarity(ea, ta.float()).mean() + Fn.cosine_similarity(eb, tb.float()).mean())
        model.train()
        return float(top1), float(cos)

    emb_params = [model.embedding.weight]
    if a.freeze_emb:
        model.embedding.weight.requires_grad_(False)
        emb_params = []
    other = [p for n, p in model.named_parameters() if n != "embedding.weight"]
    decay = [p for p in other if p.ndim >= 2]
    nodecay = [p for p in other if p.ndim < 2]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": a.wd, "base": a.lr},
                             {"params": nodecay, "weight_decay": 0.0, "base": a.lr},
                             *([{"params": emb_params, "weight_decay": 0.0, "base": a.emb_lr}]
                               if emb_params else [])],
                            lr=a.lr, betas=(0.9, 0.98))
    step, total, best, hist = 0, a.steps or None, -1.0, []
    if os.path.exists(last_pt):
        ck = torch.load(last_pt, map_location="cpu", weights_only=False)
        model.load_state_dict(ck["model"])
        opt.load_state_dict(ck["opt"])
        step, total, best, hist = ck["step"], ck["total"], ck["best"], ck["hist"]
        rng = np.random.default_rng([a.seed, step])
        print(f"distill: resumed from {last_pt} at step {step} (total {total}, best val {best})", flush=True)
    else:
        v = validate()
        hist.append({"step": 0, "val_top1": v[0], "val_cos": v[1]})
        print(f"distill: step 0 validation top-1 {v[0]:.3f} cos {v[1]:.3f}", flush=True)
    n_params = sum(p.numel() for p in model.parameters())
    print(f"distill: D={a.dim} F={a.ffn} L={a.layers} K={a.filters} params={n_params}", flush=True)

    deadline = None
    if a.deadline:
        hh, mm = map(int, a.deadline.split(":"))
        now = dt.datetime.now(dt.timezone.utc)
        deadline = now.replace(hour=hh, minute=mm, second=0, microsecond=0).timestamp()
    logf = open(os.path.join(a.out, "log.jsonl"), "a")
    t_run, s_run = time.time(), step

    def save(path, val=None):
        torch.save({"model": model.state_dict(), "opt": opt.state_dict(), "step": step, "total": total,
                    "best": best, "hist": hist, "val": val, "args": vars(a)}, path + ".tmp")
        os.replace(path + ".tmp", path)

    ema = None
    while True:
        if total is not None and step >= total:
            break
        if deadline and time.time() > deadline:
            print("distill: deadline reached", flush=True)
            break
        if total is None and step - s_run == 10:
            per = (time.time() - t_run) / 10
            total = step + int(0.95 * (deadline - time.time()) / per) if deadline else 1000
            print(f"distill: {per:.1f}s per step; planning {total} steps", flush=True)
        T = total or 10 ** 6
        if step < a.warmup:
            f = (step + 1) / a.warmup
        else:
            f = 0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * min(1.0, step / T)))
        for g in opt.param_groups:
            g["lr"] = g["base"] * f
        while True:  # span lengths with enough documents for a batch
            n_a, n_b = int(rng.integers(1, a.max_span + 1)), int(rng.integers(1, a.max_span + 1))
            pool = train_docs[n_full[train_docs] >= n_a + n_b]
            if len(pool) >= min(a.batch, 4):
                break
        docs = rng.choice(pool, size=min(a.batch, len(pool)), replace=False)
        xa, xb, ta, tb = batch(docs, n_a, n_b, rng)
        lab = torch.arange(len(docs))
        if a.chunk_weight > 0:
            ea, eb = embed(xa), embed(xb)
            l_cos = (1 - Fn.cosine_similarity(ea, ta.float()).mean()) + (1 - Fn.cosine_similarity(eb, tb.float()).mean())
            sim = hybrid(ea, xa) @ hybrid(eb, xb).T / a.temp
            l_con = 0.5 * (Fn.cross_entropy(sim, lab) + Fn.cross_entropy(sim.T, lab))
            loss = a.chunk_weight * (l_cos + a.con * l_con)
        else:  # search alone
            l_cos = l_con = torch.zeros(())
            sim = torch.zeros(len(docs), len(docs))
            loss = torch.zeros(())
        if search:
            l_q, l_s = search_loss(search, rng)
            loss = loss + a.query_weight * l_q + a.search_weight * l_s
        if a.sentences:
            si = rng.choice(len(sent_ids), size=a.sentences, replace=False)
            es = pooled([sent_ids[i] for i in si])
            l_sent = 1 - Fn.cosine_similarity(es, torch.from_numpy(sent_target[si])).mean()
            loss = loss + a.sentence_weight * l_sent
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_([p for p in model.parameters() if p.requires_grad], 1.0)
        opt.step()
        step += 1
        rec = {"step": step, "t": round(time.time() - t_run, 1), "lr_f": round(f, 4), "n_a": n_a,
               "n_b": n_b, "cos": l_cos.item() / 2, "con": l_con.item(),
               "acc": (sim.argmax(1) == lab).float().mean().item()}
        if search:
            rec.update(q_cos=1 - l_q.item(), search=l_s.item())
        if a.sentences:
            rec.update(s_cos=1 - l_sent.item())
        logf.write(json.dumps(rec) + "\n")
        ema = rec if ema is None else {k: 0.9 * ema[k] + 0.1 * v if k in ("cos", "con", "acc") else v
                                       for k, v in rec.items()}
        if step % 10 == 0:
            logf.flush()
            print(f"step {step}/{total} t={rec['t']}s lr_f={f:.3f} 1-cos={ema['cos']:.4f} "
                  f"nce={ema['con']:.3f} acc={ema['acc']:.3f}"
                  + (f" q_cos={rec['q_cos']:.3f} search={rec['search']:.3f}" if search else "")
                  + (f" s_cos={rec['s_cos']:.3f}" if a.sentences else ""), flush=True)
        if step % a.val_every == 0:
            v = validate()
            hist.append({"step": step, "val_top1": v[0], "val_cos": v[1]})
            print(f"distill: step {step} validation top-1 {v[0]:.3f} cos {v[1]:.3f}", flush=True)
            if v[0] + v[1] > best:
                best = v[0] + v[1]
                save(best_pt, v)
        if step % a.ckpt_every == 0:
            save(last_pt)
    v = validate()
    hist.append({"step": step, "val_top1": v[0], "val_cos": v[1]})
    print(f"distill: final step {step} validation top-1 {v[0]:.3f} cos {v[1]:.3f}", flush=True)
    if v[0] + v[1] > best:
        best = v[0] + v[1]
        save(best_pt, v)
    save(last_pt)
    ck = torch.load(best_pt, map_location="cpu", weights_only=False)
    model.load_state_dict(ck["model"])
    export_gguf(to_np(model), out_gguf, name=a.name, lexical=lexical, prefixes=mat_dims)
    with open(os.path.join(a.out, "summary.json"), "w") as fh:
        json.dump({"args": vars(a), "steps": step, "best_step": ck["step"], "best_val": ck["val"],
                   "hist": hist, "n_params": n_params}, fh, indent=1)
    print(f"distill: wrote {out_gguf} (best validation at step {ck['step']}: {ck['val']})", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
