"""Models run by ONNX Runtime or OpenVINO: .onnx and OpenVINO IR files, and converted models.

`OnnxFileSource` (.onnx, ONNX Runtime) and `OpenVinoFileSource` (.xml + .bin, OpenVINO) serve a
user's file; `ConvertedSource` serves a torch model that `packrat.models.convert` converted once,
into the cache. All are small picklable values: the runtime is imported only in `load()`, which
runs in the worker and builds the handler on the thread count the worker has set for torch
(`torch.get_num_threads()`: the instance's threads).
"""

from __future__ import annotations

import os
from pathlib import Path

from packrat.models.backends import Backend, Precision, check_precision
from packrat.models.base import Handler, ModelIdentity, ModelSource
from packrat.models.file_source import LocalFileSource
from packrat.models.identity import existing_file, file_sha256, json_sha256
from packrat.models.inputs import InputSpec


def load_runtime_handler(
    path: Path,
    backend: Backend,
    precision: Precision,
    input_spec: InputSpec | None,
    name: str,
    *,
    shared: bool = True,
) -> Handler:
    """The handler that runs `path` on `backend` in `precision`, on torch's thread count.
    shared=False: ONNX Runtime loads the file itself rather than its mapped copy (for a
    one-off look at a file; see `OnnxRuntimeHandler`).

    Raises ModelError if the runtime is not installed, the precision unsupported, or the file
    unreadable.
    """
    import torch

    check_precision(backend, precision)
    threads = torch.get_num_threads()
    if backend is Backend.ONNXRUNTIME:
        from packrat.models.onnxruntime_handler import OnnxRuntimeHandler

        return OnnxRuntimeHandler(path, threads, input_spec, name=name, shared=shared)
    if backend is Backend.OPENVINO:
        from packrat.models.openvino_handler import OpenVinoHandler

        return OpenVinoHandler(path, threads, precision, input_spec, name=name)
    raise ValueError(f"{backend.value} models are served by the torch formats, not here")


class OnnxFileSource(LocalFileSource):
    """An .onnx file, served by ONNX Runtime (CPU) in fp32.

    input_spec: the per-request input; None takes the one the file declares for its input if
        every dimension after the batch is fixed (else `example_requests` asks for one).
    """

    backend = Backend.ONNXRUNTIME  # the format names its backend and precision
    precision = Precision.FP32

    def load(self) -> Handler:
        """Build an ONNX Runtime session on the worker's threads; ModelError if unreadable."""
        existing_file(self.path, "ONNX model")
        return load_runtime_handler(
            self.path, self.backend, self.precision, self.input_spec, self.name
        )


class OpenVinoFileSource(LocalFileSource):
    """An OpenVINO IR model (.xml, with the .bin of the same name beside it), served by the
    CPU plugin in fp32.

    input_spec: as for `OnnxFileSource`.
    """

    backend = Backend.OPENVINO
    precision = Precision.FP32
    moves_in_place = False  # OpenVINO places its threads once per process (OpenVinoHandler)

    @property
    def weights_path(self) -> Path:
        """The .bin file holding the model's weights."""
        return self.path.with_suffix(".bin")

    def identity(self) -> ModelIdentity:
        """The .xml file's name and a hash of both files (and the spec, if one is passed)."""
        description: dict[str, object] = {
            "xml": file_sha256(self.path, "OpenVINO model"),
            "bin": file_sha256(self.weights_path, "OpenVINO weights file"),
        }
        if self.input_spec is not None:
            description["input_spec"] = self.input_spec.to_json()
        return ModelIdentity(self.name, json_sha256(description))

    def load(self) -> Handler:
        """Read and compile the model on the worker's threads; ModelError if unreadable."""
        existing_file(self.path, "OpenVINO model")
        existing_file(self.weights_path, "OpenVINO weights file")
        return load_runtime_handler(
            self.path, self.backend, self.precision, self.input_spec, self.name
        )


class ConvertedSource(ModelSource):
    """A torch model converted for another backend, as `convert_source` leaves it in the cache.

    name: the original model's name, under which it is served.
    path: the converted model file (.onnx or OpenVINO IR .xml), absolute.
    content_hash: combines the original model's hash, the backend, the precision and the
        library versions (see `convert.conversion_key`), so each backend and precision gets
        profiles of its own.
    """

    def __init__(
        self,
        name: str,
        path: str | os.PathLike[str],
        backend: Backend,
        precision: Precision,
        input_spec: InputSpec,
        content_hash: str,
    ) -> None:
        check_precision(backend, precision)
        self.name = name
        self.path = Path(path).absolute()
        self.backend = backend
        self.precision = precision
        self.input_spec = input_spec
        self.content_hash = content_hash

    def identity(self) -> ModelIdentity:
        """The original name and the conversion's hash; cheap, the file is not read."""
        return ModelIdentity(self.name, self.content_hash)

    @property
    def moves_in_place(self) -> bool:  # type: ignore[override]
        """False on OpenVINO, which places its threads once per process (`OpenVinoHandler`)."""
        return self.backend is not Backend.OPENVINO

    def load(self) -> Handler:
        """Build the backend's handler on the worker's threads; ModelError if it fails."""
        existing_file(self.path, f"converted {self.backend.value} model")
        return load_runtime_handler(
            self.path, self.backend, self.precision, self.input_spec, self.name
        )
