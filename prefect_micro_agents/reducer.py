"""The reducer: pure functions from thread to next action (factors 8, 12). No I/O, no clock, no Prefect.

Policies are enforced here, in code: an `approve` tool reaches `Execute` only with approvals whose digest matches
the proposal as it stands, from as many distinct allowed people as its approval policy's quorum, none of them
excluded in this run, verified where the policy asks for signatures (prefect_micro_agents.approval_policy); a
rejection, or an approval with valid edits (the edited call takes the proposal's place: prefect_micro_agents.edits),
settles a proposal only when it would have counted as an approval. Nothing the model writes can change that.
"""

from __future__ import annotations

from dataclasses import dataclass

from prefect_micro_agents.errors import ThreadError
from prefect_micro_agents.thread import (
    AnswerEvent,
    DecisionEvent,
    DoneEvent,
    ErrorEvent,
    EscalationEvent,
    Event,
    ProposalEvent,
    ResultEvent,
    Thread,
)
from prefect_micro_agents.tools import Agent

__all__ = [
    "Action",
    "AskModel",
    "AwaitAnswer",
    "AwaitApproval",
    "Escalate",
    "Execute",
    "Finish",
    "Halted",
    "apply",
    "model_steps",
    "next_action",
    "valid_approval",
    "void_decisions",
]


@dataclass(frozen=True)
class AskModel:
    step: int


@dataclass(frozen=True)
class AwaitApproval:
    proposal: ProposalEvent


@dataclass(frozen=True)
class AwaitAnswer:
    proposal: ProposalEvent


@dataclass(frozen=True)
class Execute:
    proposal: ProposalEvent
    approval: DecisionEvent | None  # None only for `auto` tools; else the first counted approval
    approvals: tuple[DecisionEvent, ...] = ()  # every counted approval (the quorum), in order


@dataclass(frozen=True)
class Finish:
    """A terminal tool was proposed: record `event` and stop."""

    event: DoneEvent


@dataclass(frozen=True)
class Escalate:
    """Limits reached or the thread cannot go on: record `event` and stop."""

    event: EscalationEvent


@dataclass(frozen=True)
class Halted:
    """Nothing more to do: the thread ends with done or escalation."""

    outcome: str  # "done" | "escalated"


Action = AskModel | AwaitApproval | AwaitAnswer | Execute | Finish | Escalate | Halted


def model_steps(thread: Thread) -> int:
    """How many times the model has been asked so far: its proposals (not an approver's edits of them) plus its
    malformed answers."""
    model_errors = {"malformed_output", "unknown_intent", "invalid_arguments"}
    return sum(
        1 for e in thread.events
        if (e.type == "proposal" and not e.edited_by) or (e.type == "error" and e.kind in model_errors)
    )


def next_action(agent: Agent, thread: Thread) -> Action:
    events = thread.events
    if events and events[-1].type in ("done", "escalation"):
        return Halted("done" if events[-1].type == "done" else "escalated")
    errors = _trailing_errors(thread)
    if errors >= agent.max_consecutive_errors:
        last = events[-1]
        assert isinstance(last, ErrorEvent)
        return Escalate(EscalationEvent(reason=f"{errors} consecutive errors; last: {last.kind}: {last.message}"))
    pending = _pending_proposal(thread, agent)
    if pending is None:
        steps = model_steps(thread)
        if steps >= agent.max_steps:
            return Escalate(EscalationEvent(reason=f"step limit reached ({steps} of {agent.max_steps} model steps)"))
        return AskModel(step=steps + 1)
    tool = agent.tool(pending.intent)
    if tool is None:
        return Escalate(EscalationEvent(reason=f"proposal {pending.id} names unknown tool {pending.intent!r}"))
    match tool.policy:
        case "auto":
            return Execute(pending, None)
        case "terminal":
            return Finish(DoneEvent(proposal_id=pending.id, message=str(pending.args.get("message", ""))))
        case "human":
            return AwaitAnswer(pending)
        case "approve":
            count = agent.tally(thread, pending)
            if count.unknown_roles:
                return Escalate(EscalationEvent(reason=f"{pending.intent} {count.status()}"))
            if count.met:
                return Execute(pending, count.approved_by[0], count.approved_by)
            return AwaitApproval(pending)
    raise ThreadError(f"tool {pending.intent!r} has unknown policy {tool.policy!r}")


