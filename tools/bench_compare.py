#!/usr/bin/env python3
"""Compare spectral-bench against PyTorch eager, in one invocation.

    python3 tools/bench_compare.py --bench build/tools/spectral-bench \\
        -p 512-16384*2 -r 3 -t 2                       # random weights
    python3 tools/bench_compare.py --bench build/tools/spectral-bench \\
        -m model.gguf -p 1024,4096 --device cuda

For each sequence length T it times, on the same machine and in the same run:

  ours-spectral   spectral-bench, the spectralmlp model (C runtime)
  ours-attention  spectral-bench, its same-width attention baseline
  torch-spectral  the same spectralmlp model (same GGUF weights) in PyTorch eager
  torch-sdpa      a same-width pre-LN Transformer encoder in PyTorch eager using
                  torch.nn.functional.scaled_dot_product_attention

and prints tokens/s with the ratios ours/torch. Without -m it writes a
random-weight spectralmlp GGUF (gguf package) of the --dim/--ffn/--layers/
--filters shape and gives the same file to both sides.

The PyTorch spectral forward follows the runtime's definition:
  h = token_embd[tokens]
  per block:  u = LN(h);  U = FFT_t(u) (along the sequence);  k = min(K, T/2)
              Z_f = U_f * W[:, f] for f < k, 0 otherwise
              h += Re(IFFT_t(Z)) + bias
              h += W_down GELU(W_up LN(h) + b_up) + b_down      (exact erf GELU)
  embedding = L2-normalized mean of h over tokens.
Re(IFFT(Z)) is computed as 0.5 * irfft(Z with Z_0 doubled, n=T), which is exact
because Z has no bins past k <= T/2; --check verifies it against
torch.fft.fft/ifft at a small T first.

The torch side runs under torch.inference_mode() in float32 with
torch.set_num_threads(-t); the attention model has heads of 64 dims, QKV and
output projections, the same MLP and LayerNorms, random weights, mean pooling.
Each timing is the mean of -r repetitions after one warm-up; CUDA timings
synchronize. A torch row whose predicted time (T^2 from its previous row)
exceeds --budget seconds is skipped, like spectral-bench's --attn-budget.

Needs: PyTorch, numpy and the gguf package (pip install gguf torch).
"""
import argparse
import json
import math
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time

try:
    import numpy as np
except ImportError:
    sys.exit("bench_compare: numpy is required (pip install numpy)")
try:
    import torch
    import torch.nn.functional as Fn
except ImportError:
    sys.exit("bench_compare: PyTorch is required for this comparison and is not installed "
             "here (pip install torch). spectral-bench alone does not need it.")
try:
    import gguf
except ImportError:
    sys.exit("bench_compare: the gguf package is required (pip install gguf)")

ARCH = "spectralmlp"


# --------------------------------------------------------------------------- args

def parse_lengths(spec):
    """Same syntax as spectral-bench -p: 1024,4096 / 512-65536*2 / 512-2048+512."""
    out = []
    for item in spec.split(","):
        m = re.fullmatch(r"(\d+[kKmM]?)(?:-(\d+[kKmM]?)(?:([*+])(\d+))?)?", item.strip())
        if not m:
            raise argparse.ArgumentTypeError(f"bad length list item {item!r}")

        def num(s):
            mult = {"k": 1024, "m": 1024 * 1024}.get(s[-1].lower(), 1)
            return int(s.rstrip("kKmM")) * mult

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


# --------------------------------------------------------------------------- GGUF

def field_value(reader, key):
    f = reader.fields.get(key)
    if f is None:
        return None
    if hasattr(f, "contents"):
        return f.contents()
    v = f.parts[f.data[0]]
    if f.types and f.types[0] == gguf.GGUFValueType.STRING:
        return bytes(v).decode("utf-8")
    return v[0] if hasattr(v, "__len__") and len(v) == 1 else v


