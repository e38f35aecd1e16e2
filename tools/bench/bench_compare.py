#!/usr/bin/env python3
"""spectral against PyTorch on the CPU, same GGUF, same run: a Markdown table.

    python3 tools/bench/bench_compare.py                       # random 256/1024/4/128 model, T = 512..65536
    python3 tools/bench/bench_compare.py -m model.gguf -p 1024,4096 -t 2 --out cmp.md
    python3 tools/bench/bench_compare.py --env-variants --load -o jsonl --out cmp.jsonl

For each sequence length T (-p) it times one document of T random token ids
per forward, mean and standard deviation of the milliseconds per document
over -r repetitions after one warm-up, for:

  spectral             build/tools/spectral-bench -m FILE -p T --no-attn -o jsonl -t N
                       (spectral_encode through the public C API: the forward, pooling
                       and normalization; nothing else is timed)
  torch eager complex  the same model in PyTorch eager, mixing in the seed's complex form:
                       U = fft(u) along the sequence, Z = U * W on the first k = min(K, T/2)
                       bins and 0 above, Re(ifft(Z))      (docs/format.md "Math")
  torch eager rfft     the real-FFT form the CPU backend runs: Z = rfft(u)[:k] * G with
                       G_0 = Re(W_0), G_f = W_f / 2, then irfft(Z, n=T)
  torch.compile        torch.compile (inductor, dynamic=False) of the rfft form, compiled
                       afresh for each T; the compile time (the first call, which includes
                       one forward) is reported separately, never in the per-document time

and, in a second table (low precision; --no-lowp leaves it out):

  spectral OpenBLAS    rows of the same spectral-bench run (--dtype auto,openblas): float32
                       GEMMs through OpenBLAS (the reference path)
  spectral int8        spectral-bench on a Q8_0 copy of the model (spectral-quantize
                       --type q8_0 of its matrices): int8 products, activations quantized
                       per 32-block (docs/precision.md); "Q8_0 as f32" is the same file with
                       --dtype f32 in the same run ("int8 vs own f32")
  spectral bf16        --dtype bf16 rows in the first run (with --bf16 only; emulated on a
                       CPU without AVX512_BF16: the header names the kernel)
  torch dynamic int8   torch.ao.quantization.quantize_dynamic of the rfft form's nn.Linear
                       layers (qint8 weights from the same float32 weights, per tensor;
                       activations quantized per call), eager

The PyTorch model is built from the same GGUF weights (tools/convert/reference.py's
gguf reader; F16/BF16 widened to float32), runs in float32 under
torch.inference_mode() with torch.set_num_threads(N), and does what
spectral_encode does: embedding, L blocks, output_norm / output if present,
the model's pooling, L2 normalization. Before any timing, both PyTorch forms
are checked against spectral-embed's token states (--pooling none -o raw) on
one document of --check-len random bytes; the run stops if the largest
absolute difference is 1e-3 or more. Each torch.compile row is also checked
against the eager rfft form at its T.

Without -m, a random-weight model is written with tools/convert/make_model.py (shape
--dim/--ffn/--layers/--filters, byte vocabulary, F32, --seed).

The PyTorch measurements run in a child process (this script with the hidden
`_worker` command), so that they see exactly the environment a setting asks
for: --env-variants runs every measurement twice, with the environment as it
is and with OPENBLAS_CORETYPE and OPENBLAS_L2_SIZE removed (`env -u ...` in
front of spectral-bench and of the PyTorch child, since both libraries read
them when they are loaded). --load repeats every setting while a second
CPU-bound load runs (`spin`: one busy-looping process per thread used;
`spectral`: a second spectral-bench -t N looping on T = 16384) and adds a
quiet-vs-loaded table with the slowdown (loaded / quiet time) of spectral,
eager rfft and torch.compile (every row is in the jsonl output).

Output: a header naming the machine (CPU model, CPUs, threads used, torch
version and BLAS, OpenBLAS variables, load average), then one table per
setting; `-o jsonl` prints the raw rows instead (spectral-bench's field names
where they mean the same thing, so tools/bench/bench_plot.py can draw them), and
--jsonl-out FILE writes them next to the Markdown. Progress goes to stderr.

Needs: numpy, gguf, PyTorch (pip install numpy gguf torch), and the built
spectral-bench and spectral-embed (--build-dir, default build).
"""
from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import queue
import re
import shlex
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, os.path.join(HERE, "..", "convert"))  # make_model, reference

OPENBLAS_VARS = ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE")
ENGINES = ("spectral", "torch-eager-complex", "torch-eager-rfft", "torch-compile")
LOWP_ENGINES = ("spectral", "spectral-openblas", "spectral-q8-f32", "spectral-int8", "spectral-bf16",
                "torch-compile", "torch-dynamic-int8")
LOAD_ENGINES = ("spectral", "torch-eager-rfft", "torch-compile")  # the quiet-vs-loaded table
ENGINE_TITLES = {"spectral": "spectral", "torch-eager-complex": "torch eager complex",
                 "torch-eager-rfft": "torch eager rfft", "torch-compile": "torch.compile",
                 "spectral-openblas": "spectral f32 OpenBLAS", "spectral-int8": "spectral int8 (Q8_0)",
                 "spectral-q8-f32": "spectral Q8_0 as f32",
                 "spectral-bf16": "spectral bf16", "torch-dynamic-int8": "torch dynamic int8"}
