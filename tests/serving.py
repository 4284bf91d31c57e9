"""The server of `python -m mit_semseg.serve` started for a test, and one HTTP request to it."""

import contextlib
import http.client
import socket
import subprocess
import sys
import time

from helpers import REPO


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def serving(config, opts, *flags, log=None):
    """`python -m mit_semseg.serve --cfg config` (with `flags`, then the config options `opts`) on a free port of
    127.0.0.1, until the block ends: (process, port)."""
    port = _free_port()
    command = [sys.executable, "-m", "mit_semseg.serve", "--cfg", str(config), "--gpu", "cpu"]
    process = subprocess.Popen(
        [*command, "--port", str(port), *flags, *opts],
        stdout=log or subprocess.DEVNULL,
        stderr=subprocess.STDOUT,
        cwd=REPO,
    )
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                if request(port, "GET", "/healthz")[0] == 200:
                    break
            except OSError:
                if process.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"the server did not start (exit {process.poll()})") from None
                time.sleep(0.1)
        yield process, port
    finally:
        if process.poll() is None:
            process.terminate()
        process.wait(timeout=30)


def request(port, method, path, body=None, headers=None):
    """(status, headers, body) of one request over a fresh connection."""
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    try:
        connection.request(method, path, body=body, headers=headers or {})
        response = connection.getresponse()
        return response.status, dict(response.getheaders()), response.read()
    finally:
        connection.close()
