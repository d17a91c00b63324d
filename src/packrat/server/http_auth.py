"""Bearer-token authorization for the inference and management apps.

Like TorchServe's token authorization: with a token configured, every request must carry
`Authorization: Bearer <token>`, except the health checks (`/ping`, `/v2/health/live`,
`/v2/health/ready`, which probes call without credentials) and `/metrics` (also served,
unguarded, on the metrics port). Anything else gets 401 with `WWW-Authenticate: Bearer`.
The comparison takes the same time whatever the token sent (`hmac.compare_digest`).

Pure ASGI middleware: it adds no task or thread per request.
"""

from __future__ import annotations

import hmac

from starlette.types import ASGIApp, Receive, Scope, Send

from packrat.server.responses import error_response

OPEN_PATHS = frozenset({"/ping", "/v2/health/live", "/v2/health/ready", "/metrics"})
MIN_TOKEN_CHARS = 16


def check_token(token: str) -> str:
    """`token` if it is usable (printable ASCII without spaces, >= MIN_TOKEN_CHARS long), else
    ValueError saying why (without echoing it)."""
    if len(token) < MIN_TOKEN_CHARS:
        raise ValueError(f"the API token must be at least {MIN_TOKEN_CHARS} characters long")
    if not all(33 <= ord(c) <= 126 for c in token):
        raise ValueError("the API token must be printable ASCII without spaces")
    return token


class TokenAuth:
    """Refuses requests without the bearer token (see the module docstring)."""

    def __init__(self, app: ASGIApp, token: str) -> None:
        self._app = app
        self._expected = b"Bearer " + check_token(token).encode()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] in OPEN_PATHS:
            await self._app(scope, receive, send)
            return
        given = next((v for k, v in scope["headers"] if k == b"authorization"), b"")
        if hmac.compare_digest(given, self._expected):
            await self._app(scope, receive, send)
            return
        why = "a bearer token is required" if not given else "the bearer token is wrong"
        response = error_response(401, f"{why}: send 'Authorization: Bearer <token>'")
        response.headers["WWW-Authenticate"] = 'Bearer realm="packrat"'
        await response(scope, receive, send)
