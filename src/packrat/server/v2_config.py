"""Triton's model configuration extension: `GET /v2/models/{m}[/versions/{v}]/config`.

Answers the JSON of Triton's `ModelConfig` message (model_config.proto) for a served model,
so Triton's tools that read it before they start (perf_analyzer, Model Analyzer) work:

- `max_batch_size`: the model's batching limit (`--max-batch-size`); > 0, since a v2 infer
  request of shape [n, *shape] is n requests. `input`/`output` `dims` exclude that batch
  dimension, as Triton's do when max_batch_size > 0.
- `input`: the model's input spec ("input0", as in the model metadata).
- `output`: what the model returns, learned from one example request the first time the
  model's metadata or configuration is read (`OutputProbe`); until that succeeds (a model
  without an input spec, or not ready yet), the placeholder "output0" FP32 of dims [-1].
- `dynamic_batching.max_queue_delay_microseconds`: Packrat's `--max-batch-delay`.
- `instance_group`: one KIND_CPU group whose count is the current plan's instances. Packrat's
  plan decides them, not this configuration, and a policy may change them with the load;
  `parameters` says so and gives the plan and backend.

Only reading is served: Triton's model control (load with a configuration) is not.
"""

from __future__ import annotations

import asyncio
import weakref
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from fastapi import APIRouter

from packrat.server import output_codecs
from packrat.server.api import ModelRepository, ServedModel
from packrat.server.errors import ServerError
from packrat.server.responses import ERROR_RESPONSES

EXTENSION = "model_configuration"
INPUT_NAME = "input0"
_DATATYPES = {
    "float64": "FP64",
    "float32": "FP32",
    "float16": "FP16",
    "bfloat16": "BF16",
    "int64": "INT64",
    "int32": "INT32",
    "int16": "INT16",
    "int8": "INT8",
    "uint8": "UINT8",
    "bool": "BOOL",
}
INSTANCE_NOTE = (
    "instance_group count is the current plan's instances: Packrat's plan decides how many "
    "instances run and with how many threads, and its policy may change them with the load"
)


@dataclass(frozen=True)
class TensorLayout:
    """One tensor of a request, without the batch dimension.

    datatype: the protocol's name ("FP32"); dims: per-request dimensions (-1: unknown).
    """

    name: str
    datatype: str
    dims: tuple[int, ...]

    def metadata(self) -> dict[str, Any]:
        """As the v2 model metadata lists it: shape with a leading -1 for the batch."""
        return {"name": self.name, "datatype": self.datatype, "shape": [-1, *self.dims]}


PLACEHOLDER_OUTPUT = TensorLayout("output0", "FP32", (-1,))
"""What is said of a model's output before it has answered an example request."""


class OutputProbe:
    """The outputs each served model returns, learned once from one example request.

    A served model declares its input but not its output; Triton's clients read both from
    the metadata and the configuration, and perf_analyzer asks for the outputs by name. So
    the first time a model's outputs are needed, one example request (from its input spec)
    goes through the model like any other, and what comes back is kept for as long as that
    model object is served. Concurrent askers share the one probe.
    """

    def __init__(self) -> None:
        self._found: weakref.WeakKeyDictionary[Any, tuple[TensorLayout, ...]] = (
            weakref.WeakKeyDictionary()
        )
        self._locks: weakref.WeakKeyDictionary[Any, asyncio.Lock] = weakref.WeakKeyDictionary()

    async def outputs(self, model: ServedModel) -> tuple[TensorLayout, ...]:
        """The model's outputs; the placeholder while they cannot be learned (no input
        spec, or the model is not ready or refused the example request: asked again next
        time)."""
        found = self._found.get(model)
        if found is not None:
            return found
        spec = model.input_spec
        if spec is None or not model.ready:
            return (PLACEHOLDER_OUTPUT,)
        lock = self._locks.setdefault(model, asyncio.Lock())
        async with lock:
            found = self._found.get(model)
            if found is None:
                try:
                    answer = await model.infer(spec.example_requests(1)[0])
                    stacked = output_codecs.stack_outputs([answer])
                except ServerError:
                    return (PLACEHOLDER_OUTPUT,)
                found = tuple(
                    TensorLayout(
                        name,
                        _DATATYPES.get(output_codecs.dtype_name(tensor), "FP32"),
                        tuple(tensor.shape[1:]),
                    )
                    for name, tensor in stacked.items()
                )
                self._found[model] = found
        return found


