"""Every branch of next_action, the caps, approval binding, apply's guards, and that all of it is pure."""

from __future__ import annotations

from typing import Literal

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from prefect_micro_agents.errors import ThreadError
from prefect_micro_agents.reducer import (
    AskModel,
    AwaitAnswer,
    AwaitApproval,
    Escalate,
    Execute,
    Finish,
    Halted,
    apply,
    model_steps,
    next_action,
)
from prefect_micro_agents.thread import (
    AnswerEvent,
    DecisionEvent,
    DoneEvent,
    ErrorEvent,
    EscalationEvent,
    Event,
    ReceiptEvent,
    ResultEvent,
    Thread,
)
from prefect_micro_agents.tools import Agent, Tool
from toy_agent import AGENT, AT, NEW, OLD, decided, expense_context, full_expense_thread, proposal
import purity


def test_fresh_thread_asks_the_model() -> None:
    assert next_action(AGENT, expense_context()) == AskModel(step=1)


def test_approve_tool_waits_for_approval() -> None:
    p = proposal("pay_expense", 1, receipt=NEW)
    assert next_action(AGENT, expense_context().append(p)) == AwaitApproval(p)


def test_matching_approval_unlocks_execute() -> None:
    p = proposal("pay_expense", 1, receipt=NEW)
    thread = decided(expense_context().append(p), p, "approved")
    action = next_action(AGENT, thread)
    assert isinstance(action, Execute) and action.proposal == p and action.approval == thread.events[-1]


def test_approval_with_a_mismatched_digest_does_not_unlock_execute() -> None:
    p = proposal("pay_expense", 1, receipt=NEW)
    # The human approved a proposal with the same id but other arguments: void.
    other = proposal("pay_expense", 1, receipt="deadbeef0000")
    thread = decided(expense_context().append(p), other, "approved")
    assert thread.events[-1].proposal_id == p.id
    assert next_action(AGENT, thread) == AwaitApproval(p)


def test_approval_of_another_proposal_does_not_unlock_execute() -> None:
    p = proposal("pay_expense", 1, receipt=NEW)
    thread = expense_context().append(p)
    foreign = decided(thread, p, "approved").events[-1].model_copy(update={"proposal_id": "expense-999"})
    with pytest.raises(ThreadError, match="pending proposal is 'expense-1'"):
        apply(thread, foreign)
    assert next_action(AGENT, thread) == AwaitApproval(p)


def test_rejection_with_a_stale_digest_is_void_too() -> None:
    p = proposal("file_expense", 1, receipt=NEW)
    other = proposal("file_expense", 1, receipt="deadbeef0000")
    thread = decided(expense_context().append(p), other, "rejected", "no")
    assert next_action(AGENT, thread) == AwaitApproval(p)


def test_rejection_goes_back_to_the_model() -> None:
    p = proposal("file_expense", 1, receipt=NEW)
    thread = decided(expense_context().append(p), p, "rejected", "pay it first")
    assert next_action(AGENT, thread) == AskModel(step=2)


def test_result_settles_the_proposal() -> None:
    thread = full_expense_thread()
    assert next_action(AGENT, thread) == AskModel(step=4)


def test_human_tool_awaits_an_answer_then_asks_the_model() -> None:
    p = proposal("ask_submitter", 1, question="which receipt?")
    thread = expense_context().append(p)
    assert next_action(AGENT, thread) == AwaitAnswer(p)
    answered = thread.append(AnswerEvent(proposal_id=p.id, answer="the newest tag", by="alice", at=AT))
    assert next_action(AGENT, answered) == AskModel(step=2)


def test_terminal_tool_finishes_and_then_halts() -> None:
    p = proposal("done_for_now", 1, message="all paid")
    action = next_action(AGENT, expense_context().append(p))
    assert action == Finish(DoneEvent(proposal_id=p.id, message="all paid"))
    assert next_action(AGENT, apply(expense_context().append(p), action.event)) == Halted("done")


def test_auto_tool_executes_without_approval() -> None:
    p = proposal("lookup", 1)
    assert next_action(WALKER, expense_context().append(p)) == Execute(p, None)


def test_consecutive_errors_escalate_at_the_cap() -> None:
    thread = expense_context()
    for n in range(AGENT.max_consecutive_errors):
        assert isinstance(next_action(AGENT, thread), AskModel)
        thread = apply(thread, ErrorEvent(kind="malformed_output", message=f"bad {n}"))
    action = next_action(AGENT, thread)
    assert isinstance(action, Escalate)
    assert "3 consecutive errors" in action.event.reason and "bad 2" in action.event.reason
    assert next_action(AGENT, apply(thread, action.event)) == Halted("escalated")


def test_an_error_streak_is_broken_by_a_good_step() -> None:
    thread = expense_context()
    thread = thread.append(ErrorEvent(kind="malformed_output", message="x"), ErrorEvent(kind="unknown_intent", message="y"))
    p = proposal("pay_expense", 3, receipt=NEW)
    thread = decided(thread.append(p), p, "approved")
    thread = thread.append(ResultEvent(proposal_id=p.id, intent=p.intent, output="ok"))
    thread = thread.append(ErrorEvent(kind="malformed_output", message="z"))
    assert next_action(AGENT, thread) == AskModel(step=5)  # two errors, one proposal, one error so far


def test_tool_error_settles_the_proposal_and_counts_toward_the_cap() -> None:
    p = proposal("pay_expense", 1, receipt=NEW)
    thread = decided(expense_context().append(p), p, "approved")
    thread = apply(thread, ErrorEvent(kind="tool_error", message="boom", proposal_id=p.id))
    assert next_action(AGENT, thread) == AskModel(step=2)


