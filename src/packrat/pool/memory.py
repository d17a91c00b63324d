"""How much memory a set of processes uses, from /proc/<pid>/smaps_rollup (Linux).

RSS counts every resident page a process maps, so pages shared by T workers (the torch
libraries, shared weights) are counted T times in a sum of RSS. PSS (proportional set size)
divides each page by the number of processes mapping it, so a sum of PSS over the workers is
the memory they use together: the figure to compare between one instance and T.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

_PROC = Path("/proc")


@dataclass(frozen=True)
class ProcessMemory:
    """One process's memory in bytes.

    pss_anon_bytes: PSS of anonymous memory (heaps, private weight copies).
    pss_file_bytes: PSS of file-backed memory (libraries, memory-mapped weight files).
    pss_shmem_bytes: PSS of shared memory and tmpfs files (a weights dir on tmpfs lands here).
    """

    pid: int
    rss_bytes: int
    pss_bytes: int
    pss_anon_bytes: int
    pss_file_bytes: int
    pss_shmem_bytes: int


@dataclass(frozen=True)
class MemoryReport:
    """Memory of a set of processes; totals are sums over `processes`, in bytes."""

    processes: tuple[ProcessMemory, ...]

    @property
    def rss_bytes(self) -> int:
        """Sum of RSS: counts shared pages once per process (an overestimate)."""
        return sum(p.rss_bytes for p in self.processes)

    @property
    def pss_bytes(self) -> int:
        """Sum of PSS: the memory the processes use together."""
        return sum(p.pss_bytes for p in self.processes)

    @property
    def pss_anon_bytes(self) -> int:
        return sum(p.pss_anon_bytes for p in self.processes)

    @property
    def pss_file_bytes(self) -> int:
        return sum(p.pss_file_bytes for p in self.processes)


def memory_report(pids: Iterable[int]) -> MemoryReport:
    """Read each process's memory; raises ProcessLookupError if one has exited."""
    return MemoryReport(tuple(process_memory(pid) for pid in pids))


def process_memory(pid: int) -> ProcessMemory:
    """One process's memory from /proc/<pid>/smaps_rollup.

    Raises ProcessLookupError if the process does not exist (or is a zombie, which maps
    nothing), PermissionError if it belongs to another user.
    """
    try:
        text = (_PROC / str(pid) / "smaps_rollup").read_text()
    except FileNotFoundError:
        raise ProcessLookupError(f"no process {pid}") from None
    fields = parse_smaps_rollup(text)
    if "Rss" not in fields:
        raise ProcessLookupError(f"process {pid} maps no memory (exited?)")
    return ProcessMemory(
        pid=pid,
        rss_bytes=fields["Rss"],
        pss_bytes=fields.get("Pss", 0),
        pss_anon_bytes=fields.get("Pss_Anon", 0),
        pss_file_bytes=fields.get("Pss_File", 0),
        pss_shmem_bytes=fields.get("Pss_Shmem", 0),
    )


def parse_smaps_rollup(text: str) -> dict[str, int]:
    """The "Name:  <n> kB" lines of an smaps_rollup file, as name -> bytes."""
    fields: dict[str, int] = {}
    for line in text.splitlines():
        name, sep, rest = line.partition(":")
        parts = rest.split()
        if sep and len(parts) == 2 and parts[1] == "kB" and parts[0].isdigit():
            fields[name.strip()] = int(parts[0]) * 1024
    return fields
