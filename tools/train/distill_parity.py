#!/usr/bin/env python3
"""Parity of the exported default model: our C runtime vs the PyTorch student.

    python3 tools/train/distill_parity.py --cli build/tools/spectral-embed --ckpt RUN/best.pt \
        --gguf RUN/model.gguf --corpus /work/data/corpus.jsonl [--n 8]

Embeds --n documents (the longest held-out and out-of-domain ones, a few short ones) with
`spectral-embed` (its own bert tokenizer, mean pooling, L2 normalization) and with the
PyTorch DocumentEncoder of the checkpoint (teacher tokenizer, [CLS] ... [SEP]), twice: with
the float32 weights and with the matrices rounded to float16 as the GGUF stores them.
A model with a lexical sketch: the PyTorch side's token states are pooled by
tools/convert/reference.py's `pool`, which appends the sketch (numpy, from the teacher tokenizer's
ids and the GGUF's lexical.bucket / lexical.weight), so the cosine covers both parts.
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
sys.path.insert(1, os.path.join(HERE, "..", "convert"))  # seed_model, the GGUF writer, reference


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
    from transformers import AutoTokenizer
    from distill_teacher import teacher_path
    from eval_retrieval import write_texts
    import reference
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
    ref = reference.load_gguf(a.gguf)  # for its lexical sketch, if any
    worst = 1.0
    for i, t in enumerate(texts):
        ids = torch.tensor([tok(t)["input_ids"]])
        with torch.no_grad():
            model.load_state_dict(ck["model"])
            h32 = model(ids)[0].double().numpy()
            model.load_state_dict(sd16)
            h16 = model(ids)[0].double().numpy()
        # Mean pooling, the sketch when the model has one, unit length: reference.py's pool.
        e32, e16 = (reference.pool(h, "mean", True, ref, ids[0].numpy()) for h in (h32, h16))
        c32, c16 = float(c[i] @ e32), float(c[i] @ e16)
        worst = min(worst, c16)
        print(f"doc {i}: {ids.shape[1]} tokens: cos(runtime, torch f32) = {c32:.7f}, "
              f"cos(runtime, torch f16 weights) = {c16:.7f}")
    print(f"distill_parity: worst cosine (f16 weights) {worst:.7f}")
    return 0 if worst > 0.9999 else 1


if __name__ == "__main__":
    sys.exit(main())