MAX_DIFF = 1e-3
DEFAULT_LENGTHS = "512,1024,2048,4096,8192,16384,32768,65536"


def log(msg):
    print(f"bench_compare: {msg}", file=sys.stderr, flush=True)


def parse_lengths(spec):
    """Same syntax as spectral-bench -p: 1024,4096 / 512-65536*2 / 512-2048+512 / k, m suffixes."""
    def num(s):
        mult = {"k": 1024, "m": 1024 * 1024}.get(s[-1].lower(), 1)
        return int(s.rstrip("kKmM")) * mult

    out = []
    for item in spec.split(","):
        m = re.fullmatch(r"(\d+[kKmM]?)(?:-(\d+[kKmM]?)(?:([*+])(\d+))?)?", item.strip())
        if not m:
            raise argparse.ArgumentTypeError(f"bad length list item {item!r}")
        a = num(m.group(1))
        if m.group(2) is None:
            out.append(a)
            continue
        b, op, step = num(m.group(2)), m.group(3) or "*", int(m.group(4) or 2)
        if b < a or (op == "*" and step < 2) or (op == "+" and step < 1):
            raise argparse.ArgumentTypeError(f"bad range {item!r}")
        v = a
        while v <= b:
            out.append(v)
            v = v * step if op == "*" else v + step
    if not out or min(out) < 2:
        raise argparse.ArgumentTypeError("lengths must be >= 2")
    return out


def mean_std(samples):
    m = statistics.mean(samples)
    return m, (statistics.stdev(samples) if len(samples) > 1 else 0.0)


def timing_fields(samples_s, T):
    """spectral-bench's jsonl timing fields from per-repetition seconds."""
    avg, sd = mean_std(samples_s)
    tps = [T / s for s in samples_s]
    tavg, tsd = mean_std(tps)
    return dict(status="ok", n_reps=len(samples_s), avg_ns=avg * 1e9, stddev_ns=sd * 1e9,
                avg_ts=tavg, stddev_ts=tsd, ms_per_doc=avg * 1e3,
                samples_ns=[s * 1e9 for s in samples_s])


# =========================================================================== PyTorch side
# Everything in this section runs in the `_worker` child process only.

