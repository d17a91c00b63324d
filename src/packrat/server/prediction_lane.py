"""TorchServe's prediction routes answered straight from ASGI, ahead of FastAPI's stack.

At batch 1 every step between the client and the worker is latency, and on a machine whose
cores the model keeps busy each step runs with cold caches: from the request's headers to its
route, FastAPI's middleware, router and dependency solving took about 0.3 ms of a ResNet-50
request (docs/serve-overhead.md), a tenth of what OpenVINO's own latency leaves for serving.
`PredictionLane` is the app's innermost middleware (inside the token check and the in-flight
limit): it matches `POST|PUT /predictions/{model}[/{version}]` itself and runs the same
endpoint code as the FastAPI routes, which still answer everything else and document these
routes in the OpenAPI spec. A ServerError gets the app's error body; any other exception
goes on to the app's outermost handler, which answers 500 and logs it, as for a route.
"""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable

from starlette.requests import Request
from starlette.responses import Response
from starlette.types import ASGIApp, Receive, Scope, Send

from packrat.server.api import ModelRepository, ServedModel
from packrat.server.errors import ServerError
from packrat.server.responses import server_error_response

Predict = Callable[[Request, ServedModel], Awaitable[Response]]

_PATH = re.compile(r"/predictions/([^/]+)(?:/([^/]+))?")
"""The routes' templates, `{model_name}` and `{version}` as FastAPI matches them (no `/`)."""


def prediction_target(method: str, path: str) -> tuple[str, str | None] | None:
    """(model name, version or None) if `method` and `path` ask for a prediction, else None."""
    if method not in ("POST", "PUT"):
        return None
    match = _PATH.fullmatch(path)
    return None if match is None else (match[1], match[2])


class PredictionLane:
    """Answers prediction requests with `predict`, passes the rest to `app` (see the module
    docstring)."""

    def __init__(self, app: ASGIApp, repo: ModelRepository, predict: Predict) -> None:
        self._app = app
        self._repo = repo
        self._predict = predict

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        target = None
        if scope["type"] == "http" and not scope.get("root_path"):
            target = prediction_target(scope["method"], scope["path"])
        if target is None:
            await self._app(scope, receive, send)
            return
        request = Request(scope, receive)
        try:
            response = await self._predict(request, self._repo.get(*target))
        except ServerError as exc:
            response = server_error_response(exc)
        await response(scope, receive, send)
