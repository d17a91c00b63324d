"""The worker pool: run a plan's instances as pinned processes that share one copy of weights.

`Engine` is the entry point; `EngineConfig` configures it. Importing this package does not
import torch (workers import it after pinning themselves).
"""

from packrat.pool.config import EngineConfig, default_weights_dir
from packrat.pool.core import EngineState
from packrat.pool.engine import Engine
from packrat.pool.memory import MemoryReport, ProcessMemory, memory_report
from packrat.pool.messages import Ready, WorkerInfo
from packrat.pool.split import batch_slices, split_sizes

__all__ = [
    "Engine",
    "EngineConfig",
    "EngineState",
    "MemoryReport",
    "ProcessMemory",
    "Ready",
    "WorkerInfo",
    "batch_slices",
    "default_weights_dir",
    "memory_report",
    "split_sizes",
]
