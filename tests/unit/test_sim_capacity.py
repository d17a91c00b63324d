"""Capacity planning: the fewest nodes whose random share of the load meets a p99 target."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from packrat.cli import app
from packrat.controller.batching import BatchingConfig
from packrat.optimizer.table import LatencyTable
from packrat.profiler.profile_file import load_profile
from packrat.sim import SimConfig, SimError
from packrat.sim.capacity import nodes_for

runner = CliRunner()
PUBLISHED = Path(__file__).resolve().parents[1] / "fixtures" / "paper-profiles"
BERT = PUBLISHED / "cloudlab-c6420" / "bert_latency.csv"
CONFIG = SimConfig(cores=16, batching=BatchingConfig(max_batch_size=16))


@pytest.fixture(scope="module")
def table() -> LatencyTable:
    return load_profile(BERT).latency_table()


def test_the_answer_meets_the_target_and_one_node_fewer_does_not(table: LatencyTable) -> None:
    plan = nodes_for(table, CONFIG, 400.0, 250.0, requests=4000)
    assert plan.nodes is not None and plan.nodes > 1
    by_nodes = {count.nodes: count for count in plan.tried}
    answer, fewer = by_nodes[plan.nodes], by_nodes[plan.nodes - 1]
    assert answer.meets and answer.refused == 0 and answer.p99_ms <= 250.0
    assert not fewer.meets
    assert answer.rate_per_node_rps == pytest.approx(400.0 / plan.nodes)
    assert [c.nodes for c in plan.tried] == sorted(by_nodes)


def test_a_stricter_target_needs_at_least_as_many_nodes(table: LatencyTable) -> None:
    loose = nodes_for(table, CONFIG, 400.0, 400.0, requests=4000)
    strict = nodes_for(table, CONFIG, 400.0, 120.0, requests=4000)
    assert loose.nodes is not None and strict.nodes is not None
    assert strict.nodes >= loose.nodes


def test_an_unreachable_target_says_so(table: LatencyTable) -> None:
    plan = nodes_for(table, CONFIG, 400.0, 1.0, max_nodes=4, requests=2000)
    assert plan.nodes is None
    assert max(c.nodes for c in plan.tried) == 4
    assert not any(c.meets for c in plan.tried)


def test_bad_inputs_are_refused(table: LatencyTable) -> None:
    with pytest.raises(SimError):
        nodes_for(table, CONFIG, 0.0, 100.0)
    with pytest.raises(SimError):
        nodes_for(table, CONFIG, 100.0, 100.0, max_nodes=0)


def test_cli_json_table_and_plot(tmp_path: Path) -> None:
    common = ["simulate", "-p", str(BERT), "-T", "16", "--max-batch-size", "16"]
    target = ["--rate", "400", "--target-p99", "250"]
    result = runner.invoke(app, [*common, *target, "--json"])
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert data["cores_per_node"] == 16 and data["nodes"] >= 2
    plot = tmp_path / "capacity.png"
    shown = runner.invoke(app, [*common, *target, "--plot", str(plot)])
    assert shown.exit_code == 0, shown.output
    assert f"{data['nodes']} nodes of 16 cores serve 400 req/s" in shown.stdout
    assert plot.stat().st_size > 0


def test_cli_capacity_needs_a_rate() -> None:
    result = runner.invoke(app, ["simulate", "-p", str(BERT), "-T", "16", "--target-p99", "100"])
    assert result.exit_code != 0
    assert "--target-p99 needs --rate" in result.output
