#!/usr/bin/env python3
"""Convert a seed `DocumentEncoder` state dict (tools/convert/seed_model.py) to a `spectralmlp` GGUF.

    python3 tools/convert/convert_seed.py STATE_DICT -o model.gguf [--name NAME] [--pooling mean]
                                  [--tokenizer bytes] [--dtype f32|f16] [--ctx 4096] [--eps 1e-5]

STATE_DICT is either a PyTorch file (`torch.save(model.state_dict(), path)`,
or a checkpoint dict holding it under "state_dict" / "model"; needs torch)
or a numpy .npz with the same keys (no torch needed; this is what the CTest
uses). Hyperparameters D, F, L, K and V are read off the tensor shapes.

Key mapping (state dict -> GGUF; GGUF shapes in ggml order, numpy reversed):

    embedding.weight (V, D)                      -> token_embd.weight [D, V]
    blocks.N.norm1.weight/bias                   -> blk.N.mix_norm.weight/bias
    blocks.N.spectral_mix.weight_real, _imag (D, K)
                                                 -> blk.N.mix_filter.weight [2, K, D]
                                                    (numpy (D, K, 2) = stack(re, im, axis=-1))
    blocks.N.spectral_mix.bias                   -> blk.N.mix_filter.bias
    blocks.N.norm2.weight/bias                   -> blk.N.ffn_norm.weight/bias
    blocks.N.mlp.0.weight (F, D) / bias          -> blk.N.ffn_up.weight [D, F] / bias
    blocks.N.mlp.3.weight (D, F) / bias          -> blk.N.ffn_down.weight [F, D] / bias
    norm_out.weight/bias (optional)              -> output_norm.weight/bias
    output.weight (E, D) / output.bias (optional)-> output.weight [D, E] / output.bias

Any key not in this mapping (e.g. a training-only head), a missing key, or a
wrong shape is an error: every problem is listed and the exit status is 2.
Training-only tensors must be dropped before saving, or passed with
--ignore PREFIX (repeatable).

With --dtype f16 the matrices (token_embd, mix_filter, ffn_up, ffn_down,
output.weight) are stored as F16; 1-D tensors always stay F32.
"""
from __future__ import annotations

import argparse
import re
import sys

import numpy as np

from checkpoint import ConvertError, read_state_dict
from gguf_tensors import POOLING_IDS, add_tensors, finish

ARCH = "spectralmlp"


def map_state_dict(sd: dict, ignore=()) -> tuple[dict, dict]:
    """-> (gguf tensors {name: numpy array in numpy (reversed ggml) shape}, hparams)."""
    problems = []
    sd = {k: v for k, v in sd.items() if not any(k.startswith(p) for p in ignore)}
    used = set()

    def get(key, shape=None):
        if key not in sd:
            problems.append(f"missing tensor {key}" + (f" (expected shape {shape})" if shape else ""))
            return None
        used.add(key)
        a = sd[key]
        if shape is not None and tuple(a.shape) != tuple(shape):
            problems.append(f"tensor {key} has shape {tuple(a.shape)}, expected {tuple(shape)}")
            return None
        return a

    emb = get("embedding.weight")
    if emb is None or emb.ndim != 2:
        if emb is not None:
            problems.append(f"tensor embedding.weight must be 2-D, got {emb.shape}")
        raise ConvertError("\n".join(problems))
    V, D = emb.shape
    if V < 256:
        problems.append(f"embedding.weight has {V} rows; the bytes tokenizer needs >= 256")
    block_ids = sorted({int(m.group(1)) for k in sd for m in [re.match(r"blocks\.(\d+)\.", k)] if m})
    L = (max(block_ids) + 1) if block_ids else 0
    if L == 0:
        problems.append("no blocks.N.* tensors found")
    for i in range(L):
        if i not in block_ids:
            problems.append(f"block {i} missing (blocks found: {block_ids})")
    K = F = None
    wr0 = sd.get("blocks.0.spectral_mix.weight_real")
    if wr0 is not None and wr0.ndim == 2:
        K = int(wr0.shape[1])
    else:
        problems.append("cannot determine n_filters: blocks.0.spectral_mix.weight_real missing or not 2-D")
    up0 = sd.get("blocks.0.mlp.0.weight")
    if up0 is not None and up0.ndim == 2:
        F = int(up0.shape[0])
    else:
        problems.append("cannot determine feed_forward_length: blocks.0.mlp.0.weight missing or not 2-D")
    if K is None or F is None:
        raise ConvertError("\n".join(problems))

    out = {"token_embd.weight": emb}
    for i in range(L):
        s, p = f"blocks.{i}.", f"blk.{i}."
        out[p + "mix_norm.weight"] = get(s + "norm1.weight", (D,))
        out[p + "mix_norm.bias"] = get(s + "norm1.bias", (D,))
        wr = get(s + "spectral_mix.weight_real", (D, K))
        wi = get(s + "spectral_mix.weight_imag", (D, K))
        out[p + "mix_filter.weight"] = (np.stack([wr, wi], axis=-1)
                                        if wr is not None and wi is not None else None)
        out[p + "mix_filter.bias"] = get(s + "spectral_mix.bias", (D,))
        out[p + "ffn_norm.weight"] = get(s + "norm2.weight", (D,))
        out[p + "ffn_norm.bias"] = get(s + "norm2.bias", (D,))
        out[p + "ffn_up.weight"] = get(s + "mlp.0.weight", (F, D))
        out[p + "ffn_up.bias"] = get(s + "mlp.0.bias", (F,))
        out[p + "ffn_down.weight"] = get(s + "mlp.3.weight", (D, F))
        out[p + "ffn_down.bias"] = get(s + "mlp.3.bias", (D,))
    if "norm_out.weight" in sd or "norm_out.bias" in sd:
        out["output_norm.weight"] = get("norm_out.weight", (D,))
        out["output_norm.bias"] = get("norm_out.bias", (D,))
    E = D
    if "output.weight" in sd or "output.bias" in sd:
        ow = get("output.weight")
        if ow is not None:
            if ow.ndim != 2 or ow.shape[1] != D:
                problems.append(f"tensor output.weight has shape {ow.shape}, expected (E, {D})")
            else:
                E = int(ow.shape[0])
                out["output.weight"] = ow
                out["output.bias"] = get("output.bias", (E,))
    unknown = sorted(set(sd) - used)
    for k in unknown:
        problems.append(f"unexpected tensor {k} {tuple(sd[k].shape)} (not part of the encoder; "
                        "drop it or pass --ignore PREFIX)")
    if problems:
        raise ConvertError("\n".join(problems))
    return out, dict(n_vocab=V, n_embd=D, n_ff=F, n_layer=L, n_filters=K, n_out=E)


