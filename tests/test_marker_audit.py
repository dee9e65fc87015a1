"""The `slow`/`ui` check (tests/marker_audit.py): what it recognises, and that it fails a test whose marks lie."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from marker_audit import DEFINITIONS, classify_open, classify_process, marker_line, problems

HERE = Path(__file__).resolve().parent
PY = sys.executable


@pytest.mark.parametrize(
    ("argv", "use"),
    [
        ([PY, "-m", "prefect", "server", "start", "--port", "1"], ("slow", "a Prefect server")),  # LocalPrefectServer
        ([PY, "-m", "uvicorn", "--factory", "prefect.server.api.server:create_app"],
         ("slow", "an ephemeral Prefect server")),  # what Prefect starts when no PREFECT_API_URL is set
        ([str(Path(PY).parent / "prefect"), "worker", "start", "--pool", "p"], ("slow", "a Prefect worker")),
        ([PY, str(HERE / "kit" / "gate_flow.py")], ("slow", "a flow runner")),  # prefect_harness.Served
        ([PY, str(HERE / "kit" / "expense_flow.py")], ("slow", "a flow runner")),
        ([PY, "-m", "flows.serve"], ("slow", "a flow runner")),
        ([PY, "-m", "deployments.local_stack", "--home", "h"], ("slow", "the local stack")),
        ([PY, "-m", "deployments.scale_stack", "--run-dir", "d"], ("slow", "the scale-out stack")),
        ([PY, "-m", "prefect", "server", "services", "start"], ("slow", "Prefect's background services")),
        (["/usr/lib/postgresql/15/bin/postgres", "-D", "d"], None),  # quick to start; the stack's server is what counts
        ([PY, "-m", "prefect_micro_agents.local_model", "serve"], ("slow", "the embedded model")),
        (["/x/site-packages/playwright/driver/node", "/x/playwright/driver/package/cli.js", "run-driver"],
         ("ui", "a browser")),
        (["/usr/bin/chromium", "--headless"], ("ui", "a browser")),
        (["/usr/bin/chromium-browser", "--headless"], ("ui", "a browser")),
        (["/repo/scripts/install-chromium"], None),  # installs it; tests/test_ui_setup.py runs it without a browser
        (["git", "-C", "repo", "commit", "-m", "x"], None),
        (["/bin/sh", "-c", "./deploy.sh backend staging abc"], None),
        ([PY, "-c", "import json"], None),
        ([PY, "-m", "prefect_micro_agents.cli", "push", "--sha", "abc"], None),
        ([PY, "-m", "flows.sample_app", "create", "dir"], None),
        (["/tmp/x/fake-python", "-m", "prefect", "server", "start"], None),  # test_local_server's stand-ins
        ([PY, "observe.py"], None),
    ],
)
def test_processes_are_told_apart_by_their_command_line(argv: list[str], use: tuple[str, str] | None) -> None:
    assert classify_process(argv) == use


def test_the_model_weights_are_recognised_by_their_file_name(tmp_path: Path) -> None:
    assert classify_open(tmp_path / "gemma-3-270m-it-Q4_K_M.gguf") == ("slow", "the embedded model")
    assert classify_open(str(tmp_path / ".gemma.gguf.123.part")) == ("slow", "the embedded model")
    assert classify_open(tmp_path / "notes.txt") is None and classify_open(3) is None


def test_problems_name_the_missing_and_the_false_mark() -> None:
    server = ("slow", "a Prefect server")
    assert problems({"slow"}, {server}) == []
    assert problems(set(), {server}) == ["uses a Prefect server but is not marked `slow`: add @pytest.mark.slow"]
    assert problems({"slow", "ui"}, {server}) == [
        f"is marked `ui` but used none of: {DEFINITIONS['ui']}; remove the mark"]
    assert problems({"parametrize"}, set()) == []


def test_pyproject_declares_the_marks_as_the_audit_defines_them() -> None:
    declared = tomllib.loads((HERE.parent / "pyproject.toml").read_text())["tool"]["pytest"]["ini_options"]["markers"]
    assert sorted(declared) == sorted(marker_line(mark) for mark in DEFINITIONS)


INNER_CONFTEST = '''
import pytest

pytest_plugins = ["marker_audit"]  # as tests/conftest.py loads it

@pytest.fixture(scope="session")
def weights(tmp_path_factory):
    path = tmp_path_factory.mktemp("w") / "m.gguf"
    path.write_bytes(b"")  # what loading the embedded model does first
    return path
'''

INNER = '''
import subprocess, sys
import pytest

def test_plain_processes_need_no_mark():
    subprocess.run(["git", "--version"], capture_output=True, check=True)

def test_unmarked_but_uses_the_model(tmp_path):
    (tmp_path / "x.gguf").write_bytes(b"")

@pytest.mark.slow
def test_marked_and_uses_the_model(weights):
    pass

@pytest.mark.slow
def test_marked_and_uses_it_through_a_fixture_set_up_earlier(weights):
    pass

def test_unmarked_and_uses_it_through_a_fixture_set_up_earlier(weights):
    pass

@pytest.mark.slow
def test_marked_but_uses_nothing():
    pass

def test_unmarked_but_starts_a_browser():
    subprocess.run([sys.executable, "-c", "pass", "playwright"], check=True)

@pytest.mark.slow
def test_already_failing_keeps_its_own_failure(tmp_path):
    assert False, "its own failure"
'''


def test_a_test_whose_marks_lie_fails(tmp_path: Path) -> None:
    """A real pytest run of the tests above, with the plugin loaded the way tests/conftest.py loads it."""
    # Laid out like this repository: the configuration at the root, the conftest below it, in tests/.
    (tmp_path / "pytest.ini").write_text("[pytest]\ntestpaths = tests\naddopts = --strict-markers\n")
    (tmp_path / "tests").mkdir()
    (tmp_path / "tests" / "conftest.py").write_text(INNER_CONFTEST)
    (tmp_path / "tests" / "test_inner.py").write_text(INNER)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(HERE), os.environ.get("PYTHONPATH", "")])}
    run = subprocess.run([PY, "-m", "pytest", "-p", "no:cacheprovider", "-rA", "-q"], cwd=tmp_path, env=env,
                         capture_output=True, text=True, timeout=120, check=False)
    outcomes = {name: outcome for outcome, name in re.findall(r"^(PASSED|FAILED) tests/test_inner\.py::(\w+)",
                                                                run.stdout, re.M)}
    assert outcomes == {
        "test_plain_processes_need_no_mark": "PASSED",
        "test_unmarked_but_uses_the_model": "FAILED",
        "test_marked_and_uses_the_model": "PASSED",
        "test_marked_and_uses_it_through_a_fixture_set_up_earlier": "PASSED",
        "test_unmarked_and_uses_it_through_a_fixture_set_up_earlier": "FAILED",
        "test_marked_but_uses_nothing": "FAILED",
        "test_unmarked_but_starts_a_browser": "FAILED",
        "test_already_failing_keeps_its_own_failure": "FAILED",
    }, run.stdout + run.stderr
    assert "uses the embedded model but is not marked `slow`: add @pytest.mark.slow" in run.stdout
    assert "is marked `slow` but used none of" in run.stdout
    assert "uses a browser but is not marked `ui`" in run.stdout
    assert "its own failure" in run.stdout