def _trailing_errors(thread: Thread) -> int:
    count = 0
    for event in reversed(thread.events):
        if event.type != "error":
            break
        count += 1
    return count


def _pending_proposal(thread: Thread, agent: Agent | None = None) -> ProposalEvent | None:
    """The latest proposal if nothing has settled it yet (result, answer, error, a rejection of it, or an approval
    with valid edits: the edited call replaces it). With `agent`, a rejection or an edit settles it only if its
    approval policy counts it (an allowed, not excluded approver; signed where it must be)."""
    settling: set[tuple[str, str]] = set()
    for event in reversed(thread.events):
        if isinstance(event, ProposalEvent):
            # A rejection whose digest does not match this proposal is void, like a stale approval.
            if (event.id, event.digest) not in settling:
                return event
            tool = agent.tool(event.intent) if agent is not None else None
            if agent is not None and tool is not None and tool.policy == "approve":
                count = agent.tally(thread, event)
                return None if count.rejected_by is not None or count.edited_by is not None else event
            return None
        if isinstance(event, ResultEvent | AnswerEvent | ErrorEvent):
            return None
        if isinstance(event, DecisionEvent) and (
                event.decision == "rejected" or (event.edits and not event.edit_error)):
            settling.add((event.proposal_id, event.proposal_digest))
    return None


def valid_approval(thread: Thread, proposal: ProposalEvent) -> DecisionEvent | None:
    """An approval counts only if it names this proposal AND its digest matches the proposal as it stands."""
    for decision in thread.for_proposal(DecisionEvent, proposal.id):
        if decision.decision == "approved" and decision.proposal_digest == proposal.digest:
            return decision
    return None


DIGEST_MISMATCH = "made for another version of the call"


def void_decisions(thread: Thread, agent: Agent | None = None) -> dict[int, str]:
    """Decisions that count for nothing, by index, with why: their digest is not the digest of the proposal they
    name (DIGEST_MISMATCH), or, with `agent`, its approval policy does not count them (an approver outside the list,
    an excluded one, a second approval by the same person).

    Records (the model's thread, the artifact, the report) must show them as not counted, never as "approved by X".
    """
    digests = {e.id: e.digest for e in thread.events if isinstance(e, ProposalEvent)}
    found = {i: DIGEST_MISMATCH for i, e in enumerate(thread.events)
             if isinstance(e, DecisionEvent) and digests.get(e.proposal_id) != e.proposal_digest}
    if agent is None:
        return found
    for proposal in thread.of_type(ProposalEvent):
        tool = agent.tool(proposal.intent)
        if tool is None or tool.policy != "approve":
            continue
        for decision, why in agent.tally(thread, proposal).ignored:
            # By identity (equal decisions can occur twice), without id(): the purity check counts it as impure.
            found.setdefault(next(i for i, e in enumerate(thread.events) if e is decision), why)
    return found


def apply(thread: Thread, event: Event, agent: Agent | None = None) -> Thread:
    """Append one event after checking it fits; a misfit is a caller bug and raises ThreadError. `agent`: judge
    rejections by its approval policies, as next_action does (a rejection that does not count settles nothing)."""
    if thread.events and thread.events[-1].type in ("done", "escalation"):
        raise ThreadError(f"thread {thread.id} has ended ({thread.events[-1].type}); cannot add {event.type}")
    proposal_id = getattr(event, "proposal_id", None)
    if proposal_id is not None and event.type != "done":
        pending = _pending_proposal(thread, agent)
        if pending is None or pending.id != proposal_id:
            raise ThreadError(f"{event.type} for proposal {proposal_id!r}, but the pending proposal is "
                              f"{pending.id if pending else None!r}")
    if isinstance(event, ProposalEvent) and _pending_proposal(thread, agent) is not None:
        raise ThreadError(f"proposal {event.id} while another proposal is still pending")
    return thread.append(event)
