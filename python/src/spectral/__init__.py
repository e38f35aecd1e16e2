"""spectral: Python binding of the spectral inference runtime (runtime/spectral.h).

Usage:

    import spectral
    with spectral.Model("models/spectral-default.gguf", n_threads=2) as m:
        e = m.embed(["first document", "second document"])   # (2, m.n_pooled) float32
        t = m.tokenize("first document")                       # int32 token ids
        h = m.token_states("first document")                   # (len(t), m.n_embd)

Results are bit for bit those of the C library and of `spectral-embed` on the
same bytes with the same pooling and normalization.

Thread safety: a Model may be used from any number of threads at once. Each
call borrows a native context (created on first need, kept for reuse) and
runs without the GIL, so threads encode in parallel; every concurrent call
has its own activation arena, so mem_limit applies to each call separately.
close() (or leaving the `with` block) frees the native memory; a call still
running in another thread finishes first, the model is freed after it.

Errors: every library failure raises a SpectralError subclass carrying the
library's message (str(e), e.message) and status (e.status, e.status_name);
a document of a batch that failed also says which (e.index).
"""

from __future__ import annotations

import ctypes
import os
import threading
from typing import Iterable, List, NamedTuple, Optional, Sequence, Tuple, Union

import numpy as np

from . import _lib
from ._lib import lib as _c

__all__ = [
    "Model",
    "BatchResult",
    "SpectralError",
    "InvalidArgumentError",
    "SpectralIOError",
    "FormatError",
    "ModelError",
    "MemoryLimitError",
    "OutOfMemoryError",
    "BackendError",
    "UnsupportedError",
    "library_version",
    "backend_available",
    "parse_size",
]


Text = Union[str, bytes, bytearray, memoryview]
Pooling = Union[None, str, int]


# ---------------------------------------------------------------- errors


class SpectralError(Exception):
    """A failure reported by the library: `status` (spectral_status), its name, the message."""

    status: int = -1

    def __init__(self, message: str, status: Optional[int] = None, index: Optional[int] = None):
        super().__init__(message if index is None else f"document {index}: {message}")
        self.message = message  # the library's own words (spectral_last_error())
        if status is not None:
            self.status = status
        self.index = index  # the document of a batch this is about, if any

    @property
    def status_name(self) -> str:
        s = _c.spectral_status_string(self.status)
        return s.decode() if s else "unknown"


class InvalidArgumentError(SpectralError, ValueError):
    status = _lib.ERR_INVALID_ARGUMENT


class SpectralIOError(SpectralError, OSError):
    status = _lib.ERR_IO


class FormatError(SpectralError):
    status = _lib.ERR_FORMAT


class ModelError(SpectralError):
    status = _lib.ERR_MODEL


class MemoryLimitError(SpectralError, MemoryError):
    """The document needs more working memory (activations, FFT tables) than mem_limit."""

    status = _lib.ERR_MEMORY_LIMIT


class OutOfMemoryError(SpectralError, MemoryError):
    status = _lib.ERR_OUT_OF_MEMORY


class BackendError(SpectralError):
    status = _lib.ERR_BACKEND


class UnsupportedError(SpectralError):
    status = _lib.ERR_UNSUPPORTED


_ERRORS = {cls.status: cls for cls in (
    InvalidArgumentError, SpectralIOError, FormatError, ModelError, MemoryLimitError,
    OutOfMemoryError, BackendError, UnsupportedError)}


def _last_error(status: int) -> str:
    """This thread's spectral_last_error(), or the status's name when it is empty."""
    raw = _c.spectral_last_error()
    message = raw.decode("utf-8", "replace") if raw else ""
    return message or _c.spectral_status_string(status).decode()


def _error(status: int, index: Optional[int] = None, message: Optional[str] = None) -> SpectralError:
    """The exception for `status`, with this thread's spectral_last_error() as its message."""
    if message is None:
        message = _last_error(status)
    return _ERRORS.get(status, SpectralError)(message, status, index)


