"""Serving one backend or a mix by cell, from each backend's profile and its plans."""

from __future__ import annotations

from typing import Any

import pytest

from packrat.controller.backend_mix import describe_owners, geometric_mean, mix_backends
from packrat.errors import ModelError
from packrat.models.base import Handler, ModelIdentity, ModelSource
from packrat.models.mixed_source import MixedHandler, MixedSource
from packrat.optimizer.solve import PlanTable
from packrat.optimizer.table import LatencyTable
from packrat.profiler.backend_choice import Candidate
from packrat.profiler.backend_plan import (
    ProfileStep,
    needs_plans,
    profile_order,
    serve_by_plans,
)
from packrat.profiler.backend_select import Selection
from packrat.types import CellMap

ORT, OV = Candidate("onnxruntime"), Candidate("openvino")
BATCHES = (1, 2, 4, 8, 16, 32, 64)


def linear(fixed: dict[int, float], per_item: dict[int, float]) -> LatencyTable:
    """L(t, b) = fixed[t] + per_item[t] * b on 1 and 2 threads, every batch size 1-64."""
    cells = {(t, b): fixed[t] + per_item[t] * b for t in (1, 2) for b in BATCHES}
    return LatencyTable.from_cells(cells).interpolated()


# As on the AMD machine: ONNX Runtime ahead on small batches, OpenVINO on large ones.
ORT_TABLE = linear({1: 2.0, 2: 1.0}, {1: 20.0, 2: 11.0})
OV_TABLE = linear({1: 5.0, 2: 4.0}, {1: 17.0, 2: 10.0})


def test_backends_fast_on_different_cells_are_mixed_and_every_plan_gains() -> None:
    mix = mix_backends({"ort": ORT_TABLE, "ov": OV_TABLE}, 2, 64)
    assert mix.mixed and mix.labels == ("ort", "ov")
    # Each cell is its fastest backend's: ORT on small batches, OV from where it overtakes.
    assert [mix.owners.at(2, b) for b in (1, 3, 4, 64)] == [0, 0, 1, 1]
    assert [mix.owners.at(1, b) for b in (1, 2)] == [0, 1]
    assert mix.table.get(2, 1) == ORT_TABLE.get(2, 1)
    assert mix.table.get(1, 32) == OV_TABLE.get(1, 32)
    # The mixed plans are never slower than either backend's, and faster than the best one's
    # somewhere by at least the 3% that pays for the second runtime.
    for label in ("ort", "ov"):
        assert all(m <= s for m, s in zip(mix.plan_ms["mixed"], mix.plan_ms[label], strict=True))
    assert "ort and ov, each instance on the faster" in mix.reason
    assert describe_owners(mix) == {"1": ["1 ort", "2-64 ov"], "2": ["1-3 ort", "4-64 ov"]}


def test_a_backend_fastest_on_every_cell_is_served_alone() -> None:
    slower = linear({1: 3.0, 2: 2.0}, {1: 25.0, 2: 14.0})
    mix = mix_backends({"slow": slower, "fast": ORT_TABLE}, 2, 64)
    assert mix.labels == ("fast",) and not mix.mixed
    assert mix.table is ORT_TABLE
    assert mix.reason == "fast: its plans are the fastest for every batch size 1-64"


def test_a_mix_that_gains_too_little_is_not_worth_a_second_runtime() -> None:
    # B is 1% faster than A on two threads, A 1% faster on one: each wins some cells, but no
    # plan gains 3% by mixing them.
    a = linear({1: 2.0, 2: 1.0}, {1: 20.0, 2: 11.0})
    b = linear({1: 2.02, 2: 0.99}, {1: 20.2, 2: 10.89})
    mix = mix_backends({"a": a, "b": b}, 2, 64)
    assert not mix.mixed
    assert "mixing backends would gain" in mix.reason and "under the 3%" in mix.reason
    # The one served is the one whose plans are fastest over the batch sizes.
    best = min(("a", "b"), key=lambda label: sum(mix.plan_ms[label]))
    assert mix.labels == (best,)


def test_only_the_backends_the_plans_use_are_mixed() -> None:
    # "odd" owns one cell, one thread at batch 64 (1000 ms, OpenVINO's 1093), but every plan
    # for 64 splits it over two instances (549 ms): it is not loaded in the workers.
    odd = LatencyTable.from_cells({(1, 64): 1000.0})
    assert OV_TABLE.get(1, 64) == 1093.0 and PlanTable(OV_TABLE, 2, 64).latency_ms(2, 64) == 549.0
    mix = mix_backends({"ort": ORT_TABLE, "ov": OV_TABLE, "odd": odd}, 2, 64)
    assert mix.labels == ("ort", "ov")
    assert mix.table.get(1, 64) == 1093.0


