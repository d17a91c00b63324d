"""Packrat: lowest-latency DNN inference on CPU servers.

Profile a model (L(threads, batch)), plan the fastest split of T cores and a batch B into thin
instances, and run that plan on pinned worker processes.
"""

from packrat.errors import (
    ModelError,
    PackratError,
    PlanError,
    ProfileError,
    TopologyError,
    WorkerError,
)
from packrat.types import InstanceSpec, Plan

__all__ = [
    "InstanceSpec",
    "ModelError",
    "PackratError",
    "Plan",
    "PlanError",
    "ProfileError",
    "TopologyError",
    "WorkerError",
]
__version__ = "0.1.0"