# ---------------------------------------------------------------- helpers


def _package_version() -> str:
    try:
        from importlib.metadata import version
        return version("spectral")
    except Exception:  # not installed (a source tree on PYTHONPATH): the C library's
        return _c.spectral_version().decode()


def library_version() -> str:
    """The C library's version string (spectral_version())."""
    return _c.spectral_version().decode()


def backend_available(device: str = "cuda") -> bool:
    """Whether this build can run `device` ("cpu", "cuda") on this machine."""
    return bool(_c.spectral_backend_available(_parse_device(device)[0]))


__version__ = _package_version()

_POOLING = {"none": _lib.POOLING_NONE, "mean": _lib.POOLING_MEAN, "cls": _lib.POOLING_CLS,
            "last": _lib.POOLING_LAST}
_POOLING_NAMES = {v: k for k, v in _POOLING.items()}


def _parse_pooling(pooling: Pooling) -> int:
    if pooling is None:
        return _lib.POOLING_UNSPECIFIED
    if isinstance(pooling, str):
        try:
            return _POOLING[pooling.lower()]
        except KeyError:
            raise ValueError(f"unknown pooling {pooling!r} (mean, cls, last, none)") from None
    if isinstance(pooling, int) and pooling in _POOLING_NAMES:
        return pooling
    raise ValueError(f"unknown pooling {pooling!r} (mean, cls, last, none)")


def _parse_device(device: str) -> Tuple[int, int]:
    name, _, ordinal = str(device).partition(":")
    if name == "cpu" and not ordinal:
        return _lib.BACKEND_CPU, 0
    if name == "cuda" and (not ordinal or ordinal.isdigit()):
        return _lib.BACKEND_CUDA, int(ordinal or 0)
    raise ValueError(f"unknown device {device!r} (cpu, cuda, cuda:N)")


_UNITS = {"": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30, "t": 1 << 40}


def parse_size(size: Union[None, int, str]) -> int:
    """Bytes from 536870912, "512M", "1.5G", "64KiB" (powers of 1024, as spectral-embed reads them)."""
    if size is None:
        return 0
    if isinstance(size, int) and not isinstance(size, bool):
        if size < 0:
            raise ValueError("a size must be >= 0")
        return size
    if not isinstance(size, str):
        raise TypeError(f"a size is an int or a string such as '512M', not {type(size).__name__}")
    s = size.strip()
    num = s.rstrip("bBiIkKmMgGtT")
    unit = s[len(num):].lower().replace("ib", "").rstrip("b")
    try:
        v = float(num)
        mul = _UNITS[unit]
    except (ValueError, KeyError):
        raise ValueError(f"not a size: {size!r} (e.g. 512M, 2G, 65536)") from None
    if not v > 0 or (mul == 1 and v != int(v)):
        raise ValueError(f"not a size: {size!r} (e.g. 512M, 2G, 65536)")
    return int(v * mul)


def _as_bytes(text: Text) -> bytes:
    if isinstance(text, str):
        return text.encode("utf-8")
    if isinstance(text, (bytes, bytearray, memoryview)):
        return bytes(text)
    raise TypeError(f"a text is str or bytes, not {type(text).__name__}")


class BatchResult(NamedTuple):
    """What Model.embed_batch returns: one row per input, in input order."""

    embeddings: np.ndarray  # (N, n_pooled) float32; a failed document's row is NaN
    n_tokens: np.ndarray  # (N,) int64; -1 where the text could not be tokenized
    errors: List[Optional[SpectralError]]  # None where the document succeeded


# ---------------------------------------------------------------- the model


