"""Turn the model argument of the CLI into a `ModelSource`, without importing torch.

A zoo name wins over a file of the same name (write `./resnet50` for the file). Files are
recognized by suffix: .pt/.ts/.torchscript (TorchScript), .pt2 (torch.export), .py (handler
file), .onnx (ONNX Runtime), .xml (OpenVINO IR, its .bin beside it) and .mar (a TorchServe
archive, served by its own handler). A directory holding MAR-INF/ is an unpacked archive; any
other directory stands for the one model file in it (KServe's /mnt/models). URLs are refused:
Packrat never fetches a model, because a model file is code that runs with the server's
permissions; download it, check it, and pass the local path.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import NoReturn

from packrat.errors import ModelError
from packrat.models.base import ModelSource
from packrat.models.exported import ExportedSource
from packrat.models.handler_file import HandlerFileSource
from packrat.models.inputs import InputSpec
from packrat.models.runtime_source import OnnxFileSource, OpenVinoFileSource
from packrat.models.torchscript import TorchScriptSource
from packrat.models.torchserve_archive import ARCHIVE_SUFFIXES, is_archive_dir
from packrat.models.torchserve_source import ArchiveSource
from packrat.models.zoo import ZOO, ZooSource

TORCHSCRIPT_SUFFIXES = (".pt", ".ts", ".torchscript")
PROGRAM_SUFFIXES = (".pt2",)
HANDLER_SUFFIXES = (".py",)
ONNX_SUFFIXES = (".onnx",)
OPENVINO_SUFFIXES = (".xml",)
MODEL_SUFFIXES = (
    TORCHSCRIPT_SUFFIXES
    + PROGRAM_SUFFIXES
    + HANDLER_SUFFIXES
    + ONNX_SUFFIXES
    + OPENVINO_SUFFIXES
    + ARCHIVE_SUFFIXES
)

# scheme://... as in RFC 3986 (http, https, s3, gs, hf, file, ...).
_URL = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*://")


def resolve_model(
    spec: str, input_spec: InputSpec | None = None, sample_request: Path | None = None
) -> ModelSource:
    """The source for a zoo name or a local model file.

    input_spec: the per-request input for a TorchScript, .pt2, .onnx or .xml file (overriding
        any stored or declared in it); ModelError if given for a zoo model, handler file or
        archive, which define their own.
    sample_request: a request body to profile a TorchServe archive with (default: the one the
        archive carries); ModelError if given for any other model.
    Raises ModelError for URLs, paths that do not exist, directories and unknown suffixes.
    """
    if _URL.match(spec):
        raise ModelError(
            f"refusing to load model from URL '{spec}': Packrat loads local files only; "
            "download it and pass the path"
        )
    source = _resolve(spec, input_spec, sample_request)
    if sample_request is not None and not isinstance(source, ArchiveSource):
        raise ModelError(
            f"--sample-request is for TorchServe archives; '{spec}' is not one (its example "
            "inputs are known)"
        )
    return source


def _resolve(spec: str, input_spec: InputSpec | None, sample_request: Path | None) -> ModelSource:
    if spec in ZOO:
        if input_spec is not None:
            raise ModelError(f"zoo model '{spec}' has a fixed input; drop --input-shape")
        return ZooSource(spec)
    path = Path(spec).expanduser()
    if not path.exists():
        examples = ", ".join(list(ZOO)[:3])
        raise ModelError(
            f"model '{spec}' is neither a zoo model ({examples}, ...) nor an existing file"
        )
    if path.is_dir():
        if not is_archive_dir(path):
            path = _the_model_in(path)
    elif not path.is_file():
        raise ModelError(f"model '{spec}' is not a file")
    suffix = path.suffix.lower()
    if path.is_dir() or suffix in ARCHIVE_SUFFIXES:
        if input_spec is not None:
            raise ModelError(f"TorchServe archive '{spec}' takes raw requests; drop --input-shape")
        return ArchiveSource(path, sample_request)
    if suffix in TORCHSCRIPT_SUFFIXES:
        return TorchScriptSource(path, input_spec)
    if suffix in PROGRAM_SUFFIXES:
        return ExportedSource(path, input_spec)
    if suffix in ONNX_SUFFIXES:
        return OnnxFileSource(path, input_spec)
    if suffix in OPENVINO_SUFFIXES:
        return OpenVinoFileSource(path, input_spec)
    if suffix in HANDLER_SUFFIXES:
        if input_spec is not None:
            raise ModelError(f"handler file '{spec}' defines its own inputs; drop --input-shape")
        return HandlerFileSource(path)
    _unknown_format(spec)


def _the_model_in(directory: Path) -> Path:
    """The one model file in `directory` (as KServe's storage initializer leaves a model in
    /mnt/models); ModelError if it holds none or several."""
    known = MODEL_SUFFIXES
    found = sorted(p for p in directory.iterdir() if p.is_file() and p.suffix.lower() in known)
    if len(found) == 1:
        return found[0]
    if not found:
        raise ModelError(
            f"directory '{directory}' holds no model file (one ending {', '.join(known)})"
        )
    names = ", ".join(p.name for p in found)
    raise ModelError(f"directory '{directory}' holds several model files ({names}): name one")


def _unknown_format(spec: str) -> NoReturn:
    known = ", ".join(MODEL_SUFFIXES)
    raise ModelError(f"model file '{spec}' has an unknown format: expected a name ending {known}")
