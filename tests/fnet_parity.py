#!/usr/bin/env python3
"""Parity test for the `fnet` architecture against committed transformers outputs.

    python3 tests/fnet_parity.py FNET_DUMP [--data tests/data/fnet] [--backend cpu|cuda]

tests/data/fnet/ (made by tests/fixtures/make_fnet_fixture.py; torch and transformers
are not needed here) holds a tiny random FNetModel converted to GGUF (F32 and
F16), token id files and transformers' last_hidden_state for each. For every
case FNET_DUMP (tests/fnet_dump.c: ids -> spectral_encode -> token states) is
run and compared:

    max |c - ref| / max |ref|  <=  1e-5   (F32 file; F16 file vs the F16-rounded model)

and the same for CLS pooling (FNET_DUMP --pooled) against transformers'
pooler_output = tanh(dense(h[0])); with the pooler tensors removed from the
file, CLS pooling must give h[0] itself.

1e-5 is tighter than the usual 1e-4 on purpose: mistaking gelu_new for erf
GELU moves this fixture by only ~1e-4, while the runtime matches to ~5e-7.

Also checks that a document one token longer than fnet.context_length is
refused with a clear error (non-zero exit, message naming the maximum), and
that broken variants of the model (written with the `gguf` package into a
temporary directory: missing or misshaped tensors, inconsistent keys) are
refused at load time with a message naming the problem.
Exit 0 when everything matches, 1 on any mismatch, 77 when --backend cuda
is asked for and not available.
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
sys.path.insert(0, os.path.join(HERE, "..", "tools", "convert"))
from gguf_tensors import copy_gguf  # noqa: E402

TOL = 1e-5  # the brief asks 1e-4; gelu vs gelu_new alone is ~1e-4 here, we get ~5e-7
SKIP = 77


def run_dump(exe, model, ids, backend, pooled=False):
    return subprocess.run([exe, model, ids, "--backend", backend] + (["--pooled"] if pooled else []),
                          capture_output=True, text=True, timeout=120)


def rel_err(got, ref):
    return float(np.max(np.abs(got - ref)) / max(float(np.max(np.abs(ref))), 1e-30))


def parse(stdout):
    lines = stdout.strip().split("\n")
    T, D = (int(v) for v in lines[0].split())
    a = np.array([[float(v) for v in ln.split()] for ln in lines[1:]], dtype=np.float64)
    return a.reshape(T, D)


# (name, copy_gguf arguments, ids file or None for the 7-token one, expected message part)
BROKEN = [
    ("missing_tensor", dict(drop=("blk.1.ffn_up.bias",)), "missing tensor blk.1.ffn_up.bias"),
    ("transposed_ffn_down", dict(replace={"blk.0.ffn_down.weight": lambda a: np.ascontiguousarray(a.T)}),
     "tensor blk.0.ffn_down.weight has shape [64, 128], expected [128, 64]"),
    ("short_position_table", dict(replace={"position_embd.weight": lambda a: a[:100]}),
     "fnet.context_length = 128 but position_embd.weight has 100 rows"),
    ("bad_act", dict(kv={"fnet.hidden_act": "relu"}), "supported: gelu_new, gelu"),
    ("bad_eps", dict(kv={"fnet.attention.layer_norm_epsilon": -1.0}), "must be > 0"),
    ("missing_block_count", dict(drop_kv=("fnet.block_count",)), "missing key fnet.block_count"),
    ("missing_pooler_bias", dict(drop=("pooler.bias",)), "pooler.weight and pooler.bias must come together"),
]


def check_broken(a, failures):
    with tempfile.TemporaryDirectory() as tmp:
        src = os.path.join(a.data, "model.gguf")
        ids7 = os.path.join(a.data, "ids_T7.txt")
        for name, kw, want in BROKEN:
            dst = os.path.join(tmp, name + ".gguf")
            copy_gguf(src, dst, **kw)
            r = run_dump(a.dump, dst, ids7, a.backend)
            msg = r.stderr.strip()
            print(f"broken {name}: exit {r.returncode}: {msg}")
            if r.returncode != 1 or want not in msg:
                failures.append(f"broken model {name}: exit {r.returncode}, stderr {msg!r}, "
                                f"expected a failure naming {want!r}")
        # Without fnet.context_length the position table sets the maximum.
        dst = os.path.join(tmp, "no_ctx_key.gguf")
        copy_gguf(src, dst, drop_kv=("fnet.context_length",),
                      replace={"position_embd.weight": lambda a: a[:100]})
        r = run_dump(a.dump, dst, os.path.join(a.data, "ids_T128.txt"), a.backend)
        msg = r.stderr.strip()
        print(f"no context_length key, 100 positions, T=128: exit {r.returncode}: {msg}")
        if r.returncode != 1 or "longer than the maximum of 100" not in msg:
            failures.append(f"no_ctx_key: exit {r.returncode}, stderr {msg!r}")
        r = run_dump(a.dump, dst, ids7, a.backend)
        if r.returncode != 0:
            failures.append(f"no_ctx_key T=7: exit {r.returncode}, stderr {r.stderr.strip()!r}")
        # Without a pooler, CLS pooling is the first token's state.
        dst = os.path.join(tmp, "no_pooler.gguf")
        copy_gguf(src, dst, drop=("pooler.weight", "pooler.bias"))
        r = run_dump(a.dump, dst, ids7, a.backend, pooled=True)
        ref = np.load(os.path.join(a.data, "ref_T7.npy")).astype(np.float64)[0]
        if r.returncode != 0:
            failures.append(f"no_pooler: exit {r.returncode}, stderr {r.stderr.strip()!r}")
        else:
            err = rel_err(parse(r.stdout)[0], ref)
            print(f"no pooler, CLS pooling vs h[0]: rel err {err:.3g}")
            if not err <= a.tol:
                failures.append(f"no_pooler: CLS pooling is not h[0] (rel err {err:.3g})")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("dump")
    ap.add_argument("--data", default=os.path.join(HERE, "data", "fnet"))
    ap.add_argument("--backend", default="cpu", choices=["cpu", "cuda"])
    ap.add_argument("--tol", type=float, default=TOL)
    a = ap.parse_args(argv)
    with open(os.path.join(a.data, "manifest.json")) as f:
        man = json.load(f)
    failures, worst = [], 0.0
    for model, refkey in (("model.gguf", "ref"), ("model_f16.gguf", "ref_f16")):
        mpath = os.path.join(a.data, model)
        for case in man["cases"]:
            r = run_dump(a.dump, mpath, os.path.join(a.data, case["ids"]), a.backend)
            what = f"{model} T={case['T']}"
            if r.returncode == SKIP:
                print(f"SKIP: {r.stderr.strip()}")
                return SKIP
            if r.returncode != 0:
                failures.append(f"{what}: exit {r.returncode}: {r.stderr.strip()}")
                continue
            got = parse(r.stdout)
            ref = np.load(os.path.join(a.data, case[refkey])).astype(np.float64)
            if got.shape != ref.shape:
                failures.append(f"{what}: shape {got.shape}, expected {ref.shape}")
                continue
            if not np.all(np.isfinite(got)):
                failures.append(f"{what}: non-finite values")
                continue
            err = rel_err(got, ref)
            worst = max(worst, err)
            print(f"{what}: rel err {err:.3g}")
            if not err <= a.tol:
                failures.append(f"{what}: rel err {err:.3g} > {a.tol}")
            # CLS pooling goes through the pooler: transformers' pooler_output.
            r = run_dump(a.dump, mpath, os.path.join(a.data, case["ids"]), a.backend, pooled=True)
            pref = np.load(os.path.join(a.data, case["pool" + refkey[3:]])).astype(np.float64)
            if r.returncode != 0:
                failures.append(f"{what} pooled: exit {r.returncode}: {r.stderr.strip()}")
                continue
            got = parse(r.stdout)
            if got.shape != (1, pref.shape[0]) or not np.all(np.isfinite(got)):
                failures.append(f"{what} pooled: shape {got.shape} or non-finite values")
                continue
            err = rel_err(got[0], pref)
            worst = max(worst, err)
            print(f"{what} pooler_output: rel err {err:.3g}")
            if not err <= a.tol:
                failures.append(f"{what} pooler_output: rel err {err:.3g} > {a.tol}")
    # T > context length: refused, with the limit in the message.
    ctx = man["config"]["max_position_embeddings"]
    r = run_dump(a.dump, os.path.join(a.data, "model.gguf"), os.path.join(a.data, man["too_long"]),
                 a.backend)
    msg = r.stderr.strip()
    print(f"T={ctx + 1}: exit {r.returncode}: {msg}")
    if r.returncode == 0 or str(ctx) not in msg or "longer than the maximum" not in msg:
        failures.append(f"T={ctx + 1} (> context length {ctx}) was not refused clearly "
                        f"(exit {r.returncode}, stderr {msg!r})")
    check_broken(a, failures)
    for f in failures:
        print("MISMATCH:", f)
    print(f"worst rel err {worst:.3g}; {len(failures)} failure(s)")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
