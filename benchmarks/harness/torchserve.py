"""TorchServe 0.12 for the benchmarks that compare Packrat with it: its venv, a zoo model
exported to TorchScript and archived with benchmarks/torchserve/raw_tensor_handler.py, and a
server on free loopback ports with the model registered (workers, batch size, batch delay),
always stopped and checked to leave no process behind.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from harness.serve import descendants, reap

REPO = Path(__file__).resolve().parents[2]
HANDLER = REPO / "benchmarks" / "torchserve" / "raw_tensor_handler.py"
TS_PACKAGES = ("torch==2.13.0", "torchserve==0.12.0", "torch-model-archiver==0.12.0")
# TorchServe's worker imports these without declaring them: without them it dies at start and
# the frontend retries forever ("No module named 'yaml'").
TS_UNDECLARED = ("pyyaml", "numpy")
START_TIMEOUT_S = 300.0  # the frontend up, the model registered and its workers READY
STOP_TIMEOUT_S = 120.0


def ensure_ts_venv(venv: Path, extra: tuple[str, ...] = ()) -> None:
    """Create the TorchServe venv if `venv/bin/torchserve` is missing (downloads ~200 MB), and
    add the modules its worker needs but does not declare, and `extra` ones (import names equal
    to package names, as orjson)."""
    pip = [str(venv / "bin" / "pip"), "install", "--extra-index-url",
           "https://download.pytorch.org/whl/cpu"]  # fmt: skip
    if not (venv / "bin" / "torchserve").exists():
        print(f"creating {venv} with {' '.join(TS_PACKAGES)}", flush=True)
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
        subprocess.run([*pip, *TS_PACKAGES, *TS_UNDECLARED, *extra], check=True)
    modules = ", ".join(["yaml", "numpy", *extra])
    check = [str(venv / "bin" / "python"), "-c", f"import {modules}"]
    if subprocess.run(check, capture_output=True, check=False).returncode != 0:
        subprocess.run([*pip, *TS_UNDECLARED, *extra], check=True)


def versions(venv: Path) -> dict[str, str]:
    """TorchServe's version (and torch's in its venv) and Java's."""
    code = "import importlib.metadata as m; print(m.version('torchserve'), m.version('torch'))"
    done = subprocess.run([str(venv / "bin" / "python"), "-c", code], capture_output=True,
                          text=True, check=False)  # fmt: skip
    ts_version, _, torch_version = done.stdout.strip().partition(" ")
    java = subprocess.run(["java", "-version"], capture_output=True, text=True, check=False)
    quoted = java.stderr.split('"')
    return {
        "TorchServe": f"{ts_version} (torch {torch_version} in its venv)",
        "Java": quoted[1] if len(quoted) > 1 else "?",
    }


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


# --- the model --------------------------------------------------------------------------------


def export_and_archive(
    model: str, store: Path, workdir: Path, venv: Path, archive_format: str = "default"
) -> None:
    """`packrat export MODEL` to TorchScript (its cache in WORKDIR/cache), archived into
    `store` with the raw tensor handler: MODEL.mar, or with archive_format "no-archive" a
    folder MODEL/ (no zip to write or unpack: seconds saved per start for large models)."""
    store.mkdir(parents=True, exist_ok=True)
    serialized = store.parent / f"{model}.pt"
    env = {**os.environ, "PACKRAT_CACHE_DIR": str(workdir / "cache"), "HF_HUB_OFFLINE": "1"}
    export = [sys.executable, "-m", "packrat.cli", "export", model, "-o", str(serialized)]
    subprocess.run(export, check=True, env=env, capture_output=True, timeout=600)
    command = [str(venv / "bin" / "torch-model-archiver"), "--model-name", model,
               "--version", "1.0", "--serialized-file", str(serialized), "--handler",
               str(HANDLER), "--export-path", str(store), "--archive-format", archive_format,
               "--force"]  # fmt: skip
    subprocess.run(command, check=True, timeout=600)


# --- the server -------------------------------------------------------------------------------


