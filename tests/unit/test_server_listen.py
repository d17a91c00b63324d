"""Listening sockets: bound and listening before the server starts, so a client that read
"listening on" waits in the backlog instead of being refused."""

from __future__ import annotations

import socket

import pytest

from packrat.errors import PackratError
from packrat.server.listen import Listener, bind


def test_a_bound_socket_queues_connections_before_the_server_accepts() -> None:
    bound = bind(Listener("inference", "127.0.0.1", 0))
    try:
        with socket.create_connection(("127.0.0.1", bound.port), timeout=2.0):
            pass  # refused (ECONNREFUSED) if the socket were only bound
        assert bound.address == f"http://127.0.0.1:{bound.port}"
    finally:
        bound.sock.close()


def test_a_port_in_use_names_the_api_and_the_address() -> None:
    first = bind(Listener("inference", "127.0.0.1", 0))
    try:
        with pytest.raises(PackratError, match=f"metrics API on 127.0.0.1:{first.port}"):
            bind(Listener("metrics", "127.0.0.1", first.port))
    finally:
        first.sock.close()
