"""The errors a request can get from the serving engine, named by what went wrong.

The engine (batcher, runtime, repository) raises them; the edges map each class to their own
status: HTTP in one table (`packrat.server.responses.HTTP_STATUS`), gRPC in another
(`packrat.server.grpc_status.CODES`). A subclass takes its nearest listed ancestor's status.
"""

from __future__ import annotations

from packrat.errors import PackratError


class ServerError(PackratError):
    """An error a request gets from the serving engine; each edge maps its class to a status
    (HTTP: `packrat.server.responses.http_status`, gRPC: `packrat.server.grpc_status`)."""


class BadRequest(ServerError):
    """Malformed payload: bad JSON, wrong shape or dtype, undecodable image."""


class NotFound(ServerError):
    """Unknown model or version."""


class Conflict(ServerError):
    """The name and version are already served."""


class NotAcceptable(ServerError):
    """The client accepts no form the answer can take."""


class PayloadTooLarge(ServerError):
    """Body over the configured limit."""


class UnsupportedMediaType(ServerError):
    """A content type the model cannot decode."""


class Unavailable(ServerError):
    """The model is not ready, its queue is full, or the server is shutting down.

    `retry_after_s`, when given, becomes a Retry-After header: when trying again is worth it.
    """

    def __init__(self, message: str, retry_after_s: int | None = None) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s


class InferenceFailed(ServerError):
    """The model raised on this request's sub-batch, with the model's message."""
