"""Model formats (TorchScript, torch.export, handler files) and the built-in zoo.

This package is the only place in Packrat that imports torch, and only inside `load()` and
`export_*()`: importing `packrat.models` (the CLI does) stays free of torch. `TensorHandler`,
which needs torch to be defined, is imported on first access.

Security: TorchScript and .pt2 files deserialize code and handler files are arbitrary Python;
only load files you trust. Packrat never loads a model from a URL.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from packrat.models.base import Handler, ModelIdentity, ModelSource
from packrat.models.export import export_program, export_torchscript
from packrat.models.exported import ExportedSource
from packrat.models.handler_file import HandlerFileSource
from packrat.models.inputs import InputSpec, parse_shape
from packrat.models.metadata import ExportMetadata
from packrat.models.resolve import resolve_model
from packrat.models.torchscript import TorchScriptSource
from packrat.models.zoo import ZooEntry, ZooSource, list_zoo

if TYPE_CHECKING:
    from packrat.models.tensor_handler import TensorHandler

__all__ = [
    "ExportMetadata",
    "ExportedSource",
    "Handler",
    "HandlerFileSource",
    "InputSpec",
    "ModelIdentity",
    "ModelSource",
    "TensorHandler",
    "TorchScriptSource",
    "ZooEntry",
    "ZooSource",
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