def input_layout(model: ServedModel) -> TensorLayout | None:
    """The model's one input as the protocol names it, or None without an input spec."""
    spec = model.input_spec
    if spec is None:
        return None
    return TensorLayout(INPUT_NAME, _DATATYPES[spec.dtype], tuple(spec.shape))


def model_config(model: ServedModel, outputs: tuple[TensorLayout, ...]) -> dict[str, Any]:
    """Triton's `ModelConfig` JSON for `model` returning `outputs`."""
    described = model.describe()
    plan: Mapping[str, Any] = described.get("plan") or {}
    batching: Mapping[str, Any] = described.get("batching") or {}
    backend: Mapping[str, Any] = described.get("backend") or {}
    instances = described.get("instances") or []
    max_batch_size = int(batching.get("max_batch_size") or plan.get("batch") or 1)
    delay_ms = float(batching.get("max_batch_delay_ms") or 0.0)
    layout = input_layout(model)
    parameters = {"packrat_instance_group": INSTANCE_NOTE}
    if plan.get("describe"):
        batch = f" for batch {plan['batch']}" if plan.get("batch") else ""
        parameters["packrat_plan"] = f"{plan['describe']}{batch}"
    if backend.get("precision"):
        parameters["packrat_precision"] = str(backend["precision"])
    return {
        "name": model.name,
        "platform": "packrat",
        "backend": str(backend.get("backend") or "packrat"),
        "max_batch_size": max_batch_size,
        "input": [] if layout is None else [_config_input(layout)],
        "output": [_config_output(output) for output in outputs],
        "batch_input": [],
        "batch_output": [],
        "dynamic_batching": {
            "preferred_batch_size": [],
            "max_queue_delay_microseconds": round(delay_ms * 1000),
            "preserve_ordering": False,
        },
        "instance_group": [
            {
                "name": model.name,
                "kind": "KIND_CPU",
                "count": len(instances),
                "gpus": [],
                "secondary_devices": [],
                "profile": [],
                "passive": False,
                "host_policy": "",
            }
        ],
        "parameters": {key: {"string_value": value} for key, value in parameters.items()},
    }


def _dims(layout: TensorLayout) -> dict[str, Any]:
    # Triton wants at least one dimension; a per-request scalar is [1] reshaped to [].
    if layout.dims:
        return {"dims": list(layout.dims)}
    return {"dims": [1], "reshape": {"shape": []}}


def _config_input(layout: TensorLayout) -> dict[str, Any]:
    return {
        "name": layout.name,
        "data_type": f"TYPE_{layout.datatype}",
        "format": "FORMAT_NONE",
        **_dims(layout),
        "is_shape_tensor": False,
        "allow_ragged_batch": False,
        "optional": False,
    }


def _config_output(layout: TensorLayout) -> dict[str, Any]:
    return {
        "name": layout.name,
        "data_type": f"TYPE_{layout.datatype}",
        **_dims(layout),
        "label_filename": "",
        "is_shape_tensor": False,
    }


def create_config_router(repo: ModelRepository, probe: OutputProbe) -> APIRouter:
    """The model configuration routes over `repo` (mounted under /v2 by the v2 router)."""
    router = APIRouter(responses=ERROR_RESPONSES)

    @router.get("/models/{model_name}/config", summary="Model configuration (Triton's)")
    async def config(model_name: str) -> dict[str, Any]:
        model = repo.get(model_name)
        return model_config(model, await probe.outputs(model))

    @router.get(
        "/models/{model_name}/versions/{version}/config",
        summary="Model version configuration (Triton's)",
    )
    async def version_config(model_name: str, version: str) -> dict[str, Any]:
        model = repo.get(model_name, version)
        return model_config(model, await probe.outputs(model))

    return router
