"""Timing several sources side by side: passes in alternating order, so that a machine that
slows down steadily charges every source alike; a source that fails is left out alone."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import pytest

from packrat.errors import WorkerError
from packrat.models.runtime_source import OnnxFileSource
from packrat.pool.config import EngineConfig
from packrat.profiler import side_by_side
from packrat.profiler.side_by_side import measure_side_by_side
from packrat.profiler.sweep import SweepConfig
from packrat.stats import SamplingPolicy
from packrat.topology import Topology, synthetic_topology

POLICY = SamplingPolicy(warmup_runs=1, min_runs=4, max_runs=10, rel_ci=0.1, max_time_s=2.0)
TOPOLOGY = synthetic_topology(sockets=1, cores_per_socket=4)


@dataclass
class Machine:
    """A machine that gets 10% slower with every batch timed on it, whoever runs it; it logs
    which source timed which cell, and which sources fail (on start, or on their n-th pass)."""

    speeds: dict[str, float]
    fail_on_start: set[str] = field(default_factory=set)
    fail_on_measure: dict[str, int] = field(default_factory=dict)
    log: list[tuple[str, int, int]] = field(default_factory=list)
    alive: dict[str, int] = field(default_factory=dict)
    policies: set[SamplingPolicy] = field(default_factory=set)
    warmups: list[tuple[int, int, int]] = field(default_factory=list)
    """(threads, batch, warm-up runs) of each cell timed, in order."""

    def workers(
        self, source: OnnxFileSource, config: SweepConfig, topology: Topology, _: EngineConfig
    ) -> FakeWorkers:
        assert topology is TOPOLOGY and not config.contention  # one isolated instance
        self.policies.add(config.policy)
        return FakeWorkers(self, source.name.removesuffix(".onnx"))


class FakeWorkers:
    def __init__(self, machine: Machine, name: str) -> None:
        self.machine, self.name, self.threads = machine, name, 0

    def ready(self, threads: int) -> None:
        if self.name in self.machine.fail_on_start:
            raise WorkerError(f"{self.name}'s worker died on start")
        self.threads = threads
        self.machine.alive[self.name] = self.machine.alive.get(self.name, 0) + 1

    def measure(
        self, batch: int, policy: SamplingPolicy | None = None
    ) -> tuple[list[float], float | None]:
        machine = self.machine
        machine.warmups.append((self.threads, batch, (policy or POLICY).warmup_runs))
        measured = sum(1 for name, *_ in machine.log if name == self.name)
        if machine.fail_on_measure.get(self.name) == measured:
            raise WorkerError(f"{self.name}'s worker died")
        slowdown = 1.0 + 0.1 * len(machine.log)
        machine.log.append((self.name, self.threads, batch))
        return [machine.speeds[self.name] * batch / self.threads * slowdown] * 3, None

    def close(self) -> None:
        if self.threads:
            self.machine.alive[self.name] -= 1
            self.threads = 0


def sources(*names: str) -> dict[str, OnnxFileSource]:
    return {name: OnnxFileSource(Path(f"{name}.onnx")) for name in names}


def test_passes_alternate_the_order_so_a_steady_slowdown_charges_every_source_alike(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    machine = Machine({"a": 1.0, "b": 1.0, "c": 1.0})
    monkeypatch.setattr(side_by_side, "CellWorkers", machine.workers)
    cells = [(1, 2), (4, 1), (4, 8)]
    shares: dict[str, float] = {}

    def timed(key: str, share: float) -> None:
        shares[key] = shares.get(key, 0.0) + share

    found = measure_side_by_side(
        sources("a", "b", "c"), cells, POLICY, topology=TOPOLOGY, timed=timed
    )
    assert shares == pytest.approx({"a": 1.0, "b": 1.0, "c": 1.0})  # progress ends at 100%
    # Per thread count: a b c, then c b a, each source timing all its cells of that count.
    assert [name for name, threads, _ in machine.log if threads == 4] == list("aabbccccbbaa")
    assert [name for name, threads, _ in machine.log if threads == 1] == list("abccba")
    assert found.failed == {} and set(found.stats) == {"a", "b", "c"}
    for cell in cells:  # equally fast sources measure equally fast, though the machine slowed
        means = [found.stats[name][cell].mean_ms for name in "abc"]
        assert means == pytest.approx([means[0]] * 3), (cell, means)
        assert found.stats["a"][cell].pass_count == side_by_side.PASSES
    assert all(count == 0 for count in machine.alive.values())  # every worker set closed
    assert machine.policies == {POLICY.per_pass(side_by_side.PASSES)}  # one budget, shared


def test_a_later_pass_warms_up_short_cells_again_and_times_long_ones_at_once(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # A pass may spend 1 s on a cell (POLICY's 2 s over 2 passes); at 400 ms a request on
    # one thread, (1, 4) and (4, 16) run 1.6 s or more, (4, 1) 100-200 ms.
    machine = Machine({"a": 400.0})
    monkeypatch.setattr(side_by_side, "CellWorkers", machine.workers)
    cells = [(1, 4), (4, 1), (4, 16)]
    found = measure_side_by_side(sources("a"), cells, POLICY, topology=TOPOLOGY)
    warmups: dict[tuple[int, int], list[int]] = {}
    for threads, batch, runs in machine.warmups:
        warmups.setdefault((threads, batch), []).append(runs)
    # Every cell warmed up in the first pass; in the second only the short one.
    assert warmups == {(1, 4): [1, 0], (4, 1): [1, 1], (4, 16): [1, 0]}
    assert all(found.stats["a"][cell].pass_count == side_by_side.PASSES for cell in cells)


def test_one_after_the_other_the_same_slowdown_would_rank_them(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # The reason for the passes: in one pass the last source pays for the drift.
    machine = Machine({"a": 1.0, "b": 1.0})
    monkeypatch.setattr(side_by_side, "CellWorkers", machine.workers)
    found = measure_side_by_side(sources("a", "b"), [(4, 1)], POLICY, passes=1, topology=TOPOLOGY)
    assert found.stats["b"][(4, 1)].mean_ms > 1.05 * found.stats["a"][(4, 1)].mean_ms


def test_a_source_that_fails_is_left_out_and_the_others_go_on(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    machine = Machine({"a": 1.0, "b": 2.0, "c": 3.0}, fail_on_start={"b"}, fail_on_measure={"c": 2})
    monkeypatch.setattr(side_by_side, "CellWorkers", machine.workers)
    cells = [(1, 2), (4, 1), (4, 8)]
    found = measure_side_by_side(sources("a", "b", "c"), cells, POLICY, topology=TOPOLOGY)
    assert set(found.failed) == {"b", "c"} and set(found.stats) == {"a"}
    assert "died on start" in str(found.failed["b"]) and "died" in str(found.failed["c"])
    assert set(found.stats["a"]) == set(cells)
    assert not any(name in "bc" for name, threads, _ in machine.log if threads == 4)
    assert all(count == 0 for count in machine.alive.values())


def test_nothing_to_time_starts_nothing(monkeypatch: pytest.MonkeyPatch) -> None:
    machine = Machine({"a": 1.0})
    monkeypatch.setattr(side_by_side, "CellWorkers", machine.workers)
    assert measure_side_by_side(sources("a"), [], POLICY, topology=TOPOLOGY).stats == {}
    assert measure_side_by_side({}, [(1, 1)], POLICY, topology=TOPOLOGY).stats == {}
    assert machine.log == [] and machine.alive == {}
