"""One system of the end-to-end suite (benchmarks/e2e.py) in one round: started (Packrat or
TorchServe), sent its bursts and then its open-loop rates, stopped; the run saved as it ends
(harness/e2e/runs.py)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import httpx
import numpy as np

from packrat.bench.loadgen import (
    LoadOptions,
    LoadResult,
    OpenLoop,
    Phase,
    Target,
    from_offsets,
    run_load,
    run_load_async,
)

from harness.client import PhaseProgress
from harness.client import describe as describe_packrat
from harness.e2e.plans import PlanWatch
from harness.e2e.runs import (
    WARM_BATCHES,
    LoadPlan,
    System,
    SystemRun,
    burst_latencies_ms,
    run_folder,
    save_run,
    say,
)
from harness.serve import packrat_serve
from harness.torchserve import TorchServeModel, log_evidence, torchserve
from harness.torchserve import describe as describe_torchserve

PACKRAT_START_TIMEOUT_S = 900.0  # a first start profiles the model when no profile is cached


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
