"""Approve with edits (prefect_micro_agents.edits) and signed-only policies in the reducer and the loop. Pure: threads
in, actions out; the plain runner drives the same loop the Prefect adapter does (tests/kit/test_gate_policy.py runs
both through Prefect's suspend/resume)."""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest

from prefect_micro_agents import bind
from prefect_micro_agents.approval_policy import ApprovalPolicy, Approvers, PolicyOverride
from prefect_micro_agents.edits import check_edits, edited_call, editable_fields
from prefect_micro_agents.errors import ConfigurationError
from prefect_micro_agents.loop import drive
from prefect_micro_agents.prompts import render_thread
from prefect_micro_agents.reducer import AwaitApproval, Execute, model_steps, next_action
from prefect_micro_agents.thread import DecisionEvent, ProposalEvent, ResultEvent, Thread
from toy_agent import AGENT, AT, NEW, OLD, LookUpReceipt, PayExpense, FileExpense, expense_context, proposal

OTHER = "0a1b2c3d4e5f60718293a4b5c6d7e8f90a1b2c3d"


def agent_with(**policy: Any) -> Any:
    return dataclasses.replace(AGENT, approvers=Approvers(tools={"pay_expense": PolicyOverride(**policy)}))


def decide(thread: Thread, p: ProposalEvent, who: str, decision: str = "approved", **fields: Any) -> DecisionEvent:
    return DecisionEvent(proposal_id=p.id, proposal_digest=p.digest, decision=decision, approver=who, at=AT,
                         **fields)


def pay() -> tuple[Thread, ProposalEvent]:
    p = proposal("pay_expense", 1, receipt=NEW)
    return expense_context().append(p), p


def test_editable_names_are_checked_when_the_agent_is_built() -> None:
    assert editable_fields(PayExpense, ApprovalPolicy(editable=("*",))) == ("receipt",)
    with pytest.raises(ConfigurationError, match=r"pay_expense: editable names \['amount'\], which are not its "
                                                 r"arguments \(receipt\)"):
        agent_with(editable=("amount",))


def test_check_edits_refuses_what_the_policy_or_the_tool_refuses() -> None:
    thread, p = pay()
    assert check_edits(AGENT, thread, p, {"receipt": OTHER}) == \
        "pay_expense does not let an approver change receipt (it allows no edits)"
    editable = agent_with(editable=("receipt",))
    assert check_edits(editable, thread, p, {"receipt": OTHER}) == ""
    assert "receipt: String should match pattern" in check_edits(editable, thread, p, {"receipt": "NOT HEX"})
    assert check_edits(editable, thread, p, {"amount": "1"}).startswith(
        "pay_expense does not let an approver change amount (editable: receipt)")


def test_a_valid_edit_replaces_the_call_and_the_edited_call_waits_for_the_rest_of_its_quorum() -> None:
    agent = agent_with(editable=("receipt",), quorum=2, approvers=("alice", "bob"))
    thread, p = pay()
    edit = decide(thread, p, "alice", edits={"receipt": OTHER}, feedback="wrong receipt")
    thread = thread.append(edit)
    assert agent.tally(thread, p).edited_by == edit and not agent.tally(thread, p).met
    edited, approval = edited_call(agent, thread, edit)
    assert (edited.id, edited.edited_by, edited.edited_from, edited.args) == \
        (f"{p.id}-edit1", "alice", p.id, {"receipt": OTHER})
    assert edited.digest != p.digest and approval.proposal_digest == edited.digest and approval.approver == "alice"
    assert approval.edits == {}
    thread = thread.append(edited, approval)
    assert next_action(agent, thread) == AwaitApproval(edited)  # 1 of 2: bob must approve the EDITED call
    assert model_steps(thread) == 1  # an approver's edit is not a model step
    bob_on_original = thread.append(decide(thread, p, "bob"))
    assert isinstance(next_action(agent, bob_on_original), AwaitApproval)  # approving the replaced call counts nothing
    done = thread.append(decide(thread, edited, "bob"))
    action = next_action(agent, done)
    assert isinstance(action, Execute) and action.proposal == edited
    assert [d.approver for d in action.approvals] == ["alice", "bob"]
    # The model reads who edited what, from what to what.
    text = render_thread(done, agent=agent)
    assert f'alice edited call 1 (receipt: "{NEW[:12]}" -> "{OTHER[:12]}"): wrong receipt; the edited call ' \
           "replaces it" in text
    assert f"call 2: pay_expense receipt={OTHER[:12]} (call 1 as edited by alice)" in text


