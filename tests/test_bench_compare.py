#!/usr/bin/env python3
"""Checks tools/bench/bench_compare.py without PyTorch (CI never has it):

1. importing it does not import torch (only its `_worker` child does);
2. the -p length syntax (the same as spectral-bench's);
3. the Markdown report from synthetic rows: columns, speed-ups, statuses, the
   quiet-vs-loaded table;
4. with the built tools given, the exact spectral-bench command line it uses
   (plain and under `env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE`) still
   runs and gives rows it can read, and spectral-embed gives T x D raw states
   for the token-state check;
5. without PyTorch the script stops with a one-line message, not a traceback
   (torch is hidden behind a fake package that fails to import).

Usage: python3 tests/test_bench_compare.py [SPECTRAL_BENCH SPECTRAL_EMBED]
"""
import argparse
import os
import subprocess
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
TOOLS = os.path.join(HERE, "..", "tools", "bench")
sys.path.insert(0, TOOLS)

import harness  # noqa: E402  (also puts tools/convert, make_model's, on sys.path)
from harness import check, failures  # noqa: E402
import bench_compare as bc  # noqa: E402


# 1. no torch at import time
check("torch" not in sys.modules, "importing bench_compare imported torch")

# 2. lengths
check(bc.parse_lengths("512,1024") == [512, 1024], "parse 512,1024")
check(bc.parse_lengths("512-4096*2") == [512, 1024, 2048, 4096], "parse 512-4096*2")
check(bc.parse_lengths("1k-2k+512") == [1024, 1536, 2048], "parse 1k-2k+512")
check(bc.parse_lengths(bc.DEFAULT_LENGTHS)[-1] == 65536, "default lengths end at 65536")
for bad in ("1", "abc", "4096-512", "512-1024*1"):
    try:
        bc.parse_lengths(bad)
        harness.fail(f"parse_lengths accepted {bad!r}")
    except argparse.ArgumentTypeError:
        pass


# 3. the report
def row(impl, T, ms, load="quiet", **kw):
    r = dict(impl=impl, n_tokens=T, setting="environment as is", load=load)
    r.update(bc.timing_fields([ms / 1e3, ms / 1e3], T) if ms else {})
    r.update(kw)
    return r


rows = [row("spectral", 512, 10.0), row("torch-eager-complex", 512, 40.0),
        row("torch-eager-rfft", 512, 30.0), row("torch-compile", 512, 20.0, compile_s=12.5),
        row("spectral", 1024, 20.0), row("torch-eager-complex", 1024, 80.0),
        row("torch-eager-rfft", 1024, 60.0), row("torch-compile", 1024, None, status="compile > 5 s"),
        row("spectral", 512, 13.0, "spin"), row("torch-eager-rfft", 512, 90.0, "spin"),
        row("spectral", 1024, 30.0, "spin"), row("torch-eager-rfft", 1024, 120.0, "spin")]
args = argparse.Namespace(n_tokens=[512, 1024], repetitions=2, threads=2, no_compile=False, load="spin")
meta = dict(date="2026-01-01 00:00", argv=["-p", "512,1024"], load_desc="2 busy-looping processes",
            machine=dict(cpu="Test CPU", logical_cpus=2, cores=2, usable_cpus=2, loadavg="0.00 0.00 0.00"),
            model=dict(desc="random", D=256, F=1024, L=4, K=128, V=256, types="F32"),
            torch="9.9", blas="mkl", spectral_version="0.1.0, release",
            check=dict(n_tokens=777, complex=2e-6, rfft=3e-6), compile_diff=1e-7)
md = bc.markdown(rows, meta, args)
lines = md.splitlines()
check(any(ln.startswith("**spectral vs PyTorch on the CPU**") and "Test CPU" in ln and "torch 9.9" in ln
          and "2 threads used" in ln for ln in lines), "header line names the machine and torch")
check("| T | spectral ms | torch eager complex ms | torch eager rfft ms | torch.compile ms | "
      "spectral speed-up vs eager rfft | vs compile |" in lines, "table header")
check("| 512 | 10.0 ± 0.0 | 40.0 ± 0.0 | 30.0 ± 0.0 | 20.0 ± 0.0 | 3.00x | 2.00x |" in lines,
      "512 row and speed-ups")
check("| 1024 | 20.0 ± 0.0 | 80.0 ± 0.0 | 60.0 ± 0.0 | compile > 5 s | 3.00x | - |" in lines,
      "1024 row with a compile status")
check(any("512: 12.5 s" in ln for ln in lines), "compile time reported separately")
check(any(ln.startswith("#### Shared machine") for ln in lines), "quiet-vs-loaded table")
check("| 512 | 10.0 ± 0.0 | 13.0 ± 0.0 | 1.30x | 30.0 ± 0.0 | 90.0 ± 0.0 | 3.00x | 20.0 ± 0.0 | - | - |"
      in lines, "slowdown row")
