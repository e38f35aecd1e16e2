#!/usr/bin/env python3
"""Tokenizer fixtures and Unicode tables for spectral's tokenizers.

Regenerate (needs `pip install sentencepiece tokenizers gguf numpy`; CI does
not run this, it compares against the committed output):

    python3 tools/make_tokenizer_fixtures.py [--out DIR] [NAME ...]  # fixtures
    python3 tools/make_tokenizer_fixtures.py --tables   # formats/tok_unicode.c

NAME selects fixtures (default: all). The sentencepiece fixtures come out
byte-identical on every run; bert_wordpiece does not (the `tokenizers`
trainer), so regenerate only what changed, e.g. `spm_nfkc`.

Fixtures (tests/data/tokenizer/):
  spm_unigram.gguf / spm_unigram_bf.gguf   SentencePiece unigram models trained
      here (without / with byte_fallback) with the identity normalization rule
      and remove_extra_whitespaces=false, keys as llama.cpp's "llama" model.
  spm_nfkc.gguf   the same with sentencepiece's defaults: the nmt_nfkc rule,
      remove_extra_whitespaces=true, add_dummy_prefix=true, plus one
      user-defined piece; writes tokenizer.ggml.precompiled_charsmap,
      add_space_prefix and remove_extra_whitespaces, read from the model
      protobuf by tools/convert_fnet.py's reader (so this also tests it).
      Its texts are TEXTS plus NFKC_TEXTS.
  bert_wordpiece.gguf   WordPiece vocabulary (uncased) trained with the
      `tokenizers` package, keys as llama.cpp's "bert" model plus
      tokenizer.ggml.do_lower_case.
  <name>.expected   one line per test text: hex(text bytes) TAB ids without
      special tokens TAB ids with special tokens (ids space-separated; a
      line "-" for an empty list). Texts that are not valid UTF-8 are fed to
      sentencepiece as bytes and to `tokenizers` after a lossy UTF-8 decode
      (what a Python caller would do).

The training text is the English prose of a few Python stdlib modules (PSF
licence) plus a few sentences written here, so the run is offline. The result
depends on the Python version's stdlib; that is fine because the ids are
generated in the same run as the vocabularies.

Unicode tables (formats/tok_unicode.c) are derived by asking the `tokenizers`
library's own BertNormalizer / BertPreTokenizer about every code point, so the
C side reproduces its categories exactly (including which Unicode version it
uses).
"""
import io
import os
import sys
import sysconfig

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
OUT = os.path.join(ROOT, "tests", "data", "tokenizer")

EXTRA_SENTENCES = [
    "The café serves crème brûlée and jalapeño poppers to naïve tourists.",
    "Über alles: Straße, Größe, Ärger, Öl and Übung are German words.",
    "El niño pidió una piña y un año de mañanas en España.",
    "中文字符测试 and 日本語 appear in multilingual documents.",
    "Résumé, façade, coöperate and déjà vu are borrowed words.",
]

# Test texts (bytes). Keep in sync with nothing: the C test reads the .expected files.
TEXTS = [
    b"Hello, world!",
    b"The quick brown fox jumps over the lazy dog.",
    b"",
    b" ",
    b"   leading and trailing   ",
    b"multiple    spaces\tand\ttabs\nnew\r\nlines\n\n",
    "Café naïve résumé jalapeño Über ÜBER façade".encode(),
    "Ñandú coöperate ŁÓDŹ Straße İstanbul ÆØÅ œuvre".encode(),
    "Ελληνικά ΣΟΦΙΑ Русский ЁЖИК".encode(),
    "中文字符测试 日本語のテキスト 한국어".encode(),
    "emoji 😀👍🏽 👨‍👩‍👧 ☃ and 🥲".encode(),
    "punctuation: (a) [b] {c} — “quotes” ‘single’ … ¡hola! ¿qué? «guillemets»".encode(),
    b"#hash @at $5.00 50% a+b=c ~tilde^ `back` x|y \\ /slash/ _under_",
    b"numbers 12345 3.14159 1,000,000",
    b"internationalization tokenization unbelievable documentation",
    b"a" * 150,
    b"to" * 50 + b" " + b"to" * 50 + b"t",  # 100 and 101 characters
    ("é" * 101 + " " + "한" * 40).encode(),
    b"supercalifragilisticexpialidocious " * 3,
    "e\u0301 combining a\u0308 and ﬁ ligature".encode(),
    "zero\u200bwidth\ufeffbom soft\u00adhyphen".encode(),
    "non\u00a0breaking\u2003em space\u3000ideographic".encode(),
    b"ctrl a\x00b\x01c\x7fd\x0be\x0cf",
    b"\xff\xfe",
    b"abc\xffdef",
    b"trunc\xe3\x81",
    b"\xe3\x81abc",
    b"\xc3",
    b"\xed\xa0\x80 surrogate",
    b"\xc0\xaf overlong",
    b"\xf4\x90\x80\x80 too big",
    b"mixed \xf0\x9f\x98 end",
    "literal \ufffd replacement".encode(),
    b"function(argument, *args, **kwargs) -> None",
]


