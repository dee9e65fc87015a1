"""Approve with edits (issue 14): an approver may change the arguments a tool's approval policy lists as `editable`.

An approval with edits is bound, like any decision, to the proposal it edits; when its edits are valid it settles
that proposal (the reducer treats it like a rejection of the original: nothing of it runs) and two events follow it
in the thread:
- the edited call, a ProposalEvent of its own (`<original id>-edit<n>`, `edited_by`, `edited_from`), with its own
  arguments digest and so its own proposal digest: the receipt binds it and it is what executes;
- the editor's approval of the edited call (same person, time and signature check), which counts toward its quorum
  like any approval; other approvers approve the edited call, not the original.
The model sees the edit in its thread (who, from what, to what). Edits are checked three times: by the server
against the form's JSON schema (types, bounds, enums: the form's fields are the tool's own), here against the tool's
pydantic model and the agent's refusal rules before anything is recorded as approved, and by the tool's model again
when the call executes. An edit of an argument the policy does not list is refused: the form has no field for it, so
the server refuses the resume, and `check_edits` refuses it for any other path.

Pure: no I/O, no Prefect.
"""

from __future__ import annotations

from typing import Any

from pydantic import ValidationError
from prefect_micro_agents.approval_policy import editable_fields
from pydantic import JsonValue

from prefect_micro_agents.thread import DecisionEvent, ProposalEvent, Thread, canonical_json
from prefect_micro_agents.tools import Agent, Tool, args_digest

__all__ = ["changed", "check_edits", "editable_fields", "edited_call", "describe_edits"]

def changed(proposal: ProposalEvent, values: dict[str, Any]) -> dict[str, JsonValue]:
    """The entries of `values` that differ from the proposal's arguments (compared as canonical JSON)."""
    return {k: v for k, v in values.items() if canonical_json(v) != canonical_json(proposal.args.get(k))}


def check_edits(agent: Agent, thread: Thread, proposal: ProposalEvent, edits: dict[str, Any]) -> str:
    """Why these edits of `proposal` cannot be approved ("" when they can): an argument its policy does not let an
    approver change, a value the tool's model refuses, or a call the agent refuses now (e.g. the call just rejected)."""
    tool = agent.tool(proposal.intent)
    if tool is None:
        return f"{proposal.intent!r} is not a tool of agent {agent.name!r}"
    allowed = editable_fields(tool, agent.approval_policy(proposal.intent))
    refused = sorted(set(edits) - set(allowed))
    if refused:
        return (f"{proposal.intent} does not let an approver change {', '.join(refused)}"
                + (f" (editable: {', '.join(allowed)})" if allowed else " (it allows no edits)"))
    try:
        call = tool.model_validate({"intent": proposal.intent, **proposal.args, **edits})
    except ValidationError as exc:
        return "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors()[:5])
    return agent.refusal(thread, proposal.intent, call.arguments()) or ""


def describe_edits(proposal: ProposalEvent, edits: dict[str, Any]) -> str:
    """`name: old -> new` for each edited argument, for people and for the model."""
    return "; ".join(f"{k}: {canonical_json(proposal.args.get(k))} -> {canonical_json(v)}" for k, v in edits.items())


def edited_call(agent: Agent, thread: Thread, decision: DecisionEvent) -> tuple[ProposalEvent, DecisionEvent]:
    """The edited call that `decision` (an approval with valid edits, just recorded) puts in its proposal's place,
    and the editor's approval of it."""
    original = next(e for e in thread.of_type(ProposalEvent) if e.id == decision.proposal_id)
    tool = agent.tool(original.intent)
    assert tool is not None  # check_edits passed
    args = tool.model_validate({"intent": original.intent, **original.args, **decision.edits}).arguments()
    root = original.edited_from or original.id
    n = 1 + sum(1 for e in thread.of_type(ProposalEvent) if (e.edited_from or "") == root)
    edited = ProposalEvent(
        id=f"{root}-edit{n}", intent=original.intent, args=args, args_digest=args_digest(original.intent, args),
        reason=f"edited by {decision.approver} from {original.id}: {describe_edits(original, decision.edits)}",
        model=original.model, edited_by=decision.approver, edited_from=original.id)
    approval = decision.model_copy(update={"proposal_id": edited.id, "proposal_digest": edited.digest, "edits": {}})
    return edited, approval
