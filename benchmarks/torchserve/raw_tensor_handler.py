"""TorchServe handler for the serve-overhead baseline: raw float32 tensor bytes in, JSON out.

Mirrors what a Packrat worker does for a raw (`application/octet-stream`) request, so the two
servers run the same work per request:

- initialize: `torch.jit.load` the archive's serialized file on the CPU in eval mode; read the
  per-request input shape from the `packrat.json` extra file that `packrat export` stores;
  set torch's intra-op threads to every core (as Packrat's fat instance does). TorchServe
  itself would leave the worker at OMP_NUM_THREADS, which its frontend sets per worker.
- preprocess: each request's body (a bytearray) is wrapped with `np.frombuffer` and
  `torch.from_numpy` (no copy), reshaped to the model's shape; the requests are stacked.
- inference: the module under `torch.inference_mode()`.
- postprocess: one nested list (JSON) per request.

Its own time, preprocess + inference + postprocess (what runs inside a Packrat worker), is sent
back per request in the `X-Handler-Ms` response header, so the benchmark can subtract it.
"""

from __future__ import annotations

import json
import logging
import os
import time
from typing import Any

import numpy as np
import torch
from ts.torch_handler.base_handler import BaseHandler

logger = logging.getLogger(__name__)

HANDLER_MS_HEADER = "X-Handler-Ms"
METADATA_FILE = "packrat.json"


class RawTensorHandler(BaseHandler):  # type: ignore[misc]  # TorchServe ships no type hints
    def initialize(self, context: Any) -> None:
        properties = context.system_properties
        model_dir = properties.get("model_dir")
        serialized_file = context.manifest["model"]["serializedFile"]
        threads_before = torch.get_num_threads()
        torch.set_num_threads(int(os.environ.get("RAW_HANDLER_THREADS", os.cpu_count() or 1)))
        extra_files = {METADATA_FILE: ""}
        self.model = torch.jit.load(
            os.path.join(model_dir, serialized_file), map_location="cpu", _extra_files=extra_files
        )
        self.model.eval()
        spec = json.loads(extra_files[METADATA_FILE])["input_spec"]
        if spec["dtype"] != "float32":
            raise ValueError(f"this handler takes float32 inputs, the model takes {spec['dtype']}")
        self.shape = tuple(spec["shape"])
        self.device = torch.device("cpu")
        logger.info(
            "raw tensor handler: input %s float32; torch threads %d (OMP_NUM_THREADS=%s) -> %d",
            list(self.shape),
            threads_before,
            os.environ.get("OMP_NUM_THREADS"),
            torch.get_num_threads(),
        )
        self.initialized = True

    def preprocess(self, data: list[dict[str, Any]]) -> torch.Tensor:
        tensors = []
        for row in data:
            body = row.get("data") or row.get("body")
            if not isinstance(body, (bytes, bytearray)):
                raise ValueError(f"expected raw float32 bytes, got {type(body).__name__}")
            array = np.frombuffer(body, dtype=np.float32)  # a view: no copy
            tensors.append(torch.from_numpy(array).reshape(self.shape))
        # bytes bodies give read-only arrays; torch warns once but only reads them.
        return torch.stack(tensors)

    def inference(self, data: torch.Tensor, *args: Any, **kwargs: Any) -> torch.Tensor:
        with torch.inference_mode():
            return self.model(data)

    def postprocess(self, data: torch.Tensor) -> list[Any]:
        return data.tolist()  # type: ignore[no-any-return]

    def handle(self, data: list[dict[str, Any]], context: Any) -> list[Any]:
        started = time.perf_counter()
        output = self.postprocess(self.inference(self.preprocess(data)))
        handler_ms = (time.perf_counter() - started) * 1000.0
        for idx in range(len(data)):
            context.set_response_header(idx, HANDLER_MS_HEADER, f"{handler_ms:.4f}")
        return output
