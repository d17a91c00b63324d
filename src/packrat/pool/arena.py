"""Shared-memory arenas: where the bytes of request and output tensors cross a worker's pipe.

Through the pipe alone, a tensor's bytes are copied four times between two processes: into the
pickle frame, into the socket, out of the socket and into the rebuilt tensor's buffer (each
into freshly allocated memory, so with page faults). Through an arena they are copied once by
the sender into memory both processes map, and the pipe carries only where they are.

An arena is one anonymous shared-memory file (`memfd_create`) that one process writes and the
other reads; a worker's pipe has two (`ArenaPair`): requests, which the engine writes, and
outputs, which the worker writes. The rules that keep them safe:

- *No names, nothing to unlink.* The file has no path (nothing in /dev/shm); the kernel frees
  it once every process holding it has closed it or exited, so a killed worker, or a killed
  engine, leaks nothing. The engine creates both arenas of a worker before spawning it and the
  worker inherits them at spawn, like its end of the pipe (`multiprocessing.reduction.DupFd`).
- *One message at a time.* The writer fills the arena from offset 0 for each message
  (`reset`). That is correct because the engine sends a worker one command and waits for its
  reply before the next: a worker's views of a batch's requests stay valid until its next
  command, and the engine copies outputs out before it sends one.
- *Grown on demand, never shrunk.* The writer extends the file when a message needs more
  (`posix_fallocate`, so a full memory limit raises OSError now, instead of SIGBUS at a later
  write) and maps it again; the reader maps it again when it is told of an offset past its
  mapping. An arena holds the largest message seen, as the pipe's frame buffers did.
- *Mappings are never closed by hand.* Views (`view`) keep their mapping alive; a mapping
  replaced by a larger one, or dropped by `close`, is unmapped when its last view goes.

Nothing here imports torch: arenas move bytes, `packrat.pool.tensor_pickle` decides which.
"""

from __future__ import annotations

import mmap
import os
import weakref
from dataclasses import dataclass
from multiprocessing import reduction
from multiprocessing.context import assert_spawning
from typing import Any

ALIGN_BYTES = 64
"""Every placed buffer starts at a multiple of this: any dtype's alignment, one cache line."""

GROW_STEP_BYTES = 1 << 20
"""Arenas grow in whole MiB, so a batch that creeps up by a few bytes does not remap each time."""

INITIAL_BYTES = mmap.PAGESIZE
"""What a new arena holds, mapped at once by both processes: each mapping holds a descriptor
(Python's mmap keeps a duplicate), so mapping from the start keeps a worker's count of open
files the same from its first batch to its last."""


