"""Load on the inference service over loopback: the real server (`python -m fashion_lib serve`) on a free
port, N concurrent clients (threads with keep-alive connections), each sending its requests one after
the other. Scenarios:

- single 28×28 test images as PNG uploads (POST /predict) and as pixel JSON (POST /predict/pixels);
- single ≈ 1 MP product photos (JPEG; test images made into photos as in bench.photo_synthetic, upscaled);
- 28×28 uploads with 10 % malformed files mixed in (known-bad: each is refused by photos.convert_upload).

Prints throughput, latency percentiles and errors (a good request not answered 200, a bad one not
answered 4xx, any 5xx, any broken connection); asserts nothing. Goals here: 0 errors; p99 ≤ 100 ms for
28×28 images with the shipped baseline.

Run: python -m bench.serve_load [--requests 1000] [--clients 16] [--model baseline] [--scenario ...]
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import subprocess
import sys
import threading
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from bench.photo_synthetic import make_photo
from fashion_lib import config, data, photos
from tests.processes import free_port, stop
from tests.unit.test_photos import BAD, encode, malformed_corpus

STARTUP_TIMEOUT_S = 120
SCENARIOS = ("images", "pixels", "photos", "malformed")
PHOTO_PIXELS = 1_000_000
DISTINCT_PHOTOS = 32


@dataclass(frozen=True)
class Call:
    path: str
    body: bytes
    content_type: str
    bad: bool = False  # a malformed upload: the right answer is a 4xx


# ------------------------------------------------------------------------------------------ the server


def start_server(model: str, port: int, log: Path, *extra: str) -> subprocess.Popen:
    """`python -m fashion_lib serve` in its own process group, output to ``log``; returns once /health says
    ready (RuntimeError with the log's tail when it exits or takes longer than STARTUP_TIMEOUT_S)."""
    command = [sys.executable, "-m", "fashion_lib", "serve", "--model", model, "--port", str(port), *extra]
    with log.open("w") as out:
        proc = subprocess.Popen(
            command, cwd=config.REPO_ROOT, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
        )
    deadline = time.monotonic() + STARTUP_TIMEOUT_S
    while time.monotonic() < deadline and proc.poll() is None:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2) as response:
                if json.load(response)["status"] == "ready":
                    return proc
        except OSError:  # not listening yet, or 503 while loading
            time.sleep(0.2)
    stop(proc)
    raise RuntimeError(f"the service did not become ready:\n{log.read_text()[-3000:]}")


# ------------------------------------------------------------------------------------------- payloads


def multipart(name: str, data: bytes) -> tuple[bytes, str]:
    boundary = "fashionbench7d1c"
    head = (
        f'--{boundary}\r\nContent-Disposition: form-data; name="files"; filename="{name}"\r\n'
        "Content-Type: application/octet-stream\r\n\r\n"
    ).encode()
    return head + data + f"\r\n--{boundary}--\r\n".encode(), f"multipart/form-data; boundary={boundary}"


def upload(name: str, data: bytes, bad: bool = False) -> Call:
    body, content_type = multipart(name, data)
    return Call("/predict", body, content_type, bad)


def product_photo(image28: np.ndarray, rng: np.random.Generator) -> bytes:
    """A test image made into a product photo on a white or coloured background, scaled to ≈ 1 MP, JPEG."""
    rgb = make_photo(image28, str(rng.choice(["white catalogue", "plain colour"])), rng)
    scale = (PHOTO_PIXELS / (rgb.shape[0] * rgb.shape[1])) ** 0.5
    size = (round(rgb.shape[1] * scale), round(rgb.shape[0] * scale))
    return encode(cv2.resize(rgb, size, interpolation=cv2.INTER_CUBIC), "JPEG", quality=90)


def known_bad_uploads() -> list[bytes]:
    """Malformed files the upload path refuses: the fuzz corpus's refused ones and the named bad cases."""
    refused = [*BAD.values(), b"", b"this is not an image"]
    for payload in malformed_corpus():
        try:
            photos.convert_upload(payload)
        except photos.PhotoError:
            refused.append(payload)
    return refused


def plan(scenario: str, clients: int, requests: int, x_test: np.ndarray) -> list[list[Call]]:
    """The calls of each client for one scenario; different images across clients and requests."""
    n = clients * requests
    index = np.arange(n) % len(x_test)
    if scenario == "images":
        calls = [upload(f"test{i}.png", encode(x_test[i], "PNG")) for i in index]
    elif scenario == "pixels":
        calls = [
            Call("/predict/pixels", json.dumps([x_test[i].tolist()]).encode(), "application/json")
            for i in index
        ]
    elif scenario == "photos":
        rng = np.random.default_rng(0)
        distinct = [upload(f"photo{i}.jpg", product_photo(x_test[i], rng)) for i in range(DISTINCT_PHOTOS)]
        calls = [distinct[i % DISTINCT_PHOTOS] for i in range(n)]
    else:
        bad = known_bad_uploads()
        calls = [
            upload(f"bad{k}", bad[k % len(bad)], bad=True)
            if k % 10 == 9
            else upload(f"t{i}.png", encode(x_test[i], "PNG"))
            for k, i in enumerate(index)
        ]
    return [calls[c * requests : (c + 1) * requests] for c in range(clients)]


