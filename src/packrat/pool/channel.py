"""Typed messages over one end of a `multiprocessing` pipe.

Messages are encoded with pickle (`packrat.pool.tensor_pickle`: plain CPU tensors as raw bytes),
not `Connection.send`'s ForkingPickler: once torch is imported, ForkingPickler moves tensors
through shared-memory file descriptors that the sender must keep alive until the receiver has
opened them, which breaks when a worker dies mid-reply and leaks descriptors under load.

With an `ArenaPair`, the bytes of tensors and arrays go through shared memory all the same,
but through two files per pipe made once, inherited at spawn and reused by every message
(`packrat.pool.arena`): the frame carries only where the bytes are, nothing is opened per
message, and a dead peer leaves nothing to clean up. Both ends of a pipe must agree: the
engine gives a worker the other end of its pair at spawn. Without one, tensor bytes are
copied into the pipe.

Each message is one frame (`packrat.pool.frames`, the framing of `Connection.send_bytes`), so a
frame that fails to decode has still been consumed whole: the pipe stays in step and the
caller may treat it as a failed reply.
"""

from __future__ import annotations

import pickle
import select
from multiprocessing.connection import Connection

from packrat.pool import tensor_pickle
from packrat.pool.arena import ArenaPair
from packrat.pool.frames import FrameReader, write_frame
from packrat.pool.messages import COMMAND_TYPES, REPLY_TYPES, Command, Reply


class ProtocolError(Exception):
    """A frame could not be decoded, or held a message of the wrong direction."""


class Channel:
    """One end of a duplex pipe carrying typed messages.

    `send` and `recv_*` block. `recv_*` raise EOFError once the peer has closed its end or died,
    and ProtocolError for a frame that is not a message of the expected direction.
    Use `connection` with `multiprocessing.connection.wait` to wait on many channels at once.
    The channel owns `arenas`, if given: `close` closes them.
    """

    def __init__(self, connection: Connection, arenas: ArenaPair | None = None) -> None:
        self._connection = connection
        self._reader = FrameReader(connection.fileno())
        self._arenas = arenas
        # One poll object for the channel's life: `Connection.poll` builds a selector per
        # call, and the engine polls once per reply.
        self._poller = select.poll()
        self._poller.register(connection.fileno(), select.POLLIN)

    @property
    def connection(self) -> Connection:
        return self._connection

    def send(self, message: Command | Reply) -> None:
        """Send one message.

        Raises pickle.PicklingError/TypeError/AttributeError if the message cannot be pickled
        (nothing is written then), and BrokenPipeError/OSError if the peer is gone.
        """
        outgoing = None if self._arenas is None else self._arenas.outgoing
        frame = tensor_pickle.dumps(message, outgoing)
        write_frame(self._connection.fileno(), frame)

    def recv_command(self) -> Command:
        """The next command (worker side)."""
        message = self._recv()
        if not isinstance(message, COMMAND_TYPES):
            raise ProtocolError(f"expected a command, got {type(message).__name__}")
        return message

    def recv_reply(self) -> Reply:
        """The next reply (engine side)."""
        message = self._recv()
        if not isinstance(message, REPLY_TYPES):
            raise ProtocolError(f"expected a reply, got {type(message).__name__}")
        return message

    def poll(self) -> bool:
        """True if a frame (or EOF) can be read without blocking. OSError once closed."""
        if self._connection.closed:
            raise OSError("the channel is closed")
        return bool(self._poller.poll(0))

    def close(self) -> None:
        self._connection.close()
        if self._arenas is not None:
            self._arenas.close()

    def _recv(self) -> object:
        frame = self._reader.read()  # valid until the next read: decoded at once
        arenas = self._arenas
        try:
            if arenas is None:
                return pickle.loads(frame)
            return tensor_pickle.loads(frame, arenas.incoming, copy=arenas.copy_incoming)
        except Exception as exc:  # any unpickling failure: a missing class, a corrupt frame
            raise ProtocolError(f"cannot decode message: {type(exc).__name__}: {exc}") from exc
