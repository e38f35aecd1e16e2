#!/usr/bin/env python3
"""Fuzz seeds with real tokenizers: tiny `spectralmlp` models whose GGUF also
carries a `bert` (WordPiece) or `llama` (SentencePiece) tokenizer, so the
fuzzer (tests/fuzz_gguf.c) starts from files that load and tokenize instead of
having to discover the tokenizer keys byte by byte.

    python3 tools/make_fuzz_seeds.py [--out DIR] [NAME ...]   # default: all, tests/data/fuzz_seeds

Needs `pip install numpy gguf sentencepiece`. Output is byte-identical on
every run (fixed training text, one trainer thread, seeded weights). The older
seeds in tests/data/fuzz_seeds/ (align64, all_types, meta_only, tensors_only,
spectralmlp_tiny) are not made here.

Seeds (each well under libFuzzer's -max_len=65536 of tools/test.sh):
  spectralmlp_bert.gguf   hand-written WordPiece vocabulary of a few dozen
      tokens ([PAD] [UNK] [CLS] [SEP] [MASK], words, "##" suffixes,
      punctuation, a CJK character), the special-id keys, do_lower_case and
      strip_accents; D = 8. Under 4 KiB, so CTest's fuzz_gguf_smoke
      (-max_len=4096) loads it whole.
  spectralmlp_llama.gguf  SentencePiece unigram model trained here on a few
      sentences, with a custom normalization_rule_tsv (RULES below: full-width
      letters to ASCII, a ligature, NBSP and ideographic space to ' ', a
      combining sequence composed, zero-width space dropped) so its
      precompiled_charsmap is about 1 KiB (the nmt_nfkc one is ~240 KB), one
      user-defined piece, no byte fallback (unknown runs become <unk>),
      add_space_prefix / remove_extra_whitespaces as the trainer set them,
      add_bos off and add_eos on; D = 4, no output norm. Under 4 KiB, for the
      smoke test too.
  spectralmlp_llama_bf.gguf  the same rules and text trained with
      byte_fallback (all 256 <0xNN> pieces, type 6), scores, types,
      add_bos on; D = 8. About 14 KiB.
  spectralmlp_lexical.gguf  a byte-level model (D = 4) with a 16-bucket lexical
      sketch, for the sketch's loader. About 7 KiB.
"""
from __future__ import annotations

import argparse
import io
import os
import sys
import tempfile

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
OUT = os.path.join(ROOT, "tests", "data", "fuzz_seeds")
ARCH = "spectralmlp"

# Training text for the SentencePiece seeds: fixed here (not the stdlib, as
# tools/make_tokenizer_fixtures.py uses) so the output does not depend on the
# Python version.
SPM_TEXT = [
    "the cat sat on the mat",
    "a dog and a cat",
    "hello world",
    "the end of the day",
    "caf\u00e9 na\u00efve r\u00e9sum\u00e9",
    "tokens and pieces",
    "spectral models mix tokens with an fft",
    "<usr> marks a user defined piece",
]

# normalization_rule_tsv: source code points TAB target code points (hex,
# space-separated; an empty target deletes). Few and short, to keep the
# precompiled charsmap small (~1.1 KiB) while still giving its trie shared
# prefixes (EF BC / EF BD), a two-character key (e + U+0301), an expansion
# (U+FB01 -> "fi") and a deletion (U+200B).
RULES = (
    ["%X\t%X" % (0xFF21 + i, 0x41 + i) for i in range(26)]    # ＡＢＣ -> ABC
    + ["%X\t%X" % (0xFF41 + i, 0x61 + i) for i in range(26)]  # ａｂｃ -> abc
    + ["FB01\t66 69",   # ﬁ -> fi
       "A0\t20",        # NBSP -> ' '
       "3000\t20",      # ideographic space -> ' '
       "65 301\tE9",    # e + combining acute -> é
       "200B\t"]        # zero-width space -> nothing
)

