#!/usr/bin/env python3
"""Write a random-weight `spectralmlp` GGUF model (for tests and as a placeholder).

    python3 tools/convert/make_model.py --dim 64 --ffn 128 --layers 2 --filters 16 -o /tmp/m.gguf

Weights are scaled so hidden states stay O(1) through many layers:
token embeddings ~ N(0, 1); complex filters, re and im ~ N(0, (1/sqrt(K))^2);
LayerNorm weights 1 + N(0, 0.1^2), biases N(0, 0.05^2); linear weights
~ N(0, (1/sqrt(fan_in))^2), their biases and the mixing bias N(0, 0.02^2).

--dtype applies to the matrices (token_embd, mix_filter, ffn_up, ffn_down);
1-D tensors stay F32 unless --dtype-all. The same --seed gives the same
(float64) weights whatever --dtype is. Integer keys are written as u32, or
as u64 with --u64-keys.

The untrained baseline of docs/default-model.md (the former placeholder) is made by:

    python3 tools/convert/make_model.py --dim 256 --ffn 1024 --layers 4 --filters 64 --ctx 4096 \
        --name "spectral-default (placeholder: random weights)" --seed 1 --dtype f16 -o placeholder.gguf
"""
from __future__ import annotations

import argparse
import math
import sys

import numpy as np

from gguf_tensors import POOLING_IDS, add_tensors, finish

ARCH = "spectralmlp"



def make_weights(dim: int, ffn: int, layers: int, filters: int, vocab: int, output_norm: bool,
                 seed: int) -> dict:
    """Random float64 weights, numpy shapes (the reverse of the ggml ne order)."""
    rng = np.random.default_rng(seed)
    D, F, K = dim, ffn, filters
    w = {}
    w["token_embd.weight"] = rng.standard_normal((vocab, D))
    for i in range(layers):
        p = f"blk.{i}."
        w[p + "mix_norm.weight"] = 1.0 + 0.1 * rng.standard_normal(D)
        w[p + "mix_norm.bias"] = 0.05 * rng.standard_normal(D)
        w[p + "mix_filter.weight"] = rng.standard_normal((D, K, 2)) / math.sqrt(K)
        w[p + "mix_filter.bias"] = 0.02 * rng.standard_normal(D)
        w[p + "ffn_norm.weight"] = 1.0 + 0.1 * rng.standard_normal(D)
        w[p + "ffn_norm.bias"] = 0.05 * rng.standard_normal(D)
        w[p + "ffn_up.weight"] = rng.standard_normal((F, D)) / math.sqrt(D)
        w[p + "ffn_up.bias"] = 0.02 * rng.standard_normal(F)
        w[p + "ffn_down.weight"] = rng.standard_normal((D, F)) / math.sqrt(F)
        w[p + "ffn_down.bias"] = 0.02 * rng.standard_normal(D)
    if output_norm:
        w["output_norm.weight"] = 1.0 + 0.1 * rng.standard_normal(D)
        w["output_norm.bias"] = 0.05 * rng.standard_normal(D)
    return w


def write_model(path: str, *, dim: int, ffn: int, layers: int, filters: int, vocab: int = 256,
                ctx: int = 4096, pooling: str = "mean", eps: float = 1e-5, dtype: str = "f32",
                dtype_all: bool = False, output_norm: bool = True, seed: int = 0,
                name: str = "spectral-random", u64_keys: bool = False, lexical: int = 0,
                lexical_scale: float = 1.5, dense_prefixes: list | None = None) -> dict:
    """Write the model; returns the float64 weights as stored (after rounding to dtype)."""
    import gguf

    if vocab < 256:
        raise ValueError("--vocab must be >= 256 (byte tokenizer)")
    for k, v in (("dim", dim), ("ffn", ffn), ("layers", layers), ("filters", filters), ("ctx", ctx)):
        if v < 1:
            raise ValueError(f"--{k} must be >= 1")
    weights = make_weights(dim, ffn, layers, filters, vocab, output_norm, seed)

    wr = gguf.GGUFWriter(path, ARCH)
    wr.add_string("general.name", name)
    add_int = wr.add_uint64 if u64_keys else wr.add_uint32
    add_int(f"{ARCH}.embedding_length", dim)
    add_int(f"{ARCH}.feed_forward_length", ffn)
    add_int(f"{ARCH}.block_count", layers)
    add_int(f"{ARCH}.mixing.n_filters", filters)
    add_int(f"{ARCH}.context_length", ctx)
    wr.add_float32(f"{ARCH}.attention.layer_norm_epsilon", eps)
    add_int(f"{ARCH}.pooling_type", POOLING_IDS[pooling])
    wr.add_string("tokenizer.ggml.model", "bytes")
    if dense_prefixes:  # lengths of the dense part said to work alone (Matryoshka prefixes)
        wr.add_key_value(f"{ARCH}.dense.prefixes", list(dense_prefixes), gguf.GGUFValueType.ARRAY,
                         sub_type=gguf.GGUFValueType.UINT32)
    if lexical:
        # A random lexical sketch: buckets, signed weights, a few tokens at weight 0.
        rng = np.random.default_rng(seed + 7)
        add_int(f"{ARCH}.lexical.dims", lexical)
        wr.add_float32(f"{ARCH}.lexical.scale", lexical_scale)
        wr.add_tensor("lexical.bucket", rng.integers(0, lexical, vocab).astype(np.int32))
        lw = rng.choice([-1.0, 1.0], vocab) * rng.uniform(0.1, 1.0, vocab)
        lw[rng.integers(0, vocab, 8)] = 0.0
        weights["lexical.weight"] = lw

    stored = add_tensors(wr, weights, dtype, all_tensors=dtype_all)
    finish(wr)
    return stored


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description="write a random-weight spectralmlp GGUF model")
    ap.add_argument("--dim", type=int, required=True, help="embedding_length D")
    ap.add_argument("--ffn", type=int, required=True, help="feed_forward_length F")
    ap.add_argument("--layers", type=int, required=True, help="block_count L")
    ap.add_argument("--filters", type=int, required=True, help="mixing.n_filters K")
    ap.add_argument("--vocab", type=int, default=256)
    ap.add_argument("--ctx", type=int, default=4096, help="context_length")
    ap.add_argument("--pooling", choices=list(POOLING_IDS), default="mean")
    ap.add_argument("--eps", type=float, default=1e-5)
    ap.add_argument("--dtype", choices=["f32", "f16", "bf16"], default="f32")
    ap.add_argument("--dtype-all", action="store_true", help="also store 1-D tensors in --dtype")
    ap.add_argument("--no-output-norm", action="store_true")
    ap.add_argument("--u64-keys", action="store_true", help="write integer keys as u64")
    ap.add_argument("--lexical", type=int, default=0, metavar="R", help="add a random R-dim lexical sketch")
    ap.add_argument("--dense-prefixes", default="", metavar="N,M,...",
                    help="write the key spectralmlp.dense.prefixes with these lengths")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--name", default="spectral-random")
    ap.add_argument("-o", "--output", required=True)
    a = ap.parse_args(argv)
    write_model(a.output, dim=a.dim, ffn=a.ffn, layers=a.layers, filters=a.filters, vocab=a.vocab,
                ctx=a.ctx, pooling=a.pooling, eps=a.eps, dtype=a.dtype, dtype_all=a.dtype_all,
                output_norm=not a.no_output_norm, seed=a.seed, name=a.name, u64_keys=a.u64_keys,
                lexical=a.lexical, dense_prefixes=[int(x) for x in a.dense_prefixes.split(",") if x])
    return 0


if __name__ == "__main__":
    sys.exit(main())