class TorchSpectral:
    """A spectralmlp GGUF as float32 torch tensors; forwards in the complex and the rfft form."""

    def __init__(self, path):
        import numpy as np
        import torch
        from reference import load_gguf  # the gguf-package reader of the numpy reference

        self.torch = torch
        m = load_gguf(path)
        t = {k: torch.from_numpy(np.ascontiguousarray(v, dtype=np.float32)) for k, v in m.tensors.items()}
        self.D, self.K, self.eps, self.pooling = m.n_embd, m.n_filters, m.eps, m.pooling
        self.vocab = m.n_vocab
        self.emb = t["token_embd.weight"]  # (V, D)
        self.blocks = []
        for i in range(m.n_layer):
            g = lambda n: t[f"blk.{i}.{n}"]  # noqa: E731
            filt = g("mix_filter.weight")  # (D, K, 2): W[d, f] as (re, im)
            W = torch.complex(filt[..., 0], filt[..., 1]).transpose(0, 1).contiguous()  # (K, D)
            G = W / 2  # the half-spectrum filter of docs/format.md "Math": G_0 = Re(W_0), G_f = W_f / 2
            G[0] = torch.complex(W[0].real, torch.zeros_like(W[0].real))
            self.blocks.append(dict(
                mn_w=g("mix_norm.weight"), mn_b=g("mix_norm.bias"), W=W, G=G.contiguous(),
                mb=g("mix_filter.bias"), fn_w=g("ffn_norm.weight"), fn_b=g("ffn_norm.bias"),
                up_w=g("ffn_up.weight"), up_b=g("ffn_up.bias"),
                dn_w=g("ffn_down.weight"), dn_b=g("ffn_down.bias")))
        self.out_norm = (t["output_norm.weight"], t["output_norm.bias"]) if "output_norm.weight" in t else None
        self.out = (t["output.weight"], t.get("output.bias")) if "output.weight" in t else None

    def _mix_complex(self, u, b):
        torch = self.torch
        T = u.shape[0]
        k = min(self.K, T // 2)
        U = torch.fft.fft(u, dim=0)  # (T, D) complex, the full spectrum
        Z = torch.zeros_like(U)
        Z[:k] = U[:k] * b["W"][:k]
        return torch.fft.ifft(Z, dim=0).real

    def _mix_rfft(self, u, b):
        torch = self.torch
        T = u.shape[0]
        k = min(self.K, T // 2)
        Z = torch.fft.rfft(u, dim=0)[:k] * b["G"][:k]  # (k, D); irfft zero-pads to T/2 + 1 bins
        return torch.fft.irfft(Z, n=T, dim=0)

    def states(self, tokens, form="rfft"):
        Fn = self.torch.nn.functional
        mix = self._mix_complex if form == "complex" else self._mix_rfft
        D, eps = self.D, self.eps
        h = self.emb[tokens]
        for b in self.blocks:
            u = Fn.layer_norm(h, (D,), b["mn_w"], b["mn_b"], eps)
            h = h + mix(u, b) + b["mb"]
            x = Fn.layer_norm(h, (D,), b["fn_w"], b["fn_b"], eps)
            h = h + Fn.linear(Fn.gelu(Fn.linear(x, b["up_w"], b["up_b"])), b["dn_w"], b["dn_b"])
        if self.out_norm is not None:
            h = Fn.layer_norm(h, (D,), self.out_norm[0], self.out_norm[1], eps)
        if self.out is not None:
            h = Fn.linear(h, self.out[0], self.out[1])
        return h

    def pool(self, h):
        """What spectral_encode returns: the model's pooling, L2-normalized (none: the states)."""
        if self.pooling == 0:
            return h
        v = h.mean(0) if self.pooling == 1 else (h[0] if self.pooling == 2 else h[-1])
        return self.torch.nn.functional.normalize(v, dim=0)

    def int8_module(self):
        """The rfft form with every linear layer an nn.Linear holding the same weights, then
        torch.ao.quantization.quantize_dynamic (qint8 weights, activations quantized per call)."""
        torch, nn = self.torch, self.torch.nn

        def linear(w, b):
            m = nn.Linear(w.shape[1], w.shape[0], bias=b is not None)
            with torch.no_grad():
                m.weight.copy_(w)
                if b is not None:
                    m.bias.copy_(b)
            return m

        outer = self

        class Net(nn.Module):
            def __init__(self):
                super().__init__()
                self.up = nn.ModuleList(linear(b["up_w"], b["up_b"]) for b in outer.blocks)
                self.down = nn.ModuleList(linear(b["dn_w"], b["dn_b"]) for b in outer.blocks)
                self.out = linear(*outer.out) if outer.out is not None else None

            def forward(self, tokens):
                Fn = torch.nn.functional
                D, eps = outer.D, outer.eps
                h = outer.emb[tokens]
                for b, up, down in zip(outer.blocks, self.up, self.down):
                    u = Fn.layer_norm(h, (D,), b["mn_w"], b["mn_b"], eps)
                    h = h + outer._mix_rfft(u, b) + b["mb"]
                    x = Fn.layer_norm(h, (D,), b["fn_w"], b["fn_b"], eps)
                    h = h + down(Fn.gelu(up(x)))
                if outer.out_norm is not None:
                    h = Fn.layer_norm(h, (D,), outer.out_norm[0], outer.out_norm[1], eps)
                if self.out is not None:
                    h = self.out(h)
                return outer.pool(h)

        import warnings
        with warnings.catch_warnings():  # torch.ao.quantization's deprecation notices
            warnings.simplefilter("ignore")
            return torch.ao.quantization.quantize_dynamic(Net().eval(), {nn.Linear}, dtype=torch.qint8)

    def forward_complex(self, tokens):
        return self.pool(self.states(tokens, "complex"))

    def forward_rfft(self, tokens):
        return self.pool(self.states(tokens, "rfft"))


def worker_tokens(T, vocab, seed):
    import numpy as np
    import torch
    return torch.from_numpy(np.random.default_rng(seed + T).integers(0, vocab, T, dtype=np.int64))


def worker_time(fn, tok, reps):
    """One warm-up, then reps timed calls; returns (seconds per call, last output)."""
    out = fn(tok)
    samples = []
    for _ in range(reps):
        t0 = time.perf_counter()
        out = fn(tok)
        samples.append(time.perf_counter() - t0)
    return samples, out


def worker_main(cfg):
    """Child process: prints one JSON object per line (rows and events) on stdout."""
    import numpy as np
    import torch

    def emit(obj):
        print(json.dumps(obj), flush=True)

    torch.set_num_threads(cfg["threads"])
    blas = re.search(r"BLAS_INFO=([^,\s]+)", torch.__config__.show())
    emit(dict(event="info", torch=torch.__version__, blas=blas.group(1) if blas else "?",
              threads=torch.get_num_threads(),
              openblas_env={v: os.environ.get(v) for v in OPENBLAS_VARS}))
    model = TorchSpectral(cfg["model"])
    reps, seed = cfg.get("reps", 1), cfg.get("seed", 0)

    with torch.inference_mode():
        if cfg["kind"] == "check":  # token states against spectral-embed's, once
            tok = torch.from_numpy(np.fromfile(cfg["tokens"], dtype=np.uint8).astype(np.int64))
            ref = torch.from_numpy(np.fromfile(cfg["states"], dtype=np.float32))
            res = dict(event="check", n_tokens=int(tok.shape[0]))
            for form in ("complex", "rfft"):
                h = model.states(tok, form).reshape(-1)
                res[form] = float((h - ref).abs().max()) if h.shape == ref.shape else None  # None: sizes differ
            emit(res)
            return 0

        if cfg["kind"] == "eager":
            forms = [("eager-complex", model.forward_complex), ("eager-rfft", model.forward_rfft)]
            if cfg.get("int8"):
                forms.append(("dynamic-int8", model.int8_module()))
            for T in cfg["lengths"]:
                tok = worker_tokens(T, model.vocab, seed)
                for form, fn in forms:
                    row = dict(impl=f"torch-{form}", n_tokens=T)
                    try:
                        samples, _ = worker_time(fn, tok, reps)
                        row.update(timing_fields(samples, T))
                    except (RuntimeError, MemoryError) as e:
                        row["status"] = f"error: {str(e).splitlines()[0][:80]}"
                    emit(row)
            return 0

        # kind == "compile": a fresh compile for each T (dynamic=False: the static-shape graph)
        failed = None
        for T in cfg["lengths"]:
            row = dict(impl="torch-compile", n_tokens=T)
            if failed:
                row["status"] = f"skipped ({failed})"
                emit(row)
                continue
            tok = worker_tokens(T, model.vocab, seed)
            torch._dynamo.reset()
            fn = torch.compile(model.forward_rfft, dynamic=False)
            emit(dict(event="compiling", n_tokens=T))
            try:
                t0 = time.perf_counter()
                fn(tok)
                compile_s = time.perf_counter() - t0
                samples, out = worker_time(fn, tok, reps)
            except Exception as e:  # noqa: BLE001 - any compiler failure skips the engine
                row["status"] = f"compile failed: {type(e).__name__}"
                failed = f"compile failed at T={T}"
                log(f"torch.compile failed at T={T}: {str(e).splitlines()[0][:200] if str(e) else e!r}")
                emit(row)
                continue
            row.update(timing_fields(samples, T))
            row["compile_s"] = compile_s
            row["max_abs_diff_vs_eager"] = float((out - model.forward_rfft(tok)).abs().max())
            emit(row)
    return 0


# =========================================================================== parent side

def find_tool(build_dir, name):
    for cand in (os.path.join(build_dir, "tools", name), os.path.join(build_dir, name)):
        if os.access(cand, os.X_OK):
            return cand
    found = shutil.which(name)
    if not found:
        sys.exit(f"bench_compare: {name} not found in {build_dir}/tools or PATH "
                 "(build it, or pass --build-dir)")
    return found


def machine_info():
    cpu, cores = platform.processor() or "?", set()
    n_logical = 0
    try:
        phys = core = None
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                key, _, val = line.partition(":")
                key, val = key.strip(), val.strip()
                if key == "processor":
                    n_logical += 1
                elif key == "model name" and n_logical == 1:
                    cpu = val
                elif key == "physical id":
                    phys = val
                elif key == "core id":
                    core = val
                    cores.add((phys, core))
    except OSError:
        pass
    try:
        load = " ".join(open("/proc/loadavg", encoding="utf-8").read().split()[:3])
    except OSError:
        load = "?"
    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return dict(cpu=cpu, logical_cpus=n_logical or os.cpu_count(), cores=len(cores) or None,
                usable_cpus=usable, loadavg=load, host=platform.node())


def env_settings(variants):
    """[(name, command prefix)]: the environment as it is, and optionally without OpenBLAS's variables."""
    now = ", ".join(f"{v}={os.environ[v]}" if v in os.environ else f"{v} unset" for v in OPENBLAS_VARS)
    out = [(f"environment as is ({now})", [])]
    if variants:
        if any(v in os.environ for v in OPENBLAS_VARS):
            unset = []
            for v in OPENBLAS_VARS:
                unset += ["-u", v]
            out.append((f"{' and '.join(OPENBLAS_VARS)} removed", ["env"] + unset))
        else:
            log("--env-variants: neither OPENBLAS_CORETYPE nor OPENBLAS_L2_SIZE is set here, "
                "so the environment as it is already is the 'removed' variant; run once")
    return out


def run_spectral(bench, model, lengths, threads, reps, prefix, dtypes=None):
    """spectral-bench's model rows; dtypes: {spectral-bench --dtype: impl name} (rows of
    several dtypes, interleaved per T in one run), default {auto: spectral}."""
    dtypes = dtypes or {"auto": "spectral"}
    extra = ["--dtype", ",".join(dtypes)]
    cmd = prefix + [bench, "-m", model, "-p", ",".join(map(str, lengths)), "--no-attn",
                    "-r", str(reps), "-t", str(threads), "-o", "jsonl", *extra,
                    "--calib-size", "64", "--calib-mem", "1m"]  # calibration unused here: keep it short
    log("running " + " ".join(cmd))
    p = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    if p.returncode != 0:
        sys.stderr.write(p.stderr)
        sys.exit(f"bench_compare: spectral-bench exited with status {p.returncode}")
    version = re.search(r"\(spectral ([^)]*)\)", p.stderr)
    info = re.search(r"\| (cpu: [^\n]*)", p.stderr)
    rows = []
    for line in p.stdout.splitlines():
        if line.strip():
            r = json.loads(line)
            r["spectral_version"] = version.group(1) if version else r.get("build", "?")
            r["system_info"] = info.group(1) if info else "?"
            if r.get("impl") == "spectral":
                r["impl"] = impl = dtypes.get(r.get("dtype"), "spectral")
                r["ms_per_doc"] = r["avg_ns"] / 1e6 if r.get("status") == "ok" else None
                rows.append(r)
                if r.get("status") == "ok":
                    log(f"  {impl} T={r['n_tokens']}: {r['ms_per_doc']:.2f} ms")
    return rows


def spectral_states(embed, model, T, threads, tmpdir):
    """Random bytes -> spectral-embed --pooling none -o raw; returns (tokens file, states file)."""
    import numpy as np
    tok_path, st_path = os.path.join(tmpdir, "check.bin"), os.path.join(tmpdir, "check.f32")
    np.random.default_rng(4321).integers(0, 256, T, dtype=np.uint8).tofile(tok_path)
    cmd = [embed, "-m", model, "--pooling", "none", "-o", "raw", "-t", str(threads), tok_path]
    with open(st_path, "wb") as out:
        p = subprocess.run(cmd, stdout=out, stderr=subprocess.PIPE, text=True)
    if p.returncode != 0:
        sys.stderr.write(p.stderr)
        sys.exit(f"bench_compare: {' '.join(cmd)} exited with status {p.returncode}")
    return tok_path, st_path


def run_worker(cfg, prefix, compile_timeout=None, cache_dir=None):
    """Runs the PyTorch child; returns (rows, events). A compile that takes longer than
    compile_timeout seconds kills the child; that row and the later ones say so. cache_dir:
    inductor's cache for the child (a fresh, empty one makes every compile time a cold one)."""
    cmd = prefix + [sys.executable, os.path.abspath(__file__), "_worker", json.dumps(cfg)]
    env = dict(os.environ, TORCHINDUCTOR_CACHE_DIR=cache_dir) if cache_dir else None
    log(f"running the PyTorch {cfg['kind']} child" + (f" under {' '.join(prefix)}" if prefix else ""))
    p = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True, start_new_session=True, env=env)
    lines = queue.Queue()
    threading.Thread(target=lambda: ([lines.put(x) for x in p.stdout], lines.put(None)),
                     daemon=True).start()
    rows, events, compiling = [], [], None

    def fill(status_at, status_after, at):  # rows for the lengths the child did not get to
        done = {r["n_tokens"] for r in rows}
        for T in cfg["lengths"]:
            if T not in done:
                rows.append(dict(impl="torch-compile", n_tokens=T,
                                 status=status_at if T == at else status_after))

    try:
        while True:
            try:
                line = lines.get(timeout=compile_timeout if compiling else None)
            except queue.Empty:  # compile timeout: kill the child and everything it started
                os.killpg(p.pid, signal.SIGKILL)
                p.wait()
                log(f"  torch.compile at T={compiling} took over {compile_timeout:g} s: stopped")
                fill(f"compile > {compile_timeout:g} s",
                     f"skipped (compile > {compile_timeout:g} s at T={compiling})", compiling)
                return rows, events
            if line is None:
                break
            try:
                obj = json.loads(line)
            except ValueError:  # something in the child printed to stdout: pass it on
                sys.stderr.write(line)
                continue
            if "event" in obj:
                events.append(obj)
                compiling = obj["n_tokens"] if obj["event"] == "compiling" else None
                if compiling:
                    log(f"  torch.compile T={compiling} ...")
                continue
            compiling = None
            rows.append(obj)
            if obj.get("status") == "ok":
                extra = f" (compile {obj['compile_s']:.1f} s)" if "compile_s" in obj else ""
                log(f"  {obj['impl']} T={obj['n_tokens']}: {obj['ms_per_doc']:.2f} ms{extra}")
            else:
                log(f"  {obj['impl']} T={obj['n_tokens']}: {obj.get('status')}")
    except BaseException:  # e.g. Ctrl-C: the child is in its own session, so stop it here
        os.killpg(p.pid, signal.SIGKILL)
        p.wait()
        raise
    rc = p.wait()
    if rc != 0 and cfg["kind"] == "compile":  # a crashing compiler costs the column, not the run
        log(f"  the torch.compile child exited with status {rc}")
        fill(f"compile crashed (status {rc})", "skipped (compile crashed)", compiling)
    elif rc != 0:
        sys.exit(f"bench_compare: the PyTorch {cfg['kind']} child exited with status {rc}")
    return rows, events


def start_load(kind, threads, bench, model):
    """A second CPU-bound process (group) on the machine; returns the Popen list."""
    if kind == "spin":
        cmds = [[sys.executable, "-c", "while True: pass"] for _ in range(threads)]
    else:
        loop = (f"while :; do {shlex.quote(bench)} -m {shlex.quote(model)} -p 16384 -r 20 --no-attn -t {threads} "
                "--calib-size 64 --calib-mem 1m -o jsonl >/dev/null 2>&1; done")
        cmds = [["sh", "-c", loop]]
    procs = [subprocess.Popen(c, start_new_session=True, stdout=subprocess.DEVNULL) for c in cmds]
    time.sleep(1.0)  # let it reach full speed
    return procs


def stop_load(procs):
    for p in procs:
        try:
            os.killpg(p.pid, signal.SIGKILL)  # its own session: the load process and its children only
        except ProcessLookupError:
            pass
        p.wait()


# --------------------------------------------------------------------------- report

def fmt_ms(r):
    if r is None:
        return "-"
    if r.get("status") != "ok":
        return r.get("status", "-")
    m, s = r["avg_ns"] / 1e6, r["stddev_ns"] / 1e6
    d = 2 if m < 10 else (1 if m < 1000 else 0)
    return f"{m:.{d}f} ± {s:.{d}f}"


def ratio(num, den):
    if num and den and num.get("status") == "ok" and den.get("status") == "ok":
        return f"{num['avg_ns'] / den['avg_ns']:.2f}x"
    return "-"


def markdown(rows, meta, args):
    out = []
    mi = meta["machine"]
    cores = f", {mi['cores']} cores" if mi["cores"] else ""
    env_now = ", ".join(f"{v}={os.environ.get(v, 'unset')}" for v in OPENBLAS_VARS)
    out.append(f"**spectral vs PyTorch on the CPU**, {meta['date']}: {mi['cpu']} "
               f"({mi['logical_cpus']} logical CPUs{cores}, {mi['usable_cpus']} usable), "
               f"{args.threads} threads used; spectral {meta.get('spectral_version', '?')}; "
               f"torch {meta.get('torch', '?')} (BLAS {meta.get('blas', '?')}); OpenBLAS env: {env_now}; "
               f"load average before the run {mi['loadavg']}.")
    md = meta["model"]
    out.append("")
    out.append(f"Model: {md['desc']} — D={md['D']} F={md['F']} L={md['L']} K={md['K']} V={md['V']}, "
               f"weights {md['types']}. One document of T random token ids per forward; "
               f"ms per document, mean ± stddev over {args.repetitions} repetition"
               f"{'s' if args.repetitions > 1 else ''} after 1 warm-up; "
               "speed-up = torch time / spectral time (above 1: spectral is faster).")
    chk = meta.get("check")
    if chk:
        out.append("")
        comp = meta.get("compile_diff")
        out.append(f"Same computation: at T={chk['n_tokens']} the largest |spectral − torch| over "
                   f"the token states is {chk['complex']:.1e} (eager complex) and "
                   f"{chk['rfft']:.1e} (eager rfft)"
                   + (f"; torch.compile vs eager rfft, largest over the rows: {comp:.1e}" if comp is not None else "")
                   + ".")
    else:
        out.append("")
        out.append("Same computation: not checked (the check feeds random bytes to spectral-embed, "
                   "so it needs a model with the `bytes` tokenizer).")
    by = {}
    for r in rows:
        by[(r["setting"], r["load"], r["impl"], r["n_tokens"])] = r
    settings = list(dict.fromkeys((r["setting"], r["load"]) for r in rows))
    for setting, load in settings:
        out.append("")
        out.append(f"#### {setting}, {'quiet' if load == 'quiet' else 'under load: ' + load}")
        out.append("")
        hdr = ["T", "spectral ms", "torch eager complex ms", "torch eager rfft ms", "torch.compile ms",
               "spectral speed-up vs eager rfft", "vs compile"]
        out.append("| " + " | ".join(hdr) + " |")
        out.append("|" + "|".join("--:" for _ in hdr) + "|")
        compile_times = []
        for T in args.n_tokens:
            g = {e: by.get((setting, load, e, T)) for e in ENGINES}
            out.append("| " + " | ".join([str(T)] + [fmt_ms(g[e]) for e in ENGINES] + [
                ratio(g["torch-eager-rfft"], g["spectral"]),
                ratio(g["torch-compile"], g["spectral"])]) + " |")
            c = g["torch-compile"]
            if c and c.get("compile_s") is not None:
                compile_times.append(f"{T}: {c['compile_s']:.1f} s")
        if compile_times:
            out.append("")
            out.append("torch.compile time per T (first call, includes one forward): "
                       + ", ".join(compile_times) + ".")
        elif args.no_compile:
            out.append("")
            out.append("torch.compile: not run (--no-compile).")
    lowp = [e for e in LOWP_ENGINES if any(r["impl"] == e for r in rows)]
    if any(e in lowp for e in ("spectral-int8", "spectral-openblas", "torch-dynamic-int8", "spectral-bf16")):
        for setting, load in settings:
            out.append("")
            out.append(f"#### Low precision: {setting}, {'quiet' if load == 'quiet' else 'under load: ' + load}")
            out.append("")
            out.append(f"spectral's kernels: {meta.get('system_info', '?')}.")
            out.append("")
            hdr = ["T"] + [f"{ENGINE_TITLES[e]}{' f32' if e in ('spectral', 'torch-compile') else ''} ms"
                           for e in lowp]
            pairs = [("spectral-openblas", "spectral", "f32 packed vs OpenBLAS"),
                     ("spectral-q8-f32", "spectral-int8", "int8 vs own f32"),
                     ("torch-compile", "spectral-int8", "int8 vs torch.compile f32"),
                     ("torch-dynamic-int8", "spectral-int8", "int8 vs torch int8"),
                     ("spectral", "spectral-bf16", "bf16 vs own f32")]
            pairs = [x for x in pairs if x[0] in lowp and x[1] in lowp]
            hdr += [title for _, _, title in pairs]
            out.append("| " + " | ".join(hdr) + " |")
            out.append("|" + "|".join("--:" for _ in hdr) + "|")
            for T in args.n_tokens:
                g = {e: by.get((setting, load, e, T)) for e in lowp}
                out.append("| " + " | ".join([str(T)] + [fmt_ms(g[e]) for e in lowp] +
                                             [ratio(g[a], g[b]) for a, b, _ in pairs]) + " |")
    if args.load:
        for setting in dict.fromkeys(s for s, _ in settings):
            out.append("")
            out.append(f"#### Shared machine: {setting}, quiet vs under load ({args.load}: {meta['load_desc']})")
            out.append("")
            hdr = ["T"]
            for e in LOAD_ENGINES:
                hdr += [f"{ENGINE_TITLES[e]} quiet ms", "loaded ms", "slowdown"]
            out.append("| " + " | ".join(hdr) + " |")
            out.append("|" + "|".join("--:" for _ in hdr) + "|")
            for T in args.n_tokens:
                cells = [str(T)]
                for e in LOAD_ENGINES:
                    q, ld = by.get((setting, "quiet", e, T)), by.get((setting, args.load, e, T))
                    cells += [fmt_ms(q), fmt_ms(ld), ratio(ld, q)]
                out.append("| " + " | ".join(cells) + " |")
    out.append("")
    out.append("Command: `" + " ".join(["python3", "tools/bench/bench_compare.py"] + meta["argv"]) + "`")
    return "\n".join(out) + "\n"


# --------------------------------------------------------------------------- main

def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter,
                                 epilog=__doc__.split("\n\n", 1)[1])
    ap.add_argument("-m", "--model", help="spectralmlp GGUF (default: a random-weight one, see --dim...)")
    ap.add_argument("--dim", type=int, default=256, help="random model: D (default 256)")
    ap.add_argument("--ffn", type=int, default=1024, help="random model: F (default 1024)")
    ap.add_argument("--layers", type=int, default=4, help="random model: L (default 4)")
    ap.add_argument("--filters", type=int, default=128, help="random model: K (default 128)")
    ap.add_argument("--seed", type=int, default=0, help="random model weights and token ids (default 0)")
    ap.add_argument("--model-out", help="keep the random model in this file (default: a temporary file)")
    ap.add_argument("-p", "--n-tokens", type=parse_lengths, default=parse_lengths(DEFAULT_LENGTHS),
                    metavar="LIST", help=f"sequence lengths, spectral-bench -p syntax (default {DEFAULT_LENGTHS})")
    ap.add_argument("-r", "--repetitions", type=int, default=3,
                    help="timed repetitions per row, after one warm-up (default 3)")
    ap.add_argument("-t", "--threads", type=int, default=0,
                    help="threads for both sides: spectral -t N, torch.set_num_threads(N) (default: all usable CPUs)")
    ap.add_argument("--no-compile", action="store_true", help="leave out torch.compile")
    ap.add_argument("--no-lowp", action="store_true",
                    help="leave out the low-precision table (spectral OpenBLAS / int8, torch dynamic int8)")
    ap.add_argument("--bf16", action="store_true", help="add a spectral --dtype bf16 row to the low-precision table")
    ap.add_argument("--compile-timeout", type=float, default=600.0,
                    help="seconds one torch.compile may take before it and the larger T are skipped (default 600)")
    ap.add_argument("--check-len", type=int, default=777,
                    help="T of the spectral-vs-torch check of the token states (default 777)")
    ap.add_argument("--env-variants", action="store_true",
                    help="run everything also with OPENBLAS_CORETYPE and OPENBLAS_L2_SIZE removed")
    ap.add_argument("--load", nargs="?", const="spin", choices=["spin", "spectral"],
                    help="also run every setting under a second CPU-bound load: spin (default) or spectral")
    ap.add_argument("--build-dir", default=os.path.join(ROOT, "build"),
                    help="where spectral-bench and spectral-embed are (DIR/tools/; default build, then PATH)")
    ap.add_argument("-o", "--output", choices=["md", "jsonl"], default="md", help="format (default md)")
    ap.add_argument("--out", help="write the output to FILE (default stdout)")
    ap.add_argument("--jsonl-out", help="also write the raw rows as jsonl to this file")
    args = ap.parse_args(argv)
    if args.repetitions < 1:
        ap.error("-r must be >= 1")
    if args.check_len < 2:
        ap.error("--check-len must be >= 2")
    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    args.threads = args.threads or usable
    try:
        import numpy  # noqa: F401
        import gguf  # noqa: F401
    except ImportError as e:
        sys.exit(f"bench_compare: {e.name} is required (pip install numpy gguf torch)")
    if subprocess.run([sys.executable, "-c", "import torch"], capture_output=True).returncode != 0:
        sys.exit("bench_compare: PyTorch is required for this comparison and is not installed "
                 "here (pip install torch); spectral-bench alone does not need it")
    from reference import load_gguf

    bench = find_tool(args.build_dir, "spectral-bench")
    embed = find_tool(args.build_dir, "spectral-embed")
    quantize = None if args.no_lowp else find_tool(args.build_dir, "spectral-quantize")
    tmp = tempfile.TemporaryDirectory(prefix="bench-compare-")
    meta = dict(date=datetime.datetime.now().strftime("%Y-%m-%d %H:%M"), machine=machine_info(),
                argv=list(sys.argv[1:] if argv is None else argv))
    t_start = time.time()

    # ---- the model
    model = args.model
    if model is None:
        import make_model
        model = args.model_out or os.path.join(tmp.name, "random.gguf")
        make_model.write_model(model, dim=args.dim, ffn=args.ffn, layers=args.layers, filters=args.filters,
                               ctx=max(args.n_tokens), seed=args.seed, name="spectral-random (bench_compare)")
        desc = f"random weights (tools/convert/make_model.py --seed {args.seed})"
    else:
        desc = os.path.basename(model)
    m = load_gguf(model)
    meta["model"] = dict(desc=desc, D=m.n_embd, F=m.n_ff, L=m.n_layer, K=m.n_filters, V=m.n_vocab,
                         types="/".join(sorted(set(m.tensor_types.values()))))
    log(f"model {model}: D={m.n_embd} F={m.n_ff} L={m.n_layer} K={m.n_filters} V={m.n_vocab}, "
        f"tokenizer {m.tokenizer}; {args.threads} threads")

    # ---- the check: token states of spectral-embed against both PyTorch forms, before any timing
    if m.tokenizer == "bytes":
        tok_path, st_path = spectral_states(embed, model, args.check_len, args.threads, tmp.name)
        _, events = run_worker(dict(kind="check", model=model, threads=args.threads, tokens=tok_path,
                                    states=st_path), [])
        for ev in events:
            if ev["event"] == "info":
                meta.update(torch=ev["torch"], blas=ev["blas"])
            elif ev["event"] == "check":
                log(f"check at T={ev['n_tokens']}: max |spectral - torch| over the token states = "
                    f"{ev['complex']} (complex form), {ev['rfft']} (rfft form)")
                bad = [f for f in ("complex", "rfft") if ev[f] is None or not ev[f] < MAX_DIFF]
                if bad:
                    sys.exit(f"bench_compare: PyTorch ({' and '.join(bad)} form) and spectral disagree "
                             f"at T={ev['n_tokens']} (limit {MAX_DIFF}; None: the state sizes differ): "
                             "not the same computation")
                meta["check"] = ev
    else:
        log(f"tokenizer {m.tokenizer!r}: the token-state check feeds bytes, so it needs a byte model; "
            "not checked")
    qmodel = None
    if quantize:
        qmodel = os.path.join(tmp.name, "q8_0.gguf")
        cmd = [quantize, model, qmodel, "--type", "q8_0"]
        p = subprocess.run(cmd, capture_output=True, text=True)
        if p.returncode != 0:
            sys.exit(f"bench_compare: {' '.join(cmd)}: {p.stderr.strip()}")
        log(f"Q8_0 copy for the int8 rows: {qmodel}")

    settings = [(name, prefix, load) for name, prefix in env_settings(args.env_variants)
                for load in (["quiet"] + ([args.load] if args.load else []))]
    meta["load_desc"] = (f"{args.threads} busy-looping processes" if args.load == "spin" else
                         f"a second spectral-bench -t {args.threads} -p 16384 in a loop")
    rows = []
    for name, prefix, load in settings:
        log(f"=== {name}, {load}")
        procs = start_load(load, args.threads, bench, model) if load != "quiet" else []
        try:
            # the float32 model, with the OpenBLAS reference (and bf16) in the same run
            dtypes = {"auto": "spectral"}
            if qmodel:
                dtypes["openblas"] = "spectral-openblas"
                if args.bf16:
                    dtypes["bf16"] = "spectral-bf16"
            srows = run_spectral(bench, model, args.n_tokens, args.threads, args.repetitions, prefix, dtypes)
            meta.setdefault("spectral_version", srows[0]["spectral_version"] if srows else "?")
            meta.setdefault("system_info", srows[0]["system_info"] if srows else "?")
            if qmodel:  # the Q8_0 copy in int8, and in float32 next to it
                srows += run_spectral(bench, qmodel, args.n_tokens, args.threads, args.repetitions, prefix,
                                      {"auto": "spectral-int8", "f32": "spectral-q8-f32"})
            cfg = dict(kind="eager", model=model, lengths=args.n_tokens, threads=args.threads,
                       reps=args.repetitions, seed=args.seed, int8=bool(qmodel))
            trows, events = run_worker(cfg, prefix)
            for ev in events:
                if ev["event"] == "info":
                    meta.setdefault("torch", ev["torch"])
                    meta.setdefault("blas", ev["blas"])
            if not args.no_compile:
                cfg = dict(cfg, kind="compile")
                cache = tempfile.mkdtemp(prefix="inductor-", dir=tmp.name)
                crows, _ = run_worker(cfg, prefix, args.compile_timeout, cache)
                trows += crows
        finally:
            stop_load(procs)
        for r in srows + trows:
            r.update(setting=name, load=load, backend="cpu", mode="model", n_batch=1,
                     n_threads=args.threads)
            r.setdefault("model", srows[0]["model"] if srows else  # spectral-bench's label for all
                         f"spectralmlp D{m.n_embd} F{m.n_ff} L{m.n_layer} K{m.n_filters}")
            rows.append(r)
    diffs = [r["max_abs_diff_vs_eager"] for r in rows if "max_abs_diff_vs_eager" in r]
    meta["compile_diff"] = max(diffs) if diffs else None
    if diffs and not max(diffs) < MAX_DIFF:
        log(f"warning: torch.compile differs from eager rfft by {max(diffs):.2e} (limit {MAX_DIFF})")
    log(f"done in {time.time() - t_start:.0f} s")

    text = markdown(rows, meta, args) if args.output == "md" else "".join(json.dumps(r) + "\n" for r in rows)
    if args.out:
        with open(args.out, "w", encoding="utf-8") as f:
            f.write(text)
        log(f"wrote {args.out}")
    else:
        sys.stdout.write(text)
    if args.jsonl_out:
        with open(args.jsonl_out, "w", encoding="utf-8") as f:
            f.writelines(json.dumps(r) + "\n" for r in rows)
        log(f"wrote {args.jsonl_out}")
    tmp.cleanup()
    return 0


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "_worker":
        sys.exit(worker_main(json.loads(sys.argv[2])))
    sys.exit(main())
