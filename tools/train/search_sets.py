#!/usr/bin/env python3
"""Query -> document search sets for the default model, from text that ships on this machine.

    python3 tools/train/search_sets.py --out DATA/search.jsonl [--n-ood 1000] [--seed 0]

One JSON line per pair: {"set": SOURCE, "split": "train"|"dev"|"test"|"ood", "key": FILE,
"query": ..., "doc": ...}. A query is a short description; its document is the long text it
describes, with the description itself (and any title line) taken out, so that no query is
found verbatim at the top of its document:

  cmake   CMake reference pages (/usr/share/cmake-*/Help: commands, variables, properties,
          policies, ...): the page's name and first sentence -> the page without its title and
          that sentence
  vim     Vim help (/usr/share/vim/vim*/doc): an entry's first tag and the first sentence of its
          text -> the entry (from its tag line to the next), without the tag line and sentence
  pydoc   Python documentation (python3-doc HTML): a section heading -> the section's own text
          (not its subsections', which are documents of their own); headings that occur more
          than once (Examples, Notes, ...) are left out
  pypi    installed PyPI packages: the one-line Summary of METADATA -> the README (its long
          description), title line and lines containing the summary removed
  debdoc  Debian packages: the short description (dpkg) -> the package's /usr/share/doc text
          (README, *.txt, *.md, FAQ, ...; not changelogs or copyright), lines containing the
          description removed
  man     OUT-OF-DOMAIN (never trained or tuned on): a man page's NAME description (the part
          after "name - ") -> the rendered page without its NAME section and header/footer
          lines; at most 3 pages per family (git-*, perl modules, ...)

Splits are by file (a Debian package's doc folder counts as one file), with the rule of
tools/train/distill_corpus.py, so the same files are held out in both: "test" = the corpus's
held-out files, "dev" = its development files, "train" = its training files; man pages are
"ood". Documents are cut to DOC_MAX bytes (at a whitespace) and need DOC_MIN bytes after the
query's text is removed; queries are 3..40 words; a query text occurs once per set (repeats
dropped). Deterministic given the installed packages and --seed.
"""
from __future__ import annotations

import argparse
import glob
import html
import json
import os
import random
import re
import subprocess
import sys
import sysconfig
from html.parser import HTMLParser

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
from distill_corpus import clean, englishish, man_pages, read_text, split_of  # noqa: E402

DOC_MIN, DOC_MAX = 300, 8192
SPLIT_NAME = {"heldout": "test", "dev": "dev", "train": "train"}


