"""Scripted answers for an eval run: the suite's golden calls, or replies recorded in a file.

A scripted run checks the machinery (suite, judge, runner, report, gate), not a model: the golden answer of a case
is its `golden` call, else one derived from its positive label. A wrong label then fails the run, because the
golden call is what a correct agent does and the judge holds it against the label.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from prefect_micro_agents.errors import ConfigurationError
from prefect_micro_agents.evals.suite import ArgCheck, Case, resolve_agent
from prefect_micro_agents.prompts import SHORT_HEX

__all__ = ["GOLDEN", "Answers", "example_value", "golden_call", "load_answers"]

GOLDEN = "golden"
Answers = Callable[[Case, int], str | dict[str, Any]]  # (case, try index) -> the model's reply


def example_value(check: ArgCheck) -> Any:
    """A value passing `check`, the way a model would write it (SHAs as the prompt shows them: 12 characters)."""
    match check.kind:
        case "commit":
            return str(check.commit)[:SHORT_HEX]
        case "one_of":
            return check.one_of[0] if check.one_of else None
        case _:
            return check.value


def golden_call(case: Case) -> dict[str, Any]:
    """The case's golden call, or the first expected intent with arguments that pass its checks."""
    if case.golden is not None:
        return dict(case.golden)
    if case.expect.intent is None:
        raise ConfigurationError(f"case {case.id!r} has only negative expectations and no `golden` call; add one "
                                 f"(a call a correct agent makes here) to run it with scripted golden answers")
    intent = case.expect.intent[0]
    call: dict[str, Any] = {"intent": intent, **{k: example_value(c) for k, c in case.expect.args.items()}}
    tool = resolve_agent(case.agent_ref).tool(intent)
    for name, field in (tool.model_fields.items() if tool else ()):
        if name not in call and field.is_required():
            call[name] = f"golden answer for {case.id}"[:200]
    return call


def _from_file(path: Path, cases: Sequence[Case]) -> Answers:
    """JSON: {"<case id>": <reply> | [<reply per try>, ...]}; a reply is a call object or raw text."""
    try:
        recorded = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise ConfigurationError(f"--scripted-answers {path}: cannot read it as JSON ({exc})") from exc
    if not isinstance(recorded, dict):
        raise ConfigurationError(f"--scripted-answers {path}: expected an object keyed by case id")
    missing = [c.id for c in cases if c.id not in recorded]
    if missing:
        raise ConfigurationError(f"--scripted-answers {path} has no reply for: {', '.join(missing)}")
    replies: dict[str, list[str | dict[str, Any]]] = {}
    wrong = []
    for case in cases:
        given = recorded[case.id]
        tries = given if isinstance(given, list) else [given]
        replies[case.id] = [reply for reply in tries if isinstance(reply, str | dict)]
        if not tries or len(replies[case.id]) < len(tries):
            wrong.append(case.id)
    if wrong:
        raise ConfigurationError(f"--scripted-answers {path}: a reply is a call object or raw text, or a non-empty "
                                 f"list of them; not so for: {', '.join(wrong)}")
    return lambda case, n: replies[case.id][n % len(replies[case.id])]


def load_answers(source: str, cases: Sequence[Case]) -> Answers:
    """`golden`, or a JSON file of replies; every case is checked before any model call."""
    if source == GOLDEN:
        calls = {c.id: golden_call(c) for c in cases}  # raises now for a case without one
        return lambda case, n: {"call": calls[case.id]}
    return _from_file(Path(source), cases)
