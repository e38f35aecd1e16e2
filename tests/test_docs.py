#!/usr/bin/env python3
"""Runs the documentation: every ```sh, ```bash and ```python block of README.md, docs/*.md,
python/README.md and tools/README.md, as a user would copy it, against a built tree (issue 25:
the docs had drifted from the programs).

    test_docs.py SOURCE_DIR BUILD_DIR [--list] [--file README.md] [-v]

Each file's blocks run in order in a sandbox of their own: a copy of the source tree (the
files git tracks) whose build/ is BUILD_DIR, so that what the blocks write stays there. Shell
blocks run with `bash -e -o pipefail`, Python blocks with this interpreter; both find
BUILD_DIR/tools (the programs, as after `cmake --install`) and this interpreter's directory
(`python3`) first on PATH, and the package from BUILD_DIR/python/pkg (the python_install test
puts it there) on PYTHONPATH. `cmake --install` stages into the sandbox (DESTDIR), where
pkg-config and CMake then find the package. A ```c block is saved as app.c in the sandbox
for the commands after it (the file's first one is there from the start), not run. A block
fails the test when it exits non-zero or takes longer than its timeout.

A block may be preceded by marker lines, HTML comments the Markdown hides (several may be
stacked, or joined with ';' in one comment):

    <!-- doc-test: skip gpu -->           needs an NVIDIA GPU (tools/gpu_check.sh runs those)
    <!-- doc-test: skip hours -->         takes hours (a training run)
    <!-- doc-test: ci -->                 runs without its commands that configure, build,
                                          test or pip-install the project (cmake -S/--build,
                                          ctest, tools/test.sh, python3 -m pytest, pip
                                          install): CI has done exactly that already
                                          (BUILD_DIR, its tests, python_install,
                                          tools/deps.sh), and doing it again here would recurse
    <!-- doc-test: needs torch,peft -->   runs only where these Python modules are installed
    <!-- doc-test: replace A => B -->     runs with the text A replaced by B: a shorter run of
                                          the same command (fewer lengths or repetitions),
                                          said where the reader sees the block
    <!-- doc-test: background 8080 -->    starts a server: runs in the background until the
                                          file's blocks are done, once the port answers; the
                                          port is a free one, put in place of 8080 in this and
                                          the file's later blocks
    <!-- doc-test: quiet -->              also fails when the block writes to stderr (e.g. the
                                          quick start's warning that the README is longer than
                                          the default model's training context)
    <!-- doc-test: timeout 900 -->        more than the default 300 seconds

Those are the only reasons to skip: everything else must run as written. Blocks of other
languages (```cmake, ```text, output samples) are documentation, not commands.
Exit status: 0 when every runnable block passed, 1 otherwise."""
from __future__ import annotations

import argparse
import glob
import importlib.util
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time

DOCS = ["README.md", "docs/*.md", "python/README.md", "tools/README.md"]
LANGS = {"sh": "sh", "bash": "sh", "python": "python", "c": "c"}
# What a `ci` block leaves out: the project's own configure, build, test and install commands
# (a command's leading VAR=value assignments aside).
CI_LINE = re.compile(r"^\s*(\w+=\S*\s+)*(cmake\s+(-S|--build)\b|ctest\b|tools/test\.sh\b|pip\s+install\b"
                     r"|python3\s+-m\s+pytest\b)")
SKIP_REASONS = {"gpu", "hours"}
MARKER = re.compile(r"^\s*<!--\s*doc-test:\s*(.*?)\s*-->\s*$")
FENCE = re.compile(r"^```(\w*)\s*$")


def drop_ci_lines(code: str) -> str:
    """The block without its CI_LINE commands; a command continued over lines ending in '\\'
    is one command."""
    out, command = [], []
    for ln in code.splitlines():
        command.append(ln + "\n")
        if ln.rstrip().endswith("\\"):
            continue
        if not CI_LINE.match(" ".join(c.rstrip().rstrip("\\") for c in command)):
            out += command
        command = []
    return "".join(out + command)