def new_writer(path: str, hp: dict, *, name: str, pooling: str, ctx: int, eps: float,
               description: str | None = None):
    """A gguf.GGUFWriter with the spectralmlp keys of hp (map_state_dict's); the caller adds
    the tokenizer, the tensors, and finishes it."""
    import gguf

    wr = gguf.GGUFWriter(path, ARCH)
    wr.add_string("general.name", name)
    if description:
        wr.add_string("general.description", description)
    wr.add_uint32(f"{ARCH}.embedding_length", hp["n_embd"])
    wr.add_uint32(f"{ARCH}.feed_forward_length", hp["n_ff"])
    wr.add_uint32(f"{ARCH}.block_count", hp["n_layer"])
    wr.add_uint32(f"{ARCH}.mixing.n_filters", hp["n_filters"])
    wr.add_uint32(f"{ARCH}.context_length", ctx)
    wr.add_float32(f"{ARCH}.attention.layer_norm_epsilon", eps)
    wr.add_uint32(f"{ARCH}.pooling_type", POOLING_IDS[pooling])
    return wr


def write_gguf(path: str, tensors: dict, hp: dict, *, name: str, pooling: str, tokenizer: str,
               dtype: str, ctx: int, eps: float) -> None:
    wr = new_writer(path, hp, name=name, pooling=pooling, ctx=ctx, eps=eps)
    wr.add_string("tokenizer.ggml.model", tokenizer)
    add_tensors(wr, tensors, dtype)
    finish(wr)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description="seed DocumentEncoder state dict -> spectralmlp GGUF")
    ap.add_argument("state_dict", help=".pt (torch.save of state_dict) or .npz")
    ap.add_argument("-o", "--output", required=True)
    ap.add_argument("--name", default="spectral-seed")
    ap.add_argument("--pooling", choices=list(POOLING_IDS), default="mean")
    ap.add_argument("--tokenizer", choices=["bytes"], default="bytes")
    ap.add_argument("--dtype", choices=["f32", "f16"], default="f32")
    ap.add_argument("--ctx", type=int, default=4096, help="context_length to record")
    ap.add_argument("--eps", type=float, default=1e-5, help="LayerNorm epsilon")
    ap.add_argument("--ignore", action="append", default=[], metavar="PREFIX",
                    help="drop state-dict keys starting with PREFIX (e.g. a training head)")
    a = ap.parse_args(argv)
    if a.ctx < 1:
        ap.error("--ctx must be >= 1")
    try:
        sd = read_state_dict(a.state_dict)
        tensors, hp = map_state_dict(sd, a.ignore)
    except ConvertError as e:
        print(f"convert_seed: {a.state_dict}: cannot convert:", file=sys.stderr)
        for line in str(e).splitlines():
            print(f"  {line}", file=sys.stderr)
        return 2
    except (OSError, ValueError) as e:
        print(f"convert_seed: {a.state_dict}: {e}", file=sys.stderr)
        return 2
    write_gguf(a.output, tensors, hp, name=a.name, pooling=a.pooling, tokenizer=a.tokenizer,
               dtype=a.dtype, ctx=a.ctx, eps=a.eps)
    print(f"convert_seed: wrote {a.output}: D={hp['n_embd']} F={hp['n_ff']} L={hp['n_layer']} "
          f"K={hp['n_filters']} V={hp['n_vocab']} out={hp['n_out']} dtype={a.dtype}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
