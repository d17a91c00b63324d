"""The CPU time a container may use: its cgroup's CPU quota and cpuset.

A container's CPU *quota* (Kubernetes' `resources.limits.cpu`, `docker run --cpus`) does not
shrink the affinity mask: a pod limited to 1.5 CPUs on a 64-core node still sees 64 CPUs, and
threads pinned to more cores than the quota pays for are throttled at every scheduling period
(100 ms by default) for the rest of it. So Packrat reads the quota and plans for the whole cores
it pays for (`CpuLimit.cores`: 1.5 CPUs -> 1 core; threads that each need a core for the whole
batch gain nothing from half of one).

Where the files are, as the JDK and Go's automaxprocs find them: the process's cgroup paths
come from `/proc/self/cgroup`, the cgroup mounts and the part of the hierarchy each shows from
`/proc/self/mountinfo` (inside a container the mount's root is the container's own cgroup).
The limit is the smallest over the cgroup and its ancestors up to the mount, since a parent's
quota caps its children:

* cgroup v2: `cpu.max` ("max 100000" or "150000 100000": quota and period in microseconds) and
  `cpuset.cpus.effective`;
* cgroup v1: `cpu.cfs_quota_us` (-1: none) and `cpu.cfs_period_us` under the `cpu` controller's
  mount, `cpuset.cpus` under the `cpuset` controller's.

Every path is read under `root` (default "/"), so tests and `PACKRAT_CGROUP_ROOT` can point at
a fake tree laid out like the real one. A missing or unreadable file means no limit: a machine
without cgroups is limited only by its affinity mask.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from packrat.topology.cores import parse_cpu_list
from packrat.topology.sysfs import read_text

#: Quotas within this much of a whole number of CPUs count as that number (1.9999 -> 2).
_ROUNDING = 1e-3


@dataclass(frozen=True)
class CpuLimit:
    """A CPU quota: `cpus` CPUs' worth of time per period, read from `source`."""

    cpus: float
    source: str

    @property
    def cores(self) -> int:
        """Whole cores the quota pays for (at least 1)."""
        return max(1, math.floor(self.cpus + _ROUNDING))


@dataclass(frozen=True)
class _Mount:
    """One cgroup mount: which hierarchy part (`root`) it shows at `point`."""

    version: int
    controllers: frozenset[str]
    root: PurePosixPath
    point: PurePosixPath


def _mounts(root: Path) -> list[_Mount]:
    """The cgroup mounts listed in `root`/proc/self/mountinfo."""
    text = read_text(root / "proc/self/mountinfo") or ""
    mounts: list[_Mount] = []
    for line in text.splitlines():
        fields = line.split()
        if " - " not in line or len(fields) < 5:
            continue
        after = line.split(" - ", 1)[1].split()
        if len(after) < 3 or after[0] not in ("cgroup", "cgroup2"):
            continue
        version = 2 if after[0] == "cgroup2" else 1
        options = frozenset(after[2].split(",")) if version == 1 else frozenset()
        mounts.append(_Mount(version, options, PurePosixPath(fields[3]), PurePosixPath(fields[4])))
    return mounts


def _cgroup_paths(root: Path) -> dict[str, PurePosixPath]:
    """Controller -> this process's cgroup path; "" is the cgroup v2 (unified) path."""
    text = read_text(root / "proc/self/cgroup") or ""
    paths: dict[str, PurePosixPath] = {}
    for line in text.splitlines():
        parts = line.split(":", 2)
        if len(parts) != 3:
            continue
        _, controllers, path = parts
        for controller in controllers.split(",") if controllers else [""]:
            paths[controller] = PurePosixPath(path)
    return paths


def _directories(root: Path, controller: str) -> Iterator[Path]:
    """This process's cgroup directory for `controller` ("" for v2), then each ancestor up to
    the mount point; nothing if the controller is not mounted."""
    paths = _cgroup_paths(root)
    if controller not in paths:
        return
    version = 2 if controller == "" else 1
    for mount in _mounts(root):
        if mount.version != version or (version == 1 and controller not in mount.controllers):
            continue
        path = paths[controller]
        try:
            relative = path.relative_to(mount.root)
        except ValueError:  # the mount shows another part of the hierarchy
            continue
        top = root / str(mount.point).lstrip("/")
        parts = relative.parts
        for depth in range(len(parts), -1, -1):
            yield top.joinpath(*parts[:depth])
        return


def _v2_quota(directory: Path) -> float | None:
    text = read_text(directory / "cpu.max")
    if text is None:
        return None
    fields = text.split()
    try:
        if fields[0] == "max":
            return None
        return int(fields[0]) / int(fields[1]) if len(fields) > 1 else int(fields[0]) / 100_000
    except (ValueError, ZeroDivisionError, IndexError):
        return None


def _v1_quota(directory: Path) -> float | None:
    quota = read_text(directory / "cpu.cfs_quota_us")
    period = read_text(directory / "cpu.cfs_period_us")
    try:
        q, p = int(quota or ""), int(period or "")
    except ValueError:
        return None
    return q / p if q > 0 and p > 0 else None


def _smallest_quota(root: Path, controller: str, file: str) -> CpuLimit | None:
    reader = _v2_quota if controller == "" else _v1_quota
    best: CpuLimit | None = None
    for directory in _directories(root, controller):
        cpus = reader(directory)
        if cpus is not None and (best is None or cpus < best.cpus):
            version = "v2" if controller == "" else "v1"
            best = CpuLimit(cpus, f"cgroup {version} {directory / file}")
    return best


def read_cpu_limit(root: Path = Path("/")) -> CpuLimit | None:
    """This process's CPU quota (v1's `cpu` controller if mounted, else v2's), None if none."""
    return _smallest_quota(root, "cpu", "cpu.cfs_quota_us") or _smallest_quota(root, "", "cpu.max")


def read_cpuset(root: Path = Path("/")) -> set[int] | None:
    """The CPUs this process's cpuset allows, None if unknown (no cpuset file readable)."""
    for controller, file in (("cpuset", "cpuset.cpus"), ("", "cpuset.cpus.effective")):
        for directory in _directories(root, controller):
            text = read_text(directory / file)
            if text:
                try:
                    return parse_cpu_list(text)
                except ValueError:
                    return None
    return None
