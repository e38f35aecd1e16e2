"""spectral.Model against spectral-embed (bit for bit), errors, threads, the memory cap, leaks."""

import json
import os
import random
import re
import subprocess
import sys
import threading
import time
import warnings

import numpy as np
import pytest

import spectral
from conftest import BYTE_MODEL, DEFAULT_MODEL, ROOT, run_cli, same_bits


def corpus(seed=1, n=24):
    """Texts of many shapes: ASCII, accents and CJK, newlines, 1 byte, ~40 KB, invalid UTF-8."""
    rng = random.Random(seed)
    words = ["spectral", "mixing", "Fourier", "naïve", "café", "日本語", "encoder", "the", "of",
             "document", "ÆØÅ", "—", "tokens", "42", "3.14", "\t", "\n", "ﬁle", "Straße"]
    out = [b"x", "hello world".encode(), "Ünïcödé text\nsecond line\n".encode(),
           b"\xff\xfe invalid utf-8 \xc3\x28 bytes", (" ".join(rng.choice(words) for _ in range(1500))).encode()]
    while len(out) < n:
        out.append(" ".join(rng.choice(words) for _ in range(rng.randint(1, 300))).encode())
    return out


def write_files(tmp_path, texts):
    paths = []
    for i, t in enumerate(texts):
        p = tmp_path / f"doc{i:03d}.txt"
        p.write_bytes(t)
        paths.append(p)
    return paths


@pytest.fixture(scope="module")
def model():
    with spectral.Model(DEFAULT_MODEL, n_threads=2) as m:
        yield m


@pytest.fixture(scope="module")
def byte_model():
    with spectral.Model(BYTE_MODEL, n_threads=2) as m:
        yield m


# ---------------------------------------------------------------- equal to the CLI


@pytest.mark.parametrize("options", [(), ("--pooling", "cls"), ("--pooling", "last", "--no-normalize"),
                                     ("--batch-tokens", "1")])
def test_embed_equals_cli_bit_for_bit(model, cli, tmp_path, options):
    texts = corpus()
    files = write_files(tmp_path, texts)
    raw, recs, rc, err = run_cli(cli, DEFAULT_MODEL, files, "-t", "2", *options, check=False)
    ok_files = {r["input"] for r in recs}
    ok = [str(f) in ok_files for f in files]
    assert sum(ok) >= len(texts) - 1, err  # at most the invalid UTF-8 text may be refused
    pooling = options[1] if options and options[0] == "--pooling" else None
    r = model.embed_batch(texts, pooling=pooling, normalize="--no-normalize" not in options)
    assert [e is None for e in r.errors] == ok, (r.errors, err)
    got = r.embeddings[np.array(ok)]
    assert same_bits(got, raw.reshape(len(recs), model.n_pooled))
    assert [int(n) for n, k in zip(r.n_tokens, ok) if k] == [rec["n_tokens"] for rec in recs]
    if options:
        return
    # embed() and embed_tokens(tokenize()) give the same bits
    good = [t for t, k in zip(texts, ok) if k]
    assert same_bits(model.embed(good, pooling=pooling, normalize="--no-normalize" not in options), got)
    assert same_bits(model.embed_tokens([model.tokenize(t) for t in good], pooling=pooling,
                                        normalize="--no-normalize" not in options), got)


@pytest.mark.filterwarnings("ignore::spectral.LongInputWarning")  # long on purpose
def test_byte_model_equals_cli(byte_model, cli, tmp_path):
    texts = corpus(seed=2, n=12)
    files = write_files(tmp_path, texts)
    raw, recs, _, _ = run_cli(cli, BYTE_MODEL, files, "-t", "1")
    assert same_bits(byte_model.embed(texts), raw.reshape(len(texts), byte_model.n_pooled))
    # the bytes tokenizer: each byte is its token
    assert [r["n_tokens"] for r in recs] == [len(t) for t in texts]
    assert np.array_equal(byte_model.tokenize(texts[3]), np.frombuffer(texts[3], np.uint8))


