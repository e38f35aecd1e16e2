#!/usr/bin/env python3
"""spectral-quantize and the compressed-weight loader against numpy and gguf-py.

    python3 tests/test_quantize.py --quantize build/tools/spectral-quantize \\
        --embed build/tools/spectral-embed --dump build/tests/test_codecs \\
        --data tests/data --work /tmp/qwork

Models: a random spectralmlp (tools/convert/make_model.py, D = 64, F = 128, L = 2)
and FNet's test model (tests/data/fnet/model.gguf). For each codec the
quantized file is read back with gguf-py (any GGUF reader must read it) and
every converted tensor is checked:

  * q8_0, q4_0: the bytes equal both this file's numpy transcription of
    ggml's quantize_row_q8_0_ref / quantize_row_q4_0_ref and gguf-py's
    gguf.quants.quantize, exactly; our loader's float32 values
    (test_codecs dump) equal gguf.quants.dequantize's exactly.
  * sst: the kept bins equal numpy's choice (numpy.fft.rfft2, norm="ortho",
    top-k by |X|^2 times the bins each stands for; bins whose energies tie
    within 1e-9 of the cut may differ), the values equal numpy's rounded to
    F16 (to 1 F16 ulp), and the loader's reconstruction equals
    numpy.fft.irfft2 of the stored pair within 1e-5 of max |W|.
  * f16: the loader's values equal numpy's float16 rounding exactly.

End to end, on the spectralmlp model: spectral-embed's token states for the
quantized file equal tools/convert/reference.py's float64 forward run with the same
dequantized weights, max |c - ref| / max |ref| <= 1e-4 (the parity bound of
tests/parity.py). Their mean-pooled cosine to the F32 model is printed, and
checked against loose floors (f16 0.9999, q8_0 0.999, q4_0 0.98) that
catch a wrong codec without being a benchmark.

CLI: --help, usage errors (exit 2), refusing IN as OUT (IN unchanged),
unreadable input, bad regex, unfit selection (exit 1), type names in any case (Q8_0 as q8_0).

The output path: a device node, a FIFO or a directory is refused before
anything is written and left as it was; a write that fails (a file-size
limit standing in for a full disk) leaves an existing OUT untouched and no
temporary file behind; a successful run replaces a regular OUT (through a
symbolic link, the link's target) in one rename.

Exit 0 pass, 1 fail, 77 skip (numpy or gguf missing)."""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import resource
import shutil
import signal
import stat
import struct
import subprocess
import sys

import harness  # noqa: E402  (also puts tools/convert on sys.path)
from harness import check, failures  # noqa: E402

harness.require("numpy", "gguf")
import numpy as np  # noqa: E402
import gguf  # noqa: E402
from gguf import GGMLQuantizationType as Q  # noqa: E402
from gguf.quants import dequantize, quantize  # noqa: E402

import make_model  # noqa: E402
import reference  # noqa: E402


# ---- numpy references --------------------------------------------------------

def roundf(x):
    """C roundf: half away from zero."""
    return np.sign(x) * np.floor(np.abs(x) + np.float32(0.5))


def q8_0_ref(x: np.ndarray) -> np.ndarray:
    """quantize_row_q8_0_ref: d = max|x| / 127, q = roundf(x * (1/d))."""
    b = x.astype(np.float32).reshape(-1, 32)
    d = (np.abs(b).max(axis=1, keepdims=True) / np.float32(127)).astype(np.float32)
    with np.errstate(divide="ignore"):
        inv = np.where(d == 0, np.float32(0), np.float32(1) / d).astype(np.float32)
    q = roundf((b * inv).astype(np.float32)).astype(np.int8)
    return np.concatenate([d.astype(np.float16).view(np.uint8), q.view(np.uint8)], axis=1)


def q4_0_ref(x: np.ndarray) -> np.ndarray:
    """quantize_row_q4_0_ref: the first value of largest |x| maps to -8."""
    b = x.astype(np.float32).reshape(-1, 32)
    i = np.abs(b).argmax(axis=1)
    mx = b[np.arange(len(b)), i][:, None]
    d = (mx / np.float32(-8)).astype(np.float32)
    with np.errstate(divide="ignore"):
        inv = np.where(d == 0, np.float32(0), np.float32(1) / d).astype(np.float32)
    q = np.minimum(np.trunc((b * inv).astype(np.float32) + np.float32(8.5)), 15).astype(np.uint8)
    packed = q[:, :16] | (q[:, 16:] << 4)
    return np.concatenate([d.astype(np.float16).view(np.uint8), packed], axis=1)


