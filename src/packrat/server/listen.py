"""Bind the server's listening sockets and run them all in one uvicorn server.

Sockets are bound before serving so that port 0 resolves to a real port that can be printed,
and so that a port already in use fails at once with a clear error. One uvicorn server serves
every socket through a `PortRouter`. On SIGTERM or SIGINT it first runs the drain hook while
still listening (the models stop taking requests, which get 503, and finish the queued and
running ones), then stops accepting connections as uvicorn does, runs the shutdown hook
(which stops the workers) and returns, so the process exits 0. A second signal skips what
is left of the drain.
"""

from __future__ import annotations

import asyncio
import logging
import signal
import socket
from collections.abc import Coroutine, Mapping
from dataclasses import dataclass
from types import FrameType
from typing import Any

import uvicorn

from packrat.errors import PackratError
from packrat.server.port_router import ASGIApp, Hook, PortRouter

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Listener:
    """One API's address. `port` 0 picks a free port."""

    name: str
    host: str
    port: int

    def __post_init__(self) -> None:
        if not 0 <= self.port <= 65535:
            raise PackratError(f"{self.name} port must be in 0..65535, got {self.port}")


@dataclass(frozen=True)
class Bound:
    listener: Listener
    sock: socket.socket

    @property
    def address(self) -> str:
        host, port = self.sock.getsockname()[:2]
        shown = f"[{host}]" if ":" in host else host
        return f"http://{shown}:{port}"

    @property
    def port(self) -> int:
        return int(self.sock.getsockname()[1])


BACKLOG = 2048
"""Connections the kernel queues before the server accepts them (uvicorn's default)."""


def bind(listener: Listener) -> Bound:
    """A bound socket for `listener`; PackratError naming the address if it cannot bind."""
    family = socket.AF_INET6 if ":" in listener.host else socket.AF_INET
    # IPPROTO_TCP, not 0: asyncio sets TCP_NODELAY only on sockets whose protocol says TCP,
    # and without it Nagle's algorithm delays every small response by ~40 ms.
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((listener.host, listener.port))
    except OSError as exc:
        sock.close()
        raise PackratError(
            f"cannot listen for the {listener.name} API on {listener.host}:{listener.port}: "
            f"{exc.strerror}"
        ) from None
    # Listening from here on, so a client that read "listening on" is queued, not refused,
    # until the server accepts (uvicorn listens again with the same backlog when it starts).
    sock.listen(BACKLOG)
    sock.set_inheritable(True)
    return Bound(listener, sock)


def run_event_loop(main: Coroutine[Any, Any, None]) -> None:
    """Run `main` to the end on uvloop's event loop, or asyncio's where uvloop is missing
    (it is a dependency on Linux and macOS only).

    uvloop (libuv) takes less time per request than asyncio's loop, and uvicorn parses HTTP
    with httptools when it is installed (also a dependency): at batch 1, every millisecond
    between the client and the worker is latency that the fastest kernels cannot win back.
    """
    try:
        import uvloop
    except ImportError:
        asyncio.run(main)
        return
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        runner.run(main)


async def serve(
    bound: list[Bound],
    apps: Mapping[str, ASGIApp],
    *,
    on_drain: Hook | None = None,
    on_shutdown: Hook | None = None,
) -> None:
    """Serve `apps[name]` on the socket bound for the listener of that name, until a signal
    (see the module docstring for `on_drain` and `on_shutdown`)."""
    router = PortRouter({b.port: apps[b.listener.name] for b in bound}, on_shutdown=on_shutdown)
    config = uvicorn.Config(router, lifespan="on", log_level="warning", access_log=False)
    server = _DrainFirst(config, on_drain)
    # uvicorn captures SIGINT/SIGTERM while serving and re-raises them after its graceful
    # shutdown; with these no-op handlers in place, that re-raise ends in a normal return.
    previous = {sig: signal.signal(sig, _ignore) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        await server.serve(sockets=[b.sock for b in bound])
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


class _DrainFirst(uvicorn.Server):
    """uvicorn's server, but the first signal drains before the usual graceful shutdown."""

    def __init__(self, config: uvicorn.Config, drain: Hook | None) -> None:
        super().__init__(config)
        self._drain = drain
        self._loop: asyncio.AbstractEventLoop | None = None
        self._draining: asyncio.Task[None] | None = None

    async def serve(self, sockets: list[socket.socket] | None = None) -> None:
        self._loop = asyncio.get_running_loop()
        await super().serve(sockets)

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        if self._drain is None or self._loop is None or self._draining is not None:
            super().handle_exit(sig, frame)  # nothing to drain, or a second signal
            return
        # A signal handler runs between two bytecodes of the loop's thread: schedule, return.
        self._loop.call_soon_threadsafe(self._start_drain, sig)

    def _start_drain(self, sig: int) -> None:
        if self._draining is None:
            self._draining = asyncio.ensure_future(self._drain_then_exit(sig))

    async def _drain_then_exit(self, sig: int) -> None:
        assert self._drain is not None
        try:
            await self._drain()
        except Exception:
            logger.exception("draining the models failed; shutting down anyway")
        super().handle_exit(sig, None)


def _ignore(signum: int, frame: object) -> None:
    """A signal that arrives after the graceful shutdown has nothing left to stop."""
