"""Every command works on the README's install (`pip install -e .`, no extras).

A subprocess in which every package that only the `test` extra brings is unimportable (the
extra's requirements and whatever they alone pull in, read from pyproject.toml and the
installed metadata) imports every module of packrat and runs the commands that need no model:
plan, simulate, zoo, and loadgen against a stub server. CI also runs every command for real in a
venv without extras (`.ci/smoke-base`); this finds the same mistake in seconds.
"""

from __future__ import annotations

import json
import subprocess
import sys
import tomllib
from collections.abc import Iterable
from importlib import metadata
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

ROOT = Path(__file__).resolve().parents[2]
BERT = ROOT / "tests" / "fixtures" / "paper-profiles" / "cloudlab-c6420" / "bert_latency.csv"


def _closure(requirements: Iterable[str]) -> set[str]:
    """The installed distributions these requirements pull in, transitively (normalized names;
    extras and environment markers honoured)."""
    found: set[str] = set()
    seen: set[tuple[str, frozenset[str]]] = set()
    todo = [(Requirement(text), frozenset[str]()) for text in requirements]
    while todo:
        requirement, parent_extras = todo.pop()
        marker = requirement.marker
        if marker is not None and not any(
            marker.evaluate({"extra": extra}) for extra in {"", *parent_extras}
        ):
            continue
        name, extras = canonicalize_name(requirement.name), frozenset(requirement.extras)
        if (name, extras) in seen:
            continue
        seen.add((name, extras))
        try:
            requires = metadata.distribution(name).requires or []
        except metadata.PackageNotFoundError:
            continue  # not installed here, so nothing can import it either
        found.add(name)
        todo.extend((Requirement(text), extras) for text in requires)
    return found


def _test_only_modules() -> list[str]:
    """Top-level modules whose every distribution comes only with an extra (`test`)."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    extras = set[str]().union(
        *(_closure(requirements) for requirements in project["optional-dependencies"].values())
    )
    test_only = extras - _closure(project["dependencies"])
    return sorted(
        module
        for module, distributions in metadata.packages_distributions().items()
        if all(canonicalize_name(d) in test_only for d in distributions)
    )


# Runs before the action: from here on, importing any of the names in argv[1] fails as if the
# package were not installed.
_WITHOUT_TEST_EXTRA = """\
import importlib.abc, json, sys
BLOCKED = frozenset(json.loads(sys.argv[1]))
assert not BLOCKED & {m.partition(".")[0] for m in sys.modules}, "imported at startup"
class TestExtraOnly(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.partition(".")[0] in BLOCKED:
            raise ModuleNotFoundError(f"No module named {name!r} (test extra only)", name=name)
        return None
sys.meta_path.insert(0, TestExtraOnly())
"""

_RUN_COMMAND = """\
from packrat.cli import app
sys.argv = ["packrat", *sys.argv[2:]]
try:
    app()
except SystemExit as exc:
    assert not exc.code, f"exit status {exc.code}"
"""

_IMPORT_EVERY_MODULE = """\
import importlib, pkgutil, packrat
for module in pkgutil.walk_packages(packrat.__path__, "packrat."):
    if not module.name.endswith(".__main__"):  # that one runs the command line
        importlib.import_module(module.name)
"""


def _without_test_extra(code: str, *args: str) -> subprocess.CompletedProcess[str]:
    blocked = _test_only_modules()
    return subprocess.run(
        [sys.executable, "-c", _WITHOUT_TEST_EXTRA + code, json.dumps(blocked), *args],
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_the_test_extra_is_what_is_blocked() -> None:
    blocked = _test_only_modules()
    assert {"pytest", "hypothesis", "mypy", "schemathesis", "tritonclient"} <= set(blocked)
    # Base dependencies and what they pull in stay importable, even where the extra needs them:
    # the backends' runtimes among them (the default install serves on the fastest).
    base = {"torch", "numpy", "typer", "fastapi", "packaging", "anyio", "onnxruntime", "openvino"}
    assert not base & set(blocked)
    result = _without_test_extra("import hypothesis")
    assert result.returncode != 0 and "test extra only" in result.stderr


def test_every_module_imports_without_the_test_extra() -> None:
    result = _without_test_extra(_IMPORT_EVERY_MODULE)
    assert result.returncode == 0, result.stderr


@pytest.mark.parametrize(
    "args",
    [
        ["plan", "-p", str(BERT), "-T", "16", "-B", "64"],
        ["simulate", "-p", str(BERT), "-T", "16", "--rate", "20", "--duration", "10"],
        ["zoo"],
        ["loadgen", "{stub}", "-m", "m", "--concurrency", "2", "--requests", "4", "--shape", "4"],
    ],
    ids=lambda args: args[0],
)
def test_command_runs_without_the_test_extra(
    args: list[str], stub_model_server: tuple[str, list[tuple[str, bytes]]]
) -> None:
    result = _without_test_extra(
        _RUN_COMMAND, *(a.replace("{stub}", stub_model_server[0]) for a in args)
    )
    assert result.returncode == 0, result.stderr
