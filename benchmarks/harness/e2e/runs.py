"""The systems of the end-to-end suite (benchmarks/e2e.py), what is sent to each (bursts of N
requests, one batch of N at a time, then open-loop Poisson load at each rate), and a run: one
system in one round (harness/e2e/running.py runs it).

Every system serves one model with the same batching (at most --max-batch-size requests, the
first waiting at most --max-batch-delay ms) and gets the same requests (one seeded random raw
tensor of the model's input) and, in one round, the same arrival times (`LoadPlan.arrivals`).
Each run is saved in its own folder of the work directory (runs/MODEL/SYSTEM/rROUND: loadgen
JSON per batch size and per rate, server.json with the plans a Packrat server ran in each
phase) and read back by `load_run` (bursts of one batch size as one result: burst-N.json).
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import numpy as np

from packrat.bench.loadgen import (
    LoadResult,
    OpenLoop,
    Payload,
    Phase,
    Protocol,
    RequestRecord,
    read_json,
    write_csv,
    write_json,
)
from packrat.models.zoo import zoo_entry

from harness.e2e.plans import PhasePlans
from harness.torchserve import log_evidence

WARM_BATCHES = 2  # bursts per batch size before the measured ones


@dataclass(frozen=True)
class System:
    """One way to serve a model: `packrat serve` with `options`, or TorchServe with `workers`
    workers of `threads` intra-op threads each."""

    key: str  # in file names and --systems
    name: str  # in the report
    kind: str  # "packrat" | "torchserve"
    options: tuple[str, ...] = ()
    workers: int = 1
    threads: int = 1

    @property
    def settings(self) -> str:
        """How it is started, for the report."""
        if self.kind == "packrat":
            options = " ".join(f"'{o}'" if o.startswith("<") else o for o in self.options)
            return f"`packrat serve MODEL {options}`"
        omp = ", OMP_NUM_THREADS=1" if self.threads == 1 else ""
        return (
            f"{self.workers} worker{'s' if self.workers > 1 else ''}, "
            f"`torch.set_num_threads({self.threads})` in the handler{omp}"
        )


def systems(cores: int, max_batch_size: int) -> list[System]:
    """Packrat (auto plans, the fat plan, T single-thread instances) and TorchServe (one worker
    with T threads, T workers with one thread), in the order they run."""
    single = f"<{cores},1,{math.ceil(max_batch_size / cores)}>"
    return [
        System("auto", "Packrat (auto)", "packrat", ("--policy", "auto")),
        System("fat", f"Packrat fat <1,{cores},{max_batch_size}>", "packrat", ("--fat",)),
        System("single", f"Packrat {single}", "packrat", ("--plan", single)),
        System("ts-1", f"TorchServe 1x{cores}", "torchserve", workers=1, threads=cores),
        System(f"ts-{cores}", f"TorchServe {cores}x1", "torchserve", workers=cores, threads=1),
    ]


@dataclass(frozen=True)
class LoadPlan:
    """What every system of one model gets: batching, bursts, rates."""

    model: str
    max_batch_size: int
    max_batch_delay_ms: int
    batch_sizes: tuple[int, ...]  # bursts of N requests
    bursts: int  # measured bursts per batch size
    rates_rps: tuple[float, ...]
    phase_s: float
    seed: int
    timeout_s: float = 60.0

    def payload(self) -> Payload:
        spec = zoo_entry(self.model).input_spec
        return Payload.random(Protocol.TORCHSERVE, spec.shape, spec.dtype, seed=self.seed)

    def arrivals(self, rate_rps: float, round_: int) -> OpenLoop:
        """Round `round_`'s arrivals at `rate_rps`: exactly round(rate x phase_s) requests at
        sorted uniform times over the phase (a Poisson process conditioned on its count), so
        the rate that runs is the rate asked for up to rounding; seeded by the seed, the round
        and the rate: every system gets the same times in a round, each round new ones."""
        count = math.floor(rate_rps * self.phase_s + 0.5)
        rng = np.random.default_rng([self.seed, round_, round(rate_rps * 1000)])
        times = np.sort(rng.uniform(0.0, self.phase_s, size=count))
        return OpenLoop(times, (Phase(f"poisson @ {rate_rps:g} rps", 0.0, self.phase_s),))


@dataclass
class SystemRun:
    """What one system did with a model's load plan in one round."""

    model: str
    system: str  # System.key
    round: int = 1  # from 1
    bursts: dict[int, LoadResult] = field(default_factory=dict)
    rates: dict[float, LoadResult] = field(default_factory=dict)
    # Packrat only: the plans it ran, its switches and requests per batch, per phase.
    burst_plans: dict[int, PhasePlans] = field(default_factory=dict)
    rate_plans: dict[float, PhasePlans] = field(default_factory=dict)
    described: dict[str, Any] = field(default_factory=dict)  # after the bursts
    evidence: list[str] = field(default_factory=list)  # TorchServe's log lines
    start_s: float = math.nan  # from the command to ready
    pids: list[int] = field(default_factory=list)
    exit_code: int | None = None
    leftover_pids: list[int] = field(default_factory=list)
    error: str = ""

    def failed(self) -> int:
        results = [*self.bursts.values(), *self.rates.values()]
        return sum(r.summary().overall.failed for r in results)

    def sent(self) -> int:
        return sum(len(r.records) for r in [*self.bursts.values(), *self.rates.values()])


