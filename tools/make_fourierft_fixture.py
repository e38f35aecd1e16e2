#!/usr/bin/env python3
"""Regenerate the FourierFT adapter fixture in tests/data/fourierft/ (needs torch,
transformers and peft; CI never runs this script).

    python3 tools/make_fourierft_fixture.py [--out tests/data/fourierft]

Two base models already committed are reused, rebuilt here bit for bit from their
own fixture scripts' seeds (checked against the committed GGUF):

  fnet         tests/data/fnet/model.gguf      (tools/make_fnet_fixture.py)
  spectralmlp  tests/data/seed/model.gguf      (tools/make_seed_fixture.py's weights, model.npz)

For each, a peft FOURIERFT adapter (every supported target, random_loc_seed set,
one target with its own n_frequency via n_frequency_pattern) is trained for a
few Adam steps on a small regression objective, then saved with peft's
save_pretrained and converted with tools/convert_fourierft.py. Written:

  fnet-adapter/                 peft's adapter directory (adapter_config.json,
                                adapter_model.safetensors): the converter's input in CI
  fnet-adapter.gguf             tools/convert_fourierft.py's output
  fnet_ids_T<N>.txt             token ids
  fnet_ref_T<N>_s<S>.npy        last_hidden_state[0] of peft's merged model
                                (merge_and_unload, float32 merge as peft does it; the
                                forward run in float64), user scale S = 1; for S = 0.5
                                the merge is W + 0.5 * get_delta_weight (peft has no
                                merge scale for FourierFT)
  fnet_pool_T<N>_s<S>.npy       pooler_output[0] of the same
  seed-adapter/, seed-adapter.gguf   the same for the spectralmlp seed model
  seed_expected_s<S>.npz        token states of peft's merged seed model (float64
                                forward), one array per text of tests/data/seed/texts
  manifest.json                 cases, configs and versions

Before writing, peft's delta weights are checked against an independent float64
numpy ifft2 of the stored spectrum and locations (max abs error printed).
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.abspath(os.path.join(HERE, ".."))
sys.path.insert(0, HERE)

import convert_fourierft  # noqa: E402

FNET_LENGTHS = [1, 7, 64]
SCALES = [1.0, 0.5]
FNET_ADAPTER = dict(n_frequency=300, scaling=30.0, random_loc_seed=4242,
                    target_modules=["projection", "dense"],
                    n_frequency_pattern={"pooler.dense": 100})
SEED_ADAPTER = dict(n_frequency=500, scaling=40.0, random_loc_seed=2024,
                    target_modules=r"blocks\.\d+\.mlp\.(0|3)",
                    n_frequency_pattern={"blocks.1.mlp.3": 200})


def train(torch, pm, batches, steps=8, lr=0.05):
    """A few Adam steps pulling the outputs towards a fixed random target."""
    params = [p for n, p in pm.named_parameters() if p.requires_grad]
    assert params and all("fourierft_spectrum" in n for n, p in pm.named_parameters() if p.requires_grad)
    opt = torch.optim.Adam(params, lr=lr)
    g = torch.Generator().manual_seed(7)
    targets = [None] * len(batches)
    for step in range(steps):
        for i, (x, fwd) in enumerate(batches):
            y = fwd(x)
            if targets[i] is None:
                targets[i] = torch.randn(y.shape, generator=g)
            loss = ((y - targets[i]) ** 2).mean()
            opt.zero_grad()
            loss.backward()
            opt.step()
        print(f"  step {step}: loss {loss.item():.4f}", file=sys.stderr)


def numpy_delta(spec, idx, shape, scaling):
    S = np.zeros(shape, dtype=np.float64)
    S[idx[0], idx[1]] = spec
    return np.real(np.fft.ifft2(S)) * scaling


def check_deltas(pm, gguf_path):
    """peft's get_delta_weight against float64 numpy from the converted file."""
    import gguf
    r = gguf.GGUFReader(gguf_path)
    t = {x.name: np.array(x.data) for x in r.tensors}
    f = r.fields["adapter.fourierft.scaling"]
    scaling = float(f.parts[f.data[0]][0])
    worst = 0.0
    names = []
    for name, mod in pm.named_modules():
        if hasattr(mod, "get_delta_weight") and hasattr(mod, "fourierft_spectrum"):
            d = mod.get_delta_weight("default").detach().double().numpy()
            names.append(name)
            cands = [k[:-len(".fourierft_spectrum")] for k in t if k.endswith(".fourierft_spectrum")]
            hits = [c for c in cands
                    if np.array_equal(t[c + ".fourierft_spectrum"],
                                      mod.fourierft_spectrum["default"].detach().numpy())]
            assert len(hits) == 1, (name, hits)
            idx = t[hits[0] + ".fourierft_indices"].reshape(2, -1)
            assert np.array_equal(idx, mod.indices["default"].numpy()), name
            ref = numpy_delta(t[hits[0] + ".fourierft_spectrum"], idx, d.shape, scaling)
            worst = max(worst, float(np.max(np.abs(d - ref)) / np.max(np.abs(ref))))
    print(f"  {len(names)} targets; peft delta_W vs numpy float64: max rel err {worst:.3g}",
          file=sys.stderr)
    assert worst < 1e-5


