"""Reading a request body under a size limit, without holding more than the limit."""

from __future__ import annotations

from starlette.requests import Request

from packrat.server.errors import BadRequest, PayloadTooLarge, UnsupportedMediaType


async def read_body(request: Request, max_bytes: int) -> bytearray:
    """The whole body of `request`, at most `max_bytes` bytes.

    A Content-Length over the limit is refused (PayloadTooLarge) before any of the body is
    read; a body without one is refused as soon as the bytes received pass the limit. The
    result is a bytearray, so tensors can wrap it without a copy. Compressed bodies
    (Content-Encoding other than identity) are refused with UnsupportedMediaType: their
    decompressed size is unbounded.
    """
    encoding = request.headers.get("content-encoding", "identity").strip().lower()
    if encoding not in ("", "identity"):
        raise UnsupportedMediaType(
            f"Content-Encoding {encoding!r} is not supported; send the body uncompressed"
        )
    declared = request.headers.get("content-length")
    if declared is not None:
        try:
            length = int(declared)
        except ValueError:
            raise BadRequest(f"Content-Length {declared!r} is not an integer") from None
        if length < 0:
            raise BadRequest(f"Content-Length {declared!r} is negative")
        if length > max_bytes:
            raise PayloadTooLarge(_too_large(f"{length}-byte", max_bytes))
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > max_bytes:
            raise PayloadTooLarge(_too_large(f"over-{max_bytes}-byte", max_bytes))
    return body


def _too_large(what: str, max_bytes: int) -> str:
    return f"the {what} body is over the limit of {max_bytes} bytes"
