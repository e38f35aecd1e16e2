#!/usr/bin/env python3
"""Independent float64 numpy reference for `spectralmlp` GGUF encoders.

This is the ground truth the C runtime is tested against, so it implements the
model math literally (full complex FFT along the sequence, no rfft tricks) and
reads the GGUF file through the `gguf` Python package, not through our C
loader.

Importable:

    from reference import load_gguf, forward, pool, tokenize
    model = load_gguf("model.gguf")
    states = forward(model, tokenize(model, b"some text"))   # (T, D) float64
    vec = pool(states, "mean", normalize=True)                # (D,)

CLI (prints jsonl like `spectral-embed --output-format jsonl`):

    python3 tools/convert/reference.py MODEL FILE [FILE...] [--pooling mean|cls|last|none]
                               [--no-normalize]
"""
from __future__ import annotations

import argparse
import json
import math
import sys
from dataclasses import dataclass, field

import numpy as np

ARCH = "spectralmlp"
POOLING_NAMES = {0: "none", 1: "mean", 2: "cls", 3: "last"}
POOLING_IDS = {v: k for k, v in POOLING_NAMES.items()}

# --------------------------------------------------------------------------
# erf in float64, vectorized, without scipy.
#
# |x| <  3: erf(x) = 2/sqrt(pi) * exp(-x^2) * sum_{n>=0} (2x^2)^n x / (1*3*...*(2n+1))
#           (all terms have the same sign, so there is no cancellation; the
#           loop runs until every remaining term is below 1e-18 of the sum).
# |x| >= 3: erfc(x) = exp(-x^2)/sqrt(pi) / (x + (1/2)/(x + 1/(x + (3/2)/(x + ...))))
#           (Laplace's continued fraction, evaluated backwards with 120 levels).
# Checked against math.erf in tests/test_reference.py (max abs error < 1e-14).
# --------------------------------------------------------------------------
_SERIES_LIMIT = 3.0
_CF_LEVELS = 120
_TWO_OVER_SQRT_PI = 2.0 / math.sqrt(math.pi)


def _erf_series(x: np.ndarray) -> np.ndarray:
    x2 = x * x
    term = x.copy()
    total = x.copy()
    n = 0
    while True:
        n += 1
        term = term * (2.0 * x2) / (2 * n + 1)
        total += term
        if n > 8 and np.all(np.abs(term) <= 1e-18 * np.abs(total)):
            break
        if n > 400:  # cannot happen for |x| < 3; guard anyway
            break
    return _TWO_OVER_SQRT_PI * np.exp(-x2) * total


def _erfc_cf(x: np.ndarray) -> np.ndarray:
    """erfc(x) for x >= 3 by the continued fraction."""
    t = x.copy()
    for n in range(_CF_LEVELS, 0, -1):
        t = x + (0.5 * n) / t
    return np.exp(-x * x) / math.sqrt(math.pi) / t


def erf(x) -> np.ndarray:
    x = np.asarray(x, dtype=np.float64)
    shape = x.shape
    x = x.reshape(-1)
    out = np.empty_like(x)
    ax = np.abs(x)
    small = ax < _SERIES_LIMIT
    large = ~small & np.isfinite(x)
    if np.any(small):
        out[small] = _erf_series(x[small])
    if np.any(large):
        a = np.minimum(ax[large], 30.0)  # erfc underflows to 0 long before
        out[large] = np.sign(x[large]) * (1.0 - _erfc_cf(a))
    inf = np.isinf(x)
    out[inf] = np.sign(x[inf])
    nan = np.isnan(x)
    out[nan] = np.nan
    return out.reshape(shape)


def gelu(x: np.ndarray) -> np.ndarray:
    """Exact GELU: x * Phi(x) = 0.5 x (1 + erf(x / sqrt 2))."""
    return 0.5 * x * (1.0 + erf(x / math.sqrt(2.0)))


# --------------------------------------------------------------------------
# GGUF loading
# --------------------------------------------------------------------------
@dataclass
class Model:
    name: str
    n_embd: int
    n_ff: int
    n_layer: int
    n_filters: int
    n_ctx: int
    eps: float
    pooling: int
    tokenizer: str
    n_vocab: int
    tensors: dict = field(default_factory=dict)  # name -> float64 array, numpy (reversed ggml) shape
    tensor_types: dict = field(default_factory=dict)  # name -> ggml type name
    # The lexical sketch (docs/format.md): 0 dims when the model has none.
    lexical_dims: int = 0
    lexical_scale: float = 1.0
    lexical_bucket: np.ndarray = None  # (n_vocab,) int64


def _field_value(f):
    """Scalar / string value of a GGUF KV field."""
    from gguf import GGUFValueType

    vt = f.types[0] if f.types else None
    part = f.parts[f.data[0]]
    if vt == GGUFValueType.STRING:
        return bytes(part).decode("utf-8")
    if vt == GGUFValueType.ARRAY:
        return f.contents()
    v = part[0]
    if np.issubdtype(part.dtype, np.integer):
        return int(v)
    if np.issubdtype(part.dtype, np.floating):
        return float(v)
    return v


