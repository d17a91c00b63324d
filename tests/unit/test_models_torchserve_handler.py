"""TorchServe handlers run unchanged behind Packrat's handler interface, with TorchServe's own
loader and context: inputs and headers in, answers out as TorchServe writes them."""

from __future__ import annotations

import importlib.util
import json
import logging
import sys
import zipfile
from pathlib import Path

import pytest
import torch

from packrat.errors import ModelError
from packrat.models.resolve import resolve_model
from packrat.models.torchserve_archive import read_manifest
from packrat.models.torchserve_request import TorchServeReply, TorchServeRequest, build_request
from packrat.models.torchserve_source import ArchiveSource, find_sample

pytest.importorskip("ts", reason="TorchServe's handler package (packrat[torchserve])")

# A function entry point, as TorchServe allows (`handler: module.py:handle`), exercising what
# handlers do with the context: headers, statuses, content types and metrics.
HANDLER = """
import torch
from ts.utils.util import PredictionException

def handle(data, context):
    if data is None:  # TorchServe's initialize call
        context.metrics.add_counter("Loaded", 1)
        return None
    context.metrics.add_time("Seen", 1.0, None, "ms")
    context.metrics.get_metric("Custom", "counter").add_or_update(1, [])
    answers = []
    for i, row in enumerate(data):
        value = row.get("data") or row.get("body")
        kind = bytes(row.get("kind", b"json")).decode()
        if value == "fail":
            raise PredictionException("told to fail", 418)
        if kind == "text":
            answers.append("text:" + value)
        elif kind == "bytes":
            context.set_response_content_type(i, "application/x-raw")
            answers.append(bytes(value))
        elif kind == "tensor":
            answers.append(torch.arange(3))
        elif kind == "status":
            context.set_response_status(201, "Made", idx=i)
            context.set_response_header(i, "x-made", "yes")
            answers.append({"made": True})
        elif kind == "object":
            answers.append(object())
        elif kind == "notalist":
            return "oops"
        elif kind == "short":
            return answers
        elif kind == "memory":
            raise MemoryError()
        elif kind == "cuda":
            raise RuntimeError("CUDA error: out of memory")
        elif kind == "raise":
            raise KeyError("the handler's own message")
        else:
            answers.append({"size": len(value), "trace": context.get_request_header(i, "x-trace")})
    return answers
"""


def _archive(folder: Path, module: str, *, sample: bool = False) -> Path:
    manifest = {"model": {"modelName": "fn", "handler": f"{module}.py:handle",
                          "modelVersion": "1.0"}, "runtime": "python"}  # fmt: skip
    (folder / "MAR-INF").mkdir(parents=True)
    (folder / "MAR-INF" / "MANIFEST.json").write_text(json.dumps(manifest))
    (folder / f"{module}.py").write_text(HANDLER)
    if sample:
        (folder / "sample_request.txt").write_text("hello")
    return folder


