#!/usr/bin/env python3
"""Checks the numpy reference (tools/convert/reference.py) independently:

1. its vectorized erf against math.erf on a dense grid (max abs error <= 1e-13);
2. load_gguf() returns exactly the weights tools/convert/make_model.py stored (F32, F16,
   BF16, u32 and u64 keys, with and without output_norm);
3. forward() against a deliberately naive pure-Python implementation written
   here (explicit O(T^2) DFT loops, math.erf GELU, loops for LayerNorm and the
   matrix products), on tiny models and T in {1, 2, 3, 5, 8, 13}, including
   K > T/2; tolerance max abs error <= 1e-9 * max(1, max abs value);
4. pool() for mean / cls / last / none, normalized or not.

Usage: python3 tests/test_reference.py   (exit status 0 = pass)
"""
import cmath
import math
import os
import random
import sys
import tempfile

import numpy as np

import harness  # also puts tools/convert on sys.path
from harness import check, failures
import make_model  # noqa: E402
import reference  # noqa: E402


# ---------------------------------------------------------------- erf
def test_erf():
    xs = np.concatenate([
        np.linspace(-8.0, 8.0, 160001),
        np.linspace(-3.0001, 3.0001, 20001),  # around the series / fraction switch
        np.linspace(-1e-6, 1e-6, 101),
        np.array([0.0, -0.0, 1e-300, -1e-300, 30.0, -30.0, 1e6, -1e6]),
    ])
    got = reference.erf(xs)
    want = np.array([math.erf(float(x)) for x in xs])
    err = np.abs(got - want)
    worst = int(np.argmax(err))
    check(err.max() <= 1e-13, f"erf: max abs error {err.max():.3g} at x={xs[worst]!r}")
    # relative accuracy near 0 matters for GELU of tiny inputs
    small = np.abs(xs) < 1e-3
    rel = err[small] / np.maximum(np.abs(want[small]), 1e-300)
    check(rel.max() <= 1e-13, f"erf: max relative error near 0 {rel.max():.3g}")
    check(reference.erf(np.array([np.inf]))[0] == 1.0 and reference.erf(np.array([-np.inf]))[0] == -1.0,
          "erf(+-inf)")
    check(np.isnan(reference.erf(np.array([np.nan]))[0]), "erf(nan)")
    g = reference.gelu(np.array([-2.0, -0.5, 0.0, 0.7, 3.0]))
    gw = [x * 0.5 * (1 + math.erf(x / math.sqrt(2))) for x in [-2.0, -0.5, 0.0, 0.7, 3.0]]
    check(np.max(np.abs(g - gw)) <= 1e-14, f"gelu: {g} vs {gw}")
    print(f"erf: max abs error {err.max():.3g} over {xs.size} points")


# ---------------------------------------------------------------- naive model
def naive_ln(row, w, b, eps):
    n = len(row)
    mean = sum(row) / n
    var = sum((x - mean) ** 2 for x in row) / n
    inv = 1.0 / math.sqrt(var + eps)
    return [(row[i] - mean) * inv * w[i] + b[i] for i in range(n)]


def naive_matvec(W, x, bias):
    # W: numpy (out, in) -> list of out
    out = []
    for o in range(len(W)):
        s = bias[o]
        wr = W[o]
        for i in range(len(x)):
            s += float(wr[i]) * x[i]
        out.append(s)
    return out


