#!/usr/bin/env python3
"""FourierFT adapter parity and converter tests (no torch or peft needed).

    python3 tests/test_adapter.py --dump build/tests/test_adapter [--cli build/tools/spectral-embed]
                                  [--data tests/data]

tests/data/fourierft/ is made by tests/fixtures/make_fourierft_fixture.py from peft FOURIERFT
adapters trained for a few steps on the committed fnet and seed (spectralmlp) fixtures.

1. fnet: `test_adapter dump` (the C API with spectral_context_set_adapters) on the
   committed base tests/data/fnet/model.gguf with fnet-adapter.gguf at user scales 1
   and 0.5, against peft's merged model (merge_and_unload; scale 0.5: W + 0.5 delta_W),
   token states and pooler_output:
       max |c - ref| / max |ref| <= 1e-5
   and the same ids without the adapter against tests/data/fnet's own reference
   (the adapter must change the output by far more than the tolerance).
2. spectralmlp: `spectral-embed --adapter seed-adapter.gguf[:0.5] --pooling none` (or,
   without --cli, `test_adapter dump` on the texts' byte ids) on the seed fixture texts against tools/convert/reference.py (float64 numpy) run on the base
   weights with delta_W = Re(ifft2(S)) * scaling * scale added in numpy from the
   adapter file's own coefficients and locations: <= 1e-4 (the tolerance of the
   other spectralmlp parity tests); and against peft's merged seed model: <= 1e-4.
3. the converter: tools/convert/convert_fourierft.py --no-torch-check on the committed peft
   adapter directories writes the committed GGUF's tensors and keys exactly (the
   locations redrawn without torch equal those peft drew); a module we do not
   support, trained biases and a non-FOURIERFT adapter are refused, naming them.
4. the CLI refuses a missing adapter, an adapter for another architecture and a
   bad scale with exit status 2 and a message.
With --backend cuda only part 1 runs, on the CUDA backend (the merged matrices are
uploaded per context); exit 77 when no GPU is available.
Exit 0 when all pass, 1 otherwise.
"""
from __future__ import annotations

import argparse
import functools
import json
import os
import shutil
import subprocess
import sys
import tempfile

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)

import harness  # noqa: E402  (also puts tools/convert on sys.path)
from harness import SKIP  # noqa: E402

check = functools.partial(harness.check, show_ok=True)  # the log lists every comparison

TOL_FNET = 1e-5
TOL_SEED = 1e-4


def rel_err(got, ref):
    return float(np.max(np.abs(got - ref)) / max(float(np.max(np.abs(ref))), 1e-30))


def parse_dump(out):
    lines = out.strip().split("\n")
    T, D = (int(v) for v in lines[0].split())
    return np.array([[float(v) for v in ln.split()] for ln in lines[1:]]).reshape(T, D)


class Skip(Exception):
    pass


BACKEND = "cpu"


def dump(exe, model, ids, adapters=(), pooled=False):
    cmd = [exe, "dump", model, ids, "--backend", BACKEND]
    for a in adapters:
        cmd += ["--adapter", a]
    if pooled:
        cmd.append("--pooled")
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    if r.returncode == SKIP:
        raise Skip(r.stderr.strip())
    if r.returncode:
        raise RuntimeError(f"{' '.join(cmd)}: exit {r.returncode}: {r.stderr.strip()}")
    return parse_dump(r.stdout)


