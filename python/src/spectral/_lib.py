"""ctypes declarations of runtime/spectral.h, the library's only public header.

Why ctypes (docs/python.md): the package needs no compiler or Python headers
beyond what builds the C library, one wheel serves every CPython 3, and
ctypes releases the GIL for the whole of every foreign call, so threads that
encode on different contexts run in parallel. Nothing is compiled against
the header, so python/tests/test_binding.py checks each prototype below
against it.

The shared library is found next to this file (the wheel puts it there), or
at $SPECTRAL_LIBRARY when that is set (a build tree's libspectral.so).
"""

from __future__ import annotations

import ctypes
import os
from pathlib import Path

# spectral_status
OK = 0
ERR_INVALID_ARGUMENT = 1
ERR_IO = 2
ERR_FORMAT = 3
ERR_MODEL = 4
ERR_MEMORY_LIMIT = 5
ERR_OUT_OF_MEMORY = 6
ERR_BACKEND = 7
ERR_UNSUPPORTED = 8
ERR_STOPPED = 9
ERR_NUMERIC = 10

# spectral_backend
BACKEND_CPU = 0
BACKEND_CUDA = 1

# spectral_dtype
DTYPE_AUTO = 0
DTYPE_F32 = 1
DTYPE_BF16 = 2

# spectral_pooling (llama.cpp's numbering)
POOLING_UNSPECIFIED = -1
POOLING_NONE = 0
POOLING_MEAN = 1
POOLING_CLS = 2
POOLING_LAST = 3


class ModelParams(ctypes.Structure):
    _fields_ = [("use_mmap", ctypes.c_bool)]


class ContextParams(ctypes.Structure):
    # C enums are int-sized on every ABI this library builds for.
    _fields_ = [
        ("n_threads", ctypes.c_int),
        ("backend", ctypes.c_int),
        ("device", ctypes.c_int),
        ("mem_limit", ctypes.c_size_t),
        ("pooling", ctypes.c_int),
        ("normalize", ctypes.c_bool),
        ("batch_tokens", ctypes.c_int64),
        ("dtype", ctypes.c_int),
        ("no_pad", ctypes.c_bool),
    ]


class TokenizeParams(ctypes.Structure):
    _fields_ = [("add_special", ctypes.c_bool), ("max_tokens", ctypes.c_int64)]


model_p = ctypes.c_void_p
context_p = ctypes.c_void_p
f32_p = ctypes.POINTER(ctypes.c_float)
i32_p = ctypes.POINTER(ctypes.c_int32)
i64_p = ctypes.POINTER(ctypes.c_int64)

# int (*)(spectral_context *, int64_t doc_index, spectral_status, void *user)
DocCallback = ctypes.CFUNCTYPE(ctypes.c_int, context_p, ctypes.c_int64, ctypes.c_int, ctypes.c_void_p)

# name: (restype, argtypes)
PROTOTYPES = {
    "spectral_version": (ctypes.c_char_p, []),
    "spectral_status_string": (ctypes.c_char_p, [ctypes.c_int]),
    "spectral_last_error": (ctypes.c_char_p, []),
    "spectral_backend_available": (ctypes.c_bool, [ctypes.c_int]),
    "spectral_model_default_params": (ModelParams, []),
    "spectral_model_load": (ctypes.c_int, [ctypes.c_char_p, ModelParams, ctypes.POINTER(model_p)]),
    "spectral_model_free": (None, [model_p]),
    "spectral_model_arch": (ctypes.c_char_p, [model_p]),
    "spectral_model_name": (ctypes.c_char_p, [model_p]),
    "spectral_model_n_embd": (ctypes.c_int32, [model_p]),
    "spectral_model_n_pooled": (ctypes.c_int32, [model_p]),
    "spectral_model_n_lexical": (ctypes.c_int32, [model_p]),
    "spectral_model_lexical_scale": (ctypes.c_float, [model_p]),
    "spectral_model_dense_prefixes": (ctypes.c_int32, [model_p, ctypes.POINTER(ctypes.c_int32), ctypes.c_int32]),
    "spectral_model_n_layer": (ctypes.c_int32, [model_p]),
    "spectral_model_n_vocab": (ctypes.c_int32, [model_p]),
    "spectral_model_n_ctx_train": (ctypes.c_int32, [model_p]),
    "spectral_model_max_tokens": (ctypes.c_int64, [model_p]),
    "spectral_model_pooling": (ctypes.c_int, [model_p]),
    "spectral_model_n_params": (ctypes.c_uint64, [model_p]),
    "spectral_tokenize": (ctypes.c_int64, [model_p, ctypes.c_char_p, ctypes.c_size_t, i32_p, ctypes.c_int64]),
    "spectral_tokenize_default_params": (TokenizeParams, []),
    "spectral_tokenize_with": (
        ctypes.c_int64, [model_p, ctypes.c_char_p, ctypes.c_size_t, TokenizeParams, i32_p, ctypes.c_int64]),
    "spectral_context_default_params": (ContextParams, []),
    "spectral_context_create": (ctypes.c_int, [model_p, ContextParams, ctypes.POINTER(context_p)]),
    "spectral_context_free": (None, [context_p]),
    "spectral_context_memory_needed": (ctypes.c_size_t, [context_p, ctypes.c_int64]),
    "spectral_context_memory_minimum": (ctypes.c_size_t, [context_p, ctypes.c_int64]),
    "spectral_context_peak_memory": (ctypes.c_size_t, [context_p]),
    "spectral_context_pooling": (ctypes.c_int, [context_p]),
    "spectral_encode": (ctypes.c_int, [context_p, i32_p, ctypes.c_int64]),
    "spectral_get_embedding": (f32_p, [context_p]),
    "spectral_get_token_states": (f32_p, [context_p, i64_p]),
    "spectral_encode_batch": (
        ctypes.c_int,
        [context_p, ctypes.POINTER(i32_p), i64_p, ctypes.c_int64, DocCallback, ctypes.c_void_p],
    ),
}


def library_path() -> Path:
    env = os.environ.get("SPECTRAL_LIBRARY")
    if env:
        return Path(env)
    return Path(__file__).resolve().parent / "libspectral.so"


def _load() -> ctypes.CDLL:
    path = library_path()
    try:
        # CDLL, not PyDLL: every call releases the GIL.
        lib = ctypes.CDLL(str(path))
    except OSError as e:
        raise ImportError(
            f"spectral: cannot load the C library {path}: {e} "
            "(install the package with pip, or set SPECTRAL_LIBRARY to a libspectral.so)"
        ) from e
    for name, (restype, argtypes) in PROTOTYPES.items():
        fn = getattr(lib, name)
        fn.restype = restype
        fn.argtypes = argtypes
    return lib


lib = _load()
