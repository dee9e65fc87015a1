"""Issue 10 item 12: a weak model cannot loop on a rejected call or on questions; enforced by what is offered. On the
kit's own agent (tests/kit/toy_agent.py); the rollback agent's refusal: tests/app/test_pipeline_parts.py."""

from __future__ import annotations

import dataclasses
import json
from datetime import UTC, datetime
from typing import Any

import pytest

from prefect_micro_agents import bind
from prefect_micro_agents.errors import ConfigurationError
from prefect_micro_agents.llm import LLMReply, build_request, parse_reply
from prefect_micro_agents.reducer import AwaitAnswer, AwaitApproval, apply, next_action
from prefect_micro_agents.runner import run_until_blocked
from prefect_micro_agents.testing.scripted import ScriptedModel
from prefect_micro_agents.thread import AnswerEvent, DecisionEvent, ErrorEvent, ProposalEvent, Thread, Usage
from prefect_micro_agents.tools import Agent, consecutive_questions, rejected_call
from toy_agent import AGENT, AT, NEW, FileExpense, LookUpReceipt, PayExpense, decided, expense_context, proposal

OTHER = "bd9c0e56a8ca6101af4a111e1c30acee0fe04827"


def offered(agent: Agent, thread: Thread) -> list[str]:
    return [t.intent_name() for t in agent.offered(thread)]


def reply(agent: Agent, thread: Thread, intent: str, **args: str) -> ProposalEvent | ErrorEvent:
    """What the model's reply becomes: the same validation every runner applies (llm.parse_reply)."""
    text = json.dumps({"call": {"intent": intent, **args}})
    return parse_reply(agent, thread, LLMReply(text=text, model="m", usage=Usage()), 9)


def asked(thread: Thread, n: int, answer: str = "not sure") -> Thread:
    q = proposal("ask_submitter", n, question=f"question {n}?")
    return thread.append(q, AnswerEvent(proposal_id=q.id, answer=answer, by="alice", at=AT))


# -- a rejected call is not accepted again unchanged as the next proposal


def test_a_rejected_call_on_the_report_is_not_offered_until_the_agent_proposes_something_else() -> None:
    p = proposal("file_expense", 1, receipt=NEW[:12])
    rejected = decided(expense_context().append(p), p, "rejected", "pay it first")
    assert rejected_call(rejected) == p
    assert "file_expense" not in offered(AGENT, rejected)
    out = reply(AGENT, rejected, "file_expense", receipt=NEW)  # as the model repeats it, in full
    assert isinstance(out, ErrorEvent) and out.kind == "unknown_intent" and "pay_expense" in out.message
    # An error in between does not lift the rule: the latest proposal is still the rejected one.
    assert "file_expense" not in offered(AGENT, rejected.append(out))
    # Once the agent proposed something else, filing is on offer again.
    q = proposal("ask_submitter", 2, question="file it after paying?")
    later = rejected.append(q, AnswerEvent(proposal_id=q.id, answer="yes", by="alice", at=AT))
    assert rejected_call(later) is None and "file_expense" in offered(AGENT, later)


def test_the_same_intent_with_other_arguments_stays_on_offer() -> None:
    """'Right tool, wrong receipt' feedback: the tool stays; only the rejected arguments are refused."""
    p = proposal("pay_expense", 1, receipt=OTHER[:12])
    rejected = decided(expense_context().append(p), p, "rejected", "wrong receipt: pay 9f8e7d6c5b4a")
    assert "pay_expense" in offered(AGENT, rejected)
    again = reply(AGENT, rejected, "pay_expense", receipt=OTHER)  # the full hash of the abbreviated one
    assert isinstance(again, ErrorEvent) and again.kind == "invalid_arguments"
    assert "a human rejected this same call just now" in again.message
    assert isinstance(reply(AGENT, rejected, "pay_expense", receipt=NEW[:12]), ProposalEvent)


def test_an_approved_or_void_decision_refuses_nothing() -> None:
    p = proposal("pay_expense", 1, receipt=OTHER[:12])
    stale = proposal("pay_expense", 1, receipt=NEW[:12])  # same id, other args: a void rejection
    void = decided(expense_context().append(p), stale, "rejected", "no")
    assert rejected_call(void) is None
    assert next_action(AGENT, void) == AwaitApproval(p)  # the reducer still waits for a real decision


# -- consecutive questions are capped


