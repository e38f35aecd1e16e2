#!/usr/bin/env python3
"""Parity test for the `m2bert` architecture against committed outputs of the reference
PyTorch code (HazyResearch/m2), and the refusals of broken m2bert files.

    python3 tests/m2bert_parity.py DUMP [--data tests/data/m2bert] [--backend cpu|cuda]
                                   [--quantize SPECTRAL_QUANTIZE] [--tol 2e-5]

tests/data/m2bert/{tiny,published}/ (made by tests/fixtures/make_m2bert_fixture.py; torch
is not needed here) hold random-weight models built with the reference classes, converted
to GGUF, token id files, and the reference's float64 sequence_output (the real tokens'
rows; published/: a listed subset of them) and pooler_output (its sentence_embedding).
Each case runs DUMP (tests/fnet_dump.c: ids -> spectral_encode -> token states; --pooled:
the cls embedding without normalization) padded to the model's length, as the model card
pads, or with --no-pad at the document's own length, and must match:

    max |c - ref| / max |ref|  <=  2e-5

(the issue asks 1e-4; the runtime is at ~3e-6 on the CPU because it evaluates the
filters' Sin MLP in double precision; float32 there alone costs 2-6e-4 on these models).

Also checked: the padded and unpadded runs of a short document differ (padding changes
the embedding, as in the reference); 1 and 3 threads give the same bytes; a document one
token longer than the model's positions is refused in both modes, naming both lengths;
without a pooler, cls pooling is the first token's state; broken variants of the tiny
model are refused at load with a message naming the problem; with --quantize,
spectral-quantize's Q8_0 file computes exactly what a float32 file of its dequantized
weights does, and an F16 file stays within 1e-2 of the reference; with --embed and --server,
spectral-embed --no-pad and spectral-server --no-pad give the dump's numbers for a text, and
without it the padded ones.
Exit 0 pass, 1 fail, 77 when --backend cuda is asked for and not available.
"""
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

from gguf_tensors import copy_gguf  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
TOL = 2e-5


def run_dump(a, model, ids, *flags, threads=2):
    r = subprocess.run([a.dump, model, ids, "--backend", a.backend, "--threads", str(threads),
                        *flags], capture_output=True, text=True, timeout=300)
    if r.returncode == harness.SKIP:
        print(f"SKIP: {r.stderr.strip()}")
        sys.exit(harness.SKIP)
    return r


def parse(stdout):
    lines = stdout.strip().split("\n")
    T, D = (int(v) for v in lines[0].split())
    return np.array([[float(v) for v in ln.split()] for ln in lines[1:]], dtype=np.float64).reshape(T, D)


def rel_err(got, ref):
    return float(np.max(np.abs(got - ref)) / max(float(np.max(np.abs(ref))), 1e-30))


def outputs(a, model, ids, pad, what, dtype="f32"):
    """(token states, cls embedding) of one document, or None with a failure recorded.
    dtype f32: quantized matrices decoded, the reference's arithmetic (it ran on the
    decoded weights); auto: their int8 products (docs/precision.md)."""
    flags = ["--dtype", dtype] + ([] if pad else ["--no-pad"])
    r = run_dump(a, model, ids, *flags)
    p = run_dump(a, model, ids, *flags, "--pooled")
    if not check(r.returncode == 0 and p.returncode == 0,
                 f"{what}: exit {r.returncode}/{p.returncode}: {r.stderr.strip()} {p.stderr.strip()}"):
        return None
    return parse(r.stdout), parse(p.stdout)[0]


def parity(a, sub, worst):
    d = os.path.join(a.data, sub)
    with open(os.path.join(d, "manifest.json")) as f:
        man = json.load(f)
    for model in man["models"]:
        suffix = "_f16" if "f16" in model else ""
        for case in man["cases"]:
            if "ref" + suffix not in case:
                continue
            what = f"{sub}/{model} T={case['T']} {'padded' if case['pad'] else 'unpadded'}"
            got = outputs(a, os.path.join(d, model), os.path.join(d, case["ids"]), case["pad"], what)
            if got is None:
                continue
            states, pooled = got
            check(states.shape[0] == case["T"], f"{what}: {states.shape[0]} rows of token states")
            if case["rows"]:
                states = states[case["rows"]]
            ref = np.load(os.path.join(d, case["ref" + suffix])).astype(np.float64)
            pref = np.load(os.path.join(d, case["pool" + suffix])).astype(np.float64)
            if not check(states.shape == ref.shape and np.all(np.isfinite(states)),
                         f"{what}: shape {states.shape} vs {ref.shape} or non-finite"):
                continue
            e, ep = rel_err(states, ref), rel_err(pooled, pref)
            worst[0] = max(worst[0], e, ep)
            print(f"{what}: states {e:.3g}, sentence embedding {ep:.3g}")
            check(e <= a.tol, f"{what}: token states rel err {e:.3g} > {a.tol}")
            check(ep <= a.tol, f"{what}: sentence embedding rel err {ep:.3g} > {a.tol}")
            if sub == "published":  # Q4_0 matrices: the int8 path, to issue 24's cosine bound
                got = outputs(a, os.path.join(d, model), os.path.join(d, case["ids"]), case["pad"],
                              what + " int8", "auto")
                if got is not None:
                    cos = float(got[1] @ pref / (np.linalg.norm(got[1]) * np.linalg.norm(pref)))
                    print(f"{what} int8: states {rel_err(got[0][case['rows']] if case['rows'] else got[0], ref):.3g}, "
                          f"sentence embedding cosine {cos:.6f}")
                    check(cos >= 0.999, f"{what}: int8 sentence embedding cosine {cos:.6f} < 0.999")
    # one past the positions: refused, naming both lengths, padded or not
    P = man["config"]["max_position_embeddings"]
    for flags in ([], ["--no-pad"]):
        r = run_dump(a, os.path.join(d, "model.gguf"), os.path.join(d, man["too_long"]), *flags)
        msg = r.stderr.strip()
        print(f"{sub} T={P + 1} {flags}: exit {r.returncode}: {msg}")
        check(r.returncode == 1 and f"document of {P + 1} tokens is longer than the maximum of {P}" in msg,
              f"{sub}: T={P + 1} not refused clearly ({r.returncode}, {msg!r})")
    return man