@dataclass(frozen=True)
class TorchServeModel:
    """How TorchServe serves one model: its workers and batching (the management API's
    initial_workers, batch_size, max_batch_delay), and environment variables for the frontend,
    which its workers inherit (OMP_NUM_THREADS, the handler's RAW_HANDLER_* settings)."""

    name: str
    workers: int = 1
    batch_size: int = 1
    max_batch_delay_ms: int = 100
    env: Mapping[str, str] = field(default_factory=dict)


@dataclass
class TorchServe:
    """A started TorchServe: its API base URLs ("inference", "management", "metrics"), its
    log folder and the pids of its processes while serving (the frontend and the workers).
    Once stopped: the exit status of `torchserve --stop`, and the processes that outlived it
    (pids; they were killed)."""

    urls: dict[str, str]
    logs: Path
    pids: list[int] = field(default_factory=list)
    stop_code: int | None = None
    leftover_pids: list[int] = field(default_factory=list)


def ts_config(store: Path, ports: dict[str, int]) -> str:
    """TorchServe's config.properties: loopback ports, Prometheus metrics, as many Netty
    threads as cores (its default, stated), its default queue of 100 requests per model, and
    the management API's model registration enabled (off by default since 0.11)."""
    cores = len(os.sched_getaffinity(0))
    return "\n".join([
        f"inference_address=http://127.0.0.1:{ports['inference']}",
        f"management_address=http://127.0.0.1:{ports['management']}",
        f"metrics_address=http://127.0.0.1:{ports['metrics']}",
        f"model_store={store}",
        "default_workers_per_model=1",
        f"number_of_netty_threads={cores}",
        "netty_client_threads=1",
        "job_queue_size=100",
        "metrics_mode=prometheus",
        "disable_system_metrics=true",
        "install_py_dep_per_model=false",
        "async_logging=true",
        "enable_model_api=true",
        "",
    ])  # fmt: skip


def ts_processes(marker: str) -> list[int]:
    """Pids whose command line holds `marker` (this run's TorchServe directory)."""
    pids = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and int(entry.name) != os.getpid():
            try:
                cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode()
            except OSError:
                continue
            if marker in cmdline:
                pids.append(int(entry.name))
    return pids


@contextmanager
def torchserve(
    served: TorchServeModel, tsdir: Path, store: Path, venv: Path
) -> Iterator[TorchServe]:
    """TorchServe with `store` as its model store and `tsdir` for its config and logs; the
    model registered from `store` (NAME.mar or the folder NAME/) through the management API
    with `served`'s workers and batching. Yields once every worker is READY (RuntimeError if
    not within START_TIMEOUT_S). Always `torchserve --stop`s, then kills any of its
    processes (this run's frontend and every worker it started) still alive."""
    tsdir.mkdir(parents=True, exist_ok=True)
    ports = {api: free_port() for api in ("inference", "management", "metrics")}
    server = TorchServe({api: f"http://127.0.0.1:{port}" for api, port in ports.items()},
                        tsdir / "logs")  # fmt: skip
    config = tsdir / "config.properties"
    config.write_text(ts_config(store, ports))
    env = {**os.environ, "PATH": f"{venv / 'bin'}:{os.environ['PATH']}",
           "LOG_LOCATION": str(server.logs), "METRICS_LOCATION": str(server.logs),
           "TS_DISABLE_TOKEN_AUTHORIZATION": "true", **served.env}  # fmt: skip
    env.pop("VIRTUAL_ENV", None)
    torchserve_bin = str(venv / "bin" / "torchserve")
    start = [torchserve_bin, "--start", "--ncs", "--disable-token-auth", "--model-store",
             str(store), "--ts-config", str(config)]  # fmt: skip
    with (tsdir / "torchserve.out").open("ab") as sink:  # it writes its log to stdout too
        subprocess.run(start, cwd=tsdir, env=env, stdout=sink, stderr=subprocess.STDOUT,
                       check=True, timeout=120)  # fmt: skip
    started: set[tuple[int, str]] = set()
    try:
        deadline = time.monotonic() + START_TIMEOUT_S
        _register(served, store, server.urls["management"], deadline, tsdir)
        frontends = ts_processes(str(tsdir))
        for pid in frontends:
            started |= descendants(pid)
        server.pids = sorted([*frontends, *(pid for pid, _ in started)])
        yield server
    finally:
        stop = subprocess.run([torchserve_bin, "--stop"], cwd=tsdir, env=env,
                              timeout=STOP_TIMEOUT_S, check=False, capture_output=True)  # fmt: skip
        server.stop_code = stop.returncode
        server.leftover_pids = _reap_frontend(str(tsdir)) + reap(started, STOP_TIMEOUT_S / 4)


