"""`packrat serve` for a benchmark: started on free ports, offline, its cache in the work
directory, and always stopped, with every process it started (`descendants` and `reap` also
serve TorchServe's runs, harness/torchserve.py)."""

from __future__ import annotations

import contextlib
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from packrat.bench import resources

START_TIMEOUT_S = 300.0
STOP_TIMEOUT_S = 60.0
_ADDRESS = re.compile(r"^(inference|management|metrics) API listening on (http://\S+)$", re.M)


@dataclass
class PackratServer:
    """A started `packrat serve`: its API base URLs (keys "inference", "management",
    "metrics") and its log. Once stopped: its exit status (negative: the signal that ended
    it), and the processes it started that outlived it (pids; they were killed)."""

    urls: dict[str, str]
    log: Path
    exit_code: int | None = None
    leftover_pids: list[int] = field(default_factory=list)


@contextmanager
def packrat_serve(
    model: str,
    options: Sequence[str],
    workdir: Path,
    log: Path,
    start_timeout_s: float = START_TIMEOUT_S,
) -> Iterator[PackratServer]:
    """`packrat serve MODEL OPTIONS` on free ports, offline, its cache in WORKDIR/cache (so
    servers started one after another share profiles and weights), output to `log`. Yields
    once /ping answers 200 (RuntimeError if not within `start_timeout_s`). Always stopped:
    SIGTERM, then up to STOP_TIMEOUT_S to drain and exit (else killed); any process it
    started still alive after that is killed."""
    env = {**os.environ, "PACKRAT_CACHE_DIR": str(workdir / "cache"), "HF_HUB_OFFLINE": "1"}
    command = [sys.executable, "-m", "packrat.cli", "serve", model, *options, "--port", "0",
               "--management-port", "0", "--metrics-port", "0", "--grpc-port", "0"]  # fmt: skip
    with log.open("wb") as sink:
        process = subprocess.Popen(command, stdout=sink, stderr=subprocess.STDOUT, env=env)
    server = PackratServer({}, log)
    try:
        deadline = time.monotonic() + start_timeout_s
        while len(server.urls) < 3:
            if process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"packrat serve did not start:\n{log.read_text()}")
            server.urls = dict(_ADDRESS.findall(log.read_text()))
            time.sleep(0.1)
        while httpx.get(server.urls["inference"] + "/ping").status_code != 200:
            if time.monotonic() > deadline:
                raise RuntimeError(f"packrat serve never became healthy:\n{log.read_text()}")
            time.sleep(0.1)
        yield server
    finally:
        started = descendants(process.pid)
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout=STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        server.exit_code = process.returncode
        server.leftover_pids = reap(started)


def descendants(pid: int) -> set[tuple[int, str]]:
    """(pid, start time) of every live process below `pid`, from /proc (the start time tells a
    process from a later one given the same pid)."""
    found: set[tuple[int, str]] = set()
    for child in resources.descendants(pid):
        stat = resources.stat_fields(child)
        if stat is not None:
            found.add((child, stat[19]))
    return found


def reap(processes: set[tuple[int, str]], grace_s: float = 10.0) -> list[int]:
    """Wait up to `grace_s` for `processes` to exit; kill those still alive and return their
    pids. A zombie counts as gone."""

    def alive() -> list[int]:
        pids = []
        for pid, start in processes:
            stat = resources.stat_fields(pid)
            if stat is not None and stat[19] == start and stat[0] != "Z":
                pids.append(pid)
        return sorted(pids)

    deadline = time.monotonic() + grace_s
    while alive() and time.monotonic() < deadline:
        time.sleep(0.2)
    left = alive()
    for pid in left:  # only processes this server started
        print(f"process {pid} outlived its server; killing it", flush=True)
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    return left
