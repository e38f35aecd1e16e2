# spectral-bench smoke tests (not timed): the tool runs, prints valid rows in
# every output format with positive tokens/s for both the spectral model and
# the attention baseline, and rejects bad options with exit status 2.
if(NOT TARGET spectral-bench)
  return()
endif()

set(SPECTRAL_BENCH_CHECK ${CMAKE_CURRENT_BINARY_DIR}/bench_check.py)
file(WRITE ${SPECTRAL_BENCH_CHECK} [==[
import csv, io, json, subprocess, sys

bench = sys.argv[1]
what = sys.argv[2] if len(sys.argv) > 2 else "smoke"  # smoke | bad-options
# The brief's shape, a tiny calibration so the test stays light.
base = [bench, "--dim", "32", "--ffn", "64", "--layers", "1", "--filters", "8",
        "-p", "64,256", "-r", "2", "-t", "1", "--calib-size", "256", "--calib-mem", "8m"]
fails = []

def run(args):
    p = subprocess.run(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, timeout=600)
    return p.returncode, p.stdout, p.stderr

def check_rows(rows, what):
    for impl in ("spectral", "attention"):
        got = sorted(r["n_tokens"] for r in rows if r.get("impl") == impl)
        if got != [64, 256]:
            fails.append(f"{what}: {impl} rows for T={got}, want [64, 256]")
    for r in rows:
        if r.get("status") != "ok":
            fails.append(f"{what}: row not ok: {r}")
            continue
        if not (float(r["avg_ts"]) > 0 and float(r["ms_per_doc"]) > 0):
            fails.append(f"{what}: non-positive throughput: {r}")
        if r["impl"] == "attention" and not float(r["time_ratio"]) > 0:
            fails.append(f"{what}: attention row without a time ratio: {r}")

rc, out, err = run(base + ["-o", "jsonl"]) if what == "smoke" else (None, "", "")
if what != "smoke":
    pass
elif rc != 0:
    fails.append(f"jsonl run exited {rc}: {err[-2000:]}")
else:
    rows = []
    for line in out.splitlines():
        if line.strip():
            try:
                rows.append(json.loads(line))
            except ValueError as e:
                fails.append(f"jsonl: invalid line {line!r}: {e}")
    check_rows(rows, "jsonl")

rc, out, err = run(base + ["-o", "json"]) if what == "smoke" else (None, "", "")
if what != "smoke":
    pass
elif rc != 0:
    fails.append(f"json run exited {rc}: {err[-2000:]}")
else:
    try:
        check_rows(json.loads(out), "json")
    except ValueError as e:
        fails.append(f"json: invalid document: {e}")

rc, out, err = run(base + ["-o", "csv"]) if what == "smoke" else (None, "", "")
if what != "smoke":
    pass
elif rc != 0:
    fails.append(f"csv run exited {rc}: {err[-2000:]}")
else:
    rows = list(csv.DictReader(io.StringIO(out)))
    for r in rows:
        r["n_tokens"] = int(r["n_tokens"])
    check_rows(rows, "csv")

rc, out, err = run(base + ["-o", "md", "--mode", "all"]) if what == "smoke" else (0, "", "")
if what != "smoke":
    pass
elif rc != 0 or "| spectral " not in out or "| attention " not in out or " mlp " not in out:
    fails.append(f"md --mode all: rc {rc}, output:\n{out[-2000:]}\n{err[-2000:]}")

# --dtype: a model row per dtype, named in the row (openblas: f32 through OpenBLAS)
rc, out, err = run(base + ["-o", "jsonl", "--no-attn", "--dtype", "auto,bf16,openblas"]) if what == "smoke" else (0, "", "")
if what == "smoke":
    got = sorted((r.get("dtype"), r["n_tokens"], r["status"]) for r in map(json.loads, out.splitlines()) if r.get("impl") == "spectral")
    want = sorted((d, T, "ok") for d in ("auto", "bf16", "openblas") for T in (64, 256))
    if rc != 0 or got != want:
        fails.append(f"--dtype rows: rc {rc}, got {got}, stderr {err[-1000:]}")
    if "kernels: f32" not in err:
        fails.append(f"the header does not name the kernels: {err[-500:]}")

# Bad options: a clear message and exit status 2, never a crash.
for bad in () if what == "smoke" else (["--bogus"], ["-p"], ["-p", "0"], ["-p", "512-256"], ["-p", "64-1024*1"],
            ["-r", "0"], ["-o", "xml"], ["--device", "tpu"], ["--mode", "x"],
            ["--attn-budget", "-1"], ["-t", "abc"], ["--dim", "0"], ["-m", "x.gguf", "--dim", "8"],
            ["--dtype", "f16"], ["--dtype", ""], ["--dtype", "auto,f32,bf16,openblas,auto"]):
    rc, out, err = run([bench] + bad)
    if rc != 2 or "spectral-bench:" not in err:
        fails.append(f"bad option {bad}: exit {rc}, stderr {err!r}")

for f in fails:
    print("FAIL:", f)
print("bench", what + ":", "FAILED" if fails else "ok")
sys.exit(1 if fails else 0)
]==])

add_test(NAME bench_smoke COMMAND ${Python3_EXECUTABLE} ${SPECTRAL_BENCH_CHECK} $<TARGET_FILE:spectral-bench>)
set_tests_properties(bench_smoke PROPERTIES LABELS "bench;tools" TIMEOUT 600)
add_test(NAME bench_bad_options COMMAND ${Python3_EXECUTABLE} ${SPECTRAL_BENCH_CHECK} $<TARGET_FILE:spectral-bench> bad-options)
set_tests_properties(bench_bad_options PROPERTIES LABELS "bench;tools" TIMEOUT 120)
