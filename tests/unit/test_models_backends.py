"""Backends and conversion keys without any runtime: names, precisions, keys, missing packages."""

from __future__ import annotations

import pickle
import re
import sys
from pathlib import Path

import pytest

from packrat.errors import ModelError
from packrat.models import (
    Backend,
    ConvertedSource,
    InputSpec,
    ModelIdentity,
    OpenVinoFileSource,
    Precision,
    ZooSource,
    convert_source,
)
from packrat.models.backends import RUNTIME_PACKAGES, check_precision, import_runtime
from packrat.models.convert import conversion_dir, conversion_key
from packrat.models.inputs import declared_spec

IDENTITY = ModelIdentity("tiny-resnet", "ab" * 32)


def test_precisions_per_backend() -> None:
    check_precision(Backend.OPENVINO, Precision.BF16)
    for backend in Backend:
        check_precision(backend, Precision.FP32)
    with pytest.raises(ModelError, match="onnxruntime backend runs in fp32, not bf16"):
        check_precision(Backend.ONNXRUNTIME, Precision.BF16)


@pytest.mark.parametrize("backend", [Backend.ONNXRUNTIME, Backend.OPENVINO])
def test_a_missing_runtime_says_what_to_install(
    backend: Backend, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, backend.package, None)  # import now raises ImportError
    needs = rf"needs the '{backend.package}' package.*{re.escape(RUNTIME_PACKAGES)}"
    with pytest.raises(ModelError, match=needs):
        import_runtime(backend)
    # Conversion fails at once, before it loads or exports anything.
    with pytest.raises(ModelError, match="pip install"):
        convert_source(ZooSource("tiny-resnet"), backend, root=Path("/nonexistent"))


def test_torch_needs_no_conversion() -> None:
    with pytest.raises(ModelError, match="nothing to convert"):
        convert_source(ZooSource("tiny-resnet"), Backend.TORCH)


def test_each_backend_precision_and_model_gets_its_own_directory(tmp_path: Path) -> None:
    dirs = {
        conversion_dir(IDENTITY, Backend.ONNXRUNTIME, Precision.FP32, tmp_path),
        conversion_dir(IDENTITY, Backend.OPENVINO, Precision.FP32, tmp_path),
        conversion_dir(IDENTITY, Backend.OPENVINO, Precision.BF16, tmp_path),
        conversion_dir(ModelIdentity("tiny-resnet", "cd" * 32), Backend.OPENVINO, Precision.FP32),
    }
    assert len(dirs) == 4
    again = conversion_dir(IDENTITY, Backend.OPENVINO, Precision.BF16, tmp_path)
    assert again in dirs and again.parent == tmp_path
    assert again.name.startswith("tiny-resnet-openvino-bf16-")
    key = conversion_key(IDENTITY, Backend.OPENVINO, Precision.BF16)
    assert again.name.endswith(key[:16]) and key != IDENTITY.content_hash


def test_conversion_directory_names_are_safe(tmp_path: Path) -> None:
    odd = ModelIdentity("../my model.pt", "ef" * 32)
    path = conversion_dir(odd, Backend.ONNXRUNTIME, Precision.FP32, tmp_path)
    assert path.parent == tmp_path and "/" not in path.name and " " not in path.name


def test_converted_source_is_picklable_and_keeps_its_identity(tmp_path: Path) -> None:
    source = ConvertedSource(
        "tiny-resnet",
        tmp_path / "model.onnx",
        Backend.ONNXRUNTIME,
        Precision.FP32,
        InputSpec((3, 32, 32)),
        "12" * 32,
    )
    copy = pickle.loads(pickle.dumps(source))
    assert copy.identity() == ModelIdentity("tiny-resnet", "12" * 32)
    assert (copy.path, copy.backend) == (source.path, source.backend)
    assert (copy.precision, copy.input_spec) == (source.precision, source.input_spec)
    with pytest.raises(ModelError, match="bf16"):
        ConvertedSource("m", tmp_path, Backend.ONNXRUNTIME, Precision.BF16, InputSpec((1,)), "0")


def test_openvino_identity_covers_the_weights_file(tmp_path: Path) -> None:
    (tmp_path / "m.xml").write_text("<net/>")
    (tmp_path / "m.bin").write_bytes(b"\x00" * 8)
    source = OpenVinoFileSource(tmp_path / "m.xml")
    before = source.identity()
    (tmp_path / "m.bin").write_bytes(b"\x01" * 8)
    assert source.identity() != before
    assert source.identity().name == "m.xml"
    (tmp_path / "m.bin").unlink()
    with pytest.raises(ModelError, match="OpenVINO weights file"):
        source.identity()


@pytest.mark.parametrize(
    ("dims", "dtype", "expected"),
    [
        (["batch", 3, 32, 32], "float32", InputSpec((3, 32, 32))),
        ([1, 16], "int64", InputSpec((16,), "int64", low=0)),
        (["batch", "sequence"], "int64", None),
        ([None, 3, -1], "float32", None),
        (["batch", 4], "tensor(string)", None),
        ([], "float32", None),
    ],
)
def test_declared_spec(dims: list[object], dtype: str, expected: InputSpec | None) -> None:
    assert declared_spec(dims, dtype) == expected
