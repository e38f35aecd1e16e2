#!/usr/bin/env python3
"""The CPU backend computing with Q8_0/Q4_0 weights kept in their blocks.

    python3 tests/test_quant_compute.py --quantize build/tools/spectral-quantize \\
        --embed build/tools/spectral-embed --data tests/data --default models/spectral-default.gguf \\
        --work /tmp/qcwork

The loader keeps a Q8_0/Q4_0 matrix (and the token table) in the file's
blocks and the forward pass decodes it into arena scratch one layer at a
time (models/loader.c, kernels/cpu/dequant_cpu.c). For a random spectralmlp
(tools/convert/make_model.py), FNet's test model and the shipped default model
(bert tokenizer, output projection; Q8_0 only, to keep the test short),
each quantized with every matrix and the token table selected:

  * reference: a float32 file with the same weights, written by
    `spectral-quantize QFILE --type f32`; its tensors are checked equal,
    exactly, to gguf-py's gguf.quants.dequantize of the quantized file's (an
    independent decoder), so the reference is "the weights dequantized at
    load";
  * outputs: spectral-embed's raw float32 output for the quantized file
    equals the reference's byte for byte, token states (--pooling none) and
    the default pooled embedding (FNet: through its pooler, which is
    quantized too), several inputs packed into one pass;
  * arena: the arena peak (-v, one thread, one input) is the reference's
    plus exactly the decode scratch the architecture plans (spectralmlp:
    max(W_up + W_down, W_out) floats; FNet: max(W_proj, W_up + W_down) plus
    the pooler's); --mem-limit at that peak runs, one byte less is refused
    (one thread: nothing to trade for memory);
  * adapters (FNet, tests/data/fourierft/fnet-adapter.gguf, targets the
    quantized dense layers): outputs equal the float32 reference's with the
    same adapter, byte for byte, and differ from those without it;
  * memory: on the default model read without mmap (--no-mmap, so the whole
    file is resident either way), spectral-embed's peak RSS with Q8_0 is
    below 3/4 of the float32 file's (measured: about 22 vs 47 MiB; the bound
    is loose on purpose, RSS is not a benchmark).

Without the change (weights dequantized at load) the outputs still match but
the arena check fails (no scratch is planned) and so does the RSS bound.

Exit 0 pass, 1 fail, 77 skip (numpy or gguf missing)."""
from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys

import harness  # noqa: E402  (also puts tools/convert on sys.path)
from harness import check  # noqa: E402

harness.require("numpy", "gguf")
import numpy as np  # noqa: E402
import gguf  # noqa: E402
from gguf import GGMLQuantizationType as Q  # noqa: E402
from gguf.quants import dequantize  # noqa: E402

import make_model  # noqa: E402

SPECTRALMLP_RE = r"^(token_embd|blk\..*\.ffn_(up|down)|output)\.weight$"
FNET_RE = r"^(token_embd|token_embd_proj|pooler|blk\..*\.ffn_(up|down))\.weight$"
QTYPES = {"q8_0": Q.Q8_0, "q4_0": Q.Q4_0}



def run(args):
    return subprocess.run(args, capture_output=True)


def tensors_of(path):
    return {t.name: t for t in gguf.GGUFReader(path).tensors}


def shape_of(t):
    return [int(d) for d in t.shape.tolist()]


def make_pair(args, src, typ, regex, tag):
    """(quantized file, float32 reference file) or None."""
    qpath = os.path.join(args.work, f"{tag}_{typ}.gguf")
    dpath = os.path.join(args.work, f"{tag}_{typ}_deq.gguf")
    for cmd in ([args.quantize, src, qpath, "--type", typ, "--tensors", regex],
                [args.quantize, qpath, dpath, "--type", "f32", "--tensors", regex]):
        p = run(cmd)
        if p.returncode != 0:
            check(False, f"{' '.join(cmd)}: {p.stderr.decode(errors='replace').strip()}")
            return None
    qt, dt = tensors_of(qpath), tensors_of(dpath)
    n = 0
    for name, t in qt.items():
        if not re.search(regex, name):
            continue
        n += 1
        check(t.tensor_type == QTYPES[typ], f"{tag} {typ}: {name} is {t.tensor_type.name}")
        want = dequantize(np.asarray(t.data), t.tensor_type).astype(np.float32).ravel()
        got = np.asarray(dt[name].data, dtype=np.float32).ravel()
        check(dt[name].tensor_type == Q.F32 and np.array_equal(got, want),
              f"{tag} {typ}: the reference's {name} is not gguf-py's dequantization")
    check(n >= 3, f"{tag} {typ}: only {n} tensors quantized")
    return qpath, dpath


