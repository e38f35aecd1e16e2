#!/usr/bin/env python3
"""Train the byte-level `spectralmlp` document encoder that was the default model until issue 10 (now tests/data/byte-model/spectral-byte.gguf; the default is distilled by tools/train/distill.py).

    apt-get install python3-doc && pip install torch numpy gguf
    python3 tools/train/train_byte_model.py --threads 2 --out /tmp/train   # defaults = stage 1 of the shipped model
    # (stages 2 and 3 continue it with --init; commands in docs/default-model.md)
    # -> /tmp/train/model.pt (encoder state dict, training head dropped),
    #    /tmp/train/model.gguf (via tools/convert/convert_seed.py), /tmp/train/log.jsonl

Data: tools/train/doc_corpus.py (python3-doc HTML pages, tags stripped, packed into
256..2048-byte documents; pages split into train / held-out, only train is
used here).

Objective, per step (batch of B documents, one span length T per step drawn
from --lengths, documents shorter than 2T skipped for that step):
  * each document is cut at a random point near its middle; one window of T
    bytes is taken from each side (like eval_retrieval.py's two halves);
  * contrastive: mean-pooled, L2-normalized states of the two windows,
    symmetric InfoNCE with in-batch negatives, temperature --temp;
  * masked-byte prediction: --mask-rate of the input bytes are replaced by
    token 256 (a [MASK] id outside the byte range; V = 257) and a linear head
    over the token states predicts the original byte; weight --mlm-weight.
    The head is training-only and is not exported.
The contrastive embeddings are computed from the same (masked) forward pass.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import random
import subprocess
import sys
import time

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
CONVERT = os.path.join(HERE, "..", "convert")
sys.path.insert(0, HERE)
sys.path.insert(1, CONVERT)  # seed_model

MASK_ID = 256


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description="train the default spectralmlp encoder")
    ap.add_argument("--out", required=True)
    ap.add_argument("--dim", type=int, default=128)
    ap.add_argument("--ffn", type=int, default=512)
    ap.add_argument("--layers", type=int, default=3)
    ap.add_argument("--filters", type=int, default=128)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--lengths", default="128,192,256")
    ap.add_argument("--lr", type=float, default=2e-3)
    ap.add_argument("--wd", type=float, default=0.01)
    ap.add_argument("--warmup", type=int, default=30)
    ap.add_argument("--temp", type=float, default=0.05)
    ap.add_argument("--mask-rate", type=float, default=0.1)
    ap.add_argument("--mlm-weight", type=float, default=0.5)
    ap.add_argument("--minutes", type=float, default=26.0, help="wall-clock training budget")
    ap.add_argument("--max-steps", type=int, default=0)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--dtype", choices=["f32", "f16"], default="f16", help="GGUF matrix dtype")
    ap.add_argument("--name", default="spectral-default")
    ap.add_argument("--ctx", type=int, default=4096)
    ap.add_argument("--init", metavar="PT",
                    help="start from this encoder state dict (a previous run's model.pt) instead of a "
                         "random init; the shape options must match it. The masked-byte head starts fresh")
    a = ap.parse_args(argv)

    import torch
    import torch.nn.functional as Fn

    from doc_corpus import load_corpus
    from seed_model import DocumentEncoder

    torch.set_num_threads(a.threads)
    torch.manual_seed(a.seed)
    rng = random.Random(a.seed)
    os.makedirs(a.out, exist_ok=True)

    t0 = time.time()
    train_docs, held = load_corpus()
    docs = [d for _, d in train_docs]
    print(f"corpus: {len(docs)} train docs, {len(held)} held-out docs ({time.time()-t0:.1f}s)",
          flush=True)
    lengths = [int(x) for x in a.lengths.split(",")]
    by_len = {T: [d for d in docs if len(d) >= 2 * T] for T in lengths}

    model = DocumentEncoder(vocab=257, dim=a.dim, ffn=a.ffn, n_layers=a.layers,
                            n_filters=a.filters, dropout=0.0)
    with torch.no_grad():
        model.embedding.weight.normal_(0.0, 1.0)
    if a.init:
        model.load_state_dict(torch.load(a.init, map_location="cpu"))
        print(f"init: {a.init}", flush=True)
    head = torch.nn.Linear(a.dim, 256)
    n_params = sum(p.numel() for p in model.parameters())
    print(f"model: D={a.dim} F={a.ffn} L={a.layers} K={a.filters} params={n_params}", flush=True)
    params = list(model.parameters()) + list(head.parameters())
    decay = [p for p in params if p.ndim >= 2]
    nodecay = [p for p in params if p.ndim < 2]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": a.wd},
                             {"params": nodecay, "weight_decay": 0.0}], lr=a.lr, betas=(0.9, 0.98))

    def make_batch(T):
        pool = by_len[T]
        picks = rng.sample(pool, min(a.batch, len(pool)))
        xa, xb = [], []
        for d in picks:
            n = len(d)
            lo, hi = T, n - T
            mid = rng.randint(lo, hi) if hi > lo else lo
            mid = int(0.5 * mid + 0.5 * min(max(n // 2, lo), hi))  # near the middle
            sa = rng.randint(0, mid - T)
            sb = rng.randint(mid, n - T)
            xa.append(np.frombuffer(d[sa:sa + T], dtype=np.uint8))
            xb.append(np.frombuffer(d[sb:sb + T], dtype=np.uint8))
        x = torch.from_numpy(np.stack(xa + xb).astype(np.int64))
        return x

    budget = a.minutes * 60.0
    log = open(os.path.join(a.out, "log.jsonl"), "w")
    step = 0
    t_start = time.time()
    est_steps = None
    ema = None
    while True:
        elapsed = time.time() - t_start
        if elapsed > budget or (a.max_steps and step >= a.max_steps):
            break
        # cosine schedule over the estimated number of steps in the time budget
        if step == 20:
            est_steps = int(budget / (elapsed / 20))
        total = est_steps or 10 ** 9
        if step < a.warmup:
            lr = a.lr * (step + 1) / a.warmup
        else:
            prog = min(1.0, (elapsed / budget))
            lr = a.lr * (0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * prog)))
        for g in opt.param_groups:
            g["lr"] = lr
        T = lengths[step % len(lengths)]
        x = make_batch(T)
        B = x.shape[0] // 2
        m = torch.rand(x.shape) < a.mask_rate
        xin = x.masked_fill(m, MASK_ID)
        h = model.token_states(xin)
        e = Fn.normalize(h.mean(dim=1), dim=-1)
        sim = e[:B] @ e[B:].T / a.temp
        lab = torch.arange(B)
        l_con = 0.5 * (Fn.cross_entropy(sim, lab) + Fn.cross_entropy(sim.T, lab))
        if m.any():
            l_mlm = Fn.cross_entropy(head(h[m]), x[m])
        else:
            l_mlm = torch.zeros(())
        loss = l_con + a.mlm_weight * l_mlm
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        acc = (sim.argmax(1) == lab).float().mean().item()
        rec = dict(step=step, t=round(time.time() - t_start, 1), T=T, lr=lr, loss=loss.item(),
                   con=l_con.item(), mlm=l_mlm.item(), acc=acc)
        ema = rec if ema is None else {k: (0.95 * ema[k] + 0.05 * v if k in ("con", "mlm", "acc") else v)
                                       for k, v in rec.items()}
        log.write(json.dumps(rec) + "\n")
        if step % 25 == 0:
            log.flush()
            print(f"step {step} t={rec['t']}s T={T} lr={lr:.2e} con={ema['con']:.3f} "
                  f"mlm={ema['mlm']:.3f} acc={ema['acc']:.3f} (steps in budget, estimated at step 20: {total})", flush=True)
        step += 1
    log.close()
    print(f"trained {step} steps in {time.time()-t_start:.0f}s", flush=True)

    sd = {k: v.detach().clone() for k, v in model.state_dict().items()}
    pt = os.path.join(a.out, "model.pt")
    torch.save(sd, pt)
    with open(os.path.join(a.out, "config.json"), "w") as fh:
        json.dump(dict(vars(a), steps=step, n_params=n_params, config=model.config), fh, indent=1)
    gg = os.path.join(a.out, "model.gguf")
    subprocess.run([sys.executable, os.path.join(CONVERT, "convert_seed.py"), pt, "-o", gg,
                    "--name", a.name, "--dtype", a.dtype, "--ctx", str(a.ctx), "--pooling", "mean"],
                   check=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
