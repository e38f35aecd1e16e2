#!/usr/bin/env python3
"""Load benchmark for spectral-server: requests/s and latency percentiles at
several client counts and input lengths, next to spectral-embed's own
throughput on the same texts (what the server adds or gains over the CLI).

Starts its own server on 127.0.0.1 (port 0), sends only valid requests, one
input each, on keep-alive connections, and prints a Markdown table (the one
in docs/server.md). Traffic goes to 127.0.0.1 only; every loop is bounded.

usage: tools/bench/bench_server.py [--server build/tools/spectral-server]
         [--embed build/tools/spectral-embed] [-m models/spectral-default.gguf]
         [--clients 1,8,32] [--words 10,200,1500] [--seconds 15]
         [--parallel 2] [--threads 1] [--server-args '--batch-tokens 1'] [--json out.json]
"""
import argparse
import http.client
import json
import os
import subprocess
import sys
import tempfile
import threading
import time

root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.join(root, "tests"))
from server_common import Server, words  # noqa: E402


def run_level(port, texts, clients, seconds, base64):
    lat, errors, lock = [], [0], threading.Lock()
    deadline = time.time() + seconds

    def client(k):
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=600)
        i = k
        while time.time() < deadline:
            body = {"input": texts[i % len(texts)], "model": "m"}
            if base64:
                body["encoding_format"] = "base64"
            t0 = time.perf_counter()
            try:
                conn.request("POST", "/v1/embeddings", body=json.dumps(body),
                             headers={"Content-Type": "application/json"})
                r = conn.getresponse()
                data = r.read()
                ok = r.status == 200 and b'"embedding"' in data
            except OSError:
                ok = False
                conn.close()
                conn = http.client.HTTPConnection("127.0.0.1", port, timeout=600)
            dt = time.perf_counter() - t0
            with lock:
                if ok:
                    lat.append(dt)
                else:
                    errors[0] += 1
            i += clients
        conn.close()

    t0 = time.time()
    threads = [threading.Thread(target=client, args=(k,)) for k in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    elapsed = time.time() - t0
    lat.sort()
    pct = lambda q: lat[min(len(lat) - 1, int(q * len(lat)))] * 1e3 if lat else float("nan")  # noqa: E731
    return {"clients": clients, "requests": len(lat), "errors": errors[0], "seconds": elapsed,
            "rps": len(lat) / elapsed, "p50_ms": pct(0.50), "p99_ms": pct(0.99)}


def cli_rate(embed, model, texts, threads):
    """spectral-embed's documents/s on the same texts, all in one run."""
    with tempfile.TemporaryDirectory() as d:
        paths = []
        for i, t in enumerate(texts):
            p = os.path.join(d, f"{i}.txt")
            with open(p, "w") as f:
                f.write(t)
            paths.append(p)
        t0 = time.time()
        subprocess.run([embed, "-m", model, "-t", str(threads), *paths], check=True,
                       stdout=subprocess.DEVNULL)
        return len(texts) / (time.time() - t0)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--server", default=os.path.join(root, "build/tools/spectral-server"))
    ap.add_argument("--embed", default=os.path.join(root, "build/tools/spectral-embed"))
    ap.add_argument("-m", "--model", default=os.path.join(root, "models/spectral-default.gguf"))
    ap.add_argument("--clients", default="1,8,32")
    ap.add_argument("--words", default="10,200,1500", help="input lengths in words (one level each)")
    ap.add_argument("--seconds", type=float, default=15)
    ap.add_argument("--parallel", type=int, default=2)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--base64", action="store_true")
    ap.add_argument("--server-args", default="", help="more server options, e.g. '--batch-tokens 1'")
    ap.add_argument("--json", help="also write the results here")
    a = ap.parse_args()
    clients = [int(x) for x in a.clients.split(",")]
    lengths = [int(x) for x in a.words.split(",")]
    srv = Server(a.server, a.model, "--parallel", str(a.parallel), "--threads", str(a.threads),
                 "--queue", str(max(clients) * 2), *a.server_args.split())
    rows = []
    try:
        for n in lengths:
            texts = [words(n, 5000 + i) for i in range(64)]
            run_level(srv.port, texts, 2, 2, a.base64)  # warm up (FFT plans for these lengths)
            cli = cli_rate(a.embed, a.model, texts, a.parallel * a.threads)
            for c in clients:
                r = run_level(srv.port, texts, c, a.seconds, a.base64)
                r.update(words=n, cli_docs_per_s=cli)
                rows.append(r)
                print(f"{n} words, {c} clients: {r['rps']:.1f} req/s, p50 {r['p50_ms']:.1f} ms, "
                      f"p99 {r['p99_ms']:.1f} ms, {r['errors']} errors (CLI {cli:.1f} docs/s)", flush=True)
    finally:
        rc = srv.stop()
    print()
    print(f"server: --parallel {a.parallel} --threads {a.threads} {a.server_args}; CLI: -t {a.parallel * a.threads}; "
          f"{'base64' if a.base64 else 'float'} responses; {a.seconds:g} s per row")
    print()
    print("| words per input | clients | requests/s | p50 ms | p99 ms | errors | spectral-embed docs/s |")
    print("|--:|--:|--:|--:|--:|--:|--:|")
    for r in rows:
        print(f"| {r['words']} | {r['clients']} | {r['rps']:.1f} | {r['p50_ms']:.1f} | {r['p99_ms']:.1f} "
              f"| {r['errors']} | {r['cli_docs_per_s']:.1f} |")
    if a.json:
        with open(a.json, "w") as f:
            json.dump(rows, f, indent=1)
    return 0 if rc == 0 and all(r["errors"] == 0 for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
