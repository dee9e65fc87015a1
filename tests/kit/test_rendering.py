"""The kit's prompt rendering, on the kit's own agent (tests/kit/toy_agent.py): the thread as the model reads it,
strict templates, the override order ($AGENT_PROMPTS_DIR, the agent's prompts_dir, the kit's templates), compact
bodies and abbreviated hashes. The deploy bot's prompts are snapshot-tested in tests/app/test_prompts.py."""

from __future__ import annotations

from pathlib import Path

import jinja2
import pytest

from prefect_micro_agents.errors import ConfigurationError
from prefect_micro_agents.prompts import abbreviate_hex, build_messages, compact, render
from toy_agent import AGENT, PROMPTS, DoneForNow, full_expense_thread


def test_rendered_thread_shows_every_decision_and_result() -> None:
    _, user = build_messages(AGENT, full_expense_thread(), AGENT.tools)
    text = user["content"]
    assert "rejected 1 by alice: pay it first" in text
    assert text.count("\napproved ") == 2 and text.count("\nresult ") == 2
    assert "{" not in text  # compact bodies, not JSON dumps


def test_missing_variable_is_an_error_not_an_empty_string() -> None:
    with pytest.raises(jinja2.UndefinedError, match="'tools' is undefined"):
        render("expense_agent.j2", prompts_dir=str(PROMPTS), agent="expense", description="")


def test_unknown_template_names_the_setting() -> None:
    with pytest.raises(ConfigurationError, match="AGENT_PROMPTS_DIR"):
        render("nope.j2")


def test_user_prompts_override_the_builtin_ones(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "expense_agent.j2").write_text("Custom expense prompt for {{ agent }}.\n{% include '_tools.j2' %}")
    monkeypatch.setenv("AGENT_PROMPTS_DIR", str(tmp_path))
    system, _ = build_messages(AGENT, full_expense_thread(), AGENT.tools)
    assert system["content"].startswith("Custom expense prompt for expense.")
    assert "pay_expense" in system["content"]  # built-in partials still resolve
    monkeypatch.setenv("AGENT_PROMPTS_DIR", str(tmp_path / "missing"))
    with pytest.raises(ConfigurationError, match="is not a directory"):
        render("thread.j2", events=[])


def test_only_offered_tools_are_described() -> None:
    system, _ = build_messages(AGENT, full_expense_thread(), (DoneForNow,))
    assert "done_for_now" in system["content"] and "pay_expense" not in system["content"]


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
    sha = "9f8e7d6c5b4a39281706f5e4d3c2b1a09f8e7d6c"
    assert abbreviate_hex(f"deploy {sha} now") == "deploy 9f8e7d6c5b4a now"
    assert abbreviate_hex("short 9f8e7d6 and word deadbeefcafe stay") == "short 9f8e7d6 and word deadbeefcafe stay"
    _, user = build_messages(AGENT, full_expense_thread(), AGENT.tools)
    assert sha not in user["content"] and "receipt=9f8e7d6c5b4a " in user["content"]
