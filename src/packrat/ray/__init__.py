"""Packrat on Ray Serve: one replica per node, each running Packrat's plans on its node's cores.

    serve run packrat.ray:build_app model=resnet50 max_batch_size=16 num_replicas=4

Each replica is a whole Packrat server without its own listeners: the repository, batcher,
planner and pinned workers of `packrat serve`, with Packrat's TorchServe and Open Inference
Protocol routes served through Ray's HTTP proxy (`packrat.ray.replica`). `build_app` turns
`serve run` arguments or a Serve YAML config's `args` into the deployment (`packrat.ray.app`).
Needs the `ray` extra: `pip install 'packrat[ray]'`.
"""

from packrat.ray.app import build_app, replica_settings
from packrat.ray.replica import PackratReplica

__all__ = ["PackratReplica", "build_app", "replica_settings"]
