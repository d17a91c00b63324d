"""Memory accounting from /proc/<pid>/smaps_rollup."""

from __future__ import annotations

import os

import pytest

from packrat.pool.memory import MemoryReport, ProcessMemory, memory_report, parse_smaps_rollup

ROLLUP = """\
55e52de74000-7ffee9335000 ---p 00000000 00:00 0                          [rollup]
Rss:                1752 kB
Pss:                 352 kB
Pss_Anon:            116 kB
Pss_File:            236 kB
Pss_Shmem:             0 kB
Shared_Clean:       1596 kB
"""


def test_parse_smaps_rollup_in_bytes() -> None:
    fields = parse_smaps_rollup(ROLLUP)
    assert fields["Rss"] == 1752 * 1024
    assert fields["Pss"] == 352 * 1024
    assert fields["Pss_File"] == 236 * 1024
    assert "55e52de74000-7ffee9335000 ---p 00000000 00" not in fields


def test_report_sums_processes() -> None:
    a = ProcessMemory(
        1, rss_bytes=10, pss_bytes=6, pss_anon_bytes=4, pss_file_bytes=2, pss_shmem_bytes=0
    )
    b = ProcessMemory(
        2, rss_bytes=20, pss_bytes=9, pss_anon_bytes=5, pss_file_bytes=4, pss_shmem_bytes=0
    )
    report = MemoryReport((a, b))
    assert (report.rss_bytes, report.pss_bytes) == (30, 15)
    assert (report.pss_anon_bytes, report.pss_file_bytes) == (9, 6)


def test_memory_of_this_process() -> None:
    report = memory_report([os.getpid()])
    (mine,) = report.processes
    assert 0 < mine.pss_bytes <= mine.rss_bytes
    assert mine.pss_anon_bytes > 0


def test_memory_of_a_missing_process() -> None:
    with pytest.raises(ProcessLookupError):
        memory_report([2**22 + 12345])