def test_token_states_equal_cli(model, cli, tmp_path):
    texts = [b"A spectral encoder reads the whole document.", corpus()[4][:3000]]
    files = write_files(tmp_path, texts)
    raw, recs, _, _ = run_cli(cli, DEFAULT_MODEL, files, "--pooling", "none")
    rows = [model.token_states(t) for t in texts]
    assert [h.shape for h in rows] == [(r["n_tokens"], model.n_embd) for r in recs]
    assert same_bits(np.concatenate(rows), raw.reshape(-1, model.n_embd))
    # str and bytes are the same text
    assert same_bits(model.token_states(texts[0].decode()), rows[0])


def test_properties_match_cli(model, cli):
    p = subprocess.run([cli, "-m", str(DEFAULT_MODEL), "-v", "-"], input=b"x", capture_output=True)
    m = re.search(rb"\((\w+)\): (\d+) layers, n_embd (\d+), pooled (\d+), vocab (\d+), trained context (\d+), (\d+) parameters",
                  p.stderr)
    assert m, p.stderr
    assert model.arch == m.group(1).decode() == "spectralmlp"
    assert (model.n_layer, model.n_embd, model.n_pooled, model.n_vocab, model.n_ctx_train, model.n_params) == \
        tuple(int(g) for g in m.groups()[1:])
    assert model.max_tokens == 0 and model.pooling == "mean" and model.name == "spectral-default"


def test_truncate_equals_cli(model, cli, tmp_path):
    text = b"A spectral encoder reads the whole document. " * 40
    files = write_files(tmp_path, [text])
    raw, recs, _, err = run_cli(cli, DEFAULT_MODEL, files, "--truncate", "64")
    assert recs[0]["n_tokens"] == 64 and "truncated to the first 64" in err
    full = model.tokenize(text)
    cut = model.tokenize(text, truncate=64)
    assert cut.tolist() == full[:63].tolist() + [full[-1]]  # [SEP] kept last
    r = model.embed_batch([text], truncate=64)
    assert r.n_tokens.tolist() == [64] and same_bits(r.embeddings, raw.reshape(1, -1))
    assert same_bits(model.embed(text, truncate=64), raw) and model.tokenize(text, truncate=10**6).size == full.size
    for bad in (0, -1, 2.5, True):
        with pytest.raises(ValueError):
            model.tokenize(text, truncate=bad)


def test_long_input_warning(byte_model):
    # the byte model was trained at 4096 tokens: 5000 bytes run, with a warning
    assert byte_model.n_ctx_train == 4096
    with pytest.warns(spectral.LongInputWarning, match="5000 tokens, more than the model's training length"):
        byte_model.embed(b"x" * 5000)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert byte_model.embed(b"x" * 5000, truncate=4096).shape == (byte_model.n_pooled,)


def test_tokenize_known_ids(model):
    # all-MiniLM-L6-v2's (bert-base-uncased) vocabulary: [CLS] hello world [SEP]
    t = model.tokenize("Hello world")
    assert t.dtype == np.int32 and t.tolist() == [101, 7592, 2088, 102]
    assert model.tokenize(b"Hello world").tolist() == t.tolist()


def test_shapes_and_norms(model):
    e = model.embed(["one", "two", "three"])
    assert e.shape == (3, model.n_pooled) and e.dtype == np.float32
    assert np.allclose(np.linalg.norm(e, axis=1), 1, atol=1e-6)
    assert model.embed("one").shape == (model.n_pooled,)
    assert same_bits(model.embed("one"), e[0])
    assert model.embed([]).shape == (0, model.n_pooled)
    u = model.embed(["one"], normalize=False)[0]
    assert np.allclose(u / np.linalg.norm(u), e[0], atol=1e-6) and abs(np.linalg.norm(u) - 1) > 1e-3


# ---------------------------------------------------------------- errors


def test_load_errors(tmp_path):
    with pytest.raises(spectral.SpectralIOError) as e:
        spectral.Model(tmp_path / "missing.gguf")
    assert e.value.status == 2 and "missing.gguf" in str(e.value) and isinstance(e.value, OSError)
    bad = tmp_path / "bad.gguf"
    bad.write_bytes(b"GGUF" + b"\x00" * 60)
    with pytest.raises(spectral.FormatError) as e:
        spectral.Model(bad)
    assert e.value.status == 3 and e.value.message and e.value.status_name
    cut = tmp_path / "cut.gguf"
    cut.write_bytes(BYTE_MODEL.read_bytes()[:5000])
    with pytest.raises(spectral.FormatError):
        spectral.Model(cut)