check("2.0e-06 (eager complex)" in md and "3.0e-06 (eager rfft)" in md, "check result in the report")
check(not any(ln.startswith("#### Low precision") for ln in lines), "no low-precision table without its rows")
# the low-precision table: spectral OpenBLAS / int8 and torch dynamic int8 next to the f32 rows
lowp = rows + [row("spectral-openblas", 512, 12.0), row("spectral-int8", 512, 5.0),
               row("spectral-q8-f32", 512, 9.0), row("torch-dynamic-int8", 512, 15.0),
               row("spectral-openblas", 1024, 24.0), row("spectral-q8-f32", 1024, 18.0),
               row("spectral-int8", 1024, None, status="error: x")]
meta["system_info"] = "cpu: avx2 fma | kernels: f32 avx2, int8 avx2, bf16 avx2 (emulated)"
md2 = bc.markdown(lowp, meta, args)
lines2 = md2.splitlines()
check(any(ln.startswith("#### Low precision: environment as is, quiet") for ln in lines2), "low-precision table")
check(any("kernels: f32 avx2, int8 avx2" in ln for ln in lines2), "the kernels named")
check("| T | spectral f32 ms | spectral f32 OpenBLAS ms | spectral Q8_0 as f32 ms | spectral int8 (Q8_0) ms | "
      "torch.compile f32 ms | torch dynamic int8 ms | f32 packed vs OpenBLAS | int8 vs own f32 | "
      "int8 vs torch.compile f32 | int8 vs torch int8 |" in lines2, "low-precision header")
check("| 512 | 10.0 ± 0.0 | 12.0 ± 0.0 | 9.00 ± 0.00 | 5.00 ± 0.00 | 20.0 ± 0.0 | 15.0 ± 0.0 | 1.20x | 1.80x | "
      "4.00x | 3.00x |" in lines2, "low-precision 512 row")
check("| 1024 | 20.0 ± 0.0 | 24.0 ± 0.0 | 18.0 ± 0.0 | error: x | compile > 5 s | - | 1.20x | - | - | - |" in lines2,
      "low-precision 1024 row with statuses")
if failures:
    print(md)
    print(md2)

# 4. the real tools, tiny model
if len(sys.argv) == 3:
    import numpy as np
    import make_model

    bench, embed = sys.argv[1], sys.argv[2]
    with tempfile.TemporaryDirectory() as tmp:
        model = os.path.join(tmp, "m.gguf")
        make_model.write_model(model, dim=32, ffn=64, layers=1, filters=8)
        for prefix in ([], ["env", "-u", "OPENBLAS_CORETYPE", "-u", "OPENBLAS_L2_SIZE"]):
            srows = bc.run_spectral(bench, model, [64, 128], 1, 1, prefix)
            got = [(r["n_tokens"], r["status"]) for r in srows]
            check(got == [(64, "ok"), (128, "ok")], f"spectral-bench rows {got} under {prefix}")
            check(all(r["ms_per_doc"] > 0 for r in srows), "spectral-bench ms_per_doc")
            check(srows and srows[0]["spectral_version"] != "?", "spectral version from the header")
        # the low-precision rows' command lines: the OpenBLAS reference and a dtype
        names = {"auto": "spectral", "openblas": "spectral-openblas", "bf16": "spectral-bf16"}
        srows = bc.run_spectral(bench, model, [64], 1, 1, [], names)
        check(sorted((r["impl"], r["status"]) for r in srows) == sorted((n, "ok") for n in names.values()),
              f"rows of several dtypes in one run: {srows}")
        check(srows and "kernels:" in srows[0]["system_info"], "the kernels from spectral-bench's header")
        tok, st = bc.spectral_states(embed, model, 45, 1, tmp)
        check(os.path.getsize(tok) == 45, "check tokens file")
        states = np.fromfile(st, dtype=np.float32)
        check(states.size == 45 * 32 and np.all(np.isfinite(states)), f"raw states: {states.size} floats")

# 5. no torch: a clear message
with tempfile.TemporaryDirectory() as fake:
    os.mkdir(os.path.join(fake, "torch"))
    with open(os.path.join(fake, "torch", "__init__.py"), "w") as f:
        f.write("raise ImportError('no torch in this test')\n")
    env = dict(os.environ, PYTHONPATH=fake + os.pathsep + os.environ.get("PYTHONPATH", ""))
    p = subprocess.run([sys.executable, os.path.join(TOOLS, "bench_compare.py"), "-p", "64"],
                       env=env, capture_output=True, text=True, timeout=120)
    check(p.returncode != 0 and "PyTorch is required" in p.stderr and "Traceback" not in p.stderr,
          f"without torch: exit {p.returncode}, stderr {p.stderr[-500:]!r}")

sys.exit(harness.report("bench_compare"))