def cut_doc(text: str) -> str:
    """At most DOC_MAX bytes, cut at the last whitespace before the limit."""
    b = text.encode("utf-8")
    if len(b) <= DOC_MAX:
        return text.strip()
    cut = b.rfind(b" ", 0, DOC_MAX)
    cut2 = b.rfind(b"\n", 0, DOC_MAX)
    cut = max(cut, cut2)
    return b[:cut if cut > DOC_MAX // 2 else DOC_MAX].decode("utf-8", "ignore").strip()


def first_sentence(text: str, max_chars: int = 240) -> str:
    """The first sentence of a paragraph (whitespace collapsed), at most max_chars at a word."""
    t = re.sub(r"\s+", " ", text).strip()
    m = re.search(r"[.!?](?=\s+[A-Z(\"'`]|\s*$)", t[15:])
    s = t[:15 + m.end()] if m else t
    if len(s) > max_chars:
        s = s[:s.rfind(" ", 0, max_chars)]
    return s.strip()


def remove_once(doc: str, sentence: str) -> str:
    """The document without the sentence (matched with any whitespace between its words)."""
    words = sentence.split()
    if not words:
        return doc
    pat = r"\s+".join(re.escape(w) for w in words)
    return re.sub(pat, " ", doc, count=1)


def drop_lines_with(doc: str, phrase: str) -> str:
    p = re.sub(r"\s+", " ", phrase).strip().lower()
    if len(p) < 8:
        return doc
    return "\n".join(ln for ln in doc.split("\n") if p not in re.sub(r"\s+", " ", ln).lower())


def word_count(s: str) -> int:
    return len(re.findall(r"\w+", s))


# ---- cmake -------------------------------------------------------------------

RST_ROLE = re.compile(r":[\w-]+(?::[\w-]+)?:`([^`<]*?)(?:\s*<[^>]*>)?`")


def rst_plain(s: str) -> str:
    s = RST_ROLE.sub(r"\1", s)
    return re.sub(r"``([^`]*)``", r"\1", s).replace("`", "")


def cmake_pairs():
    for root in sorted(glob.glob("/usr/share/cmake-*/Help")):
        for dp, dns, fns in os.walk(root):
            dns.sort()
            for fn in sorted(fns):
                if not fn.endswith(".rst") or "release" in dp:
                    continue
                p = os.path.join(dp, fn)
                rel = os.path.relpath(p, os.path.dirname(root))
                t = read_text(p)
                if not t:
                    continue
                lines = t.replace("\r", "").split("\n")
                title, body_start = None, 0
                for i in range(len(lines) - 1):
                    if lines[i].strip() and re.fullmatch(r"([-=^~*#])\1{2,}", lines[i + 1].strip()):
                        title, body_start = lines[i].strip(), i + 2
                        break
                if not title:
                    continue
                # the first paragraph that is not a directive (or a directive's indented body)
                body = lines[body_start:]
                paras, cur, in_dir = [], [], False
                for ln in body:
                    if ln.startswith(".. "):
                        in_dir = True
                        if cur:
                            paras.append(" ".join(cur))
                            cur = []
                        continue
                    if in_dir and (not ln.strip() or ln.startswith((" ", "\t"))):
                        continue
                    in_dir = False
                    if ln.strip():
                        cur.append(ln.strip())
                    elif cur:
                        paras.append(" ".join(cur))
                        cur = []
                if cur:
                    paras.append(" ".join(cur))
                prose = next((q for q in paras if re.search(r"[a-z]{3,} [a-z]{2,}", q)
                              and word_count(first_sentence(q)) >= 5), None)
                if not prose:
                    continue
                sent = first_sentence(prose)
                doc = "\n".join(body)
                doc = remove_once(doc, sent)
                yield "cmake", rel, f"{title}: {rst_plain(sent)}", doc


# ---- vim ---------------------------------------------------------------------

TAG = re.compile(r"\*([^*\s|]+)\*")
TAG_LINE = re.compile(r"^\s*(\S.*?\s)?(\*[^*\s|]+\*\s*)+$")


def vim_pairs():
    for p in sorted(glob.glob("/usr/share/vim/vim*/doc/*.txt")):
        t = read_text(p)
        if not t:
            continue
        rel = os.path.basename(p)
        lines = t.replace("\r", "").split("\n")
        starts = [i for i, ln in enumerate(lines) if i > 0 and TAG_LINE.match(ln) and TAG.search(ln)]
        for k, s in enumerate(starts):
            e = starts[k + 1] if k + 1 < len(starts) else len(lines)
            tags = TAG.findall(lines[s])
            heading = TAG.sub("", lines[s]).strip()
            text_lines = [ln for ln in lines[s + 1:e] if not re.fullmatch(r"[=\-]{10,}", ln.strip())]
            text = "\n".join(text_lines)
            # the first line of prose: >= 4 words of lowercase letters, not a syntax line
            prose = None
            for j, ln in enumerate(text_lines):
                seg = ln.split("\t")[-1].strip() if "\t" in ln.strip() else ln.strip()
                if len(re.findall(r"\b[a-z]{2,}\b", seg)) >= 4:
                    prose = " ".join([seg] + [x.strip() for x in text_lines[j + 1:j + 4]])
                    break
            if not prose:
                continue
            sent = first_sentence(prose)
            sent = re.sub(r"\|([^|\s]+)\|", r"\1", sent)
            head = heading if heading and not re.match(r"^\d", heading) else tags[0]
            if re.match(r"^\d+\.\s", heading):
                head = re.sub(r"^\d+\.\s+", "", heading)
            query = f"{head}: {sent}"
            doc = remove_once(text, first_sentence(prose))
            yield "vim", rel, query, doc


# ---- pydoc -------------------------------------------------------------------

class _Sections(HTMLParser):
    """Each <section>'s heading and its own text (nested sections excluded)."""
    BLOCK = {"p", "pre", "li", "dt", "dd", "tr", "div", "blockquote", "table", "ul", "ol", "dl", "br"}

    def __init__(self):
        super().__init__(convert_charrefs=True)
        self.main = 0
        self.stack = []     # open sections: {"heading": [...], "paras": [...], "cur": [...]}
        self.done = []
        self.in_head = 0
        self.skip = 0

    def _flush(self):
        if self.stack:
            sec = self.stack[-1]
            s = re.sub(r"\s+", " ", "".join(sec["cur"])).replace("\u00b6", "").strip()
            sec["cur"] = []
            if s:
                sec["paras"].append(s)

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if self.main == 0:
            if tag == "div" and a.get("role") == "main":
                self.main = 1
            return
        if tag == "div":
            self.main += 1
        if tag == "section":
            self._flush()
            self.stack.append({"heading": [], "paras": [], "cur": []})
        elif re.fullmatch(r"h[1-6]", tag) and self.stack:
            self._flush()
            self.in_head = 1
        elif tag == "span" and "section-number" in (a.get("class") or ""):
            self.skip += 1
        elif tag in ("script", "style"):
            self.skip += 1
        elif tag in self.BLOCK:
            self._flush()

    def handle_endtag(self, tag):
        if self.main == 0:
            return
        if tag == "div":
            self.main -= 1
        if tag == "section" and self.stack:
            self._flush()
            self.done.append(self.stack.pop())
        elif re.fullmatch(r"h[1-6]", tag):
            self.in_head = 0
        elif tag == "span" and self.skip:
            self.skip -= 1
        elif tag in ("script", "style") and self.skip:
            self.skip -= 1
        elif tag in self.BLOCK:
            self._flush()

    def handle_data(self, data):
        if not self.stack or self.skip:
            return
        (self.stack[-1]["heading"] if self.in_head else self.stack[-1]["cur"]).append(data)


def pydoc_pairs():
    from doc_corpus import DEFAULT_ROOTS, SKIP
    root = next((r for r in DEFAULT_ROOTS if os.path.isdir(r)), None)
    if not root:
        print("search_sets: python3-doc not installed", file=sys.stderr)
        return
    out = []
    for dp, dns, fns in os.walk(root):
        dns.sort()
        for fn in sorted(fns):
            p = os.path.join(dp, fn)
            rel = os.path.relpath(p, root)
            if not fn.endswith(".html") or SKIP.search(rel) or rel.startswith(("_", "whatsnew/changelog")):
                continue
            ps = _Sections()
            with open(p, encoding="utf-8", errors="replace") as fh:
                ps.feed(fh.read())
            for sec in ps.done:
                head = re.sub(r"\s+", " ", "".join(sec["heading"])).replace("\u00b6", "").strip()
                if head:
                    out.append((rel, head, "\n\n".join(sec["paras"])))
    seen = {}
    for _, head, _ in out:
        seen[head.lower()] = seen.get(head.lower(), 0) + 1
    for rel, head, doc in out:
        if seen[head.lower()] == 1:
            yield "pydoc", rel, head, doc


# ---- pypi --------------------------------------------------------------------

def pypi_pairs():
    sp = sysconfig.get_paths()["purelib"]
    for p in sorted(glob.glob(os.path.join(sp, "*.dist-info", "METADATA"))):
        t = read_text(p)
        if not t:
            continue
        head, _, body = t.partition("\n\n")
        m = re.search(r"^Summary: (.*)$", head, re.M)
        if not m or not body.strip():
            continue
        summary = m.group(1).strip()
        lines = body.strip().split("\n")
        # drop a leading title: "# Title", or a line underlined with =/-/~
        while lines and not lines[0].strip():
            lines.pop(0)
        if lines and lines[0].startswith("#"):
            lines.pop(0)
        elif len(lines) > 1 and re.fullmatch(r"([=\-~*#^])\1{2,}", lines[1].strip()):
            lines = lines[2:]
        doc = drop_lines_with("\n".join(lines), summary)
        yield "pypi", os.path.relpath(p, sp), summary, doc


# ---- debdoc ------------------------------------------------------------------

def debdoc_pairs():
    r = subprocess.run(["dpkg-query", "-W", "-f=${Package}\t${binary:Summary}\n"], capture_output=True, text=True)
    pat = re.compile(r"^(readme|news|faq|todo|usage|install|bugs|.*\.txt|.*\.md|.*\.rst)(\.gz)?$", re.I)
    for line in sorted(set(r.stdout.splitlines())):
        pkg, _, summary = line.partition("\t")
        d = os.path.join("/usr/share/doc", pkg)
        if not summary or not os.path.isdir(d) or os.path.islink(d):
            continue
        parts = []
        files = []
        for dp, dns, fns in os.walk(d):
            dns.sort()
            if "/html" in dp:
                continue
            files += [os.path.join(dp, f) for f in sorted(fns) if pat.match(f) and not f.lower().startswith("changelog")]
        files.sort(key=lambda f: (not os.path.basename(f).lower().startswith("readme"), f))
        for f in files:
            t = read_text(f)
            if t and englishish(clean(t)):
                parts.append(clean(t))
            if sum(len(x) for x in parts) > DOC_MAX:
                break
        if parts:
            yield "debdoc", pkg + "/", summary, drop_lines_with("\n\n".join(parts), summary)


# ---- man (out of domain) -----------------------------------------------------

def man_pairs(rng, n_pages: int):
    fam = {}
    n = 0
    if n_pages <= 0:
        return
    for p, f, t in man_pages(rng, fam, 3):
        lines = t.split("\n")
        try:
            i = next(k for k, ln in enumerate(lines) if ln.strip() in ("NAME", "Name"))
        except StopIteration:
            continue
        j = i + 1
        while j < len(lines) and (lines[j].startswith(" ") or not lines[j].strip()):
            j += 1
        name_text = " ".join(x.strip() for x in lines[i + 1:j])
        m = re.match(r"^(.*?)\s+(?:-|\\-|—|–)\s+(.*)$", name_text)
        if not m:
            continue
        query = re.sub(r"\u2010\s+", "", m.group(2)).strip()  # a word hyphenated across lines
        body = lines[1:i] + lines[j:]
        if body and body[-1].strip() == "":
            body = body[:-1]
        while body and not body[-1].strip():
            body.pop()
        if body and re.search(r"\S\s{3,}\S", body[-1]):  # the footer line (version, date, title)
            body.pop()
        doc = clean("\n".join(body))
        if not englishish(doc):
            continue
        fam[f] = fam.get(f, 0) + 1
        n += 1
        yield "man", os.path.relpath(p, "/usr/share/man"), query, doc
        if n >= n_pages:
            return


EVAL_PER_FILE = 50   # at most this many pairs of one file in an evaluation set
N_OOD = 1000


def load_pairs(path: str, split: str) -> list[dict]:
    """The pairs of one split, each with its line number ("line") in the file. The dev and
    test sets keep at most EVAL_PER_FILE pairs of a file (a seeded choice, file order kept),
    the out-of-domain set its first N_OOD pairs; "train" is every training pair."""
    rows = []
    with open(path, encoding="utf-8") as fh:
        for i, line in enumerate(fh):
            r = json.loads(line)
            if r["split"] == split:
                r["line"] = i
                rows.append(r)
    if split == "ood":
        return rows[:N_OOD]
    if split == "train":
        return rows
    by_file = {}
    for r in rows:
        by_file.setdefault((r["set"], r["key"]), []).append(r)
    keep = set()
    rng = random.Random(0)
    for key, rs in by_file.items():
        pick = rs if len(rs) <= EVAL_PER_FILE else rng.sample(rs, EVAL_PER_FILE)
        keep.update(r["line"] for r in pick)
    return [r for r in rows if r["line"] in keep]


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", required=True)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--n-ood", type=int, default=1300, help="man pages to render (>= 1,000 kept after filters)")
    a = ap.parse_args(argv)
    rng = random.Random(a.seed)
    stats = {}
    seen = set()
    with open(a.out, "w") as out:
        gens = [cmake_pairs(), vim_pairs(), pydoc_pairs(), pypi_pairs(), debdoc_pairs(), man_pairs(rng, a.n_ood)]
        for gen in gens:
            for src, key, query, doc in gen:
                query = re.sub(r"\s+", " ", html.unescape(query)).strip()
                doc = cut_doc(clean(doc))
                if not 3 <= word_count(query) <= 40 or len(doc.encode()) < DOC_MIN:
                    continue
                if (src, query.lower()) in seen:
                    continue
                seen.add((src, query.lower()))
                split = "ood" if src == "man" else SPLIT_NAME[split_of(src, key.rstrip("/"))]
                out.write(json.dumps({"set": src, "split": split, "key": key, "query": query, "doc": doc}) + "\n")
                stats[(src, split)] = stats.get((src, split), 0) + 1
            print(f"search_sets: {src} done", file=sys.stderr, flush=True)
    for (src, split), n in sorted(stats.items()):
        print(f"{src:7s} {split:6s} {n:6d} pairs", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
