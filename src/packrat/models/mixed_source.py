"""A model served on several backends at once: each batch runs on the one fastest for its cell.

`controller.backend_mix` decides, from each backend's profile, which backend runs each cell
(threads, batch) (`CellMap`). `MixedSource` carries that decision and the backends'
sources to the workers; its handler loads every backend in the worker and runs each batch on
the owner of (the instance's threads, the batch's size). An instance keeps its cell while
its plan stays, so it switches runtimes only when the plan does.

The price: every worker holds each backend's copy of the model (memory: the sum of the
backends'), and a re-threaded worker rebuilds every backend's session (with OpenVINO among
them, the pool starts a new worker instead: `ModelSource.moves_in_place`). Only backends with
their own thread pools mix (ONNX Runtime, OpenVINO): torch's OpenMP threads would spin on
the cores a runtime computes on.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from packrat.errors import ModelError
from packrat.models.base import Handler, ModelIdentity, ModelSource
from packrat.models.identity import json_sha256
from packrat.types import CellMap


class MixedSource(ModelSource):
    """The backends' sources of one model, and which runs each cell.

    sources: one per backend (converted sources of the same model, same inputs and outputs).
    labels: their names, e.g. "openvino fp32", for errors and describe.
    owners: which source (by index) runs each (threads, batch).
    """

    def __init__(
        self, sources: Sequence[ModelSource], labels: Sequence[str], owners: CellMap
    ) -> None:
        if len(sources) < 2 or len(labels) != len(sources):
            raise ValueError("MixedSource takes two or more sources, each with a label")
        if not owners.values() <= set(range(len(sources))):
            raise ValueError(f"MixedSource owners name sources beyond the {len(sources)} given")
        self.name = sources[0].name
        self.sources = tuple(sources)
        self.labels = tuple(labels)
        self.owners = owners
        self.input_spec = getattr(sources[0], "input_spec", None)

    def identity(self) -> ModelIdentity:
        """The sources' identities and the owners: another split is another profile."""
        return ModelIdentity(
            self.name,
            json_sha256(
                {
                    "mixed": [s.identity().content_hash for s in self.sources],
                    "owners": {str(t): row for t, row in self.owners.runs.items()},
                }
            ),
        )

    @property
    def moves_in_place(self) -> bool:  # type: ignore[override]
        """Only if every backend does: the worker holds them all."""
        return all(source.moves_in_place for source in self.sources)

    def load(self) -> Handler:
        """Every backend's handler, on the worker's threads; ModelError if one fails."""
        handlers = []
        for source, label in zip(self.sources, self.labels, strict=True):
            try:
                handlers.append(source.load())
            except ModelError as exc:
                raise ModelError(f"{label}: {exc}") from exc
        return MixedHandler(handlers, self.labels, self.owners)


class MixedHandler(Handler):
    """Runs each batch on the handler `owners` gives its cell; requests and outputs go
    through the first handler's `preprocess` and `postprocess` (the backends share them).

    threads: the instance's threads, followed through `set_threads`; it starts at the first
        handler's count (each runtime's handler is built on the worker's threads).
    """

    computes_with_torch = False

    def __init__(self, handlers: Sequence[Handler], labels: Sequence[str], owners: CellMap):
        torch_based = [label for h, label in zip(handlers, labels, strict=True)
                       if h.computes_with_torch]  # fmt: skip
        if torch_based:
            raise ModelError(
                f"cannot mix {', '.join(torch_based)} with other backends: torch computes on "
                "threads of its own"
            )
        self.handlers = tuple(handlers)
        self.labels = tuple(labels)
        self.owners = owners
        self.threads: int = getattr(handlers[0], "threads", 1)

    def backend_for(self, batch_size: int) -> str:
        """The label of the backend that runs a batch of `batch_size` now."""
        return self.labels[self.owners.at(self.threads, batch_size)]

    def initialize(self) -> None:
        for handler in self.handlers:
            handler.initialize()

    def preprocess(self, requests: list[Any]) -> Any:
        return self.handlers[0].preprocess(requests)

    def inference(self, batch: Any) -> Any:
        return self.handlers[self.owners.at(self.threads, len(batch))].inference(batch)

    def postprocess(self, outputs: Any) -> list[Any]:
        return self.handlers[0].postprocess(outputs)

    def example_requests(self, batch_size: int) -> list[Any]:
        return self.handlers[0].example_requests(batch_size)

    def set_threads(self, threads: int) -> None:
        """Every backend on `threads` threads: each rebuilds its session (the sum of their
        costs), so a later batch of any size runs without a rebuild. The pool calls it only
        for a mix whose backends all move in place (`MixedSource.moves_in_place`)."""
        for handler in self.handlers:
            handler.set_threads(threads)
        self.threads = threads
