"""Admission control for the inference app: a bound on requests in progress.

Each model's queue is bounded (`BatchingConfig.max_queue`), but when the HTTP front end itself
is the bottleneck (small models: parsing and answering cost more than the model), requests
pile up before they reach any queue, and latency grows without bound. So the inference app
takes at most `HttpConfig.max_in_flight` inference requests at a time; past that, a request
gets 503 with `Retry-After: 1` at once, before its body is read. Health checks, metadata and
metrics are never refused.

Pure ASGI middleware: a counter, no lock (one event loop), no task per request.
"""

from __future__ import annotations

from starlette.types import ASGIApp, Receive, Scope, Send

from packrat.server.responses import error_response

RETRY_AFTER_S = 1


def is_inference(path: str) -> bool:
    """Whether `path` runs a model: TorchServe predictions or a v2 infer call."""
    return path.startswith("/predictions/") or (
        path.startswith("/v2/models/") and path.endswith("/infer")
    )


class AdmissionLimit:
    """Refuses inference requests beyond `limit` in progress (see the module docstring)."""

    def __init__(self, app: ASGIApp, limit: int) -> None:
        if limit < 1:
            raise ValueError(f"the in-flight limit must be >= 1, got {limit}")
        self._app = app
        self._limit = limit
        self.in_flight = 0

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not is_inference(scope["path"]):
            await self._app(scope, receive, send)
            return
        if self.in_flight >= self._limit:
            response = error_response(
                503, f"the server is at its limit of {self._limit} requests in progress"
            )
            response.headers["Retry-After"] = str(RETRY_AFTER_S)
            await response(scope, receive, send)
            return
        self.in_flight += 1
        try:
            await self._app(scope, receive, send)
        finally:
            self.in_flight -= 1
