"""What the benchmark scripts here share: starting `packrat serve` on free ports and always
stopping it (and every process it started; `descendants` and `reap` serve TorchServe's runs
too, in torchserve_run.py); a served model's description, a request for it, a warm-up, and
progress lines while load runs; reading Prometheus metrics; one more pass of a profile, and
the order of each round, for scripts that interleave rounds against the machine's drift; and
the parts of a Markdown report common to all (the machine, versions, the hand-written
analysis kept when a report is written again).

The scripts import it by name: `python benchmarks/X.py` puts this folder on sys.path.
"""

from __future__ import annotations

import contextlib
import math
import os
import platform
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import httpx

from packrat.bench import resources
from packrat.bench.loadgen import (
    ClosedLoop,
    LoadOptions,
    Payload,
    Phase,
    Protocol,
    Target,
    run_load,
)
from packrat.models.base import ModelSource
from packrat.profiler.profile_file import Profile, load_profile
from packrat.profiler.sweep import SweepConfig, profile_model
from packrat.stats import SamplingPolicy

T = TypeVar("T")
START_TIMEOUT_S = 300.0
STOP_TIMEOUT_S = 60.0
_ADDRESS = re.compile(r"^(inference|management|metrics) API listening on (http://\S+)$", re.M)
_SAMPLE = re.compile(r"^([a-zA-Z_:][\w:]*)(\{[^}]*\})?\s+(\S+)$", re.M)


# --- packrat serve ----------------------------------------------------------------------------


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


# --- a served model: its description, requests, warm-up, progress ---------------------------


def profile_pass(
    source: ModelSource,
    path: Path,
    cores: int,
    batches: Sequence[int],
    done: int,
    of: int,
    *,
    contention: bool = False,
) -> Profile:
    """Profile file `path` of `source` with `done` passes of every cell (resumed: the passes it
    lacks), each with a 1 / `of` share of `packrat profile`'s default sampling budget, as
    `packrat profile --passes OF` would sample them; the whole grid is measured."""
    config = SweepConfig(
        cores=cores,
        batches=tuple(batches),
        policy=SamplingPolicy().per_pass(of),
        contention=contention,
        passes=done,
    )
    existing = load_profile(path) if path.exists() else None
    return profile_model(source, config, out=path, existing=existing)


def rotated(items: Sequence[T], index: int) -> list[T]:
    """`items` in the order round `index` (from 0) runs them: from the (index mod n)-th on,
    round the list (ABCD, BCDA, CDAB, ...), so that each one's rounds are spread over the
    session and a steady drift of the machine falls alike on all of them."""
    first = index % len(items)
    return [*items[first:], *items[:first]]


def describe(urls: dict[str, str], model: str) -> dict[str, Any]:
    """The management API's description of `model`'s default version."""
    described = httpx.get(f"{urls['management']}/models/{model}", timeout=30).json()
    return described[0]  # type: ignore[no-any-return]


def payload_for(described: dict[str, Any]) -> Payload:
    """A random request of the model's input (raw bytes for the TorchServe API)."""
    spec = described.get("input_spec")
    if not spec:
        raise SystemExit(f"model {described['name']} declares no input: cannot make requests")
    return Payload.random(Protocol.TORCHSERVE, spec["shape"], spec["dtype"], seed=0)


def warm_up(target: Target, payload: Payload, max_batch_size: int) -> None:
    """Closed loops of 1, 2, 4, ... up to `max_batch_size` clients, three batches' worth
    each: every batch size (and, switching, every plan) runs before the schedule."""
    clients = 1
    while True:
        result = run_load(target, ClosedLoop(clients, requests=3 * clients), LoadOptions(payload))
        failures = result.summary().overall.failures
        if failures:
            raise SystemExit(f"warm-up with {clients} clients failed: {failures}")
        if clients >= max_batch_size:
            return
        clients = min(2 * clients, max_batch_size)


class PhaseProgress:
    """Prints a line as the schedule enters each phase, and every `every_s` seconds."""

    def __init__(self, name: str, phases: Sequence[Phase], every_s: float = 15.0) -> None:
        self._name, self._phases, self._every_s = name, phases, every_s
        self._started = time.monotonic()
        self._printed_s = -math.inf
        self._phase: Phase | None = None

    def start(self, total_units: float, description: str) -> None:
        self._started = time.monotonic()

    def advance(self, units: float, description: str | None = None) -> None:
        now_s = time.monotonic() - self._started
        phase = next((p for p in reversed(self._phases) if p.start_s <= now_s), self._phases[0])
        if phase is not self._phase or now_s - self._printed_s >= self._every_s:
            self._phase, self._printed_s = phase, now_s
            line = f"{now_s:4.0f} s, phase {phase.name}: {description or ''}"
            print(f"[{self._name}] {line}", flush=True)


# --- metrics ----------------------------------------------------------------------------------


def scrape(url: str) -> dict[str, float]:
    """Prometheus samples at `url` as {'name{labels}': value}."""
    text = httpx.get(url, timeout=10.0).text
    return {name + (labels or ""): float(value) for name, labels, value in _SAMPLE.findall(text)}


def metric(samples: dict[str, float], name: str, *label_parts: str) -> float:
    """Sum of the samples of `name` whose labels contain every one of `label_parts`."""
    total = 0.0
    for key, value in samples.items():
        base, _, labels = key.partition("{")
        if base == name and all(part in labels for part in label_parts):
            total += value
    return total


# --- reports ----------------------------------------------------------------------------------

ANALYSIS_MARKER = "<!-- analysis: kept when the benchmark rewrites this file -->"


def kept_analysis(path: Path) -> str:
    """The hand-written part of an existing report: from ANALYSIS_MARKER to the end."""
    if not path.exists():
        return ""
    text = path.read_text()
    at = text.find(ANALYSIS_MARKER)
    return "" if at < 0 else "\n" + text[at:]


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def package_versions() -> dict[str, str]:
    """Python's version and those of the packages a serving benchmark depends on."""
    import importlib.metadata as md

    found = {"Python": platform.python_version()}
    for package in ("packrat", "torch", "uvicorn", "fastapi", "httpx"):
        with contextlib.suppress(md.PackageNotFoundError):
            found[package] = md.version(package)
    return found
