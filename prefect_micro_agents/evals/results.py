"""Eval results as data: per-try outcomes, pass^1 / pass^k arithmetic, and the diff against a saved baseline.

pass^k (tau-bench) is the chance that k independent tries of a case ALL pass, estimated per case from n tries with
c passes as C(c, k) / C(n, k); with k = n it is 1 when every try passed, else 0. pass^1 is c / n. Overall values
are means over cases. pass^k is what an agent in production feels: right 2 times out of 3 is wrong every third run.
"""

from __future__ import annotations

import json
import math
from collections import Counter
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ValidationError, computed_field

from prefect_micro_agents.errors import ConfigurationError

__all__ = ["CaseResult", "Change", "Gate", "Report", "Summary", "TryResult", "diff", "load_report", "pass_hat",
           "summarize"]

Metric = Literal["pass^1", "pass^k"]


def pass_hat(successes: int, tries: int, k: int) -> float:
    """Unbiased estimate of pass^k from `tries` samples with `successes` passes."""
    if not 0 <= successes <= tries or not 1 <= k <= tries:
        raise ValueError(f"need 0 <= successes ({successes}) <= tries ({tries}) and 1 <= k ({k}) <= tries")
    return math.comb(successes, k) / math.comb(tries, k)


class TryResult(BaseModel):
    decision: str  # judge.decision_of: intent plus targeted commits, or error:<kind>
    passed: bool
    why: str = ""
    prompt_tokens: int = 0
    completion_tokens: int = 0
    latency_ms: float = 0.0


class CaseResult(BaseModel):
    id: str
    agent: str
    description: str = ""
    tries: list[TryResult]

    @computed_field  # type: ignore[prop-decorator]
    @property
    def passes(self) -> int:
        return sum(t.passed for t in self.tries)

    @computed_field  # type: ignore[prop-decorator]
    @property
    def pass_1(self) -> float:
        return pass_hat(self.passes, len(self.tries), 1)

    @computed_field  # type: ignore[prop-decorator]
    @property
    def pass_k(self) -> float:
        return pass_hat(self.passes, len(self.tries), len(self.tries))

    @computed_field  # type: ignore[prop-decorator]
    @property
    def decision(self) -> str:
        """The majority decision over the tries (ties: the first one seen)."""
        return Counter(t.decision for t in self.tries).most_common(1)[0][0]


class Summary(BaseModel):
    cases: int
    tries: int
    pass_1: float
    pass_k: float
    pass_hat: dict[int, float]  # pass^j for j = 1..k
    prompt_tokens: int
    completion_tokens: int
    latency_ms_mean: float
    latency_ms_p95: float


class Change(BaseModel):
    id: str
    kind: Literal["changed", "new", "gone"]
    before: str | None = None  # majority decision in the baseline
    after: str | None = None
    passed_before: bool | None = None  # pass^k
    passed_after: bool | None = None


class Gate(BaseModel):
    metric: Metric
    minimum: float
    value: float
    ok: bool


class Report(BaseModel):
    suites: list[str]
    agent: str | None = None
    model: str
    prompt: str | None = None
    prompts_dir: str | None = None
    k: int
    started_at: str
    summary: Summary
    cases: list[CaseResult]
    changes: list[Change] = []
    gate: Gate | None = None


def summarize(results: list[CaseResult]) -> Summary:
    if not results:
        raise ConfigurationError("no eval cases to run: check --suite and --agent")
    k = min(len(r.tries) for r in results)
    tries = [t for r in results for t in r.tries]
    latencies = sorted(t.latency_ms for t in tries)
    return Summary(
        cases=len(results),
        tries=len(tries),
        pass_1=sum(r.pass_1 for r in results) / len(results),
        pass_k=sum(r.pass_k for r in results) / len(results),
        pass_hat={j: sum(pass_hat(r.passes, len(r.tries), j) for r in results) / len(results) for j in range(1, k + 1)},
        prompt_tokens=sum(t.prompt_tokens for t in tries),
        completion_tokens=sum(t.completion_tokens for t in tries),
        latency_ms_mean=round(sum(latencies) / len(latencies), 1),
        latency_ms_p95=round(latencies[min(len(latencies) - 1, math.ceil(0.95 * len(latencies)) - 1)], 1),
    )


def diff(baseline: Report, results: list[CaseResult]) -> list[Change]:
    """Cases whose majority decision or pass^k verdict moved since the baseline, plus cases added or gone."""
    before = {r.id: r for r in baseline.cases}
    now = {r.id: r for r in results}
    changes = []
    for case_id, r in now.items():
        old = before.get(case_id)
        if old is None:
            changes.append(Change(id=case_id, kind="new", after=r.decision, passed_after=r.pass_k == 1))
        elif (old.decision, old.pass_k) != (r.decision, r.pass_k):
            changes.append(Change(id=case_id, kind="changed", before=old.decision, after=r.decision,
                                  passed_before=old.pass_k == 1, passed_after=r.pass_k == 1))
    changes += [Change(id=i, kind="gone", before=o.decision, passed_before=o.pass_k == 1)
                for i, o in before.items() if i not in now]
    return changes


def load_report(path: str | Path) -> Report:
    """A baseline is a JSON report saved by an earlier run (`--save-baseline`, or a copy of report.json)."""
    path = Path(path)
    try:
        return Report.model_validate(json.loads(path.read_text()))
    except FileNotFoundError as exc:
        raise ConfigurationError(f"no baseline at {path}: create one with `run ... --save-baseline {path}`") from exc
    except (json.JSONDecodeError, ValidationError) as exc:
        raise ConfigurationError(f"{path} is not an eval report: {str(exc)[:300]}") from exc
