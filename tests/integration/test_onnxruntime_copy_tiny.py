"""ONNX Runtime sessions built from one optimized copy whose weights they map: written once,
found again, mapped, same answers; rewritten models, unwritable caches, broken copies and
concurrent first loads handled."""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from packrat.models import Backend, ConvertedSource, ZooSource, convert_source
from packrat.models import onnxruntime_session as sessions
from packrat.models.onnxruntime_handler import OnnxRuntimeHandler

pytest.importorskip("onnxruntime")
pytestmark = pytest.mark.slow

MODELS = ["tiny-resnet", "tiny-bert"]  # convolutions (NCHWc layout) and matmuls (pre-packed)


@pytest.fixture(scope="module", params=MODELS)
def converted(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> ConvertedSource:
    """The zoo model converted to ONNX, a private file per test module run."""
    root = tmp_path_factory.mktemp("converted")
    return convert_source(ZooSource(request.param), Backend.ONNXRUNTIME, root=root)


@pytest.fixture
def model(converted: ConvertedSource) -> Path:
    return converted.path


@pytest.fixture
def run(converted: ConvertedSource) -> Callable[[Any], np.ndarray]:
    """Run a session on a fixed example batch of 3; its first output."""
    batch = converted.input_spec.example_batch(3).numpy()

    def first_output(session: Any) -> np.ndarray:
        (output, *_) = session.run(None, {session.get_inputs()[0].name: batch})
        return output

    return first_output


def _mapped_files() -> set[str]:
    return {line.split(maxsplit=5)[-1].strip() for line in open("/proc/self/maps") if "/" in line}


def test_the_first_session_writes_the_copy_and_the_next_maps_it(
    model: Path, run: Callable[[Any], np.ndarray], tmp_path: Path
) -> None:
    copies = tmp_path / "copies"
    first = sessions.build_session(model, 1, copies=copies)
    (folder,) = [p for p in copies.iterdir() if p.is_dir()]
    data = folder / sessions.DATA_FILE
    assert {p.name for p in folder.iterdir()} == {
        sessions.MODEL_FILE,
        sessions.DATA_FILE,
        sessions.INFO_FILE,
    }
    written = data.stat().st_mtime_ns
    second = sessions.build_session(model, 2, copies=copies)
    assert data.stat().st_mtime_ns == written  # found, not written again
    assert [p for p in copies.iterdir() if p.is_dir()] == [folder]
    assert str(data) in _mapped_files()  # the weights are the file's pages, not a heap copy
    assert second.get_session_options().intra_op_num_threads == 2
    source = sessions.open_session(model, 1, optimized=False)
    for session in (first, second):
        np.testing.assert_allclose(run(session), run(source), rtol=1e-5, atol=1e-5)


def test_the_handler_builds_and_rethreads_from_the_copy(
    converted: ConvertedSource, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PACKRAT_CACHE_DIR", str(tmp_path))
    handler = OnnxRuntimeHandler(converted.path, 1, converted.input_spec)
    handler.initialize()
    requests = handler.example_requests(2)
    before = handler.handle(requests)
    handler.set_threads(2)
    (folder,) = [p for p in (tmp_path / "onnxruntime").iterdir() if p.is_dir()]
    assert str(folder / sessions.DATA_FILE) in _mapped_files()
    after = handler.handle(requests)
    for a, b in zip(before, after, strict=True):
        np.testing.assert_allclose(a.numpy(), b.numpy(), rtol=1e-5, atol=1e-5)


def test_a_rewritten_model_gets_a_copy_of_its_own(model: Path, tmp_path: Path) -> None:
    copies = tmp_path / "copies"
    sessions.build_session(model, 1, copies=copies)
    stat = model.stat()
    os.utime(model, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000_000))
    try:
        sessions.build_session(model, 1, copies=copies)
    finally:
        os.utime(model, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    assert len([p for p in copies.iterdir() if p.is_dir()]) == 2


def test_without_a_writable_cache_the_session_loads_the_model_itself(
    model: Path, run: Callable[[Any], np.ndarray], tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    not_a_folder = tmp_path / "copies"
    not_a_folder.write_text("a file where the cache folder would be")
    with caplog.at_level(logging.WARNING, logger=sessions.__name__):
        session = sessions.build_session(model, 1, copies=not_a_folder)
    assert "cannot keep ONNX Runtime's optimized copy" in caplog.text
    source = sessions.open_session(model, 1, optimized=False)
    np.testing.assert_array_equal(run(session), run(source))


def test_a_broken_copy_is_reported_and_the_model_loaded_itself(
    model: Path, run: Callable[[Any], np.ndarray], tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    copies = tmp_path / "copies"
    copy = sessions.mapped_copy(model, 1, copies)
    assert copy is not None
    copy.write_bytes(b"not an ONNX graph")
    with caplog.at_level(logging.WARNING, logger=sessions.__name__):
        session = sessions.build_session(model, 1, copies=copies)
    assert "cannot load its optimized copy" in caplog.text
    assert run(session).shape[0] == 3


@pytest.fixture
def writes(monkeypatch: pytest.MonkeyPatch) -> list[Path]:
    """The folders copies are written to, one per write, as they are written."""
    written: list[Path] = []
    real_write = sessions._write

    def counted(source: Path, folder: Path, threads: int) -> None:
        written.append(folder)
        real_write(source, folder, threads)

    monkeypatch.setattr(sessions, "_write", counted)
    return written


def test_concurrent_first_loads_write_one_copy(
    model: Path, tmp_path: Path, writes: list[Path]
) -> None:
    copies = tmp_path / "copies"
    found: list[Path | None] = []
    start = threading.Barrier(4)

    def load() -> None:
        start.wait()
        found.append(sessions.mapped_copy(model, 1, copies))

    threads = [threading.Thread(target=load) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(writes) == 1
    assert len(set(found)) == 1 and found[0] is not None and found[0].exists()
    assert not [p for p in copies.iterdir() if p.name.startswith(".")]  # no staging left


def test_converting_a_model_leaves_no_copy_of_its_staging_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The conversion's own check loads the file before it moves into place: a copy made
    # from it would be keyed by a path that is gone.
    monkeypatch.setenv("PACKRAT_CACHE_DIR", str(tmp_path))
    converted = convert_source(ZooSource("tiny-resnet"), Backend.ONNXRUNTIME)
    assert not (tmp_path / "onnxruntime").exists()
    handler = OnnxRuntimeHandler(converted.path, 1, converted.input_spec, shared=False)
    handler.set_threads(2)
    assert handler.session.get_session_options().intra_op_num_threads == 2
    assert not (tmp_path / "onnxruntime").exists()
    OnnxRuntimeHandler(converted.path, 1, converted.input_spec, name="tiny-resnet")
    (folder,) = [p for p in (tmp_path / "onnxruntime").iterdir() if p.is_dir()]
    assert folder.name.startswith("tiny-resnet-")  # named by the model served


def test_a_model_without_weights_to_map_is_not_copied_nor_tried_again(
    tmp_path: Path, writes: list[Path], caplog: pytest.LogCaptureFixture
) -> None:
    onnx = pytest.importorskip("onnx")
    from onnx import TensorProto, helper

    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 4])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, ["n", 4])
    graph = helper.make_graph([helper.make_node("Relu", ["x"], ["y"])], "relu", [x], [y])
    model = tmp_path / "relu.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), model)
    copies = tmp_path / "copies"
    with caplog.at_level(logging.WARNING, logger=sessions.__name__):
        assert sessions.mapped_copy(model, 1, copies) is None
    assert "no weights to map" in caplog.text
    assert sessions.mapped_copy(model, 1, copies) is None  # remembered: not written again
    assert len(writes) == 1
    (failed,) = copies.glob(f"*{sessions.FAILED_SUFFIX}")
    assert "no weights to map" in failed.read_text()
    session = sessions.build_session(model, 1, copies=copies)  # the model itself
    assert session.run(None, {"x": np.array([[-1.0, 2.0, -3.0, 4.0]], np.float32)})[0].tolist() == [
        [0.0, 2.0, 0.0, 4.0]
    ]
