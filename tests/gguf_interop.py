#!/usr/bin/env python3
"""Interop between our GGUF code and the reference Python `gguf` package.

  gguf_interop.py DUMP_EXE WORKDIR     run the checks (exit 1 on any mismatch)
  gguf_interop.py --make-seeds DIR     write tiny valid GGUF files for fuzzing

(a) files written by gguf.GGUFWriter are read by our reader (DUMP_EXE read);
(b) files written by our writer (DUMP_EXE write) are read by gguf.GGUFReader
    and by our reader; everything must match what was asked for.
"""
import os
import subprocess
import sys

import numpy as np
import gguf
from gguf import GGUFValueType as VT, GGMLQuantizationType as QT

import harness
from harness import fail

TYPE_NAMES = {
    VT.UINT8: "u8", VT.INT8: "i8", VT.UINT16: "u16", VT.INT16: "i16", VT.UINT32: "u32",
    VT.INT32: "i32", VT.FLOAT32: "f32", VT.BOOL: "bool", VT.STRING: "str", VT.ARRAY: "arr",
    VT.UINT64: "u64", VT.INT64: "i64", VT.FLOAT64: "f64",
}
NAME_TYPES = {v: k for k, v in TYPE_NAMES.items()}
TENSOR_TYPES = {QT.F32: "f32", QT.F16: "f16", QT.BF16: "bf16"}



def f32(x):
    return float(np.float32(x))


# ---- the test content: (key, type, value[, subtype]) and tensors ----

def expected_kvs():
    kvs = [
        ("t.u8", VT.UINT8, 255), ("t.i8", VT.INT8, -128), ("t.u16", VT.UINT16, 65535),
        ("t.i16", VT.INT16, -32768), ("t.u32", VT.UINT32, 4294967295), ("t.i32", VT.INT32, -2147483648),
        ("t.f32", VT.FLOAT32, f32(0.1)), ("t.bool.t", VT.BOOL, True), ("t.bool.f", VT.BOOL, False),
        ("t.str", VT.STRING, "h\u00e9llo w\u00f6rld \u2581x"), ("t.u64", VT.UINT64, 2**64 - 1),
        ("t.i64", VT.INT64, -(2**63)), ("t.f64", VT.FLOAT64, 1.0 / 3.0),
        ("a.u8", VT.ARRAY, [0, 1, 255], VT.UINT8), ("a.i8", VT.ARRAY, [-1, 127], VT.INT8),
        ("a.u16", VT.ARRAY, [7, 65535], VT.UINT16), ("a.i16", VT.ARRAY, [-300, 300], VT.INT16),
        ("a.u32", VT.ARRAY, [1, 2, 3, 4000000000], VT.UINT32),
        ("a.i32", VT.ARRAY, [-5, 0, 5], VT.INT32),
        ("a.f32", VT.ARRAY, [f32(1.5), f32(-2.25), f32(3.0e-39)], VT.FLOAT32),
        ("a.bool", VT.ARRAY, [True, False, True], VT.BOOL),
        ("a.u64", VT.ARRAY, [0, 2**64 - 1], VT.UINT64), ("a.i64", VT.ARRAY, [-(2**63), 2**63 - 1], VT.INT64),
        ("a.f64", VT.ARRAY, [1e-300, -2.5], VT.FLOAT64),
        ("a.str", VT.ARRAY, ["a", "bb", "\u2581tok", "with space", ""], VT.STRING),
    ]
    return kvs


def expected_tensors():
    rng = np.random.default_rng(1234)
    out = []
    # (name, ggml type, numpy array); numpy shape is reversed ne
    out.append(("w.f32.1d", QT.F32, rng.standard_normal(7).astype(np.float32)))
    out.append(("w.f32.2d", QT.F32, rng.standard_normal((3, 5)).astype(np.float32)))
    out.append(("w.f16.3d", QT.F16, rng.standard_normal((2, 3, 4)).astype(np.float16)))
    out.append(("w.bf16.2d", QT.BF16, rng.integers(0, 65535, (4, 6), dtype=np.uint16)))
    out.append(("w.bf16.4d", QT.BF16, rng.integers(0, 65535, (1, 2, 3, 2), dtype=np.uint16)))
    out.append(("w.f32.4d", QT.F32, rng.standard_normal((2, 1, 3, 5)).astype(np.float32)))
    out.append(("w.f16.1d", QT.F16, np.array([1.0, -0.0, 65504, 6e-8], dtype=np.float16)))
    return out


