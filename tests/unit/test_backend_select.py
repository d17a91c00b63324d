"""Which candidates `--backend` and `--precision` allow, and the cells they are timed on."""

from __future__ import annotations

import pytest

from packrat.errors import PackratError
from packrat.profiler.backend_choice import Candidate
from packrat.profiler.backend_select import candidates, probe_cells

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
