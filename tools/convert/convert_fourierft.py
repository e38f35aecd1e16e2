#!/usr/bin/env python3
"""Convert a Hugging Face `peft` FOURIERFT adapter directory to a GGUF adapter file.

    python3 tools/convert/convert_fourierft.py ADAPTER_DIR --base BASE.gguf -o adapter.gguf [--name NAME]

ADAPTER_DIR is what peft's save_pretrained writes: adapter_config.json and
adapter_model.safetensors (read here with numpy alone; adapter_model.bin needs
torch). BASE.gguf is the converted base model (tools/convert/convert_fnet.py or
tools/convert/convert_seed.py): it gives the architecture and the (out, in) shape of
every target, which peft's locations depend on. Needs numpy and gguf; torch is
optional (when present the locations are also checked against torch itself).

peft (src/peft/tuners/fourierft/layer.py) does, per target nn.Linear of
weight W (out x in):

    idx     = torch.randperm(out * in, generator=torch.Generator().manual_seed(random_loc_seed))[:n]
    rows    = idx // in, cols = idx % in                       # peft's `indices`, (2, n)
    S       = zeros(out, in); S[rows, cols] = fourierft_spectrum   # real
    delta_W = Re(ifft2(S)) * scaling                            # merged: W + delta_W

The locations are not in the saved adapter (peft redraws them), so they are
redrawn here exactly as torch does: torch's CPU randperm is a Fisher-Yates
shuffle driven by mt19937 seeded with the low 32 bits of the seed (the same
generator as numpy's legacy RandomState), step i swapping r[i] with
r[i + u32 % (N - i)]. Only the first n steps decide the first n entries, so
drawing them costs O(n), not O(out * in). The file stores them, so the runtime
needs neither torch nor this generator.

Targets (peft module name, after the `base_model.model.` prefix and an optional
`fnet.` prefix -> base GGUF tensor):

    fnet         embeddings.projection               -> token_embd_proj.weight
                 encoder.layer.N.intermediate.dense  -> blk.N.ffn_up.weight
                 encoder.layer.N.output.dense        -> blk.N.ffn_down.weight
                 pooler.dense                        -> pooler.weight
    spectralmlp  blocks.N.mlp.0                      -> blk.N.ffn_up.weight
                 blocks.N.mlp.3                      -> blk.N.ffn_down.weight

Anything else (another module, trained biases `bias != "none"`,
`modules_to_save`, a non-FOURIERFT adapter) is refused with its name.

Output (names pinned in docs/adapters.md): general.architecture = the base's,
general.type = "adapter", adapter.type = "fourierft", adapter.fourierft.scaling
(f32), adapter.fourierft.random_loc_seed (i64, for the record),
adapter.fourierft.targets (string array) and adapter.fourierft.shapes (u32
array, out and in per target), and per target T:

    T.fourierft_spectrum   F32, ggml shape [n]      the coefficients
    T.fourierft_indices    I32, ggml shape [n, 2]   peft's (2, n) indices: rows, then columns

Every problem is listed and the exit status is 2.
"""
from __future__ import annotations

import argparse
import re
import sys

import numpy as np

from checkpoint import ConvertError, read_checkpoint_dir
from gguf_tensors import finish

PREFIX = "base_model.model."
SUFFIX = ".fourierft_spectrum"

# (regex over the peft module name, GGUF tensor name template) per architecture
TARGETS = {
    "fnet": [
        (re.compile(r"embeddings\.projection"), "token_embd_proj.weight"),
        (re.compile(r"encoder\.layer\.(\d+)\.intermediate\.dense"), "blk.{0}.ffn_up.weight"),
        (re.compile(r"encoder\.layer\.(\d+)\.output\.dense"), "blk.{0}.ffn_down.weight"),
        (re.compile(r"pooler\.dense"), "pooler.weight"),
    ],
    "spectralmlp": [
        (re.compile(r"blocks\.(\d+)\.mlp\.0"), "blk.{0}.ffn_up.weight"),
        (re.compile(r"blocks\.(\d+)\.mlp\.3"), "blk.{0}.ffn_down.weight"),
    ],
}


