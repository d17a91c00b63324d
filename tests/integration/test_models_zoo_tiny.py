"""Tiny zoo models end to end: load, determinism, graph vs eager, export and reload."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from packrat.errors import ModelError
from packrat.models import (
    ExportedSource,
    HandlerFileSource,
    InputSpec,
    TorchScriptSource,
    ZooSource,
    export_program,
    export_torchscript,
    resolve_model,
)
from packrat.models.base import ModelIdentity, ModelSource
from packrat.models.metadata import METADATA_FILE, ExportMetadata
from packrat.models.tensor_handler import TensorHandler
from packrat.models.tracing import quiet_torchscript, trace_module

pytestmark = pytest.mark.slow

TINY = ["tiny-resnet", "tiny-bert", "tiny-gpt2"]
FIXTURE = Path(__file__).parents[1] / "fixtures" / "linear_handler.py"


def _outputs(handler: object, batch_size: int) -> torch.Tensor:
    assert isinstance(handler, TensorHandler)
    return torch.stack(handler.handle(handler.example_requests(batch_size)))


@pytest.mark.parametrize("name", TINY)
def test_tiny_zoo_is_deterministic_and_graph_matches_eager(name: str) -> None:
    graph = ZooSource(name).load()
    assert isinstance(graph, TensorHandler)
    assert isinstance(graph.module, torch.jit.ScriptModule)
    again = ZooSource(name).load()
    eager = ZooSource(name, graph_mode=False).load()
    for batch_size in (1, 5):
        expected = _outputs(eager, batch_size)
        assert torch.equal(_outputs(graph, batch_size), _outputs(again, batch_size))
        torch.testing.assert_close(_outputs(graph, batch_size), expected)
    assert not torch.allclose(
        _outputs(ZooSource(name, seed=1, graph_mode=False).load(), 2), _outputs(eager, 2)
    )


@pytest.mark.parametrize("name", TINY)
def test_export_round_trips_at_batch_1_and_5(name: str, tmp_path: Path) -> None:
    source = ZooSource(name)
    original = source.eager().load()
    ts_path = export_torchscript(source, tmp_path / f"{name}.pt")
    pt2_path = export_program(source, tmp_path / f"{name}.pt2")
    assert sorted(p.name for p in tmp_path.iterdir()) == [f"{name}.pt", f"{name}.pt2"]
    for path, kind in ((ts_path, TorchScriptSource), (pt2_path, ExportedSource)):
        resolved = resolve_model(str(path))
        assert isinstance(resolved, kind)
        loaded = resolved.load()
        assert isinstance(loaded, TensorHandler)
        assert loaded.input_spec == source.input_spec  # read back from packrat.json
        for batch_size in (1, 5):
            torch.testing.assert_close(_outputs(loaded, batch_size), _outputs(original, batch_size))


def test_exported_metadata_records_the_source_identity(tmp_path: Path) -> None:
    source = ZooSource("tiny-resnet")
    path = export_torchscript(source, tmp_path / "m.ts", batch_size=1)
    extra = {METADATA_FILE: ""}
    with quiet_torchscript():
        torch.jit.load(str(path), _extra_files=extra)  # type: ignore[no-untyped-call]
    metadata = ExportMetadata.from_text(extra[METADATA_FILE], "m.ts")
    assert metadata == ExportMetadata(source.input_spec, source.identity())


def _save_trace(module: torch.nn.Module, example: torch.Tensor, path: Path) -> None:
    with quiet_torchscript():
        torch.jit.save(trace_module(module, example), str(path))


def _plain_model() -> torch.nn.Module:
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Linear(8, 8), torch.nn.ReLU(), torch.nn.Linear(8, 3)).eval()


def test_torchscript_without_spec_needs_one(tmp_path: Path) -> None:
    path = tmp_path / "plain.pt"
    _save_trace(_plain_model(), torch.randn(2, 8), path)
    handler = TorchScriptSource(path).load()
    with pytest.raises(ModelError, match="pass --input-shape and --input-dtype"):
        handler.example_requests(2)
    assert len(handler.handle([torch.randn(8)])) == 1  # serving needs no spec
    spec = InputSpec((8,))
    with_spec = TorchScriptSource(path, spec).load()
    assert [o.shape for o in with_spec.handle(with_spec.example_requests(3))] == [(3,)] * 3


def test_exported_program_spec_comes_from_example_inputs(tmp_path: Path) -> None:
    path = tmp_path / "plain.pt2"
    batch = torch.export.Dim("batch", min=1)
    program = torch.export.export(
        _plain_model(), (torch.randn(2, 8),), dynamic_shapes=({0: batch},)
    )
    torch.export.save(program, path)
    handler = ExportedSource(path).load()
    assert isinstance(handler, TensorHandler)
    assert handler.input_spec == InputSpec((8,), "float32")
    assert len(handler.handle(handler.example_requests(5))) == 5


def test_exported_program_integer_spec_range_from_examples(tmp_path: Path) -> None:
    path = tmp_path / "emb.pt2"
    ids = torch.tensor([[1, 5, 3], [2, 2, 4]])
    program = torch.export.export(torch.nn.Embedding(10, 4), (ids,))
    torch.export.save(program, path)
    handler = ExportedSource(path).load()
    assert isinstance(handler, TensorHandler)
    assert handler.input_spec == InputSpec((3,), "int64", low=1, high=6)


def test_export_refusals(tmp_path: Path) -> None:
    with pytest.raises(ModelError, match="must end in"):
        export_torchscript(ZooSource("tiny-resnet"), tmp_path / "m.bin")
    with pytest.raises(ModelError, match="directory"):
        export_program(ZooSource("tiny-resnet"), tmp_path / "missing" / "m.pt2")
    with pytest.raises(ModelError, match="batch_size >= 2"):
        export_program(ZooSource("tiny-resnet"), tmp_path / "m.pt2", batch_size=1)
    with pytest.raises(ModelError, match="handler file's model"):
        export_torchscript(HandlerFileSource(FIXTURE), tmp_path / "h.pt")
    ts_path = export_torchscript(ZooSource("tiny-resnet"), tmp_path / "m.pt")
    with pytest.raises(ModelError, match="TorchScript, which torch.export cannot read"):
        export_program(TorchScriptSource(ts_path), tmp_path / "m.pt2")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.pt"]


class _BatchBaked(torch.nn.Module):
    """Reshapes with the traced batch size as a constant: wrong at any other batch size."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.reshape(int(x.shape[0]), -1).sum(dim=1, keepdim=True).expand(int(x.shape[0]), 2)


class _BatchBakedSource(ModelSource):
    name = "baked"

    def identity(self) -> ModelIdentity:
        return ModelIdentity(self.name, "0" * 64)

    def load(self) -> TensorHandler:
        return TensorHandler(_BatchBaked(), InputSpec((3,)), name=self.name)


def test_export_rejects_traces_that_bake_in_the_batch(tmp_path: Path) -> None:
    with pytest.raises(ModelError, match="fails at batch size 1"):
        export_torchscript(_BatchBakedSource(), tmp_path / "baked.pt")
    assert list(tmp_path.iterdir()) == []


def test_reexport_rejects_torchscript_that_bakes_in_the_batch(tmp_path: Path) -> None:
    path = tmp_path / "baked.pt"
    _save_trace(_BatchBaked(), torch.randn(2, 3), path)
    with pytest.raises(ModelError, match="fails at batch size 1"):
        export_torchscript(TorchScriptSource(path, InputSpec((3,))), tmp_path / "copy.pt")
    assert list(tmp_path.iterdir()) == [path]
