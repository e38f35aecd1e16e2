"""tools/corpus/embed_corpus.py on a local Dask cluster of two workers: every document exactly once,
every vector equal to spectral-embed's, failures recorded, reruns resume."""

import json
import random
import subprocess
import sys

import numpy as np
import pytest

pa = pytest.importorskip("pyarrow")
pq = pytest.importorskip("pyarrow.parquet")
pytest.importorskip("distributed")

import spectral  # noqa: E402
from conftest import DEFAULT_MODEL, ROOT, run_cli, same_bits  # noqa: E402

TOOL = ROOT / "tools" / "corpus" / "embed_corpus.py"
WORDS = ("the spectral encoder reads whole documents through a Fourier transform along the "
         "sequence while café naïve 日本語 Straße tokens mixing filter 42").split()


def run_tool(*args, check=True):
    p = subprocess.run([sys.executable, str(TOOL), "-m", str(DEFAULT_MODEL), "-q", *map(str, args)],
                       capture_output=True, text=True, timeout=300)
    if check:
        assert p.returncode == 0, p.stderr[-3000:]
    summary = json.loads(p.stdout.strip().splitlines()[-1]) if p.stdout.strip() else None
    return p, summary


def read_output(out_dir):
    parts = sorted(out_dir.glob("part-*.parquet"))
    t = pa.concat_tables([pq.read_table(p) for p in parts])
    return {"id": t.column("id").to_pylist(), "n_tokens": t.column("n_tokens").to_pylist(),
            "embedding": t.column("embedding").to_pylist(), "error": t.column("error").to_pylist()}


def text(rng, lo, hi):
    return " ".join(rng.choice(WORDS) for _ in range(rng.randint(lo, hi))).encode()


def cli_vectors(cli, files, *args):
    raw, recs, _, _ = run_cli(cli, DEFAULT_MODEL, files, "-t", "2", *args, check=False)
    rows = raw.reshape(len(recs), -1)
    return {r["input"]: (r["n_tokens"], rows[i]) for i, r in enumerate(recs)}


@pytest.fixture(scope="module")
def tree(tmp_path_factory):
    """300 small files in nested folders, an empty one and one too long for the cap used below."""
    root = tmp_path_factory.mktemp("corpus")
    rng = random.Random(7)
    for i in range(300):
        d = root / f"group{i % 7}" / ("deep" if i % 3 == 0 else "")
        d.mkdir(parents=True, exist_ok=True)
        (d / f"doc{i:03d}.txt").write_bytes(text(rng, 1, 60))
    (root / "empty.txt").write_bytes(b"")
    (root / "long.txt").write_bytes(text(rng, 4000, 4000))
    return root


