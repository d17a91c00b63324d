"""`build_app`: the Ray Serve application from `serve run` arguments or a Serve YAML config.

    serve run packrat.ray:build_app model=resnet50 max_batch_size=16 num_replicas=2

or, in a Serve config file:

    applications:
      - name: packrat
        route_prefix: /
        import_path: packrat.ray:build_app
        args: {model: resnet50, max_batch_size: 16, min_replicas: 1, max_replicas: 8}

Arguments:

* `model` (or `models`, comma-separated): zoo names or model files, as `packrat serve` takes;
  `config`: a `packrat serve --config` TOML file; every `[server]` key of that file
  (`max_batch_size`, `policy`, `backend`, `cores`, `metrics_port`, ...) as an argument too.
* `num_replicas` (default 1), or `min_replicas` and `max_replicas` for autoscaling by
  replicas (`target_ongoing_requests`, default 2 x max_batch_size: a full batch running and one
  waiting per replica); `max_replicas_per_node` (default 1: each replica owns its node's
  cores); `num_cpus` (CPUs Ray reserves for a replica, default 1); `resources` (JSON, e.g.
  `{"packrat_node": 1}`, for a custom resource per node); `metrics` (default true: each
  replica serves `/metrics` on its node at `metrics_port`).
* `max_ongoing_requests` (default 1000): Ray's cap on the requests a replica holds at once.
  Packrat batches what it holds, so this must be well above the model's batch size; Ray's
  default of 5 would cap every batch at 5. Requests beyond `max_queue` are refused by Packrat
  (503) as in `packrat serve`.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

from packrat.controller.batching import BATCHING_KEYS, BatchingConfig
from packrat.errors import PackratError
from packrat.server.launch_config import LaunchConfig, load_config_file, with_cli

DEFAULT_MAX_ONGOING_REQUESTS = 1000
_MODEL_ARGS = ("model", "models")
_SERVE_ARGS = {
    "num_replicas",
    "min_replicas",
    "max_replicas",
    "target_ongoing_requests",
    "max_replicas_per_node",
    "max_ongoing_requests",
    "num_cpus",
    "resources",
    "metrics",
}
_PINNED_ARGS = {"plan", "fat", "profile"}  # with_cli's per-model options


@dataclass(frozen=True)
class ReplicaSettings:
    """What every replica serves (`launch`) and how Ray places and scales them."""

    launch: LaunchConfig
    deployment_options: dict[str, Any]
    serve_metrics: bool


def replica_settings(args: dict[str, Any]) -> ReplicaSettings:
    """Parse `build_app`'s arguments (strings from `serve run`, or typed from YAML)."""
    args = dict(args)
    models = _models(args)
    base = load_config_file(Path(str(args.pop("config")))) if "config" in args else LaunchConfig()
    serve_args = {k: args.pop(k) for k in list(args) if k in _SERVE_ARGS}
    pinned = {k: args.pop(k) for k in list(args) if k in _PINNED_ARGS}
    types = _argument_types()
    unknown = sorted(set(args) - set(types) - {"models"})
    if unknown:
        raise PackratError(f"unknown argument(s) {unknown} for packrat.ray:build_app")
    overrides = {key: _typed(key, value, types[key]) for key, value in args.items()}
    if "fat" in pinned:
        pinned["fat"] = _flag("fat", pinned["fat"])
    if "profile" in pinned:
        pinned["profile"] = Path(str(pinned["profile"]))
    launch = with_cli(base, models, **overrides, **pinned)
    if not launch.models:
        raise PackratError("packrat.ray:build_app needs model=NAME (or a config with [[models]])")
    return ReplicaSettings(
        launch,
        _deployment_options(serve_args, launch),
        _flag("metrics", serve_args.get("metrics", True)),
    )


def build_app(args: dict[str, Any]) -> Any:
    """The Serve application (`serve run packrat.ray:build_app model=...`)."""
    from ray import serve

    from packrat.ray.replica import PackratReplica

    settings = replica_settings(args)
    deployment = serve.deployment(name="packrat", **settings.deployment_options)(
        serve.ingress()(PackratReplica)
    )
    return deployment.bind(settings.launch, settings.serve_metrics)


def _models(args: dict[str, Any]) -> list[str]:
    models: list[str] = []
    for key in _MODEL_ARGS:
        value = args.pop(key, None)
        if isinstance(value, list | tuple):
            models.extend(str(v) for v in value)
        elif value is not None:
            models.extend(m.strip() for m in str(value).split(",") if m.strip())
    return models


def _deployment_options(serve_args: dict[str, Any], launch: LaunchConfig) -> dict[str, Any]:
    actor: dict[str, Any] = {"num_cpus": float(serve_args.get("num_cpus", 1))}
    if "resources" in serve_args:
        resources = serve_args["resources"]
        actor["resources"] = json.loads(resources) if isinstance(resources, str) else resources
    options: dict[str, Any] = {
        "ray_actor_options": actor,
        "max_ongoing_requests": int(
            serve_args.get("max_ongoing_requests", DEFAULT_MAX_ONGOING_REQUESTS)
        ),
        "max_replicas_per_node": int(serve_args.get("max_replicas_per_node", 1)),
        # Profiling on first start can take minutes: Ray must not give up on the replica.
        "health_check_timeout_s": 60.0,
    }
    if "min_replicas" in serve_args or "max_replicas" in serve_args:
        largest = max(
            [launch.batching.max_batch_size, *(m.batching.max_batch_size for m in launch.models)]
        )
        options["autoscaling_config"] = {
            "min_replicas": int(serve_args.get("min_replicas", 1)),
            "max_replicas": int(serve_args.get("max_replicas", 1)),
            "target_ongoing_requests": float(
                serve_args.get("target_ongoing_requests", 2 * largest)
            ),
        }
    else:
        options["num_replicas"] = int(serve_args.get("num_replicas", 1))
    if options["max_ongoing_requests"] < 2:
        raise PackratError("max_ongoing_requests must be at least 2 for batches to form")
    return options


def _argument_types() -> dict[str, type]:
    """The type of each argument that sets a LaunchConfig field: its fields, with the
    batching spelled as its flat keys (`BATCHING_KEYS`), as in [server]."""
    launch, batching = LaunchConfig(), BatchingConfig()
    types = {f.name: type(getattr(launch, f.name)) for f in fields(LaunchConfig)}
    del types["batching"]
    return types | {key: type(getattr(batching, key)) for key in BATCHING_KEYS}


def _typed(key: str, value: Any, kind: type) -> Any:
    """A `serve run` argument (always a string) as the LaunchConfig field's type; YAML values
    arrive typed and pass through."""
    kind = _OPTIONAL_FIELDS.get(key, kind)
    if not isinstance(value, str) or kind is str:
        return value
    if kind is bool:
        return _flag(key, value)
    if kind is Path:
        return Path(value)
    if kind in (int, float):
        try:
            return kind(value)
        except ValueError:
            raise PackratError(
                f"argument {key}={value!r} must be a number ({kind.__name__})"
            ) from None
    return value  # e.g. estimator: with_cli parses its text


_OPTIONAL_FIELDS: dict[str, type] = {"model_store": Path, "token_file": Path, "cores": int}
"""LaunchConfig fields whose default is None, and the type of their values."""


def _flag(key: str, value: Any) -> bool:
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in ("1", "true", "yes", "on"):
        return True
    if text in ("0", "false", "no", "off"):
        return False
    raise PackratError(f"argument {key}={value!r} must be true or false")