class Arena:
    """One growable shared-memory file with one writer and one reader, each holding its own
    mapping. The writer calls `reset` then `place`; the reader calls `view`.

    Owns `fd` (closed by `close`, or when the arena is dropped; each mapping holds a duplicate
    of it, as Python's mmap does, closed with the mapping). Not thread-safe: one thread
    uses an arena at a time (the engine's lock, the worker's one thread of commands).
    """

    def __init__(self, fd: int) -> None:
        self._fd = fd
        self._map: mmap.mmap | None = None
        self._mapped_bytes = 0
        self._used_bytes = 0
        self._closer = weakref.finalize(self, os.close, fd)
        self._remap(os.fstat(fd).st_size)

    @classmethod
    def create(cls, label: str) -> Arena:
        """A new arena of `INITIAL_BYTES`. Raises OSError where anonymous shared memory is not
        available."""
        if not hasattr(os, "memfd_create"):  # not Linux
            raise OSError("anonymous shared memory (memfd_create) is not available here")
        fd = os.memfd_create(f"packrat-{label}", os.MFD_CLOEXEC)
        try:
            os.posix_fallocate(fd, 0, INITIAL_BYTES)
        except OSError:
            os.close(fd)
            raise
        return cls(fd)

    def fileno(self) -> int:
        """The shared-memory file's descriptor (owned by the arena)."""
        return self._fd

    @property
    def mapped_bytes(self) -> int:
        """Bytes this process maps (the file's size as of this process's last growth or remap)."""
        return self._mapped_bytes

    def reset(self) -> None:
        """Start a new message: the next `place` writes from offset 0 again."""
        self._used_bytes = 0

    def place(self, data: memoryview) -> int | None:
        """Copy `data` (C-contiguous) into the arena after what this message placed so far.

        Returns its offset, or None if the arena could not grow to hold it (the caller sends
        those bytes another way; the arena is unchanged).
        """
        size = data.nbytes
        offset = -(-self._used_bytes // ALIGN_BYTES) * ALIGN_BYTES
        end = offset + size
        if end > self._mapped_bytes:
            try:
                self._grow(end)
            except (OSError, ValueError):
                return None
        if size:
            assert self._map is not None  # end > 0, so mapped (by _grow if need be)
            self._map[offset:end] = data.cast("B")
        self._used_bytes = end
        return offset

    def view(self, offset: int, size: int) -> memoryview:
        """The `size` bytes at `offset`, writable, without a copy; valid until the writer's
        next message overwrites them (the mapping itself lives as long as the view).

        Raises ValueError if they lie outside the file (a corrupt or stale descriptor).
        """
        end = offset + size
        if offset < 0 or size < 0:
            raise ValueError(f"bad arena slice: offset {offset}, size {size}")
        if end > self._mapped_bytes:
            self._remap(os.fstat(self._fd).st_size)
            if end > self._mapped_bytes:
                raise ValueError(
                    f"arena slice [{offset}, {end}) lies past its end ({self._mapped_bytes} bytes)"
                )
        if size == 0:
            return memoryview(bytearray())
        assert self._map is not None
        return memoryview(self._map)[offset:end]

    def close(self) -> None:
        """Close the file (idempotent). Mappings stay until their last view is gone."""
        self._map = None
        self._mapped_bytes = 0
        self._closer()

    def __reduce__(self) -> tuple[Any, ...]:
        # Only while spawning a child: the descriptor then travels like the pipe's own.
        assert_spawning(self)
        return _inherit, (reduction.DupFd(self._fd),)

    def _grow(self, needed_bytes: int) -> None:
        size = -(-needed_bytes // GROW_STEP_BYTES) * GROW_STEP_BYTES
        file_bytes = os.fstat(self._fd).st_size
        if size > file_bytes:
            os.posix_fallocate(self._fd, file_bytes, size - file_bytes)
        self._remap(max(size, file_bytes))

    def _remap(self, size: int) -> None:
        if size <= self._mapped_bytes:
            return  # also for an empty file: nothing to map
        # MAP_POPULATE: fault every page in now, once, rather than inside a later request.
        flags = mmap.MAP_SHARED | getattr(mmap, "MAP_POPULATE", 0)
        self._map = mmap.mmap(self._fd, size, flags=flags)  # the old one goes with its views
        self._mapped_bytes = size


def _inherit(dup_fd: Any) -> Arena:
    return Arena(dup_fd.detach())


@dataclass(frozen=True)
class ArenaPair:
    """The two arenas of one engine-worker pipe, as one end sees them.

    outgoing: the arena this end writes its messages' buffers into.
    incoming: the arena the other end writes into.
    copy_incoming: copy buffers out of `incoming` when decoding (the engine: what it returns
        must outlive the worker's next reply) rather than decode views of it (the worker:
        requests live for one command, and a copy would cost as much as the pipe saved).
    """

    outgoing: Arena
    incoming: Arena
    copy_incoming: bool

    @classmethod
    def create(cls, label: str) -> ArenaPair:
        """The engine's end of a new worker's arenas. Raises OSError if they cannot be made."""
        requests = Arena.create(f"{label}-requests")
        try:
            outputs = Arena.create(f"{label}-outputs")
        except OSError:
            requests.close()
            raise
        return cls(outgoing=requests, incoming=outputs, copy_incoming=True)

    def peer(self) -> ArenaPair:
        """The other end's view of the same arenas, to pass to the worker at spawn."""
        return ArenaPair(outgoing=self.incoming, incoming=self.outgoing, copy_incoming=False)

    def close(self) -> None:
        self.outgoing.close()
        self.incoming.close()