def test_not_a_model(tmp_path):
    gguf = pytest.importorskip("gguf")
    p = tmp_path / "other.gguf"
    w = gguf.GGUFWriter(str(p), "llama")
    w.add_tensor("token_embd.weight", np.zeros((4, 8), np.float32))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    with pytest.raises(spectral.ModelError) as e:
        spectral.Model(p)
    assert e.value.status == 4 and "llama" in e.value.message


def test_argument_errors(model):
    for kw in ({"n_threads": -1}, {"device": "tpu"}, {"mem_limit": "lots"}, {"mem_limit": -5},
               {"batch_tokens": -1}, {"no_pad": 1}):
        with pytest.raises(ValueError):
            spectral.Model(BYTE_MODEL, **kw)
    with pytest.raises(ValueError):
        model.embed(["x"], pooling="max")
    with pytest.raises(ValueError):
        model.embed(["x"], pooling="none")
    with pytest.raises(TypeError):
        model.embed([1, 2, 3])
    with pytest.raises(TypeError):
        model.tokenize(12)
    if not spectral.backend_available("cuda"):
        with pytest.raises(spectral.SpectralError) as e:
            spectral.Model(BYTE_MODEL, device="cuda")
        assert e.value.status in (7, 8) and e.value.message


def test_document_errors_are_per_document(model):
    good = model.embed(["first", "third"])
    r = model.embed_batch(["first", [1, 2, model.n_vocab + 5], "third", []])
    assert r.errors[0] is None and r.errors[2] is None
    bad = r.errors[1]
    assert isinstance(bad, spectral.InvalidArgumentError) and bad.index == 1 and bad.status == 1
    assert "vocabulary" in bad.message and str(bad).startswith("document 1: ")
    assert isinstance(r.errors[3], spectral.InvalidArgumentError) and r.errors[3].index == 3
    assert np.isnan(r.embeddings[1]).all() and np.isnan(r.embeddings[3]).all()
    assert same_bits(r.embeddings[[0, 2]], good)  # the others as if alone
    assert r.n_tokens.tolist() == [3, 3, 3, 0]
    with pytest.raises(spectral.InvalidArgumentError) as e:
        model.embed_tokens([[101, 102], [-1]])
    assert e.value.index == 1


def test_closed_model():
    m = spectral.Model(BYTE_MODEL, n_threads=1)
    m.embed("abc")
    m.close()
    m.close()  # twice is fine
    assert m.closed
    for call in (lambda: m.embed("abc"), lambda: m.tokenize("abc"), lambda: m.token_states("abc")):
        with pytest.raises(ValueError):
            call()


def test_token_ids_are_refused_not_coerced(model):
    """Issue 21: 5.9, '5', True and 2**32 + 5 were all read as token 5."""
    five = model.embed_tokens([[5]])
    for bad in ([[5.9]], [["5"]], [[True]], [[5, True]], [[None]], [[5, 6.0]],
                [np.array([5.0])], [np.array([True])], [np.array(["5"])],
                [5], [b"\x05"], ["5"], [{5}], [{5: 1}]):
        with pytest.raises(TypeError):
            model.embed_tokens(bad)
    for big in ([[2**32 + 5]], [[2**31]], [[-2**31 - 1]], [[5, 2**64 + 5]],
                [np.array([2**32 + 5])], [np.array([2**63 + 5], dtype=np.uint64)]):
        with pytest.raises(ValueError) as e:  # an InvalidArgumentError, as for any id outside the vocabulary
            model.embed_tokens(big)
        assert isinstance(e.value, spectral.InvalidArgumentError) and "vocabulary" in str(e.value), big
    with pytest.raises(ValueError):
        model.embed_tokens([np.array([[5, 6]])])  # one document is one-dimensional
    # embed_batch: an id out of range fails its document only; a wrong type fails the call
    r = model.embed_batch([[2**32 + 5], [5]])
    assert isinstance(r.errors[0], spectral.InvalidArgumentError) and r.errors[0].index == 0
    assert r.errors[1] is None and same_bits(r.embeddings[1], five[0])
    with pytest.raises(TypeError):
        model.embed_batch(["text", [5.9]])
    with pytest.raises(TypeError):
        model.token_states([5.9])
    with pytest.raises(TypeError):
        model.token_states(5)
    # what people pass: lists, tuples, ranges, numpy integers of any width, a 2-D batch
    for ok in ([[5]], [(5,)], [range(5, 6)], [[np.int64(5)]], [np.array([5], np.int64)],
               [np.array([5], np.uint16)], [np.array([5], object)], np.array([[5]], np.int32)):
        assert same_bits(model.embed_tokens(ok), five), ok


