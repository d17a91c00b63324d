"""resolve_model and the package surface: no torch needed, none imported."""

from __future__ import annotations

import subprocess
import sys
import types
from pathlib import Path

import pytest

import packrat.models
from packrat.errors import ModelError
from packrat.models import (
    ExportedSource,
    HandlerFileSource,
    InputSpec,
    OnnxFileSource,
    OpenVinoFileSource,
    TorchScriptSource,
    ZooSource,
    list_zoo,
    resolve_model,
)


def test_zoo_name_resolves_to_zoo_source() -> None:
    source = resolve_model("resnet50")
    assert isinstance(source, ZooSource)
    assert source.name == "resnet50"
    assert source.graph_mode


def test_zoo_name_wins_over_file_of_same_name(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "gpt2").write_text("not a model")
    monkeypatch.chdir(tmp_path)
    assert isinstance(resolve_model("gpt2"), ZooSource)


def test_zoo_model_refuses_input_spec() -> None:
    with pytest.raises(ModelError, match="fixed input"):
        resolve_model("resnet50", InputSpec((3, 64, 64)))


@pytest.mark.parametrize(
    ("name", "kind"),
    [
        ("m.pt", TorchScriptSource),
        ("m.ts", TorchScriptSource),
        ("m.torchscript", TorchScriptSource),
        ("M.PT", TorchScriptSource),
        ("m.pt2", ExportedSource),
        ("h.py", HandlerFileSource),
        ("m.onnx", OnnxFileSource),
        ("m.xml", OpenVinoFileSource),
    ],
)
def test_files_resolve_by_suffix(tmp_path: Path, name: str, kind: type) -> None:
    path = tmp_path / name
    path.write_bytes(b"x")
    source = resolve_model(str(path))
    assert isinstance(source, kind)
    assert source.name == name


def test_input_spec_is_passed_to_file_sources(tmp_path: Path) -> None:
    spec = InputSpec((4,))
    for name in ("m.pt", "m.pt2", "m.onnx", "m.xml"):
        (tmp_path / name).write_bytes(b"x")
        source = resolve_model(str(tmp_path / name), spec)
        assert isinstance(
            source, TorchScriptSource | ExportedSource | OnnxFileSource | OpenVinoFileSource
        )
        assert source.input_spec == spec


def test_handler_file_refuses_input_spec(tmp_path: Path) -> None:
    (tmp_path / "h.py").write_text("")
    with pytest.raises(ModelError, match="own inputs"):
        resolve_model(str(tmp_path / "h.py"), InputSpec((4,)))


def test_missing_path_names_the_zoo(tmp_path: Path) -> None:
    with pytest.raises(ModelError, match="neither a zoo model .*resnet50.* nor an existing file"):
        resolve_model(str(tmp_path / "nope.pt"))


def test_unknown_suffix_is_refused(tmp_path: Path) -> None:
    (tmp_path / "m.tflite").write_bytes(b"x")
    with pytest.raises(ModelError, match="unknown format: .*.onnx, .xml"):
        resolve_model(str(tmp_path / "m.tflite"))


@pytest.mark.parametrize(
    "url",
    ["http://example.com/m.pt", "https://example.com/m.pt2", "s3://bucket/m.pt", "hf://org/model"],
)
def test_urls_are_refused(url: str) -> None:
    with pytest.raises(ModelError, match="URL"):
        resolve_model(url)


def test_list_zoo_has_paper_models_and_tiny_ones() -> None:
    zoo = dict(list_zoo())
    assert list(zoo)[:3] == ["resnet50", "bert-base", "gpt2"]
    assert {"tiny-resnet", "tiny-bert", "tiny-gpt2"} <= set(zoo)
    assert all(desc and "\n" not in desc for desc in zoo.values())


def test_unknown_zoo_name_lists_known() -> None:
    with pytest.raises(ModelError, match="known: resnet50"):
        ZooSource("resnet51")


def test_all_is_complete_and_importable() -> None:
    defined_here = {
        name
        for name, value in vars(packrat.models).items()
        if not name.startswith("_")
        and not isinstance(value, types.ModuleType)
        and getattr(value, "__module__", "").startswith("packrat.models")
    }
    assert defined_here <= set(packrat.models.__all__)
    for name in packrat.models.__all__:
        assert getattr(packrat.models, name) is not None


def test_importing_and_resolving_does_not_import_torch(tmp_path: Path) -> None:
    for name in ("m.pt", "m.onnx", "m.xml", "m.bin"):
        (tmp_path / name).write_bytes(b"x")
    code = (
        "import sys\n"
        "import packrat.models as m\n"
        "m.resolve_model('resnet50').identity()\n"
        f"m.resolve_model({str(tmp_path / 'm.pt')!r}).identity()\n"
        f"m.resolve_model({str(tmp_path / 'm.onnx')!r}).identity()\n"
        f"m.resolve_model({str(tmp_path / 'm.xml')!r}).identity()\n"
        "m.list_zoo()\n"
        "runtimes = ('torch', 'transformers', 'numpy', 'onnxruntime', 'openvino', 'onnx')\n"
        "bad = [n for n in runtimes if n in sys.modules]\n"
        "assert not bad, bad\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_a_directory_stands_for_its_one_model_file(tmp_path: Path) -> None:
    (tmp_path / "model.onnx").write_bytes(b"not read here")
    (tmp_path / "README.txt").write_text("ignored")
    source = resolve_model(str(tmp_path))
    assert isinstance(source, OnnxFileSource) and source.path == tmp_path / "model.onnx"


def test_a_directory_with_no_model_or_several_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ModelError, match="holds no model file"):
        resolve_model(str(tmp_path))
    (tmp_path / "a.onnx").write_bytes(b"")
    (tmp_path / "b.pt").write_bytes(b"")
    with pytest.raises(ModelError, match=r"several model files \(a.onnx, b.pt\)"):
        resolve_model(str(tmp_path))
