"""spectral: Python binding of the spectral inference runtime (runtime/spectral.h).

Usage:

    import spectral
    with spectral.Model("models/spectral-default.gguf", n_threads=2) as m:
        e = m.embed(["first document", "second document"])   # (2, m.n_pooled) float32
        t = m.tokenize("first document")                       # int32 token ids
        h = m.token_states("first document")                   # (len(t), m.n_embd)
        v = m.encode(texts, batch_size=64, show_progress_bar=True)  # sentence-transformers' encode

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
a document of a batch that failed also says which (e.index). An output with
a NaN or an infinity fails its document (ModelError). Inputs of the wrong type
(a float token id, a dict of texts) raise TypeError, ids outside the
vocabulary InvalidArgumentError (a ValueError). Ctrl-C while encoding raises
KeyboardInterrupt once the running pass has finished.

Inputs longer than the model's training length (Model.n_ctx_train) are
embedded whole, with a LongInputWarning.
"""

from __future__ import annotations

import _signal  # signal's own C module: see _SignalsDeferred
import array
import ctypes
import logging
import os
import signal
import threading
import warnings
from collections.abc import Iterable as _Iterable
from collections.abc import Mapping, Set
from typing import Iterable, List, NamedTuple, Optional, Sequence, Tuple, Union

import numpy as np

from . import _lib
from ._lib import lib as _c
from ._progress import progress_bar

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
    "LongInputWarning",
    "library_version",
    "backend_available",
    "parse_size",
]


Text = Union[str, bytes, bytearray, memoryview]
Pooling = Union[None, str, int]
_TEXT_TYPES = (str, bytes, bytearray, memoryview)

# encode(show_progress_bar=None) shows a bar when this logger is at INFO or DEBUG,
# as sentence-transformers does with its own.
_logger = logging.getLogger("spectral")


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


class LongInputWarning(UserWarning):
    """An input is longer than the model's training length (Model.n_ctx_train).

    It is embedded whole, as spectral-embed does: the mixing is defined for any
    length, but the model never saw one this long, so its embedding may be worse.
    Silence it with warnings.filterwarnings("ignore", category=spectral.LongInputWarning).
    """


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


# ---------------------------------------------------------------- input checks
#
# Nothing is coerced (issue 21): numpy's int32 conversion read 5.9, "5", True and
# 2**32 + 5 all as token 5, and iterating a dict gave its keys. A wrong type is
# the caller's mistake and fails the whole call (TypeError); an integer id the
# C type cannot hold fails its document like any id outside the vocabulary.


def _inputs(inputs, what: str) -> list:
    """An ordered collection of inputs, as a list. A dict or a set is refused:
    iterating one gives its keys, in an order no row could be matched with."""
    if isinstance(inputs, list):
        return inputs
    if isinstance(inputs, (Mapping, Set, *_TEXT_TYPES)) or not isinstance(inputs, _Iterable):
        raise TypeError(f"{what} takes a list (or another ordered iterable) of inputs, "
                        f"not {type(inputs).__name__}")
    return list(inputs)


# What a token id may be: Python's int and numpy's integer scalars (bool is not one).
_ID_TYPES = frozenset([int] + [t for t in set(np.sctypeDict.values())
                               if issubclass(t, np.integer) and not issubclass(t, np.timedelta64)])
_INT32_MIN, _INT32_MAX = -(1 << 31), (1 << 31) - 1


def _outside_vocabulary(position: int, token: int, n_vocab: int) -> "InvalidArgumentError":
    # The library's words for an id outside the vocabulary (runtime/spectral.c), for
    # one that does not even fit its int32.
    return InvalidArgumentError(f"token {position} has id {token}, outside the vocabulary [0, {n_vocab})",
                                _lib.ERR_INVALID_ARGUMENT)


