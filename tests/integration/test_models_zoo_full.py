"""The full-size zoo models the paper measures: they build offline and produce the right shapes.

Loads resnet50, bert-base and gpt2 for real (graph mode, traced), about 10 s on 2 cores.
"""

from __future__ import annotations

import pytest
import torch

from packrat.models import ZooSource
from packrat.models.tensor_handler import TensorHandler

pytestmark = pytest.mark.slow


@pytest.mark.parametrize(
    ("name", "output_shape", "params_m"),
    [
        ("resnet50", (1000,), 25.6),
        ("bert-base", (128, 768), 109.5),
        ("gpt2", (128, 768), 124.4),
        ("mobilenet-v2", (1000,), 3.5),
    ],
)
def test_full_zoo_models_build_and_run(
    name: str, output_shape: tuple[int, ...], params_m: float
) -> None:
    handler = ZooSource(name).load()
    assert isinstance(handler, TensorHandler)
    assert isinstance(handler.module, torch.jit.ScriptModule)
    params = sum(p.numel() for p in handler.module.parameters())
    assert params / 1e6 == pytest.approx(params_m, abs=0.1)
    outputs = handler.handle(handler.example_requests(1))
    assert len(outputs) == 1
    assert tuple(outputs[0].shape) == output_shape
    assert bool(torch.isfinite(outputs[0]).all())
