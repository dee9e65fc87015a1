"""What the `slow` and `ui` marks mean, checked on every test so the marks cannot drift from what the tests start.

- slow: the test needs a Prefect server (the session's, one of its own, or an ephemeral one Prefect starts), a flow
  runner or worker, or the embedded model (its server or its 250 MB weights).
- ui: the test drives a browser (headless Chromium through Playwright).

Tests without a mark may start short-lived local processes (git, shell commands, the sample app's services) and
stay fast: `pytest -m "not slow"` runs them.

A pytest plugin (tests/conftest.py loads it with `pytest_plugins`). How it is seen: an audit hook (PEP 578)
classifies every process this test process starts and every file it opens, while a test is set up and runs, and
while any fixture is set up. A test is charged with what it did itself and with what each fixture it uses did when
that fixture was set up, so a session server started for an earlier test still counts. A test that uses any of it
without the mark fails, and so does a test marked for something it never used (the mark would be false, and
`-m "not slow"` would lose a fast test). Processes that the test's processes start are not seen: a runner's flow
runs, the services a local stack starts; what started them is.
"""

from __future__ import annotations

import os
import re
import sys
from collections.abc import Generator, Iterable, Iterator
from contextlib import contextmanager
from typing import Any

import pytest

__all__ = ["DEFINITIONS", "Use", "classify_open", "classify_process", "install", "marker_line", "problems",
           "pytest_configure", "pytest_fixture_setup", "pytest_runtest_makereport", "pytest_runtest_setup",
           "pytest_runtest_teardown", "recording"]

Use = tuple[str, str]  # (mark, what was used)

DEFINITIONS = {
    "slow": "a Prefect server (the session's, its own or an ephemeral one), a flow runner or worker, a flow-run "
            "launcher (its server or its client), or the embedded model (its server or its weights)",
    "ui": "a browser (headless Chromium through Playwright)",
}
_PY = r"(?:^|[\s/])python[\d.]*"  # a Python interpreter (not tests' `fake-python` stand-ins)
_PROCESSES: list[tuple[str, str, re.Pattern[str]]] = [
    ("slow", "a Prefect server", re.compile(_PY + r" -m prefect server start\b")),
    ("slow", "an ephemeral Prefect server", re.compile(_PY + r" -m uvicorn\b.*\bprefect\.server\b")),
    ("slow", "a Prefect worker", re.compile(r"(?:^|[\s/])prefect worker start\b|" + _PY + " -m prefect worker start")),
    ("slow", "a flow runner", re.compile(_PY + r" (?:-m flows\.serve\b|\S*\b(?:serve|\w*_flow)\.py\b)")),
    ("slow", "the local stack", re.compile(_PY + r" (?:-m deployments\.local_stack\b|\S*\blocal_stack\.py\b)")),
    ("slow", "the scale-out stack", re.compile(_PY + r" (?:-m deployments\.scale_stack\b|\S*\bscale_stack\.py\b)")),
    ("slow", "Prefect's background services", re.compile(_PY + r" -m prefect server services start\b")),
    ("slow", "the embedded model", re.compile(_PY + r" -m prefect_micro_agents\.local_model\b")),
    ("slow", "a flow-run launcher", re.compile(_PY + r" -m prefect_micro_agents\.launcher\b")),
    ("ui", "a browser", re.compile(r"\bplaywright\b|(?<!install-)chrom", re.I)),  # not scripts/install-chromium
]

_sinks: list[set[Use]] = []  # one per active recording (a test, and any fixture being set up inside it)


def classify_process(argv: Any) -> Use | None:
    """What a started process is, by its command line; None for anything quick (git, sh, python -c, ...)."""
    if isinstance(argv, str | bytes | os.PathLike):
        argv = [argv]
    line = " ".join(os.fsdecode(a) for a in argv)
    return next(((mark, what) for mark, what, pattern in _PROCESSES if pattern.search(line)), None)


def classify_open(path: Any) -> Use | None:
    """The embedded model's weights (the GGUF, its parts and its checksum stamp); None for any other file."""
    if isinstance(path, str | bytes | os.PathLike) and ".gguf" in os.path.basename(os.fsdecode(path)):
        return ("slow", "the embedded model")
    return None


