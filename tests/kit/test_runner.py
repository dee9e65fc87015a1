"""The plain-Python loop end to end with the scripted model, and secrets that never leave the tool."""

from __future__ import annotations

import os
from datetime import UTC, datetime
from typing import Any

import pytest

from prefect_micro_agents import Binding, ToolContext, bind
from prefect_micro_agents.errors import ConfigurationError
from prefect_micro_agents.prompts import render_thread
from prefect_micro_agents.reducer import AwaitApproval, Halted, apply, next_action
from prefect_micro_agents.runner import run_until_blocked
from prefect_micro_agents.testing.scripted import ScriptedModel
from prefect_micro_agents.thread import DecisionEvent, Event, ReceiptEvent, ResultEvent, Thread
from toy_agent import AGENT, NEW, FileExpense, LookUpReceipt, PayExpense, expense_context


def look_up(call: LookUpReceipt, ctx: ToolContext) -> dict[str, Any]:
    return {"receipt": call.receipt, "found": True}


class FakeBooks:
    """A tool implementation with an observable effect: what the books hold and how often each call ran."""

    def __init__(self) -> None:
        self.books: dict[str, str] = {}
        self.calls: list[tuple[str, str, str]] = []

    def record(self, book: str, call: PayExpense | FileExpense, ctx: ToolContext) -> dict[str, Any]:
        self.calls.append((book, call.receipt, ctx.idempotency_key))
        self.books[book] = call.receipt
        return {"book": book, "receipt": call.receipt, "ok": True}

    def impls(self) -> list[Binding[Any]]:
        return [bind(PayExpense, lambda call, ctx: self.record("paid", call, ctx)),
                bind(FileExpense, lambda call, ctx: self.record("ledger", call, ctx)),
                bind(LookUpReceipt, look_up)]


def decide(thread: Thread, decision: str, feedback: str = "") -> Thread:
    action = next_action(AGENT, thread)
    assert isinstance(action, AwaitApproval)
    p = action.proposal
    return apply(thread, DecisionEvent(proposal_id=p.id, proposal_digest=p.digest, decision=decision, feedback=feedback,
                                       approver="alice", at=datetime(2026, 11, 26, 12, tzinfo=UTC)))


def call(intent: str, **args: str) -> dict[str, Any]:
    return {"call": {"intent": intent, **args}}


def test_full_run_with_feedback(scripted: ScriptedModel) -> None:
    books = FakeBooks()
    persisted: list[Event] = []
    scripted.enqueue(
        call("file_expense", receipt=NEW),
        call("pay_expense", receipt=NEW),
        call("file_expense", receipt=NEW),
        call("done_for_now", message="paid and filed " + NEW),
    )

    def run(thread: Thread) -> Thread:
        return run_until_blocked(AGENT, thread, books.impls(), scripted.model,
                                 on_event=lambda t, e: persisted.append(e))

    thread = run(expense_context())
    assert thread.events[-1].intent == "file_expense" and books.calls == []
    thread = run(decide(thread, "rejected", "pay it first"))
    assert thread.events[-1].intent == "pay_expense" and books.calls == []
    thread = run(decide(thread, "approved"))
    assert thread.events[-1].intent == "file_expense"
    assert books.books == {"paid": NEW}
    thread = run(decide(thread, "approved"))

    assert next_action(AGENT, thread) == Halted("done")
    assert books.books == {"paid": NEW, "ledger": NEW}
    assert [c[:2] for c in books.calls] == [("paid", NEW), ("ledger", NEW)]  # each ran exactly once
    # The model saw the feedback when it made its second proposal, and not before.
    prompts = [r["messages"][1]["content"] for r in scripted.requests()]
    assert "pay it first" not in prompts[0]
    assert "rejected 1 by alice: pay it first" in prompts[1]
    # Receipts bind what ran to who approved it and the idempotency key the tool received.
    receipts = thread.of_type(ReceiptEvent)
    assert [r.approver for r in receipts] == ["alice", "alice"]
    assert [r.idempotency_key for r in receipts] == [c[2] for c in books.calls]
    assert all(r.idempotency_key for r in thread.of_type(ResultEvent))
    assert [e.type for e in persisted] == [e.type for e in thread.events[len(expense_context().events):] if e.type != "decision"]


