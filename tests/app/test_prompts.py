"""Prompts are files: rendered snapshots, strict variables, user overrides, compact context."""

from __future__ import annotations

import os
from pathlib import Path

import jinja2
import pytest

from agents import PROMPTS_DIR
from prefect_micro_agents.errors import ConfigurationError
from prefect_micro_agents.prompts import build_messages, compact, render
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


def test_rendered_thread_shows_every_decision_and_result() -> None:
    _, user = build_messages(AGENT, full_deploy_thread(), AGENT.tools)
    text = user["content"]
    assert "rejected 1 by alice: deploy the backend first" in text
    assert text.count("\napproved ") == 2 and text.count("\nresult ") == 2
    assert "{" not in text  # compact bodies, not JSON dumps


def test_missing_variable_is_an_error_not_an_empty_string() -> None:
    with pytest.raises(jinja2.UndefinedError, match="'tools' is undefined"):
        render("deploy_agent.j2", prompts_dir=PROMPTS_DIR, agent="deploy", description="")


def test_unknown_template_names_the_setting() -> None:
    with pytest.raises(ConfigurationError, match="AGENT_PROMPTS_DIR"):
        render("nope.j2")


def test_user_prompts_override_the_builtin_ones(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "deploy_agent.j2").write_text("Custom deploy prompt for {{ agent }}.\n{% include '_tools.j2' %}")
    monkeypatch.setenv("AGENT_PROMPTS_DIR", str(tmp_path))
    system, _ = build_messages(AGENT, full_deploy_thread(), AGENT.tools)
    assert system["content"].startswith("Custom deploy prompt for deploy.")
    assert "deploy_backend_to_prod" in system["content"]  # built-in partials still resolve
    monkeypatch.setenv("AGENT_PROMPTS_DIR", str(tmp_path / "missing"))
    with pytest.raises(ConfigurationError, match="is not a directory"):
        render("thread.j2", events=[])


def test_only_offered_tools_are_described() -> None:
    from agents.deploybot import DoneForNow

    system, _ = build_messages(AGENT, full_deploy_thread(), (DoneForNow,))
    assert "done_for_now" in system["content"] and "deploy_backend_to_prod" not in system["content"]


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ({"sha": "abc", "ok": True, "n": None}, "sha=abc ok=true n=null"),
        (["a", 1, False], "a, 1, false"),
        ({"prod": {"backend": "abc"}, "note": "two words"}, "prod: backend=abc\nnote='two words'"),
        ([{"sha": "a"}, {"sha": "b"}], "- sha=a\n- sha=b"),
        ([{"sha": "a", "who": "x y"}, {"sha": "b", "who": "z"}], "[sha | who]\na | x y\nb | z"),
        ({"prod": {"backend": {"sha": "a", "ok": True}}}, "prod:\n  backend: sha=a ok=true"),
        ("", "''"),
        ({"failed": [], "extra": {}}, "failed=[] extra={}"),
    ],
)
def test_compact(value: object, expected: str) -> None:
    assert compact(value) == expected


def test_long_shas_are_abbreviated_like_git_does() -> None:
    from prefect_micro_agents.prompts import abbreviate_hex

    sha = "9f8e7d6c5b4a39281706f5e4d3c2b1a09f8e7d6c"
    assert abbreviate_hex(f"deploy {sha} now") == "deploy 9f8e7d6c5b4a now"
    assert abbreviate_hex("short 9f8e7d6 and word deadbeefcafe stay") == "short 9f8e7d6 and word deadbeefcafe stay"
    _, user = build_messages(AGENT, full_deploy_thread(), AGENT.tools)
    assert sha not in user["content"] and "sha=9f8e7d6c5b4a " in user["content"]
