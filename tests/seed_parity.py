#!/usr/bin/env python3
"""Seed-model tests: the C runtime against PyTorch, and the state-dict converter.

    python3 tests/seed_parity.py parity --cli build/tools/spectral-embed [--model model]
    python3 tests/seed_parity.py convert

parity: runs
    spectral-embed -m tests/data/seed/MODEL.gguf --pooling none --no-normalize
                   --output-format jsonl tests/data/seed/texts/*.txt
and compares every text's token states with PyTorch's (MODEL.expected.npz,
made by tests/fixtures/make_seed_fixture.py from tools/convert/seed_model.py):
    max |c - torch| / max |torch| <= 1e-4 per text, n_tokens == byte length.
The `model_proj` fixture has an output projection (output.weight).

convert: no torch needed. Runs tools/convert/convert_seed.py on MODEL.npz (the
fixture's state dict) and checks the GGUF it writes has the same keys and
tensors (names, types, values) as the committed MODEL.gguf; then checks the
error path: a state dict with an unknown key, a missing key and a wrongly
shaped tensor must exit 2 and name all three, and --ignore drops a
training-only head. Needs numpy and gguf.
"""
from __future__ import annotations

import argparse
import glob
import json
import os
import subprocess
import sys
import tempfile

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
DATA = os.path.join(HERE, "data", "seed")
TOOLS = os.path.join(HERE, "..", "tools", "convert")
TOL = 1e-4


def run_parity(cli: str, model: str) -> int:
    gguf_path = os.path.join(DATA, f"{model}.gguf")
    expected = np.load(os.path.join(DATA, f"{model}.expected.npz"))
    texts = sorted(glob.glob(os.path.join(DATA, "texts", "*.txt")))
    if not texts or sorted(os.path.basename(t) for t in texts) != sorted(expected.files):
        print(f"fixture mismatch: texts {texts} vs expected {expected.files}")
        return 1
    cmd = [cli, "-m", gguf_path, "--pooling", "none", "--no-normalize", "--output-format", "jsonl",
           "--threads", "1"] + texts
    p = subprocess.run(cmd, capture_output=True, timeout=120)
    if p.returncode != 0:
        print(f"FAIL: {' '.join(cmd)} exited {p.returncode}\n{p.stderr.decode(errors='replace')}")
        return 1
    lines = [l for l in p.stdout.decode().splitlines() if l.strip()]
    if len(lines) != len(texts):
        print(f"FAIL: {len(lines)} jsonl lines for {len(texts)} inputs")
        return 1
    fails = 0
    for path, line in zip(texts, lines):
        rec = json.loads(line)
        name = os.path.basename(path)
        ref = expected[name].astype(np.float64)
        n = os.path.getsize(path)
        if rec.get("input") != path:
            print(f"FAIL {name}: input is {rec.get('input')!r}")
            fails += 1
            continue
        if rec.get("n_tokens") != n:
            print(f"FAIL {name}: n_tokens {rec.get('n_tokens')} != {n} bytes")
            fails += 1
            continue
        got = np.asarray(rec.get("embeddings"), dtype=np.float64)
        if got.shape != ref.shape:
            print(f"FAIL {name}: shape {got.shape}, torch {ref.shape}")
            fails += 1
            continue
        err = float(np.max(np.abs(got - ref)) / max(np.max(np.abs(ref)), 1e-30))
        status = "ok  " if err <= TOL else "FAIL"
        fails += err > TOL
        print(f"{status} {model} {name}: T={n} rel max err {err:.2e}")
    print(f"{model}: {len(texts) - fails}/{len(texts)} texts within {TOL:g}")
    return 1 if fails else 0


def _gguf_contents(path: str):
    from gguf import GGUFReader, GGUFValueType

    r = GGUFReader(path, "r")
    kv = {}
    for name, f in r.fields.items():
        if name.startswith("GGUF."):
            continue
        vt = f.types[0]
        part = f.parts[f.data[0]]
        kv[name] = bytes(part).decode() if vt == GGUFValueType.STRING else (vt.name, part.tolist())
    tensors = {t.name: (t.tensor_type.name, tuple(int(x) for x in t.shape),
                        np.array(t.data, copy=True)) for t in r.tensors}
    return kv, tensors


