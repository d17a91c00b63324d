"""Suite-wide settings, and a stand-in model server for the load generator's tests.

Hypothesis' per-example deadline (200 ms) measures the shared CI machine more than the code:
property tests here check correctness, and speed is checked by benchmarks, so it is off.
Servers serve on torch unless a test names a backend (PACKRAT_BACKEND, below).
"""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import ClassVar

import pytest
from hypothesis import settings

settings.register_profile("packrat", deadline=None, print_blob=True)
settings.load_profile("packrat")

# Servers started by tests serve on torch unless a test asks for a backend: choosing one
# (`--backend auto`, the default) converts and times every candidate at each start, which the
# backend tests cover once rather than every server test paying it.
os.environ.setdefault("PACKRAT_BACKEND", "torch")


class StubModelServer(BaseHTTPRequestHandler):
    """Answers every POST at once with `[1]` and a 0.5 ms Server-Timing; records each
    request's path and body in `bodies`."""

    bodies: ClassVar[list[tuple[str, bytes]]] = []

    def do_POST(self) -> None:  # noqa: N802 (the http.server API)
        body = self.rfile.read(int(self.headers["Content-Length"]))
        StubModelServer.bodies.append((self.path, body))
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Server-Timing", "compute;dur=0.5")
        self.send_header("Content-Length", "3")
        self.end_headers()
        self.wfile.write(b"[1]")

    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture(scope="module")
def stub_model_server() -> Iterator[tuple[str, list[tuple[str, bytes]]]]:
    """A `StubModelServer` on a free 127.0.0.1 port, for one test module: its base URL, and
    the (path, body) of every request it got, in order."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), StubModelServer)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}", StubModelServer.bodies
    server.shutdown()
    server.server_close()
