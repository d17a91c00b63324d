"""What an engine measures and reports from inside its workers: example requests, timed runs
of one instance or of all at once (under contention), each worker's threads and affinity, and
the workers' memory. The profiler and the server's reports use these; batches never do.
"""

from __future__ import annotations

from typing import Any

from packrat.errors import WorkerError
from packrat.pool.core import EngineCore
from packrat.pool.memory import MemoryReport, memory_report
from packrat.pool.messages import (
    Command,
    Describe,
    ExampleRequests,
    Examples,
    Measure,
    Measured,
    WorkerInfo,
)
from packrat.stats import SamplingPolicy


class Measuring(EngineCore):
    """The engine's measurements (see `packrat.pool.engine.Engine`)."""

    def example_requests(self, batch_size: int) -> list[Any]:
        """`batch_size` example requests made by the model's handler (in instance 0)."""
        with self._lock:
            self._check_running()
            worker = self._workers.processes[0]
            (examples,) = self._replies([worker], [Examples(batch_size)], None, ExampleRequests)
            return list(examples.requests)

    def measure(self, instance: int, batch_size: int, policy: SamplingPolicy) -> list[float]:
        """Timed inference latencies (ms) of `batch_size` example requests on one instance.

        Runs inside the worker (see `worker.measure_inference`); other instances stay idle.
        """
        if not 0 <= instance < len(self._plan.instances):
            raise ValueError(
                f"instance must be in [0, {len(self._plan.instances)}), got {instance}"
            )
        with self._lock:
            self._check_running()
            worker = self._workers.processes[instance]
            command = Measure(batch_size, policy)
            timeout_s = self._measure_timeout_s(policy)
            (measured,) = self._replies([worker], [command], timeout_s, Measured)
            return list(measured.samples_ms)

    def measure_all(self, policy: SamplingPolicy) -> list[list[float]]:
        """Every instance times its own plan batch, all at the same time (under contention).

        Returns each instance's latencies (ms) in plan order.
        """
        with self._lock:
            self._check_running()
            commands: list[Command] = [
                Measure(instance.batch, policy) for instance in self._plan.instances
            ]
            timeout_s = self._measure_timeout_s(policy)
            workers = self._workers.processes[: len(commands)]
            measured = self._replies(workers, commands, timeout_s, Measured)
            return [list(one.samples_ms) for one in measured]

    def describe(self) -> list[WorkerInfo]:
        """Each plan worker's torch thread counts and per-thread CPU affinity, in plan order."""
        with self._lock:
            self._check_running()
            timeout_s = self._config.batch_timeout_s
            workers = self._workers.processes[: len(self._plan.instances)]
            commands: list[Command] = [Describe() for _ in workers]
            return self._replies(workers, commands, timeout_s, WorkerInfo)

    def memory(self) -> MemoryReport:
        """RSS and PSS of the worker processes (PSS sums to the memory they use together)."""
        with self._lock:
            self._check_running()
            try:
                return memory_report(self.pids)
            except ProcessLookupError as exc:
                raise WorkerError(f"a worker exited: {exc}") from exc

    def _measure_timeout_s(self, policy: SamplingPolicy) -> float | None:
        """How long a measurement may take: the policy's time cap plus, per run it may make
        regardless of that cap (warmup, min_runs, one more), one `batch_timeout_s`."""
        if self._config.batch_timeout_s is None:
            return None
        runs = policy.warmup_runs + policy.min_runs + 1
        return policy.max_time_s + runs * self._config.batch_timeout_s