class Block:
    def __init__(self, path, line, lang, code, markers):
        self.path, self.line, self.lang, self.code = path, line, lang, code
        self.skip = self.background = None
        self.quiet = False
        self.needs = []
        self.timeout = 300
        for marker in markers:
            self._apply(marker)

    def _apply(self, marker):
        word, _, rest = marker.partition(" ")
        rest = rest.strip()
        if word == "skip":
            if rest not in SKIP_REASONS:
                raise ValueError(f"{self.where()}: skip reason {rest!r} (allowed: {sorted(SKIP_REASONS)})")
            self.skip = rest
        elif word == "needs":
            self.needs = [m for m in rest.split(",") if m]
        elif word == "background":
            self.background = int(rest)
        elif word == "ci":
            self.code = drop_ci_lines(self.code)
        elif word == "replace":
            old, sep, new = rest.partition(" => ")
            if not sep or old not in self.code:
                raise ValueError(f"{self.where()}: replace {old!r}: not in the block")
            self.code = self.code.replace(old, new)
        elif word == "quiet":
            self.quiet = True
        elif word == "timeout":
            self.timeout = int(rest)
        else:
            raise ValueError(f"{self.where()}: unknown doc-test marker {marker!r}")

    def where(self):
        return f"{self.path}:{self.line}"


def blocks_of(root: str, rel: str) -> list[Block]:
    out, lines = [], open(os.path.join(root, rel), encoding="utf-8").read().splitlines()
    i = 0
    while i < len(lines):
        m = FENCE.match(lines[i])
        if not m:
            i += 1
            continue
        start, lang = i, m.group(1)
        j = i + 1
        while j < len(lines) and lines[j].strip() != "```":
            j += 1
        markers = []
        k = start - 1
        while k >= 0 and not lines[k].strip():
            k -= 1
        while k >= 0 and (mm := MARKER.match(lines[k])):
            markers[:0] = [s.strip() for s in mm.group(1).split(";") if s.strip()]
            k -= 1
        if lang in LANGS:
            out.append(Block(rel, start + 1, LANGS[lang], "\n".join(lines[start + 1:j]) + "\n", markers))
        elif markers:
            raise ValueError(f"{rel}:{start + 1}: a doc-test marker on a ```{lang} block, which is not run")
        i = j + 1
    return out


def sandbox_of(src: str, build: str) -> str:
    """A copy of the tracked source tree with build/ pointing at the real build."""
    box = tempfile.mkdtemp(prefix="spectral-docs-")
    files = subprocess.run(["git", "-C", src, "ls-files", "-z"], capture_output=True).stdout
    names = [f for f in files.decode().split("\0") if f] if files else None
    if not names:  # not a git checkout: copy everything but build folders
        shutil.copytree(src, box, dirs_exist_ok=True, symlinks=True,
                        ignore=shutil.ignore_patterns("build*", ".git", ".venv", "__pycache__"))
    else:
        for f in names:
            dst = os.path.join(box, f)
            os.makedirs(os.path.dirname(dst), exist_ok=True)
            if os.path.lexists(os.path.join(src, f)):
                # copy2 keeps the times, so tools/run.sh finds build/ newer than the sources
                shutil.copy2(os.path.join(src, f), dst, follow_symlinks=False)
    os.symlink(os.path.abspath(build), os.path.join(box, "build"))
    return box


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_port(port: int, proc, seconds: float) -> bool:
    end = time.time() + seconds
    while time.time() < end and proc.poll() is None:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                return True
        except OSError:
            time.sleep(0.2)
    return False


def env_for(box: str, build: str) -> dict:
    env = dict(os.environ)
    build = os.path.abspath(build)
    env["PATH"] = os.pathsep.join([os.path.join(build, "tools"), os.path.dirname(sys.executable), env.get("PATH", "")])
    pkg = os.path.join(build, "python", "pkg")
    env["PYTHONPATH"] = pkg + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    stage = os.path.join(box, "staged")  # what `cmake --install` writes, found by pkg-config and CMake
    env["DESTDIR"] = stage
    env["PKG_CONFIG_SYSROOT_DIR"] = stage
    env["PKG_CONFIG_PATH"] = os.pathsep.join(os.path.join(stage, p.lstrip("/")) for p in (
        "/usr/local/lib/pkgconfig", "/usr/local/lib/x86_64-linux-gnu/pkgconfig", "/usr/local/share/pkgconfig"))
    env["CMAKE_PREFIX_PATH"] = os.path.join(stage, "usr", "local")
    return env