def randperm_prefix(n: int, k: int, seed: int) -> np.ndarray:
    """The first k entries of torch.randperm(n, generator=torch.Generator().manual_seed(seed))
    (CPU, n < 2**32 / 20, torch's path for every weight matrix we can hold)."""
    if not 0 < k <= n:
        raise ConvertError(f"n_frequency {k} must be in [1, {n}]")
    if n >= (2**32 - 1) // 20:
        raise ConvertError(f"{n} locations: torch draws these with another algorithm (not supported)")
    draws = np.random.RandomState(seed & 0xFFFFFFFF).randint(0, 2**32, size=k, dtype=np.uint32)
    moved = {}  # the few positions the shuffle has written so far
    out = np.empty(k, dtype=np.int64)
    for i in range(k):
        z = i + int(draws[i]) % (n - i)
        vi, vz = moved.get(i, i), moved.get(z, z)
        moved[z] = vi
        out[i] = vz
    return out


def load_adapter(adir: str) -> tuple[dict, dict]:
    return read_checkpoint_dir(adir, "adapter_config.json",
                               ("adapter_model.safetensors", "adapter_model.bin"))


def read_base(path: str) -> tuple[str, dict]:
    """-> (general.architecture, {tensor name: numpy-order shape})."""
    import gguf
    try:
        r = gguf.GGUFReader(path)
    except Exception as e:  # the reader raises many kinds on a bad file
        raise ConvertError(f"{path}: cannot read as GGUF: {e}") from e
    f = r.fields.get("general.architecture")
    if f is None:
        raise ConvertError(f"{path}: no general.architecture key")
    arch = bytes(f.parts[f.data[0]]).decode()
    shapes = {t.name: tuple(int(n) for n in reversed(t.shape)) for t in r.tensors}
    return arch, shapes


