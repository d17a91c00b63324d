"""The model repository and runtime over real worker processes: batching, splits, errors."""

from __future__ import annotations

import asyncio
import multiprocessing
import os
import sys
import threading
from collections.abc import Coroutine
from pathlib import Path
from typing import Any, TypeVar

import pytest

from packrat.controller.batching import BatchingConfig
from packrat.controller.estimator import EstimatorConfig
from packrat.controller.plan_choice import ChoiceKind, PlanChoice
from packrat.controller.policy import FollowLoad
from packrat.models import ZooSource
from packrat.pool import EngineConfig
from packrat.profiler.cache import default_profile_path
from packrat.profiler.contention import ProfileKindSetting
from packrat.profiler.profile_file import Profile, load_profile, save_profile
from packrat.profiler.sweep import torch_version
from packrat.server.errors import BadRequest, Conflict, InferenceFailed, NotFound, Unavailable
from packrat.server.model_setup import QUICK_PASSES, QUICK_POLICY
from packrat.server.repository import ModelConfig, Repository, RepositoryDefaults
from packrat.stats import CellStats
from packrat.topology import format_cpu_list, machine_info, read_topology
from packrat.types import InstanceSpec, Plan

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "fixtures"))
from recording_progress import RecordingProgress  # noqa: E402

T = TypeVar("T")

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"
MARKER_HANDLER = "server_marker_handler.py"
MARKER = -1.0  # the handler raises on it
DIE_MARKER = -2.0  # the handler's worker process exits on it
ENGINE = EngineConfig(start_timeout_s=180.0, batch_timeout_s=60.0)
LONG_MS = 10_000.0  # batches form by size in these tests, never by delay


@pytest.fixture(autouse=True)
def _isolated_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PACKRAT_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")


def run(main: Coroutine[Any, Any, T]) -> T:
    return asyncio.run(asyncio.wait_for(main, timeout=150))


def _gone(pids: list[int]) -> bool:
    """Every pid has exited and been reaped (no zombie left either)."""
    for pid in pids:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            continue
        return False
    return not multiprocessing.active_children()


def _save_synthetic_profile(source: ZooSource) -> Path:
    """A hand-written profile in the cache, so registration plans without profiling (a test
    that serves more than a few batches on it turns calibration off: served batches would
    correct its cells).

    On 2 cores at batch 4 two 1-thread instances of batch 2 (12 ms) beat the fat instance
    (30 ms): the plan is <2,1,2>. At batch 1 the fat instance (5 ms) is the plan, and beats a
    1-thread instance by more than a switch costs.
    """
    topology = read_topology()
    identity = source.identity()
    latencies = {(1, 1): 10.0, (1, 2): 12.0, (1, 4): 40.0, (2, 1): 5.0, (2, 2): 11.0, (2, 4): 30.0}
    profile = Profile(
        model_name=identity.name,
        content_hash=identity.content_hash,
        machine=machine_info(topology).to_json(),
        torch_version=torch_version(),
        cells={k: CellStats(ms, ms, ms, 0.0, 5) for k, ms in latencies.items()},
        engine={"keep_freed_memory": True},
    )
    path = default_profile_path(identity, topology)
    save_profile(profile, path)
    return path


