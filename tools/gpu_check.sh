#!/usr/bin/env bash
# The first thing to run on a machine with an NVIDIA GPU (issue 12): in a few
# minutes it builds spectral with CUDA, runs every GPU test, compute-sanitizer
# (memcheck, racecheck, synccheck, initcheck) on a reduced test matrix, the
# mixing-path benchmark (fused / dftgemm / cufft against a device copy) and
# the encoder benchmark against PyTorch eager on the device, and writes one
# Markdown report.
#
#   bash tools/gpu_check.sh --fetch-debs   # on a machine with apt (no GPU needed):
#                                          # download FFTW/OpenBLAS .debs into build-debs/
#   bash tools/gpu_check.sh                # on the GPU machine: everything, report in
#                                          # build-gpucheck/gpu_check_report.md
#
# The GPU machine may lack Debian's FFTW and OpenBLAS development packages
# and have no registry to install them from. When pkg-config finds no
# fftw3f, the .deb files in DEBS (default build-debs, fetched beforehand
# with --fetch-debs and carried along with the tree) are unpacked with
# `dpkg -x` into a private prefix under the build directory, and CMake,
# pkg-config and the loader are pointed at it. Nothing is installed into /.
#
# Without a GPU (nvidia-smi lists none) it builds, runs the GPU tests (which
# then SKIP) and says so in the report; exit status 0. A step that fails is
# recorded in the report and the script goes on; the exit status is then 1.
#
# Environment: BUILD_DIR (build-gpucheck), DEBS (build-debs), CUDA_ARCH (90),
# JOBS (nproc), FORCE_DEBS=1 (use the .debs even when the system has FFTW), REPORT (BUILD_DIR/gpu_check_report.md), BENCH_T (mixing
# benchmark lengths), ENC_T (encoder lengths).
set -uo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
BUILD_DIR=${BUILD_DIR:-build-gpucheck}
DEBS=${DEBS:-build-debs}
CUDA_ARCH=${CUDA_ARCH:-90}
JOBS=${JOBS:-$(nproc)}
BENCH_T=${BENCH_T:-1024,4096,16384,65536,262144,1048576}
ENC_T=${ENC_T:-512,4096,32768}
DEB_PACKAGES="libfftw3-dev libfftw3-single3 libfftw3-double3 libfftw3-long3 libfftw3-quad3
  libopenblas-dev libopenblas-pthread-dev libopenblas0-pthread libopenblas0 libgfortran5
  libquadmath0"

if [ "${1:-}" = "--fetch-debs" ]; then
  mkdir -p "$DEBS"
  # shellcheck disable=SC2086
  (cd "$DEBS" && apt-get download $DEB_PACKAGES)
  ls -l "$DEBS"
  exit $?
fi

mkdir -p "$BUILD_DIR/logs"
REPORT=${REPORT:-$BUILD_DIR/gpu_check_report.md}
: >"$REPORT"
STATUS=0
T_START=$(date +%s)

say() { printf '%s\n' "$*" | tee -a "$REPORT"; }
# step NAME TIMEOUT CMD...: runs CMD with a time limit, its output in
# logs/NAME.log, the last lines in the report.
step() {
  local name=$1 limit=$2
  shift 2
  local log="$BUILD_DIR/logs/$name.log" t0 rc
  t0=$(date +%s)
  timeout --kill-after=10 "$limit" "$@" >"$log" 2>&1
  rc=$?
  local verdict=ok
  if [ $rc -eq 124 ] || [ $rc -eq 137 ]; then verdict="TIMEOUT (${limit}s)"; STATUS=1
  elif [ $rc -ne 0 ]; then verdict="FAILED (exit $rc)"; STATUS=1; fi
  say ""
  say "### $name: $verdict, $(($(date +%s) - t0)) s"
  say ""
  say '```'
  tail -n "${TAIL_LINES:-25}" "$log" | tee -a "$REPORT" >/dev/null
  say '```'
  return $rc
}

say "# gpu_check report"
say ""
say "- date: $(date -u +%Y-%m-%dT%H:%M:%SZ)"
say "- commit: $(git rev-parse --short HEAD 2>/dev/null || echo '?') $(git status --porcelain 2>/dev/null | grep -q . && echo '(with local changes)')"
GPU_LINE=$(nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader 2>/dev/null | head -n 1)
HAVE_GPU=0
if nvidia-smi -L 2>/dev/null | grep -q '^GPU '; then HAVE_GPU=1; fi
say "- GPU: ${GPU_LINE:-none visible to nvidia-smi}"
NVCC=${NVCC:-$(command -v nvcc || echo /usr/local/cuda/bin/nvcc)}
say "- nvcc: $("$NVCC" --version 2>/dev/null | grep -o 'release [0-9.]*' || echo missing)"
say "- cmake: $(cmake --version 2>/dev/null | head -n 1)"
say "- python: $(python3 -c 'import sys; print(sys.version.split()[0])' 2>/dev/null || echo missing)," \
  "torch: $(python3 -c 'import torch; print(torch.__version__, "cuda" if torch.cuda.is_available() else "no cuda")' 2>/dev/null || echo missing)"

