"""Batch latency side by side: Packrat's plan for each batch size against the best
single-process configuration of each backend (issue 15).

    python benchmarks/backends_side_by_side.py [--models resnet50 bert-base gpt2]
        [--batches 1-64 [MODEL=1-16,32,...]] [--rounds 3] [--warmup 2] [--runs 5] [--resume]
        [--output docs/benchmarks/backends.md]
        [--workdir DIR] [--peak-sizes 1024,2048,4096] [--profile-kind auto|isolated|contention]

(with the project's venv active, from the repository root). Writes the Markdown report, its
plot beside it (backends.png for backends.md) and the raw numbers, every timed batch of every
round, to WORKDIR/backends.json; each system's log is WORKDIR/MODEL/SYSTEM.log. Every
measurement is also appended to WORKDIR/journal.jsonl as it is taken: a run stopped part-way
is finished by the same command with `--resume`, which measures only what the journal lacks.

Issue 15's target: at every batch size from 1 to 64, Packrat's planned batch latency is no
worse than the best single-process configuration of any backend.

For each model, first what `packrat serve MODEL --max-batch-size MAX` serves (MAX: the
largest batch size asked): the backend and precision `select_backend` chooses with
`--backend auto --precision auto` (converting the model into the cache, WORKDIR/cache), the
profile serve makes on it (batch sizes 1, 2, 4, ... up to MAX, every thread count, serve's
quick sampling, cells no optimal plan needs skipped; each cell alone, or beside copies of
itself on the other cores, by `--profile-kind` as serve's: auto, the default, profiles with
contention on 2 to 4 cores; reused from the cache when complete), and the optimizer's plan
for every batch size on the profile interpolated between its batch sizes, placed on the
cores (`Planning.optimal`, the plan serve's auto policy runs a batch of that size on). Then
five systems, each in its own process (no two thread pools share one), all started before
the first round and idle while another is measured, all fed the same seeded random requests
of the model's input spec:

- `packrat`: an `Engine` over the source serve serves, with enough workers for every plan,
  switched in place (`reconfigure`) to the plan for the batch size; timed: `Engine.infer` of
  B requests, the whole round trip (the split among instances, the shared-memory transport,
  each worker's preprocess, inference and postprocess, the answers back);
- `ov-latency`: the OpenVINO IR Packrat converted (fp32 weights, batch dimension dynamic)
  compiled with `PERFORMANCE_HINT: LATENCY` and OpenVINO's defaults otherwise (it computes in
  bf16 by itself on a CPU with native bf16); one `infer` of the batch;
- `ov-throughput`: the same IR with `PERFORMANCE_HINT: THROUGHPUT`; the batch split evenly
  over its `OPTIMAL_NUMBER_OF_INFER_REQUESTS` infer requests (fewer for a smaller batch), run
  at once through an `AsyncInferQueue`; timed until all are done;
- `ort-default`: ONNX Runtime's CPU provider with default session options on the ONNX file
  Packrat converted; one `run` of the batch;
- `torch-fat`: the zoo model as Packrat's torch backend loads it (traced),
  `torch.set_num_threads(physical cores)`; one inference of the batch.

The single-process systems are timed on the batch already stacked (a tensor or numpy array):
only the model runs. Packrat's time includes its round trip, so the comparison leans their way.

Rounds are the replicates (the machine's speed drifts by 10-30% within minutes): in every
round, for every batch size, every system runs `--warmup` untimed and `--runs` timed batches,
in an order that rotates from one batch size to the next and from round to round. Per round and
system the median batch is taken; over rounds, the median of those and the 95% CI of their
geometric mean (`harness.stats.Estimate`). Best / packrat is paired by round (above 1:
Packrat is faster): in each round, the single-process system with the lowest median over the
other rounds (one configuration, as a user would pick it from measurements of their own), its
median in that round over Packrat's. Taking in each round whichever system was fastest, or the
one fastest over the very rounds it is then scored on, would favour the single-process side:
the least of several equally fast, noisy systems is biased low (three runtimes at the
roofline here read ~6% faster than each one does).

The machine's peak: `torch.matmul` of n x n matrices, fp32 and (on a CPU that computes it
natively) bf16, on every physical core, the best rate over `--peak-sizes`; each model's FLOPs
per request from `torch.utils.flop_counter` on its eager module at batch 1 (matrix products
and convolutions). For each batch size the fastest system's rate (FLOPs per request x B / its
median latency) is set against the peak in the precision it computed in.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from harness.backends.children import run_system, run_torch_numbers
from harness.backends.journal import Journal
from harness.backends.processes import Child, start_children
from harness.backends.report import SYSTEMS, ModelRun, Session, write_report
from harness.backends.setup import prepare_model
from harness.rounds import rotated

REPO = Path(__file__).resolve().parents[1]
METHOD = (__doc__ or "")[(__doc__ or "").index("For each model,") :].strip()


@dataclass(frozen=True)
class Settings:
    """How much is measured: rounds, and per round, batch size and system the untimed
    (warmup) and timed batches."""

    rounds: int
    warmup: int
    runs: int


def batches_per_model(entries: list[str], models: list[str]) -> dict[str, list[int]]:
    """Each model's batch sizes from `--batches`: a SPEC for every model, or MODEL=SPEC for
    one (which wins)."""
    default = [e for e in entries if "=" not in e]
    if len(default) > 1:
        raise SystemExit(f"--batches: one batch sizes for every model, not {default}")
    found = {model: parse_batches(default[0] if default else "1-64") for model in models}
    for entry in entries:
        model, _, spec = entry.partition("=")
        if spec:
            if model not in found:
                raise SystemExit(f"--batches {entry!r}: {model} is not in --models {models}")
            found[model] = parse_batches(spec)
    return found


def parse_batches(text: str) -> list[int]:
    """Batch sizes from "1-64", "1,2,4" or "1-8,16,32"."""
    found: set[int] = set()
    for part in text.split(","):
        low, _, high = part.strip().partition("-")
        found.update(range(int(low), int(high or low) + 1))
    if not found or min(found) < 1:
        raise SystemExit(f"--batches {text!r}: give positive batch sizes, e.g. 1-64 or 1,2,4")
    return sorted(found)


def torch_numbers(models: list[str], sizes: list[int], workdir: Path) -> dict[str, Any]:
    """The peak GEMM rates and each model's FLOPs per request, measured in a child process
    (its thread pool ends with it)."""
    from packrat.topology import read_topology

    threads = read_topology().num_cores
    command = [sys.executable, __file__, "--torch-numbers", json.dumps([models, sizes, threads]),
               str(os.getpid())]  # fmt: skip
    with (workdir / "torch-numbers.log").open("w") as log:
        done = subprocess.run(command, stdout=subprocess.PIPE, stderr=log, text=True)
    if done.returncode != 0:
        raise SystemExit(f"measuring the peak failed; see {workdir / 'torch-numbers.log'}")
    return json.loads(done.stdout)  # type: ignore[no-any-return]


# --- rounds -------------------------------------------------------------------------------------


def measure_model(
    run: ModelRun, settings: Settings, folder: Path, clock: Clock, journal: Journal
) -> None:
    """Every round of one model, into `run` (per round medians, every sample); what the
    journal already holds is taken from it, and only the rest is measured."""
    systems = [s for s in SYSTEMS if s not in run.unavailable]
    steps = [
        (number, batch, rotated(systems, number + index))
        for number in range(settings.rounds)
        for index, batch in enumerate(run.batches)
    ]
    for system in systems:
        run.medians[system] = {b: [] for b in run.batches}
        run.notes[system] = {b: [] for b in run.batches}
    taken = {
        (n, b, s): journal.get((run.model, n + 1, b, s)) for n, b, order in steps for s in order
    }
    for entry in taken.values():
        if entry is not None and entry.get("error"):
            run.unavailable.setdefault(entry["system"], entry["error"])
    wanted = {s for (_, _, s), entry in taken.items() if entry is None} - set(run.unavailable)
    children = start_children(Path(__file__), run, folder, journal, wanted) if wanted else {}
    for system in systems:
        if (run.model, system) in journal.ready:
            run.properties.setdefault(system, journal.ready[(run.model, system)])
    try:
        for number, batch, order in steps:
            for system in order:
                entry = taken[(number, batch, system)]
                if entry is None:
                    entry = time_one(run, children, system, batch, number, settings)
                    journal.record(run.model, entry)
                keep(run, entry)
            clock.tick(run, number, settings.rounds, batch, order)
    finally:
        for child in children.values():
            child.stop()


def time_one(
    run: ModelRun,
    children: dict[str, Child],
    system: str,
    batch: int,
    number: int,
    settings: Settings,
) -> dict[str, Any]:
    """One system's batches of `batch` in round `number`, as a journal entry; a system that
    fails is dropped from the model's later rounds (its values nan), and the report says why."""
    entry: dict[str, Any] = {"round": number + 1, "batch": batch, "system": system, "ms": [],
                             "note": ""}  # fmt: skip
    child = children.get(system)
    if child is not None:
        try:
            entry["ms"], entry["note"] = child.time_batches(batch, settings.warmup, settings.runs)
        except RuntimeError as exc:
            print(f"{run.model}: {exc}; dropped", flush=True)
            entry["error"] = f"failed in round {number + 1} at batch {batch}: {exc}"
            run.unavailable[system] = entry["error"]
            child.stop()
            del children[system]
    return entry


