"""Unreadable model files and stored metadata give one-line ModelErrors."""

from __future__ import annotations

from pathlib import Path

import pytest

from packrat.errors import ModelError
from packrat.models import ExportedSource, InputSpec, ModelIdentity, TorchScriptSource
from packrat.models.metadata import ExportMetadata


@pytest.mark.parametrize("kind", [TorchScriptSource, ExportedSource])
@pytest.mark.parametrize("content", [b"", b"garbage" * 50, b"PK\x03\x04 truncated zip"])
def test_corrupt_files_raise_one_line_model_error(
    tmp_path: Path, kind: type[TorchScriptSource | ExportedSource], content: bytes
) -> None:
    suffix = ".pt2" if kind is ExportedSource else ".pt"
    path = tmp_path / f"model{suffix}"
    path.write_bytes(content)
    with pytest.raises(ModelError, match="cannot load") as info:
        kind(path).load()
    assert "\n" not in str(info.value)
    assert "Traceback" not in str(info.value)


def test_state_dict_is_not_torchscript(tmp_path: Path) -> None:
    import torch

    path = tmp_path / "weights.pt"
    torch.save(torch.nn.Linear(2, 2).state_dict(), path)
    with pytest.raises(ModelError, match=r"is it from torch\.jit\.save\?"):
        TorchScriptSource(path).load()


@pytest.mark.parametrize("kind", [TorchScriptSource, ExportedSource])
def test_missing_file_raises(
    tmp_path: Path, kind: type[TorchScriptSource | ExportedSource]
) -> None:
    with pytest.raises(ModelError, match="does not exist"):
        kind(tmp_path / "nope.pt").load()


def test_metadata_round_trip() -> None:
    metadata = ExportMetadata(InputSpec((3,), "int64", high=5), ModelIdentity("m", "ab" * 32))
    assert ExportMetadata.from_text(metadata.to_text(), "here") == metadata
    assert ExportMetadata.from_text(metadata.to_text().encode(), "here") == metadata


def test_empty_metadata_means_none() -> None:
    assert ExportMetadata.from_text("", "here") is None
    assert ExportMetadata.from_text(b"", "here") is None


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("{not json", "corrupt packrat.json"),
        ('{"format": 1}', "corrupt packrat.json"),
        (
            '{"format": 2, "input_spec": {"shape": [1]}, "source": {"name": "m", '
            '"content_hash": "x"}}',
            "format 2",
        ),
        (
            '{"format": 1, "input_spec": {"shape": [0]}, "source": {"name": "m", '
            '"content_hash": "x"}}',
            "positive",
        ),
    ],
)
def test_bad_metadata_raises(text: str, message: str) -> None:
    with pytest.raises(ModelError, match=message):
        ExportMetadata.from_text(text, "'m.pt'")
