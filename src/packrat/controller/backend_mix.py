"""Which backends a model's instances run, decided from each backend's profile and its plans.

The probe choice (`profiler.backend_choice`) picks one backend by a few cells. Backends differ
by cell, though: on the AMD machine ONNX Runtime won the probes for gpt2 and bert-base, and
Packrat's plans on it then ran batch 64 10-20% slower than OpenVINO's own THROUGHPUT mode
(docs/benchmarks/backends.md). Here every contender has a full profile L(t, b), and:

- the *mixed* table takes each cell (threads, batch) from the backend fastest on it, and its
  *owners* say which; an instance then runs each batch on the owner of its cell (a worker
  holds every backend of the mix: `models.mixed_source`);
- the plans for every batch size 1..max_batch are made on each backend's table and on the
  mixed one. The mix is served only where it pays: its plan must be at least `min_gain`
  faster than the best single backend's at some batch size, and use more than one backend.
  Otherwise the single backend whose plans are fastest over every batch size (geometric
  mean) is served: one runtime per worker, half the memory.
- a backend that cannot share a worker (torch, whose threads are its own: `alone`) is never
  in the mix. Where it is the best single backend, the mix of the others does not hold its
  cells, so the mix is served only if its plans are `min_gain` faster than that backend's
  over every batch size (geometric mean).

Profiles skip cells no optimal plan *on their own table* can use (`profiler.prune`); the mixed
plans are optimal over the cells measured, which a cell skipped by every backend could in
principle have beaten.

Pure: tables in, a decision out; the caller profiles and serves.
"""

from __future__ import annotations

import math
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, field

from packrat.errors import PlanError
from packrat.optimizer.solve import PlanTable
from packrat.optimizer.table import LatencyTable
from packrat.types import CellMap, InstanceSpec

MIN_GAIN = 1.03
"""The least speed-up at some batch size that pays for a second runtime in every worker: below
3% the profiles' own noise could make it up."""


@dataclass(frozen=True)
class BackendMix:
    """What a model is served on, from its backends' profiles.

    labels: the backends served (one, or those the mix uses), by name (e.g. "openvino fp32").
    table: the latency table to plan with: the single backend's, or the mixed one.
    owners: for a mix, which label (by index) runs each cell; for one backend, none.
    plan_ms: per label, and "mixed", the optimal plan's latency for batch 1..max_batch.
    reason: in words, for the log and describe.
    """

    labels: tuple[str, ...]
    table: LatencyTable
    owners: CellMap = field(default_factory=lambda: CellMap({}))
    plan_ms: Mapping[str, tuple[float, ...]] = field(default_factory=dict)
    reason: str = ""

    @property
    def mixed(self) -> bool:
        return len(self.labels) > 1


