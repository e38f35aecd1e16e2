#!/usr/bin/env python3
"""Convert an M2-BERT (Monarch Mixer BERT) checkpoint directory to an `m2bert` GGUF.

    python3 tools/convert/convert_m2bert.py CHECKPOINT_DIR --vocab VOCAB.txt -o OUT.gguf
                                            [--dtype f32|f16|bf16] [--name NAME]
                                            [--pooling cls|mean|last|none]

CHECKPOINT_DIR holds what the published repositories hold
(togethercomputer/m2-bert-80M-{2k,8k,32k}-retrieval): config.json and
model.safetensors or pytorch_model.bin (needs torch),
with the reference code's (HazyResearch/m2, bert/src/bert_layers.py) state
dict keys, with or without the `bert.` prefix of the models with heads;
heads (`classifier.*`, `cls.*`) are dropped with a note. VOCAB.txt is the
WordPiece vocabulary, one token a line (the models use bert-base-uncased's
30,522 tokens); it becomes the `bert` tokenizer (lower-casing, [CLS] text
[SEP]). Nothing is downloaded.

Key mapping (reference -> GGUF; GGUF shapes in ggml order, numpy's reversed):

    embeddings.word_embeddings.weight (V, D)            -> token_embd.weight [D, V]
    embeddings.position_embeddings.weight (P, D)        -> position_embd.weight [D, P]
    embeddings.token_type_embeddings.weight (TT, D)     -> token_types.weight [D, TT] (row 0 used)
    embeddings.LayerNorm.weight/bias                    -> token_embd_norm.weight/bias
    encoder.layer.N.attention.in_linear.weight/bias     -> blk.N.mix_in.weight [D, 3D] / .bias
    encoder.layer.N.attention.short_filter.weight (3D, 1, 3) / bias -> blk.N.mix_conv.weight [3, 3D] / .bias
    encoder.layer.N.attention.out_linear.weight/bias    -> blk.N.mix_out.weight [D, D] / .bias
    encoder.layer.N.attention.filter_fn.X               -> blk.N.hyena.X'   (long convolution of v)
    encoder.layer.N.attention.filter_fn2.X              -> blk.N.hyena_res.X' (residual long convolution)
        bias (D)                                        -> .bias
        pos_emb.z (1, l_max, E) / pos_emb.t (1, l_max, 1) -> .pos_z [E, l_max] / .pos_t [l_max]
        modulation.deltas (1, 1, D)                     -> .decay [D]
        implicit_filter.0 / .2 / .4 (Linear)            -> .fwd_in / .fwd_mid1 / .fwd_mid2 .weight/.bias
        implicit_filter.1/.3/.5.freq (1, order) each    -> .fwd_freq [order, 3]
        implicit_filter.6.weight (D, order)             -> .fwd_out.weight [order, D]
        implicit_filter_rev.*                           -> .rev_* likewise
    encoder.layer.N.mlp.gated_layers.weight (nb, 2F/nb, D/nb) -> blk.N.ffn_gate.weight [D/nb, 2F]
    encoder.layer.N.mlp.wo.weight (nb, D/nb, F/nb) / bias     -> blk.N.ffn_down.weight [F/nb, D] / .bias
    encoder.layer.N.mlp.layernorm.weight/bias           -> blk.N.ffn_norm.weight/bias
    pooler.dense.weight/bias                            -> pooler.weight/bias (cls pooling)

With --dtype f16 or bf16 the matrices are stored so, except the implicit filters'
(blk.N.hyena*, small, and too sensitive to rounding: see write_gguf); vectors stay F32.

A block-diagonal (Monarch) weight's blocks are stored one after the other, so
the file's 2-D matrix is the blocks stacked along the output dimension (the
CPU runs them as one GEMM per block on column slices of the input); a dense
nn.Linear MLP (use_monarch_mlp false) is the same with one block.

Hyperparameters come from config.json and are checked against the tensors.
Configurations the runtime does not implement are refused by name:
monarch_mixer_sequence_mixing false (attention layers), hyena_training_additions,
use_flash_mm, bidirectional false, residual_long_conv false, use_glu_mlp false,
use_positional_encodings false, pool_all, sequence_token_planting,
attention_pooling. use_cls_token makes `cls` the first token's state (the
pooler is dropped, as the reference's sentence_embedding then skips it).
Every problem is listed and the exit status is 2.
"""
from __future__ import annotations

