"""What the Python tests share, as check.h does for the C tests: CTest's SKIP status for a
missing optional package, a list of failures that check() fills, and the exit status.

    import harness
    harness.require("numpy", "gguf")      # exits 77 (SKIP) when one is missing
    harness.check(got == want, f"got {got}, want {want}")
    ...
    sys.exit(harness.report("test_name"))

A failed check prints "FAIL: msg" at once and the test goes on, so one run lists every
failure."""
import importlib
import os
import sys

SKIP = 77
HERE = os.path.dirname(os.path.abspath(__file__))
# tools/convert: the GGUF writers, random models and the numpy reference the tests import
CONVERT = os.path.join(HERE, "..", "tools", "convert")
if CONVERT not in sys.path:
    sys.path.insert(0, CONVERT)

failures: list[str] = []


def require(*modules: str) -> None:
    """Exits with SKIP when any of the modules cannot be imported."""
    for name in modules:
        try:
            importlib.import_module(name)
        except ImportError as e:
            print(f"SKIP: {e}")
            sys.exit(SKIP)


def check(cond, msg: str, show_ok: bool = False) -> bool:
    """Records msg as a failure when cond is false (and prints it); with show_ok, a passing
    check is printed too."""
    if not cond:
        failures.append(msg)
        print("FAIL:", msg)
    elif show_ok:
        print("ok:  ", msg)
    return bool(cond)


def fail(msg: str) -> None:
    check(False, msg)


def report(name: str) -> int:
    """Prints the summary line; the exit status (0, or 1 when anything failed)."""
    print(f"{name}: {len(failures)} failure(s)" if failures else f"{name}: ok")
    return 1 if failures else 0
