#!/usr/bin/env bash
# The main job: embed text files with the shipped default model.
#   tools/run.sh FILE...            (no FILE: standard input)
# Installs what is missing, builds the programs into build/tools once (the
# build the README's other commands use; `cmake --build build` adds the tests),
# then runs spectral-embed.
# Options for spectral-embed may be given before the files (see --help).
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
source "$root/tools/deps.sh"
bin="$root/build/tools/spectral-embed"
if [ ! -x "$bin" ] || [ -n "$(find "$root/runtime" "$root/kernels" "$root/formats" "$root/models" "$root/tools" -newer "$bin" \( -name '*.c' -o -name '*.h' -o -name '*.cu' \) 2>/dev/null | head -1)" ]; then
  echo "spectral: building (first run only)..." >&2
  cmake -S "$root" -B "$root/build" -DCMAKE_BUILD_TYPE=Release >/dev/null
  cmake --build "$root/build" -j"$(nproc)" --target spectral-tools >/dev/null
fi
exec "$bin" -m "$root/models/spectral-default.gguf" "$@"