import argparse
import os
import sys

import numpy as np

from checkpoint import ConvertError, read_checkpoint_dir
from gguf_tensors import BERT_SPECIAL, DTYPES, POOLING_IDS, add_bert_tokenizer, add_tensors, finish

ARCH = "m2bert"

# config.json keys whose other values select code the runtime does not have:
# key -> (reference default, the value we implement)
REQUIRED_FLAGS = {
    "monarch_mixer_sequence_mixing": (False, True),
    "bidirectional": (True, True),
    "residual_long_conv": (False, True),
    "use_glu_mlp": (True, True),
    "use_positional_encodings": (False, True),
    "hyena_training_additions": (False, False),
    "use_flash_mm": (False, False),
    "pool_all": (False, False),
    "sequence_token_planting": (False, False),
    "attention_pooling": (False, False),
}
# Used only in training or loading (dropout, learning rates, initialisation,
# FlashFFTConv's bf16 kernel for the same maths); noted, not stored.
IGNORED_CONFIG = ("hyena_filter_dropout", "hidden_dropout_prob", "hyena_w", "hyena_wd",
                  "hyena_lr_pos_emb", "long_conv_kernel_learning_rate", "use_flash_fft",
                  "expand_positional_embeddings", "use_normalized_embeddings")


def _flag_problems(cfg: dict) -> list:
    problems = []
    for key, (default, want) in REQUIRED_FLAGS.items():
        v = cfg.get(key, default)
        if bool(v) != want:
            problems.append(f"config.json: {key} = {v!r} is not supported (only {want})")
    return problems


def strip_prefix(sd: dict) -> tuple[dict, list]:
    """Drops the model-with-heads prefix and the heads; -> (state dict, notes)."""
    notes = []
    for prefix in ("model.bert.", "bert."):
        if any(k.startswith(prefix) for k in sd):
            heads = sorted({k.split(".")[0] if not k.startswith("model.") else k.split(".")[1]
                            for k in sd if not k.startswith(prefix)})
            if heads:
                notes.append(f"dropped the heads: {', '.join(heads)}")
            sd = {k[len(prefix):]: v for k, v in sd.items() if k.startswith(prefix)}
            break
    return sd, notes