def test_fnet(a, fx, man):
    base = os.path.join(a.data, "fnet", "model.gguf")
    adapter = os.path.join(fx, man["adapter"])
    for c in man["cases"]:
        ids = os.path.join(fx, c["ids"])
        spec = f"{adapter}:{c['scale']}"
        ref = np.load(os.path.join(fx, c["ref"])).astype(np.float64)
        got = dump(a.dump, base, ids, [spec])
        e = rel_err(got, ref)
        check(got.shape == ref.shape and e <= TOL_FNET,
              f"fnet T={c['T']} scale {c['scale']}: token states vs peft merged, rel err {e:.3g}")
        pref = np.load(os.path.join(fx, c["pool"])).astype(np.float64)
        gp = dump(a.dump, base, ids, [spec], pooled=True)[0]
        e = rel_err(gp, pref)
        check(e <= TOL_FNET, f"fnet T={c['T']} scale {c['scale']}: pooler_output vs peft merged, "
              f"rel err {e:.3g}")
        # the adapter really moves the output (so the comparison above can fail)
        plain = dump(a.dump, base, ids)
        moved = rel_err(plain, ref)
        check(moved > 100 * TOL_FNET, f"fnet T={c['T']} scale {c['scale']}: without the adapter "
              f"the states are {moved:.3g} away")
    # an F16 base takes the same adapter (merged into its float32 copy): close to the F32
    # base's result, within what F16 weights alone move this model (~1e-3)
    c = man["cases"][-1]
    ids = os.path.join(fx, c["ids"])
    ref = np.load(os.path.join(fx, c["ref"])).astype(np.float64)
    got = dump(a.dump, os.path.join(a.data, "fnet", "model_f16.gguf"), ids, [f"{adapter}:{c['scale']}"])
    e = rel_err(got, ref)
    check(e <= 1e-2, f"fnet F16 base T={c['T']} scale {c['scale']}: rel err {e:.3g} (F16 weights)")


def apply_adapter_numpy(model, adapter_path, scale):
    """model.tensors[T] += scale * Re(ifft2(S)) * scaling for each target, in float64."""
    import gguf
    r = gguf.GGUFReader(adapter_path)
    t = {x.name: np.array(x.data) for x in r.tensors}
    f = r.fields["adapter.fourierft.scaling"]
    scaling = float(f.parts[f.data[0]][0])
    targets = r.fields["adapter.fourierft.targets"].contents()
    for name in targets:
        W = model.tensors[name]
        spec = t[name + ".fourierft_spectrum"].astype(np.float64)
        idx = t[name + ".fourierft_indices"].reshape(2, -1)
        S = np.zeros(W.shape)
        S[idx[0], idx[1]] = spec
        model.tensors[name] = W + scale * scaling * np.real(np.fft.ifft2(S))
    return targets


def run_seed_texts(a, base, adapter, texts_dir, texts):
    """Token states of each text with the adapter: through spectral-embed --adapter when it
    is built, else through the C API (test_adapter dump on the texts' byte ids)."""
    if not a.cli:
        outs = []
        with tempfile.TemporaryDirectory() as tmp:
            for name in texts:
                ids = os.path.join(tmp, "ids.txt")
                with open(os.path.join(texts_dir, name), "rb") as f, open(ids, "w") as g:
                    g.write(" ".join(str(b) for b in f.read()))
                outs.append(dump(a.dump, base, ids, [adapter]))
        return outs
    cmd = [a.cli, "-m", base, "--adapter", adapter, "--pooling", "none",
           "--no-normalize", "-t", "2", "-o", "jsonl"] + [os.path.join(texts_dir, x) for x in texts]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    check(r.returncode == 0, f"spectral-embed --adapter {os.path.basename(adapter)}: exit {r.returncode} "
          f"{r.stderr.strip()}")
    if r.returncode:
        return None
    return [np.array(json.loads(line)["embeddings"], dtype=np.float64)
            for line in r.stdout.strip().split("\n")]


def test_seed(a, fx, man):
    import reference
    base = os.path.join(a.data, "seed", "model.gguf")
    texts_dir = os.path.join(a.data, "seed", "texts")
    texts = sorted(os.listdir(texts_dir))
    adapter = os.path.join(fx, man["adapter"])
    for scale in man["scales"]:
        m = reference.load_gguf(base)
        targets = apply_adapter_numpy(m, adapter, scale)
        peft_ref = np.load(os.path.join(fx, man["expected"][str(scale)]))
        outs = run_seed_texts(a, base, f"{adapter}:{scale}", texts_dir, texts)
        if outs is None:
            continue
        worst_np = worst_peft = 0.0
        for got, name in zip(outs, texts):
            with open(os.path.join(texts_dir, name), "rb") as f:
                ref = reference.forward(m, reference.tokenize(m, f.read()))
            worst_np = max(worst_np, rel_err(got, ref))
            worst_peft = max(worst_peft, rel_err(got, peft_ref[name].astype(np.float64)))
        # how far the adapter moves the reference itself (so the checks can fail)
        plain = reference.load_gguf(base)
        with open(os.path.join(texts_dir, texts[-1]), "rb") as f:
            toks = reference.tokenize(plain, f.read())
        moved = rel_err(reference.forward(plain, toks), reference.forward(m, toks))
        check(worst_np <= TOL_SEED, f"spectralmlp scale {scale} ({len(targets)} targets, {len(texts)} texts): "
              f"vs numpy reference + numpy delta_W, worst rel err {worst_np:.3g}")
        check(worst_peft <= TOL_SEED, f"spectralmlp scale {scale}: vs peft's merged seed model, "
              f"worst rel err {worst_peft:.3g}")
        check(moved > 100 * TOL_SEED, f"spectralmlp scale {scale}: the adapter moves the reference by {moved:.3g}")


