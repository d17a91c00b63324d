"""`packrat.ray:build_app`'s arguments: `serve run`'s strings and YAML's typed values become
the replicas' launch settings and Ray's deployment options (no Ray needed)."""

from __future__ import annotations

from pathlib import Path

import pytest

from packrat.errors import PackratError
from packrat.ray.app import DEFAULT_MAX_ONGOING_REQUESTS, replica_settings
from packrat.types import parse_plan


def test_serve_run_strings_become_typed_settings() -> None:
    settings = replica_settings(
        {
            "model": "resnet50,bert-base",
            "max_batch_size": "16",
            "max_batch_delay_ms": "2.5",
            "cores": "4",
            "policy": "follow",
            "num_replicas": "3",
            "metrics": "false",
        }
    )
    launch = settings.launch
    assert [m.spec for m in launch.models] == ["resnet50", "bert-base"]
    assert launch.batching.max_batch_size == 16 and launch.cores == 4 and launch.policy == "follow"
    assert all(m.batching == launch.batching for m in launch.models)
    assert launch.batching.max_batch_delay_ms == 2.5
    assert settings.deployment_options["num_replicas"] == 3
    assert settings.serve_metrics is False


def test_defaults_hold_one_replica_per_node_and_room_for_batches() -> None:
    options = replica_settings({"model": "resnet50"}).deployment_options
    assert options["max_replicas_per_node"] == 1
    assert options["max_ongoing_requests"] == DEFAULT_MAX_ONGOING_REQUESTS
    assert options["num_replicas"] == 1
    assert options["ray_actor_options"] == {"num_cpus": 1.0}


def test_autoscaling_by_replicas_targets_two_batches_per_replica() -> None:
    options = replica_settings(
        {
            "models": ["resnet50"],
            "max_batch_size": 8,
            "min_replicas": 2,
            "max_replicas": 10,
            "resources": '{"packrat_node": 1}',
        }
    ).deployment_options
    assert "num_replicas" not in options
    assert options["autoscaling_config"] == {
        "min_replicas": 2,
        "max_replicas": 10,
        "target_ongoing_requests": 16.0,
    }
    assert options["ray_actor_options"]["resources"] == {"packrat_node": 1}


def test_pinned_plan_and_config_file(tmp_path: Path) -> None:
    config = tmp_path / "packrat.toml"
    config.write_text('[server]\nmax_queue = 50\n[[models]]\nspec = "gpt2"\n')
    settings = replica_settings({"config": str(config), "model": "resnet50", "plan": "<2,1,4>"})
    by_spec = {m.spec: m for m in settings.launch.models}
    assert settings.launch.batching.max_queue == 50
    pinned = by_spec["resnet50"].choice
    assert pinned is not None and pinned.describe() == parse_plan("<2,1,4>").describe()
    assert by_spec["gpt2"].choice is None


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ({}, "needs model=NAME"),
        ({"model": "resnet50", "colour": "blue"}, "unknown argument"),
        ({"model": "resnet50", "max_batch_size": "many"}, "must be a number"),
        ({"model": "resnet50", "metrics": "maybe"}, "true or false"),
        ({"model": "resnet50", "max_ongoing_requests": "1"}, "at least 2"),
    ],
)
def test_bad_arguments_say_what_is_wrong(args: dict[str, str], message: str) -> None:
    with pytest.raises(PackratError, match=message):
        replica_settings(args)
