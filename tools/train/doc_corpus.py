#!/usr/bin/env python3
"""Document corpus for training and evaluating the default model: the Python
3.11 HTML documentation shipped by Debian's `python3-doc` package
(/usr/share/doc/python3/html, PSF licence), HTML tags stripped.

Each HTML page's main body (<div role="main">) is turned into paragraphs at
block elements (p, pre, li, dt, dd, h1-h6, tr, div); consecutive paragraphs
of one page are packed greedily into documents of 256..2048 bytes, closed once past 640 bytes (a
paragraph longer than 2048 bytes is cut at a whitespace). Index pages
(genindex*, py-modindex, search, contents) are skipped.

The train / held-out split is by source page: a page is held out when
crc32(relative path) % 100 < HELDOUT_PERCENT, so held-out documents come
from pages never seen in training.

    python3 tools/train/doc_corpus.py [--root DIR]       # prints corpus statistics
"""
from __future__ import annotations

import argparse
import os
import re
import sys
import zlib
from html.parser import HTMLParser

DEFAULT_ROOTS = ["/usr/share/doc/python3/html", "/usr/share/doc/python3.11/html",
                 "/usr/share/doc/python3-doc/html"]
MIN_DOC, MAX_DOC = 256, 2048
EMIT_AT = 640  # a document is closed once it reaches this many bytes
HELDOUT_PERCENT = 15
SKIP = re.compile(r"(^|/)(genindex|py-modindex|search|contents|index)[^/]*\.html$")
BLOCK = {"p", "pre", "li", "dt", "dd", "h1", "h2", "h3", "h4", "h5", "h6", "tr", "div",
         "section", "blockquote", "table", "ul", "ol", "dl", "br"}


class _Text(HTMLParser):
    def __init__(self):
        super().__init__(convert_charrefs=True)
        self.depth = 0          # nesting depth inside the main div (0 = outside)
        self.skip = 0           # inside script/style
        self.paras = []
        self.cur = []
        self.in_pre = 0

    def _flush(self):
        s = "".join(self.cur)
        self.cur = []
        if not self.in_pre:
            s = re.sub(r"\s+", " ", s)
        s = s.strip()
        if s:
            self.paras.append(s)

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if self.depth == 0:
            if tag == "div" and a.get("role") == "main":
                self.depth = 1
            return
        if tag == "div":
            self.depth += 1
        if tag in ("script", "style"):
            self.skip += 1
        if tag in BLOCK:
            self._flush()
        if tag == "pre":
            self.in_pre += 1

    def handle_endtag(self, tag):
        if self.depth == 0:
            return
        if tag in ("script", "style"):
            self.skip = max(0, self.skip - 1)
        if tag in BLOCK:
            self._flush()
        if tag == "pre":
            self.in_pre = max(0, self.in_pre - 1)
        if tag == "div":
            self.depth -= 1

    def handle_data(self, data):
        if self.depth and not self.skip:
            self.cur.append(data)


def find_root(root=None) -> str:
    for r in ([root] if root else DEFAULT_ROOTS):
        if r and os.path.isdir(r):
            return r
    raise SystemExit("python3-doc HTML not found: apt-get install python3-doc (or pass --root)")


def page_paragraphs(path: str) -> list[str]:
    with open(path, encoding="utf-8", errors="replace") as fh:
        p = _Text()
        p.feed(fh.read())
        p._flush()
    # drop the Sphinx permalink glyphs
    return [s.replace("\u00b6", "").strip() for s in p.paras if s.replace("\u00b6", "").strip()]


def pack(paras: list[str]) -> list[bytes]:
    docs, cur = [], b""
    for s in paras:
        b = s.encode("utf-8")
        while len(b) > MAX_DOC:  # cut overlong paragraphs at whitespace
            cut = b.rfind(b" ", MIN_DOC, MAX_DOC)
            cut = cut if cut > 0 else MAX_DOC
            piece, b = b[:cut], b[cut:].lstrip()
            if cur and len(cur) >= MIN_DOC:
                docs.append(cur)
            cur = b""
            docs.append(piece)
        if cur and len(cur) + 1 + len(b) > MAX_DOC:
            if len(cur) >= MIN_DOC:
                docs.append(cur)
            cur = b""
        cur = (cur + b"\n" + b) if cur else b
        if len(cur) >= EMIT_AT:
            docs.append(cur)
            cur = b""
    if len(cur) >= MIN_DOC:
        docs.append(cur)
    return [d for d in docs if MIN_DOC <= len(d) <= MAX_DOC]


def is_heldout(relpath: str) -> bool:
    return zlib.crc32(relpath.encode()) % 100 < HELDOUT_PERCENT


def load_corpus(root=None):
    """-> (train_docs, heldout_docs): lists of (relpath, bytes)."""
    root = find_root(root)
    train, held = [], []
    for dirpath, dirnames, files in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("_"))
        for f in sorted(files):
            if not f.endswith(".html"):
                continue
            rel = os.path.relpath(os.path.join(dirpath, f), root)
            if SKIP.search(rel):
                continue
            docs = pack(page_paragraphs(os.path.join(dirpath, f)))
            (held if is_heldout(rel) else train).extend((rel, d) for d in docs)
    return train, held


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--root")
    a = ap.parse_args(argv)
    train, held = load_corpus(a.root)
    for name, ds in (("train", train), ("heldout", held)):
        n = sum(len(d) for _, d in ds)
        print(f"{name}: {len(ds)} docs from {len({r for r, _ in ds})} pages, {n/1e6:.2f} MB, "
              f"mean {n/max(1,len(ds)):.0f} B")
    return 0


if __name__ == "__main__":
    sys.exit(main())
