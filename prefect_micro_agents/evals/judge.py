"""Judge one model step against a case's label, with a reason a reviewer can act on."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from prefect_micro_agents.commits import is_sha, same_commit
from prefect_micro_agents.evals.suite import ArgCheck, CallPattern, Expect
from prefect_micro_agents.prompts import SHORT_HEX
from prefect_micro_agents.thread import ErrorEvent, ProposalEvent

__all__ = ["Verdict", "check_value", "decision_of", "judge"]



@dataclass(frozen=True)
class Verdict:
    passed: bool
    why: str = ""


def check_value(check: ArgCheck, value: Any) -> bool:
    match check.kind:
        case "equals":
            return bool(value == check.equals)
        case "commit":
            return same_commit(value, check.commit)
        case "prefix":
            return isinstance(value, str) and value.startswith(str(check.prefix))
        case "contains":
            return isinstance(value, str) and str(check.contains).lower() in value.lower()
        case "one_of":
            return value in (check.one_of or ())
    raise AssertionError(f"unhandled argument check {check.kind!r}")


def _describe(check: ArgCheck) -> str:
    value = check.value[:SHORT_HEX] if check.kind == "commit" else check.value
    return {"equals": "== {!r}", "commit": "same commit as {}", "prefix": "starting with {!r}",
            "contains": "containing {!r}", "one_of": "one of {!r}"}[check.kind].format(value)


def _failed_args(checks: dict[str, ArgCheck], args: dict[str, Any]) -> list[str]:
    return [f"{name}={_short(args[name]) if name in args else '(missing)'}, expected {_describe(check)}"
            for name, check in checks.items() if name not in args or not check_value(check, args[name])]


def _matches(pattern: CallPattern, proposal: ProposalEvent) -> bool:
    return pattern.intent == proposal.intent and not _failed_args(pattern.args, proposal.args)


def judge(expect: Expect, outcome: ProposalEvent | ErrorEvent) -> Verdict:
    """Every part of the label must hold. An error event never passes: a valid decision is the minimum."""
    if isinstance(outcome, ErrorEvent):
        return Verdict(False, f"no valid call ({outcome.kind}): {outcome.message[:160]}")
    if expect.intent is not None and outcome.intent not in expect.intent:
        return Verdict(False, f"expected {' or '.join(expect.intent)}, got {decision_of(outcome)}")
    if failed := _failed_args(expect.args, outcome.args):
        return Verdict(False, f"{outcome.intent}: " + "; ".join(failed))
    if outcome.intent in expect.not_intent:
        return Verdict(False, f"chose {outcome.intent}, which this case forbids")
    for pattern in expect.not_call:
        if _matches(pattern, outcome):
            return Verdict(False, f"made the forbidden call {decision_of(outcome)} (e.g. one a human rejected)")
    return Verdict(True)


def decision_of(outcome: ProposalEvent | ErrorEvent) -> str:
    """What was decided, comparable across runs: the intent and the commits it targets; free text left out."""
    if isinstance(outcome, ErrorEvent):
        return f"error:{outcome.kind}"
    commits = [f"{k}={str(v).lower()[:SHORT_HEX]}" for k, v in sorted(outcome.args.items())
               if is_sha(v)]
    return " ".join([outcome.intent, *commits])


def _short(value: Any) -> str:
    text = str(value)
    return text[:SHORT_HEX] if is_sha(value) else text[:60]