def behaviour(a, man):
    d = os.path.join(a.data, "tiny")
    model, ids = os.path.join(d, "model.gguf"), os.path.join(d, "ids_T7.txt")
    padded, unpadded = outputs(a, model, ids, True, "T=7"), outputs(a, model, ids, False, "T=7")
    if padded and unpadded:
        check(rel_err(padded[1], unpadded[1]) > 1e-3,
              "padding to the model's length did not change the embedding of a short document")
    for ids_name, flags in (("ids_T100_pad.txt", []), ("ids_T67.txt", ["--no-pad"])):
        outs = [run_dump(a, model, os.path.join(d, ids_name), *flags, threads=t).stdout for t in (1, 3)]
        check(outs[0] == outs[1] and outs[0], f"{ids_name} {flags}: 1 and 3 threads differ")


def broken(a, man):
    cfg = man["config"]
    D, F, nb, P = (cfg["hidden_size"], cfg["intermediate_size"], cfg["monarch_mlp_nblocks"],
                   cfg["max_position_embeddings"])
    E = cfg["hyena_emb_dim"]
    T = lambda x: np.ascontiguousarray(x.T)  # noqa: E731
    cases = [
        ("missing_tensor", dict(drop=("blk.1.hyena_res.rev_out.weight",)),
         "missing tensor blk.1.hyena_res.rev_out.weight"),
        ("transposed_ffn_gate", dict(replace={"blk.0.ffn_gate.weight": T}),
         f"tensor blk.0.ffn_gate.weight has shape [{2 * F}, {D // nb}], expected [{D // nb}, {2 * F}]"),
        ("short_pos_z", dict(replace={"blk.1.hyena.pos_z": lambda x: x[:100]}),
         f"tensor blk.1.hyena.pos_z has shape [{E}, 100], expected [{E}, {P}]"),
        ("short_position_table", dict(replace={"position_embd.weight": lambda x: x[:100]}),
         f"m2bert.context_length = {P} but position_embd.weight has 100 rows"),
        ("blocks_not_dividing", dict(kv={"m2bert.ffn.n_blocks": 3}), "must divide embedding_length"),
        ("causal", dict(kv={"m2bert.hyena.bidirectional": False}),
         "m2bert.hyena.bidirectional = false: a one-way (causal) long convolution is not supported"),
        ("no_residual_conv", dict(kv={"m2bert.hyena.residual_long_conv": False}),
         "without the residual long convolution is not supported"),
        ("no_glu", dict(kv={"m2bert.ffn.glu": False}), "a non-gated MLP is not supported"),
        ("pad_outside_vocab", dict(kv={"m2bert.pad_token_id": 100000}), "is outside the vocabulary"),
        ("missing_filter_order", dict(drop_kv=("m2bert.hyena.filter_order",)),
         "missing key m2bert.hyena.filter_order"),
        ("w_mod_not_f32", dict(drop_kv=("m2bert.hyena.w_mod",), kv={"m2bert.hyena.w_mod": 2}),
         "m2bert.hyena.w_mod must be a finite f32"),
        ("flag_not_bool", dict(drop_kv=("m2bert.ffn.glu",), kv={"m2bert.ffn.glu": 1}),
         "key m2bert.ffn.glu must be a bool"),
        ("missing_pooler_bias", dict(drop=("pooler.bias",)),
         "pooler.weight and pooler.bias must come together"),
    ]
    d = os.path.join(a.data, "tiny")
    src, ids = os.path.join(d, "model.gguf"), os.path.join(d, "ids_T7.txt")
    with tempfile.TemporaryDirectory() as tmp:
        for name, edits, want in cases:
            dst = os.path.join(tmp, name + ".gguf")
            copy_gguf(src, dst, **edits)
            r = run_dump(a, dst, ids)
            msg = r.stderr.strip()
            print(f"broken {name}: exit {r.returncode}: {msg}")
            check(r.returncode == 1 and want in msg, f"broken {name}: exit {r.returncode}, {msg!r}, "
                                                     f"expected a refusal naming {want!r}")
        # without a pooler, cls pooling is the first token's state
        dst = os.path.join(tmp, "no_pooler.gguf")
        copy_gguf(src, dst, drop=("pooler.weight", "pooler.bias"))
        r = run_dump(a, dst, os.path.join(d, "ids_T7_pad.txt"), "--pooled")
        ref = np.load(os.path.join(d, "ref_T7_pad.npy"))[0]
        if check(r.returncode == 0, f"no pooler: {r.stderr.strip()}"):
            e = rel_err(parse(r.stdout)[0], ref)
            check(e <= a.tol, f"no pooler: cls pooling is not h[0] (rel err {e:.3g})")