@pytest.mark.slow
@pytest.mark.skipif(len(os.sched_getaffinity(0)) < 2, reason="needs 2 CPUs")
def test_concurrent_requests_get_their_own_outputs() -> None:
    import torch

    source = ZooSource("tiny-resnet")
    _save_synthetic_profile(source)
    inputs = list(source.input_spec.example_batch(12, seed=3).unbind(0))
    reference = source.load()
    reference.initialize()
    expected = [reference.handle([x])[0] for x in inputs]

    async def main() -> None:
        defaults = RepositoryDefaults(batching=BatchingConfig(4, 50.0))
        repository = Repository(defaults, engine_config=ENGINE)
        runtime = await repository.register("tiny-resnet")
        batches: list[tuple[int, tuple[int, ...]]] = []
        runtime.add_listener(lambda record: batches.append((record.size, record.sizes)))
        assert runtime.ready
        assert runtime.plan.describe() == "<2,1,2>"
        assert repository.get("tiny-resnet") is runtime

        model = repository.get("tiny-resnet", "1")
        outputs = await asyncio.gather(*(model.infer(x) for x in inputs))
        for got, want in zip(outputs, expected, strict=True):
            assert torch.allclose(got, want, rtol=1e-4, atol=1e-4)
        assert not torch.allclose(outputs[0], outputs[1])  # distinct inputs, distinct outputs
        assert sum(size for size, _ in batches) == 12
        assert all(size <= 4 and sum(sizes) == size for size, sizes in batches)
        assert runtime.requests_total == 12
        assert (4, (2, 2)) in batches  # a full batch runs on both instances

        described = runtime.describe()
        assert described["plan"]["describe"] == "<2,1,2>"
        assert described["plan"]["predicted_latency_ms"] == 12.0
        assert described["batching"]["max_batch_size"] == 4
        assert described["input_spec"] == {"shape": [3, 32, 32], "dtype": "float32"}
        assert described["model"]["content_hash"] == source.identity().content_hash
        instances = described["instances"]
        assert [len(i["cores"]) for i in instances] == [1, 1]
        used = {c for i in instances for c in i["cores"]}
        assert len(used) == 2 and used <= os.sched_getaffinity(0)  # disjoint, allowed CPUs
        pids = [i["pid"] for i in instances]
        assert all(isinstance(p, int) for p in pids)
        pool = described["pool"]  # the plan's workers, and spares for the policy's other plans
        assert pool["workers"] >= len(instances) and pool["rss_bytes"] > 0

        await repository.unregister("tiny-resnet")
        assert _gone(pids)
        assert not runtime.ready
        with pytest.raises(Unavailable):
            await runtime.infer(inputs[0])
        with pytest.raises(NotFound, match="tiny-resnet"):
            repository.get("tiny-resnet")

    run(main())


