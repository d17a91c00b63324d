"""Load generator client: loopback-only targets, payloads, Server-Timing, one exchange."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import httpx
import numpy as np
import pytest

from packrat.bench.loadgen import Payload, Protocol, Target, check_loopback
from packrat.bench.loadgen.client import Reply, compute_time_ms, send
from packrat.errors import PackratError


@pytest.mark.parametrize(
    "url",
    ["http://127.0.0.1:8080", "http://localhost", "https://localhost:1/", "http://[::1]:8080/"],
)
def test_loopback_urls_are_accepted(url: str) -> None:
    check_loopback(url)
    assert not Target(url, "m").url.endswith("/")


@pytest.mark.parametrize(
    "url",
    [
        "http://example.com",
        "http://10.0.0.1:8080",
        "http://127.0.0.1.example.com",
        "http://0.0.0.0:8080",
        "http://user@example.com@127.0.0.1x",
    ],
)
def test_other_hosts_are_refused(url: str) -> None:
    with pytest.raises(PackratError, match="only targets this machine"):
        Target(url, "m")


@pytest.mark.parametrize("url", ["ftp://127.0.0.1", "localhost:8080", "127.0.0.1:8080"])
def test_urls_need_http(url: str) -> None:
    with pytest.raises(PackratError, match="http://"):
        check_loopback(url)


def test_bad_port_is_refused() -> None:
    with pytest.raises(PackratError, match="not a valid URL"):
        check_loopback("http://127.0.0.1:99999999")


def test_paths_per_protocol() -> None:
    assert Target("http://127.0.0.1:1", "m").path == "/predictions/m"
    assert Target("http://127.0.0.1:1", "m", Protocol.V2).path == "/v2/models/m/infer"
    with pytest.raises(PackratError, match="model"):
        Target("http://127.0.0.1:1", "a/b")


def test_random_payloads() -> None:
    raw = Payload.random(Protocol.TORCHSERVE, (3, 4, 5), seed=1)
    assert raw.content_type == "application/octet-stream"
    tensor = np.frombuffer(raw.body, dtype="<f4")
    assert tensor.size == 60
    assert Payload.random(Protocol.TORCHSERVE, (3, 4, 5), seed=1) == raw
    v2 = Payload.random(Protocol.V2, (2, 3), dtype="int64", seed=1)
    assert v2.content_type == "application/json"
    (inp,) = json.loads(v2.body)["inputs"]
    assert inp["shape"] == [1, 2, 3] and inp["datatype"] == "INT64" and len(inp["data"]) == 6
    assert Payload.random(Protocol.TORCHSERVE, (2,), content_type="x/y").content_type == "x/y"
    with pytest.raises(PackratError, match="dtype"):
        Payload.random(Protocol.V2, (2,), dtype="complex64")
    with pytest.raises(PackratError, match="shape"):
        Payload.random(Protocol.V2, (0, 2))


def test_payload_file(tmp_path: Path) -> None:
    (tmp_path / "x.bin").write_bytes(b"abc")
    assert Payload.from_file(tmp_path / "x.bin", "a/b") == Payload(b"abc", "a/b")
    with pytest.raises(PackratError, match="cannot read payload"):
        Payload.from_file(tmp_path / "missing", "a/b")


@pytest.mark.parametrize(
    ("header", "ms"),
    [
        ("compute;dur=1.5", 1.5),
        ("db;dur=2, compute;dur=3.25", 3.25),
        ('compute;desc="model";dur=4', 4.0),
        ("total;dur=9", None),
        ("", None),
        (None, None),
    ],
)
def test_server_timing(header: str | None, ms: float | None) -> None:
    assert compute_time_ms(header) == ms


def _send(handler: httpx.MockTransport, target: Target, timeout_s: float = 5.0) -> Reply:
    async def go() -> Reply:
        async with httpx.AsyncClient(transport=handler) as client:
            return await send(client, target, Payload(b"x", "a/b"), timeout_s)

    return asyncio.run(go())


def test_send_posts_the_body_and_reads_compute_time() -> None:
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(200, json=[1], headers={"Server-Timing": "compute;dur=2.5"})

    reply = _send(httpx.MockTransport(handler), Target("http://127.0.0.1:9", "m", Protocol.V2))
    assert reply == Reply(200, 2.5)
    assert reply.ok
    (request,) = seen
    assert request.method == "POST" and request.url.path == "/v2/models/m/infer"
    assert request.content == b"x" and request.headers["content-type"] == "a/b"


def test_send_turns_failures_into_replies() -> None:
    target = Target("http://127.0.0.1:9", "m")

    def unavailable(request: httpx.Request) -> httpx.Response:
        return httpx.Response(503, text="model m is not ready")

    def refused(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("connection refused", request=request)

    async def slow(request: httpx.Request) -> httpx.Response:
        await asyncio.sleep(1.0)
        return httpx.Response(200)

    reply = _send(httpx.MockTransport(unavailable), target)
    assert (reply.status, reply.error, reply.detail) == (503, "HTTP 503", "model m is not ready")
    assert _send(httpx.MockTransport(refused), target).error == "connect error"
    timed_out = _send(httpx.MockTransport(slow), target, timeout_s=0.05)
    assert (timed_out.status, timed_out.error) == (None, "timeout")
