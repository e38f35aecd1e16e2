#!/usr/bin/env bash
# Runs every test: installs what is missing, builds, runs CTest, then builds
# and runs the suite again under AddressSanitizer + UndefinedBehaviorSanitizer,
# then fuzzes the GGUF reader and model loader for SPECTRAL_FUZZ_SECONDS (60)
# and spectral-server's request parser for a third of that.
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$root"
SPECTRAL_NEED_PYTHON=1 SPECTRAL_NEED_CLANG=1 source tools/deps.sh
jobs=$(nproc)
fuzz_seconds=${SPECTRAL_FUZZ_SECONDS:-60}

echo "== release build (CUDA backend: ${SPECTRAL_CUDA:-AUTO}) =="
cmake -S . -B build-test -DCMAKE_BUILD_TYPE=Release -DSPECTRAL_CUDA="${SPECTRAL_CUDA:-AUTO}" \
  -DPython3_EXECUTABLE="$SPECTRAL_PYTHON" >/dev/null
cmake --build build-test -j"$jobs"
(cd build-test && ctest --output-on-failure -j"$jobs")

echo "== ASan + UBSan build =="
cmake -S . -B build-asan -DCMAKE_BUILD_TYPE=Debug -DCMAKE_C_FLAGS="-O1" -DSPECTRAL_SANITIZE=ON -DSPECTRAL_CUDA=OFF \
  -DPython3_EXECUTABLE="$SPECTRAL_PYTHON" >/dev/null
cmake --build build-asan -j"$jobs"
export ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=1:abort_on_error=0}
export UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}
export LSAN_OPTIONS=${LSAN_OPTIONS:-suppressions=$root/tests/lsan.supp}
(cd build-asan && ctest --output-on-failure -j"$jobs")

echo "== fuzzing the GGUF reader and model loader for ${fuzz_seconds}s =="
CC=clang cmake -S . -B build-fuzz -DCMAKE_BUILD_TYPE=Debug -DCMAKE_C_FLAGS="-O1" -DSPECTRAL_SANITIZE=ON \
  -DSPECTRAL_FUZZ=ON -DSPECTRAL_CUDA=OFF >/dev/null
cmake --build build-fuzz -j"$jobs" --target fuzz_gguf
corpus=$(mktemp -d)
trap 'rm -rf "$corpus"' EXIT
cp tests/data/fuzz_seeds/* "$corpus"/ 2>/dev/null || true
build-fuzz/tests/fuzz_gguf -max_total_time="$fuzz_seconds" -rss_limit_mb=2048 -max_len=65536 \
  -print_final_stats=1 "$corpus" 2>&1 | tail -n 15
echo "fuzz: no crash in ${fuzz_seconds}s"

# spectral-server's request parsers and answer writers, when the server is
# built (its configure step makes the corpus directory).
if [ -d build-fuzz/tests/fuzz_server_corpus ]; then
  server_fuzz_seconds=$(( fuzz_seconds / 3 > 0 ? fuzz_seconds / 3 : 1 ))
  echo "== fuzzing spectral-server's request parser for ${server_fuzz_seconds}s =="
  cmake --build build-fuzz -j"$jobs" --target fuzz_server_request
  mkdir "$corpus/server"
  cp tests/data/fuzz_server_seeds/* "$corpus/server"/
  build-fuzz/tests/fuzz_server_request -max_total_time="$server_fuzz_seconds" -rss_limit_mb=2048 -max_len=65536 \
    -print_final_stats=1 "$corpus/server" 2>&1 | tail -n 15
  echo "fuzz: no crash in ${server_fuzz_seconds}s"
fi
