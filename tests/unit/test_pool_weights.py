"""Weight sharing in-process: save the shared tensors, map them back, same outputs."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch

from packrat.errors import ModelError
from packrat.models.base import ModelIdentity
from packrat.pool.weights import map_shared_weights, save_shared_tensors, weights_file

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "fixtures"))
import pool_handlers  # noqa: E402


def test_weights_file_is_named_by_content_hash(tmp_path: Path) -> None:
    assert weights_file(ModelIdentity("m", "abc123"), tmp_path) == tmp_path / "abc123.pt"


def test_mapped_weights_give_the_same_outputs(tmp_path: Path) -> None:
    source = pool_handlers.LinearSource(64, 32, seed=3)
    path = tmp_path / "w.pt"
    exported = save_shared_tensors(source.load(), path)
    assert exported.tensor_count == 2
    assert exported.total_bytes == (64 * 32 + 32) * 4
    assert [p.name for p in tmp_path.iterdir()] == ["w.pt"]  # no temp file left

    handler = source.load()
    requests = pool_handlers.make_linear_requests(5, 64)
    before = handler.handle(requests)
    shared = map_shared_weights(handler, str(path))
    after = handler.handle(requests)

    assert shared == exported.total_bytes
    assert all(torch.equal(a, b) for a, b in zip(before, after, strict=True))
    mapped = torch.load(path, mmap=True, weights_only=True)
    weight = handler.model.weight
    assert weight.requires_grad  # still a parameter, now backed by the file
    assert weight.untyped_storage().nbytes() == mapped["weight"].untyped_storage().nbytes()


def test_tensors_of_another_shape_keep_their_private_copy(tmp_path: Path) -> None:
    path = tmp_path / "w.pt"
    save_shared_tensors(pool_handlers.LinearSource(64, 32).load(), path)
    handler = pool_handlers.LinearSource(64, 16).load()
    weight_ptr = handler.model.weight.data_ptr()
    assert map_shared_weights(handler, str(path)) == 0
    assert handler.model.weight.data_ptr() == weight_ptr


def test_inference_tensors_can_be_swapped(tmp_path: Path) -> None:
    class InferenceHandler(pool_handlers.LinearHandler):
        def shared_tensors(self) -> dict[str, object]:
            return {"table": self.table}

    handler = InferenceHandler(None, 4, 0)
    with torch.inference_mode():
        handler.table = torch.zeros(8)
    path = tmp_path / "w.pt"
    torch.save({"table": torch.arange(8.0)}, path)
    assert map_shared_weights(handler, str(path)) == 32
    assert torch.equal(handler.table, torch.arange(8.0))


def test_models_without_shared_tensors_skip_the_file(tmp_path: Path) -> None:
    handler = pool_handlers.ScriptedHandler(0.0)
    assert map_shared_weights(handler, str(tmp_path / "missing.pt")) == 0
    exported = save_shared_tensors(handler, tmp_path / "empty.pt")
    assert (exported.tensor_count, exported.total_bytes) == (0, 0)


def test_a_file_that_is_not_a_dict_is_a_model_error(tmp_path: Path) -> None:
    path = tmp_path / "w.pt"
    torch.save([torch.zeros(2)], path)
    with pytest.raises(ModelError, match="dict of tensors"):
        map_shared_weights(pool_handlers.LinearSource().load(), str(path))


def test_a_corrupt_file_is_a_model_error(tmp_path: Path) -> None:
    path = tmp_path / "w.pt"
    path.write_bytes(b"truncated")
    with pytest.raises(ModelError, match="delete it"):
        map_shared_weights(pool_handlers.LinearSource().load(), str(path))