def merged_copy(torch, copy, pm, base, scale):
    """base with every target W + scale * peft's delta (peft's own merge for scale 1)."""
    if scale == 1.0:
        m = copy.deepcopy(pm).merge_and_unload()
    else:
        m = copy.deepcopy(base)
        mods = dict(m.named_modules())
        with torch.no_grad():
            for name, mod in pm.named_modules():
                if hasattr(mod, "get_delta_weight") and hasattr(mod, "fourierft_spectrum"):
                    tgt = mods[name[len("base_model.model."):]]
                    tgt.weight += scale * mod.get_delta_weight("default")
    return m.eval()


def make_fnet(torch, transformers, peft, out, man):
    import copy

    import make_fnet_fixture
    base = make_fnet_fixture.build_model(torch, transformers)
    committed = os.path.join(ROOT, "tests", "data", "fnet", "model.gguf")
    check_same_base(base.state_dict(), committed, {
        "encoder.layer.0.intermediate.dense.weight": "blk.0.ffn_up.weight",
        "pooler.dense.weight": "pooler.weight",
        "embeddings.projection.weight": "token_embd_proj.weight"})
    torch.manual_seed(11)
    cfg = peft.FourierFTConfig(**FNET_ADAPTER)
    pm = peft.get_peft_model(copy.deepcopy(base), cfg)
    pm.train()
    rng = np.random.default_rng(99)
    V = make_fnet_fixture.CONFIG["vocab_size"]
    batches = []
    for T in (5, 16):
        x = torch.tensor(rng.integers(0, V, size=(2, T)), dtype=torch.long)
        batches.append((x, lambda x: pm(input_ids=x).pooler_output))
    train(torch, pm, batches)
    pm.eval()
    adir = os.path.join(out, "fnet-adapter")
    shutil.rmtree(adir, ignore_errors=True)
    pm.save_pretrained(adir)
    os.remove(os.path.join(adir, "README.md"))
    gpath = os.path.join(out, "fnet-adapter.gguf")
    convert_fourierft.convert(adir, committed, gpath, name="fnet-tiny-fourierft")
    check_deltas(pm, gpath)
    cases = []
    all_ids = {}
    for T in FNET_LENGTHS:
        ids = rng.integers(0, V, size=T)
        ids[0] = 0
        ids[-1] = V - 1
        all_ids[T] = ids
        with open(os.path.join(out, f"fnet_ids_T{T}.txt"), "w") as f:
            f.write(" ".join(str(int(i)) for i in ids) + "\n")
    for s in SCALES:
        m = merged_copy(torch, copy, pm, base, s).double()
        for T, ids in all_ids.items():
            with torch.no_grad():
                o = m(input_ids=torch.tensor(ids[None, :]))
            np.save(os.path.join(out, f"fnet_ref_T{T}_s{s}.npy"),
                    o.last_hidden_state[0].numpy().astype(np.float32))
            np.save(os.path.join(out, f"fnet_pool_T{T}_s{s}.npy"),
                    o.pooler_output[0].numpy().astype(np.float32))
            cases.append(dict(T=T, scale=s, ids=f"fnet_ids_T{T}.txt", ref=f"fnet_ref_T{T}_s{s}.npy",
                              pool=f"fnet_pool_T{T}_s{s}.npy"))
    man["fnet"] = dict(base="../fnet/model.gguf", adapter="fnet-adapter.gguf",
                       adapter_dir="fnet-adapter", peft_config=FNET_ADAPTER, cases=cases)