class Model:
    """A loaded GGUF model and the native contexts that encode with it."""

    def __init__(self, path: Union[str, os.PathLike], n_threads: int = 0, device: str = "cpu",
                 mem_limit: Union[None, int, str] = None, *, batch_tokens: int = 0,
                 use_mmap: bool = True, no_pad: bool = False) -> None:
        """Load `path`.

        n_threads: CPU threads per call (0 = every core). device: "cpu" or "cuda[:N]".
        mem_limit: hard cap on working memory (activations, FFT tables) per call, bytes or "512M"; None = no cap.
        batch_tokens: packing budget of embed()'s batches (0 = the library's 4096).
        use_mmap: map the file (it must not change meanwhile) or read a private copy.
        no_pad: a model that pads every document to its length (M2-BERT, as its model card
            does) runs each at its own length instead: faster, and a different embedding.
        """
        self._model = None  # so close() and __del__ work whatever fails below
        self._lock = threading.Lock()
        self._idle: dict = {}  # (pooling, normalize) -> [context pointers]
        self._busy = 0
        self._closed = False
        if isinstance(n_threads, bool) or not isinstance(n_threads, int) or n_threads < 0:
            raise ValueError("n_threads must be an int >= 0 (0 = every core)")
        if isinstance(batch_tokens, bool) or not isinstance(batch_tokens, int) or batch_tokens < 0:
            raise ValueError("batch_tokens must be an int >= 0")
        if not isinstance(no_pad, bool):
            raise ValueError("no_pad must be a bool")
        self._no_pad = no_pad
        self._backend, self._device = _parse_device(device)
        self._n_threads = n_threads
        self._mem_limit = parse_size(mem_limit)
        self._batch_tokens = batch_tokens
        self.path = os.fspath(path)
        mp = _c.spectral_model_default_params()
        mp.use_mmap = bool(use_mmap)
        out = _lib.model_p()
        s = _c.spectral_model_load(os.fsencode(self.path), mp, ctypes.byref(out))
        if s != _lib.OK:
            raise _error(s)
        self._model = out
        m = out
        self.n_embd: int = _c.spectral_model_n_embd(m)  # token-state width
        # Embedding length: n_embd, plus the lexical sketch's dimensions when the model has one.
        self.n_pooled: int = _c.spectral_model_n_pooled(m)
        self.n_vocab: int = _c.spectral_model_n_vocab(m)
        self.n_layer: int = _c.spectral_model_n_layer(m)
        self.n_ctx_train: int = _c.spectral_model_n_ctx_train(m)
        self.max_tokens: int = _c.spectral_model_max_tokens(m)
        self.n_params: int = _c.spectral_model_n_params(m)
        self.arch: str = _c.spectral_model_arch(m).decode("utf-8", "replace")
        self.name: str = _c.spectral_model_name(m).decode("utf-8", "replace")
        self.pooling: str = _POOLING_NAMES.get(_c.spectral_model_pooling(m), "none")
        # Fail now, not at the first call, when the device or the options are unusable.
        try:
            self._release(self._acquire(_lib.POOLING_UNSPECIFIED, True))
        except BaseException:
            self.close()
            raise

    # -- lifetime

    def close(self) -> None:
        """Free the native model and contexts. Calls running in other threads finish first."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            idle, self._idle = self._idle, {}
            free_model = self._busy == 0
        for ctxs in idle.values():
            for ctx in ctxs:
                _c.spectral_context_free(ctx)
        if free_model:
            self._free_model()

    def _free_model(self) -> None:
        if self._model is not None:
            _c.spectral_model_free(self._model)
            self._model = None

    @property
    def closed(self) -> bool:
        return self._closed

    def __enter__(self) -> "Model":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __del__(self) -> None:
        try:
            self.close()
        except Exception:  # interpreter shutdown: the library may be gone already
            pass

    def __repr__(self) -> str:
        state = "closed" if self._closed else f"n_embd={self.n_embd}, arch={self.arch!r}"
        return f"spectral.Model({self.path!r}, {state})"

    # -- contexts: one per concurrent call, reused

    def _acquire(self, pooling: int, normalize: bool):
        key = (pooling, bool(normalize))
        with self._lock:
            if self._closed:
                raise ValueError("the model is closed")
            free = self._idle.get(key)
            if free:
                self._busy += 1
                return key, free.pop()
            self._busy += 1
        try:
            cp = _c.spectral_context_default_params()
            cp.n_threads = self._n_threads
            cp.backend = self._backend
            cp.device = self._device
            cp.mem_limit = self._mem_limit
            cp.pooling = pooling
            cp.normalize = bool(normalize)
            cp.batch_tokens = self._batch_tokens
            cp.no_pad = self._no_pad
            out = _lib.context_p()
            s = _c.spectral_context_create(self._model, cp, ctypes.byref(out))
            if s != _lib.OK:
                raise _error(s)
            return key, out
        except BaseException:
            self._release(None)
            raise

    def _release(self, held) -> None:
        with self._lock:
            self._busy -= 1
            if held is not None:
                key, ctx = held
                if self._closed:
                    _c.spectral_context_free(ctx)
                else:
                    self._idle.setdefault(key, []).append(ctx)
            last = self._closed and self._busy == 0
        if last:
            self._free_model()

    # -- tokens

    def tokenize(self, text: Text) -> np.ndarray:
        """The model tokenizer's ids for `text` (str as UTF-8, or bytes), as int32."""
        data = _as_bytes(text)
        with self._lock:
            if self._closed:
                raise ValueError("the model is closed")
            self._busy += 1  # keeps the model alive while the lock is not held
        try:
            n = _c.spectral_tokenize(self._model, data, len(data), None, 0)
            if n < 0:
                raise _error(_lib.ERR_INVALID_ARGUMENT)
            out = np.empty(n, dtype=np.int32)
            if n:
                got = _c.spectral_tokenize(self._model, data, len(data),
                                           out.ctypes.data_as(_lib.i32_p), n)
                if got != n:
                    raise _error(_lib.ERR_INVALID_ARGUMENT)
            return out
        finally:
            self._release(None)

    def memory_needed(self, n_tokens: int) -> int:
        """Activation bytes a document of n_tokens needs with every thread busy."""
        held = self._acquire(_lib.POOLING_UNSPECIFIED, True)
        try:
            return int(_c.spectral_context_memory_needed(held[1], int(n_tokens)))
        finally:
            self._release(held)

    def memory_minimum(self, n_tokens: int) -> int:
        """The least working memory a document of n_tokens runs in (below it: MemoryLimitError)."""
        held = self._acquire(_lib.POOLING_UNSPECIFIED, True)
        try:
            return int(_c.spectral_context_memory_minimum(held[1], int(n_tokens)))
        finally:
            self._release(held)

    # -- encoding

    def embed_batch(self, inputs: Iterable[Union[Text, Sequence[int], np.ndarray]],
                    pooling: Pooling = None, normalize: bool = True) -> BatchResult:
        """Embed each input (a text, or an array of token ids) without raising for failed ones.

        A document that fails (too long for mem_limit, a token outside the
        vocabulary, empty) gets a NaN row, n_tokens as tokenized (-1 when it
        could not be) and its SpectralError; the others are still embedded.
        Packs short documents as spectral_encode_batch does: bit-identical to
        one at a time.
        """
        p = _parse_pooling(pooling)
        if p == _lib.POOLING_NONE:
            raise ValueError("pooling 'none' has no single vector per document: use token_states()")
        docs: List[Optional[np.ndarray]] = []
        errors: List[Optional[SpectralError]] = []
        for i, x in enumerate(inputs):
            try:
                if isinstance(x, (str, bytes, bytearray, memoryview)):
                    docs.append(self.tokenize(x))
                else:
                    docs.append(np.ascontiguousarray(x, dtype=np.int32).reshape(-1))
                errors.append(None)
            except SpectralError as e:
                docs.append(None)
                errors.append(type(e)(e.message, e.status, i))
        n = len(docs)
        emb = np.full((n, self.n_pooled), np.nan, dtype=np.float32)
        n_tokens = np.array([-1 if d is None else d.size for d in docs], dtype=np.int64)
        todo = [i for i in range(n) if docs[i] is not None]
        if todo:
            self._encode_batch([docs[i] for i in todo], p, normalize,
                               lambda k, ctx: ctypes.memmove(
                                   emb[todo[k]].ctypes.data, _c.spectral_get_embedding(ctx),
                                   4 * self.n_pooled),
                               lambda k, status, msg: errors.__setitem__(
                                   todo[k], _error(status, todo[k], msg)))
        return BatchResult(emb, n_tokens, errors)

    def embed(self, texts: Union[Text, Iterable[Text]], pooling: Pooling = None,
              normalize: bool = True) -> np.ndarray:
        """Embeddings of `texts` as an (N, n_pooled) float32 array; of a single text, (n_pooled,).

        pooling: None (the model's), "mean", "cls" or "last". normalize: L2-normalize.
        Raises the first failed document's SpectralError (its .index says which).
        """
        single = isinstance(texts, (str, bytes, bytearray, memoryview))
        items = [texts] if single else list(texts)
        for t in items:
            if not isinstance(t, (str, bytes, bytearray, memoryview)):
                raise TypeError(f"embed() takes texts (str or bytes), not {type(t).__name__}; "
                                "use embed_tokens() for token ids")
        r = self._raise_first(self.embed_batch(items, pooling, normalize))
        return r[0] if single else r

    def embed_tokens(self, tokens: Iterable[Union[Sequence[int], np.ndarray]],
                     pooling: Pooling = None, normalize: bool = True) -> np.ndarray:
        """Embeddings of already tokenized documents (each a sequence of int ids): (N, n_pooled)."""
        items = [np.ascontiguousarray(t, dtype=np.int32).reshape(-1) for t in tokens]
        return self._raise_first(self.embed_batch(items, pooling, normalize))

    def token_states(self, text: Union[Text, Sequence[int], np.ndarray]) -> np.ndarray:
        """Final hidden states of one document (a text or token ids): (T, n_embd) float32."""
        if isinstance(text, (str, bytes, bytearray, memoryview)):
            tok = self.tokenize(text)
        else:
            tok = np.ascontiguousarray(text, dtype=np.int32).reshape(-1)
        out: List[np.ndarray] = []
        failure: List[SpectralError] = []

        def done(k, ctx):
            T = ctypes.c_int64(0)
            ptr = _c.spectral_get_token_states(ctx, ctypes.byref(T))
            a = np.empty((T.value, self.n_embd), dtype=np.float32)
            ctypes.memmove(a.ctypes.data, ptr, a.nbytes)
            out.append(a)

        self._encode_batch([tok], _lib.POOLING_NONE, True, done,
                           lambda k, status, msg: failure.append(_error(status, None, msg)))
        if failure:
            raise failure[0]
        return out[0]

    @staticmethod
    def _raise_first(r: BatchResult) -> np.ndarray:
        for e in r.errors:
            if e is not None:
                raise e
        return r.embeddings

    def _encode_batch(self, docs: List[np.ndarray], pooling: int, normalize: bool,
                      on_ok, on_error) -> None:
        """spectral_encode_batch over docs; on_ok(k, ctx) / on_error(k, status, message) per document."""
        n = len(docs)
        ptrs = (_lib.i32_p * n)(*[d.ctypes.data_as(_lib.i32_p) for d in docs])
        lens = (ctypes.c_int64 * n)(*[d.size for d in docs])
        trouble: List[BaseException] = []

        # Runs on this thread (the library calls back from the caller's thread),
        # holding the GIL only while it copies one document's output.
        def callback(ctx, k, status, user):
            try:
                if status == _lib.OK:
                    on_ok(k, ctx)
                else:
                    on_error(k, status, _last_error(status))
                return 0
            except BaseException as e:  # an exception cannot cross the C frames: stop the batch
                trouble.append(e)
                return 1

        cb = _lib.DocCallback(callback)
        held = self._acquire(pooling, normalize)
        try:
            _c.spectral_encode_batch(held[1], ptrs, lens, n, cb, None)
        finally:
            self._release(held)
        if trouble:
            raise trouble[0]