def test_a_backend_that_cannot_share_a_worker_is_never_mixed() -> None:
    # ORT fast on small batches, OV on large ones; torch in between, best alone by its plans.
    ort = linear({1: 1.0, 2: 0.5}, {1: 24.0, 2: 14.0})
    ov = linear({1: 60.0, 2: 50.0}, {1: 16.0, 2: 9.0})
    torch = linear({1: 20.0, 2: 15.0}, {1: 19.0, 2: 10.7})
    tables = {"torch": torch, "ort": ort, "ov": ov}
    assert "torch" in mix_backends(tables, 2, 64).labels  # it owns cells: mixed if allowed
    mix = mix_backends(tables, 2, 64, alone={"torch"})
    assert mix.labels == ("ort", "ov") and mix.mixed
    assert {mix.owners.at(t, b) for t in (1, 2) for b in BATCHES} == {0, 1}  # ort and ov only
    # The mix lacks torch's cells, so it is served only where it is 3% faster over every
    # batch size (geometric mean), here 3.9%.
    overall = geometric_mean(mix.plan_ms["torch"]) / geometric_mean(mix.plan_ms["mixed"])
    assert 1.03 < overall < 1.05
    assert geometric_mean(mix.plan_ms["torch"]) < min(
        geometric_mean(mix.plan_ms[label]) for label in ("ort", "ov")
    )
    closer = linear({1: 20.0, 2: 15.0}, {1: 18.5, 2: 10.3})  # 1.3% slower than the mix
    kept = mix_backends({**tables, "torch": closer}, 2, 64, alone={"torch"})
    assert kept.labels == ("torch",) and kept.table is closer
    assert kept.reason == (
        "torch: its plans are the fastest over batch sizes 1-64 (geometric mean); a mix of the "
        "others would be 1.3% faster, under the 3% that pays for a second runtime in every worker"
    )
    fast = linear({1: 6.0, 2: 5.0}, {1: 17.0, 2: 9.6})
    assert mix_backends({**tables, "torch": fast}, 2, 64, alone={"torch"}).reason.endswith(
        "a mix of the others would be slower"
    )


def test_cell_owners_follow_the_nearest_thread_count_below_and_the_run_holding_the_batch() -> None:
    owners = CellMap({2: ((1, 0), (4, 1)), 4: ((1, 1),)})
    assert owners.at(1, 8) == 0  # no thread count profiled at or below: the first
    assert [owners.at(2, b) for b in (1, 3, 4, 100)] == [0, 0, 1, 1]
    assert owners.at(3, 1) == 0 and owners.at(8, 1) == 1
    assert owners.values() == {0, 1}


class _Fake(Handler):
    def __init__(self, name: str, *, torch_based: bool = False) -> None:
        self.name, self.threads, self.ran = name, 1, 0
        self.computes_with_torch = torch_based

    def preprocess(self, requests: list[Any]) -> Any:
        return list(requests)

    def inference(self, batch: Any) -> Any:
        self.ran += 1
        return [f"{self.name}:{item}" for item in batch]

    def postprocess(self, outputs: Any) -> list[Any]:
        return list(outputs)

    def example_requests(self, batch_size: int) -> list[Any]:
        return list(range(batch_size))

    def set_threads(self, threads: int) -> None:
        self.threads = threads


class _FakeSource(ModelSource):
    def __init__(self, name: str) -> None:
        self.name = "m"
        self.backend_name = name

    def identity(self) -> ModelIdentity:
        return ModelIdentity("m", f"sha256:{self.backend_name}")

    def load(self) -> Handler:
        return _Fake(self.backend_name)


def test_a_mixed_handler_runs_each_batch_on_its_cells_backend_and_rethreads_all() -> None:
    ort, ov = _Fake("ort"), _Fake("ov")
    handler = MixedHandler([ort, ov], ["ort", "ov"], CellMap({1: ((1, 0), (3, 1))}))
    assert handler.handle([1, 2]) == ["ort:1", "ort:2"]
    assert handler.handle([1, 2, 3]) == ["ov:1", "ov:2", "ov:3"]
    handler.set_threads(2)
    assert (ort.threads, ov.threads, handler.threads) == (2, 2, 2)
    with pytest.raises(ModelError, match="cannot mix torch fp32 with other backends"):
        MixedHandler([_Fake("t", torch_based=True), ov], ["torch fp32", "ov"], CellMap({}))