def _audit(event: str, args: tuple[Any, ...]) -> None:
    if not _sinks:
        return
    if event == "subprocess.Popen":  # (executable, args, cwd, env); a shell command is already ["/bin/sh", "-c", ...]
        use = classify_process(args[1])
    elif event == "open":
        use = classify_open(args[0])
    else:
        return
    if use is not None:
        for sink in _sinks:
            sink.add(use)


_installed = False


def install() -> None:
    """Add the audit hook (once per process; hooks cannot be removed). It records only inside `recording()`."""
    global _installed
    if not _installed:
        sys.addaudithook(_audit)
        _installed = True


@contextmanager
def recording() -> Iterator[set[Use]]:
    """Collect what the block uses (nested recordings all see it)."""
    sink: set[Use] = set()
    _sinks.append(sink)
    try:
        yield sink
    finally:
        del _sinks[next(i for i, s in enumerate(_sinks) if s is sink)]  # by identity: empty sets are all equal


def problems(marked: Iterable[str], used: Iterable[Use]) -> list[str]:
    """Why the marks do not match what was used ([] when they do)."""
    marked, out = set(marked), []
    for mark, definition in DEFINITIONS.items():
        whats = sorted({what for m, what in used if m == mark})
        if whats and mark not in marked:
            out.append(f"uses {', '.join(whats)} but is not marked `{mark}`: add @pytest.mark.{mark}")
        if mark in marked and not whats:
            out.append(f"is marked `{mark}` but used none of: {definition}; remove the mark")
    return out


# -- the plugin -------------------------------------------------------------------------------------------------------

_USED = pytest.StashKey[set[Use]]()
_RECORDING = pytest.StashKey[Any]()
_fixture_uses: dict[Any, set[Use]] = {}  # FixtureDef -> what its setup used


def marker_line(mark: str) -> str:
    """The mark's declaration, as pyproject.toml states it (tests/test_marker_audit.py keeps the two equal)."""
    return f"{mark}: uses {DEFINITIONS[mark]} (checked: tests/marker_audit.py)"


def pytest_configure(config: pytest.Config) -> None:
    install()
    declared = {line.partition(":")[0].strip() for line in config.getini("markers")}
    for mark in DEFINITIONS.keys() - declared:  # a run outside this project's configuration
        config.addinivalue_line("markers", marker_line(mark))


@pytest.hookimpl(hookwrapper=True)
def pytest_fixture_setup(fixturedef: Any, request: pytest.FixtureRequest) -> Generator[None, None, None]:
    with recording() as used:
        yield
    _fixture_uses.setdefault(fixturedef, set()).update(used)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_setup(item: pytest.Item) -> Generator[None, None, None]:
    active = recording()  # from the test's setup to the end of its call
    item.stash[_USED] = active.__enter__()
    item.stash[_RECORDING] = active
    yield


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_teardown(item: pytest.Item) -> Generator[None, None, None]:
    if (active := item.stash.get(_RECORDING, None)) is not None:
        active.__exit__(None, None, None)
        del item.stash[_RECORDING]
    yield


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Generator[None, Any, None]:
    outcome = yield
    report = outcome.get_result()
    if call.when != "call" or report.skipped:
        return
    used = set(item.stash.get(_USED, set()))
    fixtureinfo = getattr(item, "_fixtureinfo", None)  # pytest's record of the fixtures this test uses
    for defs in (fixtureinfo.name2fixturedefs.values() if fixtureinfo else ()):
        used |= _fixture_uses.get(defs[-1], set())
    # and those it asked for while it ran (request.getfixturevalue): pytest keeps them on the test's request
    for fixturedef in getattr(getattr(item, "_request", None), "_fixture_defs", {}).values():
        used |= _fixture_uses.get(fixturedef, set())
    found = problems({m.name for m in item.iter_markers()}, used)
    if found and report.passed:
        report.outcome = "failed"
        report.longrepr = "marks do not match what the test uses (tests/marker_audit.py):\n  " + "\n  ".join(found)
    elif found:
        report.sections.append(("marks do not match what the test uses", "\n".join(found)))
