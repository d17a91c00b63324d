"""Values: physical cores, topologies, CPU lists, and synthetic machines for planning."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass


@dataclass(frozen=True)
class PhysicalCore:
    """One physical core that this process may use.

    `cpus` are the core's hyper-thread siblings that this process may run on, ascending; threads
    are pinned to `cpus[0]`. `siblings` are all of the core's online hyper-threads on the machine
    (a superset of `cpus`; defaults to `cpus`), kept so that `Topology.smt` stays true when the
    affinity mask hides a sibling. `core_id` is the kernel's id, unique only within a socket.
    """

    socket: int
    node: int
    core_id: int
    cpus: tuple[int, ...]
    siblings: tuple[int, ...] = ()

    def __post_init__(self) -> None:
        if not self.cpus:
            raise ValueError(f"PhysicalCore.cpus must not be empty (socket {self.socket})")
        if list(self.cpus) != sorted(set(self.cpus)):
            raise ValueError(f"PhysicalCore.cpus must be ascending and unique, got {self.cpus}")
        if not self.siblings:
            object.__setattr__(self, "siblings", self.cpus)
        if not set(self.cpus) <= set(self.siblings):
            raise ValueError(f"PhysicalCore.siblings {self.siblings} must include cpus {self.cpus}")

    @property
    def cpu(self) -> int:
        """The CPU id an instance thread on this core is pinned to."""
        return self.cpus[0]


@dataclass(frozen=True)
class Topology:
    """The physical cores this process may use, ordered by (socket, node, core_id).

    That order is the allocation order: neighbouring cores in it share L2/L3 slices on common
    server parts, so instances take runs of adjacent cores.
    """

    cores: tuple[PhysicalCore, ...]

    def __post_init__(self) -> None:
        if not self.cores:
            raise ValueError("Topology.cores must hold at least one core")
        seen: set[int] = set()
        for core in self.cores:
            if seen & set(core.siblings):
                raise ValueError(f"Topology: CPU(s) of core {core} appear in another core")
            seen |= set(core.siblings)

    @property
    def num_cores(self) -> int:
        """Physical cores this process may use."""
        return len(self.cores)

    @property
    def num_sockets(self) -> int:
        return len({c.socket for c in self.cores})

    @property
    def num_nodes(self) -> int:
        return len({c.node for c in self.cores})

    @property
    def smt(self) -> bool:
        """Whether any core has more than one hyper-thread on the machine (usable or not)."""
        return any(len(c.siblings) > 1 for c in self.cores)

    def cpu_ids(self) -> tuple[int, ...]:
        """One CPU per physical core, in core order: the CPUs instances are pinned to."""
        return tuple(c.cpu for c in self.cores)

    def describe(self) -> str:
        """One line for logs and errors, e.g. `16 physical cores (CPUs 0-15), 1 socket, ...`."""
        return (
            f"{self.num_cores} physical cores (CPUs {format_cpu_list(self.cpu_ids())}), "
            f"{self.num_sockets} socket(s), {self.num_nodes} NUMA node(s), "
            f"SMT {'on' if self.smt else 'off'}"
        )


def format_cpu_list(cpus: Iterable[int]) -> str:
    """CPU ids in the kernel's list syntax: `[0, 1, 2, 5]` -> `"0-2,5"`."""
    runs: list[list[int]] = []
    for cpu in sorted(set(cpus)):
        if runs and cpu == runs[-1][1] + 1:
            runs[-1][1] = cpu
        else:
            runs.append([cpu, cpu])
    return ",".join(str(lo) if lo == hi else f"{lo}-{hi}" for lo, hi in runs)


def parse_cpu_list(text: str) -> set[int]:
    """The kernel's CPU list syntax (`"0-3,8,10-11"`, optionally `"0-15:2"` strides) -> ids.

    Raises ValueError on malformed text.
    """
    cpus: set[int] = set()
    for part in text.strip().split(","):
        part = part.strip()
        if not part:
            continue
        span, _, stride = part.partition(":")
        lo, _, hi = span.partition("-")
        first, last = int(lo), int(hi) if hi else int(lo)
        step = int(stride) if stride else 1
        if first < 0 or last < first or step < 1:
            raise ValueError(f"bad CPU list entry {part!r}")
        cpus.update(range(first, last + 1, step))
    return cpus


def synthetic_topology(
    sockets: int, cores_per_socket: int, threads_per_core: int = 1, nodes_per_socket: int = 1
) -> Topology:
    """A regular machine with every CPU usable, numbered the way Linux numbers x86 servers.

    The first hyper-thread of every core gets CPUs 0..N-1 (socket by socket), the second N..2N-1,
    and so on. Each socket is split into `nodes_per_socket` equal NUMA nodes with global ids.
    Raises ValueError on counts < 1 or cores that do not split evenly into nodes.
    """
    for name, value in [
        ("sockets", sockets),
        ("cores_per_socket", cores_per_socket),
        ("threads_per_core", threads_per_core),
        ("nodes_per_socket", nodes_per_socket),
    ]:
        if value < 1:
            raise ValueError(f"synthetic_topology: {name} must be >= 1, got {value}")
    if cores_per_socket % nodes_per_socket:
        raise ValueError(
            f"synthetic_topology: cores_per_socket={cores_per_socket} does not split into "
            f"nodes_per_socket={nodes_per_socket} equal nodes"
        )
    total = sockets * cores_per_socket
    per_node = cores_per_socket // nodes_per_socket
    cores = []
    for socket in range(sockets):
        for core_id in range(cores_per_socket):
            first = socket * cores_per_socket + core_id
            cpus = tuple(first + t * total for t in range(threads_per_core))
            node = socket * nodes_per_socket + core_id // per_node
            cores.append(PhysicalCore(socket, node, core_id, cpus))
    return Topology(tuple(cores))
