#!/usr/bin/env python3
"""Measure every weight codec of spectral-quantize and regenerate the table in
docs/codecs.md (between its `<!-- codec-table:begin -->` / `end` markers).

    python3 tools/quantize/codec_table.py --quantize build/tools/spectral-quantize \\
        --embed build/tools/spectral-embed [--n-docs 200] [--out docs/codecs.md]

Models: the shipped default model (models/spectral-default.gguf; its matrices
are stored F16, and the reference is that file, computed in float32 as
always) and FNet's test model (tests/data/fnet/model.gguf, random weights,
F32). For each codec:

  * file bytes, and the ratio to the same model with every tensor F32
    (`--type f32` on every float tensor: the lexical sketch's I32 bucket table is
    no weight); the converted tensors' bytes (Q8_0/Q4_0 scales,
    sst values and indices all counted) and their ratio to those tensors in F32;
  * per-tensor relative reconstruction error ||W - W'||_F / ||W||_F, computed
    here from the written file with gguf-py and numpy (not by the C code):
    mean and max over the converted tensors;
  * end to end: cosine between each held-out document's embedding (the model's
    default pooling, L2-normalized) from the codec's file and from the
    reference file, mean and min over the documents, and how often a
    document's nearest other document is the same under both.

Documents: English man pages (section 1, `man -P cat`, MANWIDTH=80), the
source docs/default-model.md names as never trained on: every k-th page of
/usr/share/man/man1 in sorted order whose rendering has >= 2 KB, cut to its
first 4 KB (2..4 KB, like the default model's out-of-domain evaluation). FNet's
test model has a 128-token context and a byte tokenizer, so it reads each
document's first 128 bytes.

Also a numpy-only analysis of how much of each kind of matrix a top-k 2-D FFT
keeps (the seed's claim), including the complex mixing filters, which sst as
a 2-D real matrix codec does not store.
"""
from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile

import numpy as np

import gguf
from gguf import GGMLQuantizationType as Q
from gguf.quants import dequantize

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
BEGIN, END = "<!-- codec-table:begin -->", "<!-- codec-table:end -->"

MODELS = [
    # name, path, regex for "every matrix", document bytes
    ("default (spectralmlp)", "models/spectral-default.gguf",
     r"(token_embd|ffn_up|ffn_down|output)\.weight$", 4096),
    ("FNet test model", "tests/data/fnet/model.gguf",
     r"(embd|position_embd|token_types|proj|ffn_up|ffn_down|pooler)\.weight$", 128),
]
CODECS = [
    # label, args
    ("f16", ["--type", "f16"]),
    ("q8_0", ["--type", "q8_0"]),
    ("q4_0", ["--type", "q4_0"]),
    ("q8_0, embeddings too", ["--type", "q8_0", "--tensors", None]),
    ("q4_0, embeddings too", ["--type", "q4_0", "--tensors", None]),
    ("sst keep 0.50", ["--type", "sst", "--keep", "0.5"]),
    ("sst keep 0.25", ["--type", "sst", "--keep", "0.25"]),
    ("sst keep 0.10", ["--type", "sst", "--keep", "0.1"]),
    ("sst keep 0.05 (20x)", ["--type", "sst", "--keep", "0.05"]),
    ("sst keep 0.01 (100x)", ["--type", "sst", "--keep", "0.01"]),
]


INTEGER_TYPES = (Q.I8, Q.I16, Q.I32, Q.I64)


def run(cmd, **kw):
    p = subprocess.run(cmd, capture_output=True, **kw)
    if p.returncode != 0:
        sys.exit(f"{' '.join(cmd)}: {p.stderr.decode(errors='replace')}")
    return p


