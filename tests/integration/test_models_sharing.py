"""shared_tensors() returns the live weights: swapping their storage changes what runs.

The pool replaces each shared tensor's storage with a memory-mapped copy (`tensor.set_`); this
only shares memory if the module computes with exactly those tensor objects. Checked for an
eager module, a TorchScript trace, a torch.export program and a graph-mode zoo model.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from packrat.models import ExportedSource, Handler, InputSpec, TorchScriptSource, ZooSource
from packrat.models.tensor_handler import TensorHandler
from packrat.models.tracing import quiet_torchscript, trace_module

pytestmark = pytest.mark.slow

SPEC = InputSpec((8,))


def _model() -> torch.nn.Module:
    torch.manual_seed(0)
    norm = torch.nn.BatchNorm1d(16)
    # Non-trivial running statistics, so that swapping buffers matters too.
    norm.running_mean = torch.rand(16) * 2 - 1
    norm.running_var = torch.rand(16) + 0.5
    model = torch.nn.Sequential(
        torch.nn.Linear(8, 16), norm, torch.nn.ReLU(), torch.nn.Linear(16, 4)
    )
    return model.eval()


def _save_trace(module: torch.nn.Module, example: torch.Tensor, path: Path) -> None:
    with quiet_torchscript():
        torch.jit.save(trace_module(module, example), str(path))


def _perturbed(tensors: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    # New storage with new values: floats scaled, integers copied.
    return {
        name: t.detach().clone() * 0.5 if t.is_floating_point() else t.detach().clone()
        for name, t in tensors.items()
    }


def _swap(handler: Handler, replacements: dict[str, torch.Tensor]) -> None:
    tensors = handler.shared_tensors()
    assert set(tensors) == set(replacements)
    with torch.no_grad():
        for name, tensor in tensors.items():
            tensor.set_(replacements[name])


def _run(handler: Handler, batch_size: int = 3) -> torch.Tensor:
    return torch.stack(handler.handle(handler.example_requests(batch_size)))


def _check_swap_follows_reference(handler: Handler, reference: Handler) -> None:
    before = _run(handler)
    replacements = _perturbed(handler.shared_tensors())
    _swap(handler, replacements)
    _swap(reference, {name: t.clone() for name, t in replacements.items()})
    after = _run(handler)
    assert not torch.allclose(before, after)
    torch.testing.assert_close(after, _run(reference))
    # The module now reads the replacement storage itself, not a copy of it.
    for name, tensor in handler.shared_tensors().items():
        assert tensor.data_ptr() == replacements[name].data_ptr()


def test_eager_module_uses_swapped_tensors() -> None:
    handler = TensorHandler(_model(), SPEC)
    _check_swap_follows_reference(handler, TensorHandler(_model(), SPEC))


def test_torchscript_module_uses_swapped_tensors(tmp_path: Path) -> None:
    path = tmp_path / "m.pt"
    _save_trace(_model(), torch.randn(2, 8), path)
    handler = TorchScriptSource(path, SPEC).load()
    assert isinstance(handler, TensorHandler)
    assert isinstance(handler.module, torch.jit.ScriptModule)
    _check_swap_follows_reference(handler, TensorHandler(_model(), SPEC))


def test_exported_module_uses_swapped_tensors(tmp_path: Path) -> None:
    path = tmp_path / "m.pt2"
    batch = torch.export.Dim("batch", min=1)
    program = torch.export.export(_model(), (torch.randn(2, 8),), dynamic_shapes=({0: batch},))
    torch.export.save(program, path)
    handler = ExportedSource(path, SPEC).load()
    _check_swap_follows_reference(handler, TensorHandler(_model(), SPEC))


@pytest.mark.parametrize("name", ["tiny-resnet", "tiny-bert"])
def test_traced_zoo_model_uses_swapped_tensors(name: str) -> None:
    source = ZooSource(name)
    _check_swap_follows_reference(source.load(), source.eager().load())
