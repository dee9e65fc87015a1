"""The chance baseline of a suite: the expected pass^1 of picking a uniformly random offered tool.

A model's score means little without it: narrowing (factor 8) raises it, and a model at or below it has learned
nothing from the prompt. Computed exactly, by enumeration, with the same parse_reply and judge as a real run (so a
call that is not offered, or is refused, fails as it would). Two ways to fill a tool's arguments:
- `right args`: the arguments that pass the case, when any do (the chance of choosing the right tool alone);
- `random args`: each SHA argument drawn uniformly from the distinct commits the prompt shows; text arguments
  are any text (no starter case checks them).
"""

from __future__ import annotations

import itertools
import json
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from prefect_micro_agents.commits import same_commit
from prefect_micro_agents.evals.answers import example_value
from prefect_micro_agents.evals.judge import judge
from prefect_micro_agents.evals.suite import SHA_PATTERN, Case, resolve_agent
from prefect_micro_agents.llm import LLMReply, parse_reply
from prefect_micro_agents.prompts import render_thread
from prefect_micro_agents.thread import Usage

__all__ = ["CaseBaseline", "case_baseline", "shown_commits", "table"]

_HEX = re.compile(r"\b[0-9a-f]{7,40}\b")
_TEXT = "any text"


@dataclass(frozen=True)
class CaseBaseline:
    id: str
    offered: tuple[str, ...]
    right_args: float  # expected pass^1, the right arguments whenever some pass
    random_args: float  # expected pass^1, SHA arguments drawn from the commits the prompt shows


def shown_commits(case: Case) -> list[str]:
    """The distinct commits the model sees in the rendered thread (a SHA and its abbreviation count once)."""
    found: list[str] = []
    for word in _HEX.findall(render_thread(case.thread)):
        if any(c.isdigit() for c in word) and not any(same_commit(word, f) for f in found):
            found.append(word)
    return found


def _passes(case: Case, call: dict[str, Any]) -> bool:
    agent = resolve_agent(case.agent_ref)
    reply = LLMReply(text=json.dumps({"call": call}), model="baseline", usage=Usage())
    return judge(case.expect, parse_reply(agent, case.thread, reply, 1)).passed


def case_baseline(case: Case) -> CaseBaseline:
    agent = resolve_agent(case.agent_ref)
    offered = agent.offered(case.thread)
    commits = shown_commits(case) or ["0000000"]
    right = random = 0.0
    for tool in offered:
        intent = tool.intent_name()
        fields = [n for n, f in tool.model_fields.items() if n not in ("intent", "reason") and f.is_required()]
        schema = tool.model_json_schema()["properties"]
        drawn = [commits if schema[n].get("pattern") == SHA_PATTERN else [_TEXT] for n in fields]
        outcomes = [_passes(case, {"intent": intent, **dict(zip(fields, combo, strict=True))})
                    for combo in itertools.product(*drawn)]
        expected = intent in (case.expect.intent or ())
        oracle = {n: example_value(c) for n, c in case.expect.args.items()} if expected else {}
        best = any(outcomes) or (bool(oracle) and _passes(case, {
            "intent": intent, **{n: oracle.get(n, _TEXT) for n in fields}}))
        right += best / len(offered)
        random += sum(outcomes) / len(outcomes) / len(offered)
    return CaseBaseline(case.id, tuple(t.intent_name() for t in offered), right, random)


def table(cases: Sequence[Case]) -> tuple[str, float, float]:
    """The per-case table and the two overall means."""
    rows = [case_baseline(c) for c in cases]
    width = max(len(r.id) for r in rows)
    lines = [f"{'case':<{width}}  offered  right args  random args"]
    lines += [f"{r.id:<{width}}  {len(r.offered):>7}  {r.right_args:>10.3f}  {r.random_args:>11.3f}" for r in rows]
    right = sum(r.right_args for r in rows) / len(rows)
    random = sum(r.random_args for r in rows) / len(rows)
    lines.append(f"\n{len(rows)} cases: a uniformly random offered tool passes {right:.3f} with the right arguments, "
                 f"{random:.3f} with SHAs drawn from the commits the prompt shows (expected pass^1, exact)")
    return "\n".join(lines), right, random
