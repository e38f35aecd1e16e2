#!/usr/bin/env python3
"""tools/convert/convert_m2bert.py without torch: the tiny fixture model
(tests/data/m2bert/tiny/model.gguf) turned back into the reference code's state dict (the
inverse mapping written out here, independently of the converter's), saved as the published
repositories do (config.json + model.safetensors, with the `bert.` prefix and a classifier
head, or as a bare BertModel), converted again, and:

  * every tensor and key of the result equals the fixture's (F32), byte for byte;
  * --dtype f16 / bf16 store the matrices so, and the runtime (DUMP, tests/fnet_dump.c) loads
    them: outputs within 1e-2 of the F32 file's;
  * configurations the runtime does not implement are refused by name (exit 2, every problem
    listed): attention layers, hyena_training_additions, use_flash_mm, a causal convolution, no
    residual long convolution, a non-gated MLP, no position embeddings, pool_all, planted
    tokens, attention pooling; and missing, misshaped or unexpected tensors;
  * use_cls_token drops the pooler (cls pooling is then the first token's state).

    python3 tests/test_convert_m2bert.py DUMP [--data tests/data/m2bert/tiny]

Exit 0 pass, 1 fail, 77 skip (numpy or gguf missing)."""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile

import harness  # noqa: E402  (also puts tools/convert on sys.path)
from harness import check  # noqa: E402

harness.require("numpy", "gguf")
import numpy as np  # noqa: E402
import gguf  # noqa: E402

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "fixtures"))
from hf_checkpoint import m2bert_checkpoint as checkpoint, m2bert_state_dict as state_dict, read_gguf  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
CONVERTER = os.path.join(HERE, "..", "tools", "convert", "convert_m2bert.py")