def write_random_gguf(path, D, F, L, K, ctx, seed=0):
    rng = np.random.default_rng(seed)
    w = gguf.GGUFWriter(path, ARCH)  # sets general.architecture
    w.add_string("general.name", f"random-D{D}-F{F}-L{L}-K{K}")
    w.add_uint32(f"{ARCH}.embedding_length", D)
    w.add_uint32(f"{ARCH}.feed_forward_length", F)
    w.add_uint32(f"{ARCH}.block_count", L)
    w.add_uint32(f"{ARCH}.mixing.n_filters", K)
    w.add_uint32(f"{ARCH}.context_length", ctx)
    w.add_float32(f"{ARCH}.attention.layer_norm_epsilon", 1e-5)
    w.add_uint32(f"{ARCH}.pooling_type", 1)
    w.add_string("tokenizer.ggml.model", "bytes")

    def u(shape, a):
        return rng.uniform(-a, a, size=shape).astype(np.float32)

    # numpy shapes are the reverse of ggml's ne order
    w.add_tensor("token_embd.weight", u((256, D), 1.0))
    for l in range(L):
        p = f"blk.{l}."
        w.add_tensor(p + "mix_norm.weight", np.ones(D, np.float32))
        w.add_tensor(p + "mix_norm.bias", np.zeros(D, np.float32))
        w.add_tensor(p + "mix_filter.weight", u((D, K, 2), 0.5))
        w.add_tensor(p + "mix_filter.bias", u((D,), 0.02))
        w.add_tensor(p + "ffn_norm.weight", np.ones(D, np.float32))
        w.add_tensor(p + "ffn_norm.bias", np.zeros(D, np.float32))
        w.add_tensor(p + "ffn_up.weight", u((F, D), 1 / math.sqrt(D)))
        w.add_tensor(p + "ffn_up.bias", u((F,), 0.02))
        w.add_tensor(p + "ffn_down.weight", u((D, F), 1 / math.sqrt(F)))
        w.add_tensor(p + "ffn_down.bias", u((D,), 0.02))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


