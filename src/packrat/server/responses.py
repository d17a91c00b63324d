"""Where errors become HTTP responses: the one place, for every Packrat app.

Every error response has the body `{"error": "<message>", "code": <status>}`; `"error"` is
also the key Triton's clients read. The status comes from the exception's class
(`HTTP_STATUS`: the one table from the engine's errors to HTTP), never from its message.
"""

from __future__ import annotations

import json
import math
from typing import Any

import numpy as np
import orjson
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from pydantic import BaseModel
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.responses import Response
from starlette.routing import compile_path

from packrat.server.errors import (
    BadRequest,
    Conflict,
    InferenceFailed,
    NotAcceptable,
    NotFound,
    PayloadTooLarge,
    ServerError,
    Unavailable,
    UnsupportedMediaType,
)

#: Error class -> HTTP status; a subclass takes its nearest listed ancestor's status.
HTTP_STATUS: dict[type[ServerError], int] = {
    BadRequest: 400,
    NotFound: 404,
    NotAcceptable: 406,
    Conflict: 409,  # as TorchServe answers a second registration
    PayloadTooLarge: 413,
    UnsupportedMediaType: 415,
    InferenceFailed: 500,  # with the model's message
    Unavailable: 503,
    ServerError: 500,
}


def http_status(exc: BaseException) -> int:
    """The HTTP status for `exc` (see HTTP_STATUS; 500 for anything else)."""
    for cls in type(exc).__mro__:
        if cls in HTTP_STATUS:
            return HTTP_STATUS[cls]
    return 500


class ErrorBody(BaseModel):
    """The body of every error response (documented in the OpenAPI spec)."""

    error: str
    code: int


#: `responses=` for routes, so the OpenAPI spec shows the error body.
ERROR_RESPONSES: dict[int | str, dict[str, Any]] = {
    status: {"model": ErrorBody} for status in (400, 401, 404, 406, 409, 413, 415, 500, 503)
}


class JSONBody(Response):
    """A compact JSON response (`json_bytes`)."""

    media_type = "application/json"

    def render(self, content: Any) -> bytes:
        return json_bytes(content)


def json_bytes(content: Any) -> bytes:
    """`content` (JSON-ready values, numpy arrays among them) as compact JSON.

    Written by orjson, which formats numpy arrays natively (float32 in its shortest
    round-tripping form). Like TorchServe, NaN and Infinity are written as such rather than
    failing; orjson would write them as null, so content holding any (rare: `output_codecs.to_json`
    turns only finite outputs into arrays) goes through the standard library instead, as does
    anything orjson refuses (integers over 64 bits, non-native byte order).
    """
    try:
        data = orjson.dumps(content, option=orjson.OPT_SERIALIZE_NUMPY)
    except TypeError:  # orjson.JSONEncodeError
        return _stdlib_json(content)
    if b"null" in data and _has_non_finite(content):
        return _stdlib_json(content)
    return data


def _stdlib_json(content: Any) -> bytes:
    return json.dumps(content, separators=(",", ":"), default=_tolist).encode()


def _tolist(value: Any) -> Any:
    if isinstance(value, np.ndarray | np.generic):
        return value.tolist()
    raise TypeError(f"{type(value).__name__} is not JSON serializable")


def _has_non_finite(content: Any) -> bool:
    if isinstance(content, float):
        return not math.isfinite(content)
    if isinstance(content, np.ndarray):
        return content.dtype.kind in "fc" and not bool(np.isfinite(content).all())
    if isinstance(content, dict):
        return any(_has_non_finite(value) for value in content.values())
    if isinstance(content, list | tuple):
        return any(_has_non_finite(item) for item in content)
    return False


def error_response(status: int, message: str) -> Response:
    """The error body for `status` with `message`."""
    return JSONBody({"error": message, "code": status}, status_code=status)


def install_error_handlers(app: FastAPI) -> None:
    """Make `app` answer every error with the JSON error body.

    ServerError -> its status; request validation (bad query parameters) -> 400; routing
    errors (unknown path 404, wrong method 405) -> their status; anything else -> 500, which
    Starlette also re-raises so the server logs the traceback.
    """
    app.add_exception_handler(ServerError, _on_server_error)
    app.add_exception_handler(RequestValidationError, _on_validation_error)
    app.add_exception_handler(StarletteHTTPException, _on_http_exception)
    app.add_exception_handler(Exception, _on_unexpected_error)


def server_error_response(exc: Exception) -> Response:
    """The answer to a ServerError: its status and message, and Retry-After if it has one."""
    response = error_response(http_status(exc), str(exc))
    retry_after_s = getattr(exc, "retry_after_s", None)
    if retry_after_s is not None:
        response.headers["Retry-After"] = str(retry_after_s)
    return response


async def _on_server_error(request: Request, exc: Exception) -> Response:
    return server_error_response(exc)


async def _on_validation_error(request: Request, exc: Exception) -> Response:
    errors = exc.errors() if isinstance(exc, RequestValidationError) else []
    problems = "; ".join(
        f"{'.'.join(str(part) for part in error.get('loc', ()))}: {error.get('msg', 'invalid')}"
        for error in errors
    )
    return error_response(400, problems or "invalid request")


async def _on_http_exception(request: Request, exc: Exception) -> Response:
    if not isinstance(exc, StarletteHTTPException):
        return error_response(500, "internal server error")
    response = error_response(exc.status_code, str(exc.detail))
    if exc.headers:  # e.g. Allow on 405
        response.headers.update(exc.headers)
    if exc.status_code == 405:
        allowed = _allowed_methods(request)
        if allowed:
            response.headers["Allow"] = ", ".join(sorted(allowed))
    return response


def _allowed_methods(request: Request) -> set[str]:
    """Every method the app documents for the request's path (Starlette's 405 names only the
    first route that matched the path, and a path may have one route per method). As in
    OpenAPI, the templates with the fewest parameters win: /models/{name}/plan over
    /models/{name}/{version}."""
    by_params: dict[int, set[str]] = {}
    for template, operations in request.app.openapi().get("paths", {}).items():
        regex, _, params = compile_path(template)
        if regex.match(request.url.path):
            by_params.setdefault(len(params), set()).update(m.upper() for m in operations)
    return by_params[min(by_params)] if by_params else set()


async def _on_unexpected_error(request: Request, exc: Exception) -> Response:
    # A bug, not a user error: do not leak its message.
    return error_response(500, "internal server error")
