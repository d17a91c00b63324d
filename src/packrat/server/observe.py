"""Connect a model runtime to the server's metrics: batches, queue depth, plan, restarts,
corrections of its profile, and the backend it runs on."""

from __future__ import annotations

from packrat.server.metrics import Metrics
from packrat.server.records import BatchRecord, Switch
from packrat.server.runtime import ModelRuntime


def watch(runtime: ModelRuntime, metrics: Metrics) -> None:
    """Record every batch of `runtime` in `metrics`, the plan it serves with, and every change
    of plan."""
    name = runtime.name
    metrics.set_plan(name, runtime.plan.describe())
    metrics.set_queue_depth(name, 0)
    backend = runtime.describe().get("backend")
    if backend:
        metrics.set_backend(name, backend)

    def on_batch(record: BatchRecord) -> None:
        metrics.observe_batch(name, record.sizes, record.compute_s, record.wall_s)
        metrics.observe_queue(name, runtime.version, record.queue_s)
        metrics.set_queue_depth(name, runtime.queue_depth)

    def on_switch(switch: Switch) -> None:
        metrics.observe_switch(name, switch.new_plan, switch.took_s)

    def on_restart(count: int) -> None:
        metrics.observe_restarts(name, count)

    runtime.add_listener(on_batch)
    runtime.add_switch_listener(on_switch)
    runtime.add_restart_listener(on_restart)
    runtime.add_correction_listener(lambda _: metrics.observe_correction(name))
