"""Which candidates `--backend` and `--precision` allow, and the cells they are timed on."""

from __future__ import annotations

from pathlib import Path

import pytest

from packrat.errors import PackratError
from packrat.models.runtime_source import OnnxFileSource, OpenVinoFileSource
from packrat.profiler.backend_choice import Candidate
from packrat.profiler.backend_select import candidates, probe_cells, select_backend
from packrat.topology import synthetic_topology

TORCH, ORT, OV = Candidate("torch"), Candidate("onnxruntime"), Candidate("openvino")
OV_BF16 = Candidate("openvino", "bf16")


def test_auto_takes_bf16_only_where_the_cpu_runs_it_natively() -> None:
    assert candidates("auto", "auto", bf16_native=True) == [TORCH, ORT, OV, OV_BF16]
    assert candidates("auto", "auto", bf16_native=False) == [TORCH, ORT, OV]
    assert candidates("auto", "fp32", bf16_native=True) == [TORCH, ORT, OV]
    assert candidates("auto", "bf16", bf16_native=False) == [OV_BF16]  # asked: tried anyway


def test_a_named_backend_keeps_only_its_own_candidates() -> None:
    assert candidates("openvino", "auto", bf16_native=True) == [OV, OV_BF16]
    assert candidates("onnxruntime", "auto", bf16_native=True) == [ORT]
    assert candidates("torch", "fp32", bf16_native=False) == [TORCH]


def test_impossible_or_unknown_choices_are_refused_with_the_options() -> None:
    with pytest.raises(PackratError, match="the torch backend has no bf16 kernels"):
        candidates("torch", "bf16", bf16_native=True)
    with pytest.raises(PackratError, match="choose auto, torch, onnxruntime, openvino"):
        candidates("tensorrt", "auto", bf16_native=True)
    with pytest.raises(PackratError, match="choose auto, fp32, bf16"):
        candidates("auto", "int4", bf16_native=True)


def test_probe_cells_are_the_shapes_plans_are_made_of() -> None:
    assert probe_cells(2, 8) == [(1, 4), (2, 1), (2, 8)]
    assert probe_cells(16, 8) == [(1, 1), (16, 1), (16, 8)]
    assert probe_cells(1, 8) == [(1, 1), (1, 8)]


@pytest.mark.parametrize(
    ("source", "own", "other"),
    [
        (OnnxFileSource(Path("m.onnx")), "onnxruntime", "openvino"),
        (OpenVinoFileSource(Path("m.xml")), "openvino", "onnxruntime"),
    ],
)
def test_a_model_file_of_a_backend_format_is_served_by_that_backend(
    source: OnnxFileSource | OpenVinoFileSource, own: str, other: str
) -> None:
    topology = synthetic_topology(sockets=1, cores_per_socket=4)
    for backend in ("auto", own):
        selection = select_backend(source, backend, "auto", topology, max_batch=8)
        assert selection.candidate == Candidate(own)
        assert selection.reason == f"{own} fp32: the model's format"
    with pytest.raises(PackratError, match=f"served by {own} \\(its format\\); --backend {other}"):
        select_backend(source, other, "auto", topology, max_batch=8)
    with pytest.raises(PackratError, match="runs in fp32, not bf16"):
        select_backend(source, own, "bf16", topology, max_batch=8)