def _ids_from_list(ids: Sequence, n_vocab: int) -> np.ndarray:
    types = set(map(type, ids))
    if not types <= _ID_TYPES:
        for t in types - _ID_TYPES:
            if t is bool or not issubclass(t, int):  # an int subclass (IntEnum) is an int
                raise TypeError(f"token ids are integers, not {t.__name__}")
    try:
        # One C loop that refuses what does not fit (array's "i" is C's int: 32 bits
        # wherever CPython runs); the type check above is what it would let through.
        return np.frombuffer(array.array("i", ids), dtype=np.int32)
    except OverflowError:
        position = next(i for i, v in enumerate(ids) if not _INT32_MIN <= v <= _INT32_MAX)
        raise _outside_vocabulary(position, int(ids[position]), n_vocab) from None


def _ids_from_array(a: np.ndarray, n_vocab: int) -> np.ndarray:
    if a.ndim != 1:
        if a.ndim == 0:
            raise TypeError(f"a document's token ids are a sequence, not one {a.dtype} value")
        raise ValueError(f"a document's token ids are one-dimensional, not of shape {a.shape}")
    if a.dtype == np.int32:
        return np.ascontiguousarray(a)
    if a.dtype.kind == "O":
        return _ids_from_list(a.tolist(), n_vocab)
    if a.size == 0:
        return np.empty(0, np.int32)
    if a.dtype.kind not in "iu":
        raise TypeError(f"token ids are integers, not {a.dtype}")
    ids = a.astype(np.int32)
    wrapped = ids != a  # what did not fit: astype wraps it silently
    if wrapped.any():
        position = int(np.flatnonzero(wrapped)[0])
        raise _outside_vocabulary(position, int(a[position]), n_vocab)
    return ids


def _token_ids(doc, n_vocab: int) -> np.ndarray:
    """One document's token ids (a sequence of ints or an integer array) as contiguous int32."""
    if isinstance(doc, (list, tuple)):
        return _ids_from_list(doc, n_vocab)
    if isinstance(doc, _TEXT_TYPES):
        raise TypeError("a document's token ids are a sequence of ints, not a text: embed texts "
                        "with embed()")
    if isinstance(doc, np.ndarray) or hasattr(doc, "__array__"):  # numpy, torch, pandas
        return _ids_from_array(np.asarray(doc), n_vocab)
    if isinstance(doc, Sequence):  # range, array.array, ...
        return _ids_from_list(list(doc), n_vocab)
    raise TypeError(f"a document's token ids are a sequence of ints, not {type(doc).__name__}")


def _nonfinite_rows(a: np.ndarray, block: int = 4096) -> List[int]:
    """The rows of `a` that hold a NaN or an infinity, checked a block of rows at a time
    (no temporary the size of `a`)."""
    rows: List[int] = []
    for start in range(0, len(a), block):
        finite = np.isfinite(a[start:start + block])
        if not finite.all():
            rows.extend(start + int(i) for i in np.flatnonzero(~finite.all(axis=1)))
    return rows


def _nonfinite_error(index: Optional[int]) -> "ModelError":
    return ModelError("the output has non-finite values (NaN or infinity): the model's weights "
                      "or the backend are broken", _lib.ERR_MODEL, index)


# ---------------------------------------------------------------- signals while encoding

# Every signal a Python handler may be set for.
_SIGNALS = tuple(int(s) for s in signal.valid_signals() if s not in (signal.SIGKILL, signal.SIGSTOP))


