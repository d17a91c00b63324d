"""A TorchServe handler, run unchanged inside a Packrat worker.

TorchServe's own loader (`ts.model_loader.TsModelLoader`, from the optional `torchserve`
package: `pip install 'packrat[torchserve]'`) imports the archive's handler exactly as
TorchServe's worker does: a handler file `module.py[:entry]` from the archive's folder, or a
built-in handler name (`image_classifier`, `text_classifier`, ...) from `ts.torch_handler`.
It builds the `ts.context.Context` the handler reads (model_dir, manifest, system_properties,
model_yaml_config) and calls the handler's `initialize(context)`. Then, for each sub-batch of
the plan, the worker calls the handler's `handle(data, context)` with the requests' inputs and
their headers set on the context, as TorchServe's `Service.predict` does, and turns each
answer into TorchServe's bytes (`TorchServeReply`). A batch the handler fails (it raises, or
answers other than a list of one output per request) is answered as TorchServe answers it:
every request gets the same status and JSON error (`failure_status`, `error_reply`), the
handler's traceback is logged as a warning, and the worker goes on serving.

What differs from TorchServe: Packrat sets the worker's threads and CPU affinity, and the
context's metrics record nothing (handlers may call any of TorchServe's metric methods; they
are accepted and dropped: Packrat's own metrics time every batch). TorchServe's vision
handlers import torchvision, which must be importable beside torch wherever they run.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import sys
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from packrat.errors import ModelError
from packrat.models.base import Handler
from packrat.models.torchserve_archive import ArchiveManifest
from packrat.models.torchserve_request import (
    JSON_TYPE,
    TorchServeReply,
    TorchServeRequest,
    error_reply,
)

if TYPE_CHECKING:
    from packrat.models.torchserve_source import SampleRequest

log = logging.getLogger(__name__)

INSTALL_HINT = "pip install 'packrat[torchserve]'"
OPENVINO_TORCH = "openvino.torch"


class TorchServeHandler(Handler):
    """The archive in `model_dir` behind Packrat's handler interface.

    `preprocess` passes the requests through; `inference` runs the TorchServe handler's whole
    `handle` (its own preprocess, model and postprocess: what a request costs, so what the
    profiler times); `postprocess` writes each answer as TorchServe would. `handle` answers a
    failed batch as TorchServe does, where `inference` raises (so profiling a failing handler
    fails).
    """

    def __init__(
        self, model_dir: Path, manifest: ArchiveManifest, sample: SampleRequest | None
    ) -> None:
        self._model_dir = model_dir
        self._manifest = manifest
        self._sample = sample
        self._service: Any = None

    def initialize(self) -> None:
        """Import and initialize the archive's handler with TorchServe's loader, from the
        archive's folder (its working directory and first import path, as in TorchServe)."""
        try:
            with _quiet_import(skip_openvino=not self._compiles_with_openvino()):
                from ts.model_loader import TsModelLoader
                from ts.torch_handler import base_handler  # noqa: F401 - imported quietly
        except ImportError as error:
            raise ModelError(
                f"serving a TorchServe archive needs TorchServe's handler package ({error}); "
                f"{INSTALL_HINT}"
            ) from error
        os.chdir(self._model_dir)
        if str(self._model_dir) not in sys.path:
            sys.path.insert(0, str(self._model_dir))
        try:
            self._service = TsModelLoader().load(
                self._manifest.model_name,
                str(self._model_dir),
                self._manifest.handler,
                gpu_id=None,
                batch_size=1,
                metrics_cache=NoMetrics(),
            )
        except Exception as error:  # a user's handler may raise anything
            hint = ""
            if "torchvision" in f"{type(error).__name__}: {error}":
                hint = (
                    "; TorchServe's vision handlers need torchvision importable beside torch "
                    "(on this machine's torch build it is not)"
                )
            raise ModelError(
                f"the archive's handler '{self._manifest.handler}' failed to load: "
                f"{type(error).__name__}: {error}{hint}"
            ) from error

    def _compiles_with_openvino(self) -> bool:
        """Whether the archive's model-config.yaml may ask torch.compile for OpenVINO."""
        if self._manifest.config_file is None:
            return False
        try:
            return "openvino" in (self._model_dir / self._manifest.config_file).read_text()
        except OSError:
            return False  # TorchServe's loader reports the unreadable file

    def preprocess(self, requests: list[TorchServeRequest]) -> list[TorchServeRequest]:
        return requests

    def handle(self, requests: list[TorchServeRequest]) -> list[TorchServeReply]:
        """One reply per request; if the handler fails the batch, TorchServe's error answer
        (`failure_status`) for every request of it, the traceback logged as a warning."""
        try:
            outputs = self.inference(self.preprocess(requests))
        except Exception as error:  # a user's handler may raise anything: TorchServe answers it
            status, message = failure_status(error)
            log.warning(
                "the TorchServe handler failed a batch of %d: %d %s",
                len(requests), status, message, exc_info=True,
            )  # fmt: skip
            return [error_reply(status, message)] * len(requests)
        return self.postprocess(outputs)

    def inference(self, batch: list[TorchServeRequest]) -> list[Any]:
        """The handler's `handle(data, context)` on the batch, its requests' ids and headers
        on the context: one output per request. Raises what the handler raises, or
        InvalidOutput if it answers other than a list of one output per request."""
        from ts.context import RequestProcessor

        context = self._service.context
        ids = {i: request.request_id for i, request in enumerate(batch)}
        context.request_ids = ids
        context.request_processor = [RequestProcessor(dict(r.headers)) for r in batch]
        context.metrics.request_ids = ids
        outputs = self._service._entry_point([r.inputs for r in batch], context)
        if not isinstance(outputs, list):
            raise InvalidOutput(
                "Invalid model predict output", f"returned a {type(outputs).__name__}, not a list"
            )
        if len(outputs) != len(batch):
            raise InvalidOutput(
                "number of batch response mismatched",
                f"returned {len(outputs)} outputs for {len(batch)} requests",
            )
        return outputs

    def postprocess(self, outputs: list[Any]) -> list[TorchServeReply]:
        context = self._service.context
        return [_reply(output, context, i) for i, output in enumerate(outputs)]

    def example_requests(self, batch_size: int) -> list[TorchServeRequest]:
        """Copies of the sample request; ModelError if the archive has none and none was given."""
        if self._sample is None:
            raise ModelError(
                f"TorchServe archive '{self._manifest.model_name}' has no sample request to "
                "profile with: pass --sample-request FILE (a request body, e.g. an image), or "
                "add one to the archive with --extra-files sample_request.jpg"
            )
        return self._sample.requests(batch_size)


