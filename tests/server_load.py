#!/usr/bin/env python3
"""spectral-server under load: N concurrent clients on keep-alive connections
for a bounded time, mixed lengths, float and base64, some requests over the
token limit, some over the memory cap, some malformed.

Every response is checked: a 200 has exactly the inputs sent, each once, in
order, each equal bit for bit to spectral-embed's embedding of that input;
a refusal has its expected status and code (503 also a Retry-After). The
server's own counters must match the clients' (nothing lost, nothing
answered twice), and its peak RSS must stay within its RSS at start plus
the model file plus the memory cap plus the stated bound on what the queue
and the parser hold (docs/server.md; not under ASan, whose shadow memory and
quarantine are not the server's).

usage: server_load.py SERVER EMBED MODEL [--clients N] [--seconds S] [--no-rss]
"""
import argparse
import http.client
import json
import os
import random
import sys
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from server_common import Checker, Server, cli_embed, decode_base64_floats, f32, metrics, words  # noqa: E402

ap = argparse.ArgumentParser()
ap.add_argument("server")
ap.add_argument("embed")
ap.add_argument("model")
ap.add_argument("--clients", type=int, default=24)
ap.add_argument("--seconds", type=float, default=20)
ap.add_argument("--no-rss", action="store_true", help="skip the RSS bound (sanitizer builds)")
args = ap.parse_args()
check = Checker()

MIB = 1 << 20
MEM_LIMIT = 48 * MIB      # two contexts of 24 MiB
QUEUE = 12
MAX_BODY = 1 * MIB
MAX_TOKENS = 12000
MAX_INPUTS = 16
HTTP_THREADS = 2
REQUEST_MEM = MEM_LIMIT  # --request-mem's default
# Beyond its RSS at start (code, libraries, the model as loaded) the server
# holds the contexts' arenas (<= MEM_LIMIT), what requests hold outside them
# (bodies being received, their parse, tokens, vectors, answers:
# <= --request-mem), libmicrohttpd's buffer per connection (64 KiB) and a
# fixed slack for thread stacks and the allocator. The formula is the one
# docs/server.md states.
CONSTANT = REQUEST_MEM + args.clients * 64 * 1024 + 32 * MIB

# The pool of inputs: lengths from a few words to ~1,700 tokens.
lengths = [3, 5, 8, 12, 20, 30, 50, 80, 120, 200, 300, 450, 600, 800, 1000, 1200, 1500]
pool = [words(n, 1000 + i) for i, n in enumerate(lengths)]
pool += ["Ünïcödé café 東京 🎉", "a", "x " * 40]
ref = cli_embed(args.embed, args.model, pool)
over_cap = words(8000, 77)      # ~9,000 tokens: under --max-tokens, over a context's 24 MiB
over_tokens = words(14000, 78)  # ~15,800 tokens: over --max-tokens

srv = Server(args.server, args.model, "--parallel", "2", "--threads", "1", "--mem-limit", str(MEM_LIMIT),
             "--queue", str(QUEUE), "--max-body", str(MAX_BODY), "--max-tokens", str(MAX_TOKENS),
             "--timeout", "30", "--max-inputs", str(MAX_INPUTS), "--http-threads", str(HTTP_THREADS))
pid = srv.proc.pid


def rss_kib(field):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    return 0


base_rss = rss_kib("VmRSS") * 1024
model_size = os.path.getsize(args.model)
lock = threading.Lock()
tally = {}        # (status, code) -> count, as the clients saw them
latencies = []
errors = []       # descriptions of wrong answers
sent = [0]
deadline = time.time() + args.seconds


def record(status, code, dt):
    with lock:
        tally[(status, code)] = tally.get((status, code), 0) + 1
        latencies.append(dt)


def wrong(msg):
    with lock:
        if len(errors) < 20:
            print("FAIL:", msg, flush=True)
        errors.append(msg)