class _SignalsDeferred:
    """Holds Python's signal handlers back while the library calls into Python.

    The library calls the per-document callback on the calling thread, and on
    the main thread Python runs pending signal handlers at a function's first
    instruction: SIGINT's KeyboardInterrupt was raised on the callback's first
    line, before its try, where ctypes prints "Exception ignored" and drops it
    (issue 21). So while the call runs, each Python handler is replaced by one
    that notes the signal; run_pending() calls the real handler inside the
    callback's try, where an exception stops the batch and is raised when the
    call returns, and once more after the call, for a signal that came during
    the last pass. A handler that does not raise (an app's own) runs a little
    later, that is all; one that installs another handler keeps it. Only the
    main thread runs Python's handlers.

    The handlers are swapped with _signal, signal's own C module: the signal
    module's wrappers turn every handler into an enum member, and looking at
    every signal took 70 us through them against 3 us (measured). A flag set
    by signal.siginterrupt() is reset by the swap.
    """

    __slots__ = ("pending", "saved", "note")

    def __init__(self) -> None:
        self.pending: list = []
        self.saved: dict = {}
        self.note = self._note  # one bound method, to know our own handler again

    def __enter__(self) -> "_SignalsDeferred":
        if threading.current_thread() is not threading.main_thread():
            return self
        try:
            for s in _SIGNALS:
                handler = _signal.getsignal(s)
                if callable(handler):
                    self.saved[s] = handler
                    _signal.signal(s, self.note)
        except ValueError:  # not the main interpreter, whose handlers do not run here either
            self._restore()
            self.saved = {}
        except BaseException:
            self._restore()
            raise
        return self

    def _note(self, signum, frame) -> None:
        self.pending.append((signum, frame))

    def run_pending(self) -> None:
        while self.pending:
            signum, frame = self.pending.pop(0)
            self.saved[signum](signum, frame)

    def _restore(self) -> None:
        for s, handler in self.saved.items():
            if _signal.getsignal(s) is self.note:  # not if a handler has installed another
                _signal.signal(s, handler)

    def __exit__(self, *exc) -> None:
        self._restore()
        self.run_pending()


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
        self.device: str = "cpu" if self._backend == _lib.BACKEND_CPU else f"cuda:{self._device}"
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
        # What the embedding is made of: the lexical sketch's length and weight (0 without one),
        # and the lengths encode()'s truncate_dim (the server's 'dimensions') accepts: the dense
        # part's prefixes the model was trained for (the whole dense part among them), n_pooled.
        self.n_lexical: int = _c.spectral_model_n_lexical(m)
        self.lexical_scale: float = _c.spectral_model_lexical_scale(m)
        n_prefixes = _c.spectral_model_dense_prefixes(m, None, 0)
        prefixes = (ctypes.c_int32 * n_prefixes)()
        _c.spectral_model_dense_prefixes(m, prefixes, n_prefixes)
        self.dimensions: tuple = tuple(sorted(set(prefixes) | {self.n_pooled}))
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
            cp.mem_limit = self._mem_limit or cp.mem_limit  # None/0: the default, SPECTRAL_MEM_UNLIMITED
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

    def tokenize(self, text: Text, truncate: Optional[int] = None) -> np.ndarray:
        """The model tokenizer's ids for `text` (str as UTF-8, or bytes), as int32.

        truncate: keep at most that many tokens, the tokenizer's end token ([SEP])
        kept as the last (spectral_tokenize_with's max_tokens); None keeps all.
        """
        if truncate is not None and (isinstance(truncate, bool) or not isinstance(truncate, int) or truncate < 1):
            raise ValueError("truncate must be None or an int >= 1 (tokens)")
        tp = _c.spectral_tokenize_default_params()
        tp.max_tokens = truncate or 0
        data = _as_bytes(text)
        with self._lock:
            if self._closed:
                raise ValueError("the model is closed")
            self._busy += 1  # keeps the model alive while the lock is not held
        try:
            n = _c.spectral_tokenize_with(self._model, data, len(data), tp, None, 0)
            if n < 0:
                raise _error(_lib.ERR_INVALID_ARGUMENT)
            out = np.empty(n, dtype=np.int32)
            if n:
                got = _c.spectral_tokenize_with(self._model, data, len(data), tp,
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
                    pooling: Pooling = None, normalize: bool = True, *,
                    truncate: Optional[int] = None) -> BatchResult:
        """Embed each input (a text, or a sequence of token ids) without raising for failed ones.

        A document that fails (too long for mem_limit, a token outside the
        vocabulary, empty) gets a NaN row, n_tokens as tokenized (-1 when it
        could not be) and its SpectralError; the others are still embedded.
        An input of the wrong type (a float id, a dict) raises TypeError for
        the call. Packs short documents as spectral_encode_batch does:
        bit-identical to one at a time. truncate: embed at most that many tokens
        of each text (see tokenize(); n_tokens then says how many); token ids are
        taken as given.
        """
        p = self._pooled(pooling)
        docs, errors = self._documents(_inputs(inputs, "embed_batch()"), truncate)
        self._warn_long(docs, stacklevel=3)
        return self._embed_documents(docs, errors, p, normalize)

    def embed(self, texts: Union[Text, Iterable[Text]], pooling: Pooling = None,
              normalize: bool = True, *, truncate: Optional[int] = None) -> np.ndarray:
        """Embeddings of `texts` as an (N, n_pooled) float32 array; of a single text, (n_pooled,).

        pooling: None (the model's), "mean", "cls" or "last". normalize: L2-normalize.
        truncate: embed at most that many tokens of each text (None: all of it).
        Raises the first failed document's SpectralError (its .index says which).
        """
        p = self._pooled(pooling)
        single = isinstance(texts, _TEXT_TYPES)
        items = [texts] if single else self._texts(texts, "embed()")
        docs, errors = self._documents(items, truncate)
        self._warn_long(docs, stacklevel=3)
        r = self._raise_first(self._embed_documents(docs, errors, p, normalize))
        return r[0] if single else r

    def embed_tokens(self, tokens: Iterable[Union[Sequence[int], np.ndarray]],
                     pooling: Pooling = None, normalize: bool = True) -> np.ndarray:
        """Embeddings of already tokenized documents (each a sequence of int ids): (N, n_pooled)."""
        p = self._pooled(pooling)
        items = _inputs(tokens, "embed_tokens()")
        for i, t in enumerate(items):
            if isinstance(t, _TEXT_TYPES):
                raise TypeError(f"input {i}: embed_tokens() takes token ids, not texts: use embed()")
        docs, errors = self._documents(items)
        self._warn_long(docs, stacklevel=3)
        return self._raise_first(self._embed_documents(docs, errors, p, normalize))

    def token_states(self, text: Union[Text, Sequence[int], np.ndarray]) -> np.ndarray:
        """Final hidden states of one document (a text or token ids): (T, n_embd) float32."""
        tok = self.tokenize(text) if isinstance(text, _TEXT_TYPES) else _token_ids(text, self.n_vocab)
        self._warn_long([tok], stacklevel=3)
        return self._states_of_documents([tok], first_index=None)[0]

    def encode(self, sentences: Union[Text, Iterable[Text], None] = None,
               prompt_name: Optional[str] = None, prompt: Optional[str] = None, batch_size: int = 32,
               show_progress_bar: Optional[bool] = None, output_value: Optional[str] = "sentence_embedding",
               precision: str = "float32", convert_to_numpy: bool = True, convert_to_tensor: bool = False,
               device: Union[None, str, list] = None, normalize_embeddings: bool = False,
               truncate_dim: Optional[int] = None, pool: Optional[dict] = None,
               chunk_size: Optional[int] = None, *, inputs: Union[Text, Iterable[Text], None] = None):
        """sentence-transformers' SentenceTransformer.encode, on this model (docs/python.md).

        A string gives a (D,) vector, a list an (N, D) float32 array, in input
        order; the vectors are embed()'s. The arguments mean what they mean in
        sentence-transformers (5.x, 6.x; `inputs` is its newer name for
        `sentences`), with these differences:
        batch_size: sentences per call to the library (which packs them into
            passes by tokens); it sets the progress bar's steps, not the result.
        show_progress_bar: None shows one when the "spectral" logger is at INFO
            or DEBUG; the bar needs tqdm and is left out without it.
        normalize_embeddings: the embeddings are unit length already (the model's
            output, as for a sentence-transformers model ending in Normalize);
            embed(normalize=False) gives them unnormalized.
        truncate_dim: one of `dimensions`: n_pooled, or a dense part's length the
            model was trained for (n_embd for a model with a lexical sketch, and its
            Matryoshka prefixes), those first values made unit length again; other
            cuts are refused.
        output_value: "sentence_embedding", or "token_embeddings" for a list of
            (T, n_embd) numpy arrays (tensors with convert_to_tensor).
        convert_to_tensor / convert_to_numpy=False: PyTorch tensors; needs torch.
        prompt: prepended to each text. prompt_name, precision other than
        "float32", a device other than the model's, pool: refused (ValueError).
        chunk_size (multi-process chunks) is accepted and unused.
        """
        if inputs is not None:
            if sentences is not None:
                raise TypeError("encode() takes the texts as sentences or as inputs, not both")
            sentences = inputs
        elif sentences is None:
            raise TypeError("encode() needs the texts to embed (a string or a list of strings)")
        if show_progress_bar is None:
            show_progress_bar = _logger.getEffectiveLevel() in (logging.INFO, logging.DEBUG)
        if convert_to_tensor:
            convert_to_numpy = False
        if output_value not in ("sentence_embedding", "token_embeddings"):
            raise ValueError(f"output_value {output_value!r} is not supported: 'sentence_embedding' "
                             "or 'token_embeddings'")
        if isinstance(batch_size, bool) or not isinstance(batch_size, int):
            raise TypeError(f"batch_size must be an int, not {type(batch_size).__name__}")
        if batch_size <= 0:
            raise ValueError(f"batch_size must be a positive integer, got {batch_size}")
        if precision != "float32":
            raise ValueError(f"precision {precision!r} is not supported: spectral gives float32 "
                             "embeddings only (quantize them with sentence_transformers.quantization."
                             "quantize_embeddings if you need int8 or binary)")
        if pool is not None or isinstance(device, (list, tuple)):
            raise ValueError("multi-process encoding (pool, a list of devices) is not supported: one "
                             "Model uses every core (n_threads) and may be shared by threads")
        if device is not None and _parse_device(str(device)) != (self._backend, self._device):
            raise ValueError(f"this Model runs on {self.device}, not {device}: load the model with "
                             f"spectral.Model(path, device={str(device)!r})")
        if prompt is None and prompt_name is not None:
            raise ValueError(f"Prompt name {prompt_name!r} not found: this model has no named prompts "
                             "(pass the text itself as prompt=)")
        torch = _import_torch() if not convert_to_numpy else None
        keep = self._kept_dimensions(truncate_dim) if output_value == "sentence_embedding" else None

        single = isinstance(sentences, _TEXT_TYPES)
        items = [sentences] if single else self._texts(sentences, "encode()")
        if prompt:
            items = [(prompt if isinstance(t, str) else prompt.encode("utf-8")) + t for t in items]
        docs, errors = self._documents(items)
        self._warn_long(docs, stacklevel=3)
        p = self._pooled(None)
        parts: list = []
        bar = progress_bar(-(-len(docs) // batch_size), "Batches", enabled=show_progress_bar)
        try:
            for start in range(0, len(docs), batch_size):
                chunk, chunk_errors = docs[start:start + batch_size], errors[start:start + batch_size]
                if output_value == "token_embeddings":
                    for e in chunk_errors:
                        if e is not None:
                            raise e
                    parts.extend(self._states_of_documents(chunk, first_index=start))
                else:
                    parts.append(self._raise_first(
                        self._embed_documents(chunk, chunk_errors, p, True, first_index=start)))
                if bar is not None:
                    bar.update(1)
        finally:
            if bar is not None:
                bar.close()
        if output_value == "token_embeddings":
            out = [torch.from_numpy(s) for s in parts] if torch is not None else parts
            return out[0] if single else out
        emb = np.concatenate(parts) if parts else np.empty((0, self.n_pooled), np.float32)
        if keep is not None:
            emb = _unit_rows(emb[:, :keep])
        if torch is not None:
            emb = torch.from_numpy(emb) if convert_to_tensor else [torch.from_numpy(r) for r in emb]
        return emb[0] if single else emb

    def get_sentence_embedding_dimension(self) -> int:
        """sentence-transformers' name for the embedding length: n_pooled."""
        return self.n_pooled

    # -- the embed path: inputs -> token ids -> (warning) -> library

    @staticmethod
    def _pooled(pooling: Pooling) -> int:
        p = _parse_pooling(pooling)
        if p == _lib.POOLING_NONE:
            raise ValueError("pooling 'none' has no single vector per document: use token_states()")
        return p

    @staticmethod
    def _texts(texts, what: str) -> list:
        items = _inputs(texts, what)
        for i, t in enumerate(items):
            if not isinstance(t, _TEXT_TYPES):
                raise TypeError(f"input {i}: {what} takes texts (str or bytes), not {type(t).__name__}; "
                                "use embed_tokens() for token ids")
        return items

    def _documents(self, items: list, truncate: Optional[int] = None
                   ) -> Tuple[List[Optional[np.ndarray]], List[Optional[SpectralError]]]:
        """Each input's token ids (texts tokenized, to at most `truncate` tokens), or its
        SpectralError (with its index)."""
        docs: List[Optional[np.ndarray]] = []
        errors: List[Optional[SpectralError]] = []
        for i, x in enumerate(items):
            try:
                docs.append(self.tokenize(x, truncate) if isinstance(x, _TEXT_TYPES)
                            else _token_ids(x, self.n_vocab))
                errors.append(None)
            except SpectralError as e:
                docs.append(None)
                errors.append(type(e)(e.message, e.status, i))
            except TypeError as e:
                raise TypeError(f"input {i}: {e}") from None
        return docs, errors

    def _warn_long(self, docs: Sequence[Optional[np.ndarray]], stacklevel: int) -> None:
        """A LongInputWarning for documents longer than the training length, as spectral-embed
        warns (not for a model with a hard maximum: the library refuses those). One per call;
        stacklevel 3 names the line that called the public method calling this."""
        limit = self.n_ctx_train
        if limit <= 0 or self.max_tokens:
            return
        long = [(i, d.size) for i, d in enumerate(docs) if d is not None and d.size > limit]
        if not long:
            return
        n = len(docs)
        index, longest = max(long, key=lambda x: x[1])
        if n == 1:
            what = f"the input has {longest} tokens, more than"
        elif len(long) == 1:
            what = f"input {index} has {longest} tokens, more than"
        else:
            what = f"{len(long)} of {n} inputs are longer (up to {longest} tokens, input {index}) than"
        warnings.warn(f"{what} the model's training length ({limit} tokens): embedded whole; "
                      "quality may drop; truncate=N embeds only the first N tokens",
                      LongInputWarning, stacklevel=stacklevel)

    def _embed_documents(self, docs: List[Optional[np.ndarray]], errors: List[Optional[SpectralError]],
                         pooling: int, normalize: bool, first_index: int = 0) -> BatchResult:
        """Pooled embeddings of the documents that have token ids; `errors` gains the library's
        failures. first_index: the index of docs[0] among the caller's inputs, for messages."""
        n = len(docs)
        emb = np.full((n, self.n_pooled), np.nan, dtype=np.float32)
        n_tokens = np.array([-1 if d is None else d.size for d in docs], dtype=np.int64)
        todo = [i for i in range(n) if docs[i] is not None]
        if todo:
            self._encode_batch([docs[i] for i in todo], pooling, normalize,
                               lambda k, ctx: ctypes.memmove(
                                   emb[todo[k]].ctypes.data, _c.spectral_get_embedding(ctx),
                                   4 * self.n_pooled),
                               lambda k, status, msg: errors.__setitem__(
                                   todo[k], _error(status, first_index + todo[k], msg)))
            for i in _nonfinite_rows(emb):
                if errors[i] is None:
                    errors[i] = _nonfinite_error(first_index + i)
                    emb[i] = np.nan
        return BatchResult(emb, n_tokens, errors)

    def _states_of_documents(self, docs: List[np.ndarray], first_index: Optional[int]) -> List[np.ndarray]:
        """The (T, n_embd) token states of each document; raises the first failure.
        first_index: the index of docs[0] among the caller's inputs, None for a single one."""
        out: List[np.ndarray] = []

        def index(k):
            return None if first_index is None else first_index + k

        def done(k, ctx):
            T = ctypes.c_int64(0)
            ptr = _c.spectral_get_token_states(ctx, ctypes.byref(T))
            a = np.empty((T.value, self.n_embd), dtype=np.float32)
            ctypes.memmove(a.ctypes.data, ptr, a.nbytes)
            if _nonfinite_rows(a):
                raise _nonfinite_error(index(k))
            out.append(a)

        def failed(k, status, msg):
            raise _error(status, index(k), msg)  # stops the batch

        if docs:
            self._encode_batch(docs, _lib.POOLING_NONE, True, done, failed)
        return out

    @staticmethod
    def _raise_first(r: BatchResult) -> np.ndarray:
        for e in r.errors:
            if e is not None:
                raise e
        return r.embeddings

    def _kept_dimensions(self, truncate_dim: Optional[int]) -> Optional[int]:
        """encode()'s truncate_dim: None to keep every value, or how many leading values to keep."""
        if truncate_dim is None or truncate_dim == self.n_pooled:
            return None
        if truncate_dim in self.dimensions:
            return truncate_dim
        raise ValueError(f"truncate_dim {truncate_dim}: this model offers dimensions "
                         f"{', '.join(map(str, self.dimensions))} (the lengths it was trained for)")

    def _encode_batch(self, docs: List[np.ndarray], pooling: int, normalize: bool,
                      on_ok, on_error) -> None:
        """spectral_encode_batch over docs; on_ok(k, ctx) / on_error(k, status, message) per document.
        An exception in either stops the batch and is raised when the call returns."""
        n = len(docs)
        ptrs = (_lib.i32_p * n)(*[d.ctypes.data_as(_lib.i32_p) for d in docs])
        lens = (ctypes.c_int64 * n)(*[d.size for d in docs])
        trouble: List[BaseException] = []
        signals = _SignalsDeferred()

        # Runs on this thread (the library calls back from the caller's thread),
        # holding the GIL only while it copies one document's output.
        def callback(ctx, k, status, user):
            try:
                signals.run_pending()  # Ctrl-C: KeyboardInterrupt here stops the batch
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
            with signals:
                _c.spectral_encode_batch(held[1], ptrs, lens, n, cb, None)
        finally:
            self._release(held)
        if trouble:
            raise trouble[0]


def _unit_rows(a: np.ndarray) -> np.ndarray:
    """Each row made unit length again (the sum of squares in float64, as spectral-server does)."""
    ss = np.einsum("ij,ij->i", a, a, dtype=np.float64)
    inv = np.where(ss > 0, 1.0 / np.sqrt(np.where(ss > 0, ss, 1.0)), 1.0).astype(np.float32)
    return np.ascontiguousarray(a * inv[:, None], dtype=np.float32)


def _import_torch():
    try:
        import torch
    except ImportError:
        raise ImportError("convert_to_tensor=True and convert_to_numpy=False give PyTorch tensors, and "
                          "torch is not installed (pip install torch); the default gives numpy arrays"
                          ) from None
    return torch
