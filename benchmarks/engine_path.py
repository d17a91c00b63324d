"""What Packrat's own path costs on one plan: its `Engine` against the same instances as bare
OpenVINO processes, side by side.

    python benchmarks/engine_path.py --setup WORKDIR/MODEL/setup.json --batch 48 [--rounds 8]

(with the project's venv active; HF_HUB_OFFLINE=1 is set). WORKDIR is a work directory of
`backends_side_by_side.py` whose plan for `--batch` runs every instance on OpenVINO. Four
systems, each in its own processes, all started before the first round and idle while another
runs:

- `packrat`: the benchmark's Packrat runner (`Engine` over the source serve serves, on that
  plan): the split, shared memory, each worker's pre- and postprocessing and inference;
- `ov-pin-on` / `ov-pin-off`: one process per instance of the plan, on the instance's cores,
  its batch, compiled as Packrat's OpenVINO handler compiles it (LATENCY hint, 1 stream, the
  instance's threads, f32) with OpenVINO's own pinning on (as Packrat) or off; one `infer` of
  a ready numpy batch each, all at once; done when all are;
- `ov-throughput`: the benchmark's THROUGHPUT runner (one process, the batch split over its
  streams).

Rounds in rotating order; per system the median, and per other system other / packrat over
the rounds: its median and the 95% CI of its geometric mean (above 1: Packrat faster).
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import statistics
import time
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from harness.stats import Estimate  # noqa: E402

SEED = 0


def bare_instance(
    setup: dict[str, Any], instance: list[Any], pinning: bool, conn: Connection
) -> None:
    threads, batch, cores = instance
    os.sched_setaffinity(0, set(cores))
    import openvino as ov

    from packrat.models import ZooSource

    x = ZooSource(setup["model"]).input_spec.example_batch(batch, SEED).contiguous().numpy()
    config = {
        "INFERENCE_NUM_THREADS": threads, "NUM_STREAMS": 1, "ENABLE_CPU_PINNING": pinning,
        "PERFORMANCE_HINT": "LATENCY", "INFERENCE_PRECISION_HINT": "f32",
    }  # fmt: skip
    request = ov.Core().compile_model(setup["openvino_xml"], "CPU", config).create_infer_request()
    request.infer({0: x})
    conn.send("ready")
    while conn.recv() == "go":
        request.infer({0: x})
        conn.send("done")


def runner(setup: dict[str, Any], name: str, batch: int, conn: Connection) -> None:
    from harness.backends.children import RUNNERS

    system = RUNNERS[name](setup)
    system.prepare(batch)
    system.run(batch)
    conn.send("ready")
    while conn.recv() == "go":
        system.run(batch)
        conn.send("done")
    system.close()


def start(target: Any, *args: Any) -> tuple[mp.Process, Connection]:
    mine, theirs = mp.Pipe()
    process = mp.Process(target=target, args=(*args, theirs))
    process.start()
    theirs.close()  # so that a child that dies is an EOFError here, not a wait forever
    if mine.recv() != "ready":
        raise RuntimeError(f"{target.__name__} did not start")
    return process, mine


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--setup", type=Path, required=True)
    parser.add_argument("--batch", type=int, required=True)
    parser.add_argument("--rounds", type=int, default=8)
    args = parser.parse_args()
    setup = json.loads(args.setup.read_text())
    plan = setup["plans"][str(args.batch)]
    mp.set_start_method("spawn")
    systems = {
        "packrat": [start(runner, setup, "packrat", args.batch)],
        "ov-pin-on": [start(bare_instance, setup, i, True) for i in plan["instances"]],
        "ov-pin-off": [start(bare_instance, setup, i, False) for i in plan["instances"]],
        "ov-throughput": [start(runner, setup, "ov-throughput", args.batch)],
    }
    print(f"plan for {args.batch}: instances (threads, batch, cores) {plan['instances']}")
    found: dict[str, list[float]] = {name: [] for name in systems}
    names = list(systems)
    for r in range(args.rounds):
        for name in names[r % len(names) :] + names[: r % len(names)]:
            started = time.perf_counter()
            for _, conn in systems[name]:
                conn.send("go")
            for _, conn in systems[name]:
                conn.recv()
            found[name].append(1000.0 * (time.perf_counter() - started))
        print(f"round {r + 1}: " + ", ".join(f"{n} {v[-1]:.0f}" for n, v in found.items()))
    for name, ms in found.items():
        print(f"{name}: median {statistics.median(ms):.0f} ms")
    for name in names[1:]:
        ratio = Estimate.of([o / p for o, p in zip(found[name], found["packrat"], strict=True)])
        ci = f"[{ratio.low:.3f}, {ratio.high:.3f}]"
        print(f"{name} / packrat: median {ratio.median:.3f}, 95% CI of the mean {ci}")
    for processes in systems.values():
        for process, conn in processes:
            conn.send("stop")
            process.join()


if __name__ == "__main__":
    main()
