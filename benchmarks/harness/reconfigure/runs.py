"""What benchmarks/reconfigure.py runs and keeps: the servers (`Server`), what each did in each
round (`Round`, `ServerRun`), the session as a whole, and how they are saved in the work
directory and read back (`--render-only`)."""

from __future__ import annotations

import argparse
import json
import math
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from packrat.bench.loadgen import LoadResult, Phase, RequestRecord, SwitchSpan, read_json
from packrat.topology import read_topology

from harness.serve import PackratServer

SERVERS = ("auto", "follow", "fat", "plan", "fixed")


@dataclass(frozen=True)
class Server:
    """One server to run the schedule against: its name in the report and its options."""

    name: str
    options: tuple[str, ...]
    follows_load: bool

    @property
    def slug(self) -> str:
        return re.sub(r"[^A-Za-z0-9]+", "-", self.name).strip("-")


@dataclass
class Session:
    """A benchmark run as a whole: its command, when, the servers in the order each round ran
    them, and what it found worth a note."""

    command: str
    measured: str
    notes: list[str] = field(default_factory=list)
    order: list[list[str]] = field(default_factory=list)


@dataclass
class Round:
    """What one server did with one round of the schedule."""

    index: int  # from 0; the report counts from 1
    described: dict[str, Any]  # GET /models/{name}, just before the round
    result: LoadResult
    switches: list[dict[str, Any]]  # GET /models/{name}/switches, those during the round
    switches_counted: int  # the description's switches_total, increase over the round
    switches_in_metrics: float  # packrat_reconfigurations_total, increase over the round

    @property
    def number(self) -> int:
        return self.index + 1

    @property
    def spans(self) -> list[SwitchSpan]:
        start = self.result.start_unix_s
        return [
            SwitchSpan.from_unix(s["at_unix_s"], s["took_ms"] / 1000.0, start)
            for s in self.switches
        ]

    def failed(self) -> int:
        return self.result.summary().overall.failed


@dataclass
class ServerRun:
    """What one server did with the schedule, round after round, and how it stopped."""

    server: Server
    described: dict[str, Any]  # GET /models/{name}, after the warm-up
    rounds: list[Round] = field(default_factory=list)
    exit_code: int | None = None
    leftover_pids: list[int] = field(default_factory=list)

    @property
    def phases(self) -> tuple[Phase, ...]:
        return self.rounds[0].result.phases

    @property
    def records(self) -> list[RequestRecord]:
        """The requests of every round."""
        return [r for rnd in self.rounds for r in rnd.result.records]

    @property
    def switches(self) -> list[dict[str, Any]]:
        """The switches of every round, round after round."""
        return [s for rnd in self.rounds for s in rnd.switches]

    @property
    def switches_counted(self) -> int:
        return sum(rnd.switches_counted for rnd in self.rounds)

    @property
    def switches_in_metrics(self) -> float:
        return sum(rnd.switches_in_metrics for rnd in self.rounds)

    def failed(self) -> int:
        return sum(rnd.failed() for rnd in self.rounds)


@dataclass
class LiveServer:
    """A started server taking its turns: its process (URLs; exit status once stopped) and
    what it did so far."""

    process: PackratServer
    run: ServerRun

    @property
    def name(self) -> str:
        return self.run.server.name


def common_options(args: argparse.Namespace) -> list[str]:
    options = ["--max-batch-size", str(args.max_batch_size),
               "--max-batch-delay", f"{args.max_batch_delay:g}"]  # fmt: skip
    if args.profile is not None:
        options += ["--profile", str(args.profile)]
    return options


def servers(names: Sequence[str], max_batch_size: int) -> list[Server]:
    """The servers named, in the order of SERVERS (auto first: it profiles the model if its
    profile is not cached yet, and every later server reuses it)."""
    unknown = set(names) - set(SERVERS)
    if unknown:
        raise SystemExit(f"unknown servers {sorted(unknown)}: choose from {', '.join(SERVERS)}")
    cores = read_topology().num_cores
    per_instance = math.ceil(max_batch_size / cores)
    plan = f"<{cores},1,{per_instance}>"
    known = {
        "auto": Server("auto", ("--policy", "auto"), True),
        "follow": Server("follow", ("--policy", "follow"), True),
        "fat": Server("fat", ("--fat",), False),
        "plan": Server(f"plan {plan}", ("--plan", plan), False),
        "fixed": Server("fixed", ("--policy", "fixed"), False),
    }
    return [known[name] for name in SERVERS if name in names]


