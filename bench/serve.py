"""The server under load: N clients on the loopback POST one image in a loop for a bounded time.

    python -m mit_semseg.serve --cfg CFG ... &            # or --model NAME
    python bench/serve.py [--url http://127.0.0.1:8000] [--clients 8] [--seconds 20] [--size 512x384] \
        [--model NAME] [--pid PID]

Prints the requests per second answered 200, the latency percentiles (p50, p90, p99) of those, how many got 503
(a full queue or the time limit) and any other status (there should be none); with --pid, the server's resident
memory before and after, which a bounded queue keeps from growing with the load.
"""

from __future__ import annotations

import argparse
import collections
import http.client
import statistics
import threading
import time
import urllib.parse

import cv2
import numpy as np


def _photo(width: int, height: int) -> bytes:
    """A JPEG of smooth random colour regions (something like a photo, the same in every run)."""
    rng = np.random.default_rng(0)
    small = rng.integers(0, 256, (max(2, height // 32), max(2, width // 32), 3), dtype=np.uint8)
    image = cv2.GaussianBlur(cv2.resize(small, (width, height), interpolation=cv2.INTER_CUBIC), (0, 0), 3)
    return cv2.imencode(".jpg", image)[1].tobytes()


def _resident_mb(pid: int | None) -> float | None:
    if pid is None:
        return None
    with open(f"/proc/{pid}/status") as f:
        return next(int(line.split()[1]) / 1024 for line in f if line.startswith("VmRSS"))


def _client(url, path: str, body: bytes, until: float, results: list, lock: threading.Lock) -> None:
    connection = http.client.HTTPConnection(url.hostname, url.port or 80, timeout=120)
    while time.perf_counter() < until:
        started = time.perf_counter()
        try:
            connection.request("POST", path, body=body, headers={"Content-Type": "image/jpeg"})
            response = connection.getresponse()
            response.read()
            status = response.status
        except (OSError, http.client.HTTPException) as err:
            status = type(err).__name__
            connection.close()
            connection = http.client.HTTPConnection(url.hostname, url.port or 80, timeout=120)
        with lock:
            results.append((status, time.perf_counter() - started))
        if status == 503:
            time.sleep(0.05)  # a client that backs off a little, as Retry-After asks
    connection.close()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--url", default="http://127.0.0.1:8000")
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--size", default="512x384", help="WIDTHxHEIGHT of the image (default 512x384)")
    parser.add_argument("--model", help="the model to ask (default: the server's default)")
    parser.add_argument("--pid", type=int, help="the server's process, for its memory before and after")
    args = parser.parse_args()
    url = urllib.parse.urlparse(args.url)
    width, height = (int(v) for v in args.size.split("x"))
    body = _photo(width, height)
    path = "/v1/segment" + (f"?model={urllib.parse.quote(args.model)}" if args.model else "")
    before, results, lock = _resident_mb(args.pid), [], threading.Lock()
    until = time.perf_counter() + args.seconds
    threads = [
        threading.Thread(target=_client, args=(url, path, body, until, results, lock)) for _ in range(args.clients)
    ]
    started = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    elapsed = time.perf_counter() - started
    statuses = collections.Counter(status for status, _ in results)
    answered = sorted(seconds for status, seconds in results if status == 200)
    print(f"{args.clients} clients, {args.seconds:g} s, {width}x{height} JPEG ({len(body)} bytes), {args.url}{path}")
    print(f"statuses: {dict(statuses)}")
    if answered:
        q = statistics.quantiles(answered, n=100) if len(answered) > 1 else answered * 99
        print(
            f"200s: {len(answered) / elapsed:.2f} requests/s; latency p50 {1000 * q[49]:.0f} ms, "
            f"p90 {1000 * q[89]:.0f} ms, p99 {1000 * q[98]:.0f} ms"
        )
    if before is not None:
        print(f"server memory: {before:.0f} MB before, {_resident_mb(args.pid):.0f} MB after")
    return 0 if set(statuses) <= {200, 503} else 1


if __name__ == "__main__":
    raise SystemExit(main())
