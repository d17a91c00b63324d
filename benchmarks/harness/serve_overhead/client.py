"""The client of benchmarks/serve_overhead.py: sequential raw requests over one keep-alive
connection (the standard library's http.client, or httpx), each one's latency and the model's
own time the server reports in its headers."""

from __future__ import annotations

import http.client
import re
import time
import urllib.parse
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import httpx
import numpy as np

from harness.serve_overhead.timing import WARMUP_REQUESTS, Latency, timed_ms

RAW = {"Content-Type": "application/octet-stream"}
_COMPUTE = re.compile(r"\bcompute;dur=([0-9.]+)")


@dataclass
class ClientRun:
    latency: Latency
    # The model's own time for each request, timed in its worker during this run: TorchServe's
    # handler sends it (X-Handler-Ms), Packrat in its Server-Timing header.
    handler_ms: Latency | None
    response_bytes: int
    overhead_ms: Latency | None = None  # per request: e2e - handler time


CLIENTS = ("http.client", "httpx")
"""The main client (the standard library's, with the least client-side cost per request) and
the popular one, whose extra cost shows in the e2e times."""


def run_client(url: str, body: bytes, requests: int, kind: str = CLIENTS[0]) -> ClientRun:
    """`requests` sequential POSTs of `body` over one keep-alive connection, after a warm-up,
    with the `kind` client."""
    samples: list[float] = []
    handler_ms: list[float] = []
    post = _httpx_post if kind == "httpx" else _stdlib_post
    with post(url) as send:
        for i in range(WARMUP_REQUESTS + requests):
            started = time.perf_counter()
            headers, content = send(body)
            elapsed_ms = (time.perf_counter() - started) * 1000.0
            handler = model_ms(headers)
            if i >= WARMUP_REQUESTS:
                samples.append(elapsed_ms)
                if handler is not None:
                    handler_ms.append(handler)
    overhead = [e - h for e, h in zip(samples, handler_ms, strict=True)] if handler_ms else []
    return ClientRun(
        Latency.of(samples),
        Latency.of(handler_ms) if handler_ms else None,
        len(content),
        Latency.of(overhead) if overhead else None,
    )


Send = Callable[[bytes], tuple[httpx.Headers, bytes]]


@contextmanager
def _httpx_post(url: str) -> Iterator[Send]:
    with httpx.Client(timeout=60.0) as client:

        def send(body: bytes) -> tuple[httpx.Headers, bytes]:
            response = client.post(url, content=body, headers=RAW)
            response.raise_for_status()
            return response.headers, response.content

        yield send


@contextmanager
def _stdlib_post(url: str) -> Iterator[Send]:
    parts = urllib.parse.urlsplit(url)
    connection = http.client.HTTPConnection(parts.hostname or "127.0.0.1", parts.port, timeout=60)
    try:

        def send(body: bytes) -> tuple[httpx.Headers, bytes]:
            connection.request("POST", parts.path, body=body, headers=RAW)
            response = connection.getresponse()
            content = response.read()
            if response.status != 200:
                raise RuntimeError(f"POST {url}: {response.status} {content[:200]!r}")
            return httpx.Headers(response.getheaders()), content

        yield send
    finally:
        connection.close()


def model_ms(headers: httpx.Headers) -> float | None:
    """The model's time for a request, from its response: TorchServe's handler here sends
    X-Handler-Ms; Packrat sends `Server-Timing: compute;dur=MS`."""
    if "x-handler-ms" in headers:
        return float(headers["x-handler-ms"])
    found = _COMPUTE.search(headers.get("server-timing", ""))
    return float(found.group(1)) if found else None


def ping_latency(url: str, requests: int = 200) -> Latency:
    with httpx.Client(timeout=10.0) as client:
        return timed_ms(lambda: client.get(url).raise_for_status(), requests, warmup=20)


def payload(model_input_bytes: int) -> bytes:
    rng = np.random.default_rng(0)
    return rng.standard_normal(model_input_bytes // 4, dtype=np.float32).tobytes()
