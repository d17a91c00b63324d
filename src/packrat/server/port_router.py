"""One ASGI app that hands each connection to the app of the port it arrived on.

The inference, management and metrics APIs listen on separate ports (TorchServe's 8080, 8081,
8082) but run in one uvicorn server, so one signal handler and one graceful shutdown cover all
three. The router also owns the lifespan: startup and shutdown hooks run once for the server.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping, MutableMapping
from typing import Any

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]
Hook = Callable[[], Awaitable[None]]


class PortRouter:
    """Route by `scope["server"][1]` (the local port); run lifespan hooks itself."""

    def __init__(
        self,
        apps: Mapping[int, ASGIApp],
        *,
        on_startup: Hook | None = None,
        on_shutdown: Hook | None = None,
    ) -> None:
        self.apps = dict(apps)
        self._on_startup = on_startup
        self._on_shutdown = on_shutdown

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await self._lifespan(receive, send)
            return
        port = int((scope.get("server") or ("", -1))[1])
        app = self.apps.get(port)
        if app is None:  # pragma: no cover - only ports we bound reach us
            raise RuntimeError(f"no app for port {port}")
        await app(scope, receive, send)

    async def _lifespan(self, receive: Receive, send: Send) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                try:
                    if self._on_startup is not None:
                        await self._on_startup()
                except Exception as exc:
                    await send({"type": "lifespan.startup.failed", "message": str(exc)})
                    return
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                try:
                    if self._on_shutdown is not None:
                        await self._on_shutdown()
                except Exception as exc:
                    await send({"type": "lifespan.shutdown.failed", "message": str(exc)})
                    return
                await send({"type": "lifespan.shutdown.complete"})
                return