def _register(
    served: TorchServeModel, store: Path, management: str, deadline: float, tsdir: Path
) -> None:
    """Wait for the management API, register the model, wait until its workers are READY."""
    while not _answers(management + "/models"):
        if time.monotonic() > deadline:
            raise RuntimeError(f"TorchServe did not start; see {tsdir}")
        time.sleep(0.5)
    archive = f"{served.name}.mar" if (store / f"{served.name}.mar").exists() else served.name
    params = {"url": archive, "model_name": served.name, "initial_workers": served.workers,
              "batch_size": served.batch_size, "max_batch_delay": served.max_batch_delay_ms,
              "synchronous": "true"}  # fmt: skip
    timeout_s = max(deadline - time.monotonic(), 1.0)
    response = httpx.post(management + "/models", params=params, timeout=timeout_s)
    if response.status_code != 200:
        raise RuntimeError(f"TorchServe refused {served.name}: {response.text}; see {tsdir}")
    while ready_workers(management, served.name) < served.workers:
        if time.monotonic() > deadline:
            raise RuntimeError(f"TorchServe did not start {served.name}'s workers; see {tsdir}")
        time.sleep(0.5)


def _answers(url: str) -> bool:
    try:
        return httpx.get(url, timeout=5.0).status_code == 200
    except httpx.TransportError:
        return False


def describe(management: str, model: str) -> dict[str, object]:
    """The management API's description of `model` (workers, batch size, delay)."""
    response = httpx.get(f"{management}/models/{model}", timeout=10.0)
    response.raise_for_status()
    return response.json()[0]  # type: ignore[no-any-return]


def ready_workers(management: str, model: str) -> int:
    try:
        workers = describe(management, model).get("workers", [])
    except httpx.HTTPError:
        return 0
    return sum(w.get("status") == "READY" for w in workers if isinstance(w, dict))  # type: ignore[union-attr]


def _reap_frontend(marker: str, timeout_s: float = 30.0) -> list[int]:
    """Wait for this run's frontend to exit after --stop; kill it if it does not."""
    deadline = time.monotonic() + timeout_s
    while ts_processes(marker) and time.monotonic() < deadline:
        time.sleep(0.5)
    left = ts_processes(marker)
    for pid in left:  # only processes of this run's TorchServe
        print(f"TorchServe process {pid} outlived --stop; killing it", flush=True)
        os.kill(pid, signal.SIGKILL)
    return left


# --- evidence ---------------------------------------------------------------------------------

LOG_KEYS = ("Model server started", "Number of CPUs", "Setting default version",
            "ModelManager - Model", "-> WORKER_STARTED", "Torch worker started",
            "raw tensor handler", "WORKER_MODEL_LOADED")  # fmt: skip


def log_evidence(logs: Path, most: int = 16) -> list[str]:
    """The log lines that show the model loaded, the workers started and their torch threads."""
    lines: list[str] = []
    for name in ("ts_log.log", "model_log.log"):  # TorchServe writes some lines twice
        path = logs / name
        if path.exists():
            for line in path.read_text(errors="replace").splitlines():
                note = "log: " + line.strip()[:220]
                if any(key in line for key in LOG_KEYS) and note not in lines:
                    lines.append(note)
    return lines[:most]