def say(tag: str, text: str, started: float) -> None:
    minutes, seconds = divmod(int(time.monotonic() - started), 60)
    print(f"[{minutes:2d}:{seconds:02d} {tag}] {text}", flush=True)


def burst_latencies_ms(result: LoadResult) -> list[float]:
    """Per burst (requests scheduled at the same time): from its send to its last answer; a
    burst with a failure is left out."""
    bursts: dict[float, list[RequestRecord]] = {}
    for r in result.records:
        bursts.setdefault(round(r.scheduled_s, 6), []).append(r)
    return [
        max(r.latency_ms or 0.0 for r in records)
        for records in bursts.values()
        if all(r.ok for r in records)
    ]


# --- saved runs -------------------------------------------------------------------------------


def run_folder(workdir: Path, model: str, key: str, round_: int) -> Path:
    return workdir / "runs" / model / key / f"r{round_}"


def save_run(run: SystemRun, folder: Path) -> None:
    for n, result in run.bursts.items():
        write_json(result, folder / f"burst-{n}.json")
    for rate, result in run.rates.items():
        write_json(result, folder / f"rate-{rate:g}.json")
        write_csv(result.records, folder / f"rate-{rate:g}.csv")
    raw: dict[str, Any] = {
        f.name: getattr(run, f.name) for f in fields(run) if f.name not in ("bursts", "rates")
    }
    raw["bursts"] = sorted(run.bursts)
    raw["rates"] = sorted(run.rates)
    for name in ("burst_plans", "rate_plans"):
        raw[name] = {str(k): asdict(v) for k, v in getattr(run, name).items()}
    (folder / "server.json").write_text(json.dumps(raw, indent=1, default=str))


def load_run(folder: Path) -> SystemRun | None:
    """A run `save_run` wrote to `folder`; None if there is none."""
    path = folder / "server.json"
    if not path.exists():
        return None
    raw = json.loads(path.read_text())
    bursts = {int(n): read_json(folder / f"burst-{n}.json") for n in raw.pop("bursts")}
    rates = {float(r): read_json(folder / f"rate-{r:g}.json") for r in raw.pop("rates")}
    burst_plans = raw.pop("burst_plans", {})
    rate_plans = raw.pop("rate_plans", {})
    run = SystemRun(**raw)
    run.bursts, run.rates = bursts, rates
    run.burst_plans = {int(k): PhasePlans.from_json(v) for k, v in burst_plans.items()}
    run.rate_plans = {float(k): PhasePlans.from_json(v) for k, v in rate_plans.items()}
    logs = folder / "torchserve" / "logs"
    if logs.exists():  # read again: what is quoted may have changed since the run
        run.evidence = log_evidence(logs)
    return run


def load_runs(workdir: Path, model: str, keys: Sequence[str], rounds: int) -> list[SystemRun]:
    """Every saved run of `model` by the systems `keys`, round after round."""
    found = [
        load_run(run_folder(workdir, model, key, round_))
        for round_ in range(1, rounds + 1)
        for key in keys
    ]
    return [run for run in found if run is not None]
