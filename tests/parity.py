#!/usr/bin/env python3
"""Parity test: the C runtime (CLI and C API) against the float64 numpy reference.

    python3 tests/parity.py --cli build/tools/spectral-embed --api-dump build/tests/api_dump
    python3 tests/parity.py --api-dump build/tests/api_dump --backend cuda     # exit 77 if no CUDA

Generates random-weight `spectralmlp` models (tools/convert/make_model.py) and random
byte texts (including 0x00, '\\n' and bytes > 0x7f) into a temporary
directory, computes every document's final token states with
tools/convert/reference.py, and compares:

  * CLI `spectral-embed -m M --pooling none --no-normalize --output-format jsonl FILES...`
    token states, every token of every text;
  * CLI pooled outputs: mean / cls / last, normalized and not, and the
    model's default pooling (no --pooling flag);
  * tests/api_dump (spectral_tokenize + spectral_encode + getters, all texts
    through one context): token states, and pooled outputs (mean / cls / last
    normalized, mean not normalized, the model's default).

Error metric per output (a T x D matrix or a D vector):
    max |c - ref| / max |ref|  <=  1e-4          (TOL, --tol)
and n_tokens must equal the byte length. Exits 1 with a report listing
every mismatch, 0 when everything matches, 77 when --backend cuda is asked
for and the build or machine has no CUDA.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "tools", "convert"))

import numpy as np  # noqa: E402

import make_model  # noqa: E402
import reference  # noqa: E402

TOL = 1e-4
SKIP = 77

# name, make_model arguments, whether it gets the biggest text (T = 4097).
# Every model is checked with pooling none, mean and the model's default through
# both the CLI and the API; the models in FULL_POOLING also get every other
# pooling / normalize combination (kept to a few to bound the process count).
MODELS = [
    ("A_d16_f32", dict(dim=16, ffn=32, layers=1, filters=4), True),
    ("B_d64_l2", dict(dim=64, ffn=128, layers=2, filters=16), False),
    ("C_d48_k200", dict(dim=48, ffn=96, layers=3, filters=200), False),  # K > T/2 for T < 400
    ("D_d32_f16", dict(dim=32, ffn=64, layers=2, filters=8, dtype="f16"), False),
    ("E_noout_cls", dict(dim=16, ffn=32, layers=2, filters=4, output_norm=False, pooling="cls"), True),
    ("F_u64_last", dict(dim=16, ffn=32, layers=2, filters=6, u64_keys=True, pooling="last"), True),
    ("G_bf16_all", dict(dim=24, ffn=40, layers=2, filters=5, dtype="bf16", dtype_all=True, eps=1e-6), False),
    ("H_lexical", dict(dim=16, ffn=32, layers=2, filters=4, lexical=40), True),  # pooled = 16 + 40 sketch
]
LENGTHS = [1, 2, 3, 7, 8, 100, 1000, 4097]
BIG = 4097
POOLED = [("mean", True), ("cls", True), ("last", True), ("mean", False), ("cls", False), ("last", False)]
FULL_POOLING = ("A_", "E_", "F_", "H_")


class Report:
    def __init__(self):
        self.failures = []
        self.checks = 0
        self.worst = 0.0

    def fail(self, msg):
        self.failures.append(msg)
        print("MISMATCH:", msg, flush=True)

    def compare(self, what, got, ref, tol):
        self.checks += 1
        got = np.asarray(got, dtype=np.float64)
        if got.shape != ref.shape:
            self.fail(f"{what}: shape {got.shape}, expected {ref.shape}")
            return
        if not np.all(np.isfinite(got)):
            self.fail(f"{what}: non-finite values")
            return
        scale = float(np.max(np.abs(ref)))
        diff = np.abs(got - ref)
        err = float(np.max(diff)) / (scale if scale > 0 else 1.0)
        self.worst = max(self.worst, err)
        if not err <= tol:
            idx = np.unravel_index(int(np.argmax(diff)), diff.shape)
            self.fail(f"{what}: rel error {err:.3g} > {tol:g} (worst at {tuple(int(i) for i in idx)}: "
                      f"got {got[idx]:.7g}, ref {ref[idx]:.7g}, max|ref| {scale:.4g})")


def make_texts(tmp, rng):
    texts = {}
    for T in LENGTHS:
        data = bytearray(rng.integers(0, 256, size=T, dtype=np.uint8).tobytes())
        if T == 1:
            data[0] = 0xFF
        else:
            data[0] = 0x00            # NUL first: the CLI must not treat input as a C string
            data[-1] = 0x0A           # trailing newline must not be stripped
            if T >= 3:
                data[1] = 0xC3        # bytes > 0x7f
        path = os.path.join(tmp, f"text_{T}.bin")
        with open(path, "wb") as fh:
            fh.write(bytes(data))
        texts[T] = (path, bytes(data))
    return texts


# OpenMP threads that spin while waiting burn most of the CPU time of these short
# runs on a loaded machine; passive waiting changes no results.
ENV = dict(os.environ)
ENV.setdefault("OMP_WAIT_POLICY", "passive")


def run(cmd, timeout=120):
    t0 = time.time()
    p = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=timeout, env=ENV)
    return p, time.time() - t0


def parse_jsonl(text):
    recs = []
    for line in text.splitlines():
        line = line.strip()
        if line.startswith("{"):
            recs.append(json.loads(line))
    return recs


def check_cli(rep, cli, name, model_path, paths, refs, pooling, normalize):
    """pooling None = don't pass --pooling (model default)."""
    cmd = [cli, "-m", model_path]
    if pooling is not None:
        cmd += ["--pooling", pooling]
    if not normalize:
        cmd += ["--no-normalize"]
    cmd += ["--output-format", "jsonl"] + paths
    label = f"cli {name} pooling={pooling or 'default'}{'' if normalize else ' no-normalize'}"
    try:
        p, _ = run(cmd)
    except subprocess.TimeoutExpired:
        rep.fail(f"{label}: timed out: {' '.join(cmd)}")
        return
    if p.returncode != 0:
        rep.fail(f"{label}: exit {p.returncode}: {' '.join(cmd)}\n  stderr: {p.stderr.decode(errors='replace')[-2000:]}")
        return
    try:
        recs = parse_jsonl(p.stdout.decode())
    except (ValueError, UnicodeDecodeError) as e:
        rep.fail(f"{label}: cannot parse jsonl output: {e}")
        return
    if len(recs) != len(paths):
        rep.fail(f"{label}: {len(recs)} output lines for {len(paths)} inputs")
        return
    for rec, path in zip(recs, paths):
        T, ref = refs[path]
        what = f"{label} T={T}"
        if rec.get("input") != path:
            rep.fail(f"{what}: input field {rec.get('input')!r}, expected {path!r}")
        if rec.get("n_tokens") != T:
            rep.fail(f"{what}: n_tokens {rec.get('n_tokens')!r}, expected {T}")
        key = "embeddings" if pooling == "none" else "embedding"
        if key not in rec:
            rep.fail(f"{what}: no {key!r} in output record (keys {sorted(rec)})")
            continue
        rep.compare(what, rec[key], ref, TOL)