def test_step_cap_escalates() -> None:
    thread = expense_context()
    for n in range(1, AGENT.max_steps + 1):
        p = proposal("file_expense", n, receipt=NEW)
        thread = decided(thread.append(p), p, "rejected", "no")
    assert model_steps(thread) == AGENT.max_steps
    action = next_action(AGENT, thread)
    assert isinstance(action, Escalate) and "step limit reached (10 of 10" in action.event.reason


def test_unknown_tool_in_a_recorded_thread_escalates() -> None:
    p = proposal("format_disk", 1)
    action = next_action(AGENT, expense_context().append(p))
    assert isinstance(action, Escalate) and "format_disk" in action.event.reason


def test_apply_refuses_events_after_the_end_and_out_of_turn() -> None:
    ended = expense_context().append(EscalationEvent(reason="x"))
    with pytest.raises(ThreadError, match="has ended"):
        apply(ended, ErrorEvent(kind="malformed_output", message="late"))
    with pytest.raises(ThreadError, match="pending proposal is None"):
        apply(expense_context(), ResultEvent(proposal_id="nope", intent="x", output=1))
    p = proposal("pay_expense", 1, receipt=NEW)
    with pytest.raises(ThreadError, match="still pending"):
        apply(expense_context().append(p), proposal("file_expense", 2, receipt=NEW))


# -- purity: what the module docstring promises (no I/O, no clock) and what replay relies on (same thread, same answer)


class Lookup(Tool):
    """Look something up (an `auto` tool, so walks also reach Execute without an approval)."""

    policy = "auto"
    intent: Literal["lookup"]


WALKER = Agent(name="walker", tools=(*AGENT.tools, Lookup), prompt="expense_agent.j2", max_steps=6)
INTENTS = [t.intent_name() for t in WALKER.tools] + ["format_disk"]  # and one the agent does not have
STALE = "0" * 64


@st.composite
def walks(draw: st.DrawFn) -> Thread:
    """A thread the loop could really build: each event is a random legal answer to what next_action asked for."""
    thread = expense_context(receipt=draw(st.sampled_from([NEW, OLD])))  # OLD: the history shows it paid already
    for _ in range(draw(st.integers(0, 18))):
        match next_action(WALKER, thread):
            case Halted():
                break
            case AskModel(step=n):
                intent = draw(st.sampled_from(INTENTS))
                args = {"pay_expense": {"receipt": draw(st.sampled_from([NEW, NEW[:12], OLD]))},
                        "file_expense": {"receipt": draw(st.sampled_from([NEW, NEW[:12], OLD]))},
                        "ask_submitter": {"question": "which receipt?"},
                        "done_for_now": {"message": "done"}}.get(intent, {})
                event = draw(st.sampled_from([proposal(intent, n, **args),
                                              ErrorEvent(kind="malformed_output", message=f"bad {n}")]))
            case AwaitApproval(proposal=p):
                event = draw(st.sampled_from([
                    DecisionEvent(proposal_id=p.id, proposal_digest=draw(st.sampled_from([p.digest, STALE])),
                                  decision=draw(st.sampled_from(["approved", "rejected"])), feedback="f",
                                  approver="alice", at=AT),
                    ErrorEvent(kind="approval_expired", message="nobody decided", proposal_id=p.id)]))
            case AwaitAnswer(proposal=p):
                event = AnswerEvent(proposal_id=p.id, answer="the newest tag", by="bo", at=AT)
            case Execute(proposal=p):
                event = draw(st.sampled_from([
                    ResultEvent(proposal_id=p.id, intent=p.intent, output={"ok": True}),
                    ReceiptEvent(proposal_id=p.id, proposal_digest=p.digest, args_digest=p.args_digest,
                                 approver="alice", approved_at=AT, idempotency_key=f"k-{p.id}"),
                    ErrorEvent(kind="tool_error", message="boom", proposal_id=p.id)]))
            case Finish(event=done):
                event = done
            case Escalate(event=escalation):
                event = escalation
        thread = apply(thread, event)
    return thread


@settings(max_examples=100, deadline=None)
@given(walks())
def test_the_reducer_is_pure(thread: Thread) -> None:
    """At every point of a walk: no I/O, clock, chance or environment (tests/purity.py watches), the same answer for
    an equal thread, and the thread and event it was given unchanged."""
    misfit = ResultEvent(proposal_id="nobody", intent="lookup", output=None)
    for n in range(len(thread.events) + 1):
        prefix = thread.fork(n, id=thread.id)
        event = thread.events[n] if n < len(thread.events) else misfit
        before = (prefix.to_json(), event.model_dump_json())
        twin = (Thread.from_json(before[0]), type(event).model_validate_json(before[1]))  # equal, not the same
        said = []
        for given_thread, given_event in ((prefix, event), twin):
            with purity.watch() as impure:
                try:
                    applied: object = apply(given_thread, given_event)
                except ThreadError as err:
                    applied = f"ThreadError: {err}"
                said.append((next_action(WALKER, given_thread), model_steps(given_thread),
                             WALKER.offered(given_thread), applied))
            assert impure == [], f"the reducer is not pure at event {n}:\n" + "\n".join(impure)
        assert (prefix.to_json(), event.model_dump_json()) == before  # nothing it was given changed
        assert said[0] == said[1]  # an equal thread, the same answers