def embed_raw(args, model, files, extra):
    p = run([args.embed, "-m", model, "-o", "raw", "-t", "2", *extra, *files])
    check(p.returncode == 0, f"spectral-embed {model} {extra}: {p.stderr.decode(errors='replace').strip()}")
    return p.stdout


def verbose_run(args, model, files, extra):
    """(exit status, arena peak bytes or None, peak RSS KiB or None, stderr)."""
    p = run([args.embed, "-m", model, "-v", "-t", "1", "-b", "1", *extra, *files])
    err = p.stderr.decode(errors="replace")
    m = re.search(r"arena peak (\d+) bytes, peak RSS (\d+) KiB", err)
    return p.returncode, int(m.group(1)) if m else None, int(m.group(2)) if m else None, err


def scratch_bytes(qpath, arch, pooled):
    """The decode scratch the forward (and pool) plans, from the file's shapes."""
    t = tensors_of(qpath)
    q = {n for n, x in t.items() if x.tensor_type in (Q.Q8_0, Q.Q4_0)}
    size = lambda n: int(np.prod(shape_of(t[n]))) if n in q else 0  # noqa: E731
    blocks = sorted({int(n.split(".")[1]) for n in t if n.startswith("blk.")})
    per_block = max(size(f"blk.{b}.ffn_up.weight") + size(f"blk.{b}.ffn_down.weight") for b in blocks)
    if arch == "spectralmlp":
        return 4 * max(per_block, size("output.weight"))
    return 4 * (max(per_block, size("token_embd_proj.weight")) + (size("pooler.weight") if pooled else 0))


def check_model(args, src, regex, arch, tag, texts, pooled, adapter=None, types=tuple(QTYPES)):
    for typ in types:
        pair = make_pair(args, src, typ, regex, tag)
        if not pair:
            continue
        qpath, dpath = pair
        if adapter:
            # an adapter on a quantized target merges into a float32 copy of
            # the decoded matrix: the same weights as on the float32 file
            ext = ["--adapter", adapter + ":0.5", "--pooling", "none"]
            a, b = embed_raw(args, qpath, texts, ext), embed_raw(args, dpath, texts, ext)
            plain = embed_raw(args, qpath, texts, ["--pooling", "none"])
            check(len(a) > 0 and a == b, f"{tag} {typ} with an adapter: outputs differ from the float32 "
                  f"reference's with the adapter")
            check(a != plain, f"{tag} {typ}: the adapter changed nothing")
            print(f"{tag} {typ} --adapter: {'bit-identical' if a == b else 'DIFFERENT'}")
        for extra in (["--pooling", "none", "--no-normalize"], []):
            a, b = embed_raw(args, qpath, texts, extra), embed_raw(args, dpath, texts, extra)
            check(len(a) > 0 and a == b, f"{tag} {typ} {extra}: outputs differ from the float32 "
                  f"reference ({len(a)} vs {len(b)} bytes)")
            print(f"{tag} {typ} {' '.join(extra) or 'pooled'}: {len(a)} bytes of output, "
                  f"{'bit-identical' if a == b else 'DIFFERENT'}")
        rc_q, peak_q, _, err_q = verbose_run(args, qpath, texts[:1], [])
        rc_d, peak_d, _, err_d = verbose_run(args, dpath, texts[:1], [])
        if rc_q or rc_d or peak_q is None or peak_d is None:
            check(False, f"{tag} {typ}: -v runs failed: {err_q.strip()} / {err_d.strip()}")
            continue
        want = scratch_bytes(qpath, arch, pooled)
        check(want > 0 and peak_q - peak_d == want,
              f"{tag} {typ}: arena peak {peak_q} = float32's {peak_d} + {peak_q - peak_d}, "
              f"expected + {want} of decode scratch")
        # spectral-embed's --mem-limit also counts the input's text and
        # tokens; it says how many bytes when it refuses a document
        _, _, _, err = verbose_run(args, qpath, texts[:1], ["--mem-limit", str(peak_q)])
        m = re.search(r"needs [^(]*\((\d+) bytes\).* less (\d+) bytes of input", err)
        if not m:
            check(False, f"{tag} {typ}: --mem-limit {peak_q} (no room for the input) not refused as expected: {err.strip()}")
            continue
        check(int(m.group(1)) == peak_q, f"{tag} {typ}: planned {m.group(1)} bytes, ran with {peak_q}")
        cap = peak_q + int(m.group(2))
        rc, _, _, err = verbose_run(args, qpath, texts[:1], ["--mem-limit", str(cap)])
        check(rc == 0, f"{tag} {typ}: --mem-limit {cap} (the plan + input) refused: {err.strip()}")
        rc, _, _, err = verbose_run(args, qpath, texts[:1], ["--mem-limit", str(cap - 1)])
        check(rc != 0 and "over the limit" in err,
              f"{tag} {typ}: --mem-limit {cap - 1} (one byte less) not refused (exit {rc}): {err.strip()}")
        print(f"{tag} {typ}: arena peak {peak_q}, float32 file's {peak_d}, decode scratch planned "
              f"{want}; checked --mem-limit {cap} and {cap - 1}")


