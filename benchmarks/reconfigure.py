"""Plans switching under a stepped load (issue 4), against fixed plans.

    python benchmarks/reconfigure.py [--model bert-base] [--rates 2,7,2] [--phase-s 40]
        [--rounds 3] [--max-batch-size 8] [--max-batch-delay 5] [--seed 0] [--settle-s 5]
        [--window-s 5] [--servers auto,follow,fat,plan,fixed] [--profile FILE]
        [--output docs/reconfigure.md] [--workdir DIR]

(with the project's venv active; HF_HUB_OFFLINE=1 is set for the servers).

One stepped open-loop schedule, Poisson arrivals at each of --rates for --phase-s seconds
(seeded: the same arrival times for every server and round), is sent to `packrat serve MODEL`
servers:

- `--policy auto` (each batch on the optimal plan for its own size) and `--policy follow` (the
  paper's batch-size estimator): their plans follow the load;
- fixed plans: `--fat`, `--plan '<T,1,ceil(B/T)>'` (T single-thread instances, T the usable
  cores) and `--policy fixed` (the optimal plan for --max-batch-size), stopped right away when
  the management API says it runs the same instances as one of the two.

The machine's speed drifts (on a shared 2-core VM by up to 20% over minutes), so servers
measured minutes apart would differ by more than the 10% judged below even on the same plan.
Hence the design: every server is started at the beginning (each on all the cores, as it would
be alone: only the one under load uses them) and they take turns, in --rounds rounds of the
whole schedule each. Round r starts at the (r mod n)-th of the n servers and goes round them
in order (ABCD, BCDA, CDAB, ...), so each server's rounds are spread over the whole session
and a steady drift falls alike on all of them in the figures pooled over rounds. Each server
is warmed up just before its first round (closed loops of 1, 2, 4, ... up to
--max-batch-size clients).

For every server: requests sent, failures, p50/p99 per phase (all rounds pooled) and the p50
of each phase in each round (to see the drift). For auto and follow also their switches (GET
/models/{name}/switches: count, duration, workers started; counted again from /metrics; each
round's over that round), p50/p99 before, during and after each switch (windows of --window-s
seconds; `packrat.bench.loadgen.switches`), requests in flight during any switch against the
steady ones, the same requests on the best fixed server (its same round: the same arrivals),
and per load level their p50 and p99 over the best fixed server's (the lowest p50 in that
phase), leaving out the first --settle-s seconds of each phase and pooling the requests of all
rounds. Latency counts from each request's scheduled send time.

Writes the report as Markdown (default docs/reconfigure.md; the hand-written analysis after
the `<!-- analysis: ... -->` marker line of an existing file is kept) and the latency
timelines of auto and follow in their first round next to it (reconfigure-auto.png,
reconfigure-follow.png). The work directory gets each server's log, its description and exit
(SERVER-server.json), per round its requests (loadgen JSON and CSV: SERVER-rN.json,
SERVER-rN.csv), switches and descriptions (SERVER-rN-server.json) and timeline
(SERVER-rN.png), and session.json (the command, its options, the order of each round);
without --workdir it is a new temp directory, kept (its model cache removed) and named at the
end. `--render-only --workdir DIR` writes the report again from what DIR holds, running
nothing (--settle-s and --window-s may differ from the run's). Every server is stopped
(SIGTERM, drained) at the end and checked to leave no process behind.

With the defaults on 2 cores it takes about 27 minutes: 4 servers x 3 rounds x 2 minutes of
load (24 minutes), plus about 10 s each to start the 5 servers (one only to be stopped when
--policy fixed runs the plan of another), warm up 4 and stop them; the first run in a work
directory also profiles the model before the first server answers (bert-base: 1 to 3 minutes;
the profile is cached in WORKDIR/cache and --profile FILE skips it). All the servers are up
at once, so the machine needs the memory of 4 of them.
"""

from __future__ import annotations

import argparse
import datetime
import json
import shutil
import sys
import tempfile
from contextlib import ExitStack
from dataclasses import asdict
from pathlib import Path

from packrat.bench.loadgen import steps

from harness.reconfigure.report import render
from harness.reconfigure.running import run_rounds, start_all, stopped
from harness.reconfigure.runs import (
    RUN_OPTIONS,
    SERVERS,
    LiveServer,
    Server,
    ServerRun,
    Session,
    load_saved,
    save_server,
    servers,
)
from harness.reconfigure.timelines import draw_timelines
from harness.report import kept_analysis

