#!/usr/bin/env python3
"""Convert a Hugging Face transformers FNet checkpoint directory to an `fnet` GGUF.

    python3 tools/convert/convert_fnet.py CHECKPOINT_DIR -o model.gguf [--dtype f32|f16]
                                  [--name NAME] [--pooling cls|mean|last|none]

CHECKPOINT_DIR holds config.json and model.safetensors (read with numpy
alone) or pytorch_model.bin (needs torch), and optionally
spiece.model (needs the `sentencepiece` package). Nothing is downloaded.

The checkpoint may be an FNetModel (keys `embeddings.*`, `encoder.*`,
`pooler.*`) or a model with heads (keys prefixed `fnet.`; the heads, e.g.
`cls.*`, are dropped). Key mapping (HF -> GGUF; GGUF shapes in ggml order,
i.e. numpy shapes reversed):

    embeddings.word_embeddings.weight (V, D)         -> token_embd.weight [D, V]
    embeddings.position_embeddings.weight (P, D)     -> position_embd.weight [D, P]
    embeddings.token_type_embeddings.weight (TT, D)  -> token_types.weight [D, TT]
    embeddings.LayerNorm.weight/bias                 -> token_embd_norm.weight/bias
    embeddings.projection.weight (D, D)/bias         -> token_embd_proj.weight/bias
    encoder.layer.N.fourier.output.LayerNorm.*       -> blk.N.mix_norm.weight/bias
    encoder.layer.N.intermediate.dense.weight (F, D) -> blk.N.ffn_up.weight [D, F] (+ .bias)
    encoder.layer.N.output.dense.weight (D, F)       -> blk.N.ffn_down.weight [F, D] (+ .bias)
    encoder.layer.N.output.LayerNorm.*               -> blk.N.ffn_norm.weight/bias
    pooler.dense.weight/bias (optional)              -> pooler.weight/bias (cls pooling
                                                        gives pooler_output)

Hyperparameters come from config.json: hidden_size, intermediate_size,
num_hidden_layers, max_position_embeddings, layer_norm_eps, hidden_act
(gelu_new or gelu). use_tpu_fourier_optimizations computes the same DFT and
is accepted.

Tokenizer: with spiece.model the SentencePiece pieces, scores and types are
written as tokenizer.ggml.model = "llama" (plus [CLS]/[SEP] as BOS/EOS,
both added), with the model's normalizer (NormalizerSpec, read from the
protobuf directly): tokenizer.ggml.precompiled_charsmap (nmt_nfkc for FNet),
add_space_prefix and remove_extra_whitespaces. Without it a "bytes"
placeholder is written and a warning is printed (token ids must then be
passed to the runtime directly).

With --dtype f16 the matrices are stored as F16; 1-D tensors stay F32.
Every problem (missing, unexpected or misshaped tensor, unsupported config)
is listed and the exit status is 2.
"""
from __future__ import annotations

import argparse
import os
import sys

import numpy as np

from checkpoint import ConvertError, read_checkpoint_dir
from gguf_tensors import POOLING_IDS, add_llama_tokenizer, add_tensors, finish

ARCH = "fnet"
# SentencePiece piece types -> llama.cpp token types
SPM_TYPE = {"normal": 1, "unknown": 2, "control": 3, "user_defined": 4, "unused": 5, "byte": 6}