def map_checkpoint(cfg: dict, sd: dict) -> tuple[dict, dict, list]:
    """-> (gguf tensors {name: numpy array in numpy shape}, hparams, notes). Raises ConvertError."""
    problems = _flag_problems(cfg)
    notes = []

    def need_int(key, default=None):
        v = cfg.get(key, default)
        if not isinstance(v, int) or isinstance(v, bool) or v <= 0:
            problems.append(f"config.json: {key} must be a positive integer (got {v!r})")
            return 1
        return v

    D = need_int("hidden_size")
    F = need_int("intermediate_size")
    L = need_int("num_hidden_layers")
    P = need_int("max_position_embeddings")
    l_max = need_int("long_conv_l_max")
    E = need_int("hyena_emb_dim", 3)
    order = need_int("hyena_filter_order", 64)
    nb = need_int("monarch_mlp_nblocks", 4) if cfg.get("use_monarch_mlp", False) else 1
    pad_id = cfg.get("pad_token_id", 0)
    if not isinstance(pad_id, int) or isinstance(pad_id, bool) or pad_id < 0:
        problems.append(f"config.json: pad_token_id must be a non-negative integer (got {pad_id!r})")
        pad_id = 0
    eps = cfg.get("layer_norm_eps", 1e-12)
    if not isinstance(eps, (int, float)) or isinstance(eps, bool) or not eps > 0:
        problems.append(f"config.json: layer_norm_eps must be > 0 (got {eps!r})")
        eps = 1e-12
    w_mod = cfg.get("hyena_w_mod", 1)
    if not isinstance(w_mod, (int, float)) or isinstance(w_mod, bool) or not np.isfinite(w_mod):
        problems.append(f"config.json: hyena_w_mod must be a number (got {w_mod!r})")
        w_mod = 1
    if D % nb or F % nb:
        problems.append(f"config.json: monarch_mlp_nblocks = {nb} must divide hidden_size {D} "
                        f"and intermediate_size {F}")
    if cfg.get("use_cls_token", False):
        notes.append("use_cls_token: cls pooling is the first token's state (pooler dropped)")
    for k in IGNORED_CONFIG:
        if k in cfg:
            notes.append(f"config.json: {k} does not change inference; ignored")

    sd, n = strip_prefix(sd)
    notes += n
    db, fb = D // max(nb, 1), F // max(nb, 1)
    # reference key -> (gguf name, expected numpy shape (None = any), reshape to)
    mapping = {
        "embeddings.word_embeddings.weight": ("token_embd.weight", (None, D)),
        "embeddings.position_embeddings.weight": ("position_embd.weight", (P, D)),
        "embeddings.token_type_embeddings.weight": ("token_types.weight", (None, D)),
        "embeddings.LayerNorm.weight": ("token_embd_norm.weight", (D,)),
        "embeddings.LayerNorm.bias": ("token_embd_norm.bias", (D,)),
    }
    reshape = {}
    for i in range(L):
        p, g = f"encoder.layer.{i}.", f"blk.{i}."
        mapping.update({
            p + "attention.in_linear.weight": (g + "mix_in.weight", (3 * D, D)),
            p + "attention.in_linear.bias": (g + "mix_in.bias", (3 * D,)),
            p + "attention.short_filter.weight": (g + "mix_conv.weight", (3 * D, 1, 3)),
            p + "attention.short_filter.bias": (g + "mix_conv.bias", (3 * D,)),
            p + "attention.out_linear.weight": (g + "mix_out.weight", (D, D)),
            p + "attention.out_linear.bias": (g + "mix_out.bias", (D,)),
            p + "mlp.wo.bias": (g + "ffn_down.bias", (D,)),
            p + "mlp.layernorm.weight": (g + "ffn_norm.weight", (D,)),
            p + "mlp.layernorm.bias": (g + "ffn_norm.bias", (D,)),
        })
        reshape[g + "mix_conv.weight"] = (3 * D, 3)
        if nb > 1:
            mapping[p + "mlp.gated_layers.weight"] = (g + "ffn_gate.weight", (nb, 2 * fb, db))
            mapping[p + "mlp.wo.weight"] = (g + "ffn_down.weight", (nb, db, fb))
        else:
            mapping[p + "mlp.gated_layers.weight"] = (g + "ffn_gate.weight", (2 * F, D))
            mapping[p + "mlp.wo.weight"] = (g + "ffn_down.weight", (D, F))
        reshape[g + "ffn_gate.weight"] = (2 * F, db)
        reshape[g + "ffn_down.weight"] = (D, fb)
        for ref, ours in (("filter_fn", "hyena"), ("filter_fn2", "hyena_res")):
            fp, fg = f"{p}attention.{ref}.", f"{g}{ours}."
            mapping.update({
                fp + "bias": (fg + "bias", (D,)),
                fp + "pos_emb.z": (fg + "pos_z", (1, l_max, E)),
                fp + "pos_emb.t": (fg + "pos_t", (1, l_max, 1)),
                fp + "modulation.deltas": (fg + "decay", (1, 1, D)),
            })
            reshape[fg + "pos_z"] = (l_max, E)
            reshape[fg + "pos_t"] = (l_max,)
            reshape[fg + "decay"] = (D,)
            for seq, d in (("implicit_filter.", "fwd_"), ("implicit_filter_rev.", "rev_")):
                for idx, name, shape in ((0, "in", (order, E)), (2, "mid1", (order, order)),
                                         (4, "mid2", (order, order))):
                    mapping[f"{fp}{seq}{idx}.weight"] = (f"{fg}{d}{name}.weight", shape)
                    mapping[f"{fp}{seq}{idx}.bias"] = (f"{fg}{d}{name}.bias", (order,))
                mapping[f"{fp}{seq}6.weight"] = (f"{fg}{d}out.weight", (D, order))
                for j, idx in enumerate((1, 3, 5)):
                    mapping[f"{fp}{seq}{idx}.freq"] = (f"{fg}{d}freq#{j}", (1, order))
    optional = {
        "pooler.dense.weight": ("pooler.weight", (D, D)),
        "pooler.dense.bias": ("pooler.bias", (D,)),
    }
    ignored = {"embeddings.position_ids", "embeddings.token_type_ids"}

    out, freqs = {}, {}
    for key, (name, shape) in list(mapping.items()) + list(optional.items()):
        if key not in sd:
            if key.endswith("pos_emb.t") and key.replace("pos_emb.t", "pos_emb.z") in sd:
                out[name] = torch_linspace01(l_max)
                notes.append(f"{key} absent: linspace(0, 1, {l_max}) as the reference builds it")
            elif key in mapping:
                problems.append(f"missing tensor {key}")
            continue
        a = np.asarray(sd[key], dtype=np.float32)
        ok = a.ndim == len(shape) and all(s is None or s == d for s, d in zip(shape, a.shape))
        if not ok:
            problems.append(f"{key}: shape {tuple(a.shape)}, expected "
                            f"{tuple('*' if s is None else s for s in shape)}")
            continue
        if "#" in name:
            base, j = name.split("#")
            freqs.setdefault(base, [None] * 3)[int(j)] = a.reshape(order)
            continue
        out[name] = np.ascontiguousarray(a.reshape(reshape.get(name, a.shape)))
    for base, rows in freqs.items():
        if all(r is not None for r in rows):
            out[base] = np.stack(rows)  # (3, order): the three Sin activations' frequencies
    if cfg.get("use_cls_token", False):
        out.pop("pooler.weight", None)
        out.pop("pooler.bias", None)
    known = set(mapping) | set(optional) | ignored
    heads = ("classifier.", "cls.", "dropout.")
    extra = sorted(k for k in sd if k not in known and not k.startswith(heads))
    problems += [f"unexpected tensor {k}" for k in extra]
    if ("pooler.weight" in out) != ("pooler.bias" in out):
        problems.append("pooler.dense.weight and pooler.dense.bias must come together")
    if "position_embd.weight" in out and l_max != P:
        problems.append(f"config.json: long_conv_l_max = {l_max} differs from "
                        f"max_position_embeddings = {P}")
    if problems:
        raise ConvertError("\n".join(problems))
    V = out["token_embd.weight"].shape[0]
    if pad_id >= V:
        raise ConvertError(f"config.json: pad_token_id {pad_id} is outside the vocabulary ({V})")
    hp = dict(n_embd=D, n_ff=F, n_layer=L, n_ctx=P, eps=float(eps), n_vocab=V, n_blocks=nb,
              emb_dim=E, order=order, l_max=l_max, w_mod=float(w_mod), pad_id=pad_id)
    return out, hp, notes