def _tensor_f64(t) -> np.ndarray:
    from gguf import GGMLQuantizationType as Q

    np_shape = tuple(int(d) for d in reversed(t.shape.tolist()))
    if t.tensor_type == Q.I32:
        return np.asarray(t.data, dtype=np.int32).astype(np.int64).reshape(np_shape)
    if t.tensor_type == Q.F32:
        a = np.asarray(t.data, dtype=np.float32)
    elif t.tensor_type == Q.F16:
        a = np.asarray(t.data, dtype=np.float16)
    elif t.tensor_type == Q.BF16:
        raw = np.ascontiguousarray(t.data).view(np.uint16).astype(np.uint32) << 16
        a = raw.view(np.float32)
    else:
        raise ValueError(f"tensor {t.name}: unsupported type {t.tensor_type.name}")
    return a.astype(np.float64).reshape(np_shape)


def load_gguf(path: str) -> Model:
    from gguf import GGUFReader

    r = GGUFReader(path, "r")
    kv = {name: _field_value(f) for name, f in r.fields.items() if not name.startswith("GGUF.")}
    arch = kv.get("general.architecture")
    if arch != ARCH:
        raise ValueError(f"{path}: general.architecture is {arch!r}, expected {ARCH!r}")

    def req(key):
        k = f"{ARCH}.{key}"
        if k not in kv:
            raise ValueError(f"{path}: missing key {k}")
        return kv[k]

    tensors = {}
    ttypes = {}
    for t in r.tensors:
        tensors[t.name] = _tensor_f64(t)
        ttypes[t.name] = t.tensor_type.name
    if "token_embd.weight" not in tensors:
        raise ValueError(f"{path}: missing token_embd.weight")
    m = Model(
        name=str(kv.get("general.name", "")),
        n_embd=int(req("embedding_length")),
        n_ff=int(req("feed_forward_length")),
        n_layer=int(req("block_count")),
        n_filters=int(req("mixing.n_filters")),
        n_ctx=int(kv.get(f"{ARCH}.context_length", 0)),
        eps=float(req("attention.layer_norm_epsilon")),
        pooling=int(kv.get(f"{ARCH}.pooling_type", 1)),
        tokenizer=str(kv.get("tokenizer.ggml.model", "bytes")),
        n_vocab=int(tensors["token_embd.weight"].shape[0]),
        tensors=tensors,
        tensor_types=ttypes,
    )
    D, F, K = m.n_embd, m.n_ff, m.n_filters
    expect = {"token_embd.weight": (m.n_vocab, D)}
    for i in range(m.n_layer):
        p = f"blk.{i}."
        expect.update({
            p + "mix_norm.weight": (D,), p + "mix_norm.bias": (D,),
            p + "mix_filter.weight": (D, K, 2), p + "mix_filter.bias": (D,),
            p + "ffn_norm.weight": (D,), p + "ffn_norm.bias": (D,),
            p + "ffn_up.weight": (F, D), p + "ffn_up.bias": (F,),
            p + "ffn_down.weight": (D, F), p + "ffn_down.bias": (D,),
        })
    if "output_norm.weight" in tensors or "output_norm.bias" in tensors:
        expect.update({"output_norm.weight": (D,), "output_norm.bias": (D,)})
    for name, shape in expect.items():
        if name not in tensors:
            raise ValueError(f"{path}: missing tensor {name}")
        if tensors[name].shape != shape:
            raise ValueError(f"{path}: tensor {name} has numpy shape {tensors[name].shape}, expected {shape}")
    if m.n_vocab < 256:
        raise ValueError(f"{path}: vocab {m.n_vocab} < 256")
    if f"{ARCH}.lexical.dims" in kv:
        m.lexical_dims = int(kv[f"{ARCH}.lexical.dims"])
        m.lexical_scale = float(kv.get(f"{ARCH}.lexical.scale", 1.0))
        m.lexical_bucket = tensors.pop("lexical.bucket")
        if m.lexical_bucket.shape != (m.n_vocab,) or tensors["lexical.weight"].shape != (m.n_vocab,):
            raise ValueError(f"{path}: lexical.bucket and lexical.weight need one value per token")
        if m.lexical_bucket.min() < 0 or m.lexical_bucket.max() >= m.lexical_dims:
            raise ValueError(f"{path}: lexical.bucket outside [0, {m.lexical_dims})")
    return m


# --------------------------------------------------------------------------
# Forward pass
# --------------------------------------------------------------------------
def tokenize(model: Model, data: bytes) -> np.ndarray:
    """`bytes` tokenizer: one token per input byte, id = byte value."""
    return np.frombuffer(bytes(data), dtype=np.uint8).astype(np.int64)


def layer_norm(x: np.ndarray, w: np.ndarray, b: np.ndarray, eps: float) -> np.ndarray:
    mean = x.mean(axis=-1, keepdims=True)
    var = ((x - mean) ** 2).mean(axis=-1, keepdims=True)  # biased
    return (x - mean) / np.sqrt(var + eps) * w + b