def mix_backends(
    tables: Mapping[str, LatencyTable],
    cores: int,
    max_batch: int,
    *,
    min_gain: float = MIN_GAIN,
    alone: Collection[str] = (),
) -> BackendMix:
    """Serve one backend of `tables` or a mix of them (see the module docstring).

    tables: each backend's latency table, by label; the first wins ties. Tables are taken as
        they are: pass interpolated ones to plan every batch size.
    alone: the labels that cannot share a worker with another backend (never mixed).
    Raises PlanError if no table plans any batch size up to `max_batch` on `cores`.
    """
    if not tables:
        raise PlanError("no backend's profile to choose from")
    labels = list(tables)
    plan_ms = {
        label: _plan_latencies(PlanTable(tables[label], cores, max_batch), cores)
        for label in labels
    }
    best = min(labels, key=lambda label: (geometric_mean(plan_ms[label]), labels.index(label)))
    if len(labels) == 1:
        return BackendMix((best,), tables[best], plan_ms=plan_ms, reason=f"{best}: the only one")
    fastest = f"its plans are the fastest over batch sizes 1-{max_batch} (geometric mean)"
    mixable = [label for label in labels if label not in alone]
    if len(mixable) < 2:
        return BackendMix((best,), tables[best], plan_ms=plan_ms, reason=f"{best}: {fastest}")
    table, owned = _fastest_cells(tables, mixable)
    mixed = PlanTable(table, cores, max_batch)
    plan_ms["mixed"] = _plan_latencies(mixed, cores)
    every = CellMap.from_cells(owned)
    used = sorted({every.at(i.threads, i.batch) for i in _instances(mixed, cores)})
    # Per batch size, the best single backend's plan over the mix's (1 where neither plans).
    gains = [
        s / m if s < math.inf else 1.0 for s, m in zip(plan_ms[best], plan_ms["mixed"], strict=True)
    ]
    gain = max(gains)
    if len(used) < 2:
        why = (
            fastest
            if best in alone
            else f"its plans are the fastest for every batch size 1-{max_batch}"
        )
        return BackendMix((best,), tables[best], plan_ms=plan_ms, reason=f"{best}: {why}")
    need = f"under the {(min_gain - 1) * 100:.0f}% that pays for a second runtime in every worker"
    if best in alone:  # the mix lacks best's cells: it must be faster overall
        overall = geometric_mean(plan_ms[best]) / geometric_mean(plan_ms["mixed"])
        if overall < min_gain:
            than = f"{(overall - 1) * 100:.1f}% faster, {need}" if overall >= 1 else "slower"
            why = f"{fastest}; a mix of the others would be {than}"
            return BackendMix((best,), tables[best], plan_ms=plan_ms, reason=f"{best}: {why}")
    elif gain < min_gain:
        why = f"{fastest}; mixing backends would gain {(gain - 1) * 100:.1f}% at most, {need}"
        return BackendMix((best,), tables[best], plan_ms=plan_ms, reason=f"{best}: {why}")
    kept = [mixable[i] for i in used]
    table, owned = _fastest_cells({label: tables[label] for label in kept}, kept)
    runs = CellMap.from_cells(owned)
    reason = (
        f"{' and '.join(kept)}, each instance on the faster for its threads and batch: plans "
        f"up to {gain:.2f}x faster than on {best} alone (batch {gains.index(gain) + 1})"
    )
    return BackendMix(tuple(kept), table, runs, plan_ms, reason)


def describe_owners(mix: BackendMix) -> dict[str, list[str]]:
    """Per thread count, which label runs which batch sizes, e.g. {"1": ["1-8 onnxruntime
    fp32", "9-64 openvino fp32"]}; JSON-ready, for describe."""
    return mix.owners.describe(int(mix.table.batches[-1]), lambda index: mix.labels[index])


def _plan_latencies(plans: PlanTable, cores: int) -> tuple[float, ...]:
    """The optimal plan's latency for every batch size 1..max_batch (inf where none)."""
    return tuple(plans.latency_ms(cores, b) for b in range(1, plans.max_batch + 1))


def _instances(plans: PlanTable, cores: int) -> list[InstanceSpec]:
    """The instances of every batch size's optimal plan (none where no plan exists)."""
    found: list[InstanceSpec] = []
    for batch in range(1, plans.max_batch + 1):
        if plans.latency_ms(cores, batch) < math.inf:
            found.extend(plans.plan(cores, batch).instances)
    return found


def _fastest_cells(
    tables: Mapping[str, LatencyTable], labels: Sequence[str]
) -> tuple[LatencyTable, dict[tuple[int, int], int]]:
    """The cellwise fastest table over `labels`, and each cell's owner (index into labels;
    the earlier label on a tie)."""
    best: dict[tuple[int, int], tuple[float, int]] = {}
    for index, label in enumerate(labels):
        for threads, batch, ms in tables[label].cells():
            known = best.get((threads, batch))
            if known is None or ms < known[0]:
                best[(threads, batch)] = (ms, index)
    table = LatencyTable.from_cells({cell: ms for cell, (ms, _) in best.items()})
    return table, {cell: index for cell, (_, index) in best.items()}


def geometric_mean(values: Sequence[float]) -> float:
    """Of the finite values (inf if none): batch sizes that no plan covers do not count."""
    finite = [v for v in values if v < math.inf]
    if not finite:
        return math.inf
    return math.exp(sum(math.log(v) for v in finite) / len(finite))