class SpectralTorch:
    """The spectralmlp model from a GGUF file, as PyTorch tensors."""

    def __init__(self, path, device):
        r = gguf.GGUFReader(path)
        arch = field_value(r, "general.architecture")
        if arch != ARCH:
            sys.exit(f"bench_compare: {path}: architecture {arch!r}, only {ARCH!r} is supported")
        self.D = int(field_value(r, f"{ARCH}.embedding_length"))
        self.F = int(field_value(r, f"{ARCH}.feed_forward_length"))
        self.L = int(field_value(r, f"{ARCH}.block_count"))
        self.K = int(field_value(r, f"{ARCH}.mixing.n_filters"))
        eps = field_value(r, f"{ARCH}.attention.layer_norm_epsilon")
        self.eps = float(eps) if eps is not None else 1e-5
        t = {}
        for ten in r.tensors:
            if ten.tensor_type not in (gguf.GGMLQuantizationType.F32, gguf.GGMLQuantizationType.F16):
                sys.exit(f"bench_compare: {ten.name}: tensor type {ten.tensor_type.name} is not "
                         "supported here (F32/F16 only)")
            # a writable float32 copy; numpy shape = reversed ne
            a = np.array(ten.data, dtype=np.float32).reshape([int(x) for x in reversed(ten.shape)])
            t[ten.name] = torch.from_numpy(a).to(device)
        self.emb = t["token_embd.weight"]  # (V, D)
        self.blocks = []
        for l in range(self.L):
            g = lambda n: t[f"blk.{l}.{n}"]
            filt = g("mix_filter.weight")  # (D, K, 2)
            W = torch.complex(filt[..., 0], filt[..., 1]).transpose(0, 1).contiguous()  # (K, D)
            self.blocks.append(dict(
                mn_w=g("mix_norm.weight"), mn_b=g("mix_norm.bias"), W=W, mb=g("mix_filter.bias"),
                fn_w=g("ffn_norm.weight"), fn_b=g("ffn_norm.bias"),
                up_w=g("ffn_up.weight"), up_b=g("ffn_up.bias"),
                dn_w=g("ffn_down.weight"), dn_b=g("ffn_down.bias")))
        self.vocab = self.emb.shape[0]

    def mix(self, u, W, exact=False):
        T = u.shape[0]
        k = min(W.shape[0], T // 2)
        if exact:  # the definition, complex FFT both ways
            U = torch.fft.fft(u, dim=0)
            Z = torch.zeros_like(U)
            Z[:k] = U[:k] * W[:k]
            return torch.fft.ifft(Z, dim=0).real
        U = torch.fft.rfft(u, dim=0)  # (T/2+1, D)
        Z = torch.zeros_like(U)
        Z[:k] = U[:k] * W[:k]
        Z[0] = Z[0] * 2
        return 0.5 * torch.fft.irfft(Z, n=T, dim=0)

    def forward(self, tokens, exact=False):
        h = self.emb[tokens]
        D = self.D
        for b in self.blocks:
            u = Fn.layer_norm(h, (D,), b["mn_w"], b["mn_b"], self.eps)
            h = h + self.mix(u, b["W"], exact) + b["mb"]
            x = Fn.layer_norm(h, (D,), b["fn_w"], b["fn_b"], self.eps)
            h = h + Fn.linear(Fn.gelu(Fn.linear(x, b["up_w"], b["up_b"])), b["dn_w"], b["dn_b"])
        return Fn.normalize(h.mean(0), dim=0)


class AttentionTorch:
    """Same-width pre-LN Transformer encoder with SDPA, random weights."""

    def __init__(self, D, F, L, device, seed=1):
        g = torch.Generator().manual_seed(seed)
        self.D, self.F, self.L = D, F, L
        self.hd = 64 if D % 64 == 0 else next(d for d in range(min(64, D), 0, -1) if D % d == 0)
        self.nh = D // self.hd

        def u(*shape, a):
            return ((torch.rand(*shape, generator=g) * 2 - 1) * a).to(device)

        self.emb = u(256, D, a=1.0)
        sd, sf = 1 / math.sqrt(D), 1 / math.sqrt(F)
        self.blocks = [dict(
            ln1_w=torch.ones(D, device=device), ln1_b=torch.zeros(D, device=device),
            qkv_w=u(3 * D, D, a=sd), qkv_b=u(3 * D, a=0.02),
            o_w=u(D, D, a=sd), o_b=u(D, a=0.02),
            ln2_w=torch.ones(D, device=device), ln2_b=torch.zeros(D, device=device),
            up_w=u(F, D, a=sd), up_b=u(F, a=0.02),
            dn_w=u(D, F, a=sf), dn_b=u(D, a=0.02)) for _ in range(L)]

    def forward(self, tokens):
        T, D, nh, hd = tokens.shape[0], self.D, self.nh, self.hd
        h = self.emb[tokens]
        for b in self.blocks:
            x = Fn.layer_norm(h, (D,), b["ln1_w"], b["ln1_b"], 1e-5)
            qkv = Fn.linear(x, b["qkv_w"], b["qkv_b"]).view(T, 3, nh, hd).permute(1, 2, 0, 3)
            o = Fn.scaled_dot_product_attention(qkv[0], qkv[1], qkv[2])  # (nh, T, hd)
            h = h + Fn.linear(o.transpose(0, 1).reshape(T, D), b["o_w"], b["o_b"])
            x = Fn.layer_norm(h, (D,), b["ln2_w"], b["ln2_b"], 1e-5)
            h = h + Fn.linear(Fn.gelu(Fn.linear(x, b["up_w"], b["up_b"])), b["dn_w"], b["dn_b"])
        return Fn.normalize(h.mean(0), dim=0)


# --------------------------------------------------------------------------- timing

def time_torch(fn, tokens, reps, device, budget, prev):
    """Mean/stddev seconds of fn(tokens), or a reason string when skipped."""
    T = tokens.shape[0]
    if prev is not None and T > prev[0] and prev[1] * (T / prev[0]) ** 2 > budget:
        return "stopped (budget)"
    sync = (lambda: torch.cuda.synchronize()) if device == "cuda" else (lambda: None)
    try:
        with torch.inference_mode():
            fn(tokens)  # warm-up
            sync()
            times = []
            for _ in range(reps):
                t0 = time.perf_counter()
                fn(tokens)
                sync()
                times.append(time.perf_counter() - t0)
                if sum(times) > budget:
                    break
    except (RuntimeError, MemoryError) as e:  # CUDA OOM is a RuntimeError
        msg = str(e).splitlines()[0][:80]
        if device == "cuda":
            torch.cuda.empty_cache()
        return f"error: {msg}"
    return times


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter,
                                 epilog=__doc__.split("\n\n", 1)[1])
    ap.add_argument("--bench", default=None,
                    help="spectral-bench binary (default: build/tools/spectral-bench or PATH)")
    ap.add_argument("-m", "--model", default=None, help="spectralmlp GGUF (default: random weights)")
    ap.add_argument("--dim", type=int, default=256)
    ap.add_argument("--ffn", type=int, default=1024)
    ap.add_argument("--layers", type=int, default=4)
    ap.add_argument("--filters", type=int, default=64)
    ap.add_argument("-p", "--n-tokens", type=parse_lengths, default=parse_lengths("512-8192*2"))
    ap.add_argument("-r", "--repetitions", type=int, default=3)
    ap.add_argument("-t", "--threads", type=int, default=0, help="0 = all cores")
    ap.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    ap.add_argument("--budget", type=float, default=60.0,
                    help="per-row time budget in seconds for the attention rows (both sides)")
    ap.add_argument("--no-ours", action="store_true", help="time PyTorch only")
    ap.add_argument("--check", action="store_true",
                    help="first check the rfft formulation against torch.fft.fft/ifft")
    ap.add_argument("--jsonl-out", default=None,
                    help="also write every row (ours and torch) as jsonl, for bench_plot.py")
    args = ap.parse_args()
    if args.repetitions < 1:
        ap.error("-r must be >= 1")

    if args.device == "cuda" and not torch.cuda.is_available():
        sys.exit("bench_compare: --device cuda but torch.cuda.is_available() is False")
    threads = args.threads or os.cpu_count() or 1
    torch.set_num_threads(threads)
    dev = torch.device(args.device)

    tmpdir = tempfile.TemporaryDirectory(prefix="bench-compare-")
    model_path = args.model
    if model_path is None:
        model_path = os.path.join(tmpdir.name, "random.gguf")
        write_random_gguf(model_path, args.dim, args.ffn, args.layers, args.filters,
                          max(args.n_tokens))
    spec = SpectralTorch(model_path, dev)
    attn = AttentionTorch(spec.D, spec.F, spec.L, dev)
    label = f"D{spec.D} F{spec.F} L{spec.L} K{spec.K}"
    print(f"bench_compare: {os.path.basename(model_path)} ({label}), torch {torch.__version__}, "
          f"{args.device}, {threads} threads", file=sys.stderr)

    if args.check:
        g = torch.Generator().manual_seed(0)
        tok = torch.randint(0, spec.vocab, (257,), generator=g).to(dev)
        with torch.inference_mode():
            a, b = spec.forward(tok), spec.forward(tok, exact=True)
        err = (a - b).abs().max().item()
        print(f"bench_compare: --check rfft vs fft/ifft forward, max |diff| = {err:.3g}",
              file=sys.stderr)
        if not err < 1e-4:
            sys.exit("bench_compare: --check failed")

    # ---- ours: one spectral-bench run, jsonl
    ours = {}
    if not args.no_ours:
        bench = args.bench
        if bench is None:
            here = os.path.dirname(os.path.abspath(__file__))
            for cand in (os.path.join(here, "..", "build", "tools", "spectral-bench"),
                         "spectral-bench"):
                if os.path.exists(cand) or cand == "spectral-bench":
                    bench = cand
                    break
        cmd = [bench, "-m", model_path, "-p", ",".join(map(str, args.n_tokens)),
               "-r", str(args.repetitions), "-t", str(threads), "--device", args.device,
               "--attn-budget", str(args.budget), "-o", "jsonl"]
        print("bench_compare: running", " ".join(cmd), file=sys.stderr)
        try:
            p = subprocess.run(cmd, stdout=subprocess.PIPE, text=True)
        except FileNotFoundError:
            sys.exit(f"bench_compare: cannot run {bench!r} (build it, or pass --bench)")
        if p.returncode != 0:
            sys.exit(f"bench_compare: spectral-bench exited {p.returncode}")
        for line in p.stdout.splitlines():
            if line.strip():
                r = json.loads(line)
                ours[(r["impl"], int(r["n_tokens"]))] = r

    # ---- torch
    rows = list(ours.values())
    prev_attn = None
    gen = torch.Generator().manual_seed(1234)
    table = []
    for T in args.n_tokens:
        tok = torch.randint(0, spec.vocab, (T,), generator=gen).to(dev)
        res = {}
        for name, fn in (("torch-spectral", spec.forward), ("torch-sdpa", attn.forward)):
            print(f"  {name} T={T} ...", file=sys.stderr)
            t = time_torch(fn, tok, args.repetitions, args.device,
                           args.budget if name == "torch-sdpa" else float("inf"),
                           prev_attn if name == "torch-sdpa" else None)
            row = {"impl": name, "backend": args.device, "model": label, "mode": "model",
                   "n_tokens": T, "n_batch": 1, "n_threads": threads}
            if isinstance(t, str):
                row["status"] = t
            else:
                tps = [T / x for x in t]
                row.update(status="ok", n_reps=len(t), avg_ns=statistics.mean(t) * 1e9,
                           stddev_ns=(statistics.stdev(t) if len(t) > 1 else 0) * 1e9,
                           avg_ts=statistics.mean(tps),
                           stddev_ts=statistics.stdev(tps) if len(tps) > 1 else 0,
                           ms_per_doc=statistics.mean(t) * 1e3)
                if name == "torch-sdpa":
                    prev_attn = (T, statistics.mean(t))
            res[name] = row
            rows.append(row)
        table.append((T, res))

    # ---- report
    def ts(r):
        return f"{r['avg_ts']:.1f}" if r and r.get("status") == "ok" else (
            r.get("status", "-") if r else "-")

    def ratio(a, b):
        if a and b and a.get("status") == "ok" and b.get("status") == "ok":
            return f"{a['avg_ts'] / b['avg_ts']:.2f}"
        return "-"

    hdr = ["T", "ours spectral t/s", "torch spectral t/s", "ours/torch",
           "ours attn t/s", "torch sdpa t/s", "ours/torch", "spectral/sdpa (torch)"]
    print("| " + " | ".join(hdr) + " |")
    print("|" + "|".join("---:" for _ in hdr) + "|")
    for T, res in table:
        os_, oa = ours.get(("spectral", T)), ours.get(("attention", T))
        tsp, tsd = res["torch-spectral"], res["torch-sdpa"]
        print("| " + " | ".join([str(T), ts(os_), ts(tsp), ratio(os_, tsp), ts(oa), ts(tsd),
                                 ratio(oa, tsd), ratio(tsp, tsd)]) + " |")
    print("\nratios are of tokens/s (> 1: the left one is faster); "
          f"{args.repetitions} repetitions after one warm-up, same machine, same run.")
    if args.jsonl_out:
        with open(args.jsonl_out, "w", encoding="utf-8") as f:
            for r in rows:
                f.write(json.dumps(r) + "\n")
        print(f"bench_compare: wrote {args.jsonl_out}", file=sys.stderr)
    tmpdir.cleanup()


if __name__ == "__main__":
    main()