def check_api(rep, api, name, model_path, items, pooling, normalize, backend, threads=None):
    """items: list of (path, T, ref), all encoded by one api_dump process (one context)."""
    cmd = [api, model_path, items[0][0], pooling]
    if not normalize:
        cmd.append("--no-normalize")
    cmd += ["--backend", backend]
    if threads:
        cmd += ["--threads", str(threads)]
    cmd += [it[0] for it in items[1:]]
    label = f"api[{backend}] {name} pooling={pooling}{'' if normalize else ' no-normalize'}" \
            f"{f' threads={threads}' if threads else ''}"
    try:
        p, _ = run(cmd)
    except subprocess.TimeoutExpired:
        rep.fail(f"{label}: timed out")
        return None
    if p.returncode == SKIP:
        return SKIP
    if p.returncode != 0:
        rep.fail(f"{label}: exit {p.returncode}: {' '.join(cmd)}\n  stderr: {p.stderr.decode(errors='replace')[-2000:]}")
        return None
    lines = p.stdout.decode().split("\n")
    pos = 0
    for path, T, ref in items:
        what = f"{label} T={T}"
        try:
            n_tok, n_rows, d = (int(x) for x in lines[pos].split())
            vals = np.array([[float(x) for x in ln.split()] for ln in lines[pos + 1:pos + 1 + n_rows]])
            pos += 1 + n_rows
        except (ValueError, IndexError) as e:
            rep.fail(f"{what}: cannot parse output: {e}")
            return None
        if n_tok != T:
            rep.fail(f"{what}: n_tokens {n_tok}, expected {T}")
        if pooling != "none":
            vals = vals.reshape(-1)
        rep.compare(what, vals, ref, TOL)
    return 0