def convert_tensors(cfg: dict, sd: dict, arch: str, shapes: dict, check_torch: bool = True):
    """-> (scaling, seed, [(target, (out, in), spectrum f32 (n,), indices i32 (2, n))]).
    Raises ConvertError listing every problem."""
    problems = []
    if cfg.get("peft_type") != "FOURIERFT":
        raise ConvertError(f"adapter_config.json: peft_type {cfg.get('peft_type')!r} is not FOURIERFT")
    if arch not in TARGETS:
        raise ConvertError(f"base architecture {arch!r} has no FourierFT targets "
                           f"(supported: {', '.join(TARGETS)})")
    if cfg.get("bias", "none") != "none":
        problems.append(f"adapter_config.json: bias = {cfg.get('bias')!r} trains biases; "
                        "only bias = 'none' is supported")
    if cfg.get("modules_to_save"):
        problems.append(f"adapter_config.json: modules_to_save = {cfg['modules_to_save']!r} "
                        "(whole modules) is not supported")
    scaling = cfg.get("scaling")
    if not isinstance(scaling, (int, float)) or isinstance(scaling, bool) or not np.isfinite(scaling):
        problems.append(f"adapter_config.json: scaling must be a number (got {scaling!r})")
        scaling = 0.0
    seed = cfg.get("random_loc_seed")
    if not isinstance(seed, int) or isinstance(seed, bool):
        problems.append(f"adapter_config.json: random_loc_seed must be an integer (got {seed!r})")
        seed = 0
    if cfg.get("fan_in_fan_out"):
        # peft resets it to False for nn.Linear, and every target we accept is one.
        print("warning: fan_in_fan_out = true is ignored for Linear layers (as peft does)",
              file=sys.stderr)
    torch = None
    if check_torch:
        try:
            import torch  # noqa: F811
        except ImportError:
            torch = None
    out = []
    for key in sorted(sd):
        if not key.endswith(SUFFIX) or not key.startswith(PREFIX):
            problems.append(f"unexpected tensor {key} (only *.fourierft_spectrum is supported)")
            continue
        module = key[len(PREFIX):-len(SUFFIX)]
        if arch == "fnet" and module.startswith("fnet."):
            module = module[len("fnet."):]
        target = None
        for rx, tmpl in TARGETS[arch]:
            m = rx.fullmatch(module)
            if m:
                target = tmpl.format(*m.groups())
        if target is None:
            problems.append(f"target module {module} is not supported for {arch} "
                            f"(supported: {', '.join(rx.pattern for rx, _ in TARGETS[arch])})")
            continue
        if target not in shapes:
            problems.append(f"target module {module}: the base model has no tensor {target}")
            continue
        shp = shapes[target]
        spec = np.asarray(sd[key], dtype=np.float32).reshape(-1)
        if len(shp) != 2:
            problems.append(f"{target} is not a matrix in the base (shape {shp})")
            continue
        n_out, n_in = shp
        if not 0 < spec.size <= n_out * n_in:
            problems.append(f"{key}: {spec.size} coefficients for a {n_out} x {n_in} matrix")
            continue
        if not np.all(np.isfinite(spec)):
            problems.append(f"{key}: non-finite coefficients")
            continue
        try:
            flat = randperm_prefix(n_out * n_in, spec.size, seed)
        except ConvertError as e:
            problems.append(f"{key}: {e}")
            continue
        if torch is not None:
            ref = torch.randperm(n_out * n_in, generator=torch.Generator().manual_seed(seed))
            if not np.array_equal(ref[:spec.size].numpy(), flat):
                raise ConvertError(f"{key}: the redrawn locations differ from this torch's "
                                   f"randperm (torch {torch.__version__}); please report")
        idx = np.stack([flat // n_in, flat % n_in]).astype(np.int32)
        out.append((target, (n_out, n_in), spec, idx))
    if not out and not problems:
        problems.append("the adapter has no fourierft_spectrum tensors")
    if problems:
        raise ConvertError("\n".join(problems))
    return float(scaling), int(seed), out


def write_gguf(path: str, arch: str, scaling: float, seed: int, targets: list, name: str | None):
    import gguf
    w = gguf.GGUFWriter(path, arch)
    w.add_string("general.type", "adapter")
    if name:
        w.add_name(name)
    w.add_string("adapter.type", "fourierft")
    w.add_float32("adapter.fourierft.scaling", scaling)
    w.add_int64("adapter.fourierft.random_loc_seed", seed)
    w.add_array("adapter.fourierft.targets", [t for t, _, _, _ in targets])
    shapes = [int(d) for _, shp, _, _ in targets for d in shp]
    w.add_key_value("adapter.fourierft.shapes", shapes, gguf.GGUFValueType.ARRAY,
                    sub_type=gguf.GGUFValueType.UINT32)
    for t, _, spec, idx in targets:
        w.add_tensor(t + ".fourierft_spectrum", spec.astype(np.float32))
        w.add_tensor(t + ".fourierft_indices", np.ascontiguousarray(idx, dtype=np.int32))
    finish(w)


def convert(adapter_dir: str, base: str, output: str, *, name: str | None = None,
            check_torch: bool = True) -> list:
    cfg, sd = load_adapter(adapter_dir)
    arch, shapes = read_base(base)
    scaling, seed, targets = convert_tensors(cfg, sd, arch, shapes, check_torch)
    write_gguf(output, arch, scaling, seed, targets, name)
    return targets


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description="peft FOURIERFT adapter directory -> GGUF adapter")
    ap.add_argument("adapter_dir")
    ap.add_argument("--base", required=True, help="the base model's GGUF (architecture and shapes)")
    ap.add_argument("-o", "--output", required=True)
    ap.add_argument("--name", default=None, help="general.name of the adapter file")
    ap.add_argument("--no-torch-check", action="store_true",
                    help="do not check the locations against torch even when it is installed")
    a = ap.parse_args(argv)
    try:
        targets = convert(a.adapter_dir, a.base, a.output, name=a.name,
                          check_torch=not a.no_torch_check)
    except ConvertError as e:
        for line in str(e).split("\n"):
            print(f"convert_fourierft: {line}", file=sys.stderr)
        return 2
    n = sum(s.size for _, _, s, _ in targets)
    print(f"wrote {a.output}: {len(targets)} targets, {n} coefficients")
    return 0


if __name__ == "__main__":
    sys.exit(main())
