"""Every branch of next_action, the caps, approval binding, and apply's guards."""

from __future__ import annotations


import pytest

from agents.errors import ThreadError
from agents.reducer import (
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
from agents.thread import (
    AnswerEvent,
    DoneEvent,
    ErrorEvent,
    EscalationEvent,
    ProposalEvent,
    ResultEvent,
)
from factories import AGENT, AT, NEW, decided, deploy_context, full_deploy_thread, proposal


def test_fresh_thread_asks_the_model() -> None:
    assert next_action(AGENT, deploy_context()) == AskModel(step=1)


def test_approve_tool_waits_for_approval() -> None:
    p = proposal("deploy_backend_to_prod", 1, sha=NEW)
    assert next_action(AGENT, deploy_context().append(p)) == AwaitApproval(p)


def test_matching_approval_unlocks_execute() -> None:
    p = proposal("deploy_backend_to_prod", 1, sha=NEW)
    thread = decided(deploy_context().append(p), p, "approved")
    action = next_action(AGENT, thread)
    assert isinstance(action, Execute) and action.proposal == p and action.approval == thread.events[-1]


def test_approval_with_a_mismatched_digest_does_not_unlock_execute() -> None:
    p = proposal("deploy_backend_to_prod", 1, sha=NEW)
    # The human approved a proposal with the same id but other arguments: void.
    other = proposal("deploy_backend_to_prod", 1, sha="deadbeef0000")
    thread = decided(deploy_context().append(p), other, "approved")
    assert thread.events[-1].proposal_id == p.id
    assert next_action(AGENT, thread) == AwaitApproval(p)


def test_approval_of_another_proposal_does_not_unlock_execute() -> None:
    p = proposal("deploy_backend_to_prod", 1, sha=NEW)
    thread = deploy_context().append(p)
    foreign = decided(thread, p, "approved").events[-1].model_copy(update={"proposal_id": "deploy-999"})
    with pytest.raises(ThreadError, match="pending proposal is 'deploy-1'"):
        apply(thread, foreign)
    assert next_action(AGENT, thread) == AwaitApproval(p)


def test_rejection_with_a_stale_digest_is_void_too() -> None:
    p = proposal("deploy_frontend_to_prod", 1, sha=NEW)
    other = proposal("deploy_frontend_to_prod", 1, sha="deadbeef0000")
    thread = decided(deploy_context().append(p), other, "rejected", "no")
    assert next_action(AGENT, thread) == AwaitApproval(p)


def test_rejection_goes_back_to_the_model() -> None:
    p = proposal("deploy_frontend_to_prod", 1, sha=NEW)
    thread = decided(deploy_context().append(p), p, "rejected", "deploy the backend first")
    assert next_action(AGENT, thread) == AskModel(step=2)


def test_result_settles_the_proposal() -> None:
    thread = full_deploy_thread()
    assert next_action(AGENT, thread) == AskModel(step=4)


def test_human_tool_awaits_an_answer_then_asks_the_model() -> None:
    p = proposal("request_more_information", 1, question="which SHA?")
    thread = deploy_context().append(p)
    assert next_action(AGENT, thread) == AwaitAnswer(p)
    answered = thread.append(AnswerEvent(proposal_id=p.id, answer="the newest tag", by="alice", at=AT))
    assert next_action(AGENT, answered) == AskModel(step=2)


def test_terminal_tool_finishes_and_then_halts() -> None:
    p = proposal("done_for_now", 1, message="all deployed")
    action = next_action(AGENT, deploy_context().append(p))
    assert action == Finish(DoneEvent(proposal_id=p.id, message="all deployed"))
    assert next_action(AGENT, apply(deploy_context().append(p), action.event)) == Halted("done")


def test_auto_tool_executes_without_approval() -> None:
    from agents.tools import Agent
    from typing import Literal

    from agents.deploybot import DoneForNow
    from agents.tools import Tool

    class Lookup(Tool):
        """Look something up."""

        policy = "auto"
        intent: Literal["lookup"]

    agent = Agent(name="a", tools=(Lookup, DoneForNow), prompt="deploy_agent.j2")
    p = proposal("lookup", 1)
    assert next_action(agent, deploy_context().append(p)) == Execute(p, None)


def test_consecutive_errors_escalate_at_the_cap() -> None:
    thread = deploy_context()
    for n in range(AGENT.max_consecutive_errors):
        assert isinstance(next_action(AGENT, thread), AskModel)
        thread = apply(thread, ErrorEvent(kind="malformed_output", message=f"bad {n}"))
    action = next_action(AGENT, thread)
    assert isinstance(action, Escalate)
    assert "3 consecutive errors" in action.event.reason and "bad 2" in action.event.reason
    assert next_action(AGENT, apply(thread, action.event)) == Halted("escalated")


def test_an_error_streak_is_broken_by_a_good_step() -> None:
    thread = deploy_context()
    thread = thread.append(ErrorEvent(kind="malformed_output", message="x"), ErrorEvent(kind="unknown_intent", message="y"))
    p = proposal("deploy_backend_to_prod", 3, sha=NEW)
    thread = decided(thread.append(p), p, "approved")
    thread = thread.append(ResultEvent(proposal_id=p.id, intent=p.intent, output="ok"))
    thread = thread.append(ErrorEvent(kind="malformed_output", message="z"))
    assert next_action(AGENT, thread) == AskModel(step=5)  # two errors, one proposal, one error so far


def test_tool_error_settles_the_proposal_and_counts_toward_the_cap() -> None:
    p = proposal("deploy_backend_to_prod", 1, sha=NEW)
    thread = decided(deploy_context().append(p), p, "approved")
    thread = apply(thread, ErrorEvent(kind="tool_error", message="boom", proposal_id=p.id))
    assert next_action(AGENT, thread) == AskModel(step=2)


def test_step_cap_escalates() -> None:
    thread = deploy_context()
    for n in range(1, AGENT.max_steps + 1):
        p = proposal("deploy_frontend_to_prod", n, sha=NEW)
        thread = decided(thread.append(p), p, "rejected", "no")
    assert model_steps(thread) == AGENT.max_steps
    action = next_action(AGENT, thread)
    assert isinstance(action, Escalate) and "step limit reached (10 of 10" in action.event.reason


def test_unknown_tool_in_a_recorded_thread_escalates() -> None:
    p = proposal("format_disk", 1)
    action = next_action(AGENT, deploy_context().append(p))
    assert isinstance(action, Escalate) and "format_disk" in action.event.reason


def test_apply_refuses_events_after_the_end_and_out_of_turn() -> None:
    ended = deploy_context().append(EscalationEvent(reason="x"))
    with pytest.raises(ThreadError, match="has ended"):
        apply(ended, ErrorEvent(kind="malformed_output", message="late"))
    with pytest.raises(ThreadError, match="pending proposal is None"):
        apply(deploy_context(), ResultEvent(proposal_id="nope", intent="x", output=1))
    p = proposal("deploy_backend_to_prod", 1, sha=NEW)
    with pytest.raises(ThreadError, match="still pending"):
        apply(deploy_context().append(p), proposal("deploy_frontend_to_prod", 2, sha=NEW))


def test_the_reducer_is_pure() -> None:
    thread = full_deploy_thread()
    before = thread.to_json()
    assert next_action(AGENT, thread) == next_action(AGENT, thread)
    assert thread.to_json() == before
    assert isinstance(thread.events[-1], ResultEvent)
    assert isinstance(apply(thread, ProposalEvent(id="x", intent="done_for_now", args={"message": "m"}, args_digest="d")), type(thread))