def torch_linspace01(n: int) -> np.ndarray:
    """The reference's t = torch.linspace(0, 1, n) (float32), with torch when it is there."""
    try:
        import torch
        return torch.linspace(0, 1, n).numpy()
    except ImportError:
        return np.linspace(0, 1, n, dtype=np.float64).astype(np.float32)


def read_vocab(path: str) -> list:
    try:
        with open(path, encoding="utf-8") as f:
            toks = [ln.rstrip("\r\n") for ln in f]
    except (OSError, UnicodeDecodeError) as e:
        raise ConvertError(f"{path}: {e}") from e
    while toks and toks[-1] == "":
        toks.pop()
    missing = [s for s in BERT_SPECIAL if s not in toks]
    if not toks or missing:
        raise ConvertError(f"{path}: not a WordPiece vocabulary (missing {', '.join(missing) or 'tokens'})")
    return toks


def write_gguf(path: str, tensors: dict, hp: dict, toks: list, *, name: str, pooling: str,
               dtype: str) -> None:
    import gguf
    wr = gguf.GGUFWriter(path, ARCH)
    wr.add_string("general.name", name)
    wr.add_uint32(f"{ARCH}.embedding_length", hp["n_embd"])
    wr.add_uint32(f"{ARCH}.feed_forward_length", hp["n_ff"])
    wr.add_uint32(f"{ARCH}.block_count", hp["n_layer"])
    wr.add_uint32(f"{ARCH}.context_length", hp["n_ctx"])
    wr.add_float32(f"{ARCH}.attention.layer_norm_epsilon", hp["eps"])
    wr.add_uint32(f"{ARCH}.pooling_type", POOLING_IDS[pooling])
    wr.add_uint32(f"{ARCH}.pad_token_id", hp["pad_id"])
    wr.add_uint32(f"{ARCH}.ffn.n_blocks", hp["n_blocks"])
    wr.add_bool(f"{ARCH}.ffn.glu", True)
    wr.add_uint32(f"{ARCH}.hyena.emb_dim", hp["emb_dim"])
    wr.add_uint32(f"{ARCH}.hyena.filter_order", hp["order"])
    wr.add_uint32(f"{ARCH}.hyena.l_max", hp["l_max"])
    wr.add_float32(f"{ARCH}.hyena.w_mod", hp["w_mod"])
    wr.add_bool(f"{ARCH}.hyena.bidirectional", True)
    wr.add_bool(f"{ARCH}.hyena.residual_long_conv", True)
    add_bert_tokenizer(wr, toks)  # bert-base-uncased: lower-cased, accents stripped
    for name, a in tensors.items():
        # The implicit filters stay F32: their Sin layers multiply rounding errors about
        # tenfold each (F16 there moved a test model's output by 160%), and they are small.
        add_tensors(wr, {name: a}, "f32" if ".hyena" in name else dtype)
    finish(wr)