def map_checkpoint(cfg: dict, sd: dict) -> tuple[dict, dict]:
    """-> (gguf tensors {name: numpy array in numpy shape}, hparams). Raises ConvertError."""
    problems = []

    def need_int(key):
        v = cfg.get(key)
        if not isinstance(v, int) or isinstance(v, bool) or v <= 0:
            problems.append(f"config.json: {key} must be a positive integer (got {v!r})")
            return 1
        return v

    D = need_int("hidden_size")
    F = need_int("intermediate_size")
    L = need_int("num_hidden_layers")
    P = need_int("max_position_embeddings")
    eps = cfg.get("layer_norm_eps", 1e-12)
    if not isinstance(eps, (int, float)) or not eps > 0:
        problems.append(f"config.json: layer_norm_eps must be > 0 (got {eps!r})")
        eps = 1e-12
    act = cfg.get("hidden_act", "gelu_new")
    if act not in ("gelu_new", "gelu"):
        problems.append(f"config.json: hidden_act {act!r} is not supported (gelu_new, gelu)")

    # Strip the model prefix of checkpoints with heads.
    if any(k.startswith("fnet.") for k in sd):
        sd = {k[len("fnet."):]: v for k, v in sd.items() if k.startswith("fnet.")}

    mapping = {
        "embeddings.word_embeddings.weight": ("token_embd.weight", (None, D)),
        "embeddings.position_embeddings.weight": ("position_embd.weight", (P, D)),
        "embeddings.token_type_embeddings.weight": ("token_types.weight", (None, D)),
        "embeddings.LayerNorm.weight": ("token_embd_norm.weight", (D,)),
        "embeddings.LayerNorm.bias": ("token_embd_norm.bias", (D,)),
        "embeddings.projection.weight": ("token_embd_proj.weight", (D, D)),
        "embeddings.projection.bias": ("token_embd_proj.bias", (D,)),
    }
    for n in range(L):
        p = f"encoder.layer.{n}."
        mapping.update({
            p + "fourier.output.LayerNorm.weight": (f"blk.{n}.mix_norm.weight", (D,)),
            p + "fourier.output.LayerNorm.bias": (f"blk.{n}.mix_norm.bias", (D,)),
            p + "intermediate.dense.weight": (f"blk.{n}.ffn_up.weight", (F, D)),
            p + "intermediate.dense.bias": (f"blk.{n}.ffn_up.bias", (F,)),
            p + "output.dense.weight": (f"blk.{n}.ffn_down.weight", (D, F)),
            p + "output.dense.bias": (f"blk.{n}.ffn_down.bias", (D,)),
            p + "output.LayerNorm.weight": (f"blk.{n}.ffn_norm.weight", (D,)),
            p + "output.LayerNorm.bias": (f"blk.{n}.ffn_norm.bias", (D,)),
        })
    optional = {
        "pooler.dense.weight": ("pooler.weight", (D, D)),
        "pooler.dense.bias": ("pooler.bias", (D,)),
    }
    # Non-parameter buffers some versions save.
    ignored = {"embeddings.position_ids", "embeddings.token_type_ids"}

    out = {}
    for key, (name, shape) in list(mapping.items()) + list(optional.items()):
        if key not in sd:
            if key in mapping:
                problems.append(f"missing tensor {key}")
            continue
        a = sd[key]
        ok = a.ndim == len(shape) and all(s is None or s == g for s, g in zip(shape, a.shape))
        if not ok:
            problems.append(f"{key}: shape {tuple(a.shape)}, expected "
                            f"{tuple('*' if s is None else s for s in shape)}")
            continue
        out[name] = np.ascontiguousarray(a, dtype=np.float32)
    known = set(mapping) | set(optional) | ignored
    extra = sorted(k for k in sd if k not in known and not k.startswith(("cls.", "heads.")))
    for k in extra:
        problems.append(f"unexpected tensor {k}")
    if ("pooler.weight" in out) != ("pooler.bias" in out):
        problems.append("pooler.dense.weight and pooler.dense.bias must come together")
    if problems:
        raise ConvertError("\n".join(problems))
    V = out["token_embd.weight"].shape[0]
    hp = dict(n_embd=D, n_ff=F, n_layer=L, n_ctx=P, eps=float(eps), act=act, n_vocab=V)
    return out, hp


def pb_fields(buf: bytes):
    """Yields (field number, wire type, value) of a serialized protobuf message:
    an int for varints, bytes otherwise. Enough to read a SentencePiece
    ModelProto without the protobuf package."""
    def varint(i):
        r = shift = 0
        while True:
            if i >= len(buf) or shift > 63:
                raise ConvertError("spiece.model: malformed protobuf (varint)")
            c = buf[i]
            i += 1
            r |= (c & 0x7F) << shift
            shift += 7
            if c < 0x80:
                return r, i

    i = 0
    while i < len(buf):
        key, i = varint(i)
        field, wt = key >> 3, key & 7
        if wt == 0:
            v, i = varint(i)
        elif wt == 1 or wt == 5:
            n = 8 if wt == 1 else 4
            v, i = buf[i:i + n], i + n
        elif wt == 2:
            n, i = varint(i)
            v, i = buf[i:i + n], i + n
        else:
            raise ConvertError(f"spiece.model: unsupported protobuf wire type {wt}")
        if i > len(buf):
            raise ConvertError("spiece.model: truncated protobuf")
        yield field, wt, v


def spm_normalizer_spec(proto: bytes) -> dict:
    """NormalizerSpec (ModelProto field 3) of a serialized SentencePiece model,
    with the proto2 defaults for absent fields."""
    spec = {"name": "", "precompiled_charsmap": b"", "add_dummy_prefix": True,
            "remove_extra_whitespaces": True, "escape_whitespaces": True}
    names = {1: "name", 2: "precompiled_charsmap", 3: "add_dummy_prefix",
             4: "remove_extra_whitespaces", 5: "escape_whitespaces"}
    for field, wt, v in pb_fields(proto):
        if field != 3 or wt != 2:
            continue
        for f, w, x in pb_fields(v):  # repeated occurrences merge, as protobuf does
            if f in (1, 2) and w == 2:
                spec[names[f]] = x.decode("utf-8", "replace") if f == 1 else bytes(x)
            elif f in (3, 4, 5) and w == 0:
                spec[names[f]] = bool(x)
    return spec


