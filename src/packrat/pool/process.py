"""Child processes of the pool: spawn them, wait for their replies (in a thread, or on the
asyncio event loop), stop them.

Children are created with the "spawn" start method: forking a process that has initialized
torch's OpenMP pool deadlocks or corrupts it, and spawn also keeps the parent's memory (and any
model it holds) out of the child.

Every child is started from one long-lived launcher thread. Workers ask the kernel to kill them
when their parent dies (PR_SET_PDEATHSIG), and the kernel means the parent *thread*: a worker
started from a short-lived thread (a request handler, a controller callback) would be killed as
soon as that thread ended. The launcher thread lives until the interpreter exits.
"""

from __future__ import annotations

import asyncio
import contextlib
import multiprocessing
import os
import socket
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from multiprocessing.connection import Connection, wait
from multiprocessing.process import BaseProcess
from typing import TypeVar

from packrat.pool.arena import ArenaPair
from packrat.pool.channel import Channel, ProtocolError
from packrat.pool.messages import Command, Reply, Stop

_CONTEXT = multiprocessing.get_context("spawn")
_EXIT_GRACE_S = 2.0  # how long a child that closed its pipe gets to exit before we give up
_KILL_GRACE_S = 2.0  # how long after SIGTERM before SIGKILL

_launcher: ThreadPoolExecutor | None = None
_launcher_lock = threading.Lock()

ArgT = TypeVar("ArgT")


@dataclass(frozen=True)
class Died:
    """The child exited (or closed its pipe) before replying. `exitcode` as in `Process`
    (negative: killed by that signal); None if it closed its pipe but has not exited yet."""

    exitcode: int | None


@dataclass(frozen=True)
class Undecodable:
    """The child's reply frame could not be decoded; the pipe is still in step."""

    message: str


Outcome = Reply | Died | Undecodable


class ChildProcess:
    """One spawned child process and the parent's end of its channel.

    `label` names it in error messages, e.g. "instance 1"; `detail` adds context after the pid,
    e.g. "cores [2, 3]". Not thread-safe: one thread drives a child at a time.
    """

    def __init__(self, process: BaseProcess, channel: Channel, label: str, detail: str) -> None:
        self._process = process
        self.channel = channel
        self.label = label
        self.detail = detail
        self.gone = False  # set once the child is known to be dead or its pipe closed

    @property
    def pid(self) -> int:
        pid = self._process.pid
        assert pid is not None  # set by start(), which spawn_child always calls
        return pid

    @property
    def sentinel(self) -> int:
        return self._process.sentinel

    @property
    def exitcode(self) -> int | None:
        return self._process.exitcode

    def describe(self) -> str:
        """E.g. "instance 1 (pid 4242, cores [2, 3])"."""
        extra = f", {self.detail}" if self.detail else ""
        return f"{self.label} (pid {self.pid}{extra})"

    def send(self, command: Command) -> bool:
        """Send `command`; False (and `gone` set) if the child's pipe is closed."""
        if self.gone:
            return False
        try:
            self.channel.send(command)
        except (BrokenPipeError, ConnectionResetError, EOFError, OSError):
            self.gone = True
            return False
        return True

    def join(self, timeout_s: float | None) -> None:
        self._process.join(timeout_s)

    def is_alive(self) -> bool:
        return self._process.is_alive()

    def terminate(self) -> None:
        self._process.terminate()

    def kill(self) -> None:
        self._process.kill()


def spawn_child(
    target: Callable[[ArgT, Connection], None],
    arg: ArgT,
    label: str,
    detail: str = "",
    arenas: ArenaPair | None = None,
) -> ChildProcess:
    """Start `target(arg, connection)` in a spawned daemon process; returns at once.

    `arenas`: this end's shared memory for the child's messages; the child's end must be in
    `arg` (it is inherited while `arg` is pickled for the child). The child's channel owns
    them from here on: they are closed with it, or here if the child cannot be started.
    The child is started on the launcher thread (see the module docstring). Raises OSError if
    the process cannot be created.
    """
    parent_end, child_end = _CONTEXT.Pipe(duplex=True)
    for end in (parent_end, child_end):
        widen_socket_buffers(end)
    process = _CONTEXT.Process(
        target=target, args=(arg, child_end), name=f"packrat-{label}", daemon=True
    )
    try:
        _launch_thread().submit(process.start).result()
    except BaseException:
        parent_end.close()
        if arenas is not None:
            arenas.close()
        raise
    finally:
        # The child holds its own copy now; ours must go, or we would never see EOF.
        child_end.close()
    return ChildProcess(process, Channel(parent_end, arenas), label, detail)


PIPE_BUFFER_BYTES = 4 * 1024 * 1024
"""Socket buffer asked for each end of a worker's pipe (the kernel caps it at net.core.wmem_max
and rmem_max). The default ~200 KB splits a 600 KB image into three writer/reader hand-offs
between processes; measured on a 602 KB echo round trip here: 0.28 ms -> 0.09 ms."""


def widen_socket_buffers(connection: Connection, size: int = PIPE_BUFFER_BYTES) -> None:
    """Enlarge the send and receive buffers of a socket-backed connection; best effort."""
    try:
        sock = socket.socket(fileno=os.dup(connection.fileno()))
    except OSError:
        return  # not a socket (e.g. a one-way os.pipe): leave it
    with sock:
        for option in (socket.SO_SNDBUF, socket.SO_RCVBUF):
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.SOL_SOCKET, option, size)


