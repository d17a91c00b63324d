"""The gRPC server's port and lifetime, beside the HTTP servers on the same event loop.

`bind_grpc` creates a `grpc.aio` server and binds its port before the models load, as
`packrat.server.listen.bind` does for HTTP: port 0 resolves to a real port that can be
printed, and a port in use fails at once. gRPC sets SO_REUSEPORT by default, which would let
a second server share a port in use without an error; it is turned off. `start` adds the
service's handlers and starts serving; `stop` lets the calls in progress finish (up to a
grace period) while new ones are refused, then closes the port. `packrat.server.launch` stops
it after the models have drained, before they close.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

# Read once, by grpc's import. Packrat's workers are spawned (fork, then exec at once), which
# gRPC's fork handlers need not guard; with them, every spawn while gRPC is busy logged
# "Other threads are currently calling into gRPC, skipping fork() handlers".
os.environ.setdefault("GRPC_ENABLE_FORK_SUPPORT", "false")

import grpc  # noqa: E402

from packrat.errors import PackratError  # noqa: E402

#: How long calls still in progress at shutdown may take to finish.
STOP_GRACE_S = 10.0


class GrpcServer:
    """A bound `grpc.aio` server; `address` is `host:port`, as gRPC clients take it."""

    def __init__(self, server: Any, host: str, port: int) -> None:
        self._server = server
        self.port = port
        self.address = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"

    async def start(self, handlers: Sequence[grpc.GenericRpcHandler]) -> None:
        self._server.add_generic_rpc_handlers(tuple(handlers))
        await self._server.start()

    async def stop(self, grace_s: float | None = STOP_GRACE_S) -> None:
        """Refuse new calls, let those in progress finish for up to `grace_s` (None: cancel
        them), close the port."""
        await self._server.stop(grace_s)


def bind_grpc(host: str, port: int, *, max_message_bytes: int) -> GrpcServer:
    """A gRPC server bound to `host:port` (0: any free port) that takes messages of up to
    `max_message_bytes`; PackratError naming the address if it cannot bind. Call it on the
    event loop that will serve."""
    if not 0 <= port <= 65535:
        raise PackratError(f"grpc port must be in 0..65535, got {port}")
    options = [
        ("grpc.so_reuseport", 0),
        ("grpc.max_receive_message_length", max_message_bytes),
        ("grpc.max_send_message_length", -1),  # answers are as large as the model makes them
    ]
    server = grpc.aio.server(options=options)
    target = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    try:
        bound = server.add_insecure_port(target)
    except RuntimeError as exc:
        raise PackratError(f"cannot listen for the grpc API on {target}: {exc}") from None
    if bound == 0:  # older grpcio report a failed bind this way
        raise PackratError(f"cannot listen for the grpc API on {target}: the port is in use")
    return GrpcServer(server, host, bound)
