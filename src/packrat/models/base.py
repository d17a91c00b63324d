"""The model interface every format implements.

A `ModelSource` says where a model comes from. It is a small picklable value, cheap to build
and safe to send to a worker process; it imports torch only in `load()`, which runs inside the
worker. `load()` returns a `Handler`, whose lifecycle follows TorchServe's handlers:
`initialize` once, then for each (sub-)batch of requests
`postprocess(inference(preprocess(requests)))`.

A *request* is one input item (one image, one token sequence): an instance's batch is a list of
them, and `postprocess` returns one output per request, in order. A tensor request may be a
view into the worker's shared memory (`packrat.pool.arena`), which the next batch overwrites:
a handler that keeps a request after `handle` returns must copy it.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class ModelIdentity:
    """What makes two models the same for profiling: a name and a content hash.

    `content_hash` is the sha256 of the model file (file formats) or of the architecture config,
    input shape and weight seed (zoo models), so a cached profile is never reused for another model.
    """

    name: str
    content_hash: str


class Handler(ABC):
    """A loaded model with TorchServe's handler lifecycle, run inside one worker process.

    `computes_with_torch`: whether the model runs on torch's intra-op threads. A handler whose
    runtime has its own threads (ONNX Runtime, OpenVINO) sets it False, and its worker gives
    torch one thread: torch then only stacks and splits tensors, and an OpenMP pool woken for
    that would spin on the cores the runtime's threads compute on.
    """

    computes_with_torch: bool = True

    def initialize(self) -> None:  # noqa: B027 - optional hook, empty by default
        """Prepare to serve (e.g. warm caches). Called once, after threads and pinning are set."""

    @abstractmethod
    def preprocess(self, requests: list[Any]) -> Any:
        """Turn a list of requests into the model's batch input."""

    @abstractmethod
    def inference(self, batch: Any) -> Any:
        """Run the model on a batch input (the part the profiler times)."""

    @abstractmethod
    def postprocess(self, outputs: Any) -> list[Any]:
        """Split the model's batch output into one output per request, in request order."""

    @abstractmethod
    def example_requests(self, batch_size: int) -> list[Any]:
        """`batch_size` valid requests, for profiling and benchmarks (deterministic)."""

    def handle(self, requests: list[Any]) -> list[Any]:
        """The whole data path for one sub-batch."""
        outputs = self.postprocess(self.inference(self.preprocess(requests)))
        if len(outputs) != len(requests):
            raise ValueError(
                f"postprocess returned {len(outputs)} outputs for {len(requests)} requests"
            )
        return outputs

    def set_threads(self, threads: int) -> None:  # noqa: B027 - optional hook, empty by default
        """Run on `threads` intra-op threads from the next batch on; called when the pool
        re-threads a live instance (`Reconfigure`), after the worker is pinned to its new cores.

        The default does nothing: torch-based handlers follow `torch.set_num_threads`, which
        the worker calls itself. Handlers whose runtime fixes its thread count when a session
        is built (ONNX Runtime) rebuild it here, on the new cores. The pool never calls it for
        a source that does not move in place (`ModelSource.moves_in_place`).
        """

    def shared_tensors(self) -> dict[str, Any]:
        """The weight tensors (name -> torch.Tensor) that instances may share in memory.

        The pool replaces each with a read-only memory-mapped copy common to all instances.
        Return {} (the default) if the model's weights cannot be swapped in place.
        """
        return {}


class ModelSource(ABC):
    """Where a model comes from. Picklable; imports torch only in `load`.

    takes_raw_requests: whether the model's handler takes requests as the client sent them
    (a TorchServe archive's handler: `packrat.models.torchserve_request`) rather than tensors
    the server decoded from the body (every other format).
    moves_in_place: whether a live instance can be re-pinned to other cores and re-threaded
    (`Handler.set_threads`). False for a runtime that places its threads once per process
    (OpenVINO): the pool then starts a new worker on the new cores instead.
    """

    name: str
    takes_raw_requests: bool = False
    moves_in_place: bool = True

    @abstractmethod
    def identity(self) -> ModelIdentity:
        """Name and content hash; raises ModelError if the model cannot be found or read."""

    @abstractmethod
    def load(self) -> Handler:
        """Build the handler. Runs in the worker process; raises ModelError on failure."""
