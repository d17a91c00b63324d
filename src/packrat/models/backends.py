"""The inference runtimes an instance can run a model on, and the precisions each supports.

Torch serves every format; ONNX Runtime (CPU execution provider) and OpenVINO (CPU plugin) run
converted models with faster CPU kernels. Their packages are dependencies of Packrat, but this
module names them without importing them: the runtime is imported only by `import_runtime`,
inside a worker or a conversion (the server and `packrat plan` never pay for it), and an
environment without one gets a ModelError that says what to install instead of an ImportError
deep in a worker.
"""

from __future__ import annotations

import enum
import importlib
import importlib.metadata
from types import ModuleType

from packrat.errors import ModelError

RUNTIME_PACKAGES = "onnxruntime openvino onnx"
"""What `pip install` needs for the backends beside torch (all dependencies of Packrat)."""


class Backend(enum.Enum):
    """The runtime that executes a model inside an instance."""

    TORCH = "torch"
    ONNXRUNTIME = "onnxruntime"
    OPENVINO = "openvino"

    @property
    def package(self) -> str:
        """The Python distribution (and top-level module) that provides the runtime."""
        return self.value


class Precision(enum.Enum):
    """The arithmetic a runtime computes in; weights on disk stay fp32 either way."""

    FP32 = "fp32"
    BF16 = "bf16"
    """bfloat16 matmuls and convolutions (AVX512_BF16 / AMX); OpenVINO only, and only where
    the CPU has the instructions (elsewhere OpenVINO emulates them, slower than fp32)."""


SUPPORTED_PRECISIONS: dict[Backend, tuple[Precision, ...]] = {
    Backend.TORCH: (Precision.FP32,),
    # ONNX Runtime's CPU provider has few bf16 kernels: a bf16 graph would fall back to casts.
    Backend.ONNXRUNTIME: (Precision.FP32,),
    Backend.OPENVINO: (Precision.FP32, Precision.BF16),
}


def check_precision(backend: Backend, precision: Precision) -> None:
    """ModelError unless `backend` can run in `precision`."""
    supported = SUPPORTED_PRECISIONS[backend]
    if precision not in supported:
        names = ", ".join(p.value for p in supported)
        raise ModelError(f"the {backend.value} backend runs in {names}, not {precision.value}")


def import_runtime(backend: Backend) -> ModuleType:
    """Import the runtime's top-level module; ModelError naming the extra if it is missing."""
    try:
        return importlib.import_module(backend.package)
    except ImportError as exc:
        raise ModelError(
            f"the {backend.value} backend needs the '{backend.package}' package, which is not "
            f"installed: pip install {RUNTIME_PACKAGES} ({exc})"
        ) from exc


def library_version(package: str) -> str:
    """The installed version of `package`, read from its metadata without importing it."""
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return "not installed"
