#!/usr/bin/env python3
"""Embed a corpus into Parquet with the spectral package, on Dask (one machine or a cluster).

usage: embed_corpus.py -m MODEL INPUT -o OUTDIR [options]

INPUT is a directory tree of text files (id = path relative to INPUT, each
file's bytes embedded as `spectral-embed FILE` would), a JSON Lines file of
{"id": ..., "text": ...} records, or a Parquet file with columns id and text
(--id-column, --text-column). OUTDIR receives part-NNNNN.parquet files with
columns id (string), n_tokens (int64), embedding (fixed-size list of float32),
error (string): one row per input document, in input order within a part.

Guarantees:
- Every input document is in exactly one output row: the input is cut into
  partitions by a deterministic rule (a range of sorted file names, of
  Parquet rows, or of JSONL bytes: a line belongs to the range it starts in);
  each partition becomes exactly one part file.
- A document that fails (unreadable, undecodable JSON, empty, over
  --mem-limit, ...) is a row with a null embedding and its error; its
  partition is still written.
- A part is written to a temporary name and renamed into place, so a part
  file is complete or absent. A rerun skips the parts that exist, so it
  resumes where an interrupted run stopped; a task that Dask retries rewrites
  the same content. The partitioning and the model are recorded in
  OUTDIR/_manifest.json, and a rerun with different ones is refused.
- The vectors are the library's, bit for bit those of spectral-embed.

Engine: Dask distributed (docs/python.md says why). Without --scheduler it
starts a LocalCluster of --workers processes on this machine; with
--scheduler tcp://HOST:8786 it runs on that cluster, whose workers need the
spectral wheel, numpy and pyarrow, and INPUT, OUTDIR and MODEL at the same
paths (shared storage). Each worker process loads the model once (a worker
plugin) and embeds whole partitions with it. --workers 0 runs everything in
this process without Dask (the engine's overhead is the difference).

Progress: a bar over the parts when stderr is a terminal and tqdm is installed
(--progress / --no-progress to choose), else a line per part; -q shows neither.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import sys
import time
import uuid
from pathlib import Path

MANIFEST = "_manifest.json"
PLUGIN_NAME = "spectral-model"


# ---------------------------------------------------------------- partitions


def list_files(root: str) -> list:
    """Regular files under root, by relative path (bytes order), symlinked directories not followed."""
    out = []
    rootb = os.fsencode(root)
    for dirpath, dirnames, filenames in os.walk(rootb):
        dirnames.sort()
        for f in filenames:
            p = os.path.join(dirpath, f)
            if os.path.isfile(p):
                out.append(os.path.relpath(p, rootb))
    out.sort()
    return out


def file_id(rel: bytes) -> str:
    """A file's id: its relative path; bytes that are not UTF-8 are percent-encoded
    (as spectral-embed's input_percent does), so every id is a valid string."""
    try:
        return rel.decode("utf-8")
    except UnicodeDecodeError:
        keep = b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-._~/"
        return "".join(chr(c) if c in keep else f"%{c:02X}" for c in rel)


def make_partitions(args) -> tuple:
    """(kind, partition specs, expected document count or None)."""
    src = args.input
    if os.path.isdir(src):
        files = list_files(src)
        n = args.docs_per_partition
        specs = [{"kind": "dir", "root": os.path.abspath(src),
                  "files": [os.fsdecode(f) for f in files[i:i + n]]}
                 for i in range(0, len(files), n)]
        return "dir", specs, len(files)
    if src.endswith(".parquet"):
        import pyarrow.parquet as pq
        md = pq.ParquetFile(src).metadata
        total, n = md.num_rows, args.docs_per_partition
        specs = [{"kind": "parquet", "path": os.path.abspath(src), "start": i,
                  "stop": min(i + n, total), "id_column": args.id_column,
                  "text_column": args.text_column} for i in range(0, total, n)]
        return "parquet", specs, total
    if src.endswith((".jsonl", ".ndjson", ".json")):
        size = os.path.getsize(src)
        n = args.bytes_per_partition
        specs = [{"kind": "jsonl", "path": os.path.abspath(src), "start": i,
                  "stop": min(i + n, size), "id_column": args.id_column,
                  "text_column": args.text_column} for i in range(0, size, n)]
        return "jsonl", specs, None
    raise SystemExit(f"embed_corpus: {src}: not a directory, .jsonl or .parquet file")


def read_partition(spec: dict) -> list:
    """[(id, bytes or None, error or None)] for the documents of one partition."""
    docs = []
    if spec["kind"] == "dir":
        for rel in spec["files"]:
            relb = os.fsencode(rel)
            try:
                with open(os.path.join(os.fsencode(spec["root"]), relb), "rb") as f:
                    docs.append((file_id(relb), f.read(), None))
            except OSError as e:
                docs.append((file_id(relb), None, f"cannot read: {e.strerror or e}"))
    elif spec["kind"] == "parquet":
        import pyarrow.parquet as pq
        pf = pq.ParquetFile(spec["path"])
        start, stop = spec["start"], spec["stop"]
        groups, row0, first = [], 0, None
        for g in range(pf.metadata.num_row_groups):
            n = pf.metadata.row_group(g).num_rows
            if row0 + n > start and row0 < stop:
                groups.append(g)
                first = row0 if first is None else first
            row0 += n
        t = pf.read_row_groups(groups, columns=[spec["id_column"], spec["text_column"]])
        t = t.slice(start - first, stop - start)
        for i, (id_, text) in enumerate(zip(t.column(0).to_pylist(), t.column(1).to_pylist())):
            id_ = f"row {start + i}" if id_ is None else str(id_)
            if isinstance(text, str):
                docs.append((id_, text.encode("utf-8"), None))
            elif isinstance(text, bytes):
                docs.append((id_, text, None))
            else:
                docs.append((id_, None, "no text (null)"))
    else:  # jsonl: the lines that start in [start, stop)
        with open(spec["path"], "rb") as f:
            pos = spec["start"]
            f.seek(pos)
            if pos > 0:  # a line that started before this range belongs to the previous one
                f.seek(pos - 1)
                if f.read(1) != b"\n":
                    pos += len(f.readline())
            while pos < spec["stop"]:
                line = f.readline()
                if not line:
                    break
                at, pos = pos, pos + len(line)
                if not line.strip():
                    continue
                docs.append(jsonl_record(line, at, spec))
    return docs


def jsonl_record(line: bytes, at: int, spec: dict) -> tuple:
    fallback = f"byte {at}"  # the id of a line whose own id cannot be read
    try:
        rec = json.loads(line)
    except ValueError as e:
        return fallback, None, f"invalid JSON: {e}"
    if not isinstance(rec, dict):
        return fallback, None, "invalid record: not a JSON object"
    id_ = rec.get(spec["id_column"])
    id_ = fallback if id_ is None else str(id_)
    text = rec.get(spec["text_column"])
    if not isinstance(text, str):
        return id_, None, f"invalid record: no string field {spec['text_column']!r}"
    try:
        return id_, text.encode("utf-8"), None
    except UnicodeEncodeError as e:  # a lone surrogate escape such as "\ud800"
        return id_, None, f"undecodable text: {e.reason}"


# ---------------------------------------------------------------- one partition


def part_name(index: int) -> str:
    return f"part-{index:05d}.parquet"


def embed_partition(model, index: int, spec: dict, out_dir: str, pooling, normalize: bool) -> dict:
    """Embeds one partition and writes its part atomically; returns its counts."""
    import numpy as np
    import pyarrow as pa
    import pyarrow.parquet as pq

    t0 = time.time()
    docs = read_partition(spec)
    texts = [d[1] for d in docs if d[1] is not None]
    r = model.embed_batch(texts, pooling=pooling, normalize=normalize)
    ids, n_tokens, emb, errors = [], [], np.full((len(docs), model.n_pooled), np.nan, np.float32), []
    k = 0
    for i, (id_, text, err) in enumerate(docs):
        ids.append(id_)
        if text is None:
            n_tokens.append(None)
            errors.append(err)
            continue
        e = r.errors[k]
        n_tokens.append(int(r.n_tokens[k]) if r.n_tokens[k] >= 0 else None)
        errors.append(None if e is None else e.message)
        if e is None:
            emb[i] = r.embeddings[k]
        k += 1
    ok = np.array([e is None for e in errors], dtype=bool)
    flat = pa.array(emb.reshape(-1), type=pa.float32())
    vectors = pa.FixedSizeListArray.from_arrays(  # a failed document's embedding is null
        flat, model.n_pooled, mask=None if ok.all() else pa.array(~ok))
    table = pa.table({
        "id": pa.array(ids, pa.string()),
        "n_tokens": pa.array(n_tokens, pa.int64()),
        "embedding": vectors,
        "error": pa.array(errors, pa.string()),
    })
    final = os.path.join(out_dir, part_name(index))
    tmp = os.path.join(out_dir, f".{part_name(index)}.{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:8]}.tmp")
    pq.write_table(table, tmp)
    with open(tmp, "rb+") as f:  # on disk before it is visible under its final name
        os.fsync(f.fileno())
    os.replace(tmp, final)
    return {"index": index, "docs": len(docs), "failed": int((~ok).sum()), "seconds": time.time() - t0}


# ---------------------------------------------------------------- Dask


def make_plugin(model_kwargs: dict):
    from distributed import WorkerPlugin

    class ModelPlugin(WorkerPlugin):
        """One model per worker process, loaded when the worker starts (or joins)."""

        name = PLUGIN_NAME

        def __init__(self, kwargs):
            self.kwargs = kwargs
            self.model = None

        def setup(self, worker):
            import spectral
            self.model = spectral.Model(**self.kwargs)

        def teardown(self, worker):
            if self.model is not None:
                self.model.close()

    return ModelPlugin(model_kwargs)


def dask_task(index: int, spec: dict, out_dir: str, pooling, normalize: bool) -> dict:
    from distributed import get_worker
    model = get_worker().plugins[PLUGIN_NAME].model
    return embed_partition(model, index, spec, out_dir, pooling, normalize)


# ---------------------------------------------------------------- driver


def parse_args(argv):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("input", help="directory of text files, .jsonl or .parquet")
    ap.add_argument("-m", "--model", required=True, help="GGUF model (same path on every node)")
    ap.add_argument("-o", "--output", required=True, help="output directory of part-NNNNN.parquet")
    ap.add_argument("--scheduler", help="Dask scheduler address (default: a LocalCluster)")
    ap.add_argument("--workers", type=int, default=2,
                    help="LocalCluster worker processes (default 2; 0 = no Dask, this process)")
    ap.add_argument("-t", "--threads", type=int, default=0,
                    help="library threads per model (default: cores / workers on a LocalCluster, "
                         "every core of the node on a cluster)")
    ap.add_argument("--mem-limit", help="activation memory cap per document pass, e.g. 512M")
    ap.add_argument("-p", "--pooling", choices=["mean", "cls", "last"], help="default: the model's")
    ap.add_argument("--no-normalize", action="store_true")
    ap.add_argument("-b", "--batch-tokens", type=int, default=0, help="packing budget (default 4096)")
    ap.add_argument("--docs-per-partition", type=int, default=256, help="directory and Parquet inputs")
    ap.add_argument("--bytes-per-partition", type=int, default=1 << 20, help="JSONL inputs")
    ap.add_argument("--id-column", default="id")
    ap.add_argument("--text-column", default="text")
    ap.add_argument("-q", "--quiet", action="store_true")
    ap.add_argument("--progress", action=argparse.BooleanOptionalAction, default=None,
                    help="a progress bar over the parts (needs tqdm; default: when stderr is a "
                         "terminal); without it, a line per part")
    a = ap.parse_args(argv)
    if a.docs_per_partition < 1 or a.bytes_per_partition < 1 or a.workers < 0 or a.threads < 0:
        ap.error("partition sizes must be >= 1, --workers and --threads >= 0")
    return a


def fingerprint(src: str, specs: list) -> str:
    """A digest of the partition list (every file name, every row or byte range) and,
    for a JSONL or Parquet file, its size and modification time: a rerun on a changed
    input would cut it differently, and is refused. (A directory's files are
    identified by name: a file rewritten in place is not noticed.)"""
    import hashlib
    h = hashlib.sha256(json.dumps(specs, sort_keys=True).encode())
    if not os.path.isdir(src):
        st = os.stat(src)
        h.update(f"{st.st_size} {st.st_mtime_ns}".encode())
    return h.hexdigest()


def check_manifest(out_dir: str, manifest: dict) -> None:
    path = os.path.join(out_dir, MANIFEST)
    if os.path.exists(path):
        with open(path) as f:
            old = json.load(f)
        if old != manifest:
            diff = sorted(k for k in set(old) | set(manifest) if old.get(k) != manifest.get(k))
            raise SystemExit(f"embed_corpus: {out_dir} holds the output of a different run "
                             f"(differs in: {', '.join(diff)}); use a new output directory")
        return
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        json.dump(manifest, f, indent=1, sort_keys=True)
    os.replace(tmp, path)


def main(argv=None) -> int:
    a = parse_args(argv)
    t_start = time.time()
    if not os.path.isfile(a.model):
        raise SystemExit(f"embed_corpus: {a.model}: no such model file")
    import spectral
    try:  # here, at once, rather than in every worker after the cluster has started
        spectral.Model(a.model, n_threads=1, mem_limit=a.mem_limit).close()
    except (spectral.SpectralError, ValueError) as e:
        raise SystemExit(f"embed_corpus: {e}")
    kind, specs, expected = make_partitions(a)
    os.makedirs(a.output, exist_ok=True)
    model_path = os.path.abspath(a.model)
    manifest = {
        "partitioning": fingerprint(a.input, specs),
        "input": os.path.abspath(a.input), "kind": kind, "partitions": len(specs),
        "docs_per_partition": a.docs_per_partition if kind != "jsonl" else None,
        "bytes_per_partition": a.bytes_per_partition if kind == "jsonl" else None,
        "id_column": a.id_column, "text_column": a.text_column,
        "model": model_path, "model_bytes": os.path.getsize(model_path),
        "pooling": a.pooling, "normalize": not a.no_normalize,
    }
    check_manifest(a.output, manifest)
    for stale in Path(a.output).glob(".part-*.tmp"):  # left by a worker that died mid-write
        stale.unlink()
    todo = [i for i in range(len(specs)) if not os.path.exists(os.path.join(a.output, part_name(i)))]
    log = (lambda *x: None) if a.quiet else (lambda *x: print("embed_corpus:", *x, file=sys.stderr))
    log(f"{len(specs)} partitions, {len(specs) - len(todo)} already written, {len(todo)} to do")
    normalize = not a.no_normalize
    out_dir = os.path.abspath(a.output)
    model_kwargs = {"path": model_path, "mem_limit": a.mem_limit, "batch_tokens": a.batch_tokens}
    done, t_ready = [], time.time()
    show_bar = not a.quiet and (a.progress if a.progress is not None else sys.stderr.isatty())
    report = Progress(len(todo), log, show_bar)
    try:
        if todo and a.workers == 0 and not a.scheduler:
            with spectral.Model(n_threads=a.threads, **model_kwargs) as m:
                t_ready = time.time()
                for i in todo:
                    done.append(report(embed_partition(m, i, specs[i], out_dir, a.pooling, normalize)))
        elif todo:
            done, t_ready = run_dask(a, specs, todo, out_dir, model_kwargs, normalize, report)
    finally:
        report.close()
    t_end = time.time()
    summary = summarize(a.output, len(specs), expected)
    n_new = sum(d["docs"] for d in done)
    summary.update({
        "partitions_written": len(done), "partitions_skipped": len(specs) - len(todo),
        "docs_this_run": n_new, "seconds": round(time.time() - t_start, 3),
        # from the models loaded (the engine started) to the last part written
        "setup_seconds": round(t_ready - t_start, 3),
        "embed_seconds": round(t_end - t_ready, 3),
        "docs_per_second": round(n_new / (t_end - t_ready), 2) if n_new else None,
    })
    print(json.dumps(summary))
    return 0 if summary["complete"] else 1


class Progress:
    """Each finished part: a step of a progress bar (tqdm, when installed and asked
    for), or else a line on stderr (none with -q)."""

    def __init__(self, n_parts: int, log, show_bar: bool):
        from spectral._progress import progress_bar  # the package's: tqdm when installed
        self.n_parts, self.log, self.parts, self.docs, self.failed = n_parts, log, 0, 0, 0
        self.bar = progress_bar(n_parts, "embed_corpus", unit="part", enabled=show_bar and n_parts > 0)

    def __call__(self, r: dict) -> dict:
        self.parts += 1
        self.docs += r["docs"]
        self.failed += r["failed"]
        if self.bar is not None:
            self.bar.set_postfix_str(f"{self.docs} docs, {self.failed} failed", refresh=False)
            self.bar.update(1)
        else:
            self.log(f"part {r['index']}: {r['docs']} docs, {r['failed']} failed, {r['seconds']:.2f} s "
                     f"[{self.parts}/{self.n_parts}]")
        return r

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def run_dask(a, specs, todo, out_dir, model_kwargs, normalize, report) -> tuple:
    """Runs the parts to do on Dask; returns their counts and when the workers were ready."""
    from distributed import Client, LocalCluster, as_completed
    try:  # the task functions are sent by value, whether this file runs as a script or is imported
        import cloudpickle
        if __name__ != "__main__":
            cloudpickle.register_pickle_by_value(sys.modules[__name__])
    except (ImportError, AttributeError):
        pass
    cluster = None
    if a.scheduler:
        client = Client(a.scheduler)
        threads = a.threads
    else:
        cluster = LocalCluster(n_workers=a.workers, threads_per_worker=1, processes=True,
                               dashboard_address=":0")  # no fixed port to collide on
        client = Client(cluster)
        threads = a.threads or max(1, (os.cpu_count() or 1) // a.workers)
    try:
        plugin = make_plugin(dict(model_kwargs, n_threads=threads))
        if hasattr(client, "register_plugin"):
            client.register_plugin(plugin)
        else:
            client.register_worker_plugin(plugin)
        t_ready = time.time()  # every worker has its model
        futures = [client.submit(dask_task, i, specs[i], out_dir, a.pooling, normalize,
                                 key=f"spectral-part-{i:05d}-{uuid.uuid4().hex[:6]}", retries=1)
                   for i in todo]
        done = [report(fut.result()) for fut in as_completed(futures)]
        return done, t_ready
    finally:
        client.close()
        if cluster is not None:
            cluster.close()


def summarize(out_dir: str, n_parts: int, expected) -> dict:
    """Counts every row of every part (from the Parquet footers)."""
    import pyarrow.parquet as pq
    rows = failed = present = 0
    for i in range(n_parts):
        p = os.path.join(out_dir, part_name(i))
        if not os.path.exists(p):
            continue
        present += 1
        rows += pq.ParquetFile(p).metadata.num_rows
        failed += pq.read_table(p, columns=["error"]).column(0).null_count
    failed = rows - failed
    complete = present == n_parts and (expected is None or rows == expected)
    return {"partitions": n_parts, "documents": rows, "failed": failed,
            "expected": expected, "complete": complete}


if __name__ == "__main__":
    sys.exit(main())
