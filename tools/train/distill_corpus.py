#!/usr/bin/env python3
"""Corpus for distilling all-MiniLM-L6-v2 into the default spectral model.

    python3 tools/train/distill_corpus.py --out /work/data/corpus.jsonl [--seed 0]

English text that ships offline with Debian and PyPI packages, one JSON line per
document: {"src": SOURCE, "path": FILE, "split": "train"|"dev"|"heldout"|"ood", "text": ...}.

Sources (licences in docs/default-model.md):
  pydoc     Python 3.11 documentation, HTML (Debian python3-doc), main body of each page
  pypi      READMEs / docs shipped inside installed PyPI packages: dist-info METADATA long
            descriptions and *.md, *.rst, *.txt files under site-packages
  debdoc    /usr/share/doc: README*, NEWS*, *.txt, *.md, FAQ, copyright files (gz too;
            Debian changelogs skipped)
  licenses  /usr/share/common-licenses
  cmake     CMake 3.25 reference documentation (reStructuredText, /usr/share/cmake-*/Help)
  vim       Vim 9.0 help files (/usr/share/vim/vim*/doc/*.txt)
  rust      Rust toolchain docs shipped as Markdown (~/.rustup/toolchains/*/share/doc)
  man       OUT-OF-DOMAIN: English man pages, sections 1-8 (/usr/share/man/man[1-8]),
            rendered to text with man(1). Never used for training.

Splits: the man pages are the out-of-domain ("ood") set. Every other source file is
held out (in-domain, "heldout") when crc32(src/path) % 100 < 15 and development ("dev":
where runs and weights are chosen) when it is 15..24, so neither comes from a file seen in
training; a Debian package's doc folder counts as one file (src/package), as its search
document (tools/train/search_sets.py) reads them all. (The shipped model's corpus was drawn
before the development split and by file for debdoc too: models/spectral-default.gguf
trained on files that are now development files, and on some now held-out debdoc files.)

Documents: each file's text (whitespace runs inside a line collapsed, blank-line runs
squeezed) is cut into paragraphs, which are packed greedily.
  train:           documents of 1..8 KB (at most 24 per file; per-source byte caps)
  heldout / dev / ood: documents of 2..4 KB (>= 2048 bytes each): at most 12 per held-out
                   file, 8 per development file; at most 2 per man page and 12 man pages
                   per family (gcloud, git, ...)
Files that are mostly not ASCII text are skipped. Deterministic given the installed
packages and --seed.
"""
from __future__ import annotations

import argparse
import glob
import gzip
import json
import os
import random
import re
import subprocess
import sys
import sysconfig
import zlib

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

HELDOUT_PERCENT = 15
DEV_PERCENT = 10  # files 15..24 of 100: the development split
DEV_PER_FILE = 8
TRAIN_MIN, TRAIN_MAX, TRAIN_PER_FILE = 1024, 8192, 24
EVAL_MIN, EVAL_MAX, EVAL_PER_FILE = 2048, 4096, 2
HELDOUT_PER_FILE = 12  # in-domain held-out files are fewer and longer than man pages (12: >= 1,000 documents)
SRC_CAP = {"pydoc": 9_000_000, "pypi": 9_000_000, "debdoc": 5_000_000, "licenses": 400_000,
           "cmake": 3_000_000, "vim": 3_000_000, "rust": 3_000_000}


def clean(text: str) -> str:
    text = text.replace("\r\n", "\n").replace("\r", "\n").replace("\x00", "")
    lines = [re.sub(r"[ \t\f\v]+", " ", ln).strip() for ln in text.split("\n")]
    text = "\n".join(lines)
    return re.sub(r"\n{3,}", "\n\n", text).strip()


def englishish(text: str) -> bool:
    if len(text) < 200:
        return False
    asc = sum(1 for c in text[:20000] if c.isascii())
    letters = sum(1 for c in text[:20000] if c.isalpha())
    n = min(len(text), 20000)
    return asc / n > 0.97 and letters / n > 0.45


def paragraphs(text: str) -> list[str]:
    return [p for p in re.split(r"\n\s*\n", text) if p.strip()]