# ---------------------------------------------------------------- deps
if [ "${FORCE_DEBS:-0}" != 1 ] && pkg-config --exists fftw3f 2>/dev/null; then
  say "- FFTW/OpenBLAS: system packages"
else
  PREFIX="$ROOT/$BUILD_DIR/prefix"
  if ! ls "$DEBS"/*.deb >/dev/null 2>&1; then
    say "- FFTW/OpenBLAS: not found, and no .deb files in $DEBS"
    say "  (run 'bash tools/gpu_check.sh --fetch-debs' on a machine with apt and carry $DEBS)"
    exit 1
  fi
  rm -rf "$PREFIX"
  mkdir -p "$PREFIX"
  for d in "$DEBS"/*.deb; do dpkg -x "$d" "$PREFIX" || { say "dpkg -x $d failed"; exit 1; }; done
  # Debian's .pc files name /usr: point them at the private prefix.
  find "$PREFIX" -name '*.pc' -exec sed -i -E "s#^([A-Za-z_]+)=/usr#\\1=$PREFIX/usr#" {} +
  MA=$(ls "$PREFIX/usr/lib" | grep -m1 -- '-linux-gnu$' || echo x86_64-linux-gnu)
  LIBDIR="$PREFIX/usr/lib/$MA"
  export PKG_CONFIG_PATH="$LIBDIR/pkgconfig:$LIBDIR/openblas-pthread/pkgconfig${PKG_CONFIG_PATH:+:$PKG_CONFIG_PATH}"
  export LD_LIBRARY_PATH="$LIBDIR:$LIBDIR/openblas-pthread${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
  export LIBRARY_PATH="$LIBDIR:$LIBDIR/openblas-pthread${LIBRARY_PATH:+:$LIBRARY_PATH}"
  export CPATH="$PREFIX/usr/include:$PREFIX/usr/include/$MA/openblas-pthread${CPATH:+:$CPATH}"
  if ! pkg-config --exists fftw3f; then say "- FFTW: unpacked, but pkg-config still finds no fftw3f"; exit 1; fi
  say "- FFTW/OpenBLAS: unpacked from $(ls "$DEBS"/*.deb | wc -l) .deb files into $PREFIX"
fi

# --------------------------------------------------------------- build
GEN=()
command -v ninja >/dev/null 2>&1 && GEN=(-G Ninja)
if [ -f "$BUILD_DIR/CMakeCache.txt" ] && ! grep -q "CMAKE_GENERATOR:INTERNAL=${GEN[1]:-Unix Makefiles}" "$BUILD_DIR/CMakeCache.txt"; then
  GEN=() # keep the generator the directory was configured with
fi
step configure 120 cmake -S . -B "$BUILD_DIR" "${GEN[@]}" -DCMAKE_BUILD_TYPE=Release \
  -DSPECTRAL_CUDA=ON -DCMAKE_CUDA_ARCHITECTURES="${CUDA_ARCH}-real" || { say "configure failed"; exit 1; }
TAIL_LINES=8 step build 360 cmake --build "$BUILD_DIR" -j "$JOBS" || { say "build failed"; exit 1; }

# --------------------------------------------------------------- tests
if [ $HAVE_GPU = 0 ]; then
  say ""
  say "No GPU: nvidia-smi lists none. The GPU tests must SKIP:"
  step ctest_gpu 120 ctest --test-dir "$BUILD_DIR" -R "gpu|cuda" --output-on-failure
  if grep -q "test_gpu_ops .*Skipped" "$BUILD_DIR/logs/ctest_gpu.log"; then
    say "test_gpu_ops: skipped, as it must be without a GPU. Device steps not run."
  else
    say "test_gpu_ops did not report SKIP without a GPU"
    STATUS=1
  fi
  say ""
  say "total: $(($(date +%s) - T_START)) s"
  exit $STATUS
fi

step ctest_gpu 300 ctest --test-dir "$BUILD_DIR" -R "gpu|cuda" --output-on-failure
grep -h -E "^(spectral_mix|50 lengths|1000 workspace|tf32|SKIP)" "$BUILD_DIR/logs/ctest_gpu.log" \
  | sed 's/^/    /' | tee -a "$REPORT" >/dev/null

SAN=$(command -v compute-sanitizer || ls /usr/local/cuda/bin/compute-sanitizer 2>/dev/null || true)
if [ -n "$SAN" ]; then
  for tool in memcheck racecheck synccheck initcheck; do
    TAIL_LINES=12 SPECTRAL_GPU_TEST_QUICK=1 step "sanitizer_$tool" 150 \
      env SPECTRAL_GPU_TEST_QUICK=1 "$SAN" --tool "$tool" --error-exitcode 9 \
      "$BUILD_DIR/tests/test_gpu_ops"
  done
else
  say "compute-sanitizer: not found"
  STATUS=1
fi

# ---------------------------------------------------------- benchmarks
if [ -x "$BUILD_DIR/tools/bench_mix_gpu" ]; then
  TAIL_LINES=40 step bench_mix 180 "$BUILD_DIR/tools/bench_mix_gpu" --D 768 --K 64 \
    --T "$BENCH_T" --csv "$BUILD_DIR/bench_mix_gpu.csv"
  if python3 -c 'import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)' 2>/dev/null; then
    TAIL_LINES=40 step bench_mix_torch 180 python3 tools/bench/bench_compare_torch.py \
      --csv "$BUILD_DIR/bench_mix_gpu.csv"
  fi
fi

# The encoder: spectral-bench on the device against the same architecture in
# PyTorch eager (random weights; only the time is compared).
ENC_ARGS=(--dim 768 --ffn 3072 --layers 12 --filters 128)
if [ -x "$BUILD_DIR/tools/spectral-bench" ]; then
  TAIL_LINES=20 step encoder_spectral 180 "$BUILD_DIR/tools/spectral-bench" "${ENC_ARGS[@]}" \
    -p "$ENC_T" --no-attn --device cuda -r 5 -o jsonl
fi
# M2-BERT in the published 80M shape (random weights) at the retrieval
# models' lengths; its parity and op tests ran above (ctest -R "gpu|cuda").
if [ -x "$BUILD_DIR/tools/spectral-bench" ]; then
  TAIL_LINES=20 step encoder_m2bert 240 "$BUILD_DIR/tools/spectral-bench" --arch m2bert \
    -p 2048,8192,32768 --no-attn --device cuda -r 3 -o jsonl
fi
if python3 -c 'import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)' 2>/dev/null; then
  TAIL_LINES=20 step encoder_torch 180 python3 - "$ENC_T" <<'PY'
import sys, time, torch
D, F, L, K = 768, 3072, 12, 128
dev = torch.device("cuda")
g = torch.Generator(device="cpu").manual_seed(0)
emb = torch.randn(256, D, generator=g).to(dev)
layers = []
for _ in range(L):
    layers.append(dict(
        ln1=torch.nn.LayerNorm(D).to(dev), ln2=torch.nn.LayerNorm(D).to(dev),
        W=(torch.randn(D, K, 2, generator=g) * 0.02).to(dev),
        up=torch.nn.Linear(D, F).to(dev), down=torch.nn.Linear(F, D).to(dev)))

@torch.no_grad()
def forward(ids):
    h = emb[ids]
    T = h.shape[0]
    k = min(K, T // 2)
    for l in layers:
        u = l["ln1"](h)
        U = torch.fft.rfft(u, dim=0)[:k]                      # k x D
        W = torch.view_as_complex(l["W"][:, :k].contiguous()).T  # k x D
        G = W / 2
        G[0] = W[0].real
        h = h + torch.fft.irfft(U * G, n=T, dim=0)
        h = h + l["down"](torch.nn.functional.gelu(l["up"](l["ln2"](h))))
    return h.mean(0)

for T in [int(t) for t in sys.argv[1].split(",")]:
    ids = torch.randint(0, 256, (T,), device=dev)
    forward(ids); torch.cuda.synchronize()
    ts = []
    for _ in range(5):
        t0 = time.perf_counter(); forward(ids); torch.cuda.synchronize()
        ts.append((time.perf_counter() - t0) * 1e3)
    ts.sort()
    print(f'{{"T": {T}, "torch_eager_ms_median": {ts[len(ts)//2]:.3f}, "min": {ts[0]:.3f}}}')
PY
fi

say ""
say "total: $(($(date +%s) - T_START)) s; report: $REPORT"
exit $STATUS
