"""CPU quota and cpuset from fake cgroup trees laid out like the real ones (v1, v2, containers
whose mount shows only their own cgroup), and the cores Packrat plans for under them."""

from __future__ import annotations

from pathlib import Path

import pytest

from packrat.topology import CpuLimit, read_cpu_limit, read_cpuset, usable_topology

V2_MOUNT = "30 23 0:26 / /sys/fs/cgroup rw,nosuid - cgroup2 cgroup2 rw\n"
V1_MOUNTS = (
    "32 31 0:29 / /sys/fs/cgroup/cpu,cpuacct rw - cgroup cgroup rw,cpu,cpuacct\n"
    "34 31 0:31 / /sys/fs/cgroup/cpuset rw - cgroup cgroup rw,cpuset\n"
)


def write(root: Path, relative: str, text: str) -> None:
    path = root / relative
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


def v2_tree(root: Path, cpu_max: dict[str, str], *, cgroup: str = "/kubepods/pod1/c1") -> Path:
    """A cgroup v2 host: the process in `cgroup`; `cpu.max` of each listed directory."""
    write(root, "proc/self/cgroup", f"0::{cgroup}\n")
    write(root, "proc/self/mountinfo", V2_MOUNT)
    for directory, value in cpu_max.items():
        write(root, f"sys/fs/cgroup{directory}/cpu.max", value + "\n")
    return root


def four_cpu_sysfs(root: Path) -> Path:
    """`root/cpu/cpuN/topology` for 4 CPUs on one socket, no SMT."""
    for cpu in range(4):
        write(root, f"cpu/cpu{cpu}/topology/core_id", f"{cpu}\n")
        write(root, f"cpu/cpu{cpu}/topology/physical_package_id", "0\n")
        write(root, f"cpu/cpu{cpu}/topology/core_cpus_list", f"{cpu}\n")
    return root / "cpu"


def test_v2_quota_of_one_and_a_half_cpus(tmp_path: Path) -> None:
    root = v2_tree(tmp_path, {"/kubepods/pod1/c1": "150000 100000"})
    limit = read_cpu_limit(root)
    assert limit is not None
    assert limit.cpus == pytest.approx(1.5)
    assert limit.cores == 1
    assert "cpu.max" in limit.source and "v2" in limit.source


def test_v2_parent_quota_caps_the_child(tmp_path: Path) -> None:
    root = v2_tree(
        tmp_path,
        {"/kubepods/pod1/c1": "max 100000", "/kubepods/pod1": "200000 100000", "/kubepods": "max"},
    )
    limit = read_cpu_limit(root)
    assert limit is not None and limit.cores == 2
    assert "pod1/cpu.max" in limit.source


def test_v2_no_quota(tmp_path: Path) -> None:
    root = v2_tree(tmp_path, {"/kubepods/pod1/c1": "max 100000"})
    assert read_cpu_limit(root) is None


def test_v2_container_sees_its_own_cgroup_at_the_mount(tmp_path: Path) -> None:
    """With a cgroup namespace the process is at "/" and the mount shows its own cgroup."""
    root = v2_tree(tmp_path, {"": "250000 100000"}, cgroup="/")
    write(root, "sys/fs/cgroup/cpuset.cpus.effective", "2-5\n")
    limit = read_cpu_limit(root)
    assert limit is not None and limit.cores == 2
    assert read_cpuset(root) == {2, 3, 4, 5}


def test_v1_quota_and_cpuset(tmp_path: Path) -> None:
    write(tmp_path, "proc/self/cgroup", "4:cpu,cpuacct:/docker/abc\n3:cpuset:/docker/abc\n")
    write(tmp_path, "proc/self/mountinfo", V1_MOUNTS)
    write(tmp_path, "sys/fs/cgroup/cpu,cpuacct/docker/abc/cpu.cfs_quota_us", "300000\n")
    write(tmp_path, "sys/fs/cgroup/cpu,cpuacct/docker/abc/cpu.cfs_period_us", "100000\n")
    write(tmp_path, "sys/fs/cgroup/cpuset/docker/abc/cpuset.cpus", "0-1,4\n")
    limit = read_cpu_limit(tmp_path)
    assert limit == CpuLimit(
        3.0, f"cgroup v1 {tmp_path}/sys/fs/cgroup/cpu,cpuacct/docker/abc/cpu.cfs_quota_us"
    )
    assert read_cpuset(tmp_path) == {0, 1, 4}


def test_v1_unlimited_quota_is_minus_one(tmp_path: Path) -> None:
    write(tmp_path, "proc/self/cgroup", "4:cpu,cpuacct:/\n")
    write(tmp_path, "proc/self/mountinfo", V1_MOUNTS)
    write(tmp_path, "sys/fs/cgroup/cpu,cpuacct/cpu.cfs_quota_us", "-1\n")
    write(tmp_path, "sys/fs/cgroup/cpu,cpuacct/cpu.cfs_period_us", "100000\n")
    assert read_cpu_limit(tmp_path) is None


def test_no_cgroup_files_means_no_limit(tmp_path: Path) -> None:
    assert read_cpu_limit(tmp_path) is None
    assert read_cpuset(tmp_path) is None


def test_quota_of_1_5_on_a_4_cpu_host_plans_for_1_core(tmp_path: Path) -> None:
    root = v2_tree(tmp_path / "fs", {"/kubepods/pod1/c1": "150000 100000"})
    sysfs = four_cpu_sysfs(tmp_path / "sys")
    usable = usable_topology(root, sysfs, allowed={0, 1, 2, 3})
    assert usable.runnable_cores == 4
    assert usable.topology.num_cores == 1
    assert usable.topology.cpu_ids() == (0,)
    assert usable.note is not None
    assert "1 core of the 4" in usable.note and "1.5 CPUs" in usable.note


def test_cpuset_narrows_the_cores(tmp_path: Path) -> None:
    root = v2_tree(tmp_path / "fs", {"/kubepods/pod1/c1": "max"})
    write(root, "sys/fs/cgroup/kubepods/pod1/c1/cpuset.cpus.effective", "2-3\n")
    sysfs = four_cpu_sysfs(tmp_path / "sys")
    usable = usable_topology(root, sysfs, allowed={0, 1, 2, 3})
    assert usable.topology.cpu_ids() == (2, 3)
    assert usable.note is None


def test_a_quota_above_the_cores_changes_nothing(tmp_path: Path) -> None:
    root = v2_tree(tmp_path / "fs", {"/kubepods/pod1/c1": "800000 100000"})
    sysfs = four_cpu_sysfs(tmp_path / "sys")
    usable = usable_topology(root, sysfs, allowed={0, 1, 2, 3})
    assert usable.topology.num_cores == 4
    assert usable.note is None