def check_same_base(sd, gguf_path, pairs):
    import gguf
    r = gguf.GGUFReader(gguf_path)
    t = {x.name: np.array(x.data) for x in r.tensors}
    for hf, ours in pairs.items():
        a = sd[hf].detach().float().numpy()
        assert np.array_equal(a, t[ours].reshape(a.shape)), f"rebuilt {hf} differs from {gguf_path}"


def make_seed(torch, peft, out, man):
    import copy

    from seed_model import DocumentEncoder, SpectralMix
    SpectralMix.literal = True
    npz = np.load(os.path.join(ROOT, "tests", "data", "seed", "model.npz"))
    base = DocumentEncoder(vocab=256, dim=32, ffn=128, n_layers=2, n_filters=16, output_norm=True)
    base.load_state_dict({k: torch.from_numpy(npz[k]) for k in npz.files})
    base.eval()
    committed = os.path.join(ROOT, "tests", "data", "seed", "model.gguf")
    check_same_base(base.state_dict(), committed, {"blocks.1.mlp.3.weight": "blk.1.ffn_down.weight"})
    torch.manual_seed(12)
    pm = peft.get_peft_model(copy.deepcopy(base), peft.FourierFTConfig(**SEED_ADAPTER))
    pm.train()
    rng = np.random.default_rng(5)
    batches = [(torch.tensor(rng.integers(0, 256, size=(2, T))), lambda x: pm(x)) for T in (9, 40)]
    train(torch, pm, batches)
    pm.eval()
    adir = os.path.join(out, "seed-adapter")
    shutil.rmtree(adir, ignore_errors=True)
    pm.save_pretrained(adir)
    os.remove(os.path.join(adir, "README.md"))
    gpath = os.path.join(out, "seed-adapter.gguf")
    convert_fourierft.convert(adir, committed, gpath, name="seed-fourierft")
    check_deltas(pm, gpath)
    texts = sorted(os.listdir(os.path.join(ROOT, "tests", "data", "seed", "texts")))
    for s in SCALES:
        m = merged_copy(torch, copy, pm, base, s).double()
        exp = {}
        with torch.no_grad():
            for name in texts:
                with open(os.path.join(ROOT, "tests", "data", "seed", "texts", name), "rb") as f:
                    data = f.read()
                exp[name] = m(torch.tensor(list(data), dtype=torch.int64)[None, :])[0].numpy().astype(np.float32)
        np.savez_compressed(os.path.join(out, f"seed_expected_s{s}.npz"), **exp)
    man["seed"] = dict(base="../seed/model.gguf", adapter="seed-adapter.gguf", adapter_dir="seed-adapter",
                       peft_config=SEED_ADAPTER, texts="../seed/texts", scales=SCALES,
                       expected={str(s): f"seed_expected_s{s}.npz" for s in SCALES})


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", default=os.path.join(ROOT, "tests", "data", "fourierft"))
    a = ap.parse_args(argv)
    import peft
    import torch
    import transformers

    torch.set_num_threads(1)
    out = os.path.abspath(a.out)
    os.makedirs(out, exist_ok=True)
    man = dict(torch=torch.__version__, transformers=transformers.__version__, peft=peft.__version__)
    print("fnet:", file=sys.stderr)
    make_fnet(torch, transformers, peft, out, man)
    print("seed (spectralmlp):", file=sys.stderr)
    make_seed(torch, peft, out, man)
    with open(os.path.join(out, "manifest.json"), "w") as f:
        json.dump(man, f, indent=1)
        f.write("\n")
    print(f"wrote {out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