USER_PIECE = "<usr>"

# WordPiece vocabulary for the bert seed: ids are list positions.
BERT_VOCAB = (
    ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    + [".", ",", "!", "?", "'", "(", ")", "-"]
    + ["the", "cat", "sat", "on", "mat", "hello", "world", "cafe", "naive", "token", "piece",
       "spectral", "model", "un", "believ", "a", "b", "c", "e", "f", "l", "u"]
    + ["##s", "##ing", "##ed", "##able", "##er", "##ize", "##a", "##e", "##l"]
    + ["\u4e2d", "\u6587"]  # 中 文: CJK characters are split off one by one
)
BERT_SPECIAL = {"[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"}


def model_writer(path: str, name: str, n_vocab: int, dim: int, ffn: int, filters: int,
                 pooling: int, seed: int, output_norm: bool = True):
    """A GGUFWriter with a 1-layer random-weight spectralmlp of n_vocab rows
    (matrices F16, vectors F32, as tools/make_model.py --dtype f16); the
    caller adds the tokenizer keys and writes it out with finish()."""
    import gguf

    sys.path.insert(0, os.path.join(ROOT, "tools"))
    from make_model import make_weights

    w = gguf.GGUFWriter(path, ARCH)
    w.add_string("general.name", name)
    w.add_uint32(f"{ARCH}.embedding_length", dim)
    w.add_uint32(f"{ARCH}.feed_forward_length", ffn)
    w.add_uint32(f"{ARCH}.block_count", 1)
    w.add_uint32(f"{ARCH}.mixing.n_filters", filters)
    w.add_uint32(f"{ARCH}.context_length", 64)
    w.add_float32(f"{ARCH}.attention.layer_norm_epsilon", 1e-5)
    w.add_uint32(f"{ARCH}.pooling_type", pooling)
    for tname, a in make_weights(dim, ffn, 1, filters, n_vocab, output_norm, seed).items():
        w.add_tensor(tname, a.astype(np.float16 if a.ndim >= 2 else np.float32))
    return w


def finish(w, path: str):
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    print("wrote %s (%d bytes)" % (path, os.path.getsize(path)))


def make_bert(out: str):
    path = os.path.join(out, "spectralmlp_bert.gguf")
    ids = {s: i for i, s in enumerate(BERT_VOCAB)}
    assert len(ids) == len(BERT_VOCAB), "duplicate token"
    w = model_writer(path, "fuzz-bert", len(BERT_VOCAB), dim=8, ffn=8, filters=2, pooling=2, seed=11)
    w.add_tokenizer_model("bert")
    w.add_token_list(BERT_VOCAB)
    w.add_token_types([3 if s in BERT_SPECIAL else 1 for s in BERT_VOCAB])
    w.add_uint32("tokenizer.ggml.cls_token_id", ids["[CLS]"])
    w.add_sep_token_id(ids["[SEP]"])  # tokenizer.ggml.seperator_token_id
    w.add_unk_token_id(ids["[UNK]"])
    w.add_pad_token_id(ids["[PAD]"])
    w.add_mask_token_id(ids["[MASK]"])
    w.add_bool("tokenizer.ggml.do_lower_case", True)
    w.add_bool("tokenizer.ggml.strip_accents", True)
    finish(w, path)


def train_spm(byte_fallback: bool):
    """-> (serialized ModelProto, SentencePieceProcessor)."""
    import sentencepiece as spm

    with tempfile.TemporaryDirectory() as tmp:
        tsv = os.path.join(tmp, "rules.tsv")
        with open(tsv, "w", encoding="ascii") as f:
            f.write("\n".join(RULES) + "\n")
        model = io.BytesIO()
        spm.SentencePieceTrainer.train(
            sentence_iterator=iter(SPM_TEXT * 50),
            model_writer=model,
            model_type="unigram",
            # With byte_fallback the 256 byte pieces count too; the limit is
            # soft so the trainer stops at what this little text supports.
            vocab_size=300 if byte_fallback else 36,
            hard_vocab_limit=False,
            byte_fallback=byte_fallback,
            normalization_rule_tsv=tsv,
            remove_extra_whitespaces=True,
            add_dummy_prefix=True,
            user_defined_symbols=[USER_PIECE],
            character_coverage=1.0,
            num_threads=1,
            minloglevel=2,
        )
    proto = model.getvalue()
    return proto, spm.SentencePieceProcessor(model_proto=proto)