def gguf_contents(path):
    import gguf
    r = gguf.GGUFReader(path)
    keys = {k: f.contents() for k, f in r.fields.items() if not k.startswith("GGUF.")}
    tensors = {t.name: (t.tensor_type.name, np.array(t.data).tobytes()) for t in r.tensors}
    return keys, tensors


def write_safetensors(path, tensors):
    header, blobs, off = {}, [], 0
    for k, v in tensors.items():
        b = np.ascontiguousarray(v, dtype="<f4").tobytes()
        header[k] = dict(dtype="F32", shape=list(v.shape), data_offsets=[off, off + len(b)])
        blobs.append(b)
        off += len(b)
    h = json.dumps(header).encode()
    with open(path, "wb") as f:
        f.write(len(h).to_bytes(8, "little") + h + b"".join(blobs))


def test_converter(a, fx, man_all):
    import convert_fourierft as cf
    from checkpoint import read_safetensors
    conv = os.path.join(ROOT, "tools", "convert", "convert_fourierft.py")
    with tempfile.TemporaryDirectory() as tmp:
        for key, basefile in (("fnet", os.path.join(a.data, "fnet", "model.gguf")),
                              ("seed", os.path.join(a.data, "seed", "model.gguf"))):
            man = man_all[key]
            out = os.path.join(tmp, key + ".gguf")
            name = gguf_contents(os.path.join(fx, man["adapter"]))[0]["general.name"]
            r = subprocess.run([sys.executable, conv, os.path.join(fx, man["adapter_dir"]), "--base", basefile,
                                "-o", out, "--no-torch-check", "--name", name],
                               capture_output=True, text=True, timeout=120)
            check(r.returncode == 0, f"convert {key}: exit {r.returncode} {r.stderr.strip()}")
            if r.returncode:
                continue
            got, want = gguf_contents(out), gguf_contents(os.path.join(fx, man["adapter"]))
            same_keys = {k: str(v) for k, v in got[0].items()} == {k: str(v) for k, v in want[0].items()}
            check(same_keys and got[1] == want[1],
                  f"convert {key}: same keys and tensors as the committed {man['adapter']} "
                  f"({len(got[1])} tensors)")
        # the generator alone, against values torch 2.x printed (torch.randperm(n,
        # generator=torch.Generator().manual_seed(seed))[:5]; also checked by the fixture script)
        check(list(cf.randperm_prefix(10, 5, 0)) == [4, 1, 7, 5, 3] and
              list(cf.randperm_prefix(8192, 5, 777)) == [6247, 1863, 5373, 7517, 6859],
              "randperm_prefix matches torch.randperm")
        # refusals
        src = os.path.join(fx, man_all["fnet"]["adapter_dir"])
        cfg = json.load(open(os.path.join(src, "adapter_config.json")))
        sd = read_safetensors(os.path.join(src, "adapter_model.safetensors"))
        v = next(iter(sd.values()))
        cases = [
            ("unsupported module", cfg, {"base_model.model.encoder.layer.0.fourier.output.fourierft_spectrum": v},
             "target module encoder.layer.0.fourier.output is not supported"),
            ("trained bias", dict(cfg, bias="all"), sd, "bias = 'all'"),
            ("lora", dict(cfg, peft_type="LORA"), sd, "peft_type 'LORA' is not FOURIERFT"),
            ("extra tensor", cfg, dict(sd, **{"base_model.model.pooler.dense.bias": np.zeros(64, np.float32)}),
             "unexpected tensor base_model.model.pooler.dense.bias"),
            ("too many coefficients", cfg,
             {"base_model.model.pooler.dense.fourierft_spectrum": np.ones(64 * 64 + 1, np.float32)},
             "4097 coefficients for a 64 x 64 matrix"),
        ]
        for what, c, tensors, msg in cases:
            d = os.path.join(tmp, "bad")
            shutil.rmtree(d, ignore_errors=True)
            os.makedirs(d)
            json.dump(c, open(os.path.join(d, "adapter_config.json"), "w"))
            write_safetensors(os.path.join(d, "adapter_model.safetensors"), tensors)
            r = subprocess.run([sys.executable, conv, d, "--base", os.path.join(a.data, "fnet", "model.gguf"),
                                "-o", os.path.join(tmp, "bad.gguf"), "--no-torch-check"],
                               capture_output=True, text=True, timeout=120)
            check(r.returncode == 2 and msg in r.stderr, f"converter refuses {what}: exit {r.returncode}, "
                  f"{r.stderr.strip()!r}")
        # an fnet adapter converted against the spectralmlp base: its modules are not targets there
        r = subprocess.run([sys.executable, conv, src, "--base", os.path.join(a.data, "seed", "model.gguf"),
                            "-o", os.path.join(tmp, "bad.gguf"), "--no-torch-check"],
                           capture_output=True, text=True, timeout=120)
        check(r.returncode == 2 and "not supported for spectralmlp" in r.stderr,
              f"converter refuses fnet modules on a spectralmlp base: {r.stderr.strip()[:200]!r}")