def quantized(a):
    d = os.path.join(a.data, "tiny")
    src, ids = os.path.join(d, "model.gguf"), os.path.join(d, "ids_T100_pad.txt")
    ref = np.load(os.path.join(d, "ref_T100_pad.npy"))
    with tempfile.TemporaryDirectory() as tmp:
        q8, deq, f16 = (os.path.join(tmp, n) for n in ("q8.gguf", "deq.gguf", "f16.gguf"))
        for args in ([src, q8, "--type", "q8_0"], [q8, deq, "--type", "f32"], [src, f16, "--type", "f16"]):
            r = subprocess.run([a.quantize, *args], capture_output=True, text=True, timeout=120)
            check(r.returncode == 0, f"spectral-quantize {args[2:]}: {r.stderr.strip()}")
        outs = [run_dump(a, m, ids, "--dtype", "f32") for m in (q8, deq, f16)]
        if not check(all(o.returncode == 0 for o in outs), f"quantized runs: {[o.stderr for o in outs]}"):
            return
        check(outs[0].stdout == outs[1].stdout,
              "Q8_0 file: outputs differ from a float32 file of its dequantized weights")
        eq, ef = rel_err(parse(outs[0].stdout), ref), rel_err(parse(outs[2].stdout), ref)
        print(f"quantized tiny model, T=100 padded: Q8_0 rel err {eq:.3g}, F16 {ef:.3g}")
        check(eq < 0.2 and ef < 1e-2, f"quantized outputs too far from the reference ({eq:.3g}, {ef:.3g})")


def programs(a):
    """spectral-embed and spectral-server, padded and --no-pad, against the dump's ids."""
    import server_common as sc

    d = os.path.join(a.data, "tiny")
    model, text = os.path.join(d, "model.gguf"), "W1 w2, w3"  # [CLS] w1 w2 , w3 [SEP]; "," is [UNK]
    with tempfile.TemporaryDirectory() as tmp:
        ids = os.path.join(tmp, "ids.txt")
        with open(ids, "w") as f:
            f.write("2 6 7 1 8 3\n")
        want = {}
        for pad in (True, False):
            r = run_dump(a, model, ids, *([] if pad else ["--no-pad"]), "--pooled")
            if check(r.returncode == 0, f"dump: {r.stderr}"):
                v = parse(r.stdout)[0].astype(np.float32)
                # the runtime's L2 normalization: the sum in double, one float32 scale
                want[pad] = v * np.float32(1.0 / np.sqrt(np.sum(v.astype(np.float64) ** 2)))
    for pad in want:
        flags = [] if pad else ["--no-pad"]
        what = "padded" if pad else "--no-pad"
        if a.embed:
            (n, e), = sc.cli_embed(a.embed, model, [text], *flags)
            check(n == 6, f"spectral-embed {what}: {n} tokens")
            check(np.array_equal(np.array(e, dtype=np.float32), want[pad]),
                  f"spectral-embed {what}: not the dump's embedding")
        if a.server:
            srv = sc.Server(a.server, model, "-t", "2", *flags)
            try:
                st, _, body = srv.embed({"input": text, "model": "m"})
                e = json.loads(body)["data"][0]["embedding"] if st == 200 else None
                check(st == 200 and np.array_equal(np.array(e, dtype=np.float32), want[pad]),
                      f"spectral-server {what}: status {st}, not the dump's embedding")
            finally:
                srv.stop()
    if len(want) == 2:
        check(not np.array_equal(want[True], want[False]), "padded and unpadded embeddings are equal")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("dump")
    ap.add_argument("--data", default=os.path.join(HERE, "data", "m2bert"))
    ap.add_argument("--backend", default="cpu", choices=["cpu", "cuda"])
    ap.add_argument("--quantize", default=None)
    ap.add_argument("--embed", default=None)
    ap.add_argument("--server", default=None)
    ap.add_argument("--tol", type=float, default=TOL)
    a = ap.parse_args(argv)
    worst = [0.0]
    man = None
    for sub in ("tiny", "published"):
        m = parity(a, sub, worst)
        man = man or m
    behaviour(a, man)
    broken(a, man)
    if a.quantize:
        quantized(a)
    if a.embed or a.server:
        programs(a)
    print(f"worst rel err {worst[0]:.3g}")
    return harness.report("m2bert_parity")


if __name__ == "__main__":
    sys.exit(main())