def naive_forward(w, hp, tokens):
    D, K, L, eps = hp["dim"], hp["filters"], hp["layers"], hp["eps"]
    T = len(tokens)
    emb = w["token_embd.weight"]
    h = [[float(emb[t][d]) for d in range(D)] for t in tokens]
    for l in range(L):
        p = f"blk.{l}."
        u = [naive_ln(h[t], w[p + "mix_norm.weight"], w[p + "mix_norm.bias"], eps) for t in range(T)]
        filt = w[p + "mix_filter.weight"]
        k = min(K, T // 2)
        mixed = [[0.0] * D for _ in range(T)]
        for d in range(D):
            # forward DFT: U_f = sum_t u_t exp(-2 pi i f t / T)
            U = []
            for f in range(T):
                s = 0j
                for t in range(T):
                    s += u[t][d] * cmath.exp(-2j * math.pi * f * t / T)
                U.append(s)
            Z = [0j] * T
            for f in range(k):
                Z[f] = U[f] * complex(float(filt[d][f][0]), float(filt[d][f][1]))
            # inverse DFT: x_t = (1/T) sum_f Z_f exp(+2 pi i f t / T); keep the real part
            for t in range(T):
                s = 0j
                for f in range(T):
                    s += Z[f] * cmath.exp(2j * math.pi * f * t / T)
                mixed[t][d] = (s / T).real
        mb = w[p + "mix_filter.bias"]
        h = [[h[t][d] + mixed[t][d] + mb[d] for d in range(D)] for t in range(T)]
        newh = []
        for t in range(T):
            v = naive_ln(h[t], w[p + "ffn_norm.weight"], w[p + "ffn_norm.bias"], eps)
            a = naive_matvec(w[p + "ffn_up.weight"], v, w[p + "ffn_up.bias"])
            a = [x * 0.5 * (1.0 + math.erf(x / math.sqrt(2.0))) for x in a]
            o = naive_matvec(w[p + "ffn_down.weight"], a, w[p + "ffn_down.bias"])
            newh.append([h[t][d] + o[d] for d in range(D)])
        h = newh
    if "output_norm.weight" in w:
        h = [naive_ln(row, w["output_norm.weight"], w["output_norm.bias"], eps) for row in h]
    return h


def test_models(tmp):
    configs = [
        dict(dim=8, ffn=12, layers=1, filters=2, dtype="f32", output_norm=True, u64_keys=False, eps=1e-5),
        dict(dim=6, ffn=10, layers=2, filters=9, dtype="f16", output_norm=False, u64_keys=True, eps=1e-3),
        dict(dim=5, ffn=7, layers=2, filters=3, dtype="bf16", output_norm=True, u64_keys=False, eps=1e-6,
             dtype_all=True),
    ]
    rng = random.Random(1234)
    for ci, c in enumerate(configs):
        n_fail = len(failures)
        path = os.path.join(tmp, f"m{ci}.gguf")
        stored = make_model.write_model(path, dim=c["dim"], ffn=c["ffn"], layers=c["layers"], filters=c["filters"],
                                        dtype=c["dtype"], dtype_all=c.get("dtype_all", False),
                                        output_norm=c["output_norm"], u64_keys=c["u64_keys"], eps=c["eps"],
                                        seed=ci + 7, ctx=64, pooling="cls")
        m = reference.load_gguf(path)
        check((m.n_embd, m.n_ff, m.n_layer, m.n_filters, m.n_ctx, m.pooling, m.n_vocab)
              == (c["dim"], c["ffn"], c["layers"], c["filters"], 64, 2, 256), f"model {ci}: hparams {m}")
        check(abs(m.eps - c["eps"]) <= 1e-7 * c["eps"], f"model {ci}: eps {m.eps}")
        check(set(m.tensors) == set(stored), f"model {ci}: tensor names differ")
        for name, a in stored.items():
            check(m.tensors[name].shape == a.shape and np.array_equal(m.tensors[name], a),
                  f"model {ci}: tensor {name} differs from what was written")
        # The naive forward uses the weights make_model returned, not the loader's.
        hp = dict(dim=c["dim"], filters=c["filters"], layers=c["layers"], eps=float(np.float32(c["eps"])))
        for T in (1, 2, 3, 5, 8, 13):
            toks = [rng.randrange(256) for _ in range(T)]
            got = reference.forward(m, toks)
            want = np.array(naive_forward(stored, hp, toks))
            scale = max(1.0, float(np.max(np.abs(want))))
            err = float(np.max(np.abs(got - want)))
            check(got.shape == (T, c["dim"]), f"model {ci} T={T}: shape {got.shape}")
            check(err <= 1e-9 * scale, f"model {ci} T={T}: forward max abs error {err:.3g} (scale {scale:.3g})")
        if len(failures) == n_fail:
            print(f"model {ci} ({c['dtype']}): forward matches naive DFT implementation")


def test_pool():
    rng = np.random.default_rng(3)
    s = rng.standard_normal((5, 4))
    check(np.allclose(reference.pool(s, "mean", False), s.mean(0)), "pool mean")
    check(np.allclose(reference.pool(s, "cls", False), s[0]), "pool cls")
    check(np.allclose(reference.pool(s, "last", False), s[-1]), "pool last")
    check(reference.pool(s, "none", True) is s, "pool none returns states")
    for mode in ("mean", "cls", "last"):
        v = reference.pool(s, mode, True)
        check(abs(np.linalg.norm(v) - 1.0) < 1e-12, f"pool {mode} normalized")
    check(np.allclose(reference.pool(s, 2, False), s[0]), "pool by id")


def main():
    test_erf()
    test_pool()
    with tempfile.TemporaryDirectory() as tmp:
        test_models(tmp)
    return harness.report("test_reference")


if __name__ == "__main__":
    sys.exit(main())
