"""Pickling for the worker pipes that moves plain CPU tensors as raw bytes.

Standard pickle reduces a tensor through `torch.save` into an in-memory archive and back through
`torch.load`: about 90 µs per tensor each way, even for a 12 KB image, which is most of a batch-1
request's IPC cost. Here a dense, contiguous-able CPU tensor that needs no autograd is written
as its dtype, shape and raw bytes (one copy into the frame, protocol 5) and rebuilt over the
received bytearray (no further copy): about 10 µs each way. Tensors of a dtype numpy has go
through their numpy view and come back with `torch.from_numpy` (fewer calls into torch, which
cost most when caches are cold); others (bfloat16) through torch's own byte view.
Everything else (parameters, tensors that require grad, quantized, sparse or non-CPU tensors,
subclasses) keeps torch's own reduction.

Given an arena (`packrat.pool.arena`), the raw bytes go there instead of into the frame: every
buffer pickle protocol 5 can send out of band (those tensors' bytes, contiguous numpy arrays)
is copied into the arena once, and the frame carries a table of (offset, size) before the
pickle. The receiver decodes the pickle over views of the arena (`copy=False`) or over private
copies (`copy=True`). A buffer the arena cannot take stays in the frame.

No torch import here at module import time: the worker imports this before it pins itself and
sizes the thread pools; a process that never imported torch holds no tensor to reduce.
"""

from __future__ import annotations

import functools
import io
import pickle
import struct
import sys
from typing import Any

from packrat.pool.arena import Arena

_COUNT = struct.Struct("<I")
_SLICE = struct.Struct("<QQ")  # offset, size


def dumps(obj: object, arena: Arena | None = None) -> bytes:
    """`obj` pickled (protocol 5), with plain CPU tensors as raw bytes; with an `arena`, the
    frame for `loads(frame, arena)` on the other end, their bytes placed in the arena (which
    is reset first: a message overwrites the previous one's)."""
    buffer = io.BytesIO()
    if arena is None:
        _TensorPickler(buffer, protocol=5).dump(obj)
        return buffer.getvalue()
    arena.reset()
    slices: list[tuple[int, int]] = []

    def place(pickle_buffer: pickle.PickleBuffer) -> bool:
        with pickle_buffer.raw() as data:
            offset = arena.place(data)
            if offset is None:
                return True  # in band: the bytes go into the frame after all
            slices.append((offset, data.nbytes))
            return False

    _TensorPickler(buffer, protocol=5, buffer_callback=place).dump(obj)
    header = _COUNT.pack(len(slices)) + b"".join(_SLICE.pack(*s) for s in slices)
    return header + buffer.getvalue()


def loads(frame: bytes | memoryview, arena: Arena | None = None, *, copy: bool = False) -> Any:
    """The object `dumps(obj, arena)` pickled into `frame`.

    With an arena, its buffers are views of the arena (valid until the sender's next message)
    or, with `copy`, private writable copies. Raises ValueError for a table pointing outside
    the arena, and whatever unpickling raises for a corrupt frame.
    """
    if arena is None:
        return pickle.loads(frame)
    view = memoryview(frame)
    (count,) = _COUNT.unpack_from(view)
    start = _COUNT.size + count * _SLICE.size
    buffers: list[bytearray | memoryview] = []
    for position in range(_COUNT.size, start, _SLICE.size):
        offset, size = _SLICE.unpack_from(view, position)
        data = arena.view(offset, size)
        buffers.append(bytearray(data) if copy else data)
    return pickle.loads(view[start:], buffers=buffers)


def rebuild_tensor(data: bytearray | memoryview, dtype: str, shape: tuple[int, ...]) -> Any:
    """The tensor of `shape` and `dtype` (a torch dtype name) over `data`, without a copy."""
    import torch

    torch_dtype = getattr(torch, dtype)
    if not data:
        return torch.empty(shape, dtype=torch_dtype)
    return torch.frombuffer(data, dtype=torch_dtype).reshape(shape)


class _TensorPickler(pickle.Pickler):
    def reducer_override(self, obj: Any) -> Any:
        torch = sys.modules.get("torch")
        if torch is None or type(obj) is not torch.Tensor:
            return NotImplemented
        if obj.dtype in _numpy_dtypes(torch):
            return _reduce_as_array(obj)
        if (
            obj.layout is not torch.strided
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


def rebuild_from_array(data: bytearray | memoryview, dtype: str, shape: tuple[int, ...]) -> Any:
    """The tensor of `shape` and numpy `dtype` (e.g. "<f4") over `data`, without a copy."""
    import numpy as np
    import torch

    return torch.from_numpy(np.frombuffer(data, dtype=dtype).reshape(shape))


def _reduce_as_array(tensor: Any) -> Any:
    """A CPU tensor of a dtype numpy has, reduced through its numpy view: on a batch's path
    every step runs with cold caches, and one `numpy()` then numpy's own calls cost a third
    less than torch's dispatcher over the same steps, on both ends (NotImplemented: torch's
    own reduction, for a tensor that `numpy()` refuses: requires grad, not on the CPU,
    sparse, conjugated)."""
    import numpy as np

    try:
        array = tensor.numpy()
    except (RuntimeError, TypeError):
        return NotImplemented
    if not array.flags.c_contiguous:
        array = np.ascontiguousarray(array)
    raw = pickle.PickleBuffer(array.reshape(-1).view(np.uint8))
    return rebuild_from_array, (raw, array.dtype.str, array.shape)


@functools.cache
def _numpy_dtypes(torch: Any) -> frozenset[Any]:
    """torch's dtypes that numpy has too (not bfloat16, quantized or bit types)."""
    names = ("float64", "float32", "float16", "complex64", "complex128", "int64", "int32",
             "int16", "int8", "uint8", "bool")  # fmt: skip
    return frozenset(getattr(torch, name) for name in names)