REPO = Path(__file__).resolve().parents[1]


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default="bert-base")
    parser.add_argument("--rates", default="2,7,2", help="req/s of each phase, e.g. 2,7,2")
    parser.add_argument("--phase-s", type=float, default=40.0, help="seconds of each phase")
    parser.add_argument(
        "--rounds",
        type=int,
        default=3,
        help="times the schedule is sent to every server, interleaved (against drift)",
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--max-batch-size", type=int, default=8)
    parser.add_argument("--max-batch-delay", type=float, default=5.0, help="ms")
    parser.add_argument(
        "--settle-s", type=float, default=5.0, help="left out of each phase's comparison"
    )
    parser.add_argument("--window-s", type=float, default=5.0, help="before and after a switch")
    parser.add_argument("--servers", default=",".join(SERVERS), help="which, comma-separated")
    parser.add_argument("--timeout-s", type=float, default=30.0, help="per request")
    parser.add_argument("--profile", type=Path, help="profile file for every server")
    parser.add_argument("--output", type=Path, default=REPO / "docs" / "reconfigure.md")
    parser.add_argument("--workdir", type=Path, help="logs and raw results (default: temp)")
    parser.add_argument(
        "--render-only",
        action="store_true",
        help="write the report from the runs saved in --workdir, running nothing",
    )
    args = parser.parse_args()
    try:
        args.rate_list = [float(rate) for rate in args.rates.split(",")]
    except ValueError:
        parser.error(f"--rates takes numbers separated by commas, got {args.rates!r}")
    if not 0 <= args.settle_s < args.phase_s:
        parser.error(f"--settle-s must be >= 0 and less than --phase-s ({args.phase_s:g})")
    if args.rounds < 1:
        parser.error(f"--rounds must be >= 1, got {args.rounds}")
    return args


def main() -> None:
    args = parse_args()
    names = [p for p in args.servers.split(",") if p]
    if args.render_only:
        runs, session = load_saved(names, args)
    else:
        runs, session = run_all(servers(names, args.max_batch_size), args)
    for run in runs:
        draw_timelines(run, args)
    report = render(runs, args, session)
    print(report)
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(report + kept_analysis(args.output))
    print(f"wrote {args.output}; raw results and server logs in {args.workdir}")


def run_all(chosen: list[Server], args: argparse.Namespace) -> tuple[list[ServerRun], Session]:
    """Start every server, run the rounds, stop them all; save each round as it ends, each
    server's stop, and the session, in the work directory."""
    phase_names = [f"{k + 1}: {rate:g} req/s" for k, rate in enumerate(args.rate_list)]
    schedule = steps(
        [(rate, args.phase_s) for rate in args.rate_list], args.seed, names=phase_names
    )
    temporary = args.workdir is None
    args.workdir = args.workdir or Path(tempfile.mkdtemp(prefix="reconfigure-"))
    args.workdir.mkdir(parents=True, exist_ok=True)
    print(
        f"{len(chosen)} servers x {args.rounds} rounds x {schedule.duration_s:g} s of load "
        f"({schedule.num_requests} requests each time); work directory {args.workdir}",
        flush=True,
    )
    command = "python benchmarks/reconfigure.py " + " ".join(sys.argv[1:])
    session = Session(command.strip(), f"{datetime.datetime.now().astimezone():%Y-%m-%d %H:%M %Z}")
    live: list[LiveServer] = []
    try:
        with ExitStack() as stack:  # stops every server started, however this ends
            start_all(chosen, args, stack, live, session.notes)
            if live:
                run_rounds(live, args, schedule, session)
    finally:
        for one in live:
            stopped(one.name, one.process, session.notes)
            one.run.exit_code = one.process.exit_code
            one.run.leftover_pids = one.process.leftover_pids
            save_server(one.run, args)
        if temporary:  # keep the results, not gigabytes of exported weights
            shutil.rmtree(args.workdir / "cache", ignore_errors=True)
        options = {name: getattr(args, name) for name in RUN_OPTIONS}
        saved = {**asdict(session), "options": options}
        (args.workdir / "session.json").write_text(json.dumps(saved, indent=1, default=str))
    runs = [one.run for one in live if one.run.rounds]
    if not runs:
        raise SystemExit("no server ran")
    return runs, session


if __name__ == "__main__":
    main()
