#!/usr/bin/env python3
"""CTest's entry to the Python package's tests (tests/python.cmake).

    ctest_run.py install BUILD_DIR          pip-installs ./python into BUILD_DIR/python/pkg
                                            (the CMake build as `pip install ./python` runs it)
    ctest_run.py pytest BUILD_DIR CLI [--need MOD,...] PYTEST_ARGS...
                                            runs pytest on that installed package, comparing
                                            with the spectral-embed at CLI

Exit status 77 (CTest's SKIP) when a Python dependency is missing (tools/deps.sh
installs them with SPECTRAL_NEED_PYTHON=1) or the install step was skipped.
"""

import importlib.util
import os
import shutil
import subprocess
import sys
from pathlib import Path

SKIP = 77
HERE = Path(__file__).resolve().parent
PACKAGE_SRC = HERE.parent  # python/


def missing(modules):
    return [m for m in modules if importlib.util.find_spec(m) is None]


def install(build_dir: Path) -> int:
    lack = missing(["pip", "scikit_build_core", "numpy"])
    if lack:
        print(f"SKIP: missing Python packages {lack} (tools/deps.sh installs them)")
        return SKIP
    target = build_dir / "python" / "pkg"
    shutil.rmtree(target, ignore_errors=True)
    # No build isolation: scikit-build-core comes from tools/deps.sh, so nothing
    # is downloaded here; the CMake build directory is kept for the next run.
    cmd = [sys.executable, "-m", "pip", "install", "--no-build-isolation", "--no-deps",
           "--disable-pip-version-check", "--target", str(target),
           f"--config-settings=build-dir={build_dir / 'python' / 'cmake-build'}", str(PACKAGE_SRC)]
    print(" ".join(cmd), flush=True)
    rc = subprocess.call(cmd)
    if rc == 0 and not (target / "spectral" / "libspectral.so").exists():
        print("pip succeeded but the package has no libspectral.so")
        return 1
    return rc


def run_pytest(build_dir: Path, cli: str, args) -> int:
    need = []
    if args and args[0] == "--need":
        need, args = args[1].split(","), args[2:]
    lack = missing(["pytest", "numpy"] + need)
    if lack:
        print(f"SKIP: missing Python packages {lack} (tools/deps.sh installs them)")
        return SKIP
    target = build_dir / "python" / "pkg"
    if not (target / "spectral" / "libspectral.so").exists():
        print(f"SKIP: the package is not installed in {target} (test python_install skipped or failed)")
        return SKIP
    env = dict(os.environ)
    env.pop("SPECTRAL_LIBRARY", None)  # the installed package's own library
    env["PYTHONPATH"] = os.pathsep.join([str(target)] + ([env["PYTHONPATH"]] if env.get("PYTHONPATH") else []))
    env["SPECTRAL_TEST_CLI"] = cli
    env["PYTHONDONTWRITEBYTECODE"] = "1"
    cmd = [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-q", "-rs",
           "--rootdir", str(HERE), *args]
    return subprocess.call(cmd, env=env, cwd=str(HERE))


def main(argv) -> int:
    if len(argv) >= 2 and argv[0] == "install":
        return install(Path(argv[1]).resolve())
    if len(argv) >= 3 and argv[0] == "pytest":
        return run_pytest(Path(argv[1]).resolve(), os.path.abspath(argv[2]), argv[3:])
    print(__doc__)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
