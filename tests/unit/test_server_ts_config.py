"""TorchServe's config.properties mapped onto Packrat's settings, with a warning per key
ignored, and combined with --config and the command line."""

from __future__ import annotations

from pathlib import Path

import pytest

from packrat.controller.batching import BatchingConfig
from packrat.errors import PackratError
from packrat.server.launch_config import (
    LaunchConfig,
    with_cli,
    with_ts_models,
    with_ts_settings,
)
from packrat.server.ts_config import map_properties, read_ts_config

FIXTURE = Path(__file__).resolve().parents[1] / "fixtures" / "torchserve" / "config.properties"


def _config(tmp_path: Path, extra: str) -> Path:
    path = tmp_path / "config.properties"
    path.write_text(FIXTURE.read_text() + extra)
    return path


def test_the_docs_example_maps_and_warns_once_per_ignored_key(tmp_path: Path) -> None:
    ts = read_ts_config(_config(tmp_path, "load_models=noop=tiny-resnet\n"))
    assert dict(ts.server) == {
        "host": "127.0.0.1",
        "port": 8080,
        "management_host": "127.0.0.1",
        "management_port": 8081,
        "metrics_host": "127.0.0.1",
        "metrics_port": 8082,
        "max_queue": 1000,
    }
    [model] = ts.models
    assert (model.spec, model.name, model.version) == ("tiny-resnet", "noop", "1.0")
    assert dict(model.settings) == {
        "max_batch_size": 4,
        "max_batch_delay_ms": 100.0,
        "batch_timeout_s": 120.0,
    }
    ignored = [
        "number_of_netty_threads",
        "cors_allowed_origin",
        "cors_allowed_methods",
        "cors_allowed_headers",
        "prefer_direct_buffer",
        "install_py_dep_per_model",
        "noop 1.0: marName",
        "noop 1.0: minWorkers",
        "noop 1.0: maxWorkers",
        "'vgg16' ignored",
    ]
    for key in ignored:
        assert sum(key + " ignored" in w or key in w for w in ts.warnings) == 1, key
    assert len(ts.warnings) == len(ignored)


def test_unknown_keys_and_duplicates_are_named(tmp_path: Path) -> None:
    path = tmp_path / "c.properties"
    path.write_text("made_up_key=1\njob_queue_size=5\njob_queue_size=7\n")
    ts = read_ts_config(path)
    assert ts.server == {"max_queue": 7}
    assert any("job_queue_size is given more than once" in w for w in ts.warnings)
    assert any("made_up_key ignored: not a key" in w for w in ts.warnings)


@pytest.mark.parametrize(
    ("key", "value", "expected"),
    [
        ("default_response_timeout", "30", {"batch_timeout_s": 30.0}),
        ("max_request_size", "6553500", {"max_body_bytes": 6553500}),
        ("metrics_mode", "prometheus", {"metrics_compat": "torchserve"}),
        ("metrics_mode", "legacy", {"metrics_compat": "torchserve"}),
        ("inference_address", "http://0.0.0.0", {"host": "0.0.0.0", "port": 80}),
    ],
)
def test_mapped_keys(key: str, value: str, expected: dict[str, object]) -> None:
    assert dict(map_properties({key: value}, where="c").server) == expected


@pytest.mark.parametrize(
    ("key", "value", "message"),
    [
        ("inference_address", "https://127.0.0.1:8443", "plain HTTP"),
        ("management_address", "127.0.0.1:8081", "http://host:port"),
        ("job_queue_size", "many", "whole number"),
        ("metrics_mode", "statsd", "choose log, prometheus or legacy"),
        ("models", "{not json", "not valid JSON"),
    ],
)
def test_values_that_cannot_be_honoured_are_refused(key: str, value: str, message: str) -> None:
    with pytest.raises(PackratError, match=message):
        map_properties({key: value}, where="c")


def test_load_models_forms(tmp_path: Path) -> None:
    for name in ("a.mar", "b.pt", "notes.txt"):
        (tmp_path / name).write_text("")
    (tmp_path / "folder").mkdir()
    store = str(tmp_path)
    every = map_properties({"model_store": store, "load_models": "all"}, where="c").models
    assert [(m.spec, m.name) for m in every] == [
        ("a.mar", "a"),
        ("b.pt", "b"),
        ("folder", "folder"),
    ]
    named = map_properties({"load_models": "x=a.mar, b.pt ,resnet50"}, where="c").models
    assert [(m.spec, m.name) for m in named] == [
        ("a.mar", "x"),
        ("b.pt", "b"),
        ("resnet50", "resnet50"),
    ]
    assert map_properties({"load_models": "standalone"}, where="c").models == ()
    with pytest.raises(PackratError, match="needs model_store"):
        map_properties({"load_models": "all"}, where="c")


def test_default_version_is_served_and_others_are_named() -> None:
    models = '{"m": {"1.0": {"batchSize": 2}, "2.0": {"defaultVersion": true, "batchSize": 3}}}'
    ts = map_properties({"load_models": "m=m.mar", "models": models}, where="c")
    [model] = ts.models
    assert (model.version, dict(model.settings)) == ("2.0", {"max_batch_size": 3})
    assert any("versions 1.0 ignored" in w for w in ts.warnings)


def test_command_line_wins_over_ts_config_which_wins_over_toml(tmp_path: Path) -> None:
    path = _config(tmp_path, "load_models=noop=tiny-resnet\ndefault_response_timeout=30\n")
    ts = read_ts_config(path)
    base = with_ts_settings(LaunchConfig(batching=BatchingConfig(max_queue=5), max_in_flight=9), ts)
    config = with_cli(base, [], port=0, max_batch_delay_ms=2.0)
    config = with_ts_models(config, ts)
    assert (config.port, config.management_port, config.batching.max_queue) == (0, 8081, 1000)
    assert (config.max_in_flight, config.batch_timeout_s) == (9, 30.0)
    [model] = config.models
    # The model's own settings win; the rest are the server-wide ones, command line included.
    assert (model.name, model.version, model.batching.max_batch_size) == ("noop", "1.0", 4)
    assert (model.batching.max_batch_delay_ms, model.batch_timeout_s, model.batching.max_queue) == (
        100.0,
        120.0,
        1000,
    )
    assert [listener.port for listener in config.listeners()] == [0, 8081, 8082]