def test_directory_on_two_workers_equals_cli_and_resumes(tree, tmp_path, cli):
    with spectral.Model(DEFAULT_MODEL, n_threads=1) as m:
        cap = m.memory_minimum(len(m.tokenize((tree / "long.txt").read_bytes()))) - 1
    out = tmp_path / "out"
    _, s = run_tool(tree, "-o", out, "--workers", 2, "-t", 1, "--docs-per-partition", 40,
                    "--mem-limit", cap)
    files = sorted(p for p in tree.rglob("*") if p.is_file())
    assert s["complete"] and s["documents"] == len(files) == 302 and s["partitions"] == 8
    assert s["failed"] == 2 and s["partitions_written"] == 8  # the empty file and the long one
    got = read_output(out)
    rel = [str(p.relative_to(tree)) for p in files]
    assert sorted(got["id"]) == sorted(rel) and len(set(got["id"])) == len(got["id"])  # exactly once
    want = cli_vectors(cli, files, "--mem-limit", str(cap))
    assert len(want) == len(files) - 2
    for id_, n, e, err in zip(got["id"], got["n_tokens"], got["embedding"], got["error"]):
        path = str(tree / id_)
        if id_ == "long.txt":
            assert e is None and "memory" in err and n > 4000 and path not in want
            continue
        if id_ == "empty.txt":  # nothing to embed: an error for every tokenizer
            assert e is None and "empty" in err and path not in want
            continue
        assert err is None and want[path][0] == n
        assert same_bits(np.array(e, np.float32), want[path][1]), id_

    # A rerun after losing two parts writes those two only, with the same content.
    before = {p.name: (p.stat().st_mtime_ns, pq.read_table(p)) for p in out.glob("part-*.parquet")}
    (out / "part-00002.parquet").unlink()
    (out / "part-00005.parquet").unlink()
    (out / ".part-00005.parquet.host-1-dead.tmp").write_bytes(b"torn")  # a crashed writer's leftover
    _, s2 = run_tool(tree, "-o", out, "--workers", 2, "-t", 1, "--docs-per-partition", 40,
                     "--mem-limit", cap)
    assert s2["partitions_written"] == 2 and s2["partitions_skipped"] == 6 and s2["complete"]
    assert s2["docs_this_run"] == 80 and s2["documents"] == 302
    assert not list(out.glob(".*.tmp"))
    for p in out.glob("part-*.parquet"):
        if p.name not in ("part-00002.parquet", "part-00005.parquet"):
            assert p.stat().st_mtime_ns == before[p.name][0], p.name
        assert pq.read_table(p).equals(before[p.name][1]), p.name

    # A rerun with another partitioning would not line up with what is written: refused.
    p, _ = run_tool(tree, "-o", out, "--workers", 0, "--docs-per-partition", 50, check=False)
    assert p.returncode != 0 and "docs_per_partition" in p.stderr
    # So would one after the input changed (a new file shifts the partitions after it).
    (tree / "group0" / "added.txt").write_bytes(b"a new document")
    try:
        p, _ = run_tool(tree, "-o", out, "--workers", 0, "--docs-per-partition", 40,
                        "--mem-limit", cap, check=False)
    finally:
        (tree / "group0" / "added.txt").unlink()
    assert p.returncode != 0 and "partitioning" in p.stderr


def test_jsonl_and_parquet_with_bad_records(tmp_path, cli):
    rng = random.Random(11)
    lines, expect = [], {}
    for i in range(120):
        t = text(rng, 1, 40).decode()
        lines.append(json.dumps({"id": f"r{i}", "text": t}, ensure_ascii=i % 2 == 0))
        expect[f"r{i}"] = t
    lines.insert(30, "{not json")
    lines.insert(60, json.dumps({"id": "no-text", "body": "x"}))
    lines.insert(90, '{"id": "surrogate", "text": "\\ud800 alone"}')
    lines.insert(100, "")  # blank lines are not records
    src = tmp_path / "in.jsonl"
    src.write_text("\n".join(lines) + "\n", encoding="utf-8")
    out = tmp_path / "out"
    # small byte ranges: most records straddle a boundary between partitions
    _, s = run_tool(src, "-o", out, "--workers", 2, "-t", 1, "--bytes-per-partition", 1500)
    assert s["complete"] and s["documents"] == 123 and s["failed"] == 3 and s["partitions"] > 8
    got = read_output(out)
    errors = {i: e for i, e in zip(got["id"], got["error"]) if e}
    assert len(errors) == 3 and errors["no-text"].startswith("invalid record")
    assert errors["surrogate"].startswith("undecodable")
    assert [e for i, e in errors.items() if i.startswith("byte ")][0].startswith("invalid JSON")
    ok_ids = [i for i in got["id"] if i not in errors]
    assert sorted(ok_ids) == sorted(expect) and len(ok_ids) == len(set(ok_ids))
    files = []
    for id_ in ok_ids:
        f = tmp_path / "cli" / f"{id_}.txt"
        f.parent.mkdir(exist_ok=True)
        f.write_bytes(expect[id_].encode())
        files.append(f)
    want = cli_vectors(cli, files)
    by_id = {i: (n, e) for i, n, e in zip(got["id"], got["n_tokens"], got["embedding"])}
    for id_, f in zip(ok_ids, files):
        assert by_id[id_][0] == want[str(f)][0]
        assert same_bits(np.array(by_id[id_][1], np.float32), want[str(f)][1]), id_

    # The same records as Parquet, without Dask (--workers 0): the same rows.
    recs = [json.loads(x) for x in lines if x and x != "{not json"]
    recs = [r for r in recs if r["id"] != "surrogate"]  # Arrow strings are valid UTF-8
    table = pa.table({"id": [r["id"] for r in recs], "text": [r.get("text") for r in recs]})
    pq.write_table(table, tmp_path / "in.parquet", row_group_size=17)
    out2 = tmp_path / "out2"
    _, s = run_tool(tmp_path / "in.parquet", "-o", out2, "--workers", 0, "-t", 2,
                    "--docs-per-partition", 25)
    assert s["complete"] and s["documents"] == 121 and s["failed"] == 1 and s["partitions"] == 5
    got2 = read_output(out2)
    assert got2["id"] == [r["id"] for r in recs]
    for id_, e in zip(got2["id"], got2["embedding"]):
        if id_ in by_id and id_ not in errors:
            assert by_id[id_][1] == e, id_