@pytest.mark.slow
@pytest.mark.skipif(len(os.sched_getaffinity(0)) < 2, reason="needs 2 CPUs")
def test_a_model_error_fails_only_its_sub_batch() -> None:
    async def main() -> None:
        events: list[tuple[str, str]] = []
        repository = Repository(
            model_store=FIXTURES,
            engine_config=ENGINE,
            on_start=lambda r: events.append(("start", r.state.value)),
            on_stop=lambda r: events.append(("stop", r.state.value)),
        )
        pinned = Plan(
            cores=2,
            batch=4,
            latency_ms=0.0,
            instances=(InstanceSpec(threads=1, batch=2), InstanceSpec(threads=1, batch=2)),
        )
        config = ModelConfig(
            MARKER_HANDLER,
            batching=BatchingConfig(4, LONG_MS),
            choice=PlanChoice(ChoiceKind.PLAN, pinned),
        )
        runtime = await repository.register_model(config)
        assert runtime.name == "server_marker_handler"
        assert runtime.input_spec is None  # numbers, not tensors
        assert runtime.describe()["split"] == "thread share"  # no profile was made
        results = await asyncio.gather(
            *(runtime.infer(r) for r in (1.0, 2.0, MARKER, 4.0)), return_exceptions=True
        )
        assert results[:2] == [2.0, 4.0]
        for failed in results[2:]:
            assert isinstance(failed, InferenceFailed)
            assert "marker request" in str(failed)
        assert runtime.last_batch_sizes == (2, 2)
        assert runtime.busy_s[0] > 0 and runtime.busy_s[1] == 0  # a failure computed nothing
        # The pool survives a model error.
        assert await asyncio.gather(*(runtime.infer(r) for r in (5.0, 6.0, 7.0, 8.0))) == [
            10.0,
            12.0,
            14.0,
            16.0,
        ]
        assert all(busy > 0 for busy in runtime.busy_s)

        with pytest.raises(Conflict, match="already served"):
            await repository.register_model(config)
        with pytest.raises(BadRequest, match="outside the model store"):
            await repository.register("../unit/test_server_split.py")
        with pytest.raises(BadRequest, match="outside the model store"):
            await repository.register(str(Path(__file__).resolve()))
        with pytest.raises(BadRequest, match="neither a zoo model nor a file in the store"):
            await repository.register("no_such_model.py")
        with pytest.raises(NotFound, match="server_marker_handler"):
            repository.get("nope")
        with pytest.raises(NotFound, match="no version '2'"):
            repository.get("server_marker_handler", "2")

        # A worker that dies fails only its sub-batch, with Unavailable; the model keeps
        # taking requests while a fresh worker on the same cores replaces it.
        pids = [i["pid"] for i in runtime.describe()["instances"]]
        restarts: list[int] = []
        runtime.add_restart_listener(restarts.append)
        died = await asyncio.gather(
            *(runtime.infer(r) for r in (1.0, 2.0, DIE_MARKER, 4.0)), return_exceptions=True
        )
        assert died[:2] == [2.0, 4.0]
        for lost in died[2:]:
            assert isinstance(lost, Unavailable)
            assert "died with exit code 3" in str(lost) and "retry" in str(lost)
        assert runtime.ready and runtime.degraded
        assert await asyncio.gather(*(runtime.infer(r) for r in (5.0, 6.0, 7.0, 8.0))) == [
            10.0,
            12.0,
            14.0,
            16.0,
        ]
        assert not runtime.degraded and runtime.restarts_total == 1 and restarts == [1]
        described = runtime.describe()
        new_pids = [i["pid"] for i in described["instances"]]
        assert new_pids[0] == pids[0] and new_pids[1] not in pids
        assert described["instances_restarted"] == 1
        await repository.close()
        assert _gone(pids) and _gone(new_pids)
        assert repository.models() == []
        assert events == [("start", "running"), ("stop", "stopped")]
        with pytest.raises(Unavailable):
            await repository.register(MARKER_HANDLER)

    run(main())


@pytest.mark.slow
def test_register_profiles_on_the_model_s_own_cores() -> None:
    cpu = max(os.sched_getaffinity(0))

    async def main() -> None:
        progress = RecordingProgress()
        defaults = RepositoryDefaults(cores=(cpu,), batching=BatchingConfig(2, LONG_MS))
        repository = Repository(
            defaults, model_store=FIXTURES, engine_config=ENGINE, progress=progress
        )
        runtime = await repository.register(MARKER_HANDLER, name="marker")
        assert progress.descriptions == ["profiling server_marker_handler.py"]
        assert [i.cores for i in runtime.plan.instances] == [(cpu,)]
        assert await asyncio.gather(runtime.infer(1.0), runtime.infer(3.0)) == [2.0, 6.0]
        assert runtime.describe()["split"] == "profile"
        await repository.unregister("marker")

    run(main())
    profiles = list((Path(os.environ["PACKRAT_CACHE_DIR"]) / "profiles").glob("*.json"))
    assert len(profiles) == 1
    saved = load_profile(profiles[0])
    assert set(saved.cells) == {(1, 1), (1, 2)}
    # Made at registration: in QUICK_PASSES passes, each sampling by the whole QUICK_POLICY.
    # (A cached profile keeps the passes it has: the one-pass synthetic profiles above are
    # served without measuring.)
    assert saved.sampling["passes"] == QUICK_PASSES
    assert saved.sampling["min_runs"] == QUICK_POLICY.min_runs
    assert all(len(stats.passes) == QUICK_PASSES for stats in saved.cells.values())
    assert all(p.n >= QUICK_POLICY.min_runs for s in saved.cells.values() for p in s.passes)