def keep(run: ModelRun, entry: dict[str, Any]) -> None:
    """One measurement into the model's per round medians, notes and samples."""
    samples: list[float] = entry["ms"]
    system, batch = entry["system"], entry["batch"]
    run.medians[system][batch].append(statistics.median(samples) if samples else float("nan"))
    run.notes[system][batch].append(entry["note"])
    run.samples.append({k: v for k, v in entry.items() if k != "error"})


class Clock:
    """Progress lines while the rounds run: where they are, the latest medians, time left."""

    def __init__(self, batches_in_all: int) -> None:
        self._total = batches_in_all
        self._done = 0
        self._started = time.monotonic()

    def tick(self, run: ModelRun, number: int, rounds: int, batch: int, order: list[str]) -> None:
        self._done += 1
        elapsed = time.monotonic() - self._started
        left = elapsed / self._done * (self._total - self._done)
        latest = ", ".join(f"{s} {run.medians[s][batch][-1]:.2f}" for s in order)
        print(
            f"{run.model} round {number + 1}/{rounds} batch {batch}: {latest} ms "
            f"({elapsed / 60:.1f} min, about {left / 60:.1f} min left)",
            flush=True,
        )


def estimate_s(runs: list[ModelRun], settings: Settings, done: int) -> float:
    """A rough time for the rounds still to measure (`done` measurements are in the journal):
    each system about as fast as Packrat's plan is predicted to be, plus a minute per model to
    start its processes."""
    per_round_ms = sum(sum(run.predicted_ms.values()) for run in runs)
    measurements = settings.rounds * len(SYSTEMS) * sum(len(run.batches) for run in runs)
    left = 1.0 - done / measurements
    batches = settings.warmup + settings.runs
    rounds_s = settings.rounds * batches * len(SYSTEMS) * per_round_ms / 1000 * 1.5
    return rounds_s * left + 60.0 * len(runs)


