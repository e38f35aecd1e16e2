#!/usr/bin/env python3
"""Parity of the exported default model: our C runtime vs the PyTorch student.

    python3 tools/distill_parity.py --cli build/tools/spectral-embed --ckpt RUN/best.pt \
        --gguf RUN/model.gguf --corpus /work/data/corpus.jsonl [--n 8]

Embeds --n documents (the longest held-out and out-of-domain ones, a few short ones) with
`spectral-embed` (its own bert tokenizer, mean pooling, L2 normalization) and with the
PyTorch DocumentEncoder of the checkpoint (teacher tokenizer, [CLS] ... [SEP]), twice: with
the float32 weights and with the matrices rounded to float16 as the GGUF stores them.
A model with a lexical sketch: the PyTorch side appends it computed here with numpy from
the teacher tokenizer's ids and the GGUF's lexical.bucket / lexical.weight, as
runtime/spectral.c defines the pooled vector, so the cosine covers both parts.
Prints the cosines; exit status 1 when the float16-rounded cosine is below 0.9999.
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


def read_lexical(path: str):
    """(bucket, weight, dims, scale) of the GGUF's lexical sketch, or None."""
    from gguf import GGUFReader
    r = GGUFReader(path, "r")
    f = r.fields.get("spectralmlp.lexical.dims")
    if f is None:
        return None
    dims = int(f.parts[f.data[0]][0])
    fs = r.fields.get("spectralmlp.lexical.scale")
    scale = float(fs.parts[fs.data[0]][0]) if fs is not None else 1.0
    t = {x.name: x for x in r.tensors}
    return (np.asarray(t["lexical.bucket"].data).astype(np.int64),
            np.asarray(t["lexical.weight"].data).astype(np.float64), dims, scale)


def with_sketch(e: np.ndarray, ids: list[int], lex) -> np.ndarray:
    if lex is None:
        return e
    bucket, weight, dims, scale = lex
    counts = np.bincount(np.asarray(ids), minlength=len(bucket)).astype(np.float64)
    v = np.nonzero(counts)[0]
    s = np.bincount(bucket[v], weights=weight[v] * np.sqrt(counts[v]), minlength=dims)
    s = s / (np.linalg.norm(s) or 1.0)
    x = np.concatenate([e / np.linalg.norm(e), scale * s])
    return x / np.linalg.norm(x)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--cli", default="build/tools/spectral-embed")
    ap.add_argument("--ckpt", required=True)
    ap.add_argument("--gguf", required=True)
    ap.add_argument("--corpus", required=True)
    ap.add_argument("--n", type=int, default=8)
    a = ap.parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import torch
    import torch.nn.functional as Fn
    from transformers import AutoTokenizer
    from distill_teacher import teacher_path
    from eval_retrieval import write_texts
    from seed_model import DocumentEncoder
    torch.set_num_threads(2)
    tok = AutoTokenizer.from_pretrained(teacher_path())
    ck = torch.load(a.ckpt, map_location="cpu", weights_only=False)
    args = ck["args"]
    model = DocumentEncoder(vocab=30522, dim=args["dim"], ffn=args["ffn"], n_layers=args["layers"],
                            n_filters=args["filters"], out_dim=384)
    model.load_state_dict(ck["model"])
    model.eval()
    with open(a.corpus) as fh:
        docs = [json.loads(line) for line in fh]
    ev = sorted([d for d in docs if d["split"] != "train"], key=lambda d: -len(d["text"]))
    texts = [d["text"] for d in ev[:a.n - 2]] + ["short text", "\n\n".join(d["text"] for d in ev[:12])]
    with tempfile.TemporaryDirectory() as td:
        paths = write_texts(td, texts)
        r = subprocess.run([a.cli, "-m", a.gguf, "-t", "2"] + paths, capture_output=True, text=True, check=True)
        c = np.asarray([json.loads(line)["embedding"] for line in r.stdout.splitlines()])
    sd16 = {k: (v.half().float() if v.ndim >= 2 else v) for k, v in ck["model"].items()}
    lex = read_lexical(a.gguf)
    worst = 1.0
    for i, t in enumerate(texts):
        ids = torch.tensor([tok(t)["input_ids"]])
        with torch.no_grad():
            model.load_state_dict(ck["model"])
            e32 = Fn.normalize(model(ids).mean(1), dim=-1)[0].numpy()
            model.load_state_dict(sd16)
            e16 = Fn.normalize(model(ids).mean(1), dim=-1)[0].numpy()
        e32, e16 = (with_sketch(e.astype(np.float64), ids[0].tolist(), lex) for e in (e32, e16))
        c32, c16 = float(c[i] @ e32), float(c[i] @ e16)
        worst = min(worst, c16)
        print(f"doc {i}: {ids.shape[1]} tokens: cos(runtime, torch f32) = {c32:.7f}, "
              f"cos(runtime, torch f16 weights) = {c16:.7f}")
    print(f"distill_parity: worst cosine (f16 weights) {worst:.7f}")
    return 0 if worst > 0.9999 else 1


if __name__ == "__main__":
    sys.exit(main())
