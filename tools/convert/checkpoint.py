#!/usr/bin/env python3
"""Reading what training code saves, for every converter: PyTorch state dicts (.pt/.bin,
needs torch), numpy .npz, and .safetensors files (read here with numpy alone), and the
Hugging Face checkpoint directory that holds them with its JSON config.
Every tensor comes back as a float32 numpy array; every problem as a ConvertError."""
from __future__ import annotations

import json
import os
import struct

import numpy as np


class ConvertError(Exception):
    """A checkpoint this converter cannot turn into a model; the message says why."""


# Integer tensors a checkpoint may hold besides its weights (index buffers).
INDEX_DTYPES = {"I64": "<i8", "I32": "<i4", "I16": "<i2", "I8": "i1", "U8": "u1", "BOOL": "u1"}


def read_safetensors(path: str) -> dict:
    """{name: float32 numpy array} from a .safetensors file (F32, F16 or BF16)."""
    with open(path, "rb") as f:
        raw = f.read()
    if len(raw) < 8:
        raise ConvertError(f"{path}: too short for a safetensors file")
    (hlen,) = struct.unpack("<Q", raw[:8])
    if hlen > len(raw) - 8:
        raise ConvertError(f"{path}: header length {hlen} is past the end of the file")
    try:
        header = json.loads(raw[8:8 + hlen])
    except ValueError as e:
        raise ConvertError(f"{path}: bad header: {e}") from e
    data = raw[8 + hlen:]
    out = {}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        dt, shape, (a, b) = info.get("dtype"), info.get("shape"), info.get("data_offsets", (0, -1))
        if not (0 <= a <= b <= len(data)):
            raise ConvertError(f"{path}: tensor {name} lies outside the file")
        buf = data[a:b]
        if dt == "F32":
            v = np.frombuffer(buf, dtype="<f4")
        elif dt == "F16":
            v = np.frombuffer(buf, dtype="<f2").astype(np.float32)
        elif dt == "BF16":
            v = (np.frombuffer(buf, dtype="<u2").astype(np.uint32) << 16).view(np.float32)
        elif dt in INDEX_DTYPES:  # buffers such as position_ids, which converters drop
            v = np.frombuffer(buf, dtype=INDEX_DTYPES[dt])
        else:
            raise ConvertError(f"{path}: tensor {name} has dtype {dt} (supported: F32, F16, BF16, "
                               f"and integer buffers)")
        if v.size != int(np.prod(shape)):
            raise ConvertError(f"{path}: tensor {name}: {v.size} values for shape {shape}")
        out[name] = v.reshape(shape).astype(np.float32)
    return out


def read_torch(path: str) -> dict:
    """{name: float32 numpy array} from a torch.save file: a state dict, or a training
    checkpoint holding one under "state_dict", "model" or "model_state_dict"."""
    try:
        import torch
    except ImportError as e:  # pragma: no cover
        raise ConvertError(f"{path}: reading a PyTorch file needs torch ({e}); "
                           "or save the state dict as .npz or .safetensors") from e
    obj = torch.load(path, map_location="cpu", weights_only=True)
    if isinstance(obj, dict) and not any(hasattr(v, "shape") for v in obj.values()):
        for k in ("state_dict", "model", "model_state_dict"):
            if k in obj and isinstance(obj[k], dict):
                obj = obj[k]
                break
    if not isinstance(obj, dict):
        raise ConvertError(f"{path}: not a state dict")
    out = {}
    for k, v in obj.items():
        if not hasattr(v, "detach"):
            raise ConvertError(f"{path}: entry {k!r} is not a tensor")
        out[k] = v.detach().to(torch.float32).cpu().numpy()
    return out


def read_state_dict(path: str) -> dict:
    """A state dict file by its extension: .npz, .safetensors, else torch.save's format."""
    if path.endswith(".npz"):
        with np.load(path) as z:
            return {k: np.asarray(z[k], dtype=np.float32) for k in z.files}
    if path.endswith(".safetensors"):
        return read_safetensors(path)
    return read_torch(path)


def read_checkpoint_dir(folder: str, config: str = "config.json",
                        weights: tuple = ("model.safetensors", "pytorch_model.bin")) -> tuple[dict, dict]:
    """-> (the JSON config, the state dict) of a Hugging Face style directory: `config`, and
    the first of `weights` that exists there."""
    cfg_path = os.path.join(folder, config)
    try:
        with open(cfg_path, encoding="utf-8") as f:
            cfg = json.load(f)
    except (OSError, ValueError) as e:
        raise ConvertError(f"{cfg_path}: {e}") from e
    for name in weights:
        path = os.path.join(folder, name)
        if os.path.exists(path):
            return cfg, read_state_dict(path)
    raise ConvertError(f"{folder}: none of {', '.join(weights)}")
