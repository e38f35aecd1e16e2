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
# The tests' Python packages (SPECTRAL_NEED_PYTHON=1) go into the project's own
# virtual environment, .venv/ at the repository root, never into the system
# Python; tools/test.sh runs every Python test with $SPECTRAL_PYTHON, its
# interpreter. What for: numpy and gguf (references, fixtures, the GGUF writer),
# scikit-build-core and pytest (the Python package's build and tests), pyarrow
# and dask[distributed] (tools/corpus/embed_corpus.py), scipy and rank_bm25 (the
# search evaluation's BM25, tests/test_eval_search.py), and the clients
# spectral-server's tests talk to it with: OpenAI's, Hugging Face's
# InferenceClient (TEI's routes) and LangChain's OpenAIEmbeddings.
if [ "${SPECTRAL_NEED_PYTHON:-0}" = 1 ]; then
  spectral_venv="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)/.venv"
  if [ ! -x "$spectral_venv/bin/python" ]; then
    echo "spectral: creating the Python environment $spectral_venv" >&2
    if ! python3 -m venv "$spectral_venv" >&2; then
      # Debian's python3 keeps venv's pip bootstrap in a package of its own.
      sudo_=""
      [ "$(id -u)" = 0 ] || sudo_="sudo"
      DEBIAN_FRONTEND=noninteractive $sudo_ apt-get install -y -qq python3-venv >&2
      rm -rf "$spectral_venv"
      python3 -m venv "$spectral_venv" >&2
    fi
  fi
  SPECTRAL_PYTHON="$spectral_venv/bin/python"
  spectral_py_pkgs=(numpy gguf scikit-build-core pytest pyarrow "dask[distributed]"
                    scipy rank_bm25 openai huggingface_hub langchain-openai)
  if ! "$SPECTRAL_PYTHON" -c "import numpy, gguf, scikit_build_core, pytest, pyarrow, distributed, scipy, rank_bm25, openai, huggingface_hub, langchain_openai" 2>/dev/null; then
    echo "spectral: installing ${spectral_py_pkgs[*]} into $spectral_venv (pip)" >&2
    "$SPECTRAL_PYTHON" -m pip install -q --disable-pip-version-check "${spectral_py_pkgs[@]}" >&2
  fi
fi
