"""Shared-memory arenas: bytes placed by one end are read by the other, growth, and fallbacks.

Each test makes the two ends of an arena as two processes would hold them: separate `Arena`
objects over duplicates of one memfd, each with its own mapping.
"""

from __future__ import annotations

import multiprocessing
import os
import pickle
from collections.abc import Iterator

import numpy as np
import pytest
import torch

from packrat.pool import tensor_pickle
from packrat.pool.arena import ALIGN_BYTES, GROW_STEP_BYTES, INITIAL_BYTES, Arena, ArenaPair
from packrat.pool.channel import Channel
from packrat.pool.messages import BatchDone, RunBatch

DTYPES = [
    torch.float32,
    torch.float64,
    torch.float16,
    torch.bfloat16,
    torch.int64,
    torch.int32,
    torch.int8,
    torch.uint8,
    torch.bool,
    torch.complex64,
]
SHAPES = [(1,), (3, 224, 224), (2, 3, 5), (7, 1, 1, 2)]


@pytest.fixture
def ends() -> Iterator[tuple[Arena, Arena]]:
    """(writer, reader): one arena as two processes see it."""
    writer = Arena.create("test")
    reader = Arena(os.dup(writer.fileno()))
    yield writer, reader
    writer.close()
    reader.close()


def _send(obj: object, writer: Arena, reader: Arena, *, copy: bool = False) -> object:
    return tensor_pickle.loads(tensor_pickle.dumps(obj, writer), reader, copy=copy)


# --- the arena ------------------------------------------------------------------------------


def test_placed_bytes_are_read_at_aligned_offsets(ends: tuple[Arena, Arena]) -> None:
    writer, reader = ends
    writer.reset()
    first = writer.place(memoryview(b"abc"))
    second = writer.place(memoryview(b"defgh"))
    assert first == 0 and second == ALIGN_BYTES
    assert bytes(reader.view(0, 3)) == b"abc" and bytes(reader.view(ALIGN_BYTES, 5)) == b"defgh"
    writer.reset()
    assert writer.place(memoryview(b"xyz")) == 0  # a new message reuses the arena
    assert bytes(reader.view(0, 3)) == b"xyz"


def test_arena_grows_in_steps_and_the_reader_follows(ends: tuple[Arena, Arena]) -> None:
    writer, reader = ends
    assert writer.mapped_bytes == reader.mapped_bytes == INITIAL_BYTES  # mapped from the start
    writer.reset()
    writer.place(memoryview(b"\x01" * INITIAL_BYTES))
    assert writer.mapped_bytes == INITIAL_BYTES
    writer.reset()
    writer.place(memoryview(b"\x01" * 10))
    early = reader.view(0, 10)  # a view of the first mapping
    big = np.arange(GROW_STEP_BYTES, dtype=np.uint8).tobytes() * 2
    offset = writer.place(memoryview(big))
    assert offset is not None and writer.mapped_bytes == 3 * GROW_STEP_BYTES
    assert bytes(reader.view(offset, len(big))) == big  # remapped to the larger file
    assert reader.mapped_bytes == 3 * GROW_STEP_BYTES
    assert bytes(early) == b"\x01" * 10  # the view of the old mapping still reads


def test_a_slice_past_the_end_is_refused(ends: tuple[Arena, Arena]) -> None:
    writer, reader = ends
    writer.reset()
    writer.place(memoryview(b"abc"))
    with pytest.raises(ValueError, match="past its end"):
        reader.view(GROW_STEP_BYTES - 2, 3)
    with pytest.raises(ValueError, match="bad arena slice"):
        reader.view(-1, 3)


def test_views_outlive_close(ends: tuple[Arena, Arena]) -> None:
    writer, reader = ends
    writer.reset()
    writer.place(memoryview(b"kept"))
    view = reader.view(0, 4)
    reader.close()
    reader.close()  # idempotent
    assert bytes(view) == b"kept"


def test_arenas_pass_only_to_spawned_children() -> None:
    arena = Arena.create("test")
    with pytest.raises(RuntimeError, match="inheritance"):
        pickle.dumps(arena)
    arena.close()


def test_the_peer_sees_the_arenas_crossed_and_keeps_views() -> None:
    pair = ArenaPair.create("test")
    peer = pair.peer()
    assert peer.outgoing is pair.incoming and peer.incoming is pair.outgoing
    assert pair.copy_incoming and not peer.copy_incoming
    pair.close()


# --- tensors and other objects through an arena ---------------------------------------------


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", SHAPES, ids=str)
def test_tensors_roundtrip_as_views_and_as_copies(
    ends: tuple[Arena, Arena], dtype: torch.dtype, shape: tuple[int, ...]
) -> None:
    writer, reader = ends
    tensor = (torch.arange(int(np.prod(shape))) % 7).reshape(shape).to(dtype)
    frame = tensor_pickle.dumps((tensor,), writer)
    assert len(frame) < 1024  # the bytes are in the arena, not in the frame
    for copy in (False, True):
        (back,) = tensor_pickle.loads(frame, reader, copy=copy)
        assert back.dtype == dtype and back.shape == tensor.shape
        assert torch.equal(back, tensor)


