#!/usr/bin/env python3
"""Regenerate the `fnet` parity fixture in tests/data/fnet/ (needs torch and transformers).

    python3 tools/make_fnet_fixture.py [--out tests/data/fnet]

Builds a small random-init transformers FNetModel (seeded; config built in
code, nothing downloaded), saves it as a checkpoint directory (temporary),
converts it with tools/convert_fnet.py, runs transformers on a few token id
sequences and writes:

    model.gguf                    the converted model (F32)
    model_f16.gguf                the same with --dtype f16 matrices
    ids_T<N>.txt                  token ids, whitespace separated
    ref_T<N>.npy                  transformers' last_hidden_state[0] computed in float64
                                  (stored as float32, T x D)
    ref_T<N>_f16.npy              the same for the F16-rounded weights
    pool_T<N>.npy, pool_T<N>_f16.npy   transformers' pooler_output[0] (tanh(dense(h[0]))), likewise
    manifest.json                 the cases and the config

The non-default weights are made larger than the init's (std 0.02) so the
LayerNorm affine parameters and biases are exercised. tests/fnet_parity.py
compares the C runtime against these files; CI never runs this script.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

import convert_fnet  # noqa: E402

LENGTHS = [1, 2, 7, 64, 128]
SEED = 1234
CONFIG = dict(vocab_size=300, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
              max_position_embeddings=128, type_vocab_size=4, layer_norm_eps=1e-12,
              hidden_act="gelu_new", hidden_dropout_prob=0.0,
              use_tpu_fourier_optimizations=False, pad_token_id=3)


def build_model(torch, transformers):
    torch.manual_seed(SEED)
    cfg = transformers.FNetConfig(**CONFIG)
    model = transformers.FNetModel(cfg).eval()
    g = torch.Generator().manual_seed(SEED + 1)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "LayerNorm.weight" in name:
                p.copy_(1.0 + 0.2 * torch.randn(p.shape, generator=g))
            elif name.endswith("bias"):
                p.copy_(0.1 * torch.randn(p.shape, generator=g))
            else:
                p.copy_(torch.randn(p.shape, generator=g) / (p.shape[-1] ** 0.5))
    return model


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", default=os.path.join(HERE, "..", "tests", "data", "fnet"))
    a = ap.parse_args(argv)
    import torch
    import transformers

    out = os.path.abspath(a.out)
    os.makedirs(out, exist_ok=True)
    model = build_model(torch, transformers)
    rng = np.random.default_rng(SEED)
    cases = []
    with tempfile.TemporaryDirectory() as tmp:
        ckpt = os.path.join(tmp, "fnet-tiny")
        model.save_pretrained(ckpt, safe_serialization=True)
        convert_fnet.convert(ckpt, os.path.join(out, "model.gguf"), name="fnet-tiny-random")
        convert_fnet.convert(ckpt, os.path.join(out, "model_f16.gguf"), name="fnet-tiny-random",
                             dtype="f16")
        # The same model with its matrices rounded to F16, for the F16 file.
        m16 = build_model(torch, transformers)
        with torch.no_grad():
            for name, p in m16.named_parameters():
                if p.ndim == 2:
                    p.copy_(p.half().float())
        # float64 references: the float32 runtime is compared to exact-ish math.
        model, m16 = model.double(), m16.double()
        for T in LENGTHS:
            ids = rng.integers(0, CONFIG["vocab_size"], size=T)
            ids[0] = 0
            ids[-1] = CONFIG["vocab_size"] - 1  # both ends of the vocabulary
            with torch.no_grad():
                x = torch.tensor(ids[None, :], dtype=torch.long)
                o, o16 = model(input_ids=x), m16(input_ids=x)
                ref = o.last_hidden_state[0].double().numpy()
                ref16 = o16.last_hidden_state[0].double().numpy()
                pool, pool16 = o.pooler_output[0].numpy(), o16.pooler_output[0].numpy()
            with open(os.path.join(out, f"ids_T{T}.txt"), "w") as f:
                f.write(" ".join(str(int(i)) for i in ids) + "\n")
            np.save(os.path.join(out, f"ref_T{T}.npy"), ref.astype(np.float32))
            np.save(os.path.join(out, f"ref_T{T}_f16.npy"), ref16.astype(np.float32))
            np.save(os.path.join(out, f"pool_T{T}.npy"), pool.astype(np.float32))
            np.save(os.path.join(out, f"pool_T{T}_f16.npy"), pool16.astype(np.float32))
            cases.append(dict(T=T, ids=f"ids_T{T}.txt", ref=f"ref_T{T}.npy",
                              ref_f16=f"ref_T{T}_f16.npy", pool=f"pool_T{T}.npy",
                              pool_f16=f"pool_T{T}_f16.npy"))
    with open(os.path.join(out, "ids_T129.txt"), "w") as f:  # one past the context length
        f.write(" ".join(str(i % CONFIG["vocab_size"]) for i in range(129)) + "\n")
    manifest = dict(config=CONFIG, seed=SEED, torch=torch.__version__,
                    transformers=transformers.__version__, cases=cases,
                    too_long="ids_T129.txt")
    with open(os.path.join(out, "manifest.json"), "w") as f:
        json.dump(manifest, f, indent=1)
        f.write("\n")
    print(f"wrote {len(cases)} cases to {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