def spectral_mix(u: np.ndarray, filt: np.ndarray, n_filters: int) -> np.ndarray:
    """Re(IFFT(Z)) with Z_f = FFT(u)_f * W_f for f < min(K, T//2), else 0.

    u: (T, D) real; filt: (D, K, 2) = complex W[d, f] as (re, im)."""
    T = u.shape[0]
    U = np.fft.fft(u, axis=0)  # (T, D) complex, full spectrum
    k = min(n_filters, T // 2)
    W = filt[:, :, 0] + 1j * filt[:, :, 1]  # (D, K)
    Z = np.zeros_like(U)
    if k > 0:
        Z[:k, :] = U[:k, :] * W[:, :k].T
    return np.real(np.fft.ifft(Z, axis=0))


def forward(model: Model, tokens) -> np.ndarray:
    tokens = np.asarray(tokens, dtype=np.int64)
    if tokens.ndim != 1 or tokens.size == 0:
        raise ValueError("forward: need a non-empty 1-D token sequence")
    if tokens.min() < 0 or tokens.max() >= model.n_vocab:
        raise ValueError("forward: token id out of range")
    t = model.tensors
    eps = model.eps
    h = t["token_embd.weight"][tokens, :].copy()  # (T, D)
    for i in range(model.n_layer):
        p = f"blk.{i}."
        u = layer_norm(h, t[p + "mix_norm.weight"], t[p + "mix_norm.bias"], eps)
        h = h + spectral_mix(u, t[p + "mix_filter.weight"], model.n_filters) + t[p + "mix_filter.bias"]
        v = layer_norm(h, t[p + "ffn_norm.weight"], t[p + "ffn_norm.bias"], eps)
        a = gelu(v @ t[p + "ffn_up.weight"].T + t[p + "ffn_up.bias"])
        h = h + a @ t[p + "ffn_down.weight"].T + t[p + "ffn_down.bias"]
    if "output_norm.weight" in t:
        h = layer_norm(h, t["output_norm.weight"], t["output_norm.bias"], eps)
    return h


def lexical_sketch(model: Model, tokens) -> np.ndarray:
    """(R,): sum over distinct tokens v of weight[v] * sqrt(count of v), in bucket[v]."""
    counts = np.bincount(np.asarray(tokens, dtype=np.int64), minlength=model.n_vocab).astype(np.float64)
    v = np.nonzero(counts)[0]
    return np.bincount(model.lexical_bucket[v], weights=model.tensors["lexical.weight"][v] * np.sqrt(counts[v]),
                       minlength=model.lexical_dims)


def _unit(v: np.ndarray) -> np.ndarray:
    n = np.sqrt(np.sum(v * v))
    return v / n if n > 0 else v


def pool(states: np.ndarray, mode: str = "mean", normalize: bool = True, model: Model = None,
         tokens=None) -> np.ndarray:
    """mean | cls | last -> (D,); none -> states unchanged (T, D), never normalized.

    With a model that has a lexical sketch (and the document's tokens), the pooled
    vector is [unit(pooled), scale * unit(sketch)], then normalized as a whole."""
    if isinstance(mode, int):
        mode = POOLING_NAMES[mode]
    if mode == "none":
        return states
    if mode == "mean":
        v = states.mean(axis=0)
    elif mode == "cls":
        v = states[0].copy()
    elif mode == "last":
        v = states[-1].copy()
    else:
        raise ValueError(f"unknown pooling {mode!r}")
    if model is not None and model.lexical_dims:
        v = np.concatenate([_unit(v), model.lexical_scale * _unit(lexical_sketch(model, tokens))])
    if normalize:
        n = np.sqrt(np.sum(v * v))
        if n > 0:
            v = v / n
    return v


def embed_file(model: Model, path: str, pooling: str, normalize: bool) -> dict:
    with open(path, "rb") as fh:
        data = fh.read()
    toks = tokenize(model, data)
    states = forward(model, toks)
    rec = {"input": path, "n_tokens": int(len(toks))}
    if pooling == "none":
        rec["embeddings"] = [[float(x) for x in row] for row in states]
    else:
        rec["embedding"] = [float(x) for x in pool(states, pooling, normalize, model, toks)]
    return rec


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description="float64 numpy reference encoder for spectralmlp GGUF models")
    ap.add_argument("model")
    ap.add_argument("files", nargs="+")
    ap.add_argument("--pooling", choices=["mean", "cls", "last", "none"], default=None,
                    help="default: the model's pooling_type")
    ap.add_argument("--no-normalize", action="store_true")
    args = ap.parse_args(argv)
    model = load_gguf(args.model)
    pooling = args.pooling or POOLING_NAMES.get(model.pooling, "mean")
    for path in args.files:
        rec = embed_file(model, path, pooling, not args.no_normalize)
        sys.stdout.write(json.dumps(rec) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