# Extra texts for the nmt_nfkc model: NFKC (full-width, ligatures, enclosed and
# compatibility characters, combining marks), the whitespace rules (runs,
# leading/trailing, NBSP, ideographic space, tabs/newlines, whitespace-only
# and empty results), and invalid UTF-8 next to all of these.
NFKC_TEXTS = [
    "ＡＢＣ１２３ ｆｕｌｌｗｉｄｔｈ ＨＥＬＬＯ，ｗｏｒｌｄ！".encode(),
    "ﬁnance ﬂow ﬀ ﬃ ligatures".encode(),
    "① ② ⑩ ⑴ ⒜ Ⅻ ½ ² ℌ ™ ℡".encode(),
    "㎏ ㎞ ㍻ ㌔ … ‥ ﹏ ｶﾞｷﾞ ﾊﾟ".encode(),
    "ﷺ and ﷻ expand".encode(),
    # rules whose keys extend shorter rules (the longest one must win)
    "ª\u0302\u0300 ª\u0302 ª \U0001d4d0\u0301 ㄷㅠㄺ ㄷㅠ ㄷ ﾼㅑᆻ ᵤ\u032d".encode(),
    "e\u0301 a\u0308 o\u0302\u0323 é vs e\u0301".encode(),
    "\u00a0\u00a0nbsp lead\u00a0and\u00a0\u00a0runs trail\u00a0\u00a0".encode(),
    "\u3000\u3000ideographic\u3000space\u3000\u3000".encode(),
    "\u2002en\u2003em\u2009thin\u200ahair\u202fnarrow\u205fmath".encode(),
    b"  two  spaces  ",
    b"\t\ttabs\tand\nnewlines\r\nhere\n",
    b"a\tb\nc\rd\x0be\x0cf",
    b"         ",
    b"\t\n \r\n\t",
    "\u00a0".encode(),
    "\u3000 \u00a0 \u3000".encode(),
    "\u200b".encode(),
    "a\u200bb\u200c\u200dc\u2060d\ufeffe".encode(),
    b"\x01\x02\x1f",
    b"x\x00y \x00 z",
    "\u00b4acute \u00a8 \u00b8 leading spacing marks \u00b4".encode(),
    "\u00b4".encode(),
    "ends with \u2581".encode(),
    "\u2581\u2581 literal \u2581 \u2581".encode(),
    "ＵＳＥＲ USER ＵＳＥＲs ＵＳ".encode(),
    "ＡＢ".encode() + b"\xff" + "Ｃ".encode(),
    b"\xef\xbc tr\xef\xbc\x21 \xe2\x80 \xe2\x80\xa6",
    b"  \xff  \xfe  ",
    b"abc \xff  ",
    "ＡＢＣ".encode() * 40,
    ("ﬁ" * 30 + " " + "①" * 30).encode(),
    "Ｃａｆé ｎａïｖｅ Ｓｔｒａßｅ ＩＳＴＡＮＢＵＬ".encode(),
    "ｱｲｳｴｵ ﾃｽﾄ 半角カナ".encode(),
    "quotes `` and '' and “ ” ‘ ’ ‛ ‟ ＂ ＇".encode(),
]


