"""PACKRAT_FORBID_SKIPS=1 (CI) turns every skip into a failure that names the skip's reason,
except a test marked `skip_allowed`; expected failures stay expected. The suite's own
conftest runs inside a pytest run of small test files (pytester)."""

from __future__ import annotations

from pathlib import Path

import pytest

pytest_plugins = ["pytester"]

CONFTEST = Path(__file__).resolve().parents[1] / "conftest.py"

TESTS = """
import pytest

@pytest.fixture
def tool():
    pytest.skip("no tool on this machine")

def test_runs():
    pass

def test_skips_in_its_body():
    pytest.skip("no widget here")

@pytest.mark.skipif(True, reason="needs 2 CPUs")
def test_skips_by_mark():
    pass

def test_skips_in_a_fixture(tool):
    pass

@pytest.mark.skip_allowed
@pytest.mark.skipif(True, reason="glibc only")
def test_skips_by_design():
    pass

@pytest.mark.xfail(reason="a known bug")
def test_fails_as_expected():
    assert False
"""


@pytest.fixture
def suite(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch) -> pytest.Pytester:
    """A test folder with the suite's conftest and marker, and no skip setting inherited."""
    monkeypatch.delenv("PACKRAT_FORBID_SKIPS", raising=False)
    pytester.makeconftest(CONFTEST.read_text())
    pytester.makeini("[pytest]\nmarkers =\n    skip_allowed: may skip\n")
    return pytester


def test_without_the_setting_skips_are_skips(suite: pytest.Pytester) -> None:
    suite.makepyfile(test_tools=TESTS)
    result = suite.runpytest("-p", "no:xdist", "-p", "no:cacheprovider")
    result.assert_outcomes(passed=1, skipped=4, xfailed=1)
    assert result.ret == pytest.ExitCode.OK


def test_forbidden_skips_fail_with_their_reason_unless_allowed(
    suite: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PACKRAT_FORBID_SKIPS", "1")
    suite.makepyfile(test_tools=TESTS)
    result = suite.runpytest("-p", "no:xdist", "-p", "no:cacheprovider", "-rfEs")
    # A skip in the test's body fails its call; one from a mark or a fixture fails its setup.
    result.assert_outcomes(passed=1, failed=1, errors=2, skipped=1, xfailed=1)
    assert result.ret == pytest.ExitCode.TESTS_FAILED
    for reason in ("no widget here", "needs 2 CPUs", "no tool on this machine"):
        result.stdout.fnmatch_lines(
            [f"*PACKRAT_FORBID_SKIPS=1 forbids this skip at *test_tools.py:*: Skipped: {reason}*"]
        )
    result.stdout.fnmatch_lines(["SKIPPED *test_tools.py:*: glibc only"])


def test_a_module_skipped_while_collected_is_a_collection_error(
    suite: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PACKRAT_FORBID_SKIPS", "1")
    suite.makepyfile(
        test_optional='import pytest\npytest.importorskip("no_such_module_here")\n'
        "def test_uses_it():\n    pass\n"
    )
    result = suite.runpytest("-p", "no:xdist", "-p", "no:cacheprovider")
    result.assert_outcomes(errors=1)
    assert result.ret == pytest.ExitCode.INTERRUPTED
    result.stdout.fnmatch_lines(["*forbids this skip*: could not import 'no_such_module_here'*"])
