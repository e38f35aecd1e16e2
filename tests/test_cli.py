#!/usr/bin/env python3
"""spectral-embed end to end: exit codes, output formats, input order,
streaming, and bad inputs mixed with good ones.

usage: test_cli.py SPECTRAL_EMBED MODEL.gguf
"""
import json
import os
import re
import signal
import struct
import subprocess
import sys
import tempfile
import threading
import time

import harness
from harness import check

EMBED, MODEL = sys.argv[1], sys.argv[2]


def peak_rss_kib(args, feed=None):
    """(exit status, stderr, peak RSS in KiB) of one --verbose run; feed() writes to
    its stdin. The peak is the process's own (VmHWM, printed by --verbose): rusage's
    ru_maxrss would include this Python process's RSS, inherited across fork+exec."""
    p = subprocess.Popen([EMBED, "--verbose", *args], stdin=subprocess.PIPE if feed else subprocess.DEVNULL,
                         stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    t = threading.Thread(target=feed, args=(p.stdin,)) if feed else None
    if t:
        t.start()
    err = p.stderr.read().decode(errors="replace")
    rc = p.wait(timeout=300)
    if t:
        t.join()
    m = re.search(r"peak RSS (\d+) KiB", err)
    return rc, err, int(m.group(1)) if m else None


def run(*args, stdin=None):
    p = subprocess.run([EMBED, *args], input=stdin, capture_output=True, timeout=300)
    return p.returncode, p.stdout, p.stderr.decode(errors="replace")


with tempfile.TemporaryDirectory() as d:
    def write(name, data):
        path = os.path.join(d, name)
        with open(path, "wb") as f:
            f.write(data)
        return path

    good1 = write("good1.txt", b"The quick brown fox jumps over the lazy dog.\n")
    good2 = write("good2.txt", bytes(range(256)) * 3)  # binary input is just bytes
    empty = write("empty.txt", b"")
    odd = write('we"ird\\name.txt', b"x")
    missing = os.path.join(d, "missing.txt")
    bad_model = write("bad.gguf", b"GGUF\x02\x00\x00\x00garbage")

    # help / version / usage errors
    rc, out, err = run("--help")
    check(rc == 0 and b"usage: spectral-embed" in out and b"--mem-limit" in out, "--help")
    rc, out, err = run("--version")
    check(rc == 0 and out.startswith(b"spectral-embed "), "--version")
    for args, why in [((good1,), "no model"), (("-m", MODEL, "--pooling", "max", good1), "bad pooling"),
                      (("-m", MODEL, "--threads", "x", good1), "bad threads"),
                      (("-m", MODEL, "--mem-limit", "lots", good1), "bad size"),
                      (("-m", MODEL, "--mem-limit", "1.5", good1), "a fraction of a byte"),
                      (("-m", MODEL, "--frobnicate"), "unknown option"),
                      (("-m", MODEL, "-o"), "missing value")]:
        rc, out, err = run(*args)
        check(rc == 2 and out == b"" and "spectral-embed:" in err, f"usage error exits 2: {why} ({rc}, {err!r})")

    # model errors exit 2 with the reason
    rc, out, err = run("-m", missing, good1)
    check(rc == 2 and "cannot open" in err, f"missing model: {err!r}")
    rc, out, err = run("-m", bad_model, good1)
    check(rc == 2 and "version" in err, f"bad model: {err!r}")
    rc, out, err = run("-m", MODEL, "--device", "cuda", good1)
    check(rc == 2 and "CUDA" in err, f"cuda without a GPU/CUDA build: {err!r}")

    # good inputs, jsonl
    rc, out, err = run("-m", MODEL, good1, good2, odd)
    check(rc == 0, f"all good exits 0 ({rc}, {err})")
    lines = out.decode().splitlines()
    check(len(lines) == 3, "one line per input")
    recs = [json.loads(l) for l in lines]
    check([r["input"] for r in recs] == [good1, good2, odd], "input order and JSON escaping")
    check(recs[0]["n_tokens"] == 45 and recs[1]["n_tokens"] == 768, "n_tokens")
    n_embd = len(recs[0]["embedding"])
    norm = sum(x * x for x in recs[0]["embedding"]) ** 0.5
    check(abs(norm - 1) < 1e-5, f"normalized by default ({norm})")

    # mixed good and bad inputs: exit 1, errors on stderr, every good one still emitted in order
    rc, out, err = run("-m", MODEL, good1, empty, missing, d, good2)
    lines = out.decode().splitlines()
    check(rc == 1, f"some failed exits 1 ({rc})")
    check([json.loads(l)["input"] for l in lines] == [good1, good2], "good inputs still emitted")
    check("empty input" in err and "cannot open" in err and "directory" in err, f"errors named: {err!r}")
    check(json.loads(lines[0])["embedding"] == recs[0]["embedding"], "same result in a mixed run")

    # stdin, '-' and no FILE
    with open(good1, "rb") as f:
        data = f.read()
    rc, out, err = run("-m", MODEL, stdin=data)
    check(rc == 0 and json.loads(out)["input"] == "<stdin>", "stdin by default")
    check(json.loads(out)["embedding"] == recs[0]["embedding"], "stdin same as file")
    rc, out, err = run("-m", MODEL, "-", stdin=b"")
    check(rc == 1 and "empty input" in err, "empty stdin is an input error")
    # whitespace alone is empty too, for every tokenizer (issue 25: the default model's bert
    # tokenizer embedded it as [CLS] [SEP], the byte model as the spaces)
    blank = write("blank.txt", b" \t\n  \r\n" + "\u3000\u00a0".encode())
    default_model = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "models", "spectral-default.gguf")
    for m in (MODEL, default_model):
        rc, out, err = run("-m", m, empty, blank, good1)
        lines = out.decode().splitlines()
        check(rc == 1 and err.count("empty input") == 2 and len(lines) == 1 and json.loads(lines[0])["input"] == good1,
              f"{os.path.basename(m)}: empty and whitespace-only inputs are errors: {rc} {err!r}")
    # the README's --mem-limit examples each run the default model on a short input (issue 25:
    # its 65536 refused every input)
    readme = open(os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "README.md")).read()
    usage = readme[readme.index("spectral-embed -m MODEL [options]"):]
    usage = usage[usage.index("--mem-limit SIZE"):usage.index("-b, --batch-tokens")]
    sizes = re.findall(r"(?<![\w.])(\d+(?:\.\d+)?[KMGT]?)(?=[,\s)]|$)", usage)
    check(len(sizes) >= 2, f"README --mem-limit examples found: {sizes}")
    for size in sizes:
        rc, out, err = run("-m", default_model, "--mem-limit", size, good1)
        check(rc == 0, f"README's --mem-limit {size} with the default model: {rc} {err!r}")
    dropped = write("dropped.txt", "\u200b\ufeff\x01".encode())  # all removed by bert's text cleaning
    rc, out, err = run("-m", default_model, dropped)
    check(rc == 1 and "empty input" in err and out == b"", f"only what bert drops: {rc} {err!r}")

    # pooling none, no-normalize, float round trip through raw
    rc, out, err = run("-m", MODEL, "--pooling", "none", good1)
    rec = json.loads(out)
    check(rc == 0 and len(rec["embeddings"]) == 45 and len(rec["embeddings"][0]) == n_embd, "pooling none")
    rc, raw, err = run("-m", MODEL, "--pooling", "none", "-o", "raw", good1)
    vals = struct.unpack(f"<{45 * n_embd}f", raw)
    flat = [x for row in rec["embeddings"] for x in row]
    check(rc == 0 and all(struct.pack("<f", a) == struct.pack("<f", b) for a, b in zip(vals, flat)),
          "jsonl floats round-trip float32 exactly")
    rc, out, err = run("-m", MODEL, "--no-normalize", "--pooling", "mean", good1)
    mean = [sum(col) / 45 for col in zip(*rec["embeddings"])]
    got = json.loads(out)["embedding"]
    check(max(abs(a - b) for a, b in zip(mean, got)) < 1e-5, "mean pooling = mean of token states")
    for mode, row in (("cls", 0), ("last", -1)):
        rc, out, err = run("-m", MODEL, "--no-normalize", "--pooling", mode, good1)
        check(json.loads(out)["embedding"] == rec["embeddings"][row], f"{mode} pooling")

    # json array output streams the same records
    rc, out, err = run("-m", MODEL, "-o", "json", good1, empty, good2)
    arr = json.loads(out)
    check(rc == 1 and [r["input"] for r in arr] == [good1, good2], "json array")
    rc, out, err = run("-m", MODEL, "-o", "json", empty)
    check(rc == 1 and json.loads(out) == [], "json with no successful input is []")

    # memory limit: too small for the big input, fine for the small one
    rc, out, err = run("-m", MODEL, "--mem-limit", "64K", good1, good2)
    lines = out.decode().splitlines()
    check(rc == 1 and "needs" in err and "limit" in err and "bytes)" in err, f"mem-limit refusal message: {err!r}")
    rc, out, err = run("-m", MODEL, "--mem-limit", "1K", good1)
    check(rc == 1 and out == b"" and "needs" in err, "nothing fits")
    rc, out, err = run("-m", MODEL, "--mem-limit", "512M", "--verbose", good1, good2)
    check(rc == 0 and "arena peak" in err, "verbose reports the arena peak")

    # threads do not change results: bit for bit
    rc1, out1, _ = run("-m", MODEL, "-t", "1", good2)
    rc2, out2, _ = run("-m", MODEL, "-t", "2", good2)
    rc3, out3, _ = run("-m", MODEL, "-t", "3", good2)
    check(rc1 == rc2 == rc3 == 0 and out1 == out2 == out3, "threads give identical output")

    # packing short inputs into one pass changes nothing in the output
    many = [write(f"short{i}.txt", bytes((i * 7 + j) % 251 for j in range(20 + 37 * i))) for i in range(12)]
    rc1, packed, err1 = run("-m", MODEL, "--pooling", "none", *many)
    rc2, single, err2 = run("-m", MODEL, "--pooling", "none", "--batch-tokens", "1", *many)
    rc3, small, err3 = run("-m", MODEL, "--pooling", "none", "-b", "300", *many)
    check(rc1 == rc2 == rc3 == 0 and packed == single == small and len(packed.splitlines()) == 12,
          "--batch-tokens: identical output packed or one at a time")
    rc, out, err = run("-m", MODEL, "-b", "3", many[0], empty, many[1])
    check(rc == 1 and [json.loads(l)["input"] for l in out.decode().splitlines()] == [many[0], many[1]],
          "a bad input between packed ones: order kept, others emitted")
    for bad in ("0", "-5", "x", "99999999999999"):
        rc, out, err = run("-m", MODEL, "--batch-tokens", bad, good1)
        check(rc == 2 and out == b"", f"--batch-tokens {bad} is a usage error")

    # the output cannot be written: an error and exit 3 at once, never a silent 0
    with open("/dev/full", "wb") as full:
        p = subprocess.run([EMBED, "-m", MODEL, good1, good2], stdout=full, stderr=subprocess.PIPE, timeout=300)
    check(p.returncode == 3 and b"cannot write the output" in p.stderr, f"/dev/full: {p.returncode} {p.stderr!r}")
    p = subprocess.run([EMBED, "-m", MODEL, good1], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                       preexec_fn=lambda: os.close(1), timeout=300)
    check(p.returncode == 3 and b"cannot write the output" in p.stderr, f"closed stdout: {p.returncode} {p.stderr!r}")
    with open("/dev/full", "wb") as full:
        p = subprocess.run([EMBED, "--help"], stdout=full, stderr=subprocess.PIPE, timeout=300)
    check(p.returncode == 3, f"--help to /dev/full: {p.returncode}")
    with open("/dev/full", "wb") as full:  # issue 21, item 9: the reason, not EIO
        p = subprocess.run([EMBED, "-m", MODEL, "-o", "raw", "--pooling", "none", good1, good2], stdout=full,
                           stderr=subprocess.PIPE, timeout=300)
    check(p.returncode == 3 and b"No space left on device" in p.stderr, f"raw to /dev/full: {p.stderr!r}")
    # a reader that goes away (| head): ended by SIGPIPE as other Unix tools are, and said so
    p = subprocess.Popen([EMBED, "-m", MODEL, *([good2] * 200)], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    p.stdout.readline()
    p.stdout.close()
    err = p.stderr.read()
    rc = p.wait(timeout=300)
    check(rc == -signal.SIGPIPE and err == b"", f"| head: {rc} {err!r}")
    rc, out, err = run("--help")
    check(b"SIGPIPE" in out, "--help says what a closed pipe does")
    # --mem-limit bounds the process (text and tokens too), not only activations (issue 25)
    help_text = out.decode()
    mem_help = help_text[help_text.index("--mem-limit"):help_text.index("--batch-tokens")]
    check("text and tokens" in mem_help and "activation memory," not in mem_help, f"--help --mem-limit: {mem_help!r}")
    # a reader that goes away, with SIGPIPE ignored: EPIPE stops the run
    p = subprocess.Popen([EMBED, "-m", MODEL, *([good2] * 200)], stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, preexec_fn=lambda: signal.signal(signal.SIGPIPE, signal.SIG_IGN))
    p.stdout.readline()
    p.stdout.close()
    err = p.stderr.read()
    rc = p.wait(timeout=300)
    check(rc == 3 and b"Broken pipe" in err, f"closed pipe: {rc} {err!r}")

    # a name that is not UTF-8 still gives valid JSON, with a lossless form
    raw_name = os.path.join(os.fsencode(d), b"caf\xe9-\xff.txt")
    with open(raw_name, "wb") as f:
        f.write(b"hello")
    p = subprocess.run([os.fsencode(EMBED), b"-m", os.fsencode(MODEL), raw_name], capture_output=True, timeout=300)
    try:
        rec = json.loads(p.stdout)
        ok = "\ufffd" in rec["input"] and rec["input_percent"].endswith("caf%E9-%FF.txt")
    except ValueError:
        ok = False
    check(p.returncode == 0 and ok, f"non-UTF-8 name: {p.stdout[:200]!r}")
    rc, out, err = run("-m", MODEL, "-o", "json", good1)
    check("input_percent" not in out.decode(), "valid names have no input_percent")

    # standard input closed: an input error, not garbage
    p = subprocess.run([EMBED, "-m", MODEL], capture_output=True, preexec_fn=lambda: os.close(0), timeout=300)
    check(p.returncode == 1 and b"cannot read" in p.stderr and p.stdout == b"", f"closed stdin: {p.returncode} {p.stderr!r}")

    # a FIFO (or any non-regular file) as the model is refused at once, not waited on
    fifo = os.path.join(d, "model.fifo")
    os.mkfifo(fifo)
    rc, out, err = run("-m", fifo, good1)
    check(rc == 2 and "not a regular file" in err, f"FIFO model: {rc} {err!r}")
    rc, out, err = run("-m", "", good1)
    check(rc == 2 and "empty model path" in err, f"empty model path: {rc} {err!r}")
    rc, out2, err = run("-m", MODEL, "--no-mmap", good1)
    check(rc == 0 and out2 == run("-m", MODEL, good1)[1], "--no-mmap gives the same output")

    # a model with a hard length limit (FNet's positions) does not claim any length runs
    fnet = os.path.join(os.path.dirname(os.path.abspath(__file__)), "data", "fnet", "model.gguf")
    if os.path.exists(fnet):
        long_text = write("long.txt", b"word " * 2000)
        rc, out, err = run("-m", fnet, long_text)
        check(rc == 1 and "defined for any length" not in err and "longer than the maximum" in err,
              f"FNet over its positions: {rc} {err!r}")

    # an adapter at scale 1e30 overflows the forward pass: an error for the input (or the
    # adapter), never "embedding": [null, ...] with exit 0 (issue 21, item 7)
    data = os.path.join(os.path.dirname(os.path.abspath(__file__)), "data")
    rc, out, err = run("-m", os.path.join(data, "seed", "model.gguf"), "--adapter",
                       os.path.join(data, "fourierft", "seed-adapter.gguf") + ":1e30", good1)
    check(rc in (1, 2) and b"null" not in out and "non-finite" in err, f"adapter scale 1e30: {rc} {err!r}")

    # SIGTERM / SIGINT in the middle of long records: whole lines only, exit 143 / 130
    big = write("big.txt", bytes(range(256)) * 200)
    for sig, code in ((signal.SIGTERM, 143), (signal.SIGINT, 130)):
        p = subprocess.Popen([EMBED, "-m", MODEL, "--pooling", "none", *([big] * 40)],
                             stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
        first = p.stdout.readline()
        p.send_signal(sig)
        rest = p.stdout.read()
        rc = p.wait(timeout=300)
        lines = (first + rest).split(b"\n")
        whole = lines[-1] == b"" and all(json.loads(l)["n_tokens"] == 51200 for l in lines[:-1])
        check(rc == code and whole, f"signal {sig}: rc {rc}, {len(lines) - 1} lines, last torn: {not whole}")

    # the same signals while the process is blocked writing to a reader that has stopped
    # reading (issue 21, item 2: write() failed with EINTR, stdio dropped its buffer and the
    # rest of the record followed it): every record whole or absent, -o json a valid document
    def blocked_writer(args, sig):
        p = subprocess.Popen([EMBED, "-m", MODEL, *args], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
        deadline = time.time() + 10  # /proc/PID/wchan may not say: then a plain wait
        while time.time() < deadline and p.poll() is None:
            try:
                with open(f"/proc/{p.pid}/wchan") as fh:
                    if "pipe_write" in fh.read():
                        break
            except OSError:
                pass
            time.sleep(0.01)
        time.sleep(0.2)  # the pipe stays full: the writer is blocked in write()
        p.send_signal(sig)
        out = p.stdout.read()
        return p.wait(timeout=300), out

    mid_doc = write("mid_doc.txt", bytes(range(32, 127)) * 30)  # 2,850 tokens, ~4 MB a record
    for sig, code in ((signal.SIGINT, 130), (signal.SIGTERM, 143)):
        rc, out = blocked_writer(["--pooling", "none", mid_doc, mid_doc, mid_doc], sig)
        lines = out.split(b"\n")
        try:
            whole = lines[-1] == b"" and all(len(json.loads(l)["embeddings"]) == 2850 for l in lines[:-1])
        except ValueError:
            whole = False
        check(rc == code and whole and len(lines) >= 2,
              f"signal {sig} while blocked on a full pipe: rc {rc}, {len(lines) - 1} lines, all whole: {whole}")
    rc, out = blocked_writer(["--pooling", "none", "-o", "json", mid_doc, mid_doc, mid_doc], signal.SIGINT)
    try:
        arr = json.loads(out)
        ok = len(arr) >= 1 and all(len(r["embeddings"]) == 2850 for r in arr)
    except ValueError:
        ok = False
    check(rc == 130 and ok, f"-o json interrupted is still one JSON document: rc {rc}, {out[-60:]!r}")

    # --mem-limit bounds the process, not only activations: each input's text
    # and tokens count against it (a file over it is refused before reading)
    huge = write("huge.txt", b"a" * (3 << 20))
    rc, out, err = run("-m", MODEL, "--mem-limit", "2M", huge, good1)
    check(rc == 1 and "bytes of text are over" in err and len(out.splitlines()) == 1,
          f"a file over --mem-limit: {rc} {err!r}")
    mid = write("mid.txt", b"ab " * (400 << 10))  # 1.2 MB of text, 4.8 MB of byte tokens
    rc, out, err = run("-m", MODEL, "--mem-limit", "4M", mid)
    check(rc == 1 and "bytes of tokens are over" in err, f"text + tokens over --mem-limit: {rc} {err!r}")
    # an endless stdin stops at the cap: an error, and peak RSS within cap + the
    # process's own baseline (model, libraries) + 8 MiB
    def endless(pipe):
        try:
            for _ in range(4096):  # 256 MiB at most, so that a reader with no bound ends too
                pipe.write(b"x" * 65536)
            pipe.close()
        except BrokenPipeError:
            pass
    rc0, _, base = peak_rss_kib(["-m", MODEL, good1])
    rc, err, peak = peak_rss_kib(["-m", MODEL, "--mem-limit", "16M", "-"], feed=endless)
    check(rc0 == 0 and rc == 1 and "more than the" in err, f"endless stdin under --mem-limit: {rc} {err!r}")
    if not os.environ.get("SPECTRAL_SANITIZED"):  # ASan's shadow memory inflates RSS
        check(base and peak and peak <= base + (16 << 10) + (8 << 10),
              f"peak RSS {peak} KiB over baseline {base} KiB + 16 MiB cap + 8 MiB")

    # long inputs: a warning past the training length (4096 for the byte
    # model); --truncate N embeds the first N tokens and says so
    rc, out, err = run("-m", MODEL, "-v", good1)
    check(rc == 0 and "trained context 4096" in err, f"--verbose reports the training length: {err!r}")
    long_doc = write("long.txt", b"abcd " * 1000)  # 5000 bytes: 5000 tokens
    rc, out, err = run("-m", MODEL, long_doc)
    check(rc == 0 and "longer than the model's training context (4096)" in err and "truncated" not in err,
          f"past the training length: embedded, with a warning: {rc} {err!r}")
    rc, out, err = run("-m", MODEL, "--truncate", "4096", long_doc)
    check(rc == 0 and json.loads(out)["n_tokens"] == 4096 and "5000 tokens, truncated to the first 4096" in err
          and "training context" not in err, f"--truncate 4096: {rc} {err!r}")
    prefix = write("prefix.txt", (b"abcd " * 1000)[:4096])
    check(json.loads(out)["embedding"] == json.loads(run("-m", MODEL, prefix)[1])["embedding"],
          "--truncate: the embedding of the first 4096 tokens")
    rc, out, err = run("-m", MODEL, "--truncate", "100", good1)
    check(rc == 0 and json.loads(out)["n_tokens"] == 45 and "truncated" not in err, "--truncate: shorter inputs whole")
    for bad in ["0", "-3", "x"]:
        rc, out, err = run("-m", MODEL, "--truncate", bad, good1)
        check(rc == 2 and "--truncate" in err, f"--truncate {bad}: usage error ({rc} {err!r})")

    # the cap less the input held came out at exactly 0: that refuses, it does not uncap
    # (issue 21, item 4: A held 4,000 bytes of tokens... B's text left 0 for A's pass)
    a_txt = write("capA.txt", b"a" * 4000)
    b_txt = write("capB.txt", b"b" * ((1 << 20) - 16000))
    rc, out, err = run("-m", MODEL, "--mem-limit", "1M", "--verbose", a_txt, b_txt)
    check(rc == 1 and a_txt not in out.decode() and f"{a_txt}: a document of 4000 tokens needs" in err,
          f"a zero remainder refuses: {rc} {out[:80]!r} {err[-400:]!r}")

    # --option=value
    rc, out, err = run(f"--model={MODEL}", "--pooling=none", "--batch-tokens=7", good1)
    check(rc == 0 and len(json.loads(out)["embeddings"]) == 45, f"--opt=value: {rc} {err!r}")
    rc, out, err = run("-m", MODEL, "--no-normalize=1", good1)
    check(rc == 2 and "takes no value" in err, f"--flag=value refused: {err!r}")

sys.exit(harness.report("test_cli"))