def check_rss(args, texts):
    if not os.path.exists(args.default):
        print(f"no {args.default}: RSS check skipped")
        return
    rss = {}
    for typ in ("f32", "q8_0"):
        path = os.path.join(args.work, f"default_all_{typ}.gguf")
        p = run([args.quantize, args.default, path, "--type", typ, "--tensors", SPECTRALMLP_RE])
        if p.returncode != 0:
            check(False, f"quantize default {typ}: {p.stderr.decode(errors='replace').strip()}")
            return
        rc, _, kib, err = verbose_run(args, path, texts, ["--no-mmap"])
        if rc or kib is None:
            check(False, f"default {typ}: {err.strip()}")
            return
        rss[typ] = kib
    print(f"default model, --no-mmap: peak RSS f32 {rss['f32'] / 1024:.1f} MiB, "
          f"q8_0 {rss['q8_0'] / 1024:.1f} MiB")
    check(rss["q8_0"] < 0.75 * rss["f32"], f"peak RSS with Q8_0 ({rss['q8_0']} KiB) is not below 3/4 "
          f"of float32's ({rss['f32']} KiB)")


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--quantize", required=True)
    ap.add_argument("--embed", required=True)
    ap.add_argument("--data", required=True)
    ap.add_argument("--default", required=True, help="models/spectral-default.gguf")
    ap.add_argument("--work", required=True)
    args = ap.parse_args()
    os.makedirs(args.work, exist_ok=True)
    rng = np.random.default_rng(11)
    texts = []
    words = ("spectral", "mixing", "the", "of", "quantized", "weights", "model", "fourier", "a", "token")
    # FNet's test model takes at most 128 tokens (about 14 of these words)
    for i, n in enumerate((9, 150, 40, 5, 12)):
        path = os.path.join(args.work, f"text{i}.txt")
        with open(path, "w") as fh:
            fh.write(" ".join(rng.choice(words, n)) + "\n")
        texts.append(path)
    short = [texts[0], texts[3], texts[4]]
    tiny = os.path.join(args.work, "tiny.gguf")
    make_model.write_model(tiny, dim=64, ffn=128, layers=2, filters=16, seed=4)
    check_model(args, tiny, SPECTRALMLP_RE, "spectralmlp", "tiny", texts, False)
    check_model(args, os.path.join(args.data, "fnet", "model.gguf"), FNET_RE, "fnet", "fnet", short, True,
                os.path.join(args.data, "fourierft", "fnet-adapter.gguf"))
    if os.path.exists(args.default):
        # Q8_0 only: Q4_0 runs the same code, on the small models above
        check_model(args, args.default, SPECTRALMLP_RE, "spectralmlp", "default", texts, False,
                    types=("q8_0",))
    check_rss(args, texts)
    return harness.report("test_quant_compute")


if __name__ == "__main__":
    sys.exit(main())