def test_inputs_must_be_ordered_collections(model):
    """Issue 21: embed({'a': 1}) embedded the dict's key."""
    for bad in ({"a": 1}, {"a"}, frozenset(["a"]), 5, None):
        with pytest.raises(TypeError):
            model.embed(bad)
        with pytest.raises(TypeError):
            model.embed_batch(bad)
    with pytest.raises(TypeError):
        model.embed_tokens({0: [5]})
    with pytest.raises(TypeError):
        model.embed([b"ok", 5])
    # any ordered iterable of texts is fine
    want = model.embed(["a", "b"])
    assert same_bits(model.embed(("a", "b")), want)
    assert same_bits(model.embed(t for t in ["a", "b"]), want)
    assert same_bits(model.embed(np.array(["a", "b"])), want)


INTERRUPT_SCRIPT = r"""
import json, os, signal, sys, threading, time
import warnings
import numpy as np
import spectral

warnings.simplefilter("ignore", spectral.LongInputWarning)
m = spectral.Model(sys.argv[1], n_threads=1)
doc = bytes(range(32, 127)) * 160  # 15,200 tokens: one pass of about a second on a 2-core VM
while True:  # long enough that the signal, sent after DELAY, lands inside the pass
    t0 = time.monotonic()
    m.embed(doc)
    res = {"one_pass": time.monotonic() - t0}
    if res["one_pass"] > 0.5 or len(doc) > 1 << 21:
        break
    doc *= 2
DELAY = 0.2


def interrupted(call):
    timer = threading.Timer(DELAY, os.kill, (os.getpid(), signal.SIGINT))
    t0 = time.monotonic()
    timer.start()
    try:
        out = {"raised": None, "nan": bool(np.isnan(np.asarray(call())).any())}
    except BaseException as e:
        out = {"raised": type(e).__name__}
    out["seconds"] = time.monotonic() - t0
    timer.join()
    time.sleep(0.05)  # a signal left pending would be raised here, outside the test
    return out


res["embed"] = interrupted(lambda: m.embed(doc))
res["token_states"] = interrupted(lambda: m.token_states(doc))
res["batch"] = interrupted(lambda: m.embed([doc] * 4))
res["handler_restored"] = signal.getsignal(signal.SIGINT) is signal.default_int_handler
calls = []
signal.signal(signal.SIGINT, lambda s, f: calls.append(s))  # the app's own, which does not raise
res["own_handler"] = interrupted(lambda: m.embed([doc, b"short"]))
res["own_handler_calls"] = len(calls)


def second(s, f):
    calls.append("second")


signal.signal(signal.SIGINT, lambda s, f: signal.signal(signal.SIGINT, second))
interrupted(lambda: m.embed(doc))  # a handler that installs another: that one stays
res["handler_installed_by_handler_kept"] = signal.getsignal(signal.SIGINT) is second
print(json.dumps(res))
"""


