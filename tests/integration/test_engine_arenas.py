"""Requests and outputs through shared-memory arenas, with real workers: the same answers as
through the pipe, outputs that outlive later batches, and no shared memory left behind."""

from __future__ import annotations

import os
import signal
import sys
import threading
from pathlib import Path

import numpy as np
import pytest
import torch

from packrat.bench.resources import shared_memory_entries
from packrat.pool import Engine, EngineConfig, EngineState
from packrat.pool.affinity import process_is_gone
from packrat.pool.arena import ArenaPair
from packrat.types import InstanceSpec

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "fixtures"))
import pool_handlers  # noqa: E402
from test_engine import cpu, plan_of  # noqa: E402

pytestmark = pytest.mark.slow


def _config(tmp_path: Path, **overrides: object) -> EngineConfig:
    fields: dict[str, object] = {
        "weights_dir": tmp_path,
        "start_timeout_s": 120.0,
        "batch_timeout_s": 30.0,
        "share_weights": False,
    }
    fields.update(overrides)
    return EngineConfig(**fields)  # type: ignore[arg-type]


def _arena_fds() -> set[tuple[str, int]]:
    """Packrat's shared-memory files this process holds open, as (name, inode): each arena
    once, though its descriptor and its mapping's (mmap keeps a duplicate) are two."""
    found = set()
    for name in os.listdir("/proc/self/fd"):
        try:
            target = os.readlink(f"/proc/self/fd/{name}")
            inode = os.stat(f"/proc/self/fd/{name}").st_ino
        except OSError:
            continue  # closed meanwhile (the listing's own descriptor)
        if target.startswith("/memfd:packrat-"):
            found.add((target, inode))
    return found


def _mapped_arenas(pid: int) -> set[str]:
    with open(f"/proc/{pid}/maps") as maps:
        return {line.split()[-2] for line in maps if "memfd:packrat-" in line}


def _mixed_requests(seed: int) -> list[object]:
    generator = torch.Generator().manual_seed(seed)
    return [
        torch.randn(3, 224, 224, generator=generator),
        torch.randint(0, 30000, (2, 128), generator=generator),
        torch.randn(5, 4, generator=generator).t(),  # not contiguous
        torch.randn(16, generator=generator).to(torch.bfloat16),
        {"ids": torch.arange(7), "mask": np.ones((2, 3), dtype=np.bool_), "note": "x"},
        [1, "two", None, 3.5],
    ]


def _assert_equal(got: object, want: object) -> None:
    if isinstance(want, torch.Tensor):
        assert isinstance(got, torch.Tensor) and got.dtype == want.dtype
        assert torch.equal(got, want)
    elif isinstance(want, np.ndarray):
        assert isinstance(got, np.ndarray) and np.array_equal(got, want)
    elif isinstance(want, dict):
        assert isinstance(got, dict) and got.keys() == want.keys()
        for key in want:
            _assert_equal(got[key], want[key])
    else:
        assert got == want


def test_answers_are_the_requests_and_outlive_later_batches(tmp_path: Path) -> None:
    plan = plan_of(InstanceSpec(1, 4, (cpu(0),)), InstanceSpec(1, 2, (cpu(1),)))
    shm_before = shared_memory_entries()
    with Engine(pool_handlers.EchoSource(), plan, _config(tmp_path)) as engine:
        first_requests = _mixed_requests(1)
        first = engine.infer(first_requests)
        for pid in engine.pids:
            arenas = _mapped_arenas(pid)
            assert any(name.endswith("-requests") for name in arenas), arenas
        second_requests = _mixed_requests(2)
        second = engine.infer(second_requests)
        for got, want in zip(second, second_requests, strict=True):
            _assert_equal(got, want)
        # The second batch reused the arenas; what the first returned is the engine's own.
        for got, want in zip(first, first_requests, strict=True):
            _assert_equal(got, want)
        first[0].add_(1)  # writable
        assert len(_arena_fds()) == 4  # two per worker
    assert _arena_fds() == set()
    assert shared_memory_entries() <= shm_before


