"""Shared fixtures: the repository's models and the spectral-embed CLI to compare against.

SPECTRAL_TEST_CLI names the spectral-embed to compare with (tests/python.cmake
passes the build's); without it the comparisons are skipped, not passed.
"""

import json
import os
import subprocess
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[2]
DEFAULT_MODEL = ROOT / "models" / "spectral-default.gguf"  # bert tokenizer, 384-dim output
BYTE_MODEL = ROOT / "tests" / "data" / "byte-model" / "spectral-byte.gguf"  # bytes tokenizer


@pytest.fixture(scope="session")
def cli() -> str:
    path = os.environ.get("SPECTRAL_TEST_CLI")
    if not path or not os.access(path, os.X_OK):
        pytest.skip("SPECTRAL_TEST_CLI (the spectral-embed to compare with) is not set")
    return path


def run_cli(cli: str, model, files, *args, check=True):
    """spectral-embed's results for files: (raw float32 rows, jsonl records, exit status, stderr).

    Two runs: -o raw gives the exact bits, -o jsonl the per-input n_tokens.
    """
    base = [cli, "-m", str(model), *args, "--", *map(str, files)]
    raw = subprocess.run(base[:3] + ["-o", "raw"] + base[3:], capture_output=True)
    js = subprocess.run(base[:3] + ["-o", "jsonl"] + base[3:], capture_output=True)
    if check:
        assert raw.returncode == 0, raw.stderr.decode()
    recs = [json.loads(line) for line in js.stdout.decode().splitlines()]
    return np.frombuffer(raw.stdout, dtype="<f4"), recs, raw.returncode, raw.stderr.decode()


def same_bits(a: np.ndarray, b: np.ndarray) -> bool:
    a = np.ascontiguousarray(a, dtype=np.float32)
    b = np.ascontiguousarray(b, dtype=np.float32)
    return a.shape == b.shape and np.array_equal(a.view(np.uint32), b.view(np.uint32))
