"""Pickling for the worker pipes that moves plain CPU tensors as raw bytes.

Standard pickle reduces a tensor through `torch.save` into an in-memory archive and back through
`torch.load`: about 90 µs per tensor each way, even for a 12 KB image, which is most of a batch-1
request's IPC cost. Here a dense, contiguous-able CPU tensor that needs no autograd is written
as its dtype, shape and raw bytes (one copy into the frame, protocol 5) and rebuilt with
`torch.frombuffer` over the received bytearray (no further copy): about 10 µs each way.
Everything else (parameters, tensors that require grad, quantized, sparse or non-CPU tensors,
subclasses) keeps torch's own reduction.

No torch import here at module import time: the worker imports this before it pins itself and
sizes the thread pools; a process that never imported torch holds no tensor to reduce.
"""

from __future__ import annotations

import io
import pickle
import sys
from typing import Any


def dumps(obj: object) -> bytes:
    """`obj` pickled (protocol 5), with plain CPU tensors as raw bytes."""
    buffer = io.BytesIO()
    _TensorPickler(buffer, protocol=5).dump(obj)
    return buffer.getvalue()


def rebuild_tensor(data: bytearray, dtype: str, shape: tuple[int, ...]) -> Any:
    """The tensor of `shape` and `dtype` (a torch dtype name) over `data`, without a copy."""
    import torch

    torch_dtype = getattr(torch, dtype)
    if not data:
        return torch.empty(shape, dtype=torch_dtype)
    return torch.frombuffer(data, dtype=torch_dtype).reshape(shape)


class _TensorPickler(pickle.Pickler):
    def reducer_override(self, obj: Any) -> Any:
        torch = sys.modules.get("torch")
        if (
            torch is None
            or type(obj) is not torch.Tensor
            or obj.layout is not torch.strided
            or obj.device.type != "cpu"
            or obj.requires_grad
            or obj.is_quantized
        ):
            return NotImplemented
        tensor = obj.contiguous()
        dtype = str(tensor.dtype).removeprefix("torch.")
        shape = tuple(tensor.shape)
        if tensor.numel() == 0:
            return rebuild_tensor, (bytearray(), dtype, shape)
        raw = tensor.reshape(-1).view(torch.uint8).numpy()
        # Writable, so it arrives as a bytearray: the rebuilt tensor is writable too.
        return rebuild_tensor, (pickle.PickleBuffer(raw), dtype, shape)
