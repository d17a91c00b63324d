"""TorchServe 0.12 itself (the `torchserve` of the test extra, beside this interpreter), for
side-by-side tests: started in the foreground in its own session on free loopback ports,
with a private temporary directory (its pid file lives there, so runs never collide), and
always stopped with its whole process group (the Java frontend and its Python workers)."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

START_TIMEOUT_S = 300.0


@dataclass(frozen=True)
class TorchServe:
    inference: str
    management: str
    log: Path


def torchserve_command() -> str:
    """The torchserve launcher beside this interpreter; skips the test without it or Java."""
    found = Path(sys.executable).parent / "torchserve"
    if not found.exists():
        pytest.skip("torchserve is not installed (pip install -e '.[test]')")
    if subprocess.run(["java", "-version"], capture_output=True, check=False).returncode != 0:
        pytest.skip("TorchServe's frontend needs Java 11+")
    return str(found)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextmanager
def torchserve(store: Path, models: str, *, workdir: Path) -> Iterator[TorchServe]:
    """TorchServe serving `models` (its --models value, e.g. `resnet50=resnet50.mar`) from
    `store`; yields once every model has a READY worker."""
    workdir.mkdir(parents=True, exist_ok=True)
    ports = {api: _free_port() for api in ("inference", "management", "metrics")}
    config = workdir / "config.properties"
    config.write_text(
        "".join(f"{api}_address=http://127.0.0.1:{port}\n" for api, port in ports.items())
        + "default_workers_per_model=1\ndisable_system_metrics=true\n"
        + "install_py_dep_per_model=false\nenable_model_api=true\n"
    )
    tmp = workdir / "tmp"
    tmp.mkdir(exist_ok=True)
    logs = str(workdir / "logs")
    env = {**os.environ, "TMPDIR": str(tmp), "LOG_LOCATION": logs, "METRICS_LOCATION": logs}
    command = [torchserve_command(), "--start", "--foreground", "--ncs", "--disable-token-auth",
               "--model-store", str(store), "--models", models,
               "--ts-config", str(config)]  # fmt: skip
    log = workdir / "torchserve.log"
    with log.open("wb") as sink:
        process = subprocess.Popen(command, cwd=workdir, env=env, stdout=sink,
                                   stderr=subprocess.STDOUT, start_new_session=True)  # fmt: skip
    server = TorchServe(
        f"http://127.0.0.1:{ports['inference']}", f"http://127.0.0.1:{ports['management']}", log
    )
    try:
        _wait_ready(server, process)
        yield server
    finally:
        _stop(process)


def _wait_ready(server: TorchServe, process: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"TorchServe exited with {process.returncode}:\n{_tail(server)}")
        try:
            models = httpx.get(f"{server.management}/models", timeout=5.0).json()["models"]
            described = [
                httpx.get(f"{server.management}/models/{m['modelName']}", timeout=5.0).json()[0]
                for m in models
            ]
            if models and all(
                any(w.get("status") == "READY" for w in d["workers"]) for d in described
            ):
                return
        except (httpx.HTTPError, KeyError, ValueError):
            pass
        time.sleep(1.0)
    raise RuntimeError(f"TorchServe did not get ready in {START_TIMEOUT_S:.0f} s:\n{_tail(server)}")


def _stop(process: subprocess.Popen[bytes]) -> None:
    """SIGTERM the whole session (frontend and workers), give it 30 s, SIGKILL what is left."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGTERM)
    with contextlib.suppress(subprocess.TimeoutExpired):
        process.wait(timeout=30.0)
    deadline = time.monotonic() + 10.0
    while _group_alive(process.pid) and time.monotonic() < deadline:
        time.sleep(0.5)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGKILL)
    process.wait()


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    return True


def _tail(server: TorchServe) -> str:
    return server.log.read_text(errors="replace")[-4000:]
