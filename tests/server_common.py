"""Helpers shared by the spectral-server tests: start and stop a server on a
free port of 127.0.0.1, plain HTTP requests, and reference embeddings from
spectral-embed (the CLI the server must agree with bit for bit)."""
import base64
import http.client
import json
import os
import signal
import socket
import struct
import subprocess
import tempfile
import threading
import time

SKIP = 77  # CTest SKIP_RETURN_CODE


class Checker:
    def __init__(self):
        self.failures = 0
        self.checks = 0

    def __call__(self, cond, what):
        self.checks += 1
        if not cond:
            self.failures += 1
            print("FAIL:", what, flush=True)
        return cond

    def done(self, name):
        print(f"{name}: {self.checks - self.failures} passed, {self.failures} failed", flush=True)
        return 1 if self.failures else 0


class Server:
    """spectral-server on 127.0.0.1 with --port 0: the port it bound is read
    from its first line of output, so there is no race for a free port."""

    def __init__(self, binary, model, *args, timeout=120):
        self.proc = subprocess.Popen([binary, "-m", model, "--port", "0", *args],
                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        self.stderr_lines = []
        line = b""
        box = {}

        def first_line():
            box["line"] = self.proc.stdout.readline()
        t = threading.Thread(target=first_line, daemon=True)
        t.start()
        t.join(timeout)
        line = box.get("line", b"").decode(errors="replace")
        if "listening on http://" not in line:
            self.proc.kill()
            _, err = self.proc.communicate(timeout=30)
            raise RuntimeError(f"server did not start: {line!r} {err.decode(errors='replace')}")
        self.banner = line
        self.port = int(line.split("listening on http://")[1].split(" ")[0].rsplit(":", 1)[1])
        # Drain stderr in the background so a chatty server never blocks.
        self._err = threading.Thread(target=self._read_err, daemon=True)
        self._err.start()

    def _read_err(self):
        for l in self.proc.stderr:
            self.stderr_lines.append(l.decode(errors="replace"))

    def stop(self, sig=signal.SIGTERM, timeout=120):
        """Signals the server (unless sig is None) and returns its exit status."""
        if sig is not None and self.proc.poll() is None:
            self.proc.send_signal(sig)
        try:
            rc = self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            rc = self.proc.wait()
            print("server did not stop in time", flush=True)
            return -999
        self._err.join(5)
        return rc

    def stderr(self):
        return "".join(self.stderr_lines)

    def request(self, method, path, body=None, headers=None, timeout=300):
        return request(self.port, method, path, body, headers, timeout)

    def embed(self, payload, headers=None, timeout=300):
        h = {"Content-Type": "application/json"}
        h.update(headers or {})
        body = payload if isinstance(payload, (bytes, bytearray)) else json.dumps(payload).encode()
        return self.request("POST", "/v1/embeddings", body, h, timeout)


def request(port, method, path, body=None, headers=None, timeout=300):
    """One request on a new connection: (status, headers dict, body bytes)."""
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        c.request(method, path, body=body, headers=headers or {})
        r = c.getresponse()
        data = r.read()
        return r.status, {k.lower(): v for k, v in r.getheaders()}, data
    finally:
        c.close()


def raw_exchange(port, data, timeout=10):
    """Sends raw bytes on a new connection; everything the server answers until it closes."""
    s = socket.create_connection(("127.0.0.1", port), timeout=timeout)
    try:
        s.sendall(data)
        resp = b""
        while True:
            chunk = s.recv(65536)
            if not chunk:
                break
            resp += chunk
    except OSError:
        pass
    s.close()
    return resp


def decode_base64_floats(s):
    raw = base64.b64decode(s)
    return list(struct.unpack("<%df" % (len(raw) // 4), raw))


def f32(values):
    """Python floats -> the float32 values they stand for (as Python floats)."""
    return list(struct.unpack("<%df" % len(values), struct.pack("<%df" % len(values), *values)))


def cli_embed(embed_bin, model, texts, *args):
    """[(n_tokens, embedding)] from spectral-embed, one file per text."""
    with tempfile.TemporaryDirectory() as d:
        paths = []
        for i, t in enumerate(texts):
            p = os.path.join(d, f"{i}.txt")
            with open(p, "wb") as f:
                f.write(t.encode() if isinstance(t, str) else t)
            paths.append(p)
        out = subprocess.run([embed_bin, "-m", model, *args, *paths], capture_output=True, timeout=600)
        if out.returncode != 0:
            raise RuntimeError(f"spectral-embed failed: {out.stderr.decode(errors='replace')}")
        recs = [json.loads(l) for l in out.stdout.decode().splitlines()]
        return [(r["n_tokens"], r["embedding"]) for r in recs]


def metrics(server, headers=None):
    """/metrics as {name{labels}: value}."""
    st, _, body = server.request("GET", "/metrics", headers=headers)
    out = {}
    for line in body.decode().splitlines():
        if line and not line.startswith("#"):
            k, v = line.rsplit(" ", 1)
            out[k] = float(v)
    return st, out


def words(n, seed):
    """n pseudo-random English-ish words, deterministic in seed."""
    vocab = ("the spectral encoder reads whole document mixing filter token model server "
             "embedding request batch queue memory limit answer client vector fast slow "
             "river mountain quantum market history music garden winter").split()
    x = seed * 2654435761 % 2**32 or 1
    out = []
    for _ in range(n):
        x = (x * 1103515245 + 12345) % 2**31
        out.append(vocab[x % len(vocab)])
    return " ".join(out)


def wait_until(pred, timeout, step=0.02):
    t0 = time.time()
    while time.time() - t0 < timeout:
        if pred():
            return True
        time.sleep(step)
    return False
