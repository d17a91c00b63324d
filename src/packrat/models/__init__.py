"""Model formats (TorchScript, torch.export, handler files, ONNX, OpenVINO IR), the built-in
zoo, and conversion of torch models for the faster ONNX Runtime and OpenVINO backends.

This package is the only place in Packrat that imports torch, onnxruntime and openvino, and
only inside `load()`, `export_*()` and `convert_source()`: importing `packrat.models` (the CLI
does) stays free of them. `TensorHandler`,
which needs torch to be defined, is imported on first access.

Security: TorchScript and .pt2 files deserialize code and handler files are arbitrary Python;
only load files you trust. Packrat never loads a model from a URL.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from packrat.models.backends import Backend, Precision
from packrat.models.base import Handler, ModelIdentity, ModelSource
from packrat.models.convert import convert_source
from packrat.models.export import export_program, export_torchscript
from packrat.models.exported import ExportedSource
from packrat.models.handler_file import HandlerFileSource
from packrat.models.inputs import InputSpec, parse_shape
from packrat.models.metadata import ExportMetadata
from packrat.models.resolve import resolve_model
from packrat.models.runtime_source import ConvertedSource, OnnxFileSource, OpenVinoFileSource
from packrat.models.torchscript import TorchScriptSource
from packrat.models.zoo import ZooEntry, ZooSource, list_zoo

if TYPE_CHECKING:
    from packrat.models.tensor_handler import TensorHandler

__all__ = [
    "Backend",
    "ConvertedSource",
    "ExportMetadata",
    "ExportedSource",
    "Handler",
    "HandlerFileSource",
    "InputSpec",
    "ModelIdentity",
    "ModelSource",
    "OnnxFileSource",
    "OpenVinoFileSource",
    "Precision",
    "TensorHandler",
    "TorchScriptSource",
    "ZooEntry",
    "ZooSource",
    "convert_source",
    "export_program",
    "export_torchscript",
    "list_zoo",
    "parse_shape",
    "resolve_model",
]


def __getattr__(name: str) -> Any:
    # Lazy so that `import packrat.models` does not import torch (PEP 562).
    if name == "TensorHandler":
        from packrat.models.tensor_handler import TensorHandler

        return TensorHandler
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
