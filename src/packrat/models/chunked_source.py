"""A model whose instances run each batch as consecutive chunks, where that is faster.

`optimizer.chunks` finds, from the profile, the chunk size that runs each cell (threads,
batch) fastest; `ChunkedSource` carries that map to the workers, and its handler splits a
batch tensor along its first dimension into those chunks, runs them one after the other and
joins the outputs. Requests are decoded and answered as the model's own handler does: only
`inference` is split.

Only models whose handlers take a batch tensor and return one, batch first, are wrapped
(`chunkable`): the built-in torch formats, ONNX Runtime, OpenVINO and mixes of them.
"""

from __future__ import annotations

from typing import Any

from packrat.models.base import Handler, ModelIdentity, ModelSource
from packrat.models.exported import ExportedSource
from packrat.models.mixed_source import MixedSource
from packrat.models.runtime_source import ConvertedSource, OnnxFileSource, OpenVinoFileSource
from packrat.models.torchscript import TorchScriptSource
from packrat.models.zoo import ZooSource
from packrat.types import CellMap

_BATCH_TENSOR_SOURCES = (
    ZooSource,
    TorchScriptSource,
    ExportedSource,
    ConvertedSource,
    OnnxFileSource,
    OpenVinoFileSource,
    MixedSource,
)


def chunkable(source: ModelSource) -> bool:
    """Whether `source`'s handler maps a batch tensor to a batch-first tensor."""
    return isinstance(source, _BATCH_TENSOR_SOURCES)


class ChunkedSource(ModelSource):
    """`source`, each batch run in the chunks `chunks` gives its cell (0: whole)."""

    def __init__(self, source: ModelSource, chunks: CellMap) -> None:
        if not chunkable(source):
            raise ValueError(f"{type(source).__name__} does not take batch tensors")
        self.source = source
        self.chunks = chunks
        self.name = source.name
        self.input_spec = getattr(source, "input_spec", None)

    def identity(self) -> ModelIdentity:
        """The model's own: chunks change how it runs, not what it computes (describe names
        the model, and a torch model's shared weights file is the model's)."""
        return self.source.identity()

    @property
    def moves_in_place(self) -> bool:  # type: ignore[override]
        return self.source.moves_in_place

    def load(self) -> Handler:
        """The model's handler, wrapped; the instance's threads are torch's now (the worker
        sets them before loading)."""
        import torch

        threads = torch.get_num_threads()
        return ChunkedHandler(self.source.load(), self.chunks, threads)


class ChunkedHandler(Handler):
    """Runs `inference` on chunks of the batch; everything else is `handler`'s.

    threads: the instance's threads, followed through `set_threads`.
    """

    def __init__(self, handler: Handler, chunks: CellMap, threads: int) -> None:
        self.handler = handler
        self.chunks = chunks
        self.threads = threads
        self.computes_with_torch = handler.computes_with_torch

    def chunk_size(self, batch_size: int) -> int:
        """The chunk size a batch of `batch_size` runs in now (its size: whole)."""
        size = self.chunks.at(self.threads, batch_size)
        return size if 0 < size < batch_size else batch_size

    def initialize(self) -> None:
        self.handler.initialize()

    def preprocess(self, requests: list[Any]) -> Any:
        return self.handler.preprocess(requests)

    def inference(self, batch: Any) -> Any:
        import torch

        size = self.chunk_size(len(batch))
        if size == len(batch) or not isinstance(batch, torch.Tensor):
            return self.handler.inference(batch)
        parts = [batch[start : start + size] for start in range(0, len(batch), size)]
        outputs = [self.handler.inference(part) for part in parts]
        return torch.cat(outputs)

    def postprocess(self, outputs: Any) -> list[Any]:
        return self.handler.postprocess(outputs)

    def example_requests(self, batch_size: int) -> list[Any]:
        return self.handler.example_requests(batch_size)

    def set_threads(self, threads: int) -> None:
        self.handler.set_threads(threads)
        self.threads = threads

    def shared_tensors(self) -> dict[str, Any]:
        return self.handler.shared_tensors()