def convert(folder, vocab, out, *args):
    return subprocess.run([sys.executable, CONVERTER, folder, "--vocab", vocab, "-o", out, *args],
                          capture_output=True, text=True, timeout=120)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("dump")
    ap.add_argument("--data", default=os.path.join(HERE, "data", "m2bert", "tiny"))
    a = ap.parse_args(argv)
    with open(os.path.join(a.data, "manifest.json")) as f:
        cfg = json.load(f)["config"]
    fixture = os.path.join(a.data, "model.gguf")
    keys, tensors = read_gguf(fixture)
    sd = state_dict(tensors, cfg)
    ids = os.path.join(a.data, "ids_T7_pad.txt")
    with tempfile.TemporaryDirectory() as tmp:
        vocab = os.path.join(tmp, "vocab.txt")
        with open(vocab, "w") as f:
            f.write("\n".join(keys["tokenizer.ggml.tokens"]) + "\n")
        # round trip, with the head prefix and without
        for name, prefix, head in (("with_heads", "bert.", True), ("bare", "", False)):
            ck, out = os.path.join(tmp, name), os.path.join(tmp, name + ".gguf")
            checkpoint(ck, cfg, sd, prefix, head)
            r = convert(ck, vocab, out, "--name", keys["general.name"])
            if not check(r.returncode == 0, f"{name}: exit {r.returncode}: {r.stderr}"):
                continue
            k2, t2 = read_gguf(out)
            check(set(t2) == set(tensors), f"{name}: tensor names differ: {set(t2) ^ set(tensors)}")
            for n, (v, _) in tensors.items():
                if n in t2:
                    check(np.array_equal(v, t2[n][0]), f"{name}: tensor {n} differs")
            check(k2 == keys, f"{name}: keys differ: "
                  f"{[k for k in set(keys) | set(k2) if keys.get(k) != k2.get(k)]}")
            check(not head or "dropped the heads" in r.stderr, f"{name}: no note about the head")
        # other dtypes load and stay close
        base = os.path.join(tmp, "with_heads")
        outs = {}
        for dt in ("f32", "f16", "bf16"):
            out = os.path.join(tmp, f"m_{dt}.gguf")
            r = convert(base, vocab, out, "--dtype", dt)
            check(r.returncode == 0, f"--dtype {dt}: {r.stderr}")
            _, t = read_gguf(out)
            want = {"f32": gguf.GGMLQuantizationType.F32, "f16": gguf.GGMLQuantizationType.F16,
                    "bf16": gguf.GGMLQuantizationType.BF16}[dt]
            check(t["blk.0.mix_in.weight"][1] == want and
                  t["blk.0.mix_in.bias"][1] == gguf.GGMLQuantizationType.F32, f"--dtype {dt}: types")
            p = subprocess.run([a.dump, out, ids, "--pooled"], capture_output=True, text=True)
            if check(p.returncode == 0, f"--dtype {dt}: runtime: {p.stderr}"):
                outs[dt] = np.array([float(x) for x in p.stdout.split("\n")[1].split()])
        for dt in ("f16", "bf16"):
            if dt in outs and "f32" in outs:
                e = np.abs(outs[dt] - outs["f32"]).max() / np.abs(outs["f32"]).max()
                print(f"--dtype {dt}: sentence embedding within {e:.3g} of F32")
                check(e < (1e-2 if dt == "f16" else 5e-2), f"--dtype {dt}: rel err {e:.3g}")
        # refusals, each by name
        refusals = [
            (dict(monarch_mixer_sequence_mixing=False), None, "monarch_mixer_sequence_mixing = False"),
            (dict(hyena_training_additions=True), None, "hyena_training_additions = True"),
            (dict(use_flash_mm=True), None, "use_flash_mm = True"),
            (dict(bidirectional=False), None, "bidirectional = False"),
            (dict(residual_long_conv=False), None, "residual_long_conv = False"),
            (dict(use_glu_mlp=False), None, "use_glu_mlp = False"),
            (dict(use_positional_encodings=False), None, "use_positional_encodings = False"),
            (dict(pool_all=True), None, "pool_all = True"),
            (dict(sequence_token_planting=True), None, "sequence_token_planting = True"),
            (dict(attention_pooling=True), None, "attention_pooling = True"),
            (dict(hidden_size=None), None, "hidden_size must be a positive integer"),
            (dict(monarch_mlp_nblocks=3), None, "monarch_mlp_nblocks = 3 must divide"),
            ({}, lambda s: s.pop("encoder.layer.1.attention.filter_fn2.implicit_filter_rev.6.weight"),
             "missing tensor encoder.layer.1.attention.filter_fn2.implicit_filter_rev.6.weight"),
            ({}, lambda s: s.update({"encoder.layer.0.attention.out_linear.weight":
                                     s["encoder.layer.0.attention.out_linear.weight"][:, :5]}),
             "encoder.layer.0.attention.out_linear.weight: shape (64, 5), expected (64, 64)"),
            ({}, lambda s: s.update({"encoder.layer.0.attention.extra.weight": np.zeros(3, np.float32)}),
             "unexpected tensor encoder.layer.0.attention.extra.weight"),
        ]
        for i, (edit, sd_edit, want) in enumerate(refusals):
            c = dict(cfg, **edit)
            c = {k: v for k, v in c.items() if v is not None}
            s = dict(sd)
            if sd_edit:
                sd_edit(s)
            ck = os.path.join(tmp, f"refuse{i}")
            checkpoint(ck, c, s)
            r = convert(ck, vocab, os.path.join(tmp, f"refuse{i}.gguf"))
            print(f"refusal {i}: exit {r.returncode}: {r.stderr.strip()}")
            check(r.returncode == 2 and want in r.stderr, f"refusal {i}: exit {r.returncode}, "
                                                          f"{r.stderr.strip()!r} lacks {want!r}")
            check(not os.path.exists(os.path.join(tmp, f"refuse{i}.gguf")), f"refusal {i} wrote a file")
        # use_cls_token: no pooler in the file
        ck, out = os.path.join(tmp, "cls"), os.path.join(tmp, "cls.gguf")
        checkpoint(ck, dict(cfg, use_cls_token=True), sd)
        r = convert(ck, vocab, out)
        if check(r.returncode == 0, f"use_cls_token: {r.stderr}"):
            check("pooler.weight" not in read_gguf(out)[1], "use_cls_token: the pooler was kept")
    return harness.report("test_convert_m2bert")


if __name__ == "__main__":
    sys.exit(main())