def test_the_plans_serve_a_mix_or_the_one_contender_they_favour() -> None:
    sources = {ORT: _FakeSource("ort"), OV: _FakeSource("ov")}
    probe = Selection(sources[ORT], ORT, "onnxruntime fp32: probes", contenders=sources)
    assert needs_plans(probe) and not needs_plans(Selection(sources[ORT], ORT, "alone"))
    mixed, table = serve_by_plans(probe, {ORT: ORT_TABLE, OV: OV_TABLE}, 2, 64)
    assert isinstance(mixed.source, MixedSource)
    assert mixed.source.sources == (sources[ORT], sources[OV])
    described = mixed.to_json()
    assert described["backend"] == "onnxruntime+openvino" and described["precision"] == "fp32"
    assert described["backends_by_threads"] == {
        "1": ["1 onnxruntime fp32", "2-64 openvino fp32"],
        "2": ["1-3 onnxruntime fp32", "4-64 openvino fp32"],
    }
    assert described["candidates"] == {
        "onnxruntime fp32": "chosen, in a mix by cell",
        "openvino fp32": "chosen, in a mix by cell",
    }
    assert table.get(1, 32) == OV_TABLE.get(1, 32)
    # OpenVINO's plans win everywhere: it is served alone, though the probes chose ORT.
    slower = linear({1: 3.0, 2: 2.0}, {1: 25.0, 2: 14.0})
    alone, table = serve_by_plans(probe, {ORT: slower, OV: OV_TABLE}, 2, 64)
    assert alone.source is sources[OV] and alone.candidate == OV and table is OV_TABLE
    assert alone.to_json()["backend"] == "openvino"
    verdict = alone.verdicts[str(ORT)]
    assert verdict.startswith("plans ") and verdict.endswith(
        "x slower (geometric mean over batch sizes)"
    )


def test_a_torch_probe_choice_gives_way_to_a_runtime_whose_plans_are_faster() -> None:
    # As gpt2 on the AMD machine: torch won the probes by 2%, ONNX Runtime's plans win.
    torch = Candidate("torch")
    sources = {torch: _FakeSource("torch"), ORT: _FakeSource("ort")}
    probe = Selection(sources[torch], torch, "torch fp32: probes", contenders=sources)
    slower = linear({1: 30.0, 2: 25.0}, {1: 21.0, 2: 11.5})
    served, table = serve_by_plans(probe, {torch: slower, ORT: ORT_TABLE}, 2, 64)
    assert served.candidate == ORT and served.source is sources[ORT] and table is ORT_TABLE
    assert served.verdicts["torch fp32"].startswith("plans ")
    # And where torch's plans are faster, it is served alone, never in a mix.
    served, table = serve_by_plans(probe, {torch: ORT_TABLE, ORT: slower}, 2, 64)
    assert served.candidate == torch and not isinstance(served.source, MixedSource)


def test_contenders_are_profiled_row_by_row_in_alternating_turns() -> None:
    def steps(order: list[ProfileStep]) -> list[tuple[str, int, int]]:
        return [(step.candidate.backend, step.rows, step.passes) for step in order]

    ort, ov = "onnxruntime", "openvino"
    assert steps(profile_order([ORT, OV], cores=2)) == [
        (ort, 1, 1), (ov, 1, 1), (ov, 2, 1), (ort, 2, 1),  # pass 1: row 1, then row 2
        (ov, 1, 2), (ort, 1, 2), (ort, 2, 2), (ov, 2, 2),  # pass 2 starts where 1 ended
    ]  # fmt: skip
    bf16 = Candidate("openvino", "bf16")
    three = profile_order([ORT, OV, bf16], cores=4, passes=3)
    assert len(three) == 3 * 4 * 3
    assert [s.candidate for s in three[3:6]] == [bf16, OV, ORT]  # row 2 in reverse
    assert {(s.rows, s.passes) for s in three[3:6]} == {(2, 1)}
    assert [s.candidate for s in three[-3:]] == [bf16, OV, ORT]  # pass 3, row 4: (3 + 4) odd