def test_model_config_errors_name_the_field() -> None:
    with pytest.raises(ValueError, match="ModelConfig.max_batch_size"):
        ModelConfig("tiny-resnet").with_flat({"max_batch_size": 0})
    with pytest.raises(ValueError, match="ModelConfig.name"):
        ModelConfig("tiny-resnet", name="../evil")
    with pytest.raises(ValueError, match="ModelConfig.cores"):
        ModelConfig("tiny-resnet", cores=(0, 0))
    with pytest.raises(ValueError, match="ModelConfig.choice must be a PlanChoice"):
        ModelConfig("tiny-resnet", choice="fat")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="BatchingConfig.max_batch_delay_ms"):
        RepositoryDefaults(batching=BatchingConfig(max_batch_delay_ms=-1.0))


def test_files_need_a_model_store_over_http() -> None:
    async def main() -> None:
        repository = Repository()
        with pytest.raises(BadRequest, match="no model store"):
            await repository.register(str(FIXTURES / MARKER_HANDLER))
        with pytest.raises(BadRequest, match="refusing to load model from URL"):
            await repository.register("https://example.com/model.pt")
        with pytest.raises(BadRequest, match="ModelConfig.name"):
            await repository.register("tiny-resnet", name="bad name")

    run(main())


def test_profiles_made_at_registration_record_the_engine_setting(tmp_path: Path) -> None:
    """A server run with --release-freed-memory profiles with that setting, and caches the
    profile under the path keyed by it, so the two kinds never mix."""
    cpu = max(os.sched_getaffinity(0))
    engine = EngineConfig(start_timeout_s=180.0, batch_timeout_s=60.0, keep_freed_memory=False)

    async def main() -> None:
        defaults = RepositoryDefaults(cores=(cpu,), batching=BatchingConfig(1, LONG_MS))
        repository = Repository(defaults, model_store=FIXTURES, engine_config=engine)
        await repository.register(MARKER_HANDLER, name="marker")
        await repository.close()

    run(main())
    cache = Path(os.environ["PACKRAT_CACHE_DIR"]) / "profiles"
    (profile,) = [p for p in cache.glob("*-release.json") if "marker" in p.name]
    assert load_profile(profile).engine == {"keep_freed_memory": False}


@pytest.mark.skipif(len(os.sched_getaffinity(0)) < 2, reason="needs 2 CPUs")
def test_a_server_set_to_contention_profiles_each_cell_beside_its_copies() -> None:
    async def main() -> None:
        defaults = RepositoryDefaults(batching=BatchingConfig(1, LONG_MS))
        repository = Repository(
            defaults,
            model_store=FIXTURES,
            engine_config=ENGINE,
            profile_kind=ProfileKindSetting.CONTENTION,
        )
        await repository.register(MARKER_HANDLER, name="marker")
        await repository.close()

    run(main())
    cache = Path(os.environ["PACKRAT_CACHE_DIR"]) / "profiles"
    (path,) = [p for p in cache.glob("*marker*.json") if p.name.endswith("-contention.json")]
    profile = load_profile(path)
    assert profile.kind == "contention" and set(profile.cells) == {(1, 1), (2, 1)}
    # both 1-thread instances were timed, pooled: twice the runs of one instance's round
    assert profile.cells[(1, 1)].n % 2 == 0 and profile.cells[(1, 1)].n >= 6


