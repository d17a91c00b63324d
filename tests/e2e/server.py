"""The one helper that starts the real `packrat serve` on free ports, waits until it is ready
and always stops it (SIGTERM, then the exit code and the log are there to check)."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx

_ADDRESS = re.compile(r"^(inference|management|metrics) API listening on (http://\S+)$", re.M)
_GRPC_ADDRESS = re.compile(r"^grpc API listening on (\S+)$", re.M)


@dataclass
class RunningServer:
    process: subprocess.Popen[bytes]
    log: Path
    urls: dict[str, str]

    @property
    def inference(self) -> str:
        return self.urls["inference"]

    @property
    def management(self) -> str:
        return self.urls["management"]

    @property
    def metrics(self) -> str:
        return self.urls["metrics"]

    @property
    def grpc(self) -> str:
        """The gRPC API's `host:port` (as tritonclient.grpc takes it); KeyError if off."""
        return self.urls["grpc"]

    @property
    def output(self) -> str:
        return self.log.read_text()

    def stop(self, timeout_s: float = 60.0) -> int:
        """SIGTERM and wait for the graceful exit (kill after `timeout_s`); the exit code."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=timeout_s)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        return self.process.returncode


@contextmanager
def packrat_serve(
    *args: str, workdir: Path, start_timeout_s: float = 240.0
) -> Iterator[RunningServer]:
    """`packrat serve ARGS` with every port 0 on 127.0.0.1 (gRPC's too, unless ARGS hold
    --no-grpc); yields once /ping answers 200.

    The cache (profiles, weights) and the log live in `workdir`.
    """
    env = {**os.environ, "PACKRAT_CACHE_DIR": str(workdir / "cache"), "HF_HUB_OFFLINE": "1"}
    command = [
        sys.executable,
        "-m",
        "packrat.cli",
        "serve",
        *args,
        "--port",
        "0",
        "--management-port",
        "0",
        "--metrics-port",
        "0",
        "--grpc-port",
        "0",
    ]
    log = workdir / f"serve-{time.monotonic_ns()}.log"
    with log.open("wb") as sink:
        process = subprocess.Popen(command, stdout=sink, stderr=subprocess.STDOUT, env=env)
    server = RunningServer(process, log, {})
    try:
        deadline = time.monotonic() + start_timeout_s
        apis = 3 if "--no-grpc" in args else 4
        while len(server.urls) < apis:
            if process.poll() is not None:
                raise RuntimeError(f"packrat serve exited early:\n{server.output}")
            if time.monotonic() > deadline:
                raise RuntimeError(f"packrat serve did not start:\n{server.output}")
            output = server.output
            server.urls = dict(_ADDRESS.findall(output))
            grpc = _GRPC_ADDRESS.search(output)
            if grpc is not None:
                server.urls["grpc"] = grpc.group(1)
            time.sleep(0.1)
        while httpx.get(server.inference + "/ping").status_code != 200:
            if time.monotonic() > deadline:
                raise RuntimeError(f"packrat serve never became healthy:\n{server.output}")
            time.sleep(0.1)
        yield server
    finally:
        server.stop()