@contextlib.contextmanager
def _quiet_import(*, skip_openvino: bool) -> Iterator[None]:
    """Import TorchServe's BaseHandler without its noise and, unless the model compiles with
    OpenVINO, without OpenVINO's torch.compile backend.

    BaseHandler logs a warning for each optional accelerator it lacks (TensorRT, IPEX, ...),
    and imports `openvino.torch` whenever OpenVINO is installed (as it is beside Packrat),
    which loads torch._dynamo: 7 s more per worker on a 2-core machine, for a backend only a
    model-config.yaml `pt2: {backend: openvino}` uses. `skip_openvino` makes that one import
    fail, as if OpenVINO were absent, then lets later imports of it work again.
    """
    logger = logging.getLogger("ts.torch_handler.base_handler")
    level = logger.level
    logger.setLevel(logging.ERROR)
    blocked = skip_openvino and OPENVINO_TORCH not in sys.modules
    if blocked:
        sys.modules[OPENVINO_TORCH] = None  # type: ignore[assignment]
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)
            yield
    finally:
        logger.setLevel(level)
        if blocked and sys.modules.get(OPENVINO_TORCH, 0) is None:
            del sys.modules[OPENVINO_TORCH]


class InvalidOutput(ModelError):
    """The TorchServe handler's answer to a batch is not a list of one output per request;
    `answer` is the message TorchServe answers it with (status 503)."""

    def __init__(self, answer: str, what: str) -> None:
        super().__init__(f"the TorchServe handler {what} (TorchServe answers 503: {answer})")
        self.answer = answer


def failure_status(error: Exception) -> tuple[int, str]:
    """The status and message TorchServe 0.12's worker (`Service.predict`) answers a batch
    with when its handler failed with `error`."""
    from ts.utils.util import PredictionException

    if isinstance(error, PredictionException):
        return int(error.error_code), str(error.message)
    if isinstance(error, InvalidOutput):
        return 503, error.answer
    # TorchServe's own rule, kept so that answers match: any exception whose text names CUDA
    # is taken for running out of GPU memory.
    if isinstance(error, MemoryError) or "CUDA" in str(error):
        return 507, "Out of resources"
    return 503, "Prediction failed"


def _reply(output: Any, context: Any, index: int) -> TorchServeReply:
    """One answer as TorchServe's backend writes it (`create_predict_response`), with the
    status, content type and headers the handler set for this request."""
    headers = dict(context.get_response_headers(index))
    content_type = headers.pop("content-type", None) or None
    code, phrase = context.get_response_status(index)
    status = 200 if code is None else int(code)
    if isinstance(output, bytes | bytearray):
        body = bytes(output)
    elif isinstance(output, str):
        body = output.encode("utf-8")
    elif type(output).__name__ == "Tensor":
        import io

        import torch

        buffer = io.BytesIO()
        torch.save(output, buffer)
        body = buffer.getvalue()
    else:
        try:
            body = json.dumps(output, indent=2).encode("utf-8")
        except TypeError:
            log.warning("cannot serialize the handler's output %s", type(output).__name__)
            return TorchServeReply(b"Unsupported model output data type.", None, 503)
        content_type = content_type or JSON_TYPE
    return TorchServeReply(body, content_type, status, phrase or "", headers)


class NoMetrics:
    """TorchServe's metrics cache for handlers, recording nothing: every method a handler may
    call (`add_time`, `add_counter`, `add_metric`, `get_metric(...).add_or_update`, ...)
    exists and returns something callable in turn."""

    request_ids: Any = None

    def __getattr__(self, name: str) -> Any:
        return _NoMetric()


class _NoMetric:
    def __call__(self, *args: Any, **kwargs: Any) -> _NoMetric:
        return self

    def __getattr__(self, name: str) -> _NoMetric:
        return self
