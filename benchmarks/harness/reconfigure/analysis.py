"""What benchmarks/reconfigure.py finds in its rounds: latency per phase (pooled, settled),
the requests in flight during a switch against the steady ones and against the same requests
on the best fixed server, and each load level against the best fixed plan."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from packrat.bench.loadgen import (
    AroundSwitch,
    LatencyStats,
    LoadResult,
    LoadSummary,
    PhaseSummary,
    RequestRecord,
    RequestSet,
    SwitchImpact,
    around_switches,
    in_flight_during_any,
)

from harness.reconfigure.runs import Round, ServerRun

LEVEL_TOLERANCE = 1.10  # each load level within 10% of the best fixed plan


@dataclass(frozen=True)
class SwitchSeen:
    """One switch of a server, the round it came in, and the requests around it."""

    round: Round
    switch: dict[str, Any]
    around: AroundSwitch


def around_round(rnd: Round, window_s: float) -> list[AroundSwitch]:
    return around_switches(rnd.result.records, rnd.spans, window_s)


def around(run: ServerRun, window_s: float) -> list[SwitchSeen]:
    """Every switch of every round, round after round, with the requests around it."""
    return [
        SwitchSeen(rnd, switch, near)
        for rnd in run.rounds
        for switch, near in zip(rnd.switches, around_round(rnd, window_s), strict=True)
    ]


def pooled(run: ServerRun) -> LoadSummary:
    """Per phase and overall, the requests of all rounds together (durations added up)."""
    records, rounds = run.records, len(run.rounds)
    phases = tuple(
        PhaseSummary.of(p.name, p.duration_s * rounds, [r for r in records if r.phase == p.name])
        for p in run.phases
    )
    total_s = (run.phases[-1].end_s - run.phases[0].start_s) * rounds
    return LoadSummary(phases, PhaseSummary.of("overall", total_s, records))


def settled(results: Sequence[LoadResult], settle_s: float) -> list[PhaseSummary]:
    """Each phase without its first `settle_s` seconds (requests scheduled after that), the
    requests of all `results` (rounds of the same schedule) together."""
    summaries = []
    for phase in results[0].phases:
        from_s = min(phase.start_s + settle_s, phase.end_s)
        records = [
            r
            for result in results
            for r in result.records
            if r.phase == phase.name and r.scheduled_s >= from_s
        ]
        duration_s = (phase.end_s - from_s) * len(results)
        summaries.append(PhaseSummary.of(phase.name, duration_s, records))
    return summaries


def settled_rounds(run: ServerRun, settle_s: float) -> list[PhaseSummary]:
    """`settled` over all the rounds of `run`."""
    return settled([rnd.result for rnd in run.rounds], settle_s)


def in_flight(rnd: Round) -> tuple[list[RequestRecord], list[RequestRecord]]:
    """The round's requests in flight during any of its switches, and the rest (steady)."""
    mask = in_flight_during_any(rnd.result.records, rnd.spans)
    during = [r for r, hit in zip(rnd.result.records, mask, strict=True) if hit]
    steady = [r for r, hit in zip(rnd.result.records, mask, strict=True) if not hit]
    return during, steady


def impact_per_phase(run: ServerRun) -> list[tuple[str, SwitchImpact]]:
    """In flight during a switch (of the same round) against steady, all rounds together:
    over the whole schedule, then in each phase."""
    during: list[RequestRecord] = []
    steady: list[RequestRecord] = []
    for rnd in run.rounds:
        mine, rest = in_flight(rnd)
        during += mine
        steady += rest

    def impact(phase: str | None) -> SwitchImpact:
        def of(records: list[RequestRecord]) -> RequestSet:
            return RequestSet.of([r for r in records if phase is None or r.phase == phase])

        return SwitchImpact(of(during), of(steady))

    return [("all", impact(None)), *((p.name, impact(p.name)) for p in run.phases)]


def best_fixed(fixed: Sequence[ServerRun]) -> ServerRun | None:
    """The fixed server with the lowest p50 over the whole schedule, all rounds pooled."""
    scored = [(pooled(run).overall.latency, run) for run in fixed]
    ranked = [(stats.p50_ms, k, run) for k, (stats, run) in enumerate(scored) if stats is not None]
    return min(ranked)[2] if ranked else None


def same_requests(records: Sequence[RequestRecord], reference: LoadResult) -> list[RequestRecord]:
    """`reference`'s records of the requests scheduled at the same times as `records` (every
    server and round gets the same seeded schedule)."""
    wanted = {r.scheduled_s for r in records}
    return [r for r in reference.records if r.scheduled_s in wanted]


def counterfactual_per_phase(
    run: ServerRun, reference: ServerRun
) -> list[tuple[str, RequestSet, RequestSet]]:
    """Per phase (first "all"): the requests in flight during a switch, and the same requests
    on `reference`, a server that never switched, each round of `run` against the same round
    of `reference`, all rounds together. Comparing the two isolates what switching cost them:
    the requests around a switch come in the bursts that made it, so they are slower than the
    steady ones on any server."""
    mine: list[RequestRecord] = []
    theirs: list[RequestRecord] = []
    for rnd, ref in zip(run.rounds, reference.rounds, strict=False):  # rounds both ran
        during, _ = in_flight(rnd)
        mine += during
        theirs += same_requests(during, ref.result)
    rows = [("all", RequestSet.of(mine), RequestSet.of(theirs))]
    for phase in run.phases:
        rows.append(
            (
                phase.name,
                RequestSet.of([r for r in mine if r.phase == phase.name]),
                RequestSet.of([r for r in theirs if r.phase == phase.name]),
            )
        )
    return rows


def p99_ratio(mine: RequestSet, theirs: RequestSet) -> float:
    return mine.p99_ms / theirs.p99_ms if theirs.p99_ms > 0 else math.nan


@dataclass(frozen=True)
class LevelComparison:
    """One phase, settled, all rounds pooled: a policy's latency against the best fixed
    server's."""

    phase: str
    best: str
    best_p50_ms: float
    best_p99_ms: float
    p50_ms: float
    p99_ms: float

    @property
    def p50_ratio(self) -> float:
        return self.p50_ms / self.best_p50_ms

    @property
    def p99_ratio(self) -> float:
        return self.p99_ms / self.best_p99_ms

    @property
    def within(self) -> bool:
        return self.p50_ratio <= LEVEL_TOLERANCE and self.p99_ratio <= LEVEL_TOLERANCE


def compare_levels(
    policy: ServerRun, fixed: Sequence[ServerRun], settle_s: float
) -> list[LevelComparison]:
    """Per phase (settled, all rounds pooled), `policy`'s latency against the fixed server
    with the lowest p50."""
    theirs = {run.server.name: settled_rounds(run, settle_s) for run in fixed}
    rows = []
    for k, phase in enumerate(settled_rounds(policy, settle_s)):
        best: tuple[LatencyStats, str] | None = None
        for name, summaries in theirs.items():
            stats = summaries[k].latency
            if stats is not None and (best is None or stats.p50_ms < best[0].p50_ms):
                best = (stats, name)
        if phase.latency is None or best is None:
            continue
        stats, name = best
        rows.append(
            LevelComparison(
                phase.name,
                name,
                stats.p50_ms,
                stats.p99_ms,
                phase.latency.p50_ms,
                phase.latency.p99_ms,
            )
        )
    return rows
