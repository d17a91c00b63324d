"""The servers of the end-to-end suite (benchmarks/e2e.py) and what is sent to each: bursts
of N requests (one batch of N at a time), then open-loop Poisson load at each rate.

Every system serves one model with the same batching (at most --max-batch-size requests, the
first waiting at most --max-batch-delay ms) and gets the same requests (one seeded random raw
tensor of the model's input) and, in one round, the same arrival times (`LoadPlan.arrivals`).
A run is one system in one round: started, loaded, stopped. Each is saved in its own folder of
the work directory (runs/MODEL/SYSTEM/rROUND: loadgen JSON per batch size and per rate,
server.json with the plans a Packrat server ran in each phase) and read back by `load_run`
(bursts of one batch size as one result: burst-N.json).
"""

from __future__ import annotations

import asyncio
import json
import math
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Any

import httpx
import numpy as np
from e2e_plans import PhasePlans, PlanWatch
from serving import PhaseProgress, packrat_serve
from serving import describe as describe_packrat
from torchserve_run import TorchServeModel, log_evidence, torchserve
from torchserve_run import describe as describe_torchserve

from packrat.bench.loadgen import (
    LoadOptions,
    LoadResult,
    OpenLoop,
    Payload,
    Phase,
    Protocol,
    RequestRecord,
    Target,
    from_offsets,
    read_json,
    run_load,
    run_load_async,
    write_csv,
    write_json,
)
from packrat.models.zoo import zoo_entry

PACKRAT_START_TIMEOUT_S = 900.0  # a first start profiles the model when no profile is cached
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


# --- one system -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Served:
    """A started server, whatever it is: its inference and management API base URLs, and
    where to read its batch sizes and switches (Packrat's metrics; None for TorchServe)."""

    inference: str
    management: str
    metrics: str | None

    def describe(self, model: str) -> dict[str, Any]:
        """The management API's description of `model` (Packrat's or TorchServe's)."""
        if self.metrics is None:
            return describe_torchserve(self.management, model)
        return describe_packrat({"management": self.management}, model)

    def watch(self, model: str) -> PlanWatch | None:
        """A watch on the plans `model` runs (Packrat); None for TorchServe, which has none."""
        return None if self.metrics is None else PlanWatch(self.management, self.metrics, model)


def run_system(
    system: System,
    plan: LoadPlan,
    round_: int,
    workdir: Path,
    ts: tuple[Path, Path] | None,
    started: float,
) -> SystemRun:
    """Start `system`, send it `plan`'s load (round `round_`'s arrivals), stop it. `ts`:
    TorchServe's venv and the model store, for TorchServe systems. A failure is recorded in
    the run (`error`), not raised."""
    run = SystemRun(plan.model, system.key, round_)
    tag = f"{plan.model}/{system.key}/r{round_}"
    folder = run_folder(workdir, plan.model, system.key, round_)
    folder.mkdir(parents=True, exist_ok=True)
    try:
        say(tag, f"starting {system.name}: {system.settings}", started)
        begun = time.monotonic()
        with _server(system, plan, folder, workdir, ts, run) as served:
            run.start_s = time.monotonic() - begun
            say(tag, f"ready in {run.start_s:.0f} s; bursts", started)
            _bursts(served, plan, run, tag, started)
            run.described = served.describe(plan.model)
            for rate in plan.rates_rps:
                _open_loop(served, plan, rate, run, tag, started)
    except Exception as exc:  # a server that fails is a result to report, not the end
        run.error = f"{type(exc).__name__}: {exc}"[:2000]
        say(tag, f"FAILED: {run.error[:300]}", started)
    say(tag, f"stopped: exit status {run.exit_code}, {len(run.leftover_pids)} left", started)
    save_run(run, folder)
    return run


@contextmanager
def _server(
    system: System,
    plan: LoadPlan,
    folder: Path,
    workdir: Path,
    ts: tuple[Path, Path] | None,
    run: SystemRun,
) -> Iterator[Served]:
    if system.kind == "packrat":
        options = ["--max-batch-size", str(plan.max_batch_size),
                   "--max-batch-delay", str(plan.max_batch_delay_ms), *system.options]  # fmt: skip
        log = folder / "packrat.log"
        server = None
        try:
            with packrat_serve(
                plan.model, options, workdir, log, PACKRAT_START_TIMEOUT_S
            ) as server:
                urls = server.urls
                yield Served(urls["inference"], urls["management"], urls["metrics"] + "/metrics")
        finally:
            if server is not None:
                run.exit_code, run.leftover_pids = server.exit_code, server.leftover_pids
        return
    if ts is None:
        raise RuntimeError("TorchServe systems need its venv and model store")
    venv, store = ts
    env = {"RAW_HANDLER_THREADS": str(system.threads), "RAW_HANDLER_JSON": "orjson"}
    if system.threads == 1:
        env["OMP_NUM_THREADS"] = "1"
    served = TorchServeModel(plan.model, system.workers, plan.max_batch_size,
                             plan.max_batch_delay_ms, env)  # fmt: skip
    ts_server = None
    try:
        with torchserve(served, folder / "torchserve", store, venv) as ts_server:
            run.pids = ts_server.pids
            yield Served(ts_server.urls["inference"], ts_server.urls["management"], None)
    finally:
        if ts_server is not None:
            run.exit_code = ts_server.stop_code
            run.leftover_pids = ts_server.leftover_pids
        run.evidence = log_evidence(folder / "torchserve" / "logs")