def corpus():
    lib = sysconfig.get_paths()["stdlib"]
    lines = []
    for name in ["textwrap.py", "argparse.py", "difflib.py", "inspect.py", "pydoc.py"]:
        with open(os.path.join(lib, name), encoding="utf-8") as f:
            for line in f:
                line = line.strip().lstrip("#").strip()
                if len(line) > 20:
                    lines.append(line)
    lines.extend(EXTRA_SENTENCES * 20)
    return lines


def hexs(b):
    return b.hex() if b else ""


def ids_str(ids):
    return " ".join(str(i) for i in ids) if ids else "-"


def write_expected(path, rows):
    with open(path, "w") as f:
        f.write("# hex(text)\tids\tids with special tokens; generated by tools/make_tokenizer_fixtures.py\n")
        for text, plain, special in rows:
            f.write("%s\t%s\t%s\n" % (hexs(text), ids_str(plain), ids_str(special)))


def piece_types(proto):
    """SentencePiece piece types (1 normal .. 6 byte, as llama.cpp's token
    types) from a serialized ModelProto: the Python API cannot tell
    user-defined pieces (4) from normal ones."""
    from convert_fnet import pb_fields
    types = []
    for field, wt, v in pb_fields(proto):
        if field == 1 and wt == 2:  # ModelProto.pieces
            t = 1  # proto2 default: NORMAL
            for f, w, x in pb_fields(v):
                if f == 3 and w == 0:
                    t = x
            types.append(t)
    return types


def make_spm(lines, byte_fallback, name, nfkc=False):
    import gguf
    import sentencepiece as spm
    from convert_fnet import spm_normalizer_spec

    model = io.BytesIO()
    if nfkc:  # sentencepiece's defaults, as FNet's and most released models
        norm = dict(normalization_rule_name="nmt_nfkc", remove_extra_whitespaces=True,
                    user_defined_symbols=["ＵＳＥＲ"])
    else:  # llama.cpp's SPM did not normalize
        norm = dict(normalization_rule_name="identity", remove_extra_whitespaces=False)
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(lines),
        model_writer=model,
        model_type="unigram",
        vocab_size=1000 if byte_fallback else 700,
        add_dummy_prefix=True,
        byte_fallback=byte_fallback,
        character_coverage=0.999,
        num_threads=1,
        minloglevel=2,
        **norm,
    )
    proto = model.getvalue()
    sp = spm.SentencePieceProcessor(model_proto=proto)
    n = sp.get_piece_size()
    toks = [sp.id_to_piece(i) for i in range(n)]
    scores = [sp.get_score(i) for i in range(n)]
    types = piece_types(proto)
    assert len(types) == n
    spec = spm_normalizer_spec(proto)
    if nfkc:
        assert spec["name"] == "nmt_nfkc" and spec["precompiled_charsmap"], spec["name"]
        assert spec["remove_extra_whitespaces"] and spec["add_dummy_prefix"]
        assert 4 in types
    w = gguf.GGUFWriter(os.path.join(OUT, name + ".gguf"), "tokenizer-fixture")
    w.add_tokenizer_model("llama")
    w.add_token_list(toks)
    w.add_token_scores(scores)
    w.add_token_types(types)
    w.add_bos_token_id(sp.bos_id())
    w.add_eos_token_id(sp.eos_id())
    w.add_unk_token_id(sp.unk_id())
    w.add_add_bos_token(True)
    w.add_add_eos_token(False)
    if nfkc:
        w.add_precompiled_charsmap(spec["precompiled_charsmap"])
        w.add_add_space_prefix(spec["add_dummy_prefix"])
        w.add_remove_extra_whitespaces(spec["remove_extra_whitespaces"])
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    rows = []
    for t in TEXTS + (NFKC_TEXTS if nfkc else []):
        ids = sp.encode(t)  # bytes in, so invalid UTF-8 reaches sentencepiece as is
        rows.append((t, ids, [sp.bos_id()] + ids))
    write_expected(os.path.join(OUT, name + ".expected"), rows)


