#!/usr/bin/env python3
"""Regenerate tests/data/seed/ (the PyTorch-parity fixture) with PyTorch.

    pip install torch numpy gguf
    python3 tools/make_seed_fixture.py [--out tests/data/seed]

Builds two small random-init seed `DocumentEncoder`s (tools/seed_model.py),
every parameter perturbed away from its default init so that LayerNorm
weights/biases and all biases are exercised:

  model       D=32 F=128 L=2 K=16, final LayerNorm (norm_out), V=256
  model_proj  D=24 F=64  L=2 K=8,  final LayerNorm and an output projection
              (output.weight (E=40, D)) -- needs the runtime's optional
              output.weight support

and writes, for each NAME:

  NAME.npz      the float32 state dict (keys as in seed_model.py), the input
                to tools/convert_seed.py in the CTest (no torch needed)
  NAME.gguf     convert_seed.py's output (F32)
  NAME.expected.npz  PyTorch's final token states (stored float32), computed by a float64 forward from the
                float32 weights with the literal complex fft/ifft mixing:
                one array per text, key = text file name, shape (T, E)

plus texts/*.txt: the input texts (lengths 1..1500 bytes, ASCII, UTF-8,
control bytes, bytes >= 0x80). tests/seed_parity.py compares
`spectral-embed --pooling none --no-normalize --output-format jsonl` with
these states. The fixture is deterministic (fixed seeds).
"""
from __future__ import annotations

import argparse
import os
import subprocess
import sys

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

MODELS = {
    "model": dict(vocab=256, dim=32, ffn=128, n_layers=2, n_filters=16, output_norm=True, out_dim=None),
    "model_proj": dict(vocab=256, dim=24, ffn=64, n_layers=2, n_filters=8, output_norm=True, out_dim=40),
}


def make_texts(rng: np.random.Generator) -> dict:
    prose = (b"The quick brown fox jumps over the lazy dog. Spectral mixing layers replace "
             b"attention with a learned filter on the lowest frequencies of the sequence; "
             b"each block then applies a position-wise MLP. ")
    texts = {
        "t01_one_byte.txt": b"a",
        "t02_short.txt": b"hello",
        "t03_k_boundary.txt": prose[:33],                       # T//2 = 16 = K
        "t04_prose.txt": prose,
        "t05_utf8.txt": "Größe, naïve café — Ελληνικά, 日本語のテキスト, emoji 🙂.\n".encode("utf-8") * 3,
        "t06_binary.txt": bytes(rng.integers(0, 256, 300, dtype=np.uint8)),
        "t07_code.txt": b"def f(x):\n\treturn {'a': [1, 2, 3], 'b': x ** 2}\n\n" * 12,
        "t08_long.txt": (prose * 8)[:1500],
    }
    return texts


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description="regenerate the seed parity fixture with PyTorch")
    ap.add_argument("--out", default=os.path.join(HERE, "..", "tests", "data", "seed"))
    a = ap.parse_args(argv)

    import torch

    from seed_model import DocumentEncoder, SpectralMix

    torch.set_num_threads(1)
    out = os.path.abspath(a.out)
    os.makedirs(os.path.join(out, "texts"), exist_ok=True)
    rng = np.random.default_rng(1234)
    texts = make_texts(rng)
    for name, data in texts.items():
        with open(os.path.join(out, "texts", name), "wb") as fh:
            fh.write(data)

    SpectralMix.literal = True
    for seed, (mname, cfg) in enumerate(MODELS.items()):
        torch.manual_seed(100 + seed)
        m = DocumentEncoder(**cfg)
        with torch.no_grad():
            for pname, p in m.named_parameters():
                if pname.endswith("norm1.weight") or pname.endswith("norm2.weight") or pname == "norm_out.weight":
                    p.copy_(1.0 + 0.1 * torch.randn_like(p))
                elif p.ndim == 1:
                    p.copy_(0.05 * torch.randn_like(p))
        m.eval()
        sd = {k: v.detach().to(torch.float32).numpy() for k, v in m.state_dict().items()}
        npz = os.path.join(out, f"{mname}.npz")
        np.savez(npz, **sd)
        subprocess.run([sys.executable, os.path.join(HERE, "convert_seed.py"), npz,
                        "-o", os.path.join(out, f"{mname}.gguf"), "--name", f"seed-fixture-{mname}",
                        "--ctx", "2048"], check=True)
        m64 = m.double()  # float64 forward from the float32-rounded weights
        expected = {}
        with torch.no_grad():
            for tname, data in texts.items():
                x = torch.tensor(list(data), dtype=torch.int64)[None, :]
                expected[tname] = m64(x)[0].numpy().astype(np.float32)
        np.savez_compressed(os.path.join(out, f"{mname}.expected.npz"), **expected)
        print(f"{mname}: {sum(v.shape[0] for v in expected.values())} token states", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
