#!/usr/bin/env python3
"""Regenerates the figures of docs/reliability.md: what spectral-embed does with
long, awkward and hostile inputs, and how its memory stays under --mem-limit.

    python3 tools/bench/reliability.py --embed build/tools/spectral-embed \
        [--model tests/data/byte-model/spectral-byte.gguf] \
        [--cap-models tests/data/byte-model/spectral-byte.gguf,models/spectral-default.gguf] \
        [--max-tokens 1048576] [--lengths 10000] [-t 2] > tables.md

Everything runs through the CLI, one process per row; peak RSS is the process's
own (VmHWM, printed by --verbose). The byte model is the default because one byte
is one token, so a file of T bytes is a document of T tokens; for a model with a
word tokenizer (the default model's bert) table 1 writes T - 2 words "the" (one token
each, plus [CLS] and [SEP]) and reports the count the CLI tokenized.

Tables:
  1. --mem-limit against peak RSS, T = 1K .. --max-tokens, for each of --cap-models:
     the cap is set to the least the document runs in (its activations with one tile
     in flight, plus its tokens, as the CLI counts them), and the excess of peak RSS
     over cap + the process's baseline (the same binary and model on a 1-token input)
     is reported.
  1b. The same excess with the cap at the document's full plan (every thread with a
     tile in flight, so every thread runs BLAS at once), by thread count, on the last of
     --cap-models: what the allowance must cover on a machine with many cores.
  2. Awkward lengths: primes next to smooth lengths, time and peak RSS.
  3. Many distinct lengths in one process (FFTW plans are cached, bounded):
     peak RSS after N documents of lengths 2 .. N+1.
  4. Bad inputs, each with its exit status and message.
"""
from __future__ import annotations

import argparse
import os
import random
import re
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))


def run(embed, args, stdin=None, feed=None, timeout=3600):
    """(exit status, stderr, seconds, peak RSS KiB or None)."""
    t0 = time.time()
    p = subprocess.run([embed, "--verbose", *args], input=feed, stdin=stdin,
                       stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, timeout=timeout)
    dt = time.time() - t0
    err = p.stderr.decode(errors="replace")
    m = re.search(r"peak RSS (\d+) KiB", err)
    return p.returncode, err, dt, int(m.group(1)) if m else None