@pytest.mark.slow
@pytest.mark.skipif(len(os.sched_getaffinity(0)) < 2, reason="needs 2 CPUs")
@pytest.mark.parametrize(
    ("policy", "reason"), [("auto", "batch of"), ("follow", "estimated batch size")]
)
def test_following_the_load_switches_plans_without_losing_a_request(
    policy: str, reason: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Alternating lulls (one request at a time: plan <1,2,1>) and bursts (batches of 4:
    <2,1,2>), with the plan chosen per batch (auto) or by an estimator that follows every
    batch: >= 20 switches, every request answered with its own output, and the switches
    happen in place (no worker started after boot).

    "auto" learns what switches cost from the ones it makes; on a loaded machine they take
    10 ms or more and it rightly stops switching for the synthetic profile's small gains.
    That learning is tested alone (tests/unit/test_controller_policy.py); here it is off, so
    the policy switches whenever the profile says it pays at the default cost."""
    import torch

    from packrat.controller import policy as policies
    from packrat.controller.policy import PolicyKind

    monkeypatch.setattr(policies, "SWITCH_COST_ALPHA", 0.0)

    source = ZooSource("tiny-resnet")
    _save_synthetic_profile(source)
    inputs = list(source.input_spec.example_batch(8, seed=11).unbind(0))
    reference = source.load()
    reference.initialize()
    expected = [reference.handle([x])[0] for x in inputs]

    async def main() -> None:
        repository = Repository(RepositoryDefaults(), engine_config=ENGINE)
        config = ModelConfig(
            "tiny-resnet",
            batching=BatchingConfig(4, 20.0),
            choice=PlanChoice.following(PolicyKind(policy)),
            estimator=EstimatorConfig.per_batch(),
            calibrate=False,  # the profile is made up: served batches would correct it
        )
        runtime = await repository.register_model(config)
        try:
            pool = runtime.describe()
            assert runtime.plan.describe() == "<2,1,2>", pool
            plans_seen = set()
            for cycle in range(12):
                k = cycle % len(inputs)
                got = await runtime.infer(inputs[k])  # a lull: a batch of 1
                assert torch.allclose(got, expected[k], rtol=1e-4, atol=1e-4)
                plans_seen.add(runtime.plan.describe())
                burst = [inputs[(k + j) % len(inputs)] for j in range(8)]
                outputs = await asyncio.gather(*(runtime.infer(x) for x in burst))
                for j, got in enumerate(outputs):
                    want = expected[(k + j) % len(inputs)]
                    assert torch.allclose(got, want, rtol=1e-4, atol=1e-4)
                plans_seen.add(runtime.plan.describe())
            switches = runtime.switches
            assert len(switches) >= 20, switches
            assert plans_seen == {"<1,2,1>", "<2,1,2>"}
            assert all(s.spawned == 0 for s in switches)  # the pool had both workers
            assert all(s.reason.startswith(reason) for s in switches)
            assert runtime.describe()["switches_total"] == len(switches)
        finally:
            await repository.close()

    run(main())


@pytest.mark.slow
@pytest.mark.skipif(len(os.sched_getaffinity(0)) < 2, reason="needs 2 CPUs")
def test_pin_release_and_move_cores_while_requests_run() -> None:
    """The management operations switch plans between batches while requests keep coming:
    every request gets its own answer, and describe shows each plan and policy."""
    import torch

    source = ZooSource("tiny-resnet")
    _save_synthetic_profile(source)
    inputs = list(source.input_spec.example_batch(8, seed=5).unbind(0))
    reference = source.load()
    reference.initialize()
    expected = [reference.handle([x])[0] for x in inputs]
    first, second = read_topology().cpu_ids()[:2]

    async def main() -> None:
        repository = Repository(RepositoryDefaults(), engine_config=ENGINE)
        settings = EstimatorConfig(alpha=0.5, window=2, cooldown_s=0.25)
        config = ModelConfig(
            "tiny-resnet", batching=BatchingConfig(4, 5.0), estimator=settings, calibrate=False
        )  # the profile is made up: served batches would correct it
        runtime = await repository.register_model(config)
        stop = asyncio.Event()
        answered = 0

        async def client(k: int) -> None:
            nonlocal answered
            while not stop.is_set():
                got = await runtime.infer(inputs[k])
                assert torch.allclose(got, expected[k], rtol=1e-4, atol=1e-4)
                answered += 1

        clients = [asyncio.create_task(client(k)) for k in range(6)]
        try:
            assert runtime.policy == "auto"
            await asyncio.sleep(0.2)
            await repository.set_plan("tiny-resnet", plan="fat")
            assert runtime.policy == "pinned" and runtime.plan.describe() == "<1,2,4>"
            await asyncio.sleep(0.2)
            assert runtime.plan.describe() == "<1,2,4>"  # pinned: the load does not move it
            await repository.set_plan("tiny-resnet", plan="<2,1,2>")
            assert runtime.plan.layout == ((1, (first,)), (1, (second,)))
            with pytest.raises(BadRequest, match="needs 2 cores"):  # the pinned plan
                await repository.set_cores("tiny-resnet", [second])
            await repository.set_plan("tiny-resnet", policy="follow")
            assert runtime.policy == "follow" and runtime.plan.describe() == "<2,1,2>"
            following = runtime._control.policy  # released after a pin: the model's own settings
            assert isinstance(following, FollowLoad) and following.estimator.config == settings
            await repository.set_cores("tiny-resnet", [second])
            assert runtime.plan.layout == ((1, (second,)),)
            assert runtime.plan.describe() == "<1,1,4>"
            await asyncio.sleep(0.2)
            await repository.set_cores("tiny-resnet", f"{first},{second}")
            assert runtime.plan.describe() == "<2,1,2>"
            await asyncio.sleep(0.2)
        finally:
            stop.set()
            results = await asyncio.gather(*clients, return_exceptions=True)
        try:
            assert [r for r in results if r is not None] == []
            assert answered > 20
            # Releasing to "follow" found <2,1,2> running already: no switch for it.
            asked = [s.reason for s in runtime.switches if not s.reason.startswith("batch of")]
            assert asked == [
                "pinned",
                "pinned",
                f"cores {second}",
                "cores " + format_cpu_list([first, second]),
            ]
            described = runtime.describe()
            assert described["policy"] == "follow"
            assert described["estimator"] == "alpha=0.5,window=2,cooldown_s=0.25"
            assert described["recent_switches"][-1]["to"] == "<2,1,2>"
            assert runtime.switch_log()[-1] == described["recent_switches"][-1]
            assert described["switches_total"] == len(runtime.switches)
        finally:
            await repository.close()

    run(main())


@pytest.mark.slow
@pytest.mark.skipif(len(os.sched_getaffinity(0)) < 2, reason="needs 2 CPUs")
def test_plans_are_made_off_the_event_loop(monkeypatch: pytest.MonkeyPatch) -> None:
    """Filling the optimizer's table and making plans takes seconds on 128 cores: registration,
    release to a policy and a change of cores make them in a thread, and the policy's asks
    at every batch are lookups, so the event loop never plans."""
    from packrat.controller import planning as planning_module
    from packrat.optimizer import PlanTable

    planned_on: list[int] = []

    class Recording(PlanTable):
        def __init__(self, *args: Any) -> None:
            planned_on.append(threading.get_ident())
            super().__init__(*args)

        def _plan(self, cores: int, batch: int) -> Plan:
            planned_on.append(threading.get_ident())
            return super()._plan(cores, batch)

    monkeypatch.setattr(planning_module, "PlanTable", Recording)
    source = ZooSource("tiny-resnet")
    _save_synthetic_profile(source)
    inputs = list(source.input_spec.example_batch(4, seed=3).unbind(0))
    first, second = read_topology().cpu_ids()[:2]

    async def main() -> int:
        repository = Repository(RepositoryDefaults(), engine_config=ENGINE)
        config = ModelConfig("tiny-resnet", batching=BatchingConfig(4, 5.0), calibrate=False)
        runtime = await repository.register_model(config)
        try:
            await asyncio.gather(*(runtime.infer(x) for x in inputs))
            await repository.set_plan("tiny-resnet", plan="fat")
            await repository.set_plan("tiny-resnet", policy="follow")
            await repository.set_cores("tiny-resnet", [second])
            await repository.set_cores("tiny-resnet", f"{first},{second}")
            await asyncio.gather(*(runtime.infer(x) for x in inputs[:3]))
        finally:
            await repository.close()
        return threading.get_ident()

    loop_thread = run(main())
    assert planned_on and loop_thread not in planned_on