def wait_replies(
    children: Sequence[ChildProcess],
    timeout_s: float | None,
    stop_when: Callable[[Outcome], bool] | None = None,
) -> dict[int, Outcome]:
    """Wait for the next reply from each child; returns position in `children` -> outcome.

    A child that dies or closes its pipe yields `Died`; positions missing from the result had
    not answered by the deadline (`timeout_s` None waits forever) or were not awaited because
    some outcome satisfied `stop_when` first. Never blocks past the deadline on a dead child.
    """
    deadline = None if timeout_s is None else time.monotonic() + timeout_s
    outcomes: dict[int, Outcome] = {}
    pending: dict[Connection | int, int] = {}
    for position, child in enumerate(children):
        if child.gone:
            child.join(_EXIT_GRACE_S)
            outcomes[position] = Died(child.exitcode)
            continue
        pending[child.channel.connection] = position
        pending[child.sentinel] = position
    while pending:
        remaining = None if deadline is None else max(0.0, deadline - time.monotonic())
        ready = wait(list(pending), remaining)
        if not ready:
            break
        for handle in ready:
            found = pending.get(handle)  # type: ignore[arg-type]
            if found is None or found in outcomes:
                continue  # both handles of one child were ready; the first settled it
            outcome = _read_one(children[found])
            outcomes[found] = outcome
            pending = {h: p for h, p in pending.items() if p != found}
            if stop_when is not None and stop_when(outcome):
                return outcomes
    return outcomes


async def await_replies(
    children: Sequence[ChildProcess], timeout_s: float | None
) -> dict[int, Outcome]:
    """`wait_replies` for a caller on the running event loop: the loop watches each child's
    pipe and sentinel (`add_reader`) and reads each reply as it arrives, so no thread waits
    and the caller wakes straight from the children's pipes. The loop is free meanwhile; a
    reply is read on it (a frame without tensor bytes where arenas carry them). A child found
    dead is reaped in a thread, never on the loop. Cancelled, it stops watching: the pipes of
    children that had not answered are then out of step."""
    loop = asyncio.get_running_loop()
    outcomes: dict[int, Outcome] = {}
    closed: list[int] = []  # positions whose child died or closed its pipe
    watched: dict[int, tuple[int, int]] = {}
    everyone = loop.create_future()

    def settle(position: int) -> None:
        if position not in watched:
            return  # its pipe and its sentinel were ready at once: the first settled it
        for handle in watched.pop(position):
            loop.remove_reader(handle)
        try:
            outcome = _read_ready(children[position])
        except Exception as exc:  # raised to the caller, as `wait_replies` would
            if not everyone.done():
                everyone.set_exception(exc)
            return
        if outcome is None:
            closed.append(position)
        else:
            outcomes[position] = outcome
        if not watched and not everyone.done():
            everyone.set_result(None)

    for position, child in enumerate(children):
        if child.gone:
            closed.append(position)
            continue
        watched[position] = (child.channel.connection.fileno(), child.sentinel)
        for handle in watched[position]:
            loop.add_reader(handle, settle, position)
    try:
        if watched:
            await asyncio.wait([everyone], timeout=timeout_s)
    finally:
        for handles in watched.values():
            for handle in handles:
                loop.remove_reader(handle)
    if everyone.done():
        everyone.result()  # a reply that could not be read raises here
    for position in closed:
        child = children[position]
        await asyncio.to_thread(child.join, _EXIT_GRACE_S)
        outcomes[position] = Died(child.exitcode)
    return outcomes


def stop_children(children: Iterable[ChildProcess], timeout_s: float) -> None:
    """Ask each child to stop, wait up to `timeout_s` for all, then terminate and kill the rest.

    Reaps every child and closes every channel; safe to call on children that already died.
    `timeout_s` 0 terminates at once (for children that would not read Stop soon).
    """
    children = list(children)
    for child in children:
        child.send(Stop())
    _wait_exit(children, timeout_s)
    survivors = [c for c in children if c.is_alive()]
    for child in survivors:
        child.terminate()
    _wait_exit(survivors, _KILL_GRACE_S)
    for child in survivors:
        if child.is_alive():
            child.kill()
    for child in children:
        child.join(None)
        child.gone = True
        child.channel.close()


def _read_one(child: ChildProcess) -> Outcome:
    """The child's next reply if one can be read now, else how it died."""
    outcome = _read_ready(child)
    if outcome is not None:
        return outcome
    child.join(_EXIT_GRACE_S)
    return Died(child.exitcode)


def _read_ready(child: ChildProcess) -> Reply | Undecodable | None:
    """The child's next reply if one can be read now; None (and `gone` set) if its pipe is
    closed or it died."""
    if child.channel.poll():
        try:
            return child.channel.recv_reply()
        except ProtocolError as exc:
            return Undecodable(str(exc))
        except (EOFError, OSError):
            pass
    child.gone = True
    return None


def _wait_exit(children: Sequence[ChildProcess], timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    sentinels = {c.sentinel for c in children}
    while sentinels:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            return
        for sentinel in wait(list(sentinels), remaining):
            sentinels.discard(sentinel)


def _launch_thread() -> ThreadPoolExecutor:
    global _launcher
    with _launcher_lock:
        if _launcher is None:
            _launcher = ThreadPoolExecutor(max_workers=1, thread_name_prefix="packrat-launcher")
        return _launcher
