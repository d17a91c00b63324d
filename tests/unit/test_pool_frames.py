"""Frames on a pipe: exact payloads, in order, compatible with multiprocessing's framing."""

from __future__ import annotations

import multiprocessing
import os
import threading

import pytest
from hypothesis import given
from hypothesis import strategies as st

from packrat.pool.frames import FrameReader, write_frame


@given(st.lists(st.binary(max_size=3000), max_size=8))
def test_frames_arrive_whole_and_in_order(payloads: list[bytes]) -> None:
    left, right = multiprocessing.Pipe(duplex=True)
    with left, right:
        for payload in payloads:
            write_frame(left.fileno(), payload)
        reader = FrameReader(right.fileno())
        assert [bytes(reader.read()) for _ in payloads] == payloads


def test_a_frame_larger_than_the_socket_buffer_is_written_and_read_whole() -> None:
    payload = os.urandom(3 * 1024 * 1024)  # more than the default socket buffers hold
    left, right = multiprocessing.Pipe(duplex=True)
    with left, right:
        writer = threading.Thread(target=write_frame, args=(left.fileno(), payload))
        writer.start()
        got = bytes(FrameReader(right.fileno()).read())
        writer.join()
    assert got == payload


def test_framing_matches_multiprocessing_connections() -> None:
    left, right = multiprocessing.Pipe(duplex=True)
    with left, right:
        write_frame(left.fileno(), b"to a Connection")
        assert right.recv_bytes() == b"to a Connection"
        right.send_bytes(b"from a Connection" * 2000)
        assert bytes(FrameReader(left.fileno()).read()) == b"from a Connection" * 2000


def test_eof_before_or_inside_a_frame_raises_eoferror() -> None:
    left, right = multiprocessing.Pipe(duplex=True)
    reader = FrameReader(right.fileno())
    os.write(left.fileno(), (100).to_bytes(4, "big") + b"only part")
    left.close()
    with right, pytest.raises(EOFError):
        reader.read()
    left, right = multiprocessing.Pipe(duplex=True)
    left.close()
    with right, pytest.raises(EOFError):
        FrameReader(right.fileno()).read()


def test_writing_to_a_closed_pipe_raises_oserror() -> None:
    left, right = multiprocessing.Pipe(duplex=True)
    right.close()
    with left, pytest.raises(OSError):
        write_frame(left.fileno(), b"x" * 100_000)