def convert(ckpt: str, vocab: str, output: str, *, name: str | None = None, pooling: str = "cls",
            dtype: str = "f32", quiet: bool = False) -> dict:
    cfg, sd = read_checkpoint_dir(ckpt)
    tensors, hp, notes = map_checkpoint(cfg, sd)
    toks = read_vocab(vocab)
    if len(toks) > hp["n_vocab"]:
        raise ConvertError(f"{vocab} has {len(toks)} tokens but the embedding has {hp['n_vocab']} rows")
    if toks.index("[PAD]") != hp["pad_id"]:
        raise ConvertError(f"{vocab}: [PAD] is token {toks.index('[PAD]')} but config.json's "
                           f"pad_token_id is {hp['pad_id']}")
    if not quiet:
        for n in notes:
            print(f"note: {n}", file=sys.stderr)
    write_gguf(output, tensors, hp, toks, name=name or os.path.basename(os.path.normpath(ckpt)),
               pooling=pooling, dtype=dtype)
    return hp


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("checkpoint", help="directory with config.json and the weights")
    ap.add_argument("--vocab", required=True, help="WordPiece vocab.txt (bert-base-uncased's)")
    ap.add_argument("-o", "--output", required=True)
    ap.add_argument("--name", default=None, help="general.name (default: the directory name)")
    ap.add_argument("--pooling", choices=list(POOLING_IDS), default="cls",
                    help="default pooling recorded in the file (cls = the pooler, the reference's "
                         "sentence_embedding)")
    ap.add_argument("--dtype", choices=list(DTYPES), default="f32",
                    help="matrices as F32, F16 or BF16 (vectors stay F32); spectral-quantize "
                         "makes Q8_0/Q4_0 files from any of them")
    a = ap.parse_args(argv)
    try:
        hp = convert(a.checkpoint, a.vocab, a.output, name=a.name, pooling=a.pooling, dtype=a.dtype)
    except ConvertError as e:
        print(f"convert_m2bert: {e}", file=sys.stderr)
        return 2
    print(f"wrote {a.output}: D={hp['n_embd']} F={hp['n_ff']} L={hp['n_layer']} V={hp['n_vocab']} "
          f"ctx={hp['n_ctx']} blocks={hp['n_blocks']} hyena order={hp['order']} emb={hp['emb_dim']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
