"""The audit trail of one run: a plain, JSON-ready record per human decision or answer (issue 14), enough to answer
"who approved the deploy of X to production, and what ran" after the run is long gone.

Pure: built from the thread and the agent's approval policies only; no I/O, no clock, no Prefect. The Prefect adapter
publishes the records as a table artifact per run (prefect_micro_agents.adapter.audit_artifact) and `microagents
audit` exports them as JSON lines.

One record per DecisionEvent and per AnswerEvent, in thread order. Every record has these keys, in this order:

- `run_id`, `flow_name`, `deployment`, `agent`, `thread_id`: where the decision was made;
- `seq`: the event's index in the thread (with `run_id`, what identifies the record);
- `kind`: "decision" or "answer";
- `proposal_id`, `intent`, `args`, `args_digest`: the call decided on, as proposed (secrets already redacted);
- `proposal_digest`: what the decision is bound to (the proposal id with those exact arguments);
- `decision`: "approved" or "rejected" ("answered" for an answer); `approver`: who (for an answer: who answered);
- `at`: when, ISO 8601 in UTC, as the server recorded the answer; `feedback`: the approver's words (for an answer:
  the answer);
- `counted`: whether the tool's approval policy counts the decision; `not_counted`: why not ("" when it counts);
- `trigger`: who or what started the run (`source`, `actor`, `request`), or None;
- `executed`: the call's receipt, if it was handed to its tool in the version decided on: `idempotency_key`,
  `approvers` (every counted approver) and `approved_at`; None when it never ran;
- `result`: the tool's output (`{"output": ...}`), or `{"error": {"kind", "message"}}` when it failed; None while it
  has not finished (or never ran);
- `verified`: whether the flow verified the approver's SSH signature (prefect_micro_agents.signing); `verification`:
  what ssh-keygen said, or why it did not verify; `signature`: the signature itself, so an auditor can check it again;
- `edits`: the arguments the approver changed (name -> new value), `edit_error`: why an edit was refused;
- `proposal_edited_by`, `proposal_edited_from`: for an approver's edited call, who edited which proposal.

Any other field a DecisionEvent carries (a signature, who verified it, edits...) follows, under its own name, as the
event serialises it; so does any field of the proposal beyond the ones above, prefixed `proposal_`.
"""

from __future__ import annotations

from typing import Any

from pydantic import JsonValue

from prefect_micro_agents.reducer import void_decisions
from prefect_micro_agents.thread import (
    AnswerEvent,
    DecisionEvent,
    ErrorEvent,
    ProposalEvent,
    ReceiptEvent,
    ResultEvent,
    Thread,
    TriggerEvent,
)
from prefect_micro_agents.tools import Agent

__all__ = ["AUDIT_FIELDS", "AUDIT_PREFIX", "audit_records"]

AUDIT_PREFIX = "audit-"  # every run's audit artifact key starts so: `audit-<agent>-<run id>`

AUDIT_FIELDS = ("run_id", "flow_name", "deployment", "agent", "thread_id", "seq", "kind", "proposal_id", "intent",
                "args", "args_digest", "proposal_digest", "decision", "approver", "at", "feedback", "counted",
                "not_counted", "trigger", "executed", "result", "verified", "verification", "signature", "edits",
                "edit_error", "proposal_edited_by", "proposal_edited_from")
_PROPOSAL_SHOWN = {"type", "id", "intent", "args", "args_digest", "reason", "model", "usage"}


def audit_records(agent: Agent, thread: Thread, *, run_id: str, flow_name: str = "",
                  deployment: str = "") -> list[dict[str, JsonValue]]:
    """One record per decision and answer in `thread`, judged by `agent`'s approval policies (see the module
    docstring for what each field means)."""
    void = void_decisions(thread, agent)
    trigger = next((e for e in thread.events if isinstance(e, TriggerEvent)), None)
    where: dict[str, JsonValue] = {
        "run_id": run_id, "flow_name": flow_name, "deployment": deployment, "agent": agent.name,
        "thread_id": thread.id}
    records: list[dict[str, JsonValue]] = []
    for seq, event in enumerate(thread.events):
        if not isinstance(event, DecisionEvent | AnswerEvent):
            continue
        proposal = _proposal(thread, seq, event)
        digest = event.proposal_digest if isinstance(event, DecisionEvent) else (proposal.digest if proposal else "")
        record: dict[str, JsonValue] = {
            **where, "seq": seq, "kind": event.type, "proposal_id": event.proposal_id,
            "intent": proposal.intent if proposal else "", "args": dict(proposal.args) if proposal else {},
            "args_digest": proposal.args_digest if proposal else "", "proposal_digest": digest,
            "decision": "answered", "approver": "", "at": "", "feedback": "",
            "counted": seq not in void, "not_counted": void.get(seq, ""),
            "trigger": None if trigger is None else {"source": trigger.source, "actor": trigger.actor,
                                                     "request": trigger.request},
            **_outcome(thread, event.proposal_id, digest),
            "verified": False, "verification": "", "signature": "", "edits": {}, "edit_error": "",
            "proposal_edited_by": "", "proposal_edited_from": ""}
        if isinstance(event, DecisionEvent):
            # Generic on purpose: a field added to DecisionEvent reaches the audit trail without a change here.
            record.update({k: v for k, v in event.model_dump(mode="json").items() if k != "type"})
        else:
            record.update(approver=event.by, at=event.model_dump(mode="json")["at"], feedback=event.answer)
        if proposal is not None:
            record.update({f"proposal_{k}": v for k, v in proposal.model_dump(mode="json").items()
                           if k not in _PROPOSAL_SHOWN})
        records.append(record)
    return records


def _proposal(thread: Thread, seq: int, event: DecisionEvent | AnswerEvent) -> ProposalEvent | None:
    """The proposal the event decides on: the latest one before it under its id, preferring the version its digest
    names (a decision may be bound to an earlier version of the call)."""
    before = [e for e in thread.events[:seq] if isinstance(e, ProposalEvent) and e.id == event.proposal_id]
    if isinstance(event, DecisionEvent):
        bound = [e for e in before if e.digest == event.proposal_digest]
        before = bound or before
    return before[-1] if before else None


def _outcome(thread: Thread, proposal_id: str, digest: str) -> dict[str, Any]:
    """What ran for the proposal in the version `digest` names: its receipt, and its result or error."""
    found = next(((i, e) for i, e in enumerate(thread.events) if isinstance(e, ReceiptEvent)
                  and e.proposal_id == proposal_id and e.proposal_digest == digest), None)
    if found is None:
        return {"executed": None, "result": None}
    at, receipt = found
    executed = {"idempotency_key": receipt.idempotency_key, "approvers": list(receipt.approvers or (receipt.approver,)),
                "approved_at": receipt.model_dump(mode="json")["approved_at"]}
    ended = next((e for e in thread.events[at + 1:]
                  if isinstance(e, ResultEvent | ErrorEvent) and e.proposal_id == proposal_id), None)
    result: dict[str, Any] | None = None
    if isinstance(ended, ResultEvent):
        result = {"output": ended.output}
    elif isinstance(ended, ErrorEvent):
        result = {"error": {"kind": ended.kind, "message": ended.message}}
    return {"executed": executed, "result": result}