def test_progress_bar(tmp_path, monkeypatch, capsys):
    """A bar over the parts (tqdm when installed, none otherwise), without Dask, in this process."""
    import importlib.util
    import types
    made = []

    class FakeBar:
        def __init__(self, total=None, desc=None, unit=None, **kw):
            self.total, self.desc, self.unit, self.n, self.closed = total, desc, unit, 0, False
            made.append(self)

        def update(self, n=1):
            self.n += n

        def set_postfix_str(self, s, refresh=True):
            self.postfix = s

        def close(self):
            self.closed = True

    auto = types.ModuleType("tqdm.auto")
    auto.tqdm = FakeBar
    monkeypatch.setitem(sys.modules, "tqdm.auto", auto)
    spec = importlib.util.spec_from_file_location("embed_corpus_under_test", TOOL)
    tool = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(tool)
    src = tmp_path / "in"
    src.mkdir()
    rng = random.Random(3)
    for i in range(7):
        (src / f"d{i}.txt").write_bytes(text(rng, 1, 20))
    (src / "long.txt").write_bytes(text(rng, 600, 600))
    with spectral.Model(DEFAULT_MODEL, n_threads=1) as m:  # a cap that refuses long.txt only
        cap = m.memory_minimum(len(m.tokenize((src / "long.txt").read_bytes()))) - 1
    runs = []

    def run(*extra):
        runs.append(extra)
        rc = tool.main([str(src), "-m", str(DEFAULT_MODEL), "-o", str(tmp_path / f"out{len(runs)}"),
                        "--workers", "0", "-t", "1", "--docs-per-partition", "3", "--mem-limit", str(cap),
                        *extra])
        assert rc == 0
        out = capsys.readouterr()
        return json.loads(out.out.strip().splitlines()[-1]), out.err

    s, _ = run("--progress")
    assert s["partitions"] == 3 and len(made) == 1
    bar = made[0]
    assert (bar.total, bar.n, bar.closed, bar.unit) == (3, 3, True, "part")
    assert bar.postfix == "8 docs, 1 failed"
    _, err = run()  # stderr is not a terminal here: no bar by default, a line per part
    assert "part 2: 2 docs, 1 failed" in err and len(made) == 1
    _, err = run("--progress", "-q")
    assert err == "" and len(made) == 1
    # without tqdm: a line per part instead, nothing fails
    monkeypatch.setitem(sys.modules, "tqdm.auto", None)
    monkeypatch.setitem(sys.modules, "tqdm", None)
    _, err = run("--progress")
    assert "part 2: 2 docs, 1 failed" in err and len(made) == 1
