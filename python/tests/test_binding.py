"""The ctypes declarations (spectral/_lib.py) against runtime/spectral.h, read as text:
every function the binding declares is in the header with that number of
parameters, and the parameter structs have the header's fields in the header's
order. (The header may have functions the binding does not use yet.)"""

import re

import spectral._lib as L
from conftest import ROOT


def header():
    text = (ROOT / "runtime" / "spectral.h").read_text()
    text = re.sub(r"/\*.*?\*/", " ", text, flags=re.S)
    return re.sub(r"//[^\n]*", " ", text)


def test_declared_functions_match_the_header():
    decls = {}
    for m in re.finditer(r"\b(spectral_\w+)\s*\(([^;{]*?)\)\s*;", header()):
        name, params = m.group(1), m.group(2).strip()
        if "(*" in params or name.endswith("_callback"):
            continue
        decls[name] = 0 if params in ("", "void") else params.count(",") + 1
    assert decls, "no declarations found in spectral.h"
    assert set(L.PROTOTYPES) <= set(decls), set(L.PROTOTYPES) - set(decls)
    for name, (_, argtypes) in L.PROTOTYPES.items():
        assert len(argtypes) == decls[name], name


def test_struct_fields_in_order():
    h = header()
    for struct, cls in (("spectral_model_params", L.ModelParams),
                        ("spectral_context_params", L.ContextParams),
                        ("spectral_tokenize_params", L.TokenizeParams)):
        body = re.search(r"typedef struct\s*\{([^}]*)\}\s*" + struct + r"\s*;", h).group(1)
        fields = re.findall(r"(\w+)\s*;", body)
        assert fields == [f[0] for f in cls._fields_], struct


def test_enum_values():
    h = header()
    for name, value in re.findall(r"\bSPECTRAL_((?:ERR|POOLING|BACKEND)_\w+|OK)\s*=\s*(-?\d+)", h):
        assert getattr(L, name) == int(value), name
