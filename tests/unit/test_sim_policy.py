"""The simulator runs the server's plans and policies: fat never switches, auto switches as
the real `PerBatch` decides (switch cost learned from the switches the simulator reports)."""

from __future__ import annotations

import numpy as np
import pytest

from packrat.controller.batching import BatchingConfig
from packrat.controller.estimator import EstimatorConfig
from packrat.controller.policy import FollowLoad, PerBatch
from packrat.optimizer.table import LatencyTable
from packrat.sim import (
    SimConfig,
    SimError,
    SimResult,
    Timing,
    choose_plan,
    make_planning,
    poisson_load,
    simulate_profile,
    stepped,
)
from packrat.workload.schedule import OpenLoop, Phase

CELLS = {
    (1, 1): 50.0, (1, 2): 70.0, (1, 4): 120.0, (1, 8): 230.0,
    (2, 1): 30.0, (2, 2): 45.0, (2, 4): 100.0, (2, 8): 200.0,
}  # fmt: skip
TABLE = LatencyTable.from_cells(CELLS)
BATCHING = BatchingConfig(max_batch_size=8, max_batch_delay_ms=5.0)
# A batch of 1, a burst of 8, a batch of 1, a burst of 8: far apart, each on an idle server.
ONE_EIGHT_ONE_EIGHT = OpenLoop(
    np.array([0.0, *[1.0] * 8, 2.0, *[3.0] * 8]), (Phase("hand", 0.0, 4.0),)
)


def _run(
    policy: str,
    load: OpenLoop,
    switch_ms: float = 1.0,
    estimator: EstimatorConfig | None = None,
) -> SimResult:
    config = SimConfig(
        cores=2,
        policy=policy,
        estimator=estimator or EstimatorConfig(),
        batching=BATCHING,
        timing=Timing(1.0, switch_ms, 0.0),
    )
    return simulate_profile(TABLE, config, load)


def test_the_policies_start_on_the_plans_packrat_serve_starts_on() -> None:
    planning = make_planning(TABLE, SimConfig(cores=2, batching=BATCHING))
    assert choose_plan(planning, "fat").plan.describe() == "<1,2,8>"
    assert choose_plan(planning, "single").plan.describe() == "<2,1,4>"
    assert choose_plan(planning, "fixed").policy is None
    auto = choose_plan(planning, "auto")
    assert auto.plan.describe() == "<2,1,4>"  # the optimal plan for the largest batch
    assert isinstance(auto.policy, PerBatch)
    assert isinstance(choose_plan(planning, "follow").policy, FollowLoad)
    assert choose_plan(planning, "<1,1,3> + <1,1,5>").plan.cores_used == 2


def test_the_simulator_runs_shares_in_chunks_where_the_server_would() -> None:
    def planned(**config: bool) -> LatencyTable:
        table = make_planning(TABLE, SimConfig(cores=2, batching=BATCHING, **config)).table
        assert table is not None
        return table

    # Two threads, batch 4: two chunks of 2 take 2 x 45 = 90 ms against 100 whole.
    assert planned().get(2, 4) == pytest.approx(90.0)
    assert planned(chunks=False).get(2, 4) == pytest.approx(100.0)
    assert planned(interpolate=False).get(2, 4) == pytest.approx(100.0)  # profiled sizes only
    assert planned().get(1, 8) == pytest.approx(230.0)  # where chunks gain nothing: whole


def test_unknown_policies_and_plans_that_do_not_fit_are_refused() -> None:
    planning = make_planning(TABLE, SimConfig(cores=2, batching=BATCHING))
    with pytest.raises(SimError, match="unknown policy 'fastest'"):
        choose_plan(planning, "fastest")
    with pytest.raises(SimError, match="cannot run plan <3,1,4> on 2 cores"):
        choose_plan(planning, "<3,1,4>")


def test_fat_never_switches() -> None:
    result = _run("fat", poisson_load(rate_rps=15.0, duration_s=120.0, seed=2))
    assert result.switches == 0
    assert list(result.time_per_plan_s) == ["<1,2,8>"]
    assert result.time_per_plan_s["<1,2,8>"] == pytest.approx(result.end_s)


