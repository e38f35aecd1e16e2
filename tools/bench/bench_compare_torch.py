#!/usr/bin/env python3
"""PyTorch baseline for the spectral mixing: torch.fft.rfft -> multiply the
first k bins by the filter -> irfft -> h += y + bias, on the shapes that
tools/bench/bench_mix_gpu.cu measured (read from its CSV), timed with CUDA events
(median of repetitions). Prints ms per document and the ratio torch / ours
for every path in the CSV.

    python3 tools/bench/bench_compare_torch.py --csv build-gpu/bench_mix_gpu.csv
"""
import argparse
import csv
import statistics
import sys


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--csv", required=True, help="output of bench_mix_gpu --csv")
    ap.add_argument("--reps", type=int, default=7)
    args = ap.parse_args()
    try:
        import torch
    except ImportError:
        print("torch not installed", file=sys.stderr)
        return 0
    if not torch.cuda.is_available():
        print("torch has no CUDA device", file=sys.stderr)
        return 0

    rows = list(csv.DictReader(open(args.csv)))
    ours = {}
    for r in rows:
        key = (int(r["T"]), int(r["B"]), int(r["D"]), int(r["K"]))
        ours.setdefault(key, {})[r["mode"]] = (r["path"], float(r["ms_per_doc"]))

    dev = torch.device("cuda")
    print(f"torch {torch.__version__} on {torch.cuda.get_device_name(0)}")
    print(f"{'T':>9} {'B':>5} {'torch ms/doc':>13}  ratios torch/ours (>1: ours faster)")
    for (T, B, D, K), paths in sorted(ours.items()):
        k = min(K, T // 2)
        # Batch the documents in one call, like the CUDA bench's B documents;
        # fall back to one at a time when memory is short.
        try:
            u = torch.randn(B, T, D, device=dev)
            h = torch.zeros(B, T, D, device=dev)
            chunk = B
        except torch.cuda.OutOfMemoryError:
            u = torch.randn(1, T, D, device=dev)
            h = torch.zeros(1, T, D, device=dev)
            chunk = 1
        W = torch.randn(k, D, dtype=torch.complex64, device=dev)
        bias = torch.randn(D, device=dev)

        def mix():
            if k == 0:
                h.add_(bias)
                return
            U = torch.fft.rfft(u, dim=1)
            Z = torch.zeros_like(U)
            Z[:, :k] = U[:, :k] * W
            h.add_(torch.fft.irfft(Z, n=T, dim=1) + bias)

        times = []
        try:
            for r in range(args.reps + 1):
                e0 = torch.cuda.Event(enable_timing=True)
                e1 = torch.cuda.Event(enable_timing=True)
                e0.record()
                for _ in range(B // chunk):
                    mix()
                e1.record()
                torch.cuda.synchronize()
                if r > 0:
                    times.append(e0.elapsed_time(e1) / B)
        except torch.cuda.OutOfMemoryError:
            print(f"{T:>9} {B:>5} {'OOM':>13}")
            del u, h
            torch.cuda.empty_cache()
            continue
        t = statistics.median(times)
        ratios = "  ".join(f"{m}({p})={t / ms:.2f}x" for m, (p, ms) in sorted(paths.items()))
        print(f"{T:>9} {B:>5} {t:>13.4f}  {ratios}")
        del u, h, W
        torch.cuda.empty_cache()
    return 0


if __name__ == "__main__":
    sys.exit(main())
