"""Suite-wide settings, and a stand-in model server for the load generator's tests.

Hypothesis' per-example deadline (200 ms) measures the shared CI machine more than the code:
property tests here check correctness, and speed is checked by benchmarks, so it is off.
Servers serve on torch unless a test names a backend (PACKRAT_BACKEND, below).

With PACKRAT_FORBID_SKIPS=1 (CI sets it), a test that skips fails instead, its skip's reason in
the failure: a skip for a missing package, tool or CPU would otherwise pass CI without running.
Only tests marked `skip_allowed` may skip, for conditions that are about the platform by design
(e.g. glibc-only code on another OS). A module that skips while it is collected (a module-level
`pytest.importorskip`) becomes a collection error: such skips cannot be allowed.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Generator, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import ClassVar

import pytest
from _pytest.reports import BaseReport, CollectReport, TestReport
from hypothesis import settings

settings.register_profile("packrat", deadline=None, print_blob=True)
settings.load_profile("packrat")

# Servers started by tests serve on torch unless a test asks for a backend: choosing one
# (`--backend auto`, the default) converts and times every candidate at each start, which the
# backend tests cover once rather than every server test paying it.
os.environ.setdefault("PACKRAT_BACKEND", "torch")

FORBID_SKIPS_ENV = "PACKRAT_FORBID_SKIPS"
ALLOW_MARKER = "skip_allowed"


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, TestReport, TestReport]:
    """A skip of a test not marked `skip_allowed` fails it when skips are forbidden."""
    report = yield
    if item.get_closest_marker(ALLOW_MARKER) is None:
        _fail_if_forbidden(report)
    return report


@pytest.hookimpl(wrapper=True)
def pytest_make_collect_report(
    collector: pytest.Collector,
) -> Generator[None, CollectReport, CollectReport]:
    """A module skipped while collected is a collection error when skips are forbidden."""
    report = yield
    _fail_if_forbidden(report)
    return report


def _fail_if_forbidden(report: BaseReport) -> None:
    """Turn a skipped `report` (not an expected failure's) into a failure naming its reason,
    if $PACKRAT_FORBID_SKIPS is 1."""
    if not report.skipped or hasattr(report, "wasxfail"):
        return
    if os.environ.get(FORBID_SKIPS_ENV) != "1":
        return
    # A skip's longrepr is (file, line, "Skipped: reason"); anything else is shown as it is.
    longrepr = report.longrepr
    where, reason = "", str(longrepr)
    if isinstance(longrepr, tuple):
        where, reason = f" at {longrepr[0]}:{longrepr[1]}", str(longrepr[2])
    report.outcome = "failed"
    report.longrepr = (
        f"{FORBID_SKIPS_ENV}=1 forbids this skip{where}: {reason}\n"
        f"(install what it needs, or mark the test `{ALLOW_MARKER}` if the skip is by design)"
    )


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