def make_llama(out: str, byte_fallback: bool):
    sys.path.insert(0, os.path.join(ROOT, "tools"))
    from convert_fnet import spm_normalizer_spec
    from make_tokenizer_fixtures import piece_types

    name = "spectralmlp_llama_bf" if byte_fallback else "spectralmlp_llama"
    path = os.path.join(out, name + ".gguf")
    proto, sp = train_spm(byte_fallback)
    n = sp.get_piece_size()
    toks = [sp.id_to_piece(i) for i in range(n)]
    types = piece_types(proto)
    spec = spm_normalizer_spec(proto)
    charsmap = spec["precompiled_charsmap"]
    # What the seed is for: fail loudly if the trainer stops producing it.
    assert len(types) == n and 4 in types, "no user-defined piece"
    assert (types.count(6) == 256) == byte_fallback, "byte pieces"
    assert 0 < len(charsmap) < 4096, "charsmap of %d bytes" % len(charsmap)
    assert spec["add_dummy_prefix"] and spec["remove_extra_whitespaces"]
    if byte_fallback:
        w = model_writer(path, "fuzz-llama-bf", n, dim=8, ffn=8, filters=2, pooling=1, seed=12)
    else:
        # No output norm: the smaller file fits the smoke test's 4096 bytes.
        w = model_writer(path, "fuzz-llama", n, dim=4, ffn=4, filters=1, pooling=3, seed=13,
                         output_norm=False)
    w.add_tokenizer_model("llama")
    w.add_token_list(toks)
    w.add_token_scores([sp.get_score(i) for i in range(n)])
    w.add_token_types(types)
    w.add_bos_token_id(sp.bos_id())
    w.add_eos_token_id(sp.eos_id())
    w.add_unk_token_id(sp.unk_id())
    w.add_add_bos_token(byte_fallback)
    w.add_add_eos_token(not byte_fallback)
    w.add_precompiled_charsmap(charsmap)
    w.add_add_space_prefix(spec["add_dummy_prefix"])
    w.add_remove_extra_whitespaces(spec["remove_extra_whitespaces"])
    finish(w, path)


def make_lexical(out: str):
    """A byte-level model with a 16-bucket lexical sketch (the loader's checks of
    lexical.dims / lexical.scale / lexical.bucket / lexical.weight); about 7 KiB."""
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    from make_model import write_model
    write_model(os.path.join(out, "spectralmlp_lexical.gguf"), dim=4, ffn=4, layers=1, filters=2, ctx=64,
                seed=5, name="fuzz lexical", lexical=16)


SEEDS = {
    "spectralmlp_lexical": make_lexical,
    "spectralmlp_bert": make_bert,
    "spectralmlp_llama": lambda out: make_llama(out, False),
    "spectralmlp_llama_bf": lambda out: make_llama(out, True),
}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description="write fuzz seeds with bert/llama tokenizers")
    ap.add_argument("--out", default=OUT, help="seed directory (default tests/data/fuzz_seeds)")
    ap.add_argument("names", nargs="*", metavar="NAME", help="seeds to write (default all): " + ", ".join(SEEDS))
    a = ap.parse_args(argv)
    for n in a.names:
        if n not in SEEDS:
            ap.error(f"unknown seed {n!r} (known: {', '.join(SEEDS)})")
    os.makedirs(a.out, exist_ok=True)
    for n in a.names or list(SEEDS):
        SEEDS[n](a.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