# ---- dump format (see tests/test_gguf_dump.c) ----

def hx(b):
    return b.hex() if b else "-"


def unhx(s):
    return b"" if s == "-" else bytes.fromhex(s)


def fmt_scalar(t, v):
    if t in (VT.FLOAT32, VT.FLOAT64):
        return float(v).hex()
    if t == VT.BOOL:
        return "1" if v else "0"
    if t == VT.STRING:
        return hx(v.encode("utf-8"))
    return str(int(v))


def parse_scalar(t, tok):
    if t in (VT.FLOAT32, VT.FLOAT64):
        return float.fromhex(tok)
    if t == VT.BOOL:
        return tok == "1"
    if t == VT.STRING:
        return unhx(tok).decode("utf-8")
    return int(tok)


def spec_text(kvs, tensors):
    lines = []
    for kv in kvs:
        key, t, v = kv[0], kv[1], kv[2]
        if t == VT.ARRAY:
            st = kv[3]
            lines.append(" ".join(["kv", hx(key.encode()), "arr", TYPE_NAMES[st], str(len(v))] +
                                  [fmt_scalar(st, x) for x in v]))
        else:
            lines.append(" ".join(["kv", hx(key.encode()), TYPE_NAMES[t], fmt_scalar(t, v)]))
    for name, qt, arr in tensors:
        ne = list(reversed(arr.shape))
        lines.append(" ".join(["tensor", hx(name.encode()), TENSOR_TYPES[qt], str(len(ne))] +
                              [str(n) for n in ne] + [hx(arr.tobytes())]))
    return "\n".join(lines) + "\n"


def parse_dump(text):
    kvs, tensors, meta = [], [], {}
    for line in text.splitlines():
        tok = line.split(" ")
        if tok[0] in ("version", "alignment"):
            meta[tok[0]] = int(tok[1])
        elif tok[0] == "kv":
            key, t = unhx(tok[1]).decode(), NAME_TYPES[tok[2]]
            if t == VT.ARRAY:
                st, n = NAME_TYPES[tok[3]], int(tok[4])
                vals = [parse_scalar(st, x) for x in tok[5:]]
                if len(vals) != n:
                    fail(f"dump of {key}: {len(vals)} values for n={n}")
                kvs.append((key, t, vals, st))
            else:
                kvs.append((key, t, parse_scalar(t, tok[3])))
        elif tok[0] == "tensor":
            nd = int(tok[3])
            tensors.append((unhx(tok[1]).decode(), tok[2], [int(x) for x in tok[4:4 + nd]], unhx(tok[4 + nd])))
        else:
            fail(f"unexpected dump line {line[:80]!r}")
    return meta, kvs, tensors


def norm_kv(kv):
    """Comparable form: floats compared exactly (they went through f32/f64 unchanged)."""
    if kv[1] == VT.ARRAY:
        return (kv[0], kv[1], [x for x in kv[2]], kv[3])
    return (kv[0], kv[1], kv[2])


def compare(label, meta, kvs, tensors, want_kvs, want_tensors, alignment):
    if meta.get("version") not in (None, 3):
        fail(f"{label}: version {meta.get('version')}")
    if "alignment" in meta and meta["alignment"] != alignment:
        fail(f"{label}: alignment {meta['alignment']} != {alignment}")
    got = [norm_kv(k) for k in kvs]
    want = [norm_kv(k) for k in want_kvs]
    if [k[0] for k in got] != [k[0] for k in want]:
        fail(f"{label}: key order {[k[0] for k in got]} != {[k[0] for k in want]}")
    gd = {k[0]: k for k in got}
    for w in want:
        g = gd.get(w[0])
        if g is None:
            fail(f"{label}: key {w[0]} missing")
        elif g != w:
            fail(f"{label}: key {w[0]}: got {g!r}, want {w!r}")
    if len(tensors) != len(want_tensors):
        fail(f"{label}: {len(tensors)} tensors, want {len(want_tensors)}")
    for (name, tname, ne, data), (wname, wqt, warr) in zip(tensors, want_tensors):
        wne = list(reversed(warr.shape))
        if (name, tname, ne) != (wname, TENSOR_TYPES[wqt], wne):
            fail(f"{label}: tensor {(name, tname, ne)} != {(wname, TENSOR_TYPES[wqt], wne)}")
        if data != warr.tobytes():
            fail(f"{label}: tensor {name} data differs")