def round_stem(workdir: Path, server: Server, number: int) -> Path:
    """Where round `number` (from 1) of `server` is saved, without a suffix."""
    return workdir / f"{server.slug}-r{number}"


def save_server(run: ServerRun, args: argparse.Namespace) -> None:
    """What concerns the server as a whole, in the work directory: its options, its
    description after the warm-up, its rounds so far and how it stopped."""
    raw = {
        "server": run.server.name,
        "options": [*common_options(args), *run.server.options],
        "described": run.described,
        "rounds": len(run.rounds),
        "exit_code": run.exit_code,
        "leftover_pids": run.leftover_pids,
    }
    (args.workdir / f"{run.server.slug}-server.json").write_text(json.dumps(raw, indent=1))


RUN_OPTIONS = ("model", "rates", "rate_list", "phase_s", "rounds", "seed", "max_batch_size",
               "max_batch_delay", "timeout_s", "profile")  # fmt: skip
"""The options that shape a run; --render-only takes them from the run, not its command."""


def load_saved(names: list[str], args: argparse.Namespace) -> tuple[list[ServerRun], Session]:
    """The runs saved in the work directory by an earlier run (of the servers named), and
    that run's options (into `args`) and session."""
    if args.workdir is None:
        raise SystemExit("--render-only reads the runs of --workdir DIR")
    saved = json.loads((args.workdir / "session.json").read_text())
    for name, value in saved.pop("options").items():
        setattr(args, name, Path(value) if name == "profile" and value else value)
    runs = []
    for server in servers(names, args.max_batch_size):  # the run's --max-batch-size names plan
        path = args.workdir / f"{server.slug}-server.json"
        if not path.exists():
            continue
        raw = json.loads(path.read_text())
        run = ServerRun(server, raw["described"], saved_rounds(server, raw, args.workdir),
                        raw["exit_code"], raw["leftover_pids"])  # fmt: skip
        if run.rounds:
            runs.append(run)
    if not runs:
        raise SystemExit(f"no saved runs in {args.workdir}")
    args.rounds = max(len(run.rounds) for run in runs)
    return runs, Session(**saved)


def saved_rounds(server: Server, raw: dict[str, Any], workdir: Path) -> list[Round]:
    """The rounds of `server` saved in `workdir` (`raw`: its SERVER-server.json). A work
    directory from before --rounds holds one round, in SERVER.json and SERVER-server.json."""
    if "rounds" not in raw:
        result = read_json((workdir / server.slug).with_suffix(".json"))
        return [Round(0, raw["described"], result, raw["switches"], raw["switches_counted"],
                      raw["switches_in_metrics"])]  # fmt: skip
    rounds = []
    for index in range(raw["rounds"]):
        stem = round_stem(workdir, server, index + 1)
        one = json.loads(Path(f"{stem}-server.json").read_text())
        result = read_json(stem.with_suffix(".json"))
        rounds.append(Round(index, one["described"], result, one["switches"],
                            one["switches_counted"], one["switches_in_metrics"]))  # fmt: skip
    return rounds


def discrepancies(server: Server, rnd: Round) -> list[str]:
    """Where the server's three counts of its switches in a round disagree, as notes for the
    report."""
    listed = len(rnd.switches)
    if rnd.switches_counted == listed and round(rnd.switches_in_metrics) == listed:
        return []
    return [
        f"`{server.name}`, round {rnd.number}: {listed} switches listed by the API during the "
        f"round, but switches_total rose by {rnd.switches_counted} and "
        f"packrat_reconfigurations_total by {rnd.switches_in_metrics:.0f}."
    ]
