"""The handler file benchmarks/ipc_transport.py serves: ResNet-50's traffic without its model.

Requests are float32 [3, 224, 224] (602 KB); `preprocess` stacks them as `TensorHandler` does
(a copy that reads every byte of every request, wherever the transport left them);
`inference` returns fixed logits [batch, 1000]; `postprocess` copies one 1000-float row per
request, as `TensorHandler` does. So an `Engine.infer` round trip is transport, not compute.
"""

from __future__ import annotations

from typing import Any

import torch

from packrat.models import Handler

MAX_BATCH = 64


class TransportHandler(Handler):
    def initialize(self) -> None:
        generator = torch.Generator().manual_seed(0)
        self.logits = torch.randn(MAX_BATCH, 1000, generator=generator)

    def preprocess(self, requests: list[Any]) -> torch.Tensor:
        return torch.stack(requests)

    def inference(self, batch: torch.Tensor) -> torch.Tensor:
        return self.logits[: batch.shape[0]]

    def postprocess(self, outputs: torch.Tensor) -> list[Any]:
        return [row.clone() for row in outputs.unbind(0)]

    def example_requests(self, batch_size: int) -> list[Any]:
        return [torch.zeros(3, 224, 224) for _ in range(batch_size)]