def test_model_outputs_are_identical_through_the_pipe_and_the_arenas(tmp_path: Path) -> None:
    source = pool_handlers.LinearSource(256, 64, seed=5)
    plan = plan_of(InstanceSpec(1, 3, (cpu(0),)))
    requests = pool_handlers.make_linear_requests(3, 256)
    outputs = []
    for shared_tensors in (False, True):
        with Engine(source, plan, _config(tmp_path, shared_tensors=shared_tensors)) as engine:
            outputs.append(engine.infer(requests))
            assert len(_arena_fds()) == (2 if shared_tensors else 0)
    for through_pipe, through_arenas in zip(*outputs, strict=True):
        assert torch.equal(through_pipe, through_arenas)


def test_plain_python_requests_are_answered_as_before(tmp_path: Path) -> None:
    plan = plan_of(InstanceSpec(1, 2, (cpu(0),)), InstanceSpec(1, 1, (cpu(1),)))
    with Engine(pool_handlers.ScriptedSource(), plan, _config(tmp_path)) as engine:
        assert engine.infer([1.0, 2.5, 4.0]) == [2.0, 5.0, 8.0]


def test_requests_growing_to_megabytes_are_answered(tmp_path: Path) -> None:
    plan = plan_of(InstanceSpec(1, 8, (cpu(0),)))
    with Engine(pool_handlers.EchoSource(), plan, _config(tmp_path)) as engine:
        for elements in (10, 150_528, 2_000_000, 10):  # up to 8 MB a request, 64 MB a batch
            requests = [torch.full((elements,), float(k)) for k in range(8)]
            for got, want in zip(engine.infer(requests), requests, strict=True):
                assert torch.equal(got, want)


def test_a_worker_killed_mid_batch_leaves_no_shared_memory(tmp_path: Path) -> None:
    plan = plan_of(InstanceSpec(1, 1, (cpu(0),)), InstanceSpec(1, 1, (cpu(1),)))
    shm_before = shared_memory_entries()
    source = pool_handlers.EchoSource(sleep_ms=1500.0)
    requests = [torch.randn(3, 224, 224), torch.randn(3, 224, 224)]
    with Engine(source, plan, _config(tmp_path)) as engine:
        victim = engine.pids[1]
        killer = threading.Timer(0.5, os.kill, (victim, signal.SIGKILL))
        killer.start()
        first, second = engine.run_split(requests, [1, 1])
        killer.join()
        assert torch.equal(first.outputs[0], requests[0])
        assert second.lost and engine.state is EngineState.DEGRADED
        assert engine.replace_lost() == [1]
        assert len(_arena_fds()) == 4  # the lost worker's two are closed, its successor's open
        for got, want in zip(engine.infer(requests), requests, strict=True):
            assert torch.equal(got, want)
    assert process_is_gone(victim)
    assert _arena_fds() == set()
    assert shared_memory_entries() <= shm_before


def test_reconfigured_pools_keep_answering(tmp_path: Path) -> None:
    both = (cpu(0), cpu(1)) if cpu(0) != cpu(1) else (cpu(0),)
    fat = plan_of(InstanceSpec(len(both), 4, both))
    thin = plan_of(InstanceSpec(1, 2, (cpu(0),)), InstanceSpec(1, 2, (cpu(1),)))
    wider = plan_of(
        InstanceSpec(1, 2, (cpu(0),)), InstanceSpec(1, 1, (cpu(1),)), InstanceSpec(1, 1, (cpu(1),))
    )
    requests = [torch.randn(3, 224, 224) for _ in range(4)]
    with Engine(pool_handlers.EchoSource(), fat, _config(tmp_path)) as engine:
        for plan, spawned in ((thin, 1), (wider, 1), (fat, 0)):
            done = engine.reconfigure(plan)  # re-threads in place, starts workers if needed
            assert done.spawned == spawned
            for got, want in zip(engine.infer(requests), requests, strict=True):
                assert torch.equal(got, want)
        assert len(_arena_fds()) == 2 * len(engine.pool_pids) == 6
    assert _arena_fds() == set()


def test_without_shared_memory_the_pipe_carries_everything(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def unavailable(label: str) -> ArenaPair:
        raise OSError("no memfd here")

    monkeypatch.setattr(ArenaPair, "create", unavailable)
    plan = plan_of(InstanceSpec(1, 2, (cpu(0),)))
    requests = _mixed_requests(3)[:2]
    with Engine(pool_handlers.EchoSource(), plan, _config(tmp_path)) as engine:
        assert _arena_fds() == set()
        for got, want in zip(engine.infer(requests), requests, strict=True):
            _assert_equal(got, want)