def sst_layout(M, N):
    Nh = N // 2 + 1
    r, c = np.meshgrid(np.arange(M), np.arange(Nh), indexing="ij")
    sc_col = (c == 0) | ((N % 2 == 0) & (c == N // 2))
    storable = ~(sc_col & (2 * r > M))
    self_conj = sc_col & ((r == 0) | (2 * r == M))
    return Nh, storable.ravel(), self_conj.ravel()


def sst_ref_encode(W: np.ndarray, k: int):
    """Indices (sorted), values and weighted energies of numpy's top-k."""
    M, N = W.shape
    X = np.fft.rfft2(W.astype(np.float64), norm="ortho").ravel()
    _, storable, self_conj = sst_layout(M, N)
    e = np.where(self_conj, 1.0, 2.0) * np.abs(X) ** 2
    cand = np.nonzero(storable)[0]
    order = cand[np.lexsort((cand, -e[cand]))]
    return np.sort(order[:k]), X, e, order


def sst_ref_decode(values: np.ndarray, index: np.ndarray, M: int, N: int) -> np.ndarray:
    Nh, _, self_conj = sst_layout(M, N)
    H = np.zeros(M * Nh, dtype=np.complex128)
    v = values[:, 0].astype(np.float64) + 1j * values[:, 1].astype(np.float64)
    v = np.where(self_conj[index], v.real, v)
    H[index] = v
    H = H.reshape(M, Nh)
    for j, idx in enumerate(index):  # the implied conjugates in columns 0 and N/2
        r, c = divmod(int(idx), Nh)
        if (c == 0 or (N % 2 == 0 and c == N // 2)) and not self_conj[idx]:
            H[M - r, c] = np.conj(v[j])
    return np.fft.irfft2(H, s=(M, N), norm="ortho")


# ---- helpers -------------------------------------------------------------------

def run(args, **kw):
    return subprocess.run(args, capture_output=True, text=True, **kw)


def tensors_of(path):
    r = gguf.GGUFReader(path)
    return r, {t.name: t for t in r.tensors}


def dense(t) -> np.ndarray:
    """float32 (ne1, ne0) array of a plain or quantized gguf-py tensor."""
    shape = tuple(int(d) for d in reversed(t.shape.tolist()))
    if t.tensor_type in (Q.F32, Q.F16):
        return np.asarray(t.data).astype(np.float32).reshape(shape)
    return dequantize(np.asarray(t.data), t.tensor_type).astype(np.float32).reshape(shape)


def loader_values_bin(dump_bin, path, name, shape):
    p = subprocess.run([dump_bin, "dump", path, name], capture_output=True)
    if p.returncode != 0:
        failures.append(f"dump {name} from {path}: {p.stderr.decode(errors='replace').strip()}")
        return np.zeros(shape, np.float32)
    return np.frombuffer(p.stdout, dtype=np.float32).reshape(shape)


def sst_pairs(r):
    """{NAME: (values float32 (k, 2), index int64 (k,), (M, N))}."""
    ts = {t.name: t for t in r.tensors}
    out = {}
    for name, t in ts.items():
        if not name.endswith(".sst_values"):
            continue
        base = name[: -len(".sst_values")]
        idx = np.asarray(ts[base + ".sst_index"].data).astype(np.int64)
        val = np.asarray(t.data).astype(np.float32).reshape(-1, 2)
        f = r.fields[base + ".sst_shape"]
        ne = [int(f.parts[i][0]) for i in f.data]
        out[base] = (val, idx, (ne[1], ne[0]), t.tensor_type)
    return out


# ---- checks --------------------------------------------------------------------

def check_file(args, src_path, out_path, typ, keep):
    _, src = tensors_of(src_path)
    r, out = tensors_of(out_path)
    converted = {}
    if typ == "sst":
        pairs = sst_pairs(r)
        check(len(pairs) > 0, f"{out_path}: no sst tensors")
        for base, (val, idx, (M, N), vtype) in pairs.items():
            W = dense(src[base]).astype(np.float64)
            check(W.shape == (M, N), f"{base}: sst shape {(M, N)} != {W.shape}")
            _, storable, _ = sst_layout(M, N)
            k = len(idx)
            check(k == max(1, min(int(storable.sum()), int(round(keep * storable.sum())))),
                  f"{base}: k = {k} for keep {keep} of {storable.sum()}")
            ref_idx, X, e, order = sst_ref_encode(W, k)
            if not np.array_equal(ref_idx, idx):
                cut = e[order[k - 1]]
                diff = np.setxor1d(ref_idx, idx)
                check(np.all(np.abs(e[diff] - cut) <= 1e-9 * max(cut, 1e-300)),
                      f"{base}: kept bins differ from numpy's beyond ties: {diff[:8]}")
            check(np.all(np.diff(idx) > 0), f"{base}: index not increasing")
            want = np.stack([X[idx].real, X[idx].imag], axis=1)
            _, _, self_conj = sst_layout(M, N)
            want[self_conj[idx], 1] = 0.0
            if vtype == Q.F16:  # one F16 ulp: C rounds double -> float -> half
                tol = np.spacing(np.abs(want).astype(np.float16)).astype(np.float64)
            else:
                tol = 1e-6 * np.abs(want) + 1e-9
            check(np.all(np.abs(val - want) <= tol * 1.0001),
                  f"{base}: values differ from numpy's rfft2: max {np.max(np.abs(val - want)):.3g}")
            rec = sst_ref_decode(val, idx, M, N)
            got = loader_values_bin(args.dump, out_path, base, (M, N))
            err = np.max(np.abs(got - rec)) / max(np.max(np.abs(W)), 1e-30)
            check(err <= 1e-5, f"{base}: loader reconstruction vs numpy irfft2: {err:.3g}")
            converted[base] = got.astype(np.float64)
        return converted
    qtype = {"q8_0": Q.Q8_0, "q4_0": Q.Q4_0, "f16": Q.F16}[typ]
    for name, t in out.items():
        if t.tensor_type != qtype or src[name].tensor_type == qtype:
            continue
        x = dense(src[name])
        raw = np.asarray(t.data)
        if typ in ("q8_0", "q4_0"):
            mine = (q8_0_ref if typ == "q8_0" else q4_0_ref)(x)
            theirs = quantize(x, qtype)
            check(np.array_equal(raw.reshape(-1), mine.reshape(-1)),
                  f"{name}: {typ} bytes differ from the numpy transcription of ggml's reference")
            check(np.array_equal(raw.reshape(-1), np.asarray(theirs).reshape(-1)),
                  f"{name}: {typ} bytes differ from gguf.quants.quantize")
            want = dequantize(raw, qtype).astype(np.float32).reshape(x.shape)
        else:
            want = x.astype(np.float16).astype(np.float32)
        got = loader_values_bin(args.dump, out_path, name, x.shape)
        check(np.array_equal(got, want), f"{name}: loader's {typ} values differ from gguf-py's "
              f"(max {np.max(np.abs(got - want)):.3g})")
        converted[name] = want.astype(np.float64)
    check(len(converted) > 0, f"{out_path}: no {typ} tensors")
    return converted


def embed_states(embed_bin, model_path, files, dtype="auto"):
    p = run([embed_bin, "-m", model_path, "--pooling", "none", "--no-normalize", "-t", "2",
             "--dtype", dtype, "--output-format", "jsonl", *files])
    if p.returncode != 0:
        failures.append(f"spectral-embed {model_path}: {p.stderr.strip()}")
        return [np.zeros((1, 1))] * len(files)
    return [np.asarray(json.loads(line)["embeddings"], dtype=np.float64) for line in p.stdout.splitlines()]


def check_cli(args, model, work):
    q = args.quantize
    out = os.path.join(work, "cli_out.gguf")
    p = run([q, "--help"])
    check(p.returncode == 0 and "usage: spectral-quantize" in p.stdout, "--help")
    for bad in ([], [model], [model, out], [model, out, "--type", "q3"], [model, out, "--type"],
                [model, out, "--type", "sst", "--keep", "0"], [model, out, "--type", "sst", "--keep", "1.5"],
                [model, out, "--type", "sst", "--keep", "x"], [model, out, "a", "--type", "q8_0"],
                [model, out, "--type", "q8_0", "--bogus"]):
        p = run([q, *bad])
        check(p.returncode == 2 and p.stderr.strip(), f"usage error {bad}: rc {p.returncode}")
    before = hashlib.sha256(open(model, "rb").read()).hexdigest()
    p = run([q, model, model, "--type", "q8_0"])
    check(p.returncode == 1 and "refusing to overwrite" in p.stderr, f"IN as OUT: rc {p.returncode} {p.stderr}")
    link = os.path.join(work, "cli_link.gguf")
    if os.path.lexists(link):
        os.remove(link)
    os.symlink(os.path.abspath(model), link)
    p = run([q, model, link, "--type", "q8_0"])
    check(p.returncode == 1 and "refusing to overwrite" in p.stderr, f"OUT a link to IN: rc {p.returncode}")
    check(hashlib.sha256(open(model, "rb").read()).hexdigest() == before, "IN changed")
    p = run([q, os.path.join(work, "missing.gguf"), out, "--type", "q8_0"])
    check(p.returncode == 1 and "missing.gguf" in p.stderr, f"missing input: {p.stderr}")
    notgguf = os.path.join(work, "not.gguf")
    with open(notgguf, "wb") as fh:
        fh.write(b"hello, not a model\n")
    p = run([q, notgguf, out, "--type", "q8_0"])
    check(p.returncode == 1 and "magic" in p.stderr, f"non-GGUF input: {p.stderr}")
    p = run([q, model, out, "--type", "q8_0", "--tensors", "("])
    check(p.returncode == 1 and "regex" in p.stderr, f"bad regex: {p.stderr}")
    if os.path.exists(out):  # left by an earlier run of this test
        os.remove(out)
    p = run([q, model, out, "--type", "sst", "--tensors", "mix_filter"])
    check(p.returncode == 1 and "mix_filter" in p.stderr and not os.path.exists(out),
          f"unfit selection: {p.stderr}")
    p = run([q, model, os.path.join(work, "no-such-dir", "x.gguf"), "--type", "q8_0"])
    check(p.returncode == 1 and p.stderr.strip(), f"unwritable output: rc {p.returncode}")
    for typ in ("Q8_0", "Q4_0", "F16", "SST"):  # as llama-quantize users type them
        p = run([q, model, out, "--type", typ])
        check(p.returncode == 0, f"--type {typ}: rc {p.returncode} {p.stderr}")
    p = run([q, model, out, "--type=q4_0", "--tensors=ffn_up", "-v"])
    check(p.returncode == 0 and "ffn_up.weight" in p.stderr and "q4_0" in p.stderr, f"-v: {p.stderr}")
    r, ts = tensors_of(out)
    types = {n: t.tensor_type for n, t in ts.items()}
    check(types["blk.0.ffn_up.weight"] == Q.Q4_0 and types["blk.0.ffn_down.weight"] == Q.F32,
          "--tensors selects only matching tensors")


def check_output_path(args, model, work):
    """Issue 21, item 1: nothing but a regular file the tool wrote is ever removed or replaced."""
    q = args.quantize
    d = os.path.join(work, "outpath")
    shutil.rmtree(d, ignore_errors=True)  # left by an earlier run
    os.makedirs(d)

    def leftovers():
        return sorted(n for n in os.listdir(d) if n not in {"dev", "fifo", "precious.gguf", "target.gguf",
                                                           "link.gguf", "fresh.gguf", "subdir"})

    def quantize(out, preexec=None):
        try:
            return subprocess.run([q, model, out, "--type", "q8_0"], capture_output=True, text=True,
                                  timeout=60, preexec_fn=preexec)
        except subprocess.TimeoutExpired:
            return None

    dev = os.path.join(d, "dev")
    try:  # a character device that fails every write, as /dev/full does (needs CAP_MKNOD)
        os.mknod(dev, 0o666 | stat.S_IFCHR, os.makedev(1, 7))
    except (PermissionError, OSError) as e:
        print(f"(no device node test: {e})")
        dev = None
    if dev:
        p = quantize(dev)
        check(p is not None and p.returncode == 1 and "not a regular file" in p.stderr,
              f"OUT a device: {p and (p.returncode, p.stderr)}")
        check(os.path.lexists(dev) and stat.S_ISCHR(os.lstat(dev).st_mode), "the device node is still there")
    fifo = os.path.join(d, "fifo")
    os.mkfifo(fifo)
    p = quantize(fifo)  # before: blocked opening it, then removed it
    check(p is not None and p.returncode == 1 and "not a regular file" in p.stderr,
          f"OUT a FIFO: {p and (p.returncode, p.stderr)}")
    check(os.path.lexists(fifo) and stat.S_ISFIFO(os.lstat(fifo).st_mode), "the FIFO is still there")
    sub = os.path.join(d, "subdir")
    os.mkdir(sub)
    p = quantize(sub)
    check(p is not None and p.returncode == 1 and os.path.isdir(sub), f"OUT a directory: {p and p.stderr}")

    precious = os.path.join(d, "precious.gguf")
    with open(precious, "wb") as fh:
        fh.write(b"precious bytes")

    def small_files():  # a write error part-way (EFBIG), as a full disk would give
        resource.setrlimit(resource.RLIMIT_FSIZE, (16384, 16384))
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)

    p = quantize(precious, small_files)
    check(p is not None and p.returncode == 1 and "File too large" in p.stderr, f"write error: {p and p.stderr}")
    check(os.path.exists(precious) and open(precious, "rb").read() == b"precious bytes",
          "a failed write leaves the existing OUT as it was")
    check(leftovers() == [], f"no temporary file left behind: {leftovers()}")
    p = quantize(precious)
    check(p is not None and p.returncode == 0 and open(precious, "rb").read(4) == b"GGUF",
          f"success replaces a regular OUT: {p and p.stderr}")
    fresh = os.path.join(d, "fresh.gguf")
    p = quantize(fresh)
    mask = os.umask(0)
    os.umask(mask)
    check(p is not None and p.returncode == 0 and stat.S_IMODE(os.stat(fresh).st_mode) == 0o666 & ~mask,
          f"a new OUT gets the usual mode: {oct(stat.S_IMODE(os.stat(fresh).st_mode))}")
    target, link = os.path.join(d, "target.gguf"), os.path.join(d, "link.gguf")
    with open(target, "wb") as fh:
        fh.write(b"old")
    os.symlink("target.gguf", link)
    p = quantize(link)
    check(p is not None and p.returncode == 0 and os.path.islink(link) and open(target, "rb").read(4) == b"GGUF",
          f"OUT a link: the link stays, its target is written: {p and p.stderr}")
    check(leftovers() == [], f"no temporary file left behind: {leftovers()}")


def check_nonfinite_weights(args, work):
    """Issue 21, item 7: a NaN or Inf anywhere in the weights (a value of an F32, F16 or BF16
    tensor, a Q8_0 or Q4_0 block's scale) refuses the model at load, naming the tensor; it used to
    load and print "embedding": [null, ...] with exit 0."""
    text = os.path.join(work, "nonfinite.txt")
    with open(text, "wb") as fh:
        fh.write(b"some text to embed")
    base = {dt: os.path.join(work, f"nf_{dt}.gguf") for dt in ("f32", "f16", "bf16")}
    for dt, path in base.items():
        make_model.write_model(path, dim=64, ffn=128, layers=2, filters=8, seed=11, dtype=dt, dtype_all=True)
    for typ in ("q8_0", "q4_0"):
        base[typ] = os.path.join(work, f"nf_{typ}.gguf")
        p = run([args.quantize, base["f32"], base[typ], "--type", typ])
        check(p.returncode == 0, f"quantize {typ}: {p.stderr}")
    nan32, inf16, ninf_bf16, nan16 = (struct.pack("<I", 0x7FC00000), struct.pack("<H", 0x7C00),
                                      struct.pack("<H", 0xFF80), struct.pack("<H", 0x7E00))
    cases = [  # (model, tensor, byte offset in its data, bytes, where the message says it is)
        ("f32", "blk.0.ffn_up.weight", 4 * 5, nan32, "element 5"),
        ("f32", "token_embd.weight", 4 * 5000, nan32, "element 5000"),
        ("f32", "blk.1.ffn_norm.bias", 4 * 3, nan32, "element 3"),
        ("f16", "blk.1.ffn_down.weight", 2 * 7, inf16, "element 7"),
        ("f16", "blk.0.mix_filter.weight", 2 * 2, inf16, "element 2"),
        ("bf16", "blk.0.ffn_up.weight", 2 * 4099, ninf_bf16, "element 4099"),
        ("bf16", "blk.0.mix_norm.weight", 0, ninf_bf16, "element 0"),
        ("q8_0", "blk.0.ffn_up.weight", 34 * 3, nan16, "block 3"),   # block 3's f16 scale
        ("q4_0", "blk.1.ffn_down.weight", 18 * 1, inf16, "block 1"),  # block 1's f16 scale
    ]
    for typ, name, off, raw, where in cases:
        bad = os.path.join(work, f"nf_bad_{typ}.gguf")
        shutil.copyfile(base[typ], bad)
        t = {t.name: t for t in gguf.GGUFReader(bad).tensors}[name]
        with open(bad, "r+b") as fh:
            fh.seek(int(t.data_offset) + off)
            fh.write(raw)
        p = run([args.embed, "-m", bad, text])
        check(p.returncode == 2 and "non-finite" in p.stderr and name in p.stderr and where in p.stderr and
              "null" not in p.stdout,
              f"{typ} {name} with a non-finite value: rc {p.returncode} {p.stderr.strip()!r} {p.stdout[:80]!r}")


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--quantize", required=True)
    ap.add_argument("--embed", required=True)
    ap.add_argument("--dump", required=True)
    ap.add_argument("--data", required=True)
    ap.add_argument("--work", required=True)
    args = ap.parse_args()
    os.makedirs(args.work, exist_ok=True)
    tiny = os.path.join(args.work, "tiny.gguf")
    make_model.write_model(tiny, dim=64, ffn=128, layers=2, filters=16, seed=3)
    fnet = os.path.join(args.data, "fnet", "model.gguf")
    texts = []
    rng = np.random.default_rng(5)
    for i, n in enumerate((37, 300)):
        path = os.path.join(args.work, f"text{i}.bin")
        with open(path, "wb") as fh:
            fh.write(rng.integers(0, 256, n, dtype=np.uint8).tobytes())
        texts.append(path)
    base = reference.load_gguf(tiny)
    base_states = [reference.forward(base, reference.tokenize(base, open(p, "rb").read())) for p in texts]
    floors = {"f16": 0.9999, "q8_0": 0.999, "q4_0": 0.98, "sst": -1.0}
    for typ, keep in (("q8_0", 0.1), ("q4_0", 0.1), ("sst", 0.3), ("f16", 0.1)):
        for src in (tiny, fnet):
            out = os.path.join(args.work, f"{os.path.basename(os.path.dirname(src))}_{typ}.gguf")
            cmd = [args.quantize, src, out, "--type", typ] + (["--keep", str(keep)] if typ == "sst" else [])
            p = run(cmd)
            check(p.returncode == 0, f"{' '.join(cmd)}: {p.stderr.strip()}")
            if p.returncode != 0:
                continue
            conv = check_file(args, src, out, typ, keep)
            if src != tiny:
                continue
            m = reference.load_gguf(tiny)
            m.tensors.update(conv)
            # float32 arithmetic (--dtype f32): the numpy forward with the same weights;
            # the default (int8 products for Q8_0/Q4_0) is judged by its cosine to F32
            got = embed_states(args.embed, out, texts, "f32")
            got_auto = embed_states(args.embed, out, texts)
            for path, g, ga, b in zip(texts, got, got_auto, base_states):
                want = reference.forward(m, reference.tokenize(m, open(path, "rb").read()))
                err = np.max(np.abs(g - want)) / np.max(np.abs(want)) if g.shape == want.shape else np.inf
                check(err <= 1e-4, f"{typ}: spectral-embed --dtype f32 vs numpy forward with the same weights: {err:.3g}")
                for name, states in (("f32", g), ("auto", ga)):
                    gm, bm = states.mean(axis=0), b.mean(axis=0)
                    cos = float(gm @ bm / (np.linalg.norm(gm) * np.linalg.norm(bm))) if states.shape == b.shape else -2
                    print(f"{typ} --dtype {name}: {os.path.basename(path)} T={len(b)} parity {err:.2e}, "
                          f"mean-pooled cosine to F32 {cos:.6f}")
                    check(cos >= floors[typ], f"{typ} --dtype {name}: cosine to the F32 model {cos:.6f} < {floors[typ]}")
    check_cli(args, tiny, args.work)
    check_output_path(args, tiny, args.work)
    check_nonfinite_weights(args, args.work)
    return harness.report("test_quantize")


if __name__ == "__main__":
    sys.exit(main())