def test_cli_errors(a, fx, man_all):
    if not a.cli:
        return
    seed = os.path.join(a.data, "seed", "model.gguf")
    txt = os.path.join(a.data, "seed", "texts", "t02_short.txt")
    cases = [
        ([os.path.join(fx, "missing.gguf")], "cannot open adapter"),
        ([os.path.join(fx, man_all["fnet"]["adapter"])], "is for architecture 'fnet', the model is 'spectralmlp'"),
        ([os.path.join(fx, man_all["seed"]["adapter"]) + ":inf"], "scale must be a finite number"),
        ([os.path.join(a.data, "fnet", "model.gguf")], "not an adapter"),
    ]
    for ads, msg in cases:
        cmd = [a.cli, "-m", seed, txt]
        for x in ads:
            cmd += ["--adapter", x]
        r = subprocess.run(cmd, capture_output=True, text=True, timeout=60)
        check(r.returncode == 2 and msg in r.stderr and not r.stdout,
              f"spectral-embed --adapter {os.path.basename(ads[0])}: exit {r.returncode}, {r.stderr.strip()!r}")
    r = subprocess.run([a.cli, "--help"], capture_output=True, text=True, timeout=60)
    check("--adapter FILE[:SCALE]" in r.stdout, "spectral-embed --help documents --adapter")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--dump", required=True, help="the test_adapter program")
    ap.add_argument("--cli", default=None, help="spectral-embed")
    ap.add_argument("--data", default=os.path.join(HERE, "data"))
    ap.add_argument("--backend", default="cpu", choices=["cpu", "cuda"],
                    help="cuda: only the fnet parity, through the CUDA backend (77 = skip without one)")
    a = ap.parse_args(argv)
    global BACKEND
    BACKEND = a.backend
    fx = os.path.join(a.data, "fourierft")
    with open(os.path.join(fx, "manifest.json")) as f:
        man = json.load(f)
    parts = [("fnet", lambda: test_fnet(a, fx, man["fnet"]))]
    if a.backend == "cpu":
        parts += [("spectralmlp", lambda: test_seed(a, fx, man["seed"])),
                  ("converter", lambda: test_converter(a, fx, man)),
                  ("cli", lambda: test_cli_errors(a, fx, man))]
    for name, fn in parts:
        try:
            fn()
        except Skip as e:
            print(f"SKIP: {e}")
            return SKIP
        except Exception as e:  # report and go on with the other parts
            harness.fail(f"{name}: {type(e).__name__}: {e}")
    return harness.report("test_adapter")


if __name__ == "__main__":
    sys.exit(main())
