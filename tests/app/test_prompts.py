"""The deploy bot's prompts, snapshot-tested: what the deploy agent's model reads for a realistic thread (the kit's
rendering rules are tested on its own agent in tests/kit/test_rendering.py)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from prefect_micro_agents import build_messages
from factories import AGENT, full_deploy_thread

SNAPSHOTS = Path(__file__).parent / "snapshots"


def check_snapshot(snapshots: dict[str, str], directory: Path = SNAPSHOTS) -> None:
    """Compare each rendered text with its committed snapshot (file name -> text). With UPDATE_SNAPSHOTS set, rewrite
    them all and FAIL anyway: an update run never passes, so a test command that sets the variable can never be
    green (tests/test_readme.py checks that ours does not)."""
    if os.environ.get("UPDATE_SNAPSHOTS"):
        report = []
        for name, text in snapshots.items():
            path = directory / name
            changed = not path.exists() or path.read_text() != text + "\n"
            if changed:
                path.write_text(text + "\n")
            report.append(f"snapshot {name} {'rewritten' if changed else 'unchanged'}")
        pytest.fail("; ".join(report) + "; review the diff and rerun without UPDATE_SNAPSHOTS", pytrace=False)
    for name, text in snapshots.items():
        path = directory / name
        assert path.exists(), f"no snapshot {name}; run once with UPDATE_SNAPSHOTS=1, review it, rerun without"
        assert text + "\n" == path.read_text(), f"{name} changed; rerun with UPDATE_SNAPSHOTS=1 and review the diff"


def test_an_update_run_rewrites_the_snapshots_and_still_fails(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "a.txt").write_text("old\n")
    (tmp_path / "b.txt").write_text("same\n")
    monkeypatch.setenv("UPDATE_SNAPSHOTS", "1")
    with pytest.raises(pytest.fail.Exception, match="^snapshot a.txt rewritten; snapshot b.txt unchanged; review the "
                                                     "diff and rerun without UPDATE_SNAPSHOTS$"):
        check_snapshot({"a.txt": "new", "b.txt": "same"}, tmp_path)
    assert (tmp_path / "a.txt").read_text() == "new\n"
    with pytest.raises(pytest.fail.Exception, match="^snapshot a.txt unchanged; snapshot b.txt unchanged"):
        check_snapshot({"a.txt": "new", "b.txt": "same"}, tmp_path)  # an update run that changed nothing fails too
    monkeypatch.delenv("UPDATE_SNAPSHOTS")
    check_snapshot({"a.txt": "new", "b.txt": "same"}, tmp_path)  # the review run passes
    with pytest.raises(AssertionError, match="a.txt changed"):
        check_snapshot({"a.txt": "newer"}, tmp_path)


def test_deploy_prompt_snapshot() -> None:
    system, user = build_messages(AGENT, full_deploy_thread(), AGENT.tools)
    check_snapshot({"deploy_system.txt": system["content"], "deploy_thread.txt": user["content"]})
