"""Capacity planning: how many nodes of one profile serve R requests/s with p99 under X ms.

Each node is a Packrat server on T cores (one replica per node, as on Ray Serve or
Kubernetes). A load balancer that sends each request to a node picked at random splits a
Poisson stream of R req/s into N independent Poisson streams of R/N (Poisson thinning); so one
node's share is simulated, with the server's own batching, planning and policy
(`simulate_profile`), and N is enough when that node answers every request (no 503) with p99
at or under the target. Routers that look at queue lengths (Ray Serve's power of two choices)
spread load more evenly than random, so the answer errs on the safe side.

The smallest N is found by doubling from 1 until a count meets the target, then bisecting
between the last count that failed and the first that met it: p99 falls as nodes are added
(each node's rate falls), and every count is simulated with the same seed.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from packrat.controller.planning import Planning
from packrat.optimizer.table import LatencyTable
from packrat.sim.arrivals import poisson_load
from packrat.sim.run import SimConfig, make_planning, simulate_profile
from packrat.sim.service import SimError

#: Requests simulated per node count: enough for a p99 from about 200 requests above it.
DEFAULT_REQUESTS = 20_000
#: Simulated seconds at least, so a slow rate still runs through many batches.
MIN_DURATION_S = 30.0


@dataclass(frozen=True)
class NodeCount:
    """One node count tried: each node's rate and what one node did with it."""

    nodes: int
    rate_per_node_rps: float
    requests: int
    refused: int
    p50_ms: float
    p99_ms: float
    meets: bool

    def to_json(self) -> dict[str, Any]:
        return {
            "nodes": self.nodes,
            "rate_per_node_rps": self.rate_per_node_rps,
            "requests": self.requests,
            "refused": self.refused,
            "p50_ms": _finite(self.p50_ms),
            "p99_ms": _finite(self.p99_ms),
            "meets": self.meets,
        }


@dataclass(frozen=True)
class CapacityPlan:
    """The answer: `nodes` (None if no count up to the limit met the target) and every count
    tried, in increasing order."""

    rate_rps: float
    target_p99_ms: float
    cores: int
    nodes: int | None
    tried: tuple[NodeCount, ...]

    def to_json(self) -> dict[str, Any]:
        return {
            "rate_rps": self.rate_rps,
            "target_p99_ms": self.target_p99_ms,
            "cores_per_node": self.cores,
            "nodes": self.nodes,
            "tried": [count.to_json() for count in self.tried],
        }


def nodes_for(
    table: LatencyTable | Planning,
    config: SimConfig,
    rate_rps: float,
    target_p99_ms: float,
    *,
    max_nodes: int = 1000,
    requests: int = DEFAULT_REQUESTS,
) -> CapacityPlan:
    """The fewest nodes of `config.cores` cores, each serving as `config` says with a model
    profiled as `table`, that serve `rate_rps` with p99 <= `target_p99_ms` and no refusal."""
    if not rate_rps > 0 or not target_p99_ms > 0:
        raise SimError("capacity planning needs a rate and a p99 target above 0")
    if max_nodes < 1:
        raise SimError(f"max_nodes must be at least 1, got {max_nodes}")
    planning = table if isinstance(table, Planning) else make_planning(table, config)
    tried: dict[int, NodeCount] = {}

    def attempt(nodes: int) -> NodeCount:
        if nodes not in tried:
            tried[nodes] = _one_node(planning, config, rate_rps, nodes, target_p99_ms, requests)
        return tried[nodes]

    low, high = 0, 1  # low: the largest count known to fail (0: none tried)
    while not attempt(high).meets:
        if high >= max_nodes:
            return CapacityPlan(rate_rps, target_p99_ms, config.cores, None, _sorted(tried))
        low, high = high, min(2 * high, max_nodes)
    while high - low > 1:
        middle = (low + high) // 2
        if attempt(middle).meets:
            high = middle
        else:
            low = middle
    return CapacityPlan(rate_rps, target_p99_ms, config.cores, high, _sorted(tried))


def _one_node(
    planning: Planning,
    config: SimConfig,
    rate_rps: float,
    nodes: int,
    target_p99_ms: float,
    requests: int,
) -> NodeCount:
    rate = rate_rps / nodes
    duration = max(MIN_DURATION_S, requests / rate)
    result = simulate_profile(planning, config, poisson_load(rate, duration, config.seed))
    overall = result.overall()
    latency = overall.latency
    p50 = latency.p50_ms if latency is not None else math.nan
    p99 = latency.p99_ms if latency is not None else math.nan
    meets = overall.refused == 0 and latency is not None and p99 <= target_p99_ms
    return NodeCount(nodes, rate, overall.requests, overall.refused, p50, p99, meets)


def _sorted(tried: dict[int, NodeCount]) -> tuple[NodeCount, ...]:
    return tuple(tried[n] for n in sorted(tried))


def _finite(value: float) -> float | None:
    return value if math.isfinite(value) else None