def run_file(rel: str, blocks: list[Block], src: str, build: str, verbose: bool) -> tuple[int, int, list]:
    box = sandbox_of(src, build)
    env = env_for(box, build)
    c_blocks = [b for b in blocks if b.lang == "c"]
    if c_blocks:
        with open(os.path.join(box, "app.c"), "w", encoding="utf-8") as f:
            f.write(c_blocks[0].code)
    ran = skipped = 0
    ports = {}  # documented port -> the free one used instead
    fails, background = [], []
    try:
        for b in blocks:
            lack = [m for m in b.needs if importlib.util.find_spec(m) is None]
            if b.skip or lack:
                skipped += 1
                print(f"skip {b.where()}: {b.skip or 'needs ' + ','.join(lack)}")
                continue
            if b.lang == "c":  # the program the next commands compile
                with open(os.path.join(box, "app.c"), "w", encoding="utf-8") as f:
                    f.write(b.code)
                continue
            if b.background:
                ports[b.background] = free_port()
            code = b.code
            for doc_port, port in ports.items():
                code = re.sub(rf"\b{doc_port}\b", str(port), code)
            if not code.strip():  # a ci block of nothing but build and test commands
                print(f"ok   {b.where()} (nothing left to run in CI)")
                continue
            cmd = ["bash", "-e", "-o", "pipefail", "-c", code] if b.lang == "sh" else [sys.executable, "-c", code]
            if b.background:
                p = subprocess.Popen(cmd, cwd=box, env=env, stdout=subprocess.DEVNULL,
                                     stderr=subprocess.PIPE, start_new_session=True)
                background.append(p)
                ran += 1
                if not wait_port(ports[b.background], p, 60):
                    err = p.stderr.read().decode(errors="replace") if p.poll() is not None else ""
                    fails.append(f"{b.where()}: the server did not answer on port {ports[b.background]}\n{err[-1500:]}")
                    print(f"FAIL {b.where()}")
                else:
                    print(f"ok   {b.where()} (in the background, port {ports[b.background]})")
                continue
            t0 = time.time()
            try:
                r = subprocess.run(cmd, cwd=box, env=env, capture_output=True, timeout=b.timeout)
                rc, out, err = r.returncode, r.stdout, r.stderr
            except subprocess.TimeoutExpired as e:
                rc, out, err = f"timeout ({b.timeout} s)", e.stdout or b"", e.stderr or b""
            ran += 1
            dt = time.time() - t0
            if rc == 0 and b.quiet and err.strip():
                rc = "0, but it wrote to stderr (marked quiet)"
            if rc != 0:
                fails.append(f"{b.where()}: exit {rc}\n--- block as run\n{code}--- stderr\n"
                             f"{err.decode(errors='replace')[-2000:]}\n--- stdout\n{out.decode(errors='replace')[-1000:]}")
                print(f"FAIL {b.where()} ({dt:.1f} s)")
            else:
                print(f"ok   {b.where()} ({dt:.1f} s)")
                if verbose:
                    print(out.decode(errors="replace")[-800:])
    finally:
        for p in background:
            try:
                os.killpg(p.pid, signal.SIGTERM)
                p.wait(timeout=30)
            except ProcessLookupError:
                pass
            except subprocess.TimeoutExpired:
                os.killpg(p.pid, signal.SIGKILL)
                p.wait()
        shutil.rmtree(box, ignore_errors=True)
    return ran, skipped, fails


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("source")
    ap.add_argument("build")
    ap.add_argument("--list", action="store_true", help="list the blocks and their markers, run nothing")
    ap.add_argument("--file", action="append", help="only this Markdown file (repeatable)")
    ap.add_argument("-v", "--verbose", action="store_true")
    a = ap.parse_args(argv)
    files = []
    for pat in DOCS:
        files += sorted(os.path.relpath(p, a.source) for p in glob.glob(os.path.join(a.source, pat)))
    if a.file:
        files = [f for f in files if f in a.file]
    try:
        per_file = {f: blocks_of(a.source, f) for f in files}
    except ValueError as e:
        print(f"FAIL: {e}")
        return 1
    if a.list:
        for f, bs in per_file.items():
            for b in bs:
                tag = f"skip {b.skip}" if b.skip else ("needs " + ",".join(b.needs) if b.needs else "")
                print(f"{b.where():28} {b.lang:6} {tag:18} {b.code.splitlines()[0][:70] if b.code.strip() else ''}")
        return 0
    t0 = time.time()
    total_ran = total_skipped = 0
    fails = []
    for f, bs in per_file.items():
        if not bs:
            continue
        ran, skipped, fl = run_file(f, bs, a.source, a.build, a.verbose)
        total_ran += ran
        total_skipped += skipped
        fails += fl
    for f in fails:
        print("\nFAIL " + f)
    print(f"\ndocs: {total_ran} blocks run, {total_skipped} skipped, {len(fails)} failed "
          f"in {time.time() - t0:.0f} s")
    return 1 if fails else 0


if __name__ == "__main__":
    sys.exit(main())