def run_dump(exe, *args):
    r = subprocess.run([exe, *args], capture_output=True, text=True)
    if r.returncode != 0:
        fail(f"{os.path.basename(exe)} {' '.join(args)} failed ({r.returncode}): {r.stderr.strip()}")
        return None
    return r.stdout


def write_with_python(path, kvs, tensors, alignment=None, arch="interop"):
    w = gguf.GGUFWriter(path, arch)
    if alignment is not None:
        w.add_custom_alignment(alignment)
    for kv in kvs:
        if kv[1] == VT.ARRAY:
            w.add_key_value(kv[0], kv[2], VT.ARRAY, sub_type=kv[3])
        else:
            w.add_key_value(kv[0], kv[2], kv[1])
    for name, qt, arr in tensors:
        if qt == QT.BF16:
            w.add_tensor(name, arr, raw_dtype=QT.BF16)
        else:
            w.add_tensor(name, arr)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    # what the file holds: the writer adds general.architecture (and alignment) first
    pre = [("general.architecture", VT.STRING, arch)]
    if alignment is not None:
        pre.append(("general.alignment", VT.UINT32, alignment))
    return pre + kvs


def check_python_to_ours(exe, workdir, alignment):
    path = os.path.join(workdir, f"py_written_{alignment or 32}.gguf")
    want_kvs = write_with_python(path, expected_kvs(), expected_tensors(), alignment)
    out = run_dump(exe, "read", path)
    if out is None:
        return
    meta, kvs, tensors = parse_dump(out)
    compare(f"python->ours (align {alignment or 32})", meta, kvs, tensors, want_kvs,
            expected_tensors(), alignment or 32)


def reader_kvs(r):
    """Fields of a GGUFReader as (key, type, value[, subtype]) tuples."""
    out = []
    for f in r.fields.values():
        if f.name.startswith("GGUF."):
            continue  # the reader's pseudo-fields for the header
        t = f.types[0]
        if t == VT.ARRAY:
            st = f.types[-1]
            if st == VT.STRING:
                vals = [bytes(f.parts[i]).decode("utf-8") for i in f.data]
            else:
                vals = [f.parts[i][0].item() for i in f.data]
                if st == VT.BOOL:
                    vals = [bool(v) for v in vals]
                elif st in (VT.FLOAT32, VT.FLOAT64):
                    vals = [float(v) for v in vals]
            out.append((f.name, t, vals, st))
        elif t == VT.STRING:
            out.append((f.name, t, bytes(f.parts[f.data[0]]).decode("utf-8")))
        else:
            v = f.parts[f.data[0]][0].item()
            if t == VT.BOOL:
                v = bool(v)
            elif t in (VT.FLOAT32, VT.FLOAT64):
                v = float(v)
            out.append((f.name, t, v))
    return out


def check_ours_to_python(exe, workdir, alignment):
    kvs = expected_kvs()
    if alignment is not None:
        kvs = [("general.alignment", VT.UINT32, alignment)] + kvs
    spec = os.path.join(workdir, f"spec_{alignment or 32}.txt")
    path = os.path.join(workdir, f"c_written_{alignment or 32}.gguf")
    with open(spec, "w") as fh:
        fh.write(spec_text(kvs, expected_tensors()))
    if run_dump(exe, "write", spec, path) is None:
        return
    label = f"ours->python (align {alignment or 32})"
    try:
        r = gguf.GGUFReader(path)
    except Exception as e:  # a file the reference reader rejects is a failure, not a crash
        fail(f"{label}: gguf.GGUFReader rejected our file: {e!r}")
        return
    got_tensors = []
    for t in r.tensors:
        if t.tensor_type not in TENSOR_TYPES:
            fail(f"{label}: tensor {t.name} has type {t.tensor_type}")
            continue
        if t.data_offset % (alignment or 32):
            fail(f"{label}: tensor {t.name} data at unaligned file offset {t.data_offset}")
        got_tensors.append((t.name, TENSOR_TYPES[t.tensor_type], [int(x) for x in t.shape],
                            np.asarray(t.data).tobytes()))
    compare(label, {"version": int(r.fields["GGUF.version"].parts[0][0])}, reader_kvs(r),
            got_tensors, kvs, expected_tensors(), alignment or 32)
    if r.alignment != (alignment or 32):
        fail(f"{label}: GGUFReader alignment {r.alignment}")
    # and our own reader agrees with itself on our file
    out = run_dump(exe, "read", path)
    if out is not None:
        meta, okvs, otensors = parse_dump(out)
        compare(label + " (our reader)", meta, okvs, otensors, kvs, expected_tensors(), alignment or 32)


