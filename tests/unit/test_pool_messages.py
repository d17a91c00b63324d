"""Typed pool messages: validation on construction and the pickle channel between processes."""

from __future__ import annotations

import math
import multiprocessing
import pickle

import pytest

from packrat.models.base import ModelIdentity
from packrat.pool.channel import Channel, ProtocolError
from packrat.pool.messages import (
    BatchDone,
    BatchFailed,
    Describe,
    FailurePhase,
    Measure,
    Measured,
    Ready,
    RunBatch,
    Stop,
    WorkerFailed,
    WorkerInfo,
    WorkerSpec,
)
from packrat.stats import SamplingPolicy


class _Source:
    name = "x"

    def identity(self) -> ModelIdentity:
        return ModelIdentity("x", "0")


def _spec(**overrides: object) -> WorkerSpec:
    fields: dict[str, object] = {
        "index": 0,
        "threads": 2,
        "cores": (0, 1),
        "source": _Source(),
        "weights_path": None,
        "parent_pid": 1,
    }
    fields.update(overrides)
    return WorkerSpec(**fields)  # type: ignore[arg-type]


def test_worker_spec_accepts_a_valid_spec() -> None:
    assert _spec().cores == (0, 1)


@pytest.mark.parametrize(
    ("field", "value"),
    [("index", -1), ("threads", 0), ("cores", ()), ("cores", (-1,)), ("parent_pid", 0)],
)
def test_worker_spec_rejects_bad_fields(field: str, value: object) -> None:
    with pytest.raises(ValueError, match=field):
        _spec(**{field: value})


def test_command_validation() -> None:
    with pytest.raises(ValueError, match="batch_id"):
        RunBatch(-1, (1,))
    with pytest.raises(ValueError, match="requests"):
        RunBatch(0, ())
    with pytest.raises(ValueError, match="batch_size"):
        Measure(0, SamplingPolicy())


def test_reply_validation() -> None:
    with pytest.raises(ValueError, match="pid"):
        Ready(pid=0, threads=1, cores=(0,), load_s=0.1)
    with pytest.raises(ValueError, match="threads"):
        Ready(pid=1, threads=0, cores=(0,), load_s=0.1)
    with pytest.raises(ValueError, match="load_s"):
        Ready(pid=1, threads=1, cores=(0,), load_s=-1.0)
    with pytest.raises(ValueError, match="shared_bytes"):
        Ready(pid=1, threads=1, cores=(0,), load_s=0.0, shared_bytes=-1)
    with pytest.raises(ValueError, match="samples_ms"):
        Measured((1.0, -0.5))
    with pytest.raises(ValueError, match="samples_ms"):
        Measured((math.nan,))


@pytest.mark.parametrize(
    "message",
    [
        RunBatch(3, (1.0, 2.0)),
        Measure(4, SamplingPolicy(min_runs=3)),
        Describe(),
        Stop(),
        Ready(pid=10, threads=2, cores=(0, 1), load_s=1.5, shared_bytes=64),
        WorkerFailed(FailurePhase.LOAD, "ModelError", "no such model"),
        BatchDone(3, (2.0, 4.0)),
        BatchFailed(3, "ValueError", "bad"),
        WorkerInfo(pid=10, threads=2, interop_threads=1, affinity_by_thread={10: frozenset({0})}),
    ],
)
def test_messages_survive_pickling(message: object) -> None:
    assert pickle.loads(pickle.dumps(message)) == message


def test_channel_carries_commands_and_replies_in_order() -> None:
    left, right = multiprocessing.Pipe(duplex=True)
    engine_end, worker_end = Channel(left), Channel(right)
    engine_end.send(RunBatch(0, (1.0,)))
    engine_end.send(Stop())
    assert worker_end.recv_command() == RunBatch(0, (1.0,))
    assert worker_end.recv_command() == Stop()
    worker_end.send(BatchDone(0, (2.0,)))
    assert engine_end.poll()
    assert engine_end.recv_reply() == BatchDone(0, (2.0,))


def test_channel_rejects_messages_of_the_wrong_direction() -> None:
    left, right = multiprocessing.Pipe(duplex=True)
    Channel(left).send(Stop())
    with pytest.raises(ProtocolError, match="expected a reply, got Stop"):
        Channel(right).recv_reply()


def test_channel_stays_in_step_after_an_undecodable_frame() -> None:
    left, right = multiprocessing.Pipe(duplex=True)
    left.send_bytes(b"not a pickle")
    Channel(left).send(Describe())
    channel = Channel(right)
    with pytest.raises(ProtocolError, match="cannot decode"):
        channel.recv_command()
    assert channel.recv_command() == Describe()


def test_channel_reports_a_closed_peer_as_eof() -> None:
    left, right = multiprocessing.Pipe(duplex=True)
    left.close()
    with pytest.raises(EOFError):
        Channel(right).recv_command()


def test_unpicklable_message_writes_nothing() -> None:
    left, right = multiprocessing.Pipe(duplex=True)
    channel = Channel(left)
    with pytest.raises((pickle.PicklingError, AttributeError, TypeError)):
        channel.send(BatchDone(0, (lambda: None,)))
    assert not right.poll()