def pack(paras: list[str], lo: int, hi: int) -> list[str]:
    """Greedy packing of paragraphs into documents of lo..hi bytes (long paragraphs cut
    at whitespace)."""
    docs, cur = [], ""
    for p in paras:
        while len(p.encode()) > hi:
            cut = p.rfind(" ", lo // 2, hi)
            cut = cut if cut > 0 else hi
            piece, p = p[:cut], p[cut:].lstrip()
            if cur and len(cur.encode()) + 2 + len(piece.encode()) <= hi:
                piece = cur + "\n\n" + piece
            elif len(cur.encode()) >= lo:
                docs.append(cur)
            cur = ""
            if len(piece.encode()) >= lo:
                docs.append(piece)
            else:
                cur = piece
        if cur and len(cur.encode()) + 2 + len(p.encode()) > hi:
            if len(cur.encode()) >= lo:
                docs.append(cur)
            cur = ""
        cur = (cur + "\n\n" + p) if cur else p
        if len(cur.encode()) >= (lo + hi) // 2:
            docs.append(cur)
            cur = ""
    if len(cur.encode()) >= lo:
        docs.append(cur)
    return [d for d in docs if lo <= len(d.encode()) <= hi]


def read_text(path: str) -> str | None:
    try:
        if path.endswith(".gz"):
            with gzip.open(path, "rb") as fh:
                raw = fh.read(4_000_000)
        else:
            with open(path, "rb") as fh:
                raw = fh.read(4_000_000)
        return raw.decode("utf-8")
    except (OSError, UnicodeDecodeError, EOFError, gzip.BadGzipFile):
        return None


# ---- sources ----------------------------------------------------------------

def src_pydoc():
    from doc_corpus import DEFAULT_ROOTS, SKIP, page_paragraphs
    root = next((r for r in DEFAULT_ROOTS if os.path.isdir(r)), None)
    if not root:
        print("distill_corpus: python3-doc not installed (apt-get install python3-doc)", file=sys.stderr)
        return
    for dp, _, fns in os.walk(root):
        for fn in sorted(fns):
            if not fn.endswith(".html"):
                continue
            p = os.path.join(dp, fn)
            rel = os.path.relpath(p, root)
            if SKIP.search(rel) or rel.startswith(("_", "whatsnew/changelog")):
                continue
            yield rel, "\n\n".join(page_paragraphs(p))


def src_pypi():
    sp = sysconfig.get_paths()["purelib"]
    seen = set()
    for p in sorted(glob.glob(os.path.join(sp, "*.dist-info", "METADATA"))):
        t = read_text(p)
        if not t:
            continue
        head, _, body = t.partition("\n\n")
        rel = os.path.relpath(p, sp)
        seen.add(rel)
        yield rel, body
    per_pkg = {}
    for dp, dns, fns in os.walk(sp):
        dns.sort()
        rel_dp = os.path.relpath(dp, sp)
        if "/tests" in "/" + rel_dp or "test_data" in rel_dp or "/examples" in "/" + rel_dp:
            continue
        for fn in sorted(fns):
            if not fn.lower().endswith((".md", ".rst", ".txt")):
                continue
            if fn.lower() in ("record", "top_level.txt", "entry_points.txt", "requirements.txt",
                              "license.txt", "dependency_links.txt", "sources.txt"):
                continue
            p = os.path.join(dp, fn)
            pkg = rel_dp.split("/")[0]
            if per_pkg.get(pkg, 0) >= 40:
                continue
            try:
                if os.path.getsize(p) < 1024:
                    continue
            except OSError:
                continue
            t = read_text(p)
            if t:
                per_pkg[pkg] = per_pkg.get(pkg, 0) + 1
                yield os.path.relpath(p, sp), t


def src_debdoc():
    pat = re.compile(r"^(readme|news|faq|copyright|todo|authors|thanks|changes|history|"
                     r"usage|install|bugs|.*\.txt|.*\.md|.*\.rst)(\.gz)?$", re.I)
    for dp, dns, fns in os.walk("/usr/share/doc"):
        dns.sort()
        if "/html" in dp or dp.startswith(("/usr/share/doc/python3", "/usr/share/doc/python3.11")):
            continue
        for fn in sorted(fns):
            if fn.lower().startswith("changelog") or not pat.match(fn):
                continue
            p = os.path.join(dp, fn)
            t = read_text(p)
            if t:
                yield os.path.relpath(p, "/usr/share/doc"), t


def src_licenses():
    for p in sorted(glob.glob("/usr/share/common-licenses/*")):
        if os.path.isfile(p) and not os.path.islink(p):
            t = read_text(p)
            if t:
                yield os.path.basename(p), t


def src_cmake():
    for root in sorted(glob.glob("/usr/share/cmake-*/Help")):
        for dp, dns, fns in os.walk(root):
            dns.sort()
            for fn in sorted(fns):
                if fn.endswith(".rst"):
                    p = os.path.join(dp, fn)
                    t = read_text(p)
                    if t:
                        yield os.path.relpath(p, os.path.dirname(root)), t


def src_vim():
    for p in sorted(glob.glob("/usr/share/vim/vim*/doc/*.txt")):
        t = read_text(p)
        if t:
            yield os.path.basename(p), t


def src_rust():
    tc = sorted(glob.glob(os.path.expanduser("~/.rustup/toolchains/stable-*/share/doc")))
    for root in tc[:1]:
        for dp, dns, fns in os.walk(root):
            dns.sort()
            for fn in sorted(fns):
                if fn.endswith((".md", ".txt")) or fn.startswith("README"):
                    p = os.path.join(dp, fn)
                    t = read_text(p)
                    if t:
                        yield os.path.relpath(p, root), t


def man_family(fn: str) -> str:
    return re.split(r"[_.\-]", fn)[0]


def man_pages(rng, fam: dict, per_family: int):
    """(path, family, rendered text) of the man pages, in an order rng shuffles: links are
    skipped, and so are families that already have per_family pages in fam (the caller
    counts there the pages it keeps)."""
    files = []
    for sec in "12345678":
        files += sorted(glob.glob(f"/usr/share/man/man{sec}/*"))
    rng.shuffle(files)
    env = dict(os.environ, MANWIDTH="80", LC_ALL="C.UTF-8", MAN_KEEP_FORMATTING="")
    for p in files:
        if os.path.islink(p):
            continue
        f = man_family(os.path.basename(p))
        if fam.get(f, 0) >= per_family:
            continue
        try:
            r = subprocess.run(["man", "-P", "cat", "-l", p], capture_output=True, env=env, timeout=60)
        except subprocess.TimeoutExpired:
            continue
        yield p, f, re.sub(r".\x08", "", r.stdout.decode("utf-8", "replace"))


def src_man(rng):
    fam = {}
    for p, f, t in man_pages(rng, fam, 12):
        if len(t) < EVAL_MIN + 200:
            continue
        fam[f] = fam.get(f, 0) + 1
        yield os.path.relpath(p, "/usr/share/man"), t


SOURCES = {"pydoc": src_pydoc, "pypi": src_pypi, "debdoc": src_debdoc, "licenses": src_licenses,
           "cmake": src_cmake, "vim": src_vim, "rust": src_rust}


def split_key(src: str, rel: str) -> str:
    """What the split is drawn by: a Debian package's doc folder (its files go together, as
    one package's search document reads them all: tools/search_sets.py), else the file."""
    return f"{src}/{rel.split('/')[0]}" if src == "debdoc" else f"{src}/{rel}"


def split_of(src: str, rel: str) -> str:
    """"heldout" (test), "dev" (development: choices are made here) or "train", by file."""
    h = zlib.crc32(split_key(src, rel).encode()) % 100
    return "heldout" if h < HELDOUT_PERCENT else "dev" if h < HELDOUT_PERCENT + DEV_PERCENT else "train"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", required=True)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--n-ood", type=int, default=1400, help="stop after this many man-page documents")
    a = ap.parse_args(argv)
    rng = random.Random(a.seed)
    stats = {}
    seen_text = set()
    with open(a.out, "w") as out:
        def emit(src, rel, split, doc):
            h = zlib.crc32(doc[:512].encode())
            if h in seen_text:  # duplicated files (e.g. the same README in two packages)
                return False
            seen_text.add(h)
            out.write(json.dumps({"src": src, "path": rel, "split": split, "text": doc}) + "\n")
            s = stats.setdefault((src, split), [0, 0])
            s[0] += 1
            s[1] += len(doc.encode())
            return True

        for src, fn in SOURCES.items():
            used = 0
            for rel, text in fn():
                text = clean(text)
                if not englishish(text):
                    continue
                paras = paragraphs(text)
                split = split_of(src, rel)
                if split != "train":
                    per_file = HELDOUT_PER_FILE if split == "heldout" else DEV_PER_FILE
                    for d in pack(paras, EVAL_MIN, EVAL_MAX)[:per_file]:
                        emit(src, rel, split, d)
                elif used < SRC_CAP[src]:
                    docs = pack(paras, TRAIN_MIN, TRAIN_MAX)
                    if len(docs) > TRAIN_PER_FILE:
                        docs = rng.sample(docs, TRAIN_PER_FILE)
                    for d in docs:
                        if emit(src, rel, "train", d):
                            used += len(d.encode())
            print(f"distill_corpus: {src} done", file=sys.stderr, flush=True)
        n_ood = 0
        for rel, text in src_man(rng):
            text = clean(text)
            if not englishish(text):
                continue
            for d in pack(paragraphs(text), EVAL_MIN, EVAL_MAX)[:EVAL_PER_FILE]:
                n_ood += emit("man", rel, "ood", d)
            if n_ood >= a.n_ood:
                break
    for (src, split), (n, b) in sorted(stats.items()):
        print(f"{src:9s} {split:8s} {n:6d} docs {b / 1e6:7.2f} MB", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
