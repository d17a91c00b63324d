"""Keep freed memory in the worker's heap: the one wrapper around glibc's malloc tuning.

By default glibc serves every allocation above a (dynamic, at most 32 MiB) threshold with its
own mmap and returns it with munmap on free. A CNN's activations are such allocations, so every
batch maps fresh zeroed pages and page-faults on each of them: on ResNet-50 at batch 32 on one
thread, 1.7 million faults and 1.6 s of kernel time per batch, about half of its latency. A
serving process reuses the same sizes batch after batch, so keeping freed memory in the heap
(no per-allocation mmap, no trimming) removes that cost; the price is that the worker keeps
the peak memory of its largest batch, as a serving process would anyway.
"""

from __future__ import annotations

import ctypes
import ctypes.util

_M_TRIM_THRESHOLD = -1  # <malloc.h>
_M_MMAP_THRESHOLD = -3
_INT_MAX = 2**31 - 1


def keep_freed_memory() -> bool:
    """Stop glibc from mmapping large blocks and trimming the heap; False where not glibc."""
    name = ctypes.util.find_library("c")
    if name is None:
        return False
    try:
        mallopt = ctypes.CDLL(name).mallopt
    except (OSError, AttributeError):
        return False  # not glibc (musl, macOS): leave the allocator as it is
    mallopt.argtypes = (ctypes.c_int, ctypes.c_int)
    mallopt.restype = ctypes.c_int
    return bool(mallopt(_M_MMAP_THRESHOLD, _INT_MAX)) and bool(mallopt(_M_TRIM_THRESHOLD, _INT_MAX))