def main():
    global TOL
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--cli", help="path to spectral-embed")
    ap.add_argument("--api-dump", help="path to tests/api_dump")
    ap.add_argument("--backend", choices=["cpu", "cuda"], default="cpu", help="backend for api_dump")
    ap.add_argument("--tol", type=float, default=TOL)
    ap.add_argument("--models", help="comma-separated subset of model names (prefix match)")
    ap.add_argument("--workdir", help="keep generated models and texts here instead of a temp dir")
    args = ap.parse_args()
    TOL = args.tol
    if not args.cli and not args.api_dump:
        ap.error("give --cli and/or --api-dump")
    for exe in (args.cli, args.api_dump):
        if exe and not os.access(exe, os.X_OK):
            print(f"parity: {exe} is not an executable", file=sys.stderr)
            return 1

    models = MODELS
    if args.models:
        want = args.models.split(",")
        models = [m for m in MODELS if any(m[0].startswith(w) for w in want)]

    if args.workdir:
        os.makedirs(args.workdir, exist_ok=True)
        return run_all(args, models, args.workdir)
    with tempfile.TemporaryDirectory(prefix="spectral-parity-") as tmp:
        return run_all(args, models, tmp)


def run_all(args, models, tmp):
    t_start = time.time()
    rep = Report()
    rng = np.random.default_rng(20240601)
    texts = make_texts(tmp, rng)
    for mi, (name, kw, big) in enumerate(models):
        kw = dict(kw)
        kw.setdefault("ctx", 8192)
        path = os.path.join(tmp, f"{name}.gguf")
        make_model.write_model(path, seed=100 + mi, name=name, **kw)
        model = reference.load_gguf(path)
        lengths = [T for T in LENGTHS if big or T != BIG]
        states, toks = {}, {}
        for T in lengths:
            tpath, data = texts[T]
            toks[tpath] = reference.tokenize(model, data)
            states[tpath] = (T, reference.forward(model, toks[tpath]))
        paths = [texts[T][0] for T in lengths]
        n_before = len(rep.failures)

        if args.cli:
            check_cli(rep, args.cli, name, path, paths, states, "none", False)
            full = name.startswith(FULL_POOLING)
            for pooling, norm in (POOLED if full else POOLED[:1]):
                refs = {p: (T, reference.pool(s, pooling, norm, model, toks[p])) for p, (T, s) in states.items()}
                check_cli(rep, args.cli, name, path, paths, refs, pooling, norm)
            default = reference.POOLING_NAMES[model.pooling]
            refs = {p: (T, reference.pool(s, default, True, model, toks[p])) for p, (T, s) in states.items()}
            check_cli(rep, args.cli, name, path, paths, refs, None, True)

        if args.api_dump:
            # One process per pooling mode; the documents go through one context in an
            # order that makes it grow and shrink.
            order = [T for T in (100, 1, BIG, 2, 1000, 3, 7, 8) if T in lengths]
            items = [(texts[T][0], T, states[texts[T][0]][1]) for T in order]
            r = check_api(rep, args.api_dump, name, path, items, "none", False, args.backend,
                          threads=1 if name.startswith("B") else None)
            if r == SKIP:
                print(f"parity: {args.backend} backend not available: skipped")
                return SKIP
            default = reference.POOLING_NAMES[model.pooling]
            full = name.startswith(FULL_POOLING)
            for pooling, norm in (POOLED[:4] if full else POOLED[:1]) + [("model", True)]:
                pm = default if pooling == "model" else pooling
                items = [(texts[T][0], T, reference.pool(states[texts[T][0]][1], pm, norm, model, toks[texts[T][0]]))
                         for T in order]
                check_api(rep, args.api_dump, name, path, items, pooling, norm, args.backend)
        status = "ok" if len(rep.failures) == n_before else f"{len(rep.failures) - n_before} mismatches"
        print(f"parity: model {name} ({', '.join(f'{k}={v}' for k, v in kw.items())}): {status}", flush=True)

    print(f"parity: {rep.checks} comparisons, worst relative error {rep.worst:.3g} (tolerance {TOL:g}), "
          f"{time.time() - t_start:.1f} s")
    if rep.failures:
        print(f"parity: FAILED, {len(rep.failures)} mismatch(es):")
        for f in rep.failures:
            print("  -", f.splitlines()[0])
        return 1
    print("parity: all outputs match the reference")
    return 0


if __name__ == "__main__":
    sys.exit(main())