def test_auto_switches_to_each_batchs_plan_and_pays_for_it() -> None:
    result = _run("auto", ONE_EIGHT_ONE_EIGHT)
    # Starts on <2,1,4>. Batch of 1: <1,2,1> saves 50 - 30 = 20 ms > 1 + 10% of 30: switch.
    # Burst of 8 on <1,2,1> would take L(2,8) = 200; <2,1,4> takes 120: switch. And so on.
    assert result.switches == 4
    assert result.switch_times_s.tolist() == pytest.approx([0.005, 1.0, 2.005, 3.0])
    # each batch: its delay (5 ms) if not full, the 1 ms switch, its plan's latency, overhead
    single, burst = 5.0 + 1.0 + 30.0 + 1.0, 1.0 + 120.0 + 1.0
    expected = [single, *[burst] * 8, single, *[burst] * 8]
    assert result.latencies_ms == pytest.approx(expected)
    assert set(result.time_per_plan_s) == {"<2,1,4>", "<1,2,1>"}


def test_auto_learns_the_switch_cost_through_switched() -> None:
    # PerBatch starts at a 1 ms switch estimate and averages in each switch reported to it
    # (weight 0.25). At 100 ms a switch: after the 1st its estimate is 25.75 ms and the burst
    # still gains 200 - 120 = 80 > 25.75 + 12; after the 2nd it is 44.3 ms and the next batch
    # of 1 gains only 20 ms: the policy stops switching. A simulator that did not report its
    # switches to the policy would switch 4 times.
    result = _run("auto", ONE_EIGHT_ONE_EIGHT, switch_ms=100.0)
    assert result.switches == 2
    assert result.switch_times_s.tolist() == pytest.approx([0.005, 1.0])


def test_fixed_and_pinned_plans_never_switch() -> None:
    for policy in ("fixed", "single", "<1,2,8>"):
        assert _run(policy, ONE_EIGHT_ONE_EIGHT).switches == 0


@pytest.mark.parametrize("cooldown_s", [2.0, 5.0])
def test_follow_changes_plans_only_after_its_cooldown(cooldown_s: float) -> None:
    # Under a load that steps between 2 and 40 requests/s, follow changes plans a few times,
    # at least its cool-down apart; auto at many batches.
    load = stepped("2:10,40:10,2:10,40:10,2:10", seed=5)
    settings = EstimatorConfig(alpha=0.25, window=16, cooldown_s=cooldown_s)
    follow, auto = _run("follow", load, estimator=settings), _run("auto", load)
    assert 2 <= follow.switches < auto.switches / 4
    assert (np.diff(follow.switch_times_s) >= cooldown_s).all()
    assert (np.diff(follow.switch_times_s) < cooldown_s + 2.0).any()  # not a longer one
    assert (np.diff(auto.switch_times_s) < 2.0).any()


def test_a_plan_needing_threads_the_profile_lacks_cannot_be_timed() -> None:
    config = SimConfig(cores=3, policy="fat", batching=BATCHING)
    with pytest.raises(SimError, match="no latency for 3 threads"):
        simulate_profile(TABLE, config, poisson_load(rate_rps=1.0, duration_s=5.0))


def test_a_planning_is_shared_only_with_simulations_it_fits() -> None:
    config = SimConfig(cores=2, policy="auto", batching=BATCHING)
    planning = make_planning(TABLE, config)
    shared = simulate_profile(planning, config, ONE_EIGHT_ONE_EIGHT)
    assert np.array_equal(shared.done_s, _run("auto", ONE_EIGHT_ONE_EIGHT).done_s)
    with pytest.raises(SimError, match="batches up to 8, not 4"):
        other = SimConfig(cores=2, policy="auto", batching=BatchingConfig(max_batch_size=4))
        simulate_profile(planning, other, ONE_EIGHT_ONE_EIGHT)


def test_the_package_exports_what_it_lists() -> None:
    import packrat.sim

    assert all(hasattr(packrat.sim, name) for name in packrat.sim.__all__)
    assert sorted(packrat.sim.__all__) == sorted(set(packrat.sim.__all__))
