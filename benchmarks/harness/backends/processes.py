"""The systems' processes of benchmarks/backends_side_by_side.py: one per system and model,
started by running the script again with `--child` (so no two thread pools share a process),
told which batch to time over its stdin, answering one JSON line each."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import IO, Any

from harness.backends.journal import Journal
from harness.backends.report import SYSTEMS, ModelRun

STOP_TIMEOUT_S = 30.0


class Child:
    """One system's process for one model (`script --child`, running
    harness/backends/children.py's `run_system`), timing batches on request; its stderr goes
    to WORKDIR/MODEL/SYSTEM.log."""

    def __init__(self, script: Path, system: str, folder: Path) -> None:
        self.system = system
        self.log = folder / f"{system}.log"
        command = [sys.executable, str(script), "--child", system, str(folder / "setup.json"),
                   str(os.getpid())]  # fmt: skip
        with self.log.open("w") as log:
            self._process = subprocess.Popen(
                command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=log, text=True
            )
        self._stdin: IO[str] = self._process.stdin  # type: ignore[assignment]
        self._stdout: IO[str] = self._process.stdout  # type: ignore[assignment]

    def wait_ready(self) -> dict[str, str]:
        """The settings the system reports once built; RuntimeError if it failed."""
        return self._read()["ready"]  # type: ignore[no-any-return]

    def time_batches(self, batch: int, warmup: int, runs: int) -> tuple[list[float], str]:
        """`runs` timed batches of `batch` (ms) after `warmup` untimed, and its note."""
        command = {"batch": batch, "warmup": warmup, "runs": runs}
        try:
            self._stdin.write(json.dumps(command) + "\n")
            self._stdin.flush()
        except BrokenPipeError:
            raise RuntimeError(self._failure("exited")) from None
        answer = self._read()
        return answer["ms"], answer["note"]

    def stop(self) -> None:
        if self._process.poll() is None:
            self._stdin.close()
            try:
                self._process.wait(STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                self._process.kill()
                self._process.wait()

    def _read(self) -> dict[str, Any]:
        line = self._stdout.readline()
        if not line:
            raise RuntimeError(self._failure("exited"))
        answer: dict[str, Any] = json.loads(line)
        if "error" in answer:
            raise RuntimeError(self._failure(answer["error"]))
        return answer

    def _failure(self, what: str) -> str:
        tail = self.log.read_text().strip().splitlines()[-5:]
        return f"{self.system}: {what} (log {self.log}: {' / '.join(tail)})"


def start_children(
    script: Path, run: ModelRun, folder: Path, journal: Journal, wanted: set[str]
) -> dict[str, Child]:
    """The `wanted` systems (and Packrat's, whose engine must start), started and ready; those
    that cannot start land in `run.unavailable`."""
    children = {s: Child(script, s, folder) for s in SYSTEMS if s in wanted or s == "packrat"}
    for system, child in list(children.items()):
        try:
            run.properties[system] = child.wait_ready()
            journal.record_ready(run.model, system, run.properties[system])
        except RuntimeError as exc:
            print(f"{run.model}: {exc}", flush=True)
            run.unavailable[system] = str(exc)
            child.stop()
            del children[system]
    if "packrat" not in children:
        for child in children.values():
            child.stop()
        raise SystemExit(f"{run.model}: Packrat's engine did not start")
    return children
