"""Model.encode: sentence-transformers' encode() on the spectral model, and its progress bar.

What each argument means is sentence-transformers' (SentenceTransformer.encode, 5.x/6.x);
where spectral departs, docs/python.md says so and a test below pins it."""

import logging
import sys
import types

import numpy as np
import pytest

import spectral
from conftest import DEFAULT_MODEL, same_bits

TEXTS = ["The spectral encoder reads whole documents.", "A second, shorter one.", "x",
         "Fourier mixing along the sequence, then an MLP per token. " * 20, "café naïve 日本語"]


@pytest.fixture(scope="module")
def model():
    with spectral.Model(DEFAULT_MODEL, n_threads=2) as m:
        yield m


def test_same_vectors_as_embed(model):
    want = model.embed(TEXTS)
    got = model.encode(TEXTS)
    assert isinstance(got, np.ndarray) and got.dtype == np.float32 and got.shape == (5, model.n_pooled)
    assert same_bits(got, want)
    # batching changes nothing: the library's results are the same in any packing
    for bs in (1, 2, 1000):
        assert same_bits(model.encode(TEXTS, batch_size=bs), want), bs
    # a single string gives one vector, a list of one a 1 x D array
    assert same_bits(model.encode(TEXTS[0]), want[0]) and model.encode(TEXTS[0]).ndim == 1
    assert model.encode(TEXTS[:1]).shape == (1, model.n_pooled)
    assert model.encode([]).shape == (0, model.n_pooled)
    # sentence-transformers 5's name for the first argument
    assert same_bits(model.encode(inputs=TEXTS), want)
    # normalize_embeddings: the model's output is unit length already (as a sentence-transformers
    # model ending in a Normalize module); asking again changes nothing
    assert same_bits(model.encode(TEXTS, normalize_embeddings=True), want)
    assert np.allclose(np.linalg.norm(got, axis=1), 1, atol=1e-6)


def test_prompt_truncate_dim_and_token_embeddings(model):
    assert same_bits(model.encode(TEXTS, prompt="query: "), model.embed(["query: " + t for t in TEXTS]))
    with pytest.raises(ValueError, match="prompt"):
        model.encode(TEXTS, prompt_name="query")  # this model has no named prompts
    # truncate_dim: the model's length, or its dense part alone made unit length again
    # (what the server's 'dimensions' gives)
    full = model.embed(TEXTS)
    assert same_bits(model.encode(TEXTS, truncate_dim=model.n_pooled), full)
    dense = model.encode(TEXTS, truncate_dim=model.n_embd)
    ref = full[:, :model.n_embd].astype(np.float64)
    ref /= np.linalg.norm(ref, axis=1, keepdims=True)
    assert dense.shape == (5, model.n_embd) and np.allclose(dense, ref, rtol=0, atol=1e-6)
    with pytest.raises(ValueError, match="dimensions 384, 1408"):
        model.encode(TEXTS, truncate_dim=128)  # not a Matryoshka model: any other cut is refused
    # what the embedding is made of (the default model: 384 dense values, then a 1,024-value
    # sketch at weight 2), and the lengths truncate_dim takes, as spectral-embed -v says
    assert (model.n_lexical, model.lexical_scale) == (model.n_pooled - model.n_embd, 2.0)
    assert model.dimensions == (model.n_embd, model.n_pooled)
    # token embeddings: one (T, n_embd) array per input
    states = model.encode(TEXTS[:2], output_value="token_embeddings")
    assert isinstance(states, list) and len(states) == 2
    for s, t in zip(states, TEXTS[:2]):
        assert same_bits(s, model.token_states(t))
    assert same_bits(model.encode(TEXTS[0], output_value="token_embeddings"), states[0])


def test_refused_with_clear_errors(model):
    for kw, match in (({"precision": "int8"}, "float32"), ({"precision": "binary"}, "float32"),
                      ({"precision": "float64"}, "precision"), ({"batch_size": 0}, "batch_size"),
                      ({"output_value": None}, "output_value"), ({"output_value": "logits"}, "output_value"),
                      ({"device": "cuda"}, "device"), ({"device": ["cpu", "cpu"]}, "device"),
                      ({"pool": {"processes": []}}, "pool")):
        with pytest.raises(ValueError, match=match):
            model.encode(TEXTS, **kw)
    assert same_bits(model.encode(TEXTS, device="cpu"), model.embed(TEXTS))
    with pytest.raises(TypeError):
        model.encode({"a": 1})
    with pytest.raises(TypeError):
        model.encode()
    with pytest.raises(TypeError):
        model.encode(TEXTS, inputs=TEXTS)


def test_torch_outputs(model, monkeypatch):
    want = model.embed(TEXTS)
    monkeypatch.setitem(sys.modules, "torch", None)  # as if PyTorch were not installed
    for kw in ({"convert_to_tensor": True}, {"convert_to_numpy": False}):
        with pytest.raises(ImportError, match="torch"):
            model.encode(TEXTS, **kw)
    monkeypatch.undo()
    torch = pytest.importorskip("torch")
    t = model.encode(TEXTS, convert_to_tensor=True)
    assert isinstance(t, torch.Tensor) and t.dtype == torch.float32 and same_bits(t.numpy(), want)
    assert model.encode(TEXTS[0], convert_to_tensor=True).shape == (model.n_pooled,)
    rows = model.encode(TEXTS, convert_to_numpy=False)  # a list of 1-D tensors
    assert isinstance(rows, list) and all(isinstance(r, torch.Tensor) for r in rows)
    assert same_bits(np.stack([r.numpy() for r in rows]), want)


class FakeBar:
    """Stands in for tqdm: records what the bar was told."""

    made = []

    def __init__(self, total=None, desc=None, **kw):
        self.total, self.desc, self.n, self.closed = total, desc, 0, False
        FakeBar.made.append(self)

    def update(self, n=1):
        self.n += n

    def close(self):
        self.closed = True


@pytest.fixture
def fake_tqdm(monkeypatch):
    FakeBar.made = []
    auto = types.ModuleType("tqdm.auto")
    auto.tqdm = FakeBar
    monkeypatch.setitem(sys.modules, "tqdm.auto", auto)
    return FakeBar.made


def test_progress_bar(model, fake_tqdm, monkeypatch, capsys):
    texts = [f"document {i}" for i in range(10)]
    model.encode(texts, batch_size=4, show_progress_bar=True)
    assert len(fake_tqdm) == 1
    bar = fake_tqdm[0]
    assert (bar.total, bar.n, bar.closed, bar.desc) == (3, 3, True, "Batches")  # ceil(10 / 4) batches
    model.encode(texts, batch_size=4)  # None: as sentence-transformers, only when logging INFO or DEBUG
    assert len(fake_tqdm) == 1
    monkeypatch.setattr(logging.getLogger("spectral"), "level", logging.INFO)
    model.encode(texts, batch_size=4)
    assert len(fake_tqdm) == 2
    model.encode(texts, show_progress_bar=False)
    assert len(fake_tqdm) == 2
    # without tqdm: no bar, no complaint
    monkeypatch.setitem(sys.modules, "tqdm.auto", None)
    monkeypatch.setitem(sys.modules, "tqdm", None)
    capsys.readouterr()
    assert same_bits(model.encode(texts, show_progress_bar=True), model.embed(texts))
    assert capsys.readouterr().err == ""


def test_progress_bar_with_real_tqdm(model, capsys):
    pytest.importorskip("tqdm")
    model.encode(["one", "two", "three"], batch_size=1, show_progress_bar=True)
    err = capsys.readouterr().err
    assert "Batches" in err and "3/3" in err, err
