"""Read the CPUs this process may use from sysfs; check a requested core count.

One pinning CPU per physical core, keeping only CPUs in this process's affinity mask, so
`taskset` and container cpusets are respected.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

from packrat.errors import TopologyError
from packrat.topology.cores import PhysicalCore, Topology, format_cpu_list, parse_cpu_list

DEFAULT_SYSFS_CPU_ROOT = "/sys/devices/system/cpu"


@dataclass(frozen=True)
class _CpuRecord:
    """What sysfs says about one online CPU; None where the file is missing or unreadable."""

    cpu: int
    socket: int | None
    core_id: int | None
    siblings: frozenset[int] | None
    node: int | None


def read_text(path: Path) -> str | None:
    try:
        return path.read_text().strip()
    except (OSError, UnicodeDecodeError):
        return None


def _read_int(path: Path) -> int | None:
    text = read_text(path)
    try:
        return None if text is None else int(text)
    except ValueError:
        return None


def _read_cpu_list(path: Path) -> set[int] | None:
    text = read_text(path)
    try:
        return None if text is None else parse_cpu_list(text)
    except ValueError:
        return None


def _numbered_entries(directory: Path, prefix: str) -> dict[int, Path]:
    """`{N: directory/prefixN}` for entries named prefix + digits; empty if unreadable."""
    pattern = re.compile(rf"{prefix}(\d+)")
    try:
        names = os.listdir(directory)
    except OSError:
        return {}
    return {int(m.group(1)): directory / n for n in names if (m := pattern.fullmatch(n))}


def _node_map(node_root: Path) -> dict[int, int]:
    """CPU -> NUMA node from `node_root/nodeK/cpulist`."""
    mapping: dict[int, int] = {}
    for node, path in sorted(_numbered_entries(node_root, "node").items()):
        for cpu in _read_cpu_list(path / "cpulist") or set():
            mapping.setdefault(cpu, node)
    return mapping


def read_records(cpu_root: Path, node_root: Path) -> dict[int, _CpuRecord]:
    """One record per online CPU listed under `cpu_root` (empty if sysfs lists no CPUs)."""
    entries = _numbered_entries(cpu_root, "cpu")
    online_list = _read_cpu_list(cpu_root / "online")
    node_map: dict[int, int] | None = None
    records: dict[int, _CpuRecord] = {}
    for cpu, path in entries.items():
        if online_list is not None and cpu not in online_list:
            continue
        if read_text(path / "online") == "0":
            continue
        topo = path / "topology"
        siblings = _read_cpu_list(topo / "core_cpus_list")
        if siblings is None:
            siblings = _read_cpu_list(topo / "thread_siblings_list")
        cpu_nodes = _numbered_entries(path, "node")
        if cpu_nodes:
            node: int | None = min(cpu_nodes)
        else:
            if node_map is None:  # read lazily: only kernels without cpuN/nodeK links need it
                node_map = _node_map(node_root)
            node = node_map.get(cpu)
        socket = _read_int(topo / "physical_package_id")
        records[cpu] = _CpuRecord(
            cpu=cpu,
            socket=None if socket is None or socket < 0 else socket,
            core_id=_read_int(topo / "core_id"),
            siblings=None if siblings is None else frozenset(siblings | {cpu}),
            node=node,
        )
    return records


def build_topology(records: Mapping[int, _CpuRecord], allowed: set[int]) -> Topology | None:
    """Group online CPUs into physical cores and keep the cores with an allowed CPU.

    How CPUs are grouped is decided for the whole machine, not per CPU, so that a half-readable
    sysfs cannot mix two schemes into overlapping cores: sibling lists when every CPU has one
    (the kernel's own grouping), else (socket, core_id) when every CPU has a core id, else each
    CPU is its own core. Likewise NUMA nodes are used only when every CPU has one; otherwise the
    socket stands in for the node.
    """
    online = set(records)
    recs = list(records.values())
    use_nodes = all(r.node is not None for r in recs)
    groups: dict[object, set[int]] = {}
    for r in recs:
        key: object
        if all(x.siblings is not None for x in recs) and r.siblings is not None:
            key = min(r.siblings & online)
        elif all(x.core_id is not None for x in recs):
            key = (r.socket or 0, r.core_id)
        else:
            key = r.cpu
        groups.setdefault(key, set()).add(r.cpu)
    cores: list[PhysicalCore] = []
    for members in groups.values():
        usable = sorted(members & allowed)
        if not usable:
            continue
        first = records[min(members)]
        socket = first.socket or 0
        cores.append(
            PhysicalCore(
                socket=socket,
                node=first.node if use_nodes and first.node is not None else socket,
                core_id=first.core_id if first.core_id is not None else first.cpu,
                cpus=tuple(usable),
                siblings=tuple(sorted(members)),
            )
        )
    if not cores:
        return None
    cores.sort(key=lambda c: (c.socket, c.node, c.core_id, c.siblings[0]))
    return Topology(tuple(cores))


def _records_or_fallback(
    cpu_root: Path, node_root: Path, cpus: Iterable[int]
) -> dict[int, _CpuRecord]:
    """sysfs records, or, where sysfs lists no CPUs at all, one bare record per CPU in `cpus`."""
    records = read_records(cpu_root, node_root)
    if records:
        return records
    return {c: _CpuRecord(c, None, None, None, None) for c in cpus}


def affinity() -> set[int]:
    """The CPUs this process may run on (its affinity mask)."""
    try:
        return set(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # not Linux: every CPU the OS reports
        return set(range(os.cpu_count() or 1))


def read_topology(
    sysfs_root: str | Path = DEFAULT_SYSFS_CPU_ROOT,
    allowed: set[int] | None = None,
    node_root: str | Path | None = None,
) -> Topology:
    """The physical cores this process may use, read from sysfs.

    `sysfs_root` is the CPU directory (`cpuN/topology/...`, `online`); `node_root` holds
    `nodeK/cpulist` and defaults to the sibling `node` directory of `sysfs_root`. `allowed` are
    the CPU ids this process may use, by default its affinity mask. Each physical core is pinned
    through its lowest allowed CPU. Missing files degrade rather than fail: no NUMA information
    -> node = socket; no package id -> socket 0; no core id or sibling list -> each CPU is its
    own core; no CPU directories at all -> each allowed CPU is its own core on socket 0.

    Raises TopologyError if none of the allowed CPUs is online.
    """
    cpu_root = Path(sysfs_root)
    nodes = Path(node_root) if node_root is not None else cpu_root.parent / "node"
    allowed_cpus = affinity() if allowed is None else set(allowed)
    topology = build_topology(_records_or_fallback(cpu_root, nodes, allowed_cpus), allowed_cpus)
    if topology is None:
        raise TopologyError(
            f"none of the CPUs this process may use ({format_cpu_list(allowed_cpus) or 'none'}) "
            f"is an online CPU under {cpu_root}"
        )
    return topology


def check_cores(requested: int, topology: Topology | None = None) -> None:
    """Raise TopologyError unless 1 <= `requested` <= the physical cores this process may use.

    `topology` defaults to `read_topology()`.
    """
    usable = (topology if topology is not None else read_topology()).num_cores
    if requested < 1:
        raise TopologyError(
            f"asked for {requested} cores but at least 1 is needed "
            f"(this machine gives this process {usable} physical cores)"
        )
    if requested > usable:
        raise TopologyError(
            f"asked for {requested} cores but this machine gives this process only "
            f"{usable} physical cores"
        )
