"""Where errors become HTTP responses: the one place, for every Packrat app.

Every error response has the body `{"error": "<message>", "code": <status>}`; `"error"` is
also the key Triton's clients read. The status comes from the exception's class
(`ServerError.status`), never from its message.
"""

from __future__ import annotations

import json
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from pydantic import BaseModel
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.responses import Response

from packrat.server.api import ServerError


class ErrorBody(BaseModel):
    """The body of every error response (documented in the OpenAPI spec)."""

    error: str
    code: int


#: `responses=` for routes, so the OpenAPI spec shows the error body.
ERROR_RESPONSES: dict[int | str, dict[str, Any]] = {
    status: {"model": ErrorBody} for status in (400, 404, 413, 415, 500, 503)
}


class JSONBody(Response):
    """A compact JSON response that, like TorchServe, writes NaN and Infinity rather than
    failing when a model's output holds them."""

    media_type = "application/json"

    def render(self, content: Any) -> bytes:
        return json.dumps(content, separators=(",", ":")).encode()


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


async def _on_server_error(request: Request, exc: Exception) -> Response:
    status = exc.status if isinstance(exc, ServerError) else 500
    return error_response(status, str(exc))


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
    return response


async def _on_unexpected_error(request: Request, exc: Exception) -> Response:
    # A bug, not a user error: do not leak its message.
    return error_response(500, "internal server error")
