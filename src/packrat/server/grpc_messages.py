"""The Open Inference Protocol's gRPC messages to requests and back, without gRPC itself.

`parse_infer` turns a `ModelInferRequest` into the requests it holds; the input tensor comes
as `raw_input_contents` (little-endian C-order bytes, what Triton's clients send) or as typed
`contents` (`fp32_contents`, `int64_contents`, ...; FP16 and BF16 have no typed form, as the
protocol says). `infer_response` returns outputs as `raw_output_contents`, as Triton does.
The checks and the split into requests are `packrat.server.oip`'s, shared with the HTTP
routes, so a mistake gets the same message over either; every one raises BadRequest.

Pure functions over protobuf messages: tested without a server, and importing this module
does not import grpc.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from packrat.models.inputs import InputSpec
from packrat.server import oip, output_codecs
from packrat.server.api import ServedModel
from packrat.server.errors import BadRequest
from packrat.server.grpc_v2 import grpc_predict_v2_pb2 as pb

if TYPE_CHECKING:
    import torch

#: torch dtype name -> the field of InferTensorContents that holds its values.
CONTENTS_FIELDS = {
    "float64": "fp64_contents",
    "float32": "fp32_contents",
    "int64": "int64_contents",
    "int32": "int_contents",
    "int16": "int_contents",
    "int8": "int_contents",
    "uint8": "uint_contents",
}


@dataclass(frozen=True)
class InferBatch:
    """A parsed infer request: its id ("" if none), its requests, the outputs it asks for
    (None: all)."""

    id: str
    rows: list[torch.Tensor]
    outputs: list[str] | None


def parse_infer(request: pb.ModelInferRequest, spec: InputSpec | None, max_rows: int) -> InferBatch:
    """The requests in `request` (one per row of its input), at most `max_rows` of them,
    checked against the model's input `spec`."""
    if len(request.inputs) != 1:
        names = [tensor.name for tensor in request.inputs]
        raise BadRequest(f"the model takes one input tensor, got {len(names)}: {names}")
    tensor = request.inputs[0]
    shape = list(tensor.shape)
    oip.check_batch_size(shape, max_rows)
    dtype, dims = oip.check_input(tensor.name, tensor.datatype, shape, spec)
    raw = request.raw_input_contents
    if raw:
        if len(raw) != 1:
            raise BadRequest(
                f"raw_input_contents holds {len(raw)} tensors; the request has 1 input"
            )
        if tensor.HasField("contents"):
            raise BadRequest(
                f"input {tensor.name!r} has both contents and raw_input_contents; send one"
            )
        rows = oip.rows_from_bytes(tensor.name, tensor.datatype, memoryview(raw[0]), dims, spec)
    else:
        values = _typed_values(tensor, dtype)
        rows = oip.rows_from_values(values, dims, dtype, spec)
    wanted = list(dict.fromkeys(output.name for output in request.outputs))
    return InferBatch(request.id, rows, wanted or None)


def _typed_values(tensor: pb.ModelInferRequest.InferInputTensor, dtype: str) -> list[Any]:
    """The flat values of an input sent as typed contents, from the field its datatype
    uses; BadRequest if they are elsewhere, or absent."""
    field = CONTENTS_FIELDS.get(dtype)
    if field is None:
        raise BadRequest(
            f"input {tensor.name!r} is {tensor.datatype}, which has no typed contents: "
            "send it in raw_input_contents"
        )
    present = [descriptor.name for descriptor, _ in tensor.contents.ListFields()]
    if present != [field]:
        found = ", ".join(present) if present else "nothing"
        raise BadRequest(
            f"input {tensor.name!r} is {tensor.datatype}: send its values in "
            f"contents.{field} or raw_input_contents (found {found})"
        )
    return list(getattr(tensor.contents, field))


def infer_response(
    model: ServedModel, batch: InferBatch, stacked: dict[str, torch.Tensor]
) -> pb.ModelInferResponse:
    """The outputs `batch` asks for, each as raw little-endian bytes in `raw_output_contents`
    (in the order of `outputs`); BadRequest for an output the model does not return."""
    response = pb.ModelInferResponse(
        model_name=model.name, model_version=model.version, id=batch.id
    )
    for name, tensor in oip.select_outputs(stacked, batch.outputs).items():
        response.outputs.add(
            name=name, datatype=oip.output_datatype(tensor), shape=list(tensor.shape)
        )
        response.raw_output_contents.append(output_codecs.tensor_bytes(tensor))
    return response


def server_metadata() -> pb.ServerMetadataResponse:
    """Name and version; no protocol extension is served over gRPC."""
    return pb.ServerMetadataResponse(**oip.server_metadata([]))


def model_metadata(metadata: dict[str, Any]) -> pb.ModelMetadataResponse:
    """`oip.model_metadata`'s answer as a message."""
    tensors = pb.ModelMetadataResponse.TensorMetadata
    return pb.ModelMetadataResponse(
        name=metadata["name"],
        versions=metadata["versions"],
        platform=metadata["platform"],
        inputs=[tensors(**entry) for entry in metadata["inputs"]],
        outputs=[tensors(**entry) for entry in metadata["outputs"]],
    )