def spm_vocab(path: str, cfg: dict):
    """-> (tokens, scores, types, special ids, normalizer spec) from a SentencePiece model."""
    try:
        import sentencepiece as spm
    except ImportError as e:
        raise ConvertError(f"reading {path} needs the sentencepiece package ({e})") from e
    sp = spm.SentencePieceProcessor()
    if not sp.Load(path):
        raise ConvertError(f"{path}: not a SentencePiece model")
    tokens, scores, types = [], [], []
    for i in range(sp.GetPieceSize()):
        tokens.append(sp.IdToPiece(i))
        scores.append(float(sp.GetScore(i)))
        t = 1
        if sp.IsUnknown(i):
            t = 2
        elif sp.IsControl(i):
            t = 3
        elif sp.IsUnused(i):
            t = 5
        elif sp.IsByte(i):
            t = 6
        types.append(t)
    ids = {p: i for i, p in enumerate(tokens)}
    special = {"unk": sp.unk_id() if sp.unk_id() >= 0 else None,
               "cls": ids.get("[CLS]"), "sep": ids.get("[SEP]")}
    # FNet's tokenizer marks [CLS]/[SEP]/[MASK] as user-defined; they are control tokens.
    for k in ("[CLS]", "[SEP]", "[MASK]", "<pad>"):
        if k in ids:
            types[ids[k]] = 3
    norm = spm_normalizer_spec(sp.serialized_model_proto())
    if not norm["escape_whitespaces"]:
        print(f"warning: {path} has escape_whitespaces=false, which the runtime does not "
              "support (spaces will become U+2581)", file=sys.stderr)
    return tokens, scores, types, special, norm


def write_gguf(path: str, tensors: dict, hp: dict, *, name: str, pooling: str, dtype: str,
               vocab) -> None:
    import gguf
    wr = gguf.GGUFWriter(path, ARCH)
    wr.add_string("general.name", name)
    wr.add_uint32(f"{ARCH}.embedding_length", hp["n_embd"])
    wr.add_uint32(f"{ARCH}.feed_forward_length", hp["n_ff"])
    wr.add_uint32(f"{ARCH}.block_count", hp["n_layer"])
    wr.add_uint32(f"{ARCH}.context_length", hp["n_ctx"])
    wr.add_float32(f"{ARCH}.attention.layer_norm_epsilon", hp["eps"])
    wr.add_uint32(f"{ARCH}.pooling_type", POOLING_IDS[pooling])
    wr.add_string(f"{ARCH}.hidden_act", hp["act"])
    if vocab is None:
        wr.add_string("tokenizer.ggml.model", "bytes")
    else:
        tokens, scores, types, special, norm = vocab
        # FNet's [CLS] and [SEP] are its sentencepiece model's BOS and EOS;
        # its normalizer is nmt_nfkc.
        add_llama_tokenizer(wr, tokens, scores, types, bos=special["cls"], eos=special["sep"],
                            unk=special["unk"], add_bos=special["cls"] is not None,
                            add_eos=special["sep"] is not None, normalizer=norm)
    add_tensors(wr, tensors, dtype)
    finish(wr)


def convert(ckpt: str, output: str, *, name: str | None = None, pooling: str = "cls",
            dtype: str = "f32") -> dict:
    cfg, sd = read_checkpoint_dir(ckpt)
    tensors, hp = map_checkpoint(cfg, sd)
    spiece = os.path.join(ckpt, "spiece.model")
    vocab = None
    if os.path.exists(spiece):
        vocab = spm_vocab(spiece, cfg)
        if len(vocab[0]) > hp["n_vocab"]:
            raise ConvertError(f"spiece.model has {len(vocab[0])} pieces but the embedding has "
                               f"{hp['n_vocab']} rows")
    else:
        if hp["n_vocab"] < 256:
            raise ConvertError("no spiece.model and fewer than 256 embedding rows: the bytes "
                               "placeholder tokenizer needs >= 256")
        print(f"warning: {ckpt} has no spiece.model; writing a 'bytes' placeholder tokenizer "
              "(pass token ids to spectral_encode directly)", file=sys.stderr)
    write_gguf(output, tensors, hp, name=name or os.path.basename(os.path.normpath(ckpt)),
               pooling=pooling, dtype=dtype, vocab=vocab)
    return hp


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("checkpoint", help="directory with config.json and the weights")
    ap.add_argument("-o", "--output", required=True)
    ap.add_argument("--name", default=None, help="general.name (default: the directory name)")
    ap.add_argument("--pooling", choices=list(POOLING_IDS), default="cls",
                    help="default pooling recorded in the file (cls = pooler_output when the "
                         "checkpoint has a pooler, else h[0])")
    ap.add_argument("--dtype", choices=["f32", "f16"], default="f32")
    a = ap.parse_args(argv)
    try:
        hp = convert(a.checkpoint, a.output, name=a.name, pooling=a.pooling, dtype=a.dtype)
    except ConvertError as e:
        print(f"convert_fnet: {e}", file=sys.stderr)
        return 2
    print(f"wrote {a.output}: D={hp['n_embd']} F={hp['n_ff']} L={hp['n_layer']} "
          f"V={hp['n_vocab']} ctx={hp['n_ctx']} act={hp['act']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
