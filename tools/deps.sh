# Sourced by tools/run.sh and tools/test.sh: installs what is missing.
# Needs root (or sudo) for apt-get only when a system package is absent.
spectral_need_apt=()
pkg-config --exists fftw3f 2>/dev/null || spectral_need_apt+=(libfftw3-dev)
pkg-config --exists openblas 2>/dev/null || spectral_need_apt+=(libopenblas-dev)
command -v pkg-config >/dev/null 2>&1 || spectral_need_apt+=(pkg-config)
command -v cmake >/dev/null 2>&1 || spectral_need_apt+=(cmake)
command -v cc >/dev/null 2>&1 || spectral_need_apt+=(build-essential)
command -v python3 >/dev/null 2>&1 || spectral_need_apt+=(python3 python3-pip)
if [ "${SPECTRAL_NEED_CLANG:-0}" = 1 ] && ! command -v clang >/dev/null 2>&1; then
  spectral_need_apt+=(clang)
fi
# spectral-server's HTTP and JSON libraries, and curl for its tests (docs/server.md).
pkg-config --exists libmicrohttpd 2>/dev/null || spectral_need_apt+=(libmicrohttpd-dev)
pkg-config --exists jansson 2>/dev/null || spectral_need_apt+=(libjansson-dev)
command -v curl >/dev/null 2>&1 || spectral_need_apt+=(curl)
if [ ${#spectral_need_apt[@]} -gt 0 ]; then
  echo "spectral: installing ${spectral_need_apt[*]}" >&2
  sudo_=""
  [ "$(id -u)" = 0 ] || sudo_="sudo"
  $sudo_ apt-get update -qq >&2
  DEBIAN_FRONTEND=noninteractive $sudo_ apt-get install -y -qq "${spectral_need_apt[@]}" >&2
fi
if [ "${SPECTRAL_NEED_PYTHON:-0}" = 1 ] && ! python3 -c "import numpy, gguf" 2>/dev/null; then
  echo "spectral: installing numpy and gguf (pip)" >&2
  python3 -m pip install -q numpy gguf >&2 || python3 -m pip install -q --break-system-packages numpy gguf >&2
fi
# The Python package's build backend and tests, the corpus tool's engine and
# output format (python/, tools/corpus/embed_corpus.py, docs/python.md), and the
# search evaluation's BM25 (tests/test_eval_search.py).
spectral_py_pkgs=(scikit-build-core pytest pyarrow "dask[distributed]" scipy rank_bm25)
if [ "${SPECTRAL_NEED_PYTHON:-0}" = 1 ] && ! python3 -c "import scikit_build_core, pytest, pyarrow, distributed, scipy, rank_bm25" 2>/dev/null; then
  echo "spectral: installing ${spectral_py_pkgs[*]} (pip)" >&2
  python3 -m pip install -q "${spectral_py_pkgs[@]}" >&2 ||
    python3 -m pip install -q --break-system-packages "${spectral_py_pkgs[@]}" >&2
fi
# The OpenAI client that spectral-server's tests talk to it with.
if [ "${SPECTRAL_NEED_PYTHON:-0}" = 1 ] && ! python3 -c "import openai" 2>/dev/null; then
  echo "spectral: installing openai (pip)" >&2
  python3 -m pip install -q openai >&2 || python3 -m pip install -q --break-system-packages openai >&2
fi
