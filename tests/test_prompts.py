"""Prompts are files: rendered snapshots, strict variables, user overrides, compact context."""

from __future__ import annotations

import os
from pathlib import Path

import jinja2
import pytest

from agents.errors import ConfigurationError
from agents.prompts import build_messages, compact, render
from factories import AGENT, full_deploy_thread

SNAPSHOTS = Path(__file__).parent / "snapshots"


def check_snapshot(name: str, text: str) -> None:
    """Compare with the committed snapshot; UPDATE_SNAPSHOTS=1 rewrites it (review the diff before committing)."""
    path = SNAPSHOTS / name
    if os.environ.get("UPDATE_SNAPSHOTS") == "1":
        path.write_text(text + "\n")
    assert text + "\n" == path.read_text(), f"{name} changed; rerun with UPDATE_SNAPSHOTS=1 and review the diff"


def test_deploy_prompt_snapshot() -> None:
    system, user = build_messages(AGENT, full_deploy_thread(), AGENT.tools)
    check_snapshot("deploy_system.txt", system["content"])
    check_snapshot("deploy_thread.txt", user["content"])


def test_rendered_thread_shows_every_decision_and_result() -> None:
    _, user = build_messages(AGENT, full_deploy_thread(), AGENT.tools)
    text = user["content"]
    assert "rejected 1 by alice: deploy the backend first" in text
    assert text.count("\napproved ") == 2 and text.count("\nresult ") == 2
    assert "{" not in text  # compact bodies, not JSON dumps


def test_missing_variable_is_an_error_not_an_empty_string() -> None:
    with pytest.raises(jinja2.UndefinedError, match="'tools' is undefined"):
        render("deploy_agent.j2", agent="deploy", description="")


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
    from agents.prompts import abbreviate_hex

    sha = "9f8e7d6c5b4a39281706f5e4d3c2b1a09f8e7d6c"
    assert abbreviate_hex(f"deploy {sha} now") == "deploy 9f8e7d6c5b4a now"
    assert abbreviate_hex("short 9f8e7d6 and word deadbeefcafe stay") == "short 9f8e7d6 and word deadbeefcafe stay"
    _, user = build_messages(AGENT, full_deploy_thread(), AGENT.tools)
    assert sha not in user["content"] and "sha=9f8e7d6c5b4a " in user["content"]
