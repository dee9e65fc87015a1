"""A decision made for another version of a call counts for nothing, and every record the kit keeps says so.

The gate's forms make the server refuse such answers (tests/kit/test_gate.py), but a thread can still hold one (a
plain-Python runner, an imported or older thread); the model's thread and the artifact must never show it as
"approved by X". (The deploy bot's report and rollback summary: tests/app/test_void_decisions.py.)
"""

from __future__ import annotations

from prefect_micro_agents.adapter.publish import thread_markdown
from prefect_micro_agents.execution import receipt
from prefect_micro_agents.prompts import render_thread
from prefect_micro_agents.reducer import AwaitApproval, Execute, next_action, void_decisions
from prefect_micro_agents.thread import DecisionEvent, ResultEvent, Thread
from toy_agent import AGENT, AT, NEW, expense_context, proposal

STALE = "f" * 64


def stale_then_valid() -> Thread:
    """mallory approves with another proposal's digest (void); the run asks again; alice approves; it runs."""
    p = proposal("pay_expense", 1, receipt=NEW)
    thread = expense_context().append(p, DecisionEvent(proposal_id=p.id, proposal_digest=STALE, decision="approved",
                                                       approver="mallory", at=AT))
    assert isinstance(next_action(AGENT, thread), AwaitApproval)  # void: asked again, nothing runs
    thread = thread.append(DecisionEvent(proposal_id=p.id, proposal_digest=p.digest, decision="approved",
                                         approver="alice", at=AT))
    action = next_action(AGENT, thread)
    assert isinstance(action, Execute) and action.approval is not None and action.approval.approver == "alice"
    proof = receipt(action, "run:expense-1:abc")
    assert proof is not None
    return thread.append(proof, ResultEvent(proposal_id=p.id, intent=p.intent,
                                            output={"paid": "84.20", "receipt": NEW, "to": "ana"},
                                            idempotency_key="run:expense-1:abc"))


def test_void_decisions_are_found_by_digest() -> None:
    thread = stale_then_valid()
    void = void_decisions(thread)
    assert [thread.events[i].approver for i in void] == ["mallory"]  # type: ignore[union-attr]


def test_the_model_sees_a_void_approval_as_void() -> None:
    text = render_thread(stale_then_valid())
    assert "void approval 1 by mallory: made for another version of the call; nothing ran" in text
    assert "approved 1 by mallory" not in text
    assert "approved 1 by alice" in text


def test_the_artifact_shows_a_void_approval_as_void() -> None:
    markdown = thread_markdown("expense", stale_then_valid(), "done")
    assert "VOID approval by mallory" in markdown and "not executed, asked again" in markdown
    assert "approved by mallory" not in markdown
    assert "approved by alice" in markdown


def test_a_void_rejection_is_not_a_rejection() -> None:
    p = proposal("file_expense", 1, receipt=NEW)
    thread = expense_context().append(p, DecisionEvent(proposal_id=p.id, proposal_digest=STALE, decision="rejected",
                                                       feedback="no", approver="mallory", at=AT))
    assert isinstance(next_action(AGENT, thread), AwaitApproval)
    assert "void rejection 1 by mallory" in render_thread(thread)
    assert "file_expense" in [t.intent_name() for t in AGENT.offered(thread)]  # a void rejection narrows nothing
