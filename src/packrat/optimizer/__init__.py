"""Pure planning: latency tables in, optimal plans out. Never imports torch."""

from packrat.optimizer.solve import PlanTable, optimize
from packrat.optimizer.table import LatencyTable

__all__ = ["LatencyTable", "PlanTable", "optimize"]