def client(seed):
    rnd = random.Random(seed)
    conn = http.client.HTTPConnection("127.0.0.1", srv.port, timeout=300)
    while time.time() < deadline:
        kind = rnd.random()
        b64 = rnd.random() < 0.5
        if kind < 0.75:
            picks = [rnd.randrange(len(pool)) for _ in range(rnd.choice([1, 1, 2, 3, 5, 8]))]
            payload = {"input": [pool[i] for i in picks], "model": "m"}
            expect = {(200, None), (503, "queue_full"), (503, "server_busy")}
        elif kind < 0.83:
            picks = None
            payload = {"input": [pool[0], over_cap]}
            expect = {(413, "input_too_large"), (503, "queue_full"), (503, "server_busy")}
        elif kind < 0.91:
            picks = None
            payload = {"input": [over_tokens, pool[1]]}
            expect = {(413, "input_too_long"), (503, "queue_full"), (503, "server_busy")}
        else:
            picks = None
            payload = rnd.choice([b'{"input": [1, "a"]}', b'{"input": ', b'{"input": "caf\xe9"}', b"[]"])
            expect = {(400, None), (503, "queue_full"), (503, "server_busy")}
        if isinstance(payload, dict) and b64:
            payload["encoding_format"] = "base64"
        body = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
        t0 = time.time()
        try:
            conn.request("POST", "/v1/embeddings", body=body, headers={"Content-Type": "application/json"})
            r = conn.getresponse()
            data = r.read()
            headers = {k.lower(): v for k, v in r.getheaders()}
        except Exception as e:  # a lost request: no answer on an open connection
            wrong(f"no response ({type(e).__name__}: {e})")
            conn.close()
            conn = http.client.HTTPConnection("127.0.0.1", srv.port, timeout=300)
            continue
        dt = time.time() - t0
        with lock:
            sent[0] += 1
        try:
            j = json.loads(data)
        except ValueError:
            wrong(f"status {r.status}: body is not JSON: {data[:100]!r}")
            continue
        code = j["error"].get("code") if "error" in j else None
        st = r.status
        if st == 400:
            code = None  # which 400 code depends on the body; its shape is what matters here
            if not isinstance(j["error"].get("message"), str):
                wrong("400 without a message")
        record(st, code, dt)
        if (st, code) not in expect:
            wrong(f"status {st} code {code}, expected one of {expect}: {data[:200]!r}")
            continue
        if st == 503:
            if headers.get("retry-after") != "1":
                wrong("503 without Retry-After")
            time.sleep(rnd.uniform(0.05, 0.2))
            continue
        if st != 200:
            continue
        got = j["data"]
        if [d["index"] for d in got] != list(range(len(picks))):
            wrong(f"indices {[d['index'] for d in got]} for {len(picks)} inputs")
            continue
        for d, i in zip(got, picks):
            e = decode_base64_floats(d["embedding"]) if b64 else d["embedding"]
            if f32(e) != f32(ref[i][1]):
                wrong(f"input {i}: embedding differs from spectral-embed's")
        if j["usage"]["prompt_tokens"] != sum(ref[i][0] for i in picks):
            wrong(f"usage {j['usage']} for inputs {picks}")
    conn.close()


peak_sampled = [0]
stop_sampling = threading.Event()


def sample():
    while not stop_sampling.is_set():
        try:
            peak_sampled[0] = max(peak_sampled[0], rss_kib("VmRSS") * 1024)
        except OSError:
            break
        time.sleep(0.1)


sampler = threading.Thread(target=sample, daemon=True)
sampler.start()
t_start = time.time()
threads = [threading.Thread(target=client, args=(s,)) for s in range(args.clients)]
for t in threads:
    t.start()
for t in threads:
    t.join(args.seconds + 600)
elapsed = time.time() - t_start
stop_sampling.set()
sampler.join()
hwm = rss_kib("VmHWM") * 1024

st, mt = metrics(srv)
rc = srv.stop()
check(rc == 0, f"server exits 0 after the load (got {rc}); stderr tail: {srv.stderr()[-1500:]}")
check(not errors, f"{len(errors)} wrong or missing answers")
total = sum(tally.values())
check(total == sent[0] and total > 0, f"every request sent has one answer ({total} of {sent[0]})")
# The server's count of what it answered equals the clients' count of what they got.
for status in (200, 400, 413, 503):
    mine = sum(v for (s, _), v in tally.items() if s == status)
    theirs = mt.get(f'spectral_requests_total{{endpoint="embeddings",code="{status}"}}', -1)
    check(mine == theirs, f"status {status}: clients got {mine}, server says it sent {theirs}")
check(tally.get((200, None), 0) > 0 and tally.get((413, "input_too_large"), 0) > 0
      and tally.get((413, "input_too_long"), 0) > 0, f"the mix was exercised: {tally}")
check(mt["spectral_arena_peak_bytes"] <= MEM_LIMIT, f"arena peak {mt['spectral_arena_peak_bytes']} <= cap")
check(mt["spectral_queue_depth"] == 0, "queue empty at the end")
# + the model file: mapped weights count once the first passes touch them.
bound = base_rss + model_size + MEM_LIMIT + CONSTANT
lat = sorted(latencies)
p = lambda q: lat[min(len(lat) - 1, int(q * len(lat)))] * 1e3 if lat else 0  # noqa: E731
ok200 = tally.get((200, None), 0)
print(f"load: {args.clients} clients, {elapsed:.1f} s, {total} requests ({total / elapsed:.1f}/s), "
      f"{ok200} ok ({ok200 / elapsed:.1f}/s), statuses {dict(sorted((f'{s} {c}', v) for (s, c), v in tally.items()))}")
print(f"load: latency p50 {p(0.5):.0f} ms, p99 {p(0.99):.0f} ms (all statuses); "
      f"batches {mt['spectral_batches_total']:.0f}, inputs per batch {mt['spectral_batch_inputs_total'] / max(1, mt['spectral_batches_total']):.2f}")
print(f"load: RSS at start {base_rss / MIB:.1f} MiB, peak {hwm / MIB:.1f} MiB (sampled {peak_sampled[0] / MIB:.1f}); "
      f"bound {bound / MIB:.1f} MiB = at start {base_rss / MIB:.1f} + model file {model_size / MIB:.1f} + cap {MEM_LIMIT / MIB:.0f} "
      f"+ requests, connections and slack {CONSTANT / MIB:.1f}")
if not args.no_rss:
    check(hwm <= bound, f"peak RSS {hwm / MIB:.1f} MiB within {bound / MIB:.1f} MiB")
sys.exit(check.done("server_load"))
