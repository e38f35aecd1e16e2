#!/usr/bin/env python3
"""Check that a spectralmlp GGUF carrying the teacher's `bert` tokenizer keys tokenizes like
the teacher (all-MiniLM-L6-v2's Hugging Face fast tokenizer), through our C binary.

    python3 tools/train/check_bert_tokenizer.py --cli build/tools/spectral-embed \
        --model models/spectral-default.gguf [--corpus /work/data/corpus.jsonl --n 400]

The token ids are read back through the runtime itself: the tokenizer keys of --model are
copied into a probe model (D = 8, one block whose residual branches are exactly zero, no
projection) whose embedding row t is (t, 0, ..., 0), so `spectral-embed --pooling none
--no-normalize` prints each token's id as the first coordinate of its state. Compared with
the teacher tokenizer's ids (with [CLS] ... [SEP]) on built-in edge cases (accents, CJK,
punctuation, control characters, long words, invalid UTF-8) and on --n corpus documents.
Exit status 0 when every text matches.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
sys.path.insert(1, os.path.join(HERE, "..", "convert"))
from gguf_tensors import finish  # noqa: E402

EDGE = [
    "Hello, World!", "naïve café résumé Ångström", "東京都 日本語のテキスト 한국어 中文", "foo_bar.baz(3.14) -> x[0]",
    "tab\tand\nnewline\r\nand\x00nul\x07bell", "a" * 150 + " short", "don't won't it's", "ÉCOLE Ünïcödé ß ǅ ﬁ",
    "emoji 😀👍 ok", "   leading and trailing   ", "", "$100 @user #tag 50% a&b <html>", "İstanbul ΣΊΣΥΦΟΣ",
    "unaffable unbelievable antidisestablishmentarianism", "x" * 101, "\u00a0nbsp\u2003em\u200bzw",
]


def probe_model(src: str, dst: str) -> None:
    import gguf
    r = gguf.GGUFReader(src)
    wr = gguf.GGUFWriter(dst, "spectralmlp")
    n_vocab = None
    for f in r.fields.values():
        if not f.name.startswith("tokenizer."):
            continue
        t = f.types[0]
        if t == gguf.GGUFValueType.ARRAY:
            sub = f.types[1]
            if sub == gguf.GGUFValueType.STRING:
                vals = [bytes(f.parts[i]).decode("utf-8") for i in f.data]
                n_vocab = len(vals) if f.name == "tokenizer.ggml.tokens" else n_vocab
            else:
                vals = [f.parts[i][0].item() for i in f.data]
            wr.add_key_value(f.name, vals, t, sub_type=sub)
        elif t == gguf.GGUFValueType.STRING:
            wr.add_key_value(f.name, bytes(f.parts[f.data[0]]).decode("utf-8"), t)
        else:
            wr.add_key_value(f.name, f.parts[f.data[0]][0].item(), t)
    D = 8
    for k, v in (("embedding_length", D), ("feed_forward_length", D), ("block_count", 1),
                 ("mixing.n_filters", 4), ("context_length", 512), ("pooling_type", 1)):
        wr.add_uint32(f"spectralmlp.{k}", v)
    wr.add_float32("spectralmlp.attention.layer_norm_epsilon", 1e-5)
    emb = np.zeros((n_vocab, D), np.float32)
    emb[:, 0] = np.arange(n_vocab)
    z = lambda *s: np.zeros(s, np.float32)  # noqa: E731
    wr.add_tensor("token_embd.weight", emb)
    wr.add_tensor("blk.0.mix_norm.weight", np.ones(D, np.float32))
    wr.add_tensor("blk.0.mix_norm.bias", z(D))
    wr.add_tensor("blk.0.mix_filter.weight", z(D, 4, 2))
    wr.add_tensor("blk.0.mix_filter.bias", z(D))
    wr.add_tensor("blk.0.ffn_norm.weight", np.ones(D, np.float32))
    wr.add_tensor("blk.0.ffn_norm.bias", z(D))
    wr.add_tensor("blk.0.ffn_up.weight", z(D, D))
    wr.add_tensor("blk.0.ffn_up.bias", z(D))
    wr.add_tensor("blk.0.ffn_down.weight", z(D, D))
    wr.add_tensor("blk.0.ffn_down.bias", z(D))
    finish(wr)


def runtime_ids(cli: str, model: str, texts: list[bytes]) -> list[list[int] | None]:
    from eval_retrieval import write_texts

    with tempfile.TemporaryDirectory() as td:
        paths = write_texts(td, texts)
        r = subprocess.run([cli, "-m", model, "--pooling", "none", "--no-normalize", "-t", "1",
                            "--output-format", "jsonl"] + paths, capture_output=True)
        out = {}
        for line in r.stdout.decode().splitlines():
            rec = json.loads(line)
            out[rec["input"]] = [int(round(row[0])) for row in rec["embeddings"]]
        return [out.get(p) for p in paths]


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--cli", default="build/tools/spectral-embed")
    ap.add_argument("--model", default="models/spectral-default.gguf")
    ap.add_argument("--corpus", default=None)
    ap.add_argument("--n", type=int, default=400)
    a = ap.parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from transformers import AutoTokenizer
    from distill_teacher import teacher_path
    tok = AutoTokenizer.from_pretrained(teacher_path())

    texts = [t.encode("utf-8") for t in EDGE if t] + [b"invalid \xff\xfe utf-8 \xc3( here"]
    if a.corpus:
        with open(a.corpus) as fh:
            docs = [json.loads(line) for line in fh]
        rng = np.random.default_rng(0)
        for i in rng.choice(len(docs), size=min(a.n, len(docs)), replace=False):
            texts.append(docs[i]["text"].encode("utf-8"))
    with tempfile.TemporaryDirectory() as td:
        probe = os.path.join(td, "probe.gguf")
        probe_model(a.model, probe)
        got = runtime_ids(a.cli, probe, texts)
    bad = 0
    for t, g in zip(texts, got):
        want = tok(t.decode("utf-8", "replace"))["input_ids"]
        if g != want:
            bad += 1
            if bad <= 5:
                print(f"MISMATCH on {t[:80]!r}: runtime {g[:20] if g else g} ... teacher {want[:20]} ...")
    n_tok = sum(len(g or []) for g in got)
    print(f"check_bert_tokenizer: {len(texts) - bad}/{len(texts)} texts identical ({n_tok} tokens)")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