def test_an_edit_from_someone_who_may_not_approve_replaces_nothing() -> None:
    agent = agent_with(editable=("receipt",), approvers=("alice",))
    thread, p = pay()
    thread = thread.append(decide(thread, p, "mallory", edits={"receipt": OTHER}))
    count = agent.tally(thread, p)
    assert count.edited_by is None and next_action(agent, thread) == AwaitApproval(p)


class _Asked:
    """Effects of a plain run whose human answers from a list, then stops answering; the model, asked after the
    payment, is done."""

    def __init__(self, answers: list[Any]) -> None:
        self.answers, self.ran = answers, []
        self.scope = "t"

    def ask_model(self, thread: Thread, step: int) -> Any:
        return proposal("done_for_now", step, message="paid")  # after the payment: done

    def ask_human(self, thread: Thread, wait: Any) -> Any:
        return self.answers.pop(0)(wait.proposal) if self.answers else None

    def began(self, key: str) -> bool:
        return False

    def execute(self, binding: Any, call: Any, ctx: Any) -> Any:
        self.ran.append(call.arguments())
        return ResultEvent(proposal_id=ctx.proposal_id, intent=call.intent_name(), output={"ok": True},
                           idempotency_key=ctx.idempotency_key)

    def recorded(self, thread: Thread, cause: Any) -> None:
        pass

    def halted(self, thread: Thread, outcome: str) -> None:
        pass


def _tools() -> list[Any]:
    return [bind(PayExpense, lambda c, x: {}), bind(FileExpense, lambda c, x: {}), bind(LookUpReceipt, lambda c, x: {})]


def test_the_loop_records_a_refused_edit_as_not_counted_and_runs_only_a_valid_edited_call() -> None:
    agent = agent_with(editable=("receipt",))
    thread, p = pay()
    effects = _Asked([
        lambda q: DecisionEvent(proposal_id=q.id, proposal_digest=q.digest, decision="approved", approver="alice",
                                at=AT, edits={"receipt": "NOT HEX"}),  # past the server only if it was bypassed
        lambda q: DecisionEvent(proposal_id=q.id, proposal_digest=q.digest, decision="approved", approver="alice",
                                at=AT, edits={"receipt": OLD}),
    ])
    out = drive(agent, thread, _tools(), effects)
    decisions = out.of_type(DecisionEvent)
    assert "receipt: String should match pattern" in decisions[0].edit_error
    assert effects.ran == [{"receipt": OLD}]  # the edited call ran, once; the refused edit ran nothing
    assert "alice's edits were refused" in dict(
        (d.approver + str(i), why) for i, (d, why) in enumerate(agent.tally(out, p).ignored))["alice0"]


def test_a_signed_only_policy_counts_verified_approvals_and_says_why_others_do_not() -> None:
    agent = agent_with(signed=True)
    thread, p = pay()
    unsigned = thread.append(decide(thread, p, "alice"))
    assert next_action(agent, unsigned) == AwaitApproval(p)
    assert agent.tally(unsigned, p).ignored[0][1] == \
        "alice's approval is not verified (not signed), and this call needs signed approvals"
    bad = thread.append(decide(thread, p, "alice", signature="x", verification="signature does not verify"))
    assert "(signature does not verify)" in agent.tally(bad, p).ignored[0][1]
    good = thread.append(decide(thread, p, "alice", signature="x", verified=True, verification="Good"))
    assert isinstance(next_action(agent, good), Execute)
    assert isinstance(next_action(AGENT, unsigned), Execute)  # without the policy, as before