def _bursts(served: Served, plan: LoadPlan, run: SystemRun, tag: str, started: float) -> None:
    """For each batch size N: bursts of N requests sent at once over N open connections, each
    burst sent when the one before is answered in full, so that every batch holds N requests
    (the batcher gets all N within a few milliseconds and waits at most the batch delay for
    more; checked for Packrat in its batch-size metrics). WARM_BATCHES bursts first, then
    `plan.bursts`, watched for the plans they ran on (Packrat)."""
    target = Target(served.inference, plan.model)
    options = LoadOptions(plan.payload(), plan.timeout_s)
    for n in plan.batch_sizes:
        burst = from_offsets(np.zeros(n), name=f"burst of {n}")
        watch = served.watch(plan.model)
        results = asyncio.run(_burst_runs(target, burst, options, plan.bursts, watch))
        run.bursts[n] = result = joined(results)
        batch = ""
        if watch is not None:
            run.burst_plans[n] = plans = watch.stop()
            batch = f", mean batch {plans.batch_size or 0:.2f}, plan {plans.start_plan}"
            batch += f", {len(plans.switches)} switches"
        batches = burst_latencies_ms(result)
        failed = result.summary().overall.failed
        mean = f"{np.mean(batches):.1f} ms" if batches else "-"
        say(tag, f"bursts of {n}: mean {mean} to the last answer, {failed} failed{batch}", started)


async def _burst_runs(
    target: Target,
    burst: OpenLoop,
    options: LoadOptions,
    count: int,
    watch: PlanWatch | None,
) -> list[LoadResult]:
    """WARM_BATCHES bursts, then the start of `watch`, then `count` bursts, all over the same
    keep-alive connections (new ones per burst would spread its requests over their
    handshakes)."""
    kept = _KeptOpen(httpx.AsyncHTTPTransport(limits=httpx.Limits(max_connections=1024)))
    try:
        for _ in range(WARM_BATCHES):
            await run_load_async(target, burst, options, transport=kept)
        if watch is not None:
            watch.start()  # blocks the loop for a moment, while nothing is in flight
        return [await run_load_async(target, burst, options, transport=kept) for _ in range(count)]
    finally:
        await kept.inner.aclose()


class _KeptOpen(httpx.AsyncBaseTransport):
    """A transport that outlives the clients using it: closing a client leaves it open."""

    def __init__(self, inner: httpx.AsyncHTTPTransport) -> None:
        self.inner = inner

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        return await self.inner.handle_async_request(request)

    async def aclose(self) -> None:
        pass  # the owner closes `inner`


def joined(results: Sequence[LoadResult]) -> LoadResult:
    """Runs one after another as one result: one phase, times from the first run's start."""
    start = results[0].start_unix_s
    name = results[0].phases[0].name
    records = []
    for result in results:
        shift = result.start_unix_s - start
        for r in result.records:
            sent = None if r.sent_s is None else r.sent_s + shift
            records.append(replace(r, scheduled_s=r.scheduled_s + shift, sent_s=sent,
                                   done_s=r.done_s + shift))  # fmt: skip
    end = max([r.done_s for r in records] + [r.scheduled_s for r in records], default=0.0)
    return LoadResult(results[0].target, (Phase(name, 0.0, end),), tuple(records), start)


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


def _open_loop(
    served: Served, plan: LoadPlan, rate: float, run: SystemRun, tag: str, started: float
) -> None:
    target = Target(served.inference, plan.model)
    schedule = plan.arrivals(rate, run.round)
    say(tag, f"{rate:g} req/s for {plan.phase_s:g} s: {schedule.num_requests} requests", started)
    watch = served.watch(plan.model)
    if watch is not None:
        watch.start()
    progress = PhaseProgress(tag, schedule.phases)
    options = LoadOptions(plan.payload(), plan.timeout_s)
    run.rates[rate] = result = run_load(target, schedule, options, progress=progress)
    plans = ""
    if watch is not None:
        run.rate_plans[rate] = ran = watch.stop()
        plans = f", mean batch {ran.batch_size or 0:.2f}, {len(ran.switches)} switches"
    summary = result.summary().overall
    lat = summary.latency
    text = "no replies" if lat is None else f"p50 {lat.p50_ms:.0f} ms, p99 {lat.p99_ms:.0f} ms"
    say(tag, f"{rate:g} req/s: {text}, {summary.failed} failed{plans}", started)


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
