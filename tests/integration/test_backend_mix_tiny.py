"""Serving tiny-resnet on ONNX Runtime and OpenVINO at once: each batch on its cell's backend."""

from __future__ import annotations

import asyncio
import dataclasses
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from packrat.controller.batching import BatchingConfig
from packrat.models import ZooSource
from packrat.models.backends import Backend
from packrat.models.chunked_source import ChunkedSource
from packrat.models.convert import convert_source
from packrat.models.mixed_source import MixedHandler, MixedSource
from packrat.optimizer.table import LatencyTable
from packrat.pool import Engine, EngineConfig
from packrat.profiler.backend_choice import Candidate
from packrat.profiler.backend_plan import profile_order
from packrat.profiler.backend_select import Selection, select_backend
from packrat.progress import NullProgress, Progress
from packrat.server.model_config import ModelConfig
from packrat.server.model_setup import serving_table
from packrat.topology import allocate, read_topology
from packrat.types import CellMap, parse_plan

pytestmark = pytest.mark.slow

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "fixtures"))
from recording_progress import RecordingProgress  # noqa: E402

ORT, OV = Candidate("onnxruntime"), Candidate("openvino")
# One thread: ONNX Runtime up to batch 2, OpenVINO from 3; two threads: OpenVINO throughout.
OWNERS = CellMap({1: ((1, 0), (3, 1)), 2: ((1, 1),)})


@pytest.fixture(autouse=True)
def _own_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PACKRAT_CACHE_DIR", str(tmp_path / "cache"))


@pytest.fixture
def mixed() -> MixedSource:
    source = ZooSource("tiny-resnet")
    converted = [convert_source(source, Backend(c.backend)) for c in (ORT, OV)]
    return MixedSource(converted, [str(ORT), str(OV)], OWNERS)


def _reference(batch: int) -> tuple[list[Any], np.ndarray]:
    handler = ZooSource("tiny-resnet").load()
    handler.initialize()
    requests = handler.example_requests(batch)
    return requests, np.stack([np.asarray(row) for row in handler.handle(requests)])


def test_each_batch_runs_on_the_backend_that_owns_its_cell(
    mixed: MixedSource, monkeypatch: pytest.MonkeyPatch
) -> None:
    import torch

    torch.set_num_threads(1)
    handler = mixed.load()
    assert isinstance(handler, MixedHandler)
    handler.initialize()
    ran: list[str] = []
    for label, inner in zip(handler.labels, handler.handlers, strict=True):
        real = inner.inference
        monkeypatch.setattr(inner, "inference", lambda b, r=real, n=label: ran.append(n) or r(b))
    for batch, expected in ((1, str(ORT)), (2, str(ORT)), (3, str(OV)), (4, str(OV))):
        requests, reference = _reference(batch)
        outputs = np.stack([np.asarray(row) for row in handler.handle(requests)])
        np.testing.assert_allclose(outputs, reference, rtol=1e-3, atol=1e-4)
        assert ran[-1] == expected == handler.backend_for(batch)
    # With OpenVINO in it, a mix cannot move: the pool starts a worker on each layout.
    assert not mixed.moves_in_place and ChunkedSource(mixed, CellMap({})).moves_in_place is False


def test_an_engine_serves_a_mix_in_its_workers_and_answers_as_torch_does(
    mixed: MixedSource,
) -> None:
    requests, reference = _reference(4)
    plan = allocate(parse_plan("<2,1,2>"), read_topology())
    with Engine(mixed, plan, EngineConfig()) as engine:
        outputs = np.stack([np.asarray(row) for row in engine.infer(requests)])
    np.testing.assert_allclose(outputs, reference, rtol=1e-3, atol=1e-4)


def test_contenders_are_profiled_and_their_plans_choose() -> None:
    topology = read_topology()
    chosen = select_backend(ZooSource("tiny-resnet"), "onnxruntime", "fp32", topology, 4)
    other = convert_source(ZooSource("tiny-resnet"), Backend.OPENVINO)
    contending = Selection(
        chosen.source, chosen.candidate, chosen.reason,
        contenders={ORT: chosen.source, OV: other},
    )  # fmt: skip
    config = ModelConfig("tiny-resnet", batching=BatchingConfig(4, 5.0))

    def serve(
        config: ModelConfig = config, progress: Progress | None = None
    ) -> tuple[Selection, LatencyTable | None]:
        return asyncio.run(
            serving_table(
                config, contending, topology, progress or NullProgress(),
                engine_config=EngineConfig(), contention=False,
            )
        )  # fmt: skip

    progress = RecordingProgress()
    served, table = serve(progress=progress)
    # Each sweep, a thread count of one contender in turn, says which and which of them.
    order = profile_order([ORT, OV], topology.num_cores)
    steps = [f"profiling tiny-resnet on {s.candidate} ({n} of {len(order)})"
             for n, s in enumerate(order, 1)]  # fmt: skip
    assert progress.descriptions[:2] == steps[:2]  # pruning may skip a later row, not row 1
    assert progress.descriptions == [step for step in steps if step in progress.descriptions]
    assert table is not None and table.batches == (1, 2, 3, 4)
    verdicts = served.to_json()["candidates"]
    assert isinstance(verdicts, dict) and {str(ORT), str(OV)} <= set(verdicts)
    for verdict in (verdicts[str(ORT)], verdicts[str(OV)]):
        assert verdict.startswith(("chosen", "plans ")), verdict
    # Run in chunks where the profile says that is faster, or as it is.
    source = served.source.source if isinstance(served.source, ChunkedSource) else served.source
    assert bool(served.chunks) == isinstance(served.source, ChunkedSource)
    if isinstance(source, MixedSource):
        assert served.to_json()["backend"] == "onnxruntime+openvino"
        assert served.cells
    else:
        assert source is contending.contenders[served.candidate]
        assert verdicts[str(served.candidate)] == "chosen"
    # Each contender's profile is cached apart: a second start measures nothing new.
    again, _ = serve()
    assert again.to_json()["backend"] == served.to_json()["backend"]
    # With chunks off, every share runs whole, planned on the table as measured.
    whole, whole_table = serve(dataclasses.replace(config, chunks=False))
    assert not isinstance(whole.source, ChunkedSource) and not whole.chunks
    assert whole_table is not None and table is not None
    chunked = {(t, b): ms for t, b, ms in table.cells()}
    assert all(ms >= chunked[t, b] for t, b, ms in whole_table.cells())  # chunks only gain


def test_an_engine_runs_a_mix_in_chunks_and_answers_as_torch_does(mixed: MixedSource) -> None:
    # One thread from batch 3: chunks of 2 (each run by ONNX Runtime, the owner of (1, 2)).
    chunked = ChunkedSource(mixed, CellMap({1: ((1, 0), (3, 2))}))
    requests, reference = _reference(8)
    plan = allocate(parse_plan("<2,1,4>"), read_topology())
    with Engine(chunked, plan, EngineConfig()) as engine:
        outputs = np.stack([np.asarray(row) for row in engine.infer(requests)])
    np.testing.assert_allclose(outputs, reference, rtol=1e-3, atol=1e-4)