def test_after_two_questions_in_a_row_no_question_is_offered() -> None:
    once = asked(expense_context(), 1)
    assert consecutive_questions(AGENT, once) == 1 and "ask_submitter" in offered(AGENT, once)
    twice = asked(once, 2)
    assert consecutive_questions(AGENT, twice) == AGENT.max_consecutive_questions == 2
    assert offered(AGENT, twice) == ["look_up_receipt", "pay_expense", "file_expense", "done_for_now"]
    third = reply(AGENT, twice, "ask_submitter", question="and now?")
    assert isinstance(third, ErrorEvent) and third.kind == "unknown_intent"
    # The schema and the prompt sent to the model no longer carry the question tool.
    request = build_request(AGENT, twice, "openai/gpt-4o-mini")
    assert "ask_submitter" not in str(request.schema_) and "- ask_submitter" not in \
        request.messages[0]["content"]
    # Errors do not reset the count; a proposal that acts does.
    assert "ask_submitter" not in offered(AGENT, twice.append(third))
    p = proposal("pay_expense", 3, receipt=NEW)
    assert "ask_submitter" in offered(AGENT, decided(twice.append(p), p, "rejected", "not yet"))


def test_the_question_cap_is_an_agent_setting() -> None:
    strict = dataclasses.replace(AGENT, max_consecutive_questions=1)
    assert "ask_submitter" not in offered(strict, asked(expense_context(), 1))
    with pytest.raises(ConfigurationError, match="max_consecutive_questions must be >= 1"):
        dataclasses.replace(AGENT, max_consecutive_questions=0)


# -- the plain runner with the scripted model


def decide(agent: Agent, thread: Thread, decision: str, feedback: str = "") -> Thread:
    action = next_action(agent, thread)
    assert isinstance(action, AwaitApproval)
    p = action.proposal
    return apply(thread, DecisionEvent(proposal_id=p.id, proposal_digest=p.digest, decision=decision, feedback=feedback,
                                       approver="alice", at=datetime(2026, 11, 26, 12, tzinfo=UTC)))


def answer(agent: Agent, thread: Thread, text: str) -> Thread:
    action = next_action(agent, thread)
    assert isinstance(action, AwaitAnswer)
    return apply(thread, AnswerEvent(proposal_id=action.proposal.id, answer=text, by="alice", at=AT))


def call(intent: str, **args: str) -> dict[str, Any]:
    return {"call": {"intent": intent, **args}}


def test_a_model_that_repeats_itself_is_stopped_in_code_and_the_human_sees_it_once(scripted: ScriptedModel) -> None:
    def record(call: Any, ctx: Any) -> dict[str, Any]:
        return {"ok": True}

    impls = [bind(PayExpense, record), bind(FileExpense, record), bind(LookUpReceipt, record)]
    scripted.enqueue(
        call("file_expense", receipt=NEW[:12]),
        call("file_expense", receipt=NEW[:12]),  # the same call right after "pay it first"
        call("ask_submitter", question="pay or file first?"),
        call("ask_submitter", question="are you sure?"),
        call("ask_submitter", question="really sure?"),  # a third question in a row
        call("pay_expense", receipt=NEW[:12]),
    )
    thread = run_until_blocked(AGENT, expense_context(), impls, scripted.model)
    thread = run_until_blocked(AGENT, decide(AGENT, thread, "rejected", "pay it first"), impls,
                               scripted.model)
    thread = run_until_blocked(AGENT, answer(AGENT, thread, "pay first"), impls, scripted.model)
    thread = run_until_blocked(AGENT, answer(AGENT, thread, "yes"), impls, scripted.model)

    assert isinstance(next_action(AGENT, thread), AwaitApproval)
    kinds = [e.type if e.type != "error" else f"error:{e.kind}" for e in thread.events[len(expense_context().events):]]
    assert kinds == ["proposal", "decision", "error:unknown_intent", "proposal", "answer", "proposal", "answer",
                     "error:unknown_intent", "proposal"]
    proposals = thread.of_type(ProposalEvent)
    assert [p.intent for p in proposals] == ["file_expense", "ask_submitter",
                                             "ask_submitter", "pay_expense"]
    offered_per_request = [[t["function"]["name"] for t in (r["optional_params"].get("tools") or [])] or
                           _schema_intents(r) for r in scripted.requests()]
    assert "file_expense" not in offered_per_request[1]  # the step right after the rejection
    assert "ask_submitter" not in offered_per_request[4]  # after two questions in a row


def _schema_intents(request: dict[str, Any]) -> list[str]:
    schema = request["optional_params"]["response_format"]["json_schema"]["schema"]
    return [d["properties"]["intent"]["const"] for d in schema["$defs"].values() if "intent" in d.get("properties", {})]