def test_three_malformed_outputs_escalate(scripted: ScriptedModel) -> None:
    scripted.enqueue("no json here", '{"call": {"intent": "launch_rockets"}}', '{"call": {"intent": "pay_expense"}}')
    thread = run_until_blocked(AGENT, expense_context(), FakeBooks().impls(), scripted.model)
    assert [e.type for e in thread.events[-4:]] == ["error", "error", "error", "escalation"]
    assert [e.kind for e in thread.events[-4:-1]] == ["malformed_output", "unknown_intent", "invalid_arguments"]
    assert next_action(AGENT, thread) == Halted("escalated")
    assert len(scripted.requests()) == 3
    # Each retry showed the model its previous mistake.
    assert "error malformed_output: not valid JSON" in scripted.requests()[1]["messages"][1]["content"]


def test_a_failing_tool_is_an_error_the_model_sees(scripted: ScriptedModel) -> None:
    def broken(call: PayExpense | FileExpense, ctx: ToolContext) -> Any:
        raise RuntimeError("health check timed out after 30s")

    impls = [bind(PayExpense, broken), bind(FileExpense, broken), bind(LookUpReceipt, look_up)]

    scripted.enqueue(call("pay_expense", receipt=NEW), call("done_for_now", message="gave up"))
    thread = run_until_blocked(AGENT, expense_context(), impls, scripted.model)
    thread = run_until_blocked(AGENT, decide(thread, "approved"), impls, scripted.model)
    error = [e for e in thread.events if e.type == "error"][0]
    assert error.kind == "tool_error" and "health check timed out" in error.message
    assert "health check timed out" in scripted.requests()[1]["messages"][1]["content"]


def test_missing_implementation_is_a_configuration_error(scripted: ScriptedModel) -> None:
    with pytest.raises(ConfigurationError, match="no implementation for: file_expense"):
        run_until_blocked(AGENT, expense_context(), FakeBooks().impls()[::2], scripted.model)  # pay and look-up bound, file not
    assert scripted.requests() == []


def test_canary_secret_never_reaches_prompt_or_thread(scripted: ScriptedModel, monkeypatch: pytest.MonkeyPatch) -> None:
    canary = "canary-7f3a9c1e-do-not-leak"
    monkeypatch.setenv("LEDGER_TOKEN", canary)

    def leaky(call: PayExpense | FileExpense, ctx: ToolContext) -> Any:
        token = os.environ["LEDGER_TOKEN"]  # the tool legitimately uses the secret ...
        if call.receipt == NEW:
            return {"command": f"ledger --token {token} --receipt {call.receipt}", "ok": True}  # ... and echoes it back
        raise RuntimeError(f"auth failed for token {token}")

    scripted.enqueue(
        call("pay_expense", receipt=NEW),
        call("file_expense", receipt="0000000"),
        call("done_for_now", message="done"),
    )
    impls = [bind(PayExpense, leaky), bind(FileExpense, leaky), bind(LookUpReceipt, look_up)]
    thread = run_until_blocked(AGENT, expense_context(), impls, scripted.model)
    thread = run_until_blocked(AGENT, decide(thread, "approved"), impls, scripted.model)
    thread = run_until_blocked(AGENT, decide(thread, "approved"), impls, scripted.model)
    assert next_action(AGENT, thread) == Halted("done")

    serialized = thread.to_json()
    assert "[redacted:LEDGER_TOKEN]" in serialized  # the effect is visible, the value is not
    assert canary not in serialized
    assert canary not in render_thread(thread)
    assert all(canary not in str(r) for r in scripted.requests())
    errors = [e for e in thread.events if e.type == "error"]
    assert len(errors) == 1 and "auth failed for token [redacted:LEDGER_TOKEN]" in errors[0].message


def test_the_callers_initial_thread_is_redacted_too(scripted: ScriptedModel, monkeypatch: pytest.MonkeyPatch) -> None:
    """Pre-fetched context (a note, a log line) is the caller's data: the loop redacts it before anything."""
    from prefect_micro_agents.thread import ContextEvent

    canary = "canary-initial-0d9e2b4f"
    monkeypatch.setenv("LEDGER_TOKEN", canary)
    initial = expense_context().append(ContextEvent(name="notes", payload=[
        {"note": f"ci: rotate token to {canary}"}]))
    persisted: list[Thread] = []
    scripted.enqueue(call("done_for_now", message="nothing to do"))
    thread = run_until_blocked(AGENT, initial, FakeBooks().impls(), scripted.model,
                               on_event=lambda t, e: persisted.append(t))
    assert next_action(AGENT, thread) == Halted("done")
    assert canary not in thread.to_json() and "ci: rotate token to [redacted:LEDGER_TOKEN]" in thread.to_json()
    assert all(canary not in t.to_json() for t in persisted)  # what a caller persists along the way
    assert all(canary not in str(r) for r in scripted.requests())