# --- main ---------------------------------------------------------------------------------------


def main() -> None:
    args = parse_args()
    if args.child is not None:
        system, setup, parent = args.child
        run_system(system, setup, int(parent))
        return
    if args.torch_numbers is not None:
        models, sizes, threads = json.loads(args.torch_numbers[0])
        run_torch_numbers(models, sizes, threads, int(args.torch_numbers[1]))
        return
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="backends-"))
    workdir.mkdir(parents=True, exist_ok=True)
    os.environ["PACKRAT_CACHE_DIR"] = str(workdir / "cache")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    batches = batches_per_model(args.batches, args.models)
    settings = Settings(args.rounds, args.warmup, args.runs)
    journal = Journal(workdir / "journal.jsonl", args.resume, asdict(settings))
    started = time.monotonic()
    print(
        f"{len(args.models)} models x {sum(map(len, batches.values()))} batch sizes in all x "
        f"{len(SYSTEMS)} systems x "
        f"{args.rounds} rounds x ({args.warmup} + {args.runs}) batches"
        + (f" ({len(journal)} measurements from {journal.path})" if args.resume else "")
        + "; first each model's "
        f"backend choice, conversions and profile (minutes each on a first run, then cached in "
        f"{workdir / 'cache'}), then the peak, then the rounds",
        flush=True,
    )
    runs = [
        prepare_model(model, batches[model], workdir, profile_kind=args.profile_kind)
        for model in args.models
    ]
    sizes = [int(n) for n in args.peak_sizes.split(",")]
    numbers = torch_numbers(args.models, sizes, workdir)
    for run in runs:
        run.flops_per_request = numbers["flops"][run.model]
    print(f"peak GEMM: {numbers['peak']}", flush=True)
    left = estimate_s(runs, settings, len(journal))
    print(f"rounds: about {left / 60:.0f} min", flush=True)
    clock = Clock(args.rounds * sum(len(run.batches) for run in runs))
    from_journal = len(journal)
    for run in runs:
        measure_model(run, settings, workdir / run.model, clock, journal)
    session = Session(
        command="python benchmarks/backends_side_by_side.py " + " ".join(sys.argv[1:]),
        rounds=args.rounds,
        runs=args.runs,
        warmup=args.warmup,
        from_journal=from_journal,
        peak=numbers["peak"],
        models=runs,
        total_s=time.monotonic() - started,
    )
    raw = workdir / "backends.json"
    raw.write_text(json.dumps(asdict(session), indent=1))
    write_report(session, args.output, METHOD)
    print(f"wrote {args.output}, its plot, and the raw numbers to {raw}")


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--models", nargs="+", default=["resnet50", "bert-base", "gpt2"])
    parser.add_argument(
        "--batches",
        nargs="+",
        default=["1-64"],
        help="e.g. 1-64, 1,2,4 or 1-8,16 for every model; MODEL=SPEC for one",
    )
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--runs", type=int, default=5, help="timed batches per round, system")
    parser.add_argument("--warmup", type=int, default=2, help="untimed batches before them")
    parser.add_argument(
        "--resume",
        action="store_true",
        help="take what WORKDIR/journal.jsonl holds (a run stopped part-way, same options) "
        "and measure only the rest; without it the journal starts empty",
    )
    parser.add_argument("--output", type=Path, default=REPO / "docs/benchmarks/backends.md")
    parser.add_argument("--workdir", type=Path, help="default: a new temporary directory")
    parser.add_argument(
        "--profile-kind",
        choices=["auto", "isolated", "contention"],
        default="auto",
        help="how Packrat's profiles are measured, as `packrat serve --profile-kind`",
    )
    parser.add_argument("--peak-sizes", default="1024,2048,4096", help="GEMM sizes n")
    parser.add_argument("--child", nargs=3, help=argparse.SUPPRESS)
    parser.add_argument("--torch-numbers", nargs=2, help=argparse.SUPPRESS)
    return parser.parse_args()


if __name__ == "__main__":
    main()
