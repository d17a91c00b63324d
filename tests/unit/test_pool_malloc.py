"""Worker malloc tuning: freed large blocks stay in the heap instead of faulting back per batch."""

from __future__ import annotations

import subprocess
import sys

import pytest

CODE = """
import resource, sys
from packrat.pool.malloc import keep_freed_memory
if sys.argv[1] == "keep":
    assert keep_freed_memory()
def cycle():
    for _ in range(4):
        block = b"\\x01" * (64 << 20)  # malloc + memset: touches every page, like activations
        del block
cycle()  # warm up the heap
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
cycle()
print(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
"""


def faults(mode: str) -> int:
    out = subprocess.run(
        [sys.executable, "-c", CODE, mode], check=True, capture_output=True, text=True
    )
    return int(out.stdout)


@pytest.mark.skip_allowed  # the tuning is glibc's: other platforms have nothing to test
@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc malloc tuning")
def test_freed_blocks_are_reused_without_page_faults() -> None:
    default, kept = faults("default"), faults("keep")
    # 4 x 64 MiB by 4 KiB pages is 65536 faults when every block is mapped afresh.
    assert default > 30_000
    assert kept < default / 10
