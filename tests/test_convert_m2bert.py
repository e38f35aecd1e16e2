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
import struct
import subprocess
import sys
import tempfile

import harness  # noqa: E402  (also puts tools/convert on sys.path)
from harness import check  # noqa: E402

harness.require("numpy", "gguf")
import numpy as np  # noqa: E402
import gguf  # noqa: E402
from gguf.quants import dequantize  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
CONVERTER = os.path.join(HERE, "..", "tools", "convert", "convert_m2bert.py")


def read_gguf(path):
    r = gguf.GGUFReader(path)
    tensors = {t.name: (dequantize(t.data, t.tensor_type).reshape([int(n) for n in reversed(t.shape)]),
                        t.tensor_type) for t in r.tensors}
    keys = {n: f.contents() for n, f in r.fields.items() if not n.startswith("GGUF.")}
    return keys, tensors


def state_dict(tensors, cfg):
    """The reference BertModel's state dict of a converted model (converter mapping, reversed)."""
    D, F, nb = cfg["hidden_size"], cfg["intermediate_size"], cfg["monarch_mlp_nblocks"]
    sd = {}
    simple = {"token_embd.weight": "embeddings.word_embeddings.weight",
              "position_embd.weight": "embeddings.position_embeddings.weight",
              "token_types.weight": "embeddings.token_type_embeddings.weight",
              "token_embd_norm.weight": "embeddings.LayerNorm.weight",
              "token_embd_norm.bias": "embeddings.LayerNorm.bias",
              "pooler.weight": "pooler.dense.weight", "pooler.bias": "pooler.dense.bias"}
    block = {"mix_in.weight": "attention.in_linear.weight", "mix_in.bias": "attention.in_linear.bias",
             "mix_conv.bias": "attention.short_filter.bias", "mix_out.weight": "attention.out_linear.weight",
             "mix_out.bias": "attention.out_linear.bias", "ffn_down.bias": "mlp.wo.bias",
             "ffn_norm.weight": "mlp.layernorm.weight", "ffn_norm.bias": "mlp.layernorm.bias"}
    lin = {"in": 0, "mid1": 2, "mid2": 4, "out": 6}
    for name, (a, _) in tensors.items():
        if name in simple:
            sd[simple[name]] = a
            continue
        _, l, rest = name.split(".", 2)
        p = f"encoder.layer.{l}."
        if rest in block:
            sd[p + block[rest]] = a
        elif rest == "mix_conv.weight":
            sd[p + "attention.short_filter.weight"] = a.reshape(3 * D, 1, 3)
        elif rest == "ffn_gate.weight":
            sd[p + "mlp.gated_layers.weight"] = a.reshape(nb, 2 * F // nb, D // nb)
        elif rest == "ffn_down.weight":
            sd[p + "mlp.wo.weight"] = a.reshape(nb, D // nb, F // nb)
        else:
            which, part = rest.split(".", 1)
            f = p + "attention." + ("filter_fn2." if which == "hyena_res" else "filter_fn.")
            if part in ("bias",):
                sd[f + "bias"] = a
            elif part == "pos_z":
                sd[f + "pos_emb.z"] = a[None]
            elif part == "pos_t":
                sd[f + "pos_emb.t"] = a[None, :, None]
            elif part == "decay":
                sd[f + "modulation.deltas"] = a[None, None]
            else:
                d, piece = part.split("_", 1)
                seq = f + ("implicit_filter." if d == "fwd" else "implicit_filter_rev.")
                if piece == "freq":
                    for i, idx in enumerate((1, 3, 5)):
                        sd[f"{seq}{idx}.freq"] = a[i][None]
                else:
                    lname, kind = piece.split(".")
                    sd[f"{seq}{lin[lname]}.{kind}"] = a
    return sd


def write_safetensors(path, sd):
    """A safetensors file written with numpy alone (F32, and I64 for index buffers)."""
    header, blobs, off = {}, [], 0
    for k, v in sd.items():
        v = np.ascontiguousarray(v)
        dt = "I64" if v.dtype == np.int64 else "F32"
        raw = v.astype("<i8" if dt == "I64" else "<f4").tobytes()
        header[k] = {"dtype": dt, "shape": list(v.shape), "data_offsets": [off, off + len(raw)]}
        blobs.append(raw)
        off += len(raw)
    h = json.dumps(header).encode()
    h += b" " * (-len(h) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(h)) + h + b"".join(blobs))


def checkpoint(folder, cfg, sd, prefix="bert.", head=True, width=64):
    os.makedirs(folder, exist_ok=True)
    out = {prefix + k: v for k, v in sd.items()}
    out[prefix + "embeddings.position_ids"] = np.arange(8, dtype=np.int64)[None]  # a buffer: dropped
    if head:
        out["classifier.weight"] = np.zeros((2, width), np.float32)
        out["classifier.bias"] = np.zeros(2, np.float32)
    write_safetensors(os.path.join(folder, "model.safetensors"), out)
    with open(os.path.join(folder, "config.json"), "w") as f:
        json.dump(cfg, f)


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
