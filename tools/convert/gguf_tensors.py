#!/usr/bin/env python3
"""The one GGUF writing module of the Python tools (converters, model and fixture generators, the
distiller): how tensors are stored for each --dtype, and how a file is finished.

    import gguf_tensors as gt
    wr = gguf.GGUFWriter(path, arch)
    ...keys...
    stored = gt.add_tensors(wr, {"token_embd.weight": emb, ...}, dtype="f16")
    gt.finish(wr)

Tensors are numpy arrays in numpy shape order (the reverse of ggml's ne). By default only
matrices (2-D and up) take the file dtype; vectors (norms, biases) stay F32, as in every
converter of this project.
"""
import numpy as np

POOLING_IDS = {"none": 0, "mean": 1, "cls": 2, "last": 3}
DTYPES = ("f32", "f16", "bf16")


def to_bf16_bits(a: np.ndarray) -> np.ndarray:
    """float -> bf16 bit patterns (uint16), round to nearest even."""
    u = np.ascontiguousarray(a, dtype=np.float32).view(np.uint32).astype(np.uint64)
    u = (u + (0x7FFF + ((u >> 16) & 1))) >> 16
    return u.astype(np.uint16)


def add_tensors(wr, tensors: dict, dtype: str = "f32", all_tensors: bool = False) -> dict:
    """Adds the tensors to gguf.GGUFWriter wr, matrices as `dtype` (every tensor with
    all_tensors). Returns the values as stored, in float64, for references to compare with."""
    import gguf

    if dtype not in DTYPES:
        raise ValueError(f"unknown dtype {dtype} (f32, f16, bf16)")
    stored = {}
    for name, a in tensors.items():
        # float32 first, then the file type: the rounding every export of a model gets
        a = np.ascontiguousarray(a, dtype=np.float32)
        kind = dtype if (a.ndim >= 2 or all_tensors) else "f32"
        if kind == "bf16":
            bits = to_bf16_bits(a)
            wr.add_tensor(name, bits, raw_dtype=gguf.GGMLQuantizationType.BF16)
            stored[name] = (bits.astype(np.uint32) << 16).view(np.float32).astype(np.float64)
        else:
            arr = a.astype(np.float16) if kind == "f16" else a
            wr.add_tensor(name, arr)
            stored[name] = arr.astype(np.float64)
    return stored


def finish(wr) -> None:
    """Writes the header, the keys and the tensors added to wr, and closes the file."""
    wr.write_header_to_file()
    wr.write_kv_data_to_file()
    wr.write_tensors_to_file()
    wr.close()


def copy_gguf(src: str, dst: str, *, kv: dict | None = None, drop_kv=(), drop=(),
              replace: dict | None = None, store: dict | None = None) -> None:
    """Copies the GGUF file src to dst with edits (tests' broken variants, fixtures' re-encoded
    weights): kv sets keys (an existing key keeps its type; a new one is a string, bool, f32 for
    a float or u32 for an int), drop_kv and drop leave keys and tensors out, replace maps a
    tensor's name to fn(array) -> array (numpy shapes, float32), store maps a name to
    fn(array) -> (raw array, gguf.GGMLQuantizationType) to write it in another type. F16 tensors
    stay F16; other types are written as F32."""
    import gguf
    from gguf.quants import dequantize

    r = gguf.GGUFReader(src)
    w = gguf.GGUFWriter(dst, r.fields["general.architecture"].contents())
    kv = dict(kv or {})
    for name, f in r.fields.items():
        if name.startswith("GGUF.") or name == "general.architecture" or name in drop_kv:
            continue
        vtype = f.types[0]
        sub = f.types[-1] if vtype == gguf.GGUFValueType.ARRAY else None
        w.add_key_value(name, kv.pop(name, f.contents()), vtype, sub_type=sub)
    for name, v in kv.items():
        if isinstance(v, str):
            w.add_string(name, v)
        elif isinstance(v, bool):
            w.add_bool(name, v)
        elif isinstance(v, float):
            w.add_float32(name, v)
        else:
            w.add_uint32(name, v)
    for t in r.tensors:
        if t.name in drop:
            continue
        shape = [int(n) for n in reversed(t.shape)]
        a = dequantize(t.data, t.tensor_type).reshape(shape).astype(np.float32)
        a = (replace or {}).get(t.name, lambda x: x)(a)
        if store and t.name in store:
            raw, qtype = store[t.name](a)
            w.add_tensor(t.name, raw, raw_dtype=qtype)
        elif t.tensor_type == gguf.GGMLQuantizationType.F16:
            w.add_tensor(t.name, a.astype(np.float16))
        else:  # F32, and other types widened to it
            w.add_tensor(t.name, np.ascontiguousarray(a, dtype=np.float32))
    finish(w)


BERT_SPECIAL = ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]")


def add_bert_tokenizer(wr, tokens: list, *, lower_case: bool = True, strip_accents=None) -> None:
    """The `bert` (WordPiece) tokenizer keys the runtime reads (formats/tok_wordpiece.c): the
    vocabulary in id order, its five special tokens, lower-casing (and accent stripping when
    given)."""
    ids = {}
    for i, t in enumerate(tokens):
        ids.setdefault(t, i)
    wr.add_tokenizer_model("bert")
    wr.add_token_list(tokens)
    wr.add_token_types([3 if t in BERT_SPECIAL else 1 for t in tokens])
    wr.add_uint32("tokenizer.ggml.cls_token_id", ids["[CLS]"])
    wr.add_sep_token_id(ids["[SEP]"])  # tokenizer.ggml.seperator_token_id
    wr.add_unk_token_id(ids["[UNK]"])
    wr.add_pad_token_id(ids["[PAD]"])
    wr.add_mask_token_id(ids["[MASK]"])
    wr.add_bool("tokenizer.ggml.do_lower_case", lower_case)
    if strip_accents is not None:
        wr.add_bool("tokenizer.ggml.strip_accents", strip_accents)


def add_llama_tokenizer(wr, tokens: list, scores: list, types: list, *, bos=None, eos=None, unk=None,
                        add_bos: bool, add_eos: bool, normalizer: dict | None = None) -> None:
    """The `llama` (SentencePiece unigram) tokenizer keys (formats/tok_spm.c), with llama.cpp's
    key names. normalizer: sentencepiece's normalizer spec (precompiled_charsmap,
    add_dummy_prefix, remove_extra_whitespaces), when the model has one."""
    wr.add_tokenizer_model("llama")
    wr.add_token_list(tokens)
    wr.add_token_scores(scores)
    wr.add_token_types(types)
    if bos is not None:
        wr.add_bos_token_id(bos)
    if eos is not None:
        wr.add_eos_token_id(eos)
    if unk is not None:
        wr.add_unk_token_id(unk)
    wr.add_add_bos_token(add_bos)
    wr.add_add_eos_token(add_eos)
    if normalizer:
        if normalizer["precompiled_charsmap"]:
            wr.add_precompiled_charsmap(normalizer["precompiled_charsmap"])
        wr.add_add_space_prefix(normalizer["add_dummy_prefix"])
        wr.add_remove_extra_whitespaces(normalizer["remove_extra_whitespaces"])