def run_convert() -> int:
    conv = [sys.executable, os.path.join(TOOLS, "convert_seed.py")]
    fails = 0
    with tempfile.TemporaryDirectory(prefix="seed-convert-") as tmp:
        for model in ("model", "model_proj"):
            out = os.path.join(tmp, f"{model}.gguf")
            p = subprocess.run(conv + [os.path.join(DATA, f"{model}.npz"), "-o", out, "--name",
                                       f"seed-fixture-{model}", "--ctx", "2048"],
                               capture_output=True, text=True)
            if p.returncode != 0:
                print(f"FAIL convert {model}: exit {p.returncode}\n{p.stderr}")
                fails += 1
                continue
            kv_a, t_a = _gguf_contents(out)
            kv_b, t_b = _gguf_contents(os.path.join(DATA, f"{model}.gguf"))
            if kv_a != kv_b:
                print(f"FAIL convert {model}: keys differ\n  new {kv_a}\n  committed {kv_b}")
                fails += 1
            if list(t_a) != list(t_b):
                print(f"FAIL convert {model}: tensor lists differ\n  new {list(t_a)}\n  committed {list(t_b)}")
                fails += 1
            for name in set(t_a) & set(t_b):
                ta, tb = t_a[name], t_b[name]
                if ta[0] != tb[0] or ta[1] != tb[1] or not np.array_equal(ta[2], tb[2]):
                    print(f"FAIL convert {model}: tensor {name} differs ({ta[:2]} vs {tb[:2]})")
                    fails += 1
            print(f"{'ok  ' if not fails else 'FAIL'} convert {model}: {len(t_a)} tensors match the committed GGUF")

        # error path
        sd = dict(np.load(os.path.join(DATA, "model.npz")))
        bad = dict(sd)
        bad["mlm_head.weight"] = np.zeros((256, 32), np.float32)
        del bad["blocks.1.norm2.bias"]
        bad["blocks.0.mlp.3.weight"] = np.zeros((32, 7), np.float32)
        bad_path = os.path.join(tmp, "bad.npz")
        np.savez(bad_path, **bad)
        out = os.path.join(tmp, "bad.gguf")
        p = subprocess.run(conv + [bad_path, "-o", out], capture_output=True, text=True)
        want = ["mlm_head.weight", "blocks.1.norm2.bias", "blocks.0.mlp.3.weight"]
        missing = [w for w in want if w not in p.stderr]
        if p.returncode != 2 or missing or os.path.exists(out):
            print(f"FAIL convert error path: exit {p.returncode} (want 2), not named: {missing}, "
                  f"output written: {os.path.exists(out)}\n{p.stderr}")
            fails += 1
        else:
            print("ok   convert error path: exit 2, unknown/missing/misshaped tensors all named")
        # --ignore drops a training head
        head = dict(sd)
        head["mlm_head.weight"] = np.zeros((256, 32), np.float32)
        head["mlm_head.bias"] = np.zeros((256,), np.float32)
        head_path = os.path.join(tmp, "head.npz")
        np.savez(head_path, **head)
        p1 = subprocess.run(conv + [head_path, "-o", out], capture_output=True, text=True)
        p2 = subprocess.run(conv + [head_path, "-o", out, "--ignore", "mlm_head."],
                            capture_output=True, text=True)
        if p1.returncode != 2 or p2.returncode != 0:
            print(f"FAIL convert --ignore: without {p1.returncode} (want 2), with {p2.returncode} "
                  f"(want 0)\n{p2.stderr}")
            fails += 1
        else:
            print("ok   convert --ignore mlm_head.: head rejected without it, dropped with it")
        # not a state dict at all
        junk = os.path.join(tmp, "junk.npz")
        with open(junk, "wb") as fh:
            fh.write(b"not a zip file")
        p = subprocess.run(conv + [junk, "-o", out + "2"], capture_output=True, text=True)
        if p.returncode != 2:
            print(f"FAIL convert junk input: exit {p.returncode} (want 2)\n{p.stderr}")
            fails += 1
        else:
            print("ok   convert unreadable input: exit 2")
    return 1 if fails else 0


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    pp = sub.add_parser("parity")
    pp.add_argument("--cli", required=True, help="path to spectral-embed")
    pp.add_argument("--model", default="model", choices=["model", "model_proj"])
    sub.add_parser("convert")
    a = ap.parse_args(argv)
    if a.cmd == "parity":
        return run_parity(a.cli, a.model)
    return run_convert()


if __name__ == "__main__":
    sys.exit(main())
