"""A channel's poll: says whether a frame or the end of the pipe can be read without blocking."""

from __future__ import annotations

import multiprocessing

import pytest

from packrat.pool.channel import Channel
from packrat.pool.messages import BatchDone, Describe


def test_poll_is_true_exactly_while_a_reply_or_the_end_waits() -> None:
    left, right = multiprocessing.Pipe(duplex=True)
    engine, worker = Channel(left), Channel(right)
    assert not engine.poll()
    worker.send(BatchDone(3, (1.5,), 0.25))
    assert engine.poll() and engine.poll()  # polling reads nothing
    assert engine.recv_reply() == BatchDone(3, (1.5,), 0.25)
    assert not engine.poll()
    engine.send(Describe())
    assert worker.poll() and isinstance(worker.recv_command(), Describe)
    worker.close()
    assert engine.poll()  # the end of the pipe: the read that follows raises EOFError
    with pytest.raises(EOFError):
        engine.recv_reply()
    engine.close()
    with pytest.raises(OSError):
        engine.poll()