def make_bert(lines):
    import gguf
    from tokenizers import BertWordPieceTokenizer

    tk = BertWordPieceTokenizer(lowercase=True)
    tk.train_from_iterator(lines, vocab_size=600, min_frequency=2, limit_alphabet=200,
                           show_progress=False)
    vocab = tk.get_vocab()
    # Training from an iterator leaves no post-processor; add BERT's one.
    from tokenizers.processors import BertProcessing
    tk.post_processor = BertProcessing(("[SEP]", vocab["[SEP]"]), ("[CLS]", vocab["[CLS]"]))
    toks = [None] * len(vocab)
    for s, i in vocab.items():
        toks[i] = s
    w = gguf.GGUFWriter(os.path.join(OUT, "bert_wordpiece.gguf"), "tokenizer-fixture")
    w.add_tokenizer_model("bert")
    w.add_token_list(toks)
    w.add_token_types([3 if s in ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]") else 1 for s in toks])
    w.add_uint32("tokenizer.ggml.cls_token_id", vocab["[CLS]"])
    w.add_sep_token_id(vocab["[SEP]"])
    w.add_unk_token_id(vocab["[UNK]"])
    w.add_pad_token_id(vocab["[PAD]"])
    w.add_mask_token_id(vocab["[MASK]"])
    w.add_bool("tokenizer.ggml.do_lower_case", True)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    rows = []
    for t in TEXTS:
        s = t.decode("utf-8", errors="replace")
        rows.append((t, tk.encode(s, add_special_tokens=False).ids,
                     tk.encode(s, add_special_tokens=True).ids))
    write_expected(os.path.join(OUT, "bert_wordpiece.expected"), rows)


# ---- Unicode tables -------------------------------------------------------

def runs_delta(pairs):
    """[(cp, out)] -> [(lo, hi, stride, delta)] for out == cp + delta."""
    runs = []
    for cp, out in pairs:
        d = out - cp
        if runs:
            lo, hi, st, dd = runs[-1]
            if dd == d and ((lo == hi and cp - hi in (1, 2)) or (lo != hi and cp - hi == st)):
                runs[-1] = (lo, cp, cp - hi if lo == hi else st, dd)
                continue
        runs.append((cp, cp, 1, d))
    return runs


def ranges(cps):
    out = []
    for cp in cps:
        if out and out[-1][1] == cp - 1:
            out[-1][1] = cp
        else:
            out.append([cp, cp])
    return out


def make_tables(path):
    from tokenizers.normalizers import BertNormalizer
    from tokenizers.pre_tokenizers import BertPreTokenizer

    clean = BertNormalizer(clean_text=True, handle_chinese_chars=False, strip_accents=False, lowercase=False)
    strip = BertNormalizer(clean_text=False, handle_chinese_chars=False, strip_accents=True, lowercase=False)
    low = BertNormalizer(clean_text=False, handle_chinese_chars=False, strip_accents=False, lowercase=True)
    pt = BertPreTokenizer()
    removed, space, punct = [], [], []
    lower_pairs, strip_single, strip_multi = [], [], []
    for cp in range(0x110000):
        if 0xD800 <= cp < 0xE000:
            continue
        c = chr(cp)
        r = clean.normalize_str(c)
        if r == "":
            removed.append(cp)
            continue
        if r == " ":
            space.append(cp)
            continue
        if len(pt.pre_tokenize_str("a" + c + "a")) == 3:
            punct.append(cp)
        l = low.normalize_str(c)
        if l != c:
            if len(l) == 1:
                lower_pairs.append((cp, ord(l)))
            elif cp != 0x130:
                raise SystemExit("unexpected multi-char lowercase U+%04X" % cp)
        if 0xAC00 <= cp <= 0xD7A3:
            continue  # Hangul syllables: decomposed algorithmically in C
        s = strip.normalize_str(c)
        if s != c:
            if len(s) <= 1:
                strip_single.append((cp, ord(s) if s else 0))
            else:
                if len(s) > 3:
                    raise SystemExit("strip output too long U+%04X" % cp)
                strip_multi.append((cp, [ord(x) for x in s]))
    # strip: runs mapping to one constant (kind 1; 0 = dropped) or by a constant delta (kind 0)
    strip_runs = []
    for cp, out in strip_single:
        if strip_runs and strip_runs[-1][1] == cp - 1:
            lo, hi, kind, val = strip_runs[-1]
            if kind == 1 and val == out:
                strip_runs[-1] = (lo, cp, 1, val)
                continue
            if kind == 0 and out and out == cp + val:
                strip_runs[-1] = (lo, cp, 0, val)
                continue
            if lo == hi and kind == 0 and out == hi + val:  # two equal outputs: constant run
                strip_runs[-1] = (lo, cp, 1, out)
                continue
        strip_runs.append((cp, cp, 1, 0) if out == 0 else (cp, cp, 0, out - cp))
    with open(path, "w") as f:
        f.write("/* Generated by tools/make_tokenizer_fixtures.py --tables from the\n"
                " * `tokenizers` library's BertNormalizer/BertPreTokenizer, so BERT\n"
                " * tokenization here matches it code point by code point. Do not edit. */\n")
        f.write('#include "formats/tok_internal.h"\n\n')
        def rng(name, rs):
            f.write("static const uint32_t %s[][2] = {\n" % name)
            for lo, hi in rs:
                f.write("    {0x%X, 0x%X},\n" % (lo, hi))
            f.write("};\n\n")
        rng("k_removed", ranges(removed))
        rng("k_space", ranges(space))
        rng("k_punct", ranges(punct))
        f.write("/* {lo, hi, stride, delta}: lower(cp) = cp + delta for cp = lo, lo+stride, ... hi */\n")
        f.write("static const int32_t k_lower[][4] = {\n")
        for lo, hi, st, d in runs_delta(lower_pairs):
            f.write("    {0x%X, 0x%X, %d, %d},\n" % (lo, hi, st, d))
        f.write("};\n\n")
        f.write("/* {lo, hi, kind, val}: kind 0: cp + val; kind 1: val (0: dropped) */\n")
        f.write("static const int32_t k_strip[][4] = {\n")
        for lo, hi, kind, val in strip_runs:
            f.write("    {0x%X, 0x%X, %d, %d},\n" % (lo, hi, kind, val))
        f.write("};\n\n")
        f.write("static const uint32_t k_strip_multi[][4] = {\n")
        for cp, outs in strip_multi:
            outs = outs + [0] * (3 - len(outs))
            f.write("    {0x%X, 0x%X, 0x%X, 0x%X},\n" % (cp, outs[0], outs[1], outs[2]))
        f.write("};\n\n")
        f.write(TABLE_CODE)
    print("wrote", path)


TABLE_CODE = r"""#define N_(a) (sizeof(a) / sizeof((a)[0]))

static int in_ranges(const uint32_t (*r)[2], size_t n, uint32_t cp) {
    size_t lo = 0, hi = n;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        if (cp < r[mid][0]) hi = mid;
        else if (cp > r[mid][1]) lo = mid + 1;
        else return 1;
    }
    return 0;
}

/* Index of the run containing cp, or -1. */
static long find_run(const int32_t (*r)[4], size_t n, uint32_t cp) {
    size_t lo = 0, hi = n;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        if (cp < (uint32_t)r[mid][0]) hi = mid;
        else if (cp > (uint32_t)r[mid][1]) lo = mid + 1;
        else return (long)mid;
    }
    return -1;
}

int sp_uc_bert_removed(uint32_t cp) { return in_ranges(k_removed, N_(k_removed), cp); }
int sp_uc_bert_space(uint32_t cp) { return in_ranges(k_space, N_(k_space), cp); }
int sp_uc_bert_punct(uint32_t cp) { return in_ranges(k_punct, N_(k_punct), cp); }

int sp_uc_bert_chinese(uint32_t cp) {
    return (cp >= 0x4E00 && cp <= 0x9FFF) || (cp >= 0x3400 && cp <= 0x4DBF) ||
           (cp >= 0x20000 && cp <= 0x2A6DF) || (cp >= 0x2A700 && cp <= 0x2B73F) ||
           (cp >= 0x2B740 && cp <= 0x2B81F) || (cp >= 0x2B920 && cp <= 0x2CEAF) ||
           (cp >= 0xF900 && cp <= 0xFAFF) || (cp >= 0x2F800 && cp <= 0x2FA1F);
}

int sp_uc_lower(uint32_t cp, uint32_t out[3]) {
    if (cp == 0x130) { /* the one multi-char lowercase: i + combining dot above */
        out[0] = 'i';
        out[1] = 0x307;
        return 2;
    }
    long i = find_run(k_lower, N_(k_lower), cp);
    if (i >= 0 && (cp - (uint32_t)k_lower[i][0]) % (uint32_t)k_lower[i][2] == 0)
        out[0] = (uint32_t)((int32_t)cp + k_lower[i][3]);
    else
        out[0] = cp;
    return 1;
}

int sp_uc_strip(uint32_t cp, uint32_t out[3]) {
    if (cp >= 0xAC00 && cp <= 0xD7A3) { /* Hangul syllable -> conjoining jamo (NFD) */
        uint32_t s = cp - 0xAC00;
        out[0] = 0x1100 + s / 588;
        out[1] = 0x1161 + (s % 588) / 28;
        if (s % 28 == 0) return 2;
        out[2] = 0x11A7 + s % 28;
        return 3;
    }
    long i = find_run(k_strip, N_(k_strip), cp);
    if (i >= 0) {
        uint32_t v = k_strip[i][2] ? (uint32_t)k_strip[i][3] : (uint32_t)((int32_t)cp + k_strip[i][3]);
        if (v == 0) return 0;
        out[0] = v;
        return 1;
    }
    size_t lo = 0, hi = N_(k_strip_multi);
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        if (cp < k_strip_multi[mid][0]) hi = mid;
        else if (cp > k_strip_multi[mid][0]) lo = mid + 1;
        else {
            int n = 0;
            for (int k = 1; k < 4 && k_strip_multi[mid][k]; k++) out[n++] = k_strip_multi[mid][k];
            return n;
        }
    }
    out[0] = cp;
    return 1;
}
"""


FIXTURES = ["spm_unigram", "spm_unigram_bf", "spm_nfkc", "bert_wordpiece"]


def main():
    global OUT
    import argparse
    ap = argparse.ArgumentParser(description="tokenizer fixtures / Unicode tables")
    ap.add_argument("--tables", action="store_true", help="write formats/tok_unicode.c instead")
    ap.add_argument("--out", default=OUT, help="fixture directory (default tests/data/tokenizer)")
    ap.add_argument("names", nargs="*", metavar="NAME",
                    help="fixtures to write (default all): " + ", ".join(FIXTURES))
    a = ap.parse_args()
    for n in a.names:
        if n not in FIXTURES:
            ap.error(f"unknown fixture {n!r} (known: {', '.join(FIXTURES)})")
    if a.tables:
        make_tables(os.path.join(ROOT, "formats", "tok_unicode.c"))
        return
    OUT = a.out
    names = a.names or FIXTURES
    os.makedirs(OUT, exist_ok=True)
    sys.path.insert(0, os.path.join(ROOT, "tools"))  # convert_fnet's protobuf reader
    lines = corpus()
    if "spm_unigram" in names:
        make_spm(lines, False, "spm_unigram")
    if "spm_unigram_bf" in names:
        make_spm(lines, True, "spm_unigram_bf")
    if "spm_nfkc" in names:
        make_spm(lines, False, "spm_nfkc", nfkc=True)
    if "bert_wordpiece" in names:
        make_bert(lines)
    print("wrote", ", ".join(names), "to", OUT)


if __name__ == "__main__":
    main()