def text_of(n, seed=0):
    r = random.Random(seed)
    letters = b"abcdefghijklmnopqrstuvwxyz     \n"
    return bytes(r.choice(letters) for _ in range(min(n, 1 << 16))) * (n // (1 << 16) + 1)


def word_tokens(embed, model, d):
    """None for a bytes tokenizer; else the tokens a text of words "the" has beyond one per
    word (its special tokens), measured through the CLI."""
    counts = []
    for k in (4, 8):
        p = os.path.join(d, f"probe{k}.txt")
        with open(p, "wb") as fh:
            fh.write(b" ".join([b"the"] * k))
        _, err, _, _ = run(embed, ["-m", model, p])
        counts.append(int(re.search(r": (\d+) tokens,", err).group(1)))
    if counts[1] - counts[0] != 4:
        return None  # not one token per word: a bytes tokenizer
    return counts[0] - 4


def first_error(err):
    lines = [l for l in err.splitlines() if l.startswith("spectral-embed:") and "warning" not in l
             and " of " not in l.split(":", 2)[-1][:12] and "model " not in l[:22]
             and "tokens," not in l]
    return lines[0].replace("spectral-embed: ", "", 1) if lines else ""


def mib(kib):
    return f"{kib / 1024:.1f}"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--embed", required=True)
    byte_model = os.path.join(HERE, "..", "..", "tests/data/byte-model/spectral-byte.gguf")
    ap.add_argument("--model", default=byte_model, help="model of tables 2 to 4")
    ap.add_argument("--cap-models", default=",".join([byte_model, os.path.join(HERE, "..", "..", "models",
                                                                                 "spectral-default.gguf")]),
                    help="comma-separated models of table 1")
    ap.add_argument("--max-tokens", type=int, default=1 << 20)
    ap.add_argument("--thread-counts", default="1,2,4,8,16", help="table 1b")
    ap.add_argument("--thread-lengths", default="65536,262144", help="table 1b")
    ap.add_argument("--lengths", type=int, default=10000, help="distinct lengths for table 3")
    ap.add_argument("-t", "--threads", type=int, default=2)
    a = ap.parse_args(argv)
    E, M, thr = a.embed, a.model, ["-t", str(a.threads)]
    out = sys.stdout
    with tempfile.TemporaryDirectory() as d:
        def write(name, data):
            p = os.path.join(d, name)
            with open(p, "wb") as fh:
                fh.write(data)
            return p

        one = write("one.txt", b"a")
        out.write("## 1. `--mem-limit` against peak RSS\n\n")
        out.write(f"{a.threads} threads. The cap is what the document needs (activations with one tile in "
                  "flight, plus its tokens); *excess* is peak RSS minus the cap minus the process's baseline "
                  "(binary, libraries, model, on a 1-token input).\n")
        for CM in a.cap_models.split(","):
            _, _, _, base = run(E, ["-m", CM, *thr, one])
            print(f"# table 1, {os.path.basename(CM)}: cap vs RSS (baseline {base} KiB)", file=sys.stderr)
            per_word = word_tokens(E, CM, d)
            out.write(f"\nModel `{os.path.basename(CM)}`, baseline {mib(base)} MiB.\n\n")
            out.write("| T (tokens) | cap (MiB) | peak RSS (MiB) | excess (MiB) | time (s) | at cap - 1 byte |\n")
            out.write("|---|---|---|---|---|---|\n")
            T = 1024
            while T <= a.max_tokens:
                data = text_of(T)[:T] if per_word is None else b" ".join([b"the"] * (T - per_word))
                f = write(f"t{T}.txt", data)
                # room for the text and tokens only: the refusal says what the pass needs
                rc, err, _, _ = run(E, ["-m", CM, *thr, "--mem-limit", str(len(data) + 4 * T + 4096), f])
                m = re.search(r"of (\d+) tokens needs [^(]*\((\d+) bytes\)", err)
                if not m:
                    out.write(f"| {T} | ? | | | | no need reported: {first_error(err)} |\n")
                    T *= 4
                    continue
                # activations + the tokens the CLI holds during the pass (4 bytes each)
                n = int(m.group(1))
                cap = int(m.group(2)) + 4 * n
                rc, err, dt, peak = run(E, ["-m", CM, *thr, "--mem-limit", str(cap), f])
                rc2, err2, _, _ = run(E, ["-m", CM, *thr, "--mem-limit", str(cap - 1), f])
                excess = peak - base - cap / 1024 if peak and rc == 0 else float("nan")
                below = "refused" if rc2 == 1 and "over" in err2 else f"exit {rc2}"
                out.write(f"| {n:,} | {cap / 2**20:.1f} | {mib(peak) if peak else '?'} | {excess / 1024:+.1f} | "
                          f"{dt:.1f} | {below} |\n")
                out.flush()
                T *= 4

        CM = a.cap_models.split(",")[-1]
        print(f"# table 1b, {os.path.basename(CM)}: the full plan by thread count", file=sys.stderr)
        per_word = word_tokens(E, CM, d)
        out.write(f"\n## 1b. The full plan, by thread count\n\nModel `{os.path.basename(CM)}`. The cap is "
                  "what the document needs with every thread's tile in flight (the arena peak of an uncapped "
                  "run, plus its tokens), so every thread runs BLAS at once; the baseline is taken with the "
                  "same thread count.\n\n")
        out.write("| threads | T (tokens) | cap (MiB) | peak RSS (MiB) | excess (MiB) |\n|---|---|---|---|---|\n")
        for T in (int(x) for x in a.thread_lengths.split(",")):
            data = text_of(T)[:T] if per_word is None else b" ".join([b"the"] * (T - per_word))
            f = write(f"full{T}.txt", data)
            for n_thr in (int(x) for x in a.thread_counts.split(",")):
                tn = ["-t", str(n_thr)]
                _, _, _, base = run(E, ["-m", CM, *tn, one])
                rc, err, _, _ = run(E, ["-m", CM, *tn, f])
                m = re.search(r"arena peak (\d+) bytes", err)
                n = re.search(r": (\d+) tokens,", err)
                if rc != 0 or not m or not n:
                    out.write(f"| {n_thr} | {T:,} | ? | | {first_error(err)} |\n")
                    continue
                cap = int(m.group(1)) + 4 * int(n.group(1))
                rc, err, _, peak = run(E, ["-m", CM, *tn, "--mem-limit", str(cap), f])
                excess = peak - base - cap / 1024 if peak and rc == 0 else float("nan")
                out.write(f"| {n_thr} | {int(n.group(1)):,} | {cap / 2**20:.1f} | {mib(peak) if peak else '?'} | "
                          f"{excess / 1024:+.1f} |\n")
                out.flush()

        print("# table 2: awkward lengths", file=sys.stderr)
        out.write("\n## 2. Awkward lengths\n\nA length with a large prime factor next to a smooth one "
                  "(no cap).\n\n| T | factors | time (s) | peak RSS (MiB) |\n|---|---|---|---|\n")
        pairs = [(65536, "2^16"), (65537, "prime"), (262144, "2^18"), (262147, "prime")]
        if a.max_tokens >= 1000003:
            pairs += [(1000000, "2^6 5^6"), (1000003, "prime")]
        for T, fac in pairs:
            f = write(f"a{T}.txt", text_of(T, 1)[:T])
            rc, err, dt, peak = run(E, ["-m", M, *thr, f])
            out.write(f"| {T:,} | {fac} | {dt:.1f} | {mib(peak) if peak else '?'} |\n")
            out.flush()

        print("# table 3: distinct lengths", file=sys.stderr)
        out.write("\n## 3. Many distinct lengths in one process\n\nDocuments of lengths 2, 3, ... N+1 "
                  "tokens, each once, one `spectral-embed` run (`-b 1`: one pass per document) of a random "
                  "model of width 16 (one layer, K = 8; the plans depend on the length, not the width); "
                  "FFTW plans stay in a bounded cache. Next to it, the longest of them alone: the "
                  "difference is what N - 1 other lengths leave behind.\n\n"
                  "| N documents | peak RSS (MiB) | time (s) | the longest alone (MiB) |\n|---|---|---|---|\n")
        # a narrow random model (D = 16, one layer): the plans depend on the length and
        # the channel tile (16), not on the width, and N documents of N lengths are
        # N^2 / 2 tokens
        tiny = os.path.join(d, "tiny.gguf")
        subprocess.run([sys.executable, os.path.join(HERE, "..", "convert", "make_model.py"), "--dim", "16", "--ffn", "32",
                        "--layers", "1", "--filters", "8", "--ctx", "1048576", "-o", tiny], check=True, stdout=subprocess.DEVNULL)
        files = []
        for n in range(2, a.lengths + 2):
            files.append(write(f"l{n}.txt", text_of(n, 2)[:n]))
        for N in sorted({min(a.lengths, x) for x in (100, 1000, 3000, a.lengths)}):
            rc, err, dt, peak = run(E, ["-m", tiny, *thr, "-b", "1", *files[:N]])
            _, _, _, alone = run(E, ["-m", tiny, *thr, "-b", "1", files[N - 1]])
            out.write(f"| {N:,} | {mib(peak) if peak else '?'} | {dt:.1f} | {mib(alone) if alone else '?'} |\n")
            out.flush()

        print("# table 4: bad inputs", file=sys.stderr)
        out.write("\n## 4. Bad inputs\n\n| input | exit | message |\n|---|---|---|\n")
        fifo = os.path.join(d, "fifo.gguf")
        os.mkfifo(fifo)
        trunc = write("trunc.gguf", open(M, "rb").read()[:5000])
        noperm = write("noperm.gguf", b"x")
        os.chmod(noperm, 0)
        big = write("big.txt", b"a" * (8 << 20))
        nan_model = write("nan.gguf", open(M, "rb").read())
        import gguf  # make_model.py above needs it too
        t = next(t for t in gguf.GGUFReader(nan_model).tensors
                 if t.tensor_type in (gguf.GGMLQuantizationType.F32, gguf.GGMLQuantizationType.F16))
        with open(nan_model, "r+b") as fh:  # a NaN as the tensor's element 3
            f32 = t.tensor_type == gguf.GGMLQuantizationType.F32
            fh.seek(int(t.data_offset) + 3 * (4 if f32 else 2))
            fh.write(b"\x00\x00\xc0\x7f" if f32 else b"\x00\x7e")
        cases = [
            ("empty file", ["-m", M, write("empty.txt", b"")], None),
            ("whitespace-only file", ["-m", M, write("blank.txt", b" \t\n\r\n")], None),
            ("binary file (all 256 byte values)", ["-m", M, write("bin.txt", bytes(range(256)))], None),
            ("a directory", ["-m", M, d], None),
            ("a missing file", ["-m", M, os.path.join(d, "missing.txt")], None),
            ("model: a FIFO", ["-m", fifo, one], None),
            ("model: truncated GGUF", ["-m", trunc, one], None),
            ("model: no read permission", ["-m", noperm, one], None),
            ("model: empty path", ["-m", "", one], None),
            ("model: a NaN in a weight", ["-m", nan_model, one], None),
            ("8 MiB file under --mem-limit 4M", ["-m", M, "--mem-limit", "4M", big], None),
            ("endless stdin under --mem-limit 16M", ["-m", M, "--mem-limit", "16M", "-"], b"x" * (64 << 20)),
            ("--mem-limit 1.5", ["-m", M, "--mem-limit", "1.5", one], None),
            ("--threads -1", ["-m", M, "-t", "-1", one], None),
        ]
        for name, args, feed in cases:
            if "permission" in name and os.geteuid() == 0:
                continue  # root reads anything
            rc, err, _, peak = run(E, args, feed=feed)
            msg = "embedded" if rc == 0 else first_error(err) or (err.strip().splitlines() or [""])[-1]
            msg = msg.replace(d, "DIR").replace("|", "\\|")
            extra = f" (peak RSS {mib(peak)} MiB)" if feed else ""
            out.write(f"| {name} | {rc} | {msg}{extra} |\n")
            out.flush()
        os.unlink(fifo)
    return 0


if __name__ == "__main__":
    sys.exit(main())
