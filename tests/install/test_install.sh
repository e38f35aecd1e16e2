#!/usr/bin/env bash
# Installs the build into a temporary prefix, then builds consumer.c against
# it twice: with find_package(spectral) and with pkg-config.
# usage: test_install.sh BUILD_DIR THIS_DIR
set -euo pipefail
build=$1 here=$2
src=$(cd "$here/../.." && pwd)
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
cmake --install "$build" --prefix "$tmp/prefix" >/dev/null
test -f "$tmp/prefix/include/spectral.h"
test -f "$tmp/prefix/lib/libspectral.a"

# Build with the same compiler flags as the library (sanitized builds need them at link time).
flags=$(grep -E '^CMAKE_C_FLAGS:' "$build/CMakeCache.txt" | cut -d= -f2- || true)
san=""
if grep -q '^SPECTRAL_SANITIZE:BOOL=ON' "$build/CMakeCache.txt"; then san="-fsanitize=address,undefined"; fi

cmake -S "$here" -B "$tmp/cmake-build" -DCMAKE_PREFIX_PATH="$tmp/prefix" \
      -DCMAKE_C_FLAGS="$flags $san" -DCMAKE_EXE_LINKER_FLAGS="$san" >/dev/null
cmake --build "$tmp/cmake-build" >/dev/null
"$tmp/cmake-build/consumer" "$src/models/spectral-default.gguf"

export PKG_CONFIG_PATH="$tmp/prefix/lib/pkgconfig"
cc $flags $san -o "$tmp/consumer-pc" "$here/consumer.c" $(pkg-config --cflags --libs --static spectral)
"$tmp/consumer-pc" "$src/models/spectral-default.gguf"
echo "test_install: CMake package and pkg-config consumers built and ran"
