"""The cores Packrat plans for: the affinity mask, the cgroup's cpuset and its CPU quota.

`read_topology` gives the physical cores this process may run on. In a container that is not
what it may *use*: a CPU quota smaller than those cores throttles threads pinned to all of
them. `usable_topology` keeps the first `CpuLimit.cores` cores (in allocation order, so they
stay on one socket and node where they can) and says why in `UsableCores.note`, which
`packrat serve` prints at start-up.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from packrat.topology.cgroup import CpuLimit, read_cpu_limit, read_cpuset
from packrat.topology.cores import Topology
from packrat.topology.sysfs import DEFAULT_SYSFS_CPU_ROOT, affinity, read_topology


@dataclass(frozen=True)
class UsableCores:
    """The cores to plan for, and what limited them."""

    topology: Topology
    limit: CpuLimit | None
    #: Physical cores this process may run on before the quota is applied.
    runnable_cores: int

    @property
    def note(self) -> str | None:
        """Why fewer cores are used than the process may run on; None if the quota did not
        limit them."""
        if self.limit is None or self.topology.num_cores >= self.runnable_cores:
            return None
        n = self.topology.num_cores
        return (
            f"planning for {n} core{'s' if n != 1 else ''} of the {self.runnable_cores} this "
            f"process may run on: its CPU quota is {self.limit.cpus:g} CPUs "
            f"({self.limit.source}), and threads pinned to more cores than the quota pays for "
            "are throttled"
        )


def available_cores() -> int:
    """Physical cores Packrat plans for here (affinity mask, cpuset and CPU quota applied)."""
    return usable_topology().topology.num_cores


def usable_topology(
    cgroup_root: Path | None = None,
    sysfs_root: str | Path = DEFAULT_SYSFS_CPU_ROOT,
    allowed: set[int] | None = None,
) -> UsableCores:
    """The physical cores this process may run on (affinity mask and cpuset), cut to the whole
    cores its CPU quota gives. `cgroup_root` is where `/proc/self/...` and the cgroup mounts
    are read (default: $PACKRAT_CGROUP_ROOT, else "/"); `allowed` stands in for the affinity
    mask (default: this process's)."""
    if cgroup_root is None:
        from packrat.config import cgroup_root as configured_root

        cgroup_root = configured_root()
    allowed = set(affinity() if allowed is None else allowed)
    cpuset = read_cpuset(cgroup_root)
    if cpuset is not None and cpuset & allowed:
        allowed &= cpuset
    topology = read_topology(sysfs_root, allowed=allowed)
    limit = read_cpu_limit(cgroup_root)
    runnable = topology.num_cores
    if limit is not None and limit.cores < runnable:
        topology = Topology(topology.cores[: limit.cores])
    return UsableCores(topology, limit, runnable)
