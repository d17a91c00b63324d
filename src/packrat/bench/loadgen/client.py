"""What is sent where: the target server and model, the request body, and one HTTP exchange.

`send` is the only place that talks to the network (through an `httpx.AsyncClient`, which
tests build on an `httpx.MockTransport`). Targets are loopback only: the load generator is
for benchmarking a server on this machine, not for loading anyone else's.
"""

from __future__ import annotations

import asyncio
import enum
import json
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import numpy as np

from packrat.errors import PackratError

LOOPBACK_HOSTS = frozenset({"127.0.0.1", "localhost", "::1"})
NOT_SENT = "not sent (in-flight cap)"

#: numpy dtype name -> Open Inference Protocol datatype.
V2_DATATYPES = {
    "float32": "FP32",
    "float64": "FP64",
    "float16": "FP16",
    "int64": "INT64",
    "int32": "INT32",
    "int16": "INT16",
    "int8": "INT8",
    "uint8": "UINT8",
}
_COMPUTE = re.compile(r"(?:^|,)\s*compute\s*;(?:[^,]*;)?\s*dur=([0-9.eE+-]+)")


class Protocol(enum.Enum):
    """How a request is posted: TorchServe's raw body, or a KServe v2 JSON infer request."""

    TORCHSERVE = "torchserve"
    V2 = "v2"


@dataclass(frozen=True)
class Target:
    """A model on a Packrat (or TorchServe / KServe) server on this machine.

    `url` is the inference API's base, e.g. http://127.0.0.1:8080.
    """

    url: str
    model: str
    protocol: Protocol = Protocol.TORCHSERVE

    def __post_init__(self) -> None:
        check_loopback(self.url)
        object.__setattr__(self, "url", self.url.rstrip("/"))
        if not self.model or "/" in self.model:
            raise PackratError(f"model must be a name without '/', got {self.model!r}")

    @property
    def path(self) -> str:
        """The request path of one inference, relative to `url`."""
        if self.protocol is Protocol.V2:
            return f"/v2/models/{self.model}/infer"
        return f"/predictions/{self.model}"


def check_loopback(url: str) -> None:
    """Refuse URLs that are not http(s) to 127.0.0.1, localhost or ::1."""
    try:
        parts = urlsplit(url)
        host = parts.hostname
        _ = parts.port  # a bad port raises here
    except ValueError as exc:
        raise PackratError(f"not a valid URL: {url!r} ({exc})") from None
    if parts.scheme not in ("http", "https"):
        raise PackratError(f"URL must start with http:// or https://, got {url!r}")
    if host not in LOOPBACK_HOSTS:
        raise PackratError(
            f"the load generator only targets this machine (127.0.0.1, localhost or ::1), "
            f"not {host!r}"
        )


@dataclass(frozen=True)
class Payload:
    """The body every request carries, made once and sent as is."""

    body: bytes
    content_type: str

    @staticmethod
    def from_file(path: Path, content_type: str) -> Payload:
        """The file's bytes as the body (for v2, the file is the whole JSON infer request)."""
        try:
            return Payload(path.read_bytes(), content_type)
        except OSError as exc:
            raise PackratError(f"cannot read payload {path}: {exc.strerror or exc}") from None

    @staticmethod
    def random(
        protocol: Protocol,
        shape: Sequence[int],
        dtype: str = "float32",
        seed: int = 0,
        content_type: str | None = None,
    ) -> Payload:
        """A random tensor of per-request `shape`: raw little-endian bytes for TorchServe, or a
        v2 infer request with one input of shape [1, *shape]."""
        if dtype not in V2_DATATYPES:
            raise PackratError(f"dtype must be one of {', '.join(V2_DATATYPES)}, got {dtype!r}")
        if not shape or any(d < 1 for d in shape):
            raise PackratError(f"shape must be positive integers, got {list(shape)}")
        rng = np.random.default_rng(seed)
        np_dtype = np.dtype(dtype).newbyteorder("<")
        if np_dtype.kind == "f":
            tensor = rng.standard_normal(tuple(shape)).astype(np_dtype)
        else:
            tensor = rng.integers(0, 100, size=tuple(shape)).astype(np_dtype)
        if protocol is Protocol.TORCHSERVE:
            return Payload(tensor.tobytes(), content_type or "application/octet-stream")
        request = {
            "inputs": [
                {
                    "name": "input0",
                    "shape": [1, *shape],
                    "datatype": V2_DATATYPES[dtype],
                    "data": tensor.ravel().tolist(),
                }
            ]
        }
        return Payload(json.dumps(request).encode(), content_type or "application/json")


@dataclass(frozen=True)
class Reply:
    """What one exchange gave: the HTTP status (None if no response came), the server's
    compute time if it said, and the failure (`error` a short kind, "" on success)."""

    status: int | None
    compute_ms: float | None = None
    error: str = ""
    detail: str = ""

    @property
    def ok(self) -> bool:
        return not self.error


async def send(
    client: httpx.AsyncClient, target: Target, payload: Payload, timeout_s: float
) -> Reply:
    """Post `payload` to `target` once; every failure becomes a Reply, never an exception."""
    try:
        async with asyncio.timeout(timeout_s):
            response = await client.post(
                target.url + target.path,
                content=payload.body,
                headers={"Content-Type": payload.content_type},
            )
    except (TimeoutError, httpx.TimeoutException) as exc:
        return Reply(None, error="timeout", detail=str(exc) or f"no reply in {timeout_s:g} s")
    except httpx.ConnectError as exc:
        return Reply(None, error="connect error", detail=str(exc))
    except httpx.HTTPError as exc:
        return Reply(None, error=type(exc).__name__, detail=str(exc))
    compute_ms = compute_time_ms(response.headers.get("server-timing"))
    if not response.is_success:
        detail = response.text[:200]
        return Reply(response.status_code, compute_ms, f"HTTP {response.status_code}", detail)
    return Reply(response.status_code, compute_ms)


def compute_time_ms(server_timing: str | None) -> float | None:
    """The `compute;dur=MS` metric of a Server-Timing header, if there is one."""
    if not server_timing:
        return None
    match = _COMPUTE.search(server_timing)
    if match is None:
        return None
    try:
        return float(match.group(1))
    except ValueError:
        return None
