"""Place a plan's instances on disjoint physical cores, each inside one NUMA node (or
failing that one socket) when it fits, so its threads share caches and local memory.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace

from packrat.errors import TopologyError
from packrat.topology.cores import Topology, format_cpu_list
from packrat.types import Plan

# Exact repacking is exponential in the worst case; beyond these sizes best-fit decreasing stands.
_SEARCH_MAX_INSTANCES = 64
_SEARCH_MAX_STEPS = 20_000


@dataclass
class _Pool:
    """Free cores, by (socket, node) domain; each free list ascends so takes stay adjacent.

    Domains are keyed by the (socket, node) pair, not the node alone, so a VM that reports one
    node across two sockets still never has an instance split across sockets by accident.
    """

    sockets: list[int]
    domain_socket: list[int]
    free: list[list[int]]  # per domain: positions in Topology.cores, ascending

    @classmethod
    def of(cls, topology: Topology) -> _Pool:
        keys = sorted({(c.socket, c.node) for c in topology.cores})
        index = {k: i for i, k in enumerate(keys)}
        free: list[list[int]] = [[] for _ in keys]
        for pos, core in enumerate(topology.cores):
            free[index[(core.socket, core.node)]].append(pos)
        return cls(sorted({s for s, _ in keys}), [s for s, _ in keys], free)

    def take(self, domain: int, count: int) -> list[int]:
        taken, self.free[domain] = self.free[domain][:count], self.free[domain][count:]
        return taken

    def place(self, threads: int) -> list[int]:
        """Cores for one instance: best-fit node, else within one socket, else across sockets."""
        caps = [len(f) for f in self.free]
        fitting = [d for d, cap in enumerate(caps) if cap >= threads]
        if fitting:
            return self.take(min(fitting, key=lambda d: (caps[d], d)), threads)
        per_socket = [
            sum(c for d, c in enumerate(caps) if self.domain_socket[d] == s) for s in self.sockets
        ]
        cores: list[int] = []
        for s_idx, in_socket in _split(threads, per_socket):
            domains = [d for d in range(len(caps)) if self.domain_socket[d] == self.sockets[s_idx]]
            for d_idx, count in _split(in_socket, [caps[d] for d in domains]):
                cores += self.take(domains[d_idx], count)
        return cores


def _split(need: int, caps: Sequence[int]) -> list[tuple[int, int]]:
    """How many of `need` items to take from each group with free capacities `caps`.

    The fewest groups: whole largest groups until the remainder fits one group, and that
    remainder goes to the tightest group that holds it, keeping big holes for later instances.
    The caller guarantees sum(caps) >= need.
    """
    remaining, used, out = need, set[int](), []
    while remaining > 0:
        open_ = [g for g, cap in enumerate(caps) if g not in used and cap > 0]
        fitting = [g for g in open_ if caps[g] >= remaining]
        if fitting:
            out.append((min(fitting, key=lambda g: (caps[g], g)), remaining))
            break
        if not open_:
            # A bug, not a user error: allocate() checks the total before placing anything.
            raise RuntimeError(f"cannot split {need} cores over capacities {list(caps)}")
        g = min(open_, key=lambda g: (-caps[g], g))
        out.append((g, caps[g]))
        used.add(g)
        remaining -= caps[g]
    return out


def _pack_into_nodes(sizes: Sequence[int], caps: Sequence[int]) -> list[int] | None:
    """Exact bin packing: a domain per size with no domain overfull, or None if none was found.

    Depth-first over best-fit choices; domains with equal free space are interchangeable, so
    only one of them is tried per level. Gives up after `_SEARCH_MAX_STEPS` steps.
    """
    free, home, steps = list(caps), [-1] * len(sizes), 0

    def search(i: int) -> bool:
        nonlocal steps
        if i == len(sizes):
            return True
        steps += 1
        if steps > _SEARCH_MAX_STEPS:
            return False
        tried: set[int] = set()
        for d in sorted(range(len(free)), key=lambda d: (free[d], d)):
            if free[d] < sizes[i] or free[d] in tried:
                continue
            tried.add(free[d])
            free[d] -= sizes[i]
            home[i] = d
            if search(i + 1):
                return True
            free[d] += sizes[i]
        return False

    return home if search(0) else None


def _best_fit_decreasing(
    order: Sequence[int], threads: Sequence[int], topology: Topology
) -> dict[int, list[int]]:
    pool = _Pool.of(topology)
    return {i: pool.place(threads[i]) for i in order}


def _repacked(
    order: Sequence[int], threads: Sequence[int], topology: Topology
) -> dict[int, list[int]] | None:
    """Every instance that fits a node packed exactly into nodes; the rest spill afterwards."""
    pool = _Pool.of(topology)
    largest = max(len(f) for f in pool.free)
    fits = [i for i in order if threads[i] <= largest]
    if len(fits) > _SEARCH_MAX_INSTANCES:
        return None
    home = _pack_into_nodes([threads[i] for i in fits], [len(f) for f in pool.free])
    if home is None:
        return None
    placed = {i: pool.take(d, threads[i]) for i, d in zip(fits, home, strict=True)}
    placed.update({i: pool.place(threads[i]) for i in order if i not in placed})
    return placed


def _locality(placed: Mapping[int, list[int]], topology: Topology) -> tuple[int, int]:
    """(instances inside one node, instances inside one socket): higher is better."""
    cores = topology.cores
    nodes = sum(len({(cores[p].socket, cores[p].node) for p in ps}) == 1 for ps in placed.values())
    sockets = sum(len({cores[p].socket for p in ps}) == 1 for ps in placed.values())
    return nodes, sockets


def allocate(plan: Plan, topology: Topology) -> Plan:
    """The plan with every instance's `cores` set to disjoint pinning CPUs, one per thread.

    Instances keep their order; any cores they already had are replaced. Placement is best-fit
    decreasing over NUMA nodes (largest instance first, into the node with the fewest free cores
    that holds it); an instance no node holds spills across the nodes of one socket, and only if
    no socket holds it, across sockets. Within a node instances take adjacent cores in core
    order. Best-fit can split an instance that an exact packing would keep inside a node, so for
    small plans an exact search is tried too and the placement keeping more instances inside a
    node (then a socket) wins. Deterministic: equal inputs give equal outputs.

    Raises TopologyError if the plan uses more threads than the topology has physical cores.
    """
    threads = [inst.threads for inst in plan.instances]
    if sum(threads) > topology.num_cores:
        raise TopologyError(
            f"plan needs {sum(threads)} cores but only {topology.num_cores} physical cores are "
            f"available to this process (CPUs {format_cpu_list(topology.cpu_ids())})"
        )
    order = sorted(range(len(threads)), key=lambda i: (-threads[i], i))
    placed = _best_fit_decreasing(order, threads, topology)
    largest_node = max(len(f) for f in _Pool.of(topology).free)
    # Search only when best-fit split an instance that some node could have held on its own.
    if _locality(placed, topology)[0] < sum(t <= largest_node for t in threads):
        repacked = _repacked(order, threads, topology)
        if repacked is not None and _locality(repacked, topology) > _locality(placed, topology):
            placed = repacked
    instances = tuple(
        replace(inst, cores=tuple(topology.cores[p].cpu for p in sorted(placed[i])))
        for i, inst in enumerate(plan.instances)
    )
    return replace(plan, instances=instances)
