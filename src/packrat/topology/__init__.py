"""CPUs we may use -> core sets per instance.

Packrat pins every intra-op thread of every instance to its own *physical* core: two threads on
hyper-thread siblings of one core share its execution units and slow each other down, which
defeats the point of thin instances. This module therefore

* reads the machine's layout from sysfs (`read_topology`) into a `Topology` of `PhysicalCore`s,
  keeping only the CPUs this process may run on (its affinity mask, so `taskset` and container
  cpusets are respected) and one pinning CPU per physical core;
* cuts that to the whole cores the container's CPU quota pays for (`usable_topology`, reading
  the cgroup's `cpu.max` or `cpu.cfs_quota_us`): what servers and profiles plan for;
* places the instances of a `Plan` on disjoint cores (`allocate`), keeping each instance inside
  one NUMA node, or failing that one socket, so its threads share caches and local memory;
* describes the machine for profile files (`machine_info`) and builds synthetic layouts for the
  simulator (`synthetic_topology`).

Only the standard library is used: `packrat plan` imports this module and must not import torch.
"""

from packrat.topology.allocate import allocate
from packrat.topology.cgroup import CpuLimit, read_cpu_limit, read_cpuset
from packrat.topology.cores import (
    PhysicalCore,
    Topology,
    format_cpu_list,
    parse_cpu_list,
    synthetic_topology,
)
from packrat.topology.machine import (
    MachineInfo,
    cpu_flags,
    machine_info,
    runs_bf16_natively,
)
from packrat.topology.sysfs import (
    DEFAULT_SYSFS_CPU_ROOT,
    check_cores,
    read_topology,
)
from packrat.topology.usable import UsableCores, available_cores, usable_topology

__all__ = [
    "DEFAULT_SYSFS_CPU_ROOT",
    "CpuLimit",
    "MachineInfo",
    "PhysicalCore",
    "Topology",
    "UsableCores",
    "allocate",
    "available_cores",
    "check_cores",
    "cpu_flags",
    "format_cpu_list",
    "machine_info",
    "parse_cpu_list",
    "read_cpu_limit",
    "read_cpuset",
    "read_topology",
    "runs_bf16_natively",
    "synthetic_topology",
    "usable_topology",
]
