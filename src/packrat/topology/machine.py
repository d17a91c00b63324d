"""Describe the machine for profile files (CPU model, cores, sockets, SMT)."""

from __future__ import annotations

import os
import platform
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from packrat.topology.cores import Topology
from packrat.topology.sysfs import (
    DEFAULT_SYSFS_CPU_ROOT,
    build_topology,
    read_records,
    read_text,
    read_topology,
)


@dataclass(frozen=True)
class MachineInfo:
    """The machine a profile was measured on, as recorded in profile files.

    `logical_cpus` counts every hyper-thread the OS reports; `physical_cores`, `sockets`,
    `numa_nodes` and `smt` describe the whole machine; `usable_cores` counts the physical cores
    this process may use (affinity mask applied), the budget Packrat actually plans with.
    """

    cpu_model: str
    logical_cpus: int
    physical_cores: int
    usable_cores: int
    sockets: int
    numa_nodes: int
    smt: bool

    def to_json(self) -> dict[str, object]:
        """A JSON-ready dict with one key per field."""
        return {
            "cpu_model": self.cpu_model,
            "logical_cpus": self.logical_cpus,
            "physical_cores": self.physical_cores,
            "usable_cores": self.usable_cores,
            "sockets": self.sockets,
            "numa_nodes": self.numa_nodes,
            "smt": self.smt,
        }

    @classmethod
    def from_json(cls, data: Mapping[str, object]) -> MachineInfo:
        """Inverse of `to_json`. Raises ValueError naming the first missing or mistyped field."""

        def get_int(key: str) -> int:
            value = data.get(key)
            if not isinstance(value, int) or isinstance(value, bool):
                raise ValueError(f"MachineInfo.{key} must be an integer, got {value!r}")
            return value

        model, smt = data.get("cpu_model"), data.get("smt")
        if not isinstance(model, str):
            raise ValueError(f"MachineInfo.cpu_model must be a string, got {model!r}")
        if not isinstance(smt, bool):
            raise ValueError(f"MachineInfo.smt must be true or false, got {smt!r}")
        return cls(
            cpu_model=model,
            logical_cpus=get_int("logical_cpus"),
            physical_cores=get_int("physical_cores"),
            usable_cores=get_int("usable_cores"),
            sockets=get_int("sockets"),
            numa_nodes=get_int("numa_nodes"),
            smt=smt,
        )


def _cpu_model(cpuinfo_path: Path) -> str:
    for line in (read_text(cpuinfo_path) or "").splitlines():
        key, _, value = line.partition(":")
        if key.strip() == "model name" and value.strip():
            return value.strip()
    return platform.processor() or platform.machine() or "unknown"


BF16_NATIVE_FLAGS = frozenset({"avx512_bf16", "amx_bf16"})
"""CPU flags (as /proc/cpuinfo spells them) of instructions that compute in bf16: with one of
them a bf16 matmul runs at about twice fp32's rate; without, bf16 is emulated and slower."""


def cpu_flags(cpuinfo_path: str | Path = "/proc/cpuinfo") -> frozenset[str]:
    """The first CPU's feature flags in /proc/cpuinfo; empty where it lists none."""
    for line in (read_text(Path(cpuinfo_path)) or "").splitlines():
        key, _, value = line.partition(":")
        if key.strip() == "flags":
            return frozenset(value.split())
    return frozenset()


def runs_bf16_natively(cpuinfo_path: str | Path = "/proc/cpuinfo") -> bool:
    """Whether this CPU computes bf16 in hardware (AVX512_BF16 or AMX), so that a bf16
    instance is a speedup rather than an emulation."""
    return bool(cpu_flags(cpuinfo_path) & BF16_NATIVE_FLAGS)


def machine_info(
    topology: Topology | None = None,
    *,
    sysfs_root: str | Path = DEFAULT_SYSFS_CPU_ROOT,
    cpuinfo_path: str | Path = "/proc/cpuinfo",
) -> MachineInfo:
    """Describe this machine. `topology` is what this process may use (default `read_topology()`).

    The machine-wide counts come from sysfs with every online CPU allowed; where sysfs lists no
    CPUs they fall back to `topology`.
    """
    usable = topology if topology is not None else read_topology(sysfs_root)
    cpu_root = Path(sysfs_root)
    records = read_records(cpu_root, cpu_root.parent / "node")
    machine = build_topology(records, set(records)) if records else None
    whole = machine if machine is not None else usable
    return MachineInfo(
        cpu_model=_cpu_model(Path(cpuinfo_path)),
        logical_cpus=os.cpu_count() or len(records) or usable.num_cores,
        physical_cores=whole.num_cores,
        usable_cores=usable.num_cores,
        sockets=whole.num_sockets,
        numa_nodes=whole.num_nodes,
        smt=whole.smt,
    )