def documents(n_docs: int, workdir: str):
    pages = sorted(os.listdir("/usr/share/man/man1")) if os.path.isdir("/usr/share/man/man1") else []
    step = max(1, len(pages) // (n_docs * 2))
    docs = []
    env = dict(os.environ, MANWIDTH="80", MAN_KEEP_FORMATTING="0")
    for name in pages[::step]:
        if len(docs) == n_docs:
            break
        m = re.match(r"(.+)\.1[^.]*(\.gz)?$", name)
        if not m:
            continue
        p = subprocess.run(["man", "-P", "cat", os.path.join("/usr/share/man/man1", name)],
                           capture_output=True, env=env)
        text = p.stdout
        if p.returncode != 0 or len(text) < 2048:
            continue
        path = os.path.join(workdir, f"doc{len(docs):04d}.txt")
        with open(path, "wb") as fh:
            fh.write(text[:4096])
        docs.append((name, path))
    return docs


def embed(embed_bin, model, files, workdir, nbytes):
    if nbytes < 4096:  # FNet: the first nbytes bytes of each document
        cut = []
        for f in files:
            c = f + f".{nbytes}"
            if not os.path.exists(c):
                with open(f, "rb") as fh, open(c, "wb") as out:
                    out.write(fh.read()[:nbytes])
            cut.append(c)
        files = cut
    p = run([embed_bin, "-m", model, "-t", "2", "--output-format", "jsonl", *files])
    return np.array([json.loads(line)["embedding"] for line in p.stdout.decode().splitlines()])


def sst_decode(val, idx, M, N):
    Nh = N // 2 + 1
    H = np.zeros((M, Nh), dtype=np.complex128)
    for (re_, im), i in zip(val.astype(np.float64), idx):
        r, c = divmod(int(i), Nh)
        sc_col = c == 0 or (N % 2 == 0 and c == N // 2)
        if sc_col and (r == 0 or 2 * r == M):
            H[r, c] = re_
        else:
            H[r, c] = re_ + 1j * im
            if sc_col:
                H[M - r, c] = re_ - 1j * im
    return np.fft.irfft2(H, s=(M, N), norm="ortho")


def read_weights(path):
    """{name: float64 matrix (numpy shape)} of every dense-able tensor, sst rebuilt;
    and {name: bytes stored} for the compressed ones."""
    r = gguf.GGUFReader(path)
    ts = {t.name: t for t in r.tensors}
    out, stored = {}, {}
    for name, t in ts.items():
        if name.endswith(".sst_index") or t.tensor_type in INTEGER_TYPES:
            continue
        if name.endswith(".sst_values"):
            base = name[: -len(".sst_values")]
            idx = np.asarray(ts[base + ".sst_index"].data).astype(np.int64)
            val = np.asarray(t.data).astype(np.float32).reshape(-1, 2)
            f = r.fields[base + ".sst_shape"]
            ne = [int(f.parts[i][0]) for i in f.data]
            out[base] = sst_decode(val, idx, ne[1], ne[0])
            stored[base] = int(t.n_bytes) + int(ts[base + ".sst_index"].n_bytes)
            continue
        shape = tuple(int(d) for d in reversed(t.shape.tolist()))
        if t.tensor_type in (Q.F32, Q.F16):
            a = np.asarray(t.data).astype(np.float64).reshape(shape)
        elif t.tensor_type == Q.BF16:
            a = (np.asarray(t.data).view(np.uint16).astype(np.uint32) << 16).view(np.float32)
            a = a.astype(np.float64).reshape(shape)
        else:
            a = dequantize(np.asarray(t.data), t.tensor_type).astype(np.float64).reshape(shape)
        out[name] = a
        stored[name] = int(t.n_bytes)
    return out, stored, {n: t.tensor_type.name for n, t in ts.items()}


def measure_model(args, label, rel_path, all_regex, nbytes, docs, work):
    src = os.path.join(ROOT, rel_path)
    f32 = os.path.join(work, "f32.gguf")
    ref_w, _, ref_types = read_weights(src)
    # every float tensor, by name (spectral-quantize refuses a selected integer table)
    every_float = "^(" + "|".join(n.replace(".", r"\.") for n in sorted(ref_w)) + ")$"
    run([args.quantize, src, f32, "--type", "f32", "--tensors", every_float])
    files = [p for _, p in docs]
    ref_e = embed(args.embed, src, files, work, nbytes)
    ref_nn = nearest(ref_e)
    rows = []
    per_tensor = {}
    size_f32 = os.path.getsize(f32)
    mtypes = ", ".join(sorted({ref_types[n] for n, a in ref_w.items() if a.ndim == 2}))
    rows.append(dict(codec=f"reference file ({mtypes} matrices)", n=0, size=os.path.getsize(src),
                     conv_f32=0, conv=0, err=None, cos=None))
    for clabel, cargs in CODECS:
        cargs = [all_regex if a is None else a for a in cargs]
        out = os.path.join(work, "q.gguf")
        p = run([args.quantize, src, out, "-v", *cargs])
        w, stored, types = read_weights(out)
        # the tensors the tool converted, from its -v lines "NAME FROM -> TO ..."
        conv = re.findall(r"^\s+(\S+)\s+\S+ -> \S+", p.stderr.decode(), flags=re.M)
        errs = {n: float(np.linalg.norm(w[n] - ref_w[n]) / np.linalg.norm(ref_w[n])) for n in conv}
        per_tensor[clabel] = errs
        e = embed(args.embed, out, files, work, nbytes)
        cos = np.sum(e * ref_e, axis=1) / (np.linalg.norm(e, axis=1) * np.linalg.norm(ref_e, axis=1))
        rows.append(dict(
            codec=clabel, n=len(conv), size=os.path.getsize(out),
            conv_f32=sum(4 * ref_w[n].size for n in conv), conv=sum(stored[n] for n in conv),
            err=(np.mean(list(errs.values())), np.max(list(errs.values()))) if errs else None,
            cos=(float(np.mean(cos)), float(np.min(cos))), nn=float(np.mean(nearest(e) == ref_nn))))
    return dict(label=label, path=rel_path, size_f32=size_f32, rows=rows, per_tensor=per_tensor,
                names=[n for n in ref_w if ref_w[n].ndim == 2])


def nearest(e):
    s = e @ e.T
    np.fill_diagonal(s, -np.inf)
    return np.argmax(s, axis=1)


def topk_fft_error(W: np.ndarray, keep: float, axis=None) -> float:
    """Relative error of keeping the largest `keep` fraction of W's 2-D FFT
    (full complex spectrum; for a real W this is what sst keeps), or of its
    1-D FFT along `axis`."""
    X = (np.fft.fft2(W, norm="ortho") if axis is None else np.fft.fft(W, axis=axis, norm="ortho")).ravel()
    e = np.sort(np.abs(X) ** 2)[::-1]
    k = max(1, int(round(keep * e.size)))
    return float(np.sqrt(max(e[k:].sum(), 0.0) / e.sum()))


def compaction_table(default_path):
    w, _, _ = read_weights(os.path.join(ROOT, default_path))
    rng = np.random.default_rng(0)
    blocks = sorted({int(n.split(".")[1]) for n in w if n.startswith("blk.")})
    ups = [w[f"blk.{i}.ffn_up.weight"] for i in blocks]
    filters = [w[f"blk.{i}.mix_filter.weight"][..., 0] + 1j * w[f"blk.{i}.mix_filter.weight"][..., 1]
               for i in blocks]
    rows, cols = ups[0].shape  # the reference matrices have ffn_up's shape

    def trained(name, mats):
        return (f"{name} (trained, {' x '.join(map(str, mats[0].shape))})", mats)

    kinds = [
        trained("ffn_up", ups),
        trained("ffn_down", [w[f"blk.{i}.ffn_down.weight"] for i in blocks]),
        trained("output", [w["output.weight"]]),
        trained("token_embd", [w["token_embd.weight"]]),
        trained("mix_filter, complex", filters),
        ("mix_filter, complex, 1-D FFT along the K taps only", "taps"),
        (f"Gaussian noise ({rows} x {cols})", [rng.standard_normal((rows, cols))]),
        (f"smooth: outer product of two sines ({rows} x {cols})",
         [np.outer(np.sin(np.linspace(0, 3, rows)), np.cos(np.linspace(0, 2, cols)))]),
    ]
    keeps = (0.01, 0.05, 0.10, 0.25, 0.50)
    lines = ["| matrix | " + " | ".join(f"keep {k:.0%}" for k in keeps) + " |",
             "|---|" + "--:|" * len(keeps)]
    for name, mats in kinds:
        axis = None
        if mats == "taps":  # a filter is a function of frequency per channel; channels are unordered
            mats, axis = filters, 1
        errs = [np.mean([topk_fft_error(m, k, axis) for m in mats]) for k in keeps]
        lines.append(f"| {name} | " + " | ".join(f"{x:.3f}" for x in errs) + " |")
    return "\n".join(lines)


def fmt_bytes(n):
    return f"{n / 1e6:.2f} MB" if n >= 1e6 else f"{n / 1e3:.1f} kB"


def render(results, n_docs, comp):
    out = []
    for res in results:
        out.append(f"### {res['label']} (`{res['path']}`)\n")
        out.append(f"All-F32 file: {fmt_bytes(res['size_f32'])}. Cosine and neighbour agreement over "
                   f"{n_docs} documents.\n")
        out.append("| codec | tensors | file | vs all-F32 | converted tensors: bytes (vs F32) | "
                   "rel. error mean / max | cosine mean / min | same nearest doc |")
        out.append("|---|--:|--:|--:|--:|--:|--:|--:|")
        for r in res["rows"]:
            if r["err"] is None and r["cos"] is None:
                out.append(f"| {r['codec']} | – | {fmt_bytes(r['size'])} | "
                           f"{res['size_f32'] / r['size']:.2f}× | – | – | 1 | 1 |")
                continue
            conv = f"{fmt_bytes(r['conv'])} ({r['conv_f32'] / r['conv']:.1f}×)" if r["conv"] else "–"
            err = f"{r['err'][0]:.4f} / {r['err'][1]:.4f}" if r["err"] else "–"
            out.append(f"| {r['codec']} | {r['n']} | {fmt_bytes(r['size'])} | "
                       f"{res['size_f32'] / r['size']:.2f}× | {conv} | {err} | "
                       f"{r['cos'][0]:.4f} / {r['cos'][1]:.4f} | {r['nn']:.3f} |")
        out.append("")
        out.append("<details><summary>per-tensor relative error</summary>\n")
        labels = list(res["per_tensor"])
        names = sorted({n for d in res["per_tensor"].values() for n in d})
        out.append("| tensor | " + " | ".join(labels) + " |")
        out.append("|---|" + "--:|" * len(labels))
        for n in names:
            out.append(f"| `{n}` | " + " | ".join(
                f"{res['per_tensor'][lab][n]:.4f}" if n in res["per_tensor"][lab] else "–"
                for lab in labels) + " |")
        out.append("\n</details>\n")
    out.append("### How much of a matrix its largest 2-D FFT coefficients hold\n")
    out.append("Relative error ||W − W'||_F / ||W||_F after keeping the largest fraction of the "
               "full 2-D spectrum (numpy only; for a real matrix this is what `sst` keeps, "
               "before F16 rounding). Default model's tensors.\n")
    out.append(comp)
    return "\n".join(out) + "\n"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quantize", required=True)
    ap.add_argument("--embed", required=True)
    ap.add_argument("--n-docs", type=int, default=200)
    ap.add_argument("--out", default=os.path.join(ROOT, "docs", "codecs.md"))
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as work:
        docs = documents(args.n_docs, work)
        if len(docs) < args.n_docs:
            sys.exit(f"{len(docs)} of {args.n_docs} documents: this machine has too few man pages in "
                     "/usr/share/man/man1 that `man` renders to 2 KB or more (needs man-db)")
        print(f"{len(docs)} documents, e.g. {', '.join(n for n, _ in docs[:5])}", file=sys.stderr)
        results = [measure_model(args, *m, docs, work) for m in MODELS]
    comp = compaction_table(MODELS[0][1])
    table = render(results, len(docs), comp)
    with open(args.out, encoding="utf-8") as fh:
        text = fh.read()
    if BEGIN not in text or END not in text:
        sys.exit(f"{args.out}: missing {BEGIN} / {END} markers")
    a, rest = text.split(BEGIN, 1)
    _, b = rest.split(END, 1)
    with open(args.out, "w", encoding="utf-8") as fh:
        fh.write(a + BEGIN + "\n" + table + END + b)
    print(table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
