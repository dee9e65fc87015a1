"""The final report of a pipeline run as table rows: what ran, who approved what, timings, outcome.

Pure: rows come from the step results the flow already holds (cached task outputs: the target's models), the agent
threads (decisions, receipts, results) and the target's history (execution times, joined on the idempotency key of
each receipt).
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from prefect_micro_agents.prompts import abbreviate_hex, compact
from prefect_micro_agents.reducer import DIGEST_MISMATCH, void_decisions
from prefect_micro_agents.thread import (
    AnswerEvent,
    DecisionEvent,
    DoneEvent,
    ErrorEvent,
    EscalationEvent,
    ProposalEvent,
    ReceiptEvent,
    ResultEvent,
    Thread,
)
from prefect_micro_agents.tools import Agent
from flows.targets.base import DeployResult, E2EReport, HistoryEntry

__all__ = ["COLUMNS", "agent_rows", "deploy_row", "e2e_row", "outcome_row", "step_row"]

COLUMNS = ("step", "detail", "by", "at", "seconds", "outcome")


def _at(value: datetime | str | None) -> str:
    if value is None:
        return ""
    text = value if isinstance(value, str) else value.isoformat()
    return text[:19].replace("T", " ") + "Z"


def _short(text: str, limit: int = 160) -> str:
    text = abbreviate_hex(" ".join(str(text).split()))
    return text if len(text) <= limit else text[: limit - 3] + "..."


def step_row(step: str, detail: str, outcome: str, *, by: str = "pipeline", at: Any = None,
             seconds: float | None = None, limit: int = 160) -> dict[str, Any]:
    return {"step": step, "detail": _short(detail, limit), "by": by, "at": _at(at),
            "seconds": None if seconds is None else round(seconds, 2), "outcome": _short(outcome, 120)}


def deploy_row(result: DeployResult) -> dict[str, Any]:
    """A staging deploy."""
    outcome = "no-op" if result.noop else ("ok" if result.ok else "FAILED")
    return step_row(f"{result.action} {result.service} to {result.env}", result.message, outcome,
                    at=result.finished_at, seconds=result.duration_ms / 1000)


def e2e_row(report: E2EReport, label: str = "") -> dict[str, Any]:
    failed = [c.name for c in report.checks if not c.ok]
    detail = f"{len(report.checks) - len(failed)}/{len(report.checks)} checks passed"
    if failed:
        detail += f"; failed: {', '.join(failed)}"
    step = f"e2e {report.env}" + (f" ({label})" if label else "")
    return step_row(step, detail, "passed" if report.passed else "FAILED",
                    at=report.started_at, seconds=report.duration_ms / 1000)


def agent_rows(agent: str, thread: Thread, history: list[HistoryEntry],
               policies: Agent | None = None) -> list[dict[str, Any]]:
    """One row per proposal (with its decisions and execution) and one for how the agent ended. `policies`: the agent
    whose approval policies judged the decisions (run_agent's, `with_approvers`): a decision they did not count is
    reported as not counted, with why, never as "approved by"."""
    executions = {h.idempotency_key: h for h in history if h.idempotency_key}
    why = {thread.events[i]: reason for i, reason in void_decisions(thread, policies).items()}
    void = set(why)
    rows = []
    for p in thread.of_type(ProposalEvent):
        what = f"{p.intent} {compact(p.args)}".strip()
        decisions = thread.for_proposal(DecisionEvent, p.id)
        answers = thread.for_proposal(AnswerEvent, p.id)
        said = [_decided(d, why.get(d, "")) for d in decisions]
        said += [f"answered by {a.by}: {a.answer}" for a in answers]
        by = "; ".join(said)
        decisions = [d for d in decisions if d not in void]
        at: Any = decisions[-1].at if decisions else (answers[-1].at if answers else None)
        seconds, outcome = None, "proposed"
        receipt = next(iter(thread.for_proposal(ReceiptEvent, p.id)), None)
        result = next(iter(thread.for_proposal(ResultEvent, p.id)), None)
        error = next(iter(thread.for_proposal(ErrorEvent, p.id)), None)
        if receipt is not None and receipt.idempotency_key in executions:
            h = executions[receipt.idempotency_key]
            at = h.started_at
            if h.finished_at:
                seconds = (h.finished_at - h.started_at).total_seconds()
        if result is not None:
            out = result.output if isinstance(result.output, dict) else {}
            outcome = ("no-op" if out.get("noop") else "ok" if out.get("ok") else "FAILED") + \
                (f": {out['message']}" if out.get("message") else "")
        elif error is not None:
            outcome = f"error: {error.message}"
        elif decisions and decisions[-1].decision == "rejected":
            outcome = "not run (rejected)"
        elif answers:
            outcome = "answered"
        elif any(isinstance(e, DoneEvent) and e.proposal_id == p.id for e in thread.events):
            outcome = "ended the agent"
        rows.append(step_row(f"{agent}: {p.intent}", what, outcome, by=by or "agent", at=at, seconds=seconds))
    end = thread.events[-1] if thread.events else None
    if isinstance(end, EscalationEvent):
        rows.append(step_row(f"{agent}: escalation", end.reason, "escalated", by="limits"))
    return rows


def _decided(d: DecisionEvent, why: str) -> str:
    noun = "approval" if d.decision == "approved" else "rejection"
    if why == DIGEST_MISMATCH:
        return f"VOID {noun} by {d.approver} (made for another version of the call; not executed)"
    signed = (" (signed, verified)" if d.verified else " (signature not verified)") if d.signature else ""
    if why:
        return f"NOT COUNTED {noun} by {d.approver}{signed}: {why}"
    return f"{d.decision} by {d.approver}{signed}" + (f": {d.feedback}" if d.feedback else "")


def outcome_row(outcome: str, message: str, *, at: datetime, seconds: float) -> dict[str, Any]:
    """The last row: how the run ended, when, and how long it took from its start (approval waits included)."""
    return step_row("outcome", message, outcome, at=at, seconds=seconds, limit=400)
