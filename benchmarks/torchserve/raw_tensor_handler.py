"""TorchServe handler for the benchmarks against TorchServe: raw tensor bytes in, JSON out.

Mirrors what a Packrat worker does for a raw (`application/octet-stream`) request, so the two
servers run the same work per request:

- initialize: `torch.jit.load` the archive's serialized file on the CPU in eval mode; read the
  per-request input shape and dtype from the `packrat.json` extra file that `packrat export`
  stores; set torch's intra-op threads to RAW_HANDLER_THREADS, else every core (torch's own
  default, and what Packrat's fat instance runs). TorchServe itself leaves the worker at
  OMP_NUM_THREADS if set, else at torch's default.
- preprocess: each request's body (a bytearray) is wrapped with `np.frombuffer` and
  `torch.from_numpy` (no copy), reshaped to the model's shape; the requests are stacked.
- inference: the module under `torch.inference_mode()`; a tuple or dict output gives its first
  tensor (as Packrat's TensorHandler).
- postprocess: one JSON value per request: nested lists (`tolist()`, TorchServe's convention;
  its worker then runs `json.dumps`), or with RAW_HANDLER_JSON=orjson the JSON bytes that
  orjson writes from the numpy row, which is what Packrat's server sends.

Its own time, preprocess + inference + postprocess (what runs inside a Packrat worker), is sent
back per request in the `X-Handler-Ms` response header and as `Server-Timing: compute;dur=MS`
(the header Packrat sends, which the load generator records), so the benchmarks can tell the
model's time from the server's.
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
DTYPES = ("float32", "float64", "int64", "int32")


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
        if spec["dtype"] not in DTYPES:
            raise ValueError(f"this handler takes {', '.join(DTYPES)}, not {spec['dtype']}")
        self.shape = tuple(spec["shape"])
        self.dtype = np.dtype(spec["dtype"]).newbyteorder("<")
        self.encoder = os.environ.get("RAW_HANDLER_JSON", "tolist")
        if self.encoder == "orjson":
            import orjson

            self.orjson = orjson
        self.device = torch.device("cpu")
        logger.info(
            "raw tensor handler: input %s %s; torch threads %d (OMP_NUM_THREADS=%s) -> %d; "
            "JSON by %s; pid %d",
            list(self.shape),
            spec["dtype"],
            threads_before,
            os.environ.get("OMP_NUM_THREADS"),
            torch.get_num_threads(),
            self.encoder,
            os.getpid(),
        )
        self.initialized = True

    def preprocess(self, data: list[dict[str, Any]]) -> torch.Tensor:
        tensors = []
        for row in data:
            body = row.get("data") or row.get("body")
            if not isinstance(body, (bytes, bytearray)):
                raise ValueError(f"expected raw tensor bytes, got {type(body).__name__}")
            array = np.frombuffer(body, dtype=self.dtype)  # a view: no copy
            tensors.append(torch.from_numpy(array).reshape(self.shape))
        # bytes bodies give read-only arrays; torch warns once but only reads them.
        return torch.stack(tensors)

    def inference(self, data: torch.Tensor, *args: Any, **kwargs: Any) -> torch.Tensor:
        with torch.inference_mode():
            output = self.model(data)
        if isinstance(output, dict):
            output = next(iter(output.values()))
        if isinstance(output, (tuple, list)):
            output = output[0]
        return output  # type: ignore[no-any-return]

    def postprocess(self, data: torch.Tensor) -> list[Any]:
        if self.encoder == "orjson":
            option = self.orjson.OPT_SERIALIZE_NUMPY
            return [self.orjson.dumps(row, option=option) for row in data.numpy()]
        return data.tolist()  # type: ignore[no-any-return]

    def handle(self, data: list[dict[str, Any]], context: Any) -> list[Any]:
        started = time.perf_counter()
        output = self.postprocess(self.inference(self.preprocess(data)))
        handler_ms = (time.perf_counter() - started) * 1000.0
        for idx in range(len(data)):
            context.set_response_header(idx, HANDLER_MS_HEADER, f"{handler_ms:.4f}")
            context.set_response_header(idx, "Server-Timing", f"compute;dur={handler_ms:.4f}")
            if self.encoder == "orjson":
                context.set_response_content_type(idx, "application/json")
        return output
