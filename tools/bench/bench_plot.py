#!/usr/bin/env python3
"""Plot spectral-bench results: tokens/s against sequence length, log-log.

    spectral-bench -p 512-65536*2 -o jsonl > cpu.jsonl
    spectral-bench -p 512-1048576*2 --device cuda -o jsonl > gpu.jsonl
    python3 tools/bench/bench_plot.py cpu.jsonl gpu.jsonl -o bench.png

Reads one or more jsonl files written by `spectral-bench -o jsonl` (or by
tools/bench/bench_compare.py --jsonl-out) and draws one series per (implementation,
backend, model): the spectral model and the attention baseline, CPU and GPU
where present. Rows whose status is not "ok" (e.g. "stopped (budget)") are
left out of the lines and listed on stderr. A second panel shows peak
activation memory where the rows carry it.

Needs matplotlib (pip install matplotlib); uses the Agg backend, no display.
"""
import argparse
import json
import sys
from collections import defaultdict


def load_rows(paths):
    rows = []
    for path in paths:
        with open(path, encoding="utf-8") as f:
            text = f.read()
        stripped = text.lstrip()
        if stripped.startswith("["):  # also accept `-o json`
            rows.extend(json.loads(stripped))
            continue
        for n, line in enumerate(text.splitlines(), 1):
            line = line.strip()
            if not line:
                continue
            try:
                rows.append(json.loads(line))
            except ValueError as e:
                sys.exit(f"bench_plot: {path}:{n}: not a JSON line: {e}")
    return rows


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("inputs", nargs="+", help="jsonl files from spectral-bench -o jsonl")
    ap.add_argument("-o", "--output", default="bench.png", help="PNG to write (default bench.png)")
    ap.add_argument("--mode", default="model", help="which rows: model, mix or mlp (default model)")
    ap.add_argument("--batch", type=int, default=None, help="only rows with this n_batch")
    ap.add_argument("--title", default=None)
    ap.add_argument("--no-mem", action="store_true", help="leave out the peak-memory panel")
    args = ap.parse_args()

    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        sys.exit("bench_plot: matplotlib is not installed (pip install matplotlib)")

    rows = load_rows(args.inputs)
    series = defaultdict(list)
    skipped = []
    for r in rows:
        if r.get("mode", "model") != args.mode:
            continue
        if args.batch is not None and int(r.get("n_batch", 1)) != args.batch:
            continue
        key = (r.get("impl", "?"), r.get("backend", "?"), r.get("model", "?"))
        if r.get("status", "ok") != "ok":
            skipped.append(f"{key[0]} ({key[1]}) T={r.get('n_tokens')}: {r.get('status')}")
            continue
        series[key].append(r)
    if not series:
        sys.exit(f"bench_plot: no rows with status ok and mode {args.mode!r} in {args.inputs}")
    for s in skipped:
        print("bench_plot: not plotted:", s, file=sys.stderr)

    have_mem = not args.no_mem and any(r.get("peak_mem_bytes") for v in series.values() for r in v)
    fig, axes = plt.subplots(1, 2 if have_mem else 1, figsize=(13 if have_mem else 7.5, 5.2),
                             squeeze=False)
    ax = axes[0][0]
    styles = {"spectral": "-", "attention": "--"}
    markers = {"cpu": "o", "cuda": "s"}
    for (impl, backend, model), rs in sorted(series.items()):
        rs.sort(key=lambda r: int(r["n_tokens"]))
        t = [int(r["n_tokens"]) for r in rs]
        ts = [float(r["avg_ts"]) for r in rs]
        err = [float(r.get("stddev_ts", 0) or 0) for r in rs]
        base = impl.split("-")[-1] if impl.startswith("torch") else impl
        label = f"{impl} ({backend})"
        if len({k[2] for k in series if k[0] == impl and k[1] == backend}) > 1:
            label += f" {model}"
        ax.errorbar(t, ts, yerr=err, linestyle=styles.get(base, ":"),
                    marker=markers.get(backend, "^"), capsize=2, label=label)
        if have_mem:
            mem = [(int(r["n_tokens"]), r["peak_mem_bytes"] / 2**20) for r in rs
                   if r.get("peak_mem_bytes")]
            if mem:
                axes[0][1].plot([m[0] for m in mem], [m[1] for m in mem],
                                linestyle=styles.get(base, ":"), marker=markers.get(backend, "^"),
                                label=label)
    ax.set_xscale("log", base=2)
    ax.set_yscale("log")
    ax.set_xlabel("sequence length T (tokens)")
    ax.set_ylabel("tokens / s (mean ± stddev)")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8)
    ax.set_title(args.title or f"spectral-bench, mode {args.mode}")
    if have_mem:
        m = axes[0][1]
        m.set_xscale("log", base=2)
        m.set_yscale("log")
        m.set_xlabel("sequence length T (tokens)")
        m.set_ylabel("peak activation memory (MiB)")
        m.grid(True, which="both", alpha=0.3)
        m.legend(fontsize=8)
        m.set_title("peak memory")
        from matplotlib.ticker import FuncFormatter
        m.yaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
        m.yaxis.set_minor_formatter(FuncFormatter(lambda v, _: ""))
    fig.tight_layout()
    fig.savefig(args.output, dpi=130)
    print(f"bench_plot: wrote {args.output}")


if __name__ == "__main__":
    main()