def test_views_share_the_arena_and_copies_do_not(ends: tuple[Arena, Arena]) -> None:
    writer, reader = ends
    frame = tensor_pickle.dumps(torch.zeros(4), writer)
    view = tensor_pickle.loads(frame, reader)
    copy = tensor_pickle.loads(frame, reader, copy=True)
    tensor_pickle.dumps(torch.ones(4), writer)  # the next message overwrites the arena
    assert torch.equal(view, torch.ones(4))
    assert torch.equal(copy, torch.zeros(4))
    copy.add_(1)  # private and writable
    view.add_(1)  # views are writable too (a handler may work in place)


def test_a_batch_of_requests_and_its_outputs_cross_a_channel() -> None:
    left, right = multiprocessing.Pipe(duplex=True)
    engine_arenas = ArenaPair.create("test")
    peer = engine_arenas.peer()
    worker_arenas = ArenaPair(
        Arena(os.dup(peer.outgoing.fileno())), Arena(os.dup(peer.incoming.fileno())), False
    )
    engine, worker = Channel(left, engine_arenas), Channel(right, worker_arenas)
    requests = tuple(torch.randn(3, 224, 224) for _ in range(8))
    engine.send(RunBatch(1, requests))
    command = worker.recv_command()
    assert isinstance(command, RunBatch)
    assert all(torch.equal(a, b) for a, b in zip(command.requests, requests, strict=True))
    outputs = tuple(r[0, 0, :1000].clone() for r in command.requests)
    worker.send(BatchDone(1, outputs, 0.5))
    reply = engine.recv_reply()
    assert isinstance(reply, BatchDone) and reply.compute_s == 0.5
    assert all(torch.equal(a, b) for a, b in zip(reply.outputs, outputs, strict=True))
    engine.close()
    worker.close()


def test_non_contiguous_tensors_arrive_equal_and_contiguous(ends: tuple[Arena, Arena]) -> None:
    writer, reader = ends
    tensor = torch.randn(5, 7).t()[1:, ::2]
    back = _send(tensor, writer, reader)
    assert isinstance(back, torch.Tensor)
    assert torch.equal(back, tensor) and back.is_contiguous()


@pytest.mark.parametrize(
    "tensor",
    [
        torch.zeros(3, requires_grad=True),
        torch.nn.Parameter(torch.ones(2)),
        torch.zeros(2, 2).to_sparse(),
        torch.quantize_per_tensor(torch.ones(3), 0.1, 0, torch.quint8),
        torch.zeros(0, 5),
    ],
    ids=["requires-grad", "parameter", "sparse", "quantized", "empty"],
)
def test_other_tensors_fall_back_and_keep_their_kind(
    ends: tuple[Arena, Arena], tensor: torch.Tensor
) -> None:
    writer, reader = ends
    back = _send(tensor, writer, reader, copy=True)
    assert isinstance(back, torch.Tensor) and type(back) is type(tensor)
    assert back.requires_grad == tensor.requires_grad and back.shape == tensor.shape
    assert back.layout == tensor.layout and back.is_quantized == tensor.is_quantized


def test_plain_objects_and_numpy_arrays_roundtrip(ends: tuple[Arena, Arena]) -> None:
    writer, reader = ends
    value = {
        "array": np.arange(1000.0),
        "empty": np.zeros((0, 3), dtype=np.int16),
        "items": (1, "two", 3.0, None),
        "bytes": b"\x00" * 9,
    }
    frame = tensor_pickle.dumps(value, writer)
    assert len(frame) < 1000  # the contiguous array went out of band, into the arena
    back = tensor_pickle.loads(frame, reader, copy=True)
    assert isinstance(back, dict)
    assert np.array_equal(back["array"], value["array"])
    assert back["empty"].shape == (0, 3) and back["empty"].dtype == np.int16
    assert back["items"] == value["items"] and back["bytes"] == value["bytes"]


class _FullArena(Arena):
    """An arena that can never grow: every buffer must fall back into the frame."""

    def place(self, data: memoryview) -> int | None:
        return None


def test_buffers_an_arena_cannot_take_stay_in_the_frame(ends: tuple[Arena, Arena]) -> None:
    _, reader = ends
    full = _FullArena(os.dup(reader.fileno()))
    tensor = torch.randn(1000)
    frame = tensor_pickle.dumps(tensor, full)
    assert len(frame) > tensor.numel() * 4
    back = tensor_pickle.loads(frame, reader)
    assert isinstance(back, torch.Tensor) and torch.equal(back, tensor)
    full.close()


def test_a_frame_pointing_past_the_arena_is_refused(ends: tuple[Arena, Arena]) -> None:
    writer, reader = ends
    frame = bytearray(tensor_pickle.dumps(torch.zeros(4), writer))
    frame[4:12] = (1 << 40).to_bytes(8, "little")  # the first buffer's offset
    with pytest.raises(ValueError, match="past its end"):
        tensor_pickle.loads(bytes(frame), reader)
