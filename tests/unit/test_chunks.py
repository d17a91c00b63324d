"""Instances that run a batch as consecutive chunks where the profile says it is faster."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pytest

from packrat.models.base import Handler
from packrat.models.chunked_source import ChunkedHandler, ChunkedSource, chunkable
from packrat.models.zoo import ZooSource
from packrat.optimizer.chunks import chunked
from packrat.optimizer.solve import PlanTable
from packrat.optimizer.table import LatencyTable
from packrat.types import CellMap


def superlinear(per_item: float, growth: float, batches: range) -> dict[int, float]:
    """Each request costs more as the batch grows past 8 (activations outgrow the caches)."""
    return {b: b * per_item * (1 + growth * max(0, b - 8)) for b in batches}


def test_a_batch_that_runs_faster_in_chunks_is_planned_and_run_in_them() -> None:
    one = superlinear(10.0, 0.01, range(1, 65))
    two = superlinear(6.0, 0.01, range(1, 65))
    table = LatencyTable.from_cells(
        {**{(1, b): ms for b, ms in one.items()}, **{(2, b): ms for b, ms in two.items()}}
    )
    faster, chunks = chunked(table)
    # Up to 8 a request costs the same whatever the batch: whole batches (ties keep them).
    assert [chunks.at(1, b) for b in range(1, 9)] == [0] * 8
    # Beyond, chunks of 8 or so: each within 1% of the fastest split, the largest taken.
    assert chunks.at(1, 64) in (8, 9)
    assert faster.get(1, 64) == pytest.approx(8 * one[8], rel=0.01)
    assert faster.get(1, 20) == pytest.approx(2 * one[8] + one[4], rel=0.01)
    assert faster.get(2, 17) == pytest.approx(2 * two[8] + two[1], rel=0.01)
    # Never slower than the whole batch, and the plans gain from it.
    assert np.all(faster.latency_ms <= table.latency_ms)
    assert PlanTable(faster, 2, 64).latency_ms(2, 64) < PlanTable(table, 2, 64).latency_ms(2, 64)


def test_chunks_are_taken_only_where_they_gain_three_percent() -> None:
    # Past 8, each request costs 0.2% more per request in the batch: at 16 chunks would gain
    # 1.6%, at 32 4.8%.
    costs = superlinear(10.0, 0.002, range(1, 33))
    _, chunks = chunked(LatencyTable.from_cells({(1, b): ms for b, ms in costs.items()}))
    assert chunks.at(1, 16) == 0 and chunks.at(1, 32) != 0


def test_a_cell_not_profiled_is_made_of_chunks_that_were() -> None:
    row = [10.0 * b for b in range(1, 9)] + [math.nan] * 8
    table = LatencyTable((1,), tuple(range(1, 17)), np.array([row]))
    faster, chunks = chunked(table)
    assert faster.get(1, 16) == pytest.approx(160.0) and chunks.at(1, 16) == 8


def test_a_table_without_every_batch_size_is_left_as_it_is() -> None:
    table = LatencyTable.from_cells({(1, 1): 10.0, (1, 8): 200.0})
    faster, chunks = chunked(table)
    assert faster is table and chunks.runs == {}


class _Doubler(Handler):
    """inference doubles a batch tensor and records the sizes it was called with."""

    def __init__(self) -> None:
        self.sizes: list[int] = []
        self.threads = 1

    def preprocess(self, requests: list[Any]) -> Any:
        import torch

        return torch.stack(requests)

    def inference(self, batch: Any) -> Any:
        self.sizes.append(len(batch))
        return batch * 2

    def postprocess(self, outputs: Any) -> list[Any]:
        return list(outputs.unbind(0))

    def example_requests(self, batch_size: int) -> list[Any]:
        import torch

        return [torch.full((3,), float(i)) for i in range(batch_size)]

    def set_threads(self, threads: int) -> None:
        self.threads = threads


def test_a_chunked_handler_splits_inference_only_and_answers_in_order() -> None:
    inner = _Doubler()
    handler = ChunkedHandler(inner, CellMap({1: ((1, 0), (5, 2)), 2: ((1, 0),)}), threads=1)
    requests = inner.example_requests(5)
    outputs = handler.handle(requests)
    assert inner.sizes == [2, 2, 1]
    assert [float(o[0]) for o in outputs] == [0.0, 2.0, 4.0, 6.0, 8.0]
    inner.sizes.clear()
    handler.handle(requests[:4])  # below the run of chunks: whole
    handler.set_threads(2)
    handler.handle(requests)  # two threads: whole
    assert inner.sizes == [4, 5] and inner.threads == 2
    assert handler.chunk_size(5) == 5


def test_only_batch_tensor_models_are_chunked() -> None:
    assert chunkable(ZooSource("tiny-resnet"))
    wrapped = ChunkedSource(ZooSource("tiny-resnet"), CellMap({1: ((1, 2),)}))
    assert wrapped.name == "tiny-resnet" and wrapped.input_spec is not None
    assert wrapped.identity() == ZooSource("tiny-resnet").identity()  # the same model
    assert not chunkable(wrapped)  # never twice


def test_with_chunks_wraps_a_tensor_model_and_describes_its_chunks() -> None:
    from packrat.profiler.backend_choice import Candidate
    from packrat.profiler.backend_plan import with_chunks
    from packrat.profiler.backend_select import Selection

    costs = superlinear(10.0, 0.01, range(1, 33))
    table = LatencyTable.from_cells({(1, b): ms for b, ms in costs.items()})
    plain = Selection(ZooSource("tiny-resnet"), Candidate("torch"), "as asked")
    served, faster = with_chunks(plain, table)
    assert isinstance(served.source, ChunkedSource) and faster.get(1, 32) < table.get(1, 32)
    chunks = served.to_json()["chunks_by_threads"]
    assert isinstance(chunks, dict) and chunks["1"][0] == "1-10 whole"
    assert chunks["1"][1].endswith(" in chunks of 8")
    # A linear table gains nothing from chunks: the model is served as it was.
    linear = LatencyTable.from_cells({(1, b): 10.0 * b for b in range(1, 33)})
    assert with_chunks(plain, linear) == (plain, linear)