@pytest.fixture
def isolated(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Loading changes the process's directory and import path, as a TorchServe worker's."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "path", list(sys.path))


def _request(value: bytes, kind: str, content_type: str = "text/plain") -> TorchServeRequest:
    return build_request(
        [("kind", kind.encode(), ""), ("body", value, content_type)], {"X-Trace": "t1"}, "r"
    )


def test_answers_are_written_as_torchserve_writes_them(tmp_path: Path, isolated: None) -> None:
    handler = ArchiveSource(_archive(tmp_path / "a", "fn_answers")).load()
    handler.initialize()
    # OpenVINO's torch.compile backend was kept out of BaseHandler's import (seconds per
    # worker), and nothing stops a handler from importing it later.
    assert sys.modules.get("openvino.torch", "not imported") is not None
    requests = [
        _request(b"abc", "json"),
        _request(b"abc", "text"),
        _request(b"\x00\x01", "bytes", "application/octet-stream"),
        _request(b"x", "status"),
        _request(b"x", "tensor"),
    ]
    replies = handler.handle(requests)
    assert all(isinstance(reply, TorchServeReply) for reply in replies)
    json_reply, text, raw, made, tensor = replies
    assert json_reply.body == json.dumps({"size": 3, "trace": "t1"}, indent=2).encode()
    assert (json_reply.status, json_reply.content_type) == (200, "application/json")
    assert (text.body, text.content_type) == (b"text:abc", None)
    assert (raw.body, raw.content_type) == (b"\x00\x01", "application/x-raw")
    assert (made.status, made.phrase, made.headers) == (201, "Made", {"x-made": "yes"})
    assert tensor.body.startswith(b"PK")  # torch.save's zip format


def _torchserve_error(status: int, message: str) -> bytes:
    """TorchServe 0.12's body for a failed batch, as its frontend sent it to curl."""
    return (
        f'{{\n  "code": {status},\n  "type": "InternalServerException",\n'
        f'  "message": "{message}"\n}}\n'
    ).encode()


@pytest.mark.parametrize(
    ("kind", "status", "message"),
    [
        ("fail", 418, "told to fail"),  # PredictionException: its own status and message
        ("memory", 507, "Out of resources"),
        ("cuda", 507, "Out of resources"),  # TorchServe's test: "CUDA" in the message
        ("raise", 503, "Prediction failed"),  # any other exception; its message stays here
        ("notalist", 503, "Invalid model predict output"),
        ("short", 503, "number of batch response mismatched"),
    ],
)
def test_a_failed_batch_is_answered_as_torchserve_answers_it(
    kind: str,
    status: int,
    message: str,
    tmp_path: Path,
    isolated: None,
    caplog: pytest.LogCaptureFixture,
) -> None:
    handler = ArchiveSource(_archive(tmp_path / "a", f"fn_fails_{kind}")).load()
    handler.initialize()
    failing = _request(b"fail", "text") if kind == "fail" else _request(b"x", kind)
    with caplog.at_level(logging.WARNING, logger="packrat.models.torchserve_handler"):
        replies = handler.handle([_request(b"ok", "text"), failing, _request(b"ok", "text")])
    # The whole batch fails together, the requests that would have succeeded too.
    expected = _torchserve_error(status, message)
    assert [(r.status, r.content_type, r.body) for r in replies] == [
        (status, "application/json", expected)
    ] * 3
    (record,) = caplog.records
    assert record.levelno == logging.WARNING and record.exc_info is not None
    assert f"{status} {message}" in record.getMessage()
    # The handler goes on serving.
    (after,) = handler.handle([_request(b"ok", "text")])
    assert (after.status, after.body) == (200, b"text:ok")


def test_profiling_a_failing_handler_fails(tmp_path: Path, isolated: None) -> None:
    handler = ArchiveSource(_archive(tmp_path / "a", "fn_profile_fails")).load()
    handler.initialize()
    with pytest.raises(ModelError, match="returned a str, not a list.*Invalid model predict"):
        handler.inference([_request(b"x", "notalist")])
    with pytest.raises(KeyError):
        handler.inference([_request(b"x", "raise")])


def test_an_unwritable_answer_is_refused_as_torchserve_refuses_it(
    tmp_path: Path, isolated: None
) -> None:
    handler = ArchiveSource(_archive(tmp_path / "a", "fn_unwritable")).load()
    handler.initialize()
    (unwritable,) = handler.handle([_request(b"x", "object")])
    assert (unwritable.status, unwritable.body) == (503, b"Unsupported model output data type.")


def test_profiling_uses_the_sample_request_or_says_how_to_give_one(
    tmp_path: Path, isolated: None
) -> None:
    bare = ArchiveSource(_archive(tmp_path / "bare", "fn_bare")).load()
    with pytest.raises(ModelError, match="--sample-request"):
        bare.example_requests(2)
    folder = _archive(tmp_path / "sampled", "fn_sampled", sample=True)
    handler = ArchiveSource(folder).load()
    handler.initialize()
    requests = handler.example_requests(3)
    assert [r.inputs for r in requests] == [{"body": "hello"}] * 3  # text/plain from .txt
    assert len(handler.handle(requests)) == 3
    given = tmp_path / "given.json"
    given.write_text('{"data": [1]}')
    explicit = ArchiveSource(folder, sample_request=given).load()
    assert explicit.example_requests(1)[0].inputs == {"body": {"data": [1]}}


def test_a_missing_handler_package_or_module_is_a_model_error(
    tmp_path: Path, isolated: None
) -> None:
    folder = _archive(tmp_path / "a", "fn_present")
    (folder / "fn_present.py").unlink()
    with pytest.raises(ModelError, match="failed to load"):
        ArchiveSource(folder).load().initialize()


def test_the_sample_is_an_extra_file_named_so_or_the_only_image(tmp_path: Path) -> None:
    folder = _archive(tmp_path / "a", "fn_sample")
    read = read_manifest(folder)
    assert find_sample(folder, read) is None
    (folder / "kitten.jpg").write_bytes(b"\xff\xd8\xff")
    assert find_sample(folder, read) == folder / "kitten.jpg"
    (folder / "dog.png").write_bytes(b"png")
    assert find_sample(folder, read) is None  # two images: which one is ambiguous
    (folder / "example.json").write_text("{}")
    assert find_sample(folder, read) == folder / "example.json"


def test_archives_resolve_by_suffix_or_layout_and_hash_their_sample(tmp_path: Path) -> None:
    folder = _archive(tmp_path / "unpacked", "fn_resolve")
    mar = tmp_path / "store" / "packed.mar"
    mar.parent.mkdir()
    with zipfile.ZipFile(mar, "w") as zipped:
        for path in folder.rglob("*"):
            if path.is_file():
                zipped.write(path, path.relative_to(folder).as_posix())
    for spec in (folder, mar, mar.parent):  # a folder holding one .mar: KServe's layout
        source = resolve_model(str(spec))
        assert isinstance(source, ArchiveSource) and source.name == "fn"
    sample = tmp_path / "s.txt"
    sample.write_text("a")
    plain = resolve_model(str(mar)).identity()
    with_sample = resolve_model(str(mar), sample_request=sample).identity()
    assert plain.content_hash != with_sample.content_hash
    with pytest.raises(ModelError, match="--sample-request is for TorchServe archives"):
        resolve_model("tiny-resnet", sample_request=sample)


@pytest.mark.skip_allowed  # by design: with torchvision there is no missing import to report
@pytest.mark.skipif(
    importlib.util.find_spec("torchvision") is not None, reason="torchvision imports here"
)
def test_a_vision_builtin_without_torchvision_says_what_it_needs(
    tmp_path: Path, isolated: None
) -> None:
    folder = _archive(tmp_path / "a", "fn_unused")
    manifest = json.loads((folder / "MAR-INF" / "MANIFEST.json").read_text())
    manifest["model"]["handler"] = "image_classifier"  # a built-in, found in ts.torch_handler
    (folder / "MAR-INF" / "MANIFEST.json").write_text(json.dumps(manifest))
    with pytest.raises(ModelError, match="vision handlers need torchvision"):
        ArchiveSource(folder).load().initialize()


def test_without_torchserve_installed_the_error_says_how_to_install_it(
    tmp_path: Path, isolated: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "ts.model_loader", None)  # import fails: not installed
    with pytest.raises(ModelError, match=r"packrat\[torchserve\]"):
        ArchiveSource(_archive(tmp_path / "a", "fn_missing")).load().initialize()


# The usual way to use TorchServe's BaseHandler: its TorchScript loading, inference (the
# model under inference_mode) and postprocess (`tolist()`) as they are, preprocess overridden,
# because the default one (`torch.as_tensor(data)`) cannot take a request's dict of inputs.
BASE_SUBCLASS = """
import torch
from ts.torch_handler.base_handler import BaseHandler

class RowsHandler(BaseHandler):
    def preprocess(self, data):
        rows = [row.get("data") or row.get("body") for row in data]  # JSON bodies: decoded
        return torch.as_tensor(rows, dtype=torch.float32)
"""


class Affine(torch.nn.Module):
    """y = 2x + 1, elementwise: its answers are known without running it."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return 2 * x + 1


def _builtin_archive(folder: Path, handler: str) -> Path:
    """An archive of `Affine` as TorchScript (`affine.pt`) served by `handler`."""
    folder = _archive(folder, "fn_unused")
    torch.jit.script(Affine()).save(str(folder / "affine.pt"))
    manifest = json.loads((folder / "MAR-INF" / "MANIFEST.json").read_text())
    manifest["model"]["handler"] = handler
    manifest["model"]["serializedFile"] = "affine.pt"
    (folder / "MAR-INF" / "MANIFEST.json").write_text(json.dumps(manifest))
    return folder


def _rows(*rows: list[float]) -> list[TorchServeRequest]:
    """One request per row, its JSON the body (TorchServe gives handlers the decoded list)."""
    return [build_request([("body", json.dumps(r).encode(), "application/json")], {}) for r in rows]


def test_the_builtin_base_handler_loads_its_torchscript_file_and_fails_as_in_torchserve(
    tmp_path: Path, isolated: None
) -> None:
    folder = _builtin_archive(tmp_path / "a", "base_handler")
    handler = ArchiveSource(folder).load()
    handler.initialize()  # the built-in from ts.torch_handler: nothing beyond torch to import
    # TorchServe's default preprocess is `torch.as_tensor(data)` on the requests' dicts of
    # inputs, which fails in TorchServe as here: BaseHandler answers no request by itself.
    with pytest.raises(RuntimeError, match="Could not infer dtype of dict"):
        handler.inference(_rows([1.0, 2.0]))
    (failed,) = handler.handle(_rows([1.0, 2.0]))
    assert (failed.status, failed.body) == (503, _torchserve_error(503, "Prediction failed"))
    (folder / "affine.pt").unlink()  # what BaseHandler.initialize loads with torch.jit.load
    with pytest.raises(ModelError, match="'base_handler' failed to load.*affine.pt"):
        ArchiveSource(folder).load().initialize()


def test_a_base_handler_subclass_answers_what_torchserve_writes(
    tmp_path: Path, isolated: None
) -> None:
    folder = _builtin_archive(tmp_path / "a", "rows_handler.py")
    (folder / "rows_handler.py").write_text(BASE_SUBCLASS)
    handler = ArchiveSource(folder).load()
    handler.initialize()
    replies = handler.handle(_rows([1.0, 2.0], [-0.5, 10.0]))
    # BaseHandler's postprocess gives each row's list; TorchServe writes each as indented JSON.
    expected = [[3.0, 5.0], [0.0, 21.0]]
    assert [reply.body for reply in replies] == [
        json.dumps(row, indent=2).encode() for row in expected
    ]
    assert {(reply.status, reply.content_type) for reply in replies} == {(200, "application/json")}