# -------------------------------------------------------------------------------------------- the load


@dataclass
class Outcome:
    status: int  # 0: the connection broke
    seconds: float
    bad: bool


def client(port: int, calls: list[Call], outcomes: list[Outcome], start: threading.Barrier) -> None:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    start.wait()
    for call in calls:
        began = time.perf_counter()
        try:
            connection.request("POST", call.path, call.body, {"Content-Type": call.content_type})
            response = connection.getresponse()
            response.read()
            status = response.status
        except (OSError, http.client.HTTPException):
            status = 0
            connection.close()
            connection = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
        outcomes.append(Outcome(status, time.perf_counter() - began, call.bad))
    connection.close()


def load(port: int, per_client: list[list[Call]]) -> tuple[list[Outcome], float]:
    outcomes: list[Outcome] = []  # list.append is atomic: the threads share it
    start = threading.Barrier(len(per_client) + 1)
    threads = [threading.Thread(target=client, args=(port, calls, outcomes, start)) for calls in per_client]
    for thread in threads:
        thread.start()
    start.wait()
    began = time.perf_counter()
    for thread in threads:
        thread.join()
    return outcomes, time.perf_counter() - began


def report(title: str, outcomes: list[Outcome], seconds: float) -> None:
    ms = 1000 * np.array([o.seconds for o in outcomes])
    good = [o for o in outcomes if not o.bad]
    bad = [o for o in outcomes if o.bad]
    wrong = sum(o.status != 200 for o in good) + sum(not 400 <= o.status < 500 for o in bad)
    server_errors = sum(o.status >= 500 for o in outcomes)
    broken = sum(o.status == 0 for o in outcomes)
    p50, p95, p99 = np.percentile(ms, [50, 95, 99])
    print(f"\n== {title}")
    print(f"   {len(outcomes):,} requests in {seconds:.1f} s: {len(outcomes) / seconds:,.0f} req/s")
    print(f"   machine load average (1 min) at the end: {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores")
    print(f"   latency p50 {p50:.1f} ms, p95 {p95:.1f} ms, p99 {p99:.1f} ms, max {ms.max():.1f} ms")
    line = f"   errors {wrong} (server errors {server_errors}, broken connections {broken})"
    if bad:
        answered = sum(400 <= o.status < 500 for o in bad)
        line += f"; malformed uploads {len(bad):,}, answered 4xx: {answered:,}; good ones answered 200: "
        line += f"{sum(o.status == 200 for o in good):,} of {len(good):,}"
    print(line)


TITLES = {
    "images": "28×28 images, one PNG upload per request (POST /predict)",
    "pixels": "28×28 images, one per request as pixel JSON (POST /predict/pixels)",
    "photos": "≈ 1 MP product photos, one JPEG per request (POST /predict, photo conversion)",
    "malformed": "28×28 PNG uploads with 10 % malformed files (POST /predict)",
}


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--requests", type=int, default=1000, help="requests per client")
    parser.add_argument("--clients", type=int, default=16)
    parser.add_argument("--model", default="baseline", help="run id or folder, shipped model, export folder")
    parser.add_argument("--scenario", nargs="+", choices=SCENARIOS, default=list(SCENARIOS))
    parser.add_argument("--batch-window-ms", type=float, help="passed to the server (default: its own)")
    args = parser.parse_args()
    x_test = data.load().x_test
    extra = [] if args.batch_window_ms is None else ["--batch-window-ms", str(args.batch_window_ms)]
    log = Path(config.fashion_home()) / "serve_load.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    port = free_port()
    began = time.perf_counter()
    server = start_server(args.model, port, log, *extra)
    print(f"model '{args.model}' served on 127.0.0.1:{port}, ready in {time.perf_counter() - began:.1f} s")
    print(f"{args.clients} clients × {args.requests:,} requests each; {os.cpu_count()} CPU cores; log: {log}")
    try:
        for scenario in args.scenario:
            per_client = plan(scenario, args.clients, args.requests, x_test)
            load(port, [calls[:2] for calls in per_client])  # warm-up: connections, first conversions
            report(TITLES[scenario], *load(port, per_client))
    finally:
        stop(server)


if __name__ == "__main__":
    main()
