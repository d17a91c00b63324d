"""Where errors become gRPC status codes: the one place, for the gRPC service.

The gRPC twin of `packrat.server.responses`: the code comes from the exception's class
(`packrat.server.api`), never from its message, and the message is the error's own, which
tells the client what to do. `Unavailable`'s `retry_after_s` travels as the trailing
metadata `retry-after`, as HTTP's Retry-After header does.
"""

from __future__ import annotations

import logging
from typing import Any, NoReturn

import grpc

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

logger = logging.getLogger(__name__)

#: Error class -> status code; a subclass takes its nearest listed ancestor's code.
CODES: dict[type[ServerError], grpc.StatusCode] = {
    BadRequest: grpc.StatusCode.INVALID_ARGUMENT,
    UnsupportedMediaType: grpc.StatusCode.INVALID_ARGUMENT,
    NotAcceptable: grpc.StatusCode.INVALID_ARGUMENT,
    NotFound: grpc.StatusCode.NOT_FOUND,
    Conflict: grpc.StatusCode.ALREADY_EXISTS,
    PayloadTooLarge: grpc.StatusCode.RESOURCE_EXHAUSTED,
    Unavailable: grpc.StatusCode.UNAVAILABLE,
    InferenceFailed: grpc.StatusCode.INTERNAL,
    ServerError: grpc.StatusCode.INTERNAL,
}


def status_code(exc: ServerError) -> grpc.StatusCode:
    """The status code for `exc` (see CODES)."""
    for cls in type(exc).__mro__:
        code = CODES.get(cls)
        if code is not None:
            return code
    return grpc.StatusCode.INTERNAL  # unreachable: every ServerError has ServerError's code


async def abort(context: Any, exc: BaseException) -> NoReturn:
    """End the call on `context` (a `grpc.aio.ServicerContext`) with `exc`'s status: its code
    and message for a ServerError; INTERNAL with a generic message for anything else, a bug,
    whose traceback is logged rather than sent."""
    if isinstance(exc, ServerError):
        retry_after_s = getattr(exc, "retry_after_s", None)
        if retry_after_s is not None:
            context.set_trailing_metadata((("retry-after", str(retry_after_s)),))
        await context.abort(status_code(exc), str(exc))
    else:
        logger.error("gRPC call failed", exc_info=exc)
        await context.abort(grpc.StatusCode.INTERNAL, "internal server error")
    raise AssertionError("context.abort returned")  # it raises; grpc ships no type hints