def make_seeds(d):
    """A few tiny valid files covering every value type and tensor type."""
    os.makedirs(d, exist_ok=True)
    small_t = [("a", QT.F32, np.arange(4, dtype=np.float32)),
               ("b", QT.F16, np.ones((2, 3), dtype=np.float16)),
               ("c", QT.BF16, np.arange(8, dtype=np.uint16).reshape(2, 2, 2))]
    write_with_python(os.path.join(d, "all_types.gguf"), expected_kvs(), small_t)
    write_with_python(os.path.join(d, "align64.gguf"), expected_kvs()[:4], small_t[:1], alignment=64)
    write_with_python(os.path.join(d, "meta_only.gguf"), expected_kvs()[9:14], [])
    write_with_python(os.path.join(d, "tensors_only.gguf"), [], small_t)
    # a minimal valid spectralmlp model (1 block, width 2) so the fuzzer reaches the model loader
    D, F, K, V = 2, 4, 1, 256
    rng = np.random.default_rng(7)
    meta = [("general.name", VT.STRING, "tiny"),
            ("spectralmlp.embedding_length", VT.UINT32, D), ("spectralmlp.feed_forward_length", VT.UINT32, F),
            ("spectralmlp.block_count", VT.UINT32, 1), ("spectralmlp.mixing.n_filters", VT.UINT32, K),
            ("spectralmlp.context_length", VT.UINT32, 64),
            ("spectralmlp.attention.layer_norm_epsilon", VT.FLOAT32, f32(1e-5)),
            ("spectralmlp.pooling_type", VT.UINT32, 1), ("tokenizer.ggml.model", VT.STRING, "bytes")]
    h = lambda *shape: rng.standard_normal(shape).astype(np.float16)
    w = lambda *shape: rng.standard_normal(shape).astype(np.float32)
    model_t = [("token_embd.weight", QT.F16, h(V, D)),
               ("blk.0.mix_norm.weight", QT.F32, w(D)), ("blk.0.mix_norm.bias", QT.F32, w(D)),
               ("blk.0.mix_filter.weight", QT.F16, h(D, K, 2)), ("blk.0.mix_filter.bias", QT.F32, w(D)),
               ("blk.0.ffn_norm.weight", QT.F32, w(D)), ("blk.0.ffn_norm.bias", QT.F32, w(D)),
               ("blk.0.ffn_up.weight", QT.F16, h(F, D)), ("blk.0.ffn_up.bias", QT.F32, w(F)),
               ("blk.0.ffn_down.weight", QT.F16, h(D, F)), ("blk.0.ffn_down.bias", QT.F32, w(D))]
    write_with_python(os.path.join(d, "spectralmlp_tiny.gguf"), meta, model_t, arch="spectralmlp")
    for f in sorted(os.listdir(d)):
        print(f, os.path.getsize(os.path.join(d, f)))


def main():
    if len(sys.argv) == 3 and sys.argv[1] == "--make-seeds":
        make_seeds(sys.argv[2])
        return 0
    if len(sys.argv) != 3:
        print(__doc__, file=sys.stderr)
        return 2
    exe, workdir = sys.argv[1], sys.argv[2]
    os.makedirs(workdir, exist_ok=True)
    for alignment in (None, 64):
        check_python_to_ours(exe, workdir, alignment)
        check_ours_to_python(exe, workdir, alignment)
    return harness.report("gguf interop (python->ours and ours->python, alignments 32 and 64)")


if __name__ == "__main__":
    sys.exit(main())