def test_ctrl_c_interrupts_and_never_returns_nan():
    """Issue 21: a KeyboardInterrupt raised inside the ctypes callback was printed and
    dropped; embed() returned a NaN row and token_states() raised IndexError. Run in a
    child process: a SIGINT the package failed to handle must not stop this one."""
    p = subprocess.run([sys.executable, "-c", INTERRUPT_SCRIPT, str(BYTE_MODEL)],
                       capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, p.stderr
    res = json.loads(p.stdout)
    assert res["one_pass"] > 0.5, f"one pass took {res['one_pass']:.2f} s: too quick to interrupt"
    assert "Exception ignored" not in p.stderr, p.stderr
    for call in ("embed", "token_states", "batch"):
        assert res[call]["raised"] == "KeyboardInterrupt", (call, res[call])
    # the batch stopped after the document that was running: not all four passes
    assert res["batch"]["seconds"] < 2.5 * res["one_pass"], res
    assert res["handler_restored"]
    # a handler that does not raise is called, and the batch goes on to the end
    assert res["own_handler"] == {"raised": None, "nan": False, "seconds": res["own_handler"]["seconds"]}
    assert res["own_handler_calls"] == 1
    assert res["handler_installed_by_handler_kept"]


def test_nonfinite_output_is_an_error(tmp_path):
    """A model with a NaN weight: refused when loaded, or each document fails; never a NaN row."""
    gguf = pytest.importorskip("gguf")
    bias = next(t for t in gguf.GGUFReader(str(BYTE_MODEL)).tensors if t.name == "blk.2.ffn_down.bias")
    data = bytearray(BYTE_MODEL.read_bytes())
    data[bias.data_offset:bias.data_offset + 4] = np.float32(np.nan).tobytes()
    bad = tmp_path / "nan-weight.gguf"
    bad.write_bytes(bytes(data))
    try:
        m = spectral.Model(bad, n_threads=1)
    except spectral.SpectralError:
        return  # refused at load (issue 21 item 7 in the library)
    with m:
        with pytest.raises(spectral.SpectralError) as e:
            m.embed(["a document", "another"])
        assert "non-finite" in e.value.message
        r = m.embed_batch(["a document"])
        assert isinstance(r.errors[0], spectral.SpectralError) and r.errors[0].index == 0
        with pytest.raises(spectral.SpectralError):
            m.token_states("a document")


# ---------------------------------------------------------------- long inputs


def test_long_input_warns(byte_model):
    """Issue 25: past the model's training length the CLI warns; Python said nothing."""
    n = byte_model.n_ctx_train
    assert n == 4096  # the byte model's context_length; each byte is a token
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        byte_model.embed(b"a" * n)  # exactly the training length: no warning
        byte_model.embed_tokens([np.full(n, 97)])
    calls = {
        "embed": lambda: byte_model.embed([b"short", b"a" * (n + 1)]),
        "embed_tokens": lambda: byte_model.embed_tokens([[97], np.full(n + 1, 97)]),
        "embed_batch": lambda: byte_model.embed_batch([b"short", b"a" * (n + 1)]),
        "token_states": lambda: byte_model.token_states(b"a" * (n + 1)),
    }
    for name, call in calls.items():
        with pytest.warns(spectral.LongInputWarning) as w:
            call()
        assert len(w) == 1, name
        msg = str(w[0].message)
        assert f"{n + 1} tokens" in msg and f"training length ({n} tokens)" in msg, msg
        assert w[0].filename == __file__, (name, w[0].filename)  # points at the caller's line
    with pytest.warns(spectral.LongInputWarning, match="2 of 3 inputs"):
        byte_model.embed([b"a" * (n + 5), b"b", b"a" * (n + 1)])


# ---------------------------------------------------------------- the memory cap


@pytest.mark.filterwarnings("ignore::spectral.LongInputWarning")  # long on purpose
def test_memory_limit(byte_model, cli, tmp_path):
    long_doc = bytes(random.Random(3).getrandbits(7) + 32 for _ in range(60000))
    short = b"a short document"
    need = byte_model.memory_minimum(len(long_doc))
    assert byte_model.memory_minimum(len(short)) < need <= byte_model.memory_needed(len(long_doc))
    cap = need - 1
    free = byte_model.embed([short, long_doc])
    with spectral.Model(BYTE_MODEL, n_threads=2, mem_limit=cap) as m:
        with pytest.raises(spectral.MemoryLimitError) as e:
            m.embed([short, long_doc])
        assert e.value.status == 5 and e.value.index == 1 and isinstance(e.value, MemoryError)
        assert str(cap) in e.value.message  # the library names the limit
        r = m.embed_batch([short, long_doc, short])
        assert [type(x) for x in r.errors] == [type(None), spectral.MemoryLimitError, type(None)]
        assert same_bits(r.embeddings[0], free[0]) and same_bits(r.embeddings[2], free[0])
    with spectral.Model(BYTE_MODEL, n_threads=2, mem_limit=need) as m:  # exactly enough
        assert same_bits(m.embed([long_doc]), free[1:])
    # the CLI refuses the same document under the same cap
    files = write_files(tmp_path, [short, long_doc])
    raw, recs, rc, err = run_cli(cli, BYTE_MODEL, files, "--mem-limit", str(cap), check=False)
    assert rc == 1 and [r["input"] for r in recs] == [str(files[0])] and "memory" in err
    assert spectral.parse_size("1.5K") == 1536 and spectral.parse_size("2GiB") == 2 << 30


# ---------------------------------------------------------------- threads


def test_threads_share_a_model(model):
    texts = [t for t in corpus(seed=5, n=10)[5:]]
    want = model.embed(texts)
    results, failures = {}, []

    def work(k):
        try:
            for rep in range(2):
                results[(k, rep)] = model.embed(texts[k % 3:] + texts[:k % 3])
        except BaseException as e:  # pragma: no cover - reported below
            failures.append(e)

    threads = [threading.Thread(target=work, args=(k,)) for k in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not failures
    for (k, rep), got in results.items():
        assert same_bits(np.roll(got, k % 3, axis=0), want)
    assert len(results) == 6


def test_gil_released_while_encoding(byte_model):
    """White-box: between the callbacks of documents 0 and 1 only C runs (document 1,
    ~1 s here). A thread woken in callback 0 needs the GIL to note the time: it gets it
    at once if that C code released the GIL, and only when callback 1 starts if not.
    (An order of events, not a speed: the bound is half the document's own time.)"""
    woke = threading.Event()
    ran_at = []

    def other():
        woke.wait()
        ran_at.append(time.monotonic())

    t = threading.Thread(target=other)
    t.start()
    marks = {}

    def on_ok(k, ctx):
        if k == 0:
            woke.set()
            marks[0] = time.monotonic()
        else:
            marks[1] = time.monotonic()

    docs = [np.frombuffer(b"short", np.uint8).astype(np.int32),
            np.frombuffer(bytes(range(32, 127)) * 300, np.uint8).astype(np.int32)]  # 28,500 tokens
    byte_model._encode_batch(docs, spectral._lib.POOLING_MEAN, True, on_ok, None)
    t.join()
    assert marks[1] - marks[0] > 0.02, "document 1 was too quick to tell"
    assert ran_at[0] - marks[0] < 0.5 * (marks[1] - marks[0]), \
        (ran_at[0] - marks[0], marks[1] - marks[0])


# ---------------------------------------------------------------- leaks


def rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


@pytest.mark.skipif(not os.path.exists("/proc/self/statm"), reason="needs /proc (Linux)")
def test_no_leak_over_10000_calls():
    with spectral.Model(BYTE_MODEL, n_threads=1) as m:
        def calls(n):
            for i in range(n):
                m.embed(["leak check %d" % i])
                if i % 10 == 0:
                    m.token_states(b"states")
                    m.embed_batch(["ok", [999999]])  # an error's path too
        calls(1000)  # warm-up: contexts, arenas and Python's allocator reach their sizes
        before = rss_bytes()
        calls(10000)
        grown = rss_bytes() - before
    # one leaked output row per call would be 10,000 x 1 KiB = 10 MiB
    assert grown < 4 << 20, f"RSS grew by {grown / 1048576:.1f} MiB over 10,000 calls"
    # models and contexts opened and closed
    before = rss_bytes()
    for _ in range(100):
        with spectral.Model(BYTE_MODEL, n_threads=2) as m:
            m.embed("x")
    grown = rss_bytes() - before
    assert grown < 8 << 20, f"RSS grew by {grown / 1048576:.1f} MiB over 100 open/close cycles"


def test_no_pad():
    # tests/data/m2bert/tiny pads every document to its 128 positions unless no_pad
    path = ROOT / "tests" / "data" / "m2bert" / "tiny" / "model.gguf"
    text = "w1 w2 w3 w40 w5"
    with spectral.Model(path, n_threads=2) as padded, spectral.Model(path, n_threads=2, no_pad=True) as own:
        ids = padded.tokenize(text)
        assert len(ids) == 7  # [CLS] five words [SEP]
        h_pad, h_own = padded.token_states(text), own.token_states(text)
        assert h_pad.shape == h_own.shape == (7, padded.n_embd)  # the real tokens' rows only
        assert not np.allclose(h_pad, h_own, atol=1e-3)  # the [PAD] tail changes every state
        e_pad, e_own = padded.embed([text]), own.embed([text])
        assert not np.allclose(e_pad, e_own, atol=1e-3)
        # padding is running the [PAD] ids (id 0) too and keeping the real rows
        full = own.token_states(np.concatenate([ids, np.zeros(128 - len(ids), dtype=ids.dtype)]))
        assert full.shape[0] == 128 and np.array_equal(full[:7], h_pad)
