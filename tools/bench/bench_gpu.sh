#!/usr/bin/env bash
# GPU mixing benchmark: builds spectral and tools/bench/bench_mix_gpu.cu with
# CUDA into build-gpu, runs it, then (if PyTorch with CUDA is
# installed) tools/bench/bench_compare_torch.py on the same shapes.
#
#   bash tools/bench/bench_gpu.sh [bench_mix_gpu options...]
#   e.g. bash tools/bench/bench_gpu.sh --K 32 --T 4096,65536
#
# Environment: BUILD_DIR (default build-gpu), CUDA_ARCH (default 90),
# JOBS (default: nproc).
set -euo pipefail
cd "$(dirname "$0")/../.."
BUILD_DIR=${BUILD_DIR:-build-gpu}
CUDA_ARCH=${CUDA_ARCH:-90}
JOBS=${JOBS:-$(nproc)}

cmake -S . -B "$BUILD_DIR" -DCMAKE_BUILD_TYPE=Release -DSPECTRAL_CUDA=ON \
  -DCMAKE_CUDA_ARCHITECTURES="${CUDA_ARCH}-real" -DSPECTRAL_BUILD_TESTS=OFF >/dev/null
cmake --build "$BUILD_DIR" -j "$JOBS" --target bench_mix_gpu

CSV="$BUILD_DIR/bench_mix_gpu.csv"
"$BUILD_DIR/tools/bench_mix_gpu" --csv "$CSV" "$@"

if python3 -c 'import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)' 2>/dev/null; then
  echo
  python3 tools/bench/bench_compare_torch.py --csv "$CSV"
else
  echo "(PyTorch with CUDA not found: skipping tools/bench/bench_compare_torch.py)"
fi
