"""The plain-Python loop end to end with the scripted model, and secrets that never leave the tool."""

from __future__ import annotations

import os
from datetime import UTC, datetime
from typing import Any

import pytest

from agents.deploybot import DEPLOY_AGENT, DeployBackendToProd, DeployFrontendToProd
from prefect_micro_agents import Binding, ToolContext, bind
from prefect_micro_agents.errors import ConfigurationError
from prefect_micro_agents.prompts import render_thread
from prefect_micro_agents.reducer import AwaitApproval, Halted, apply, next_action
from prefect_micro_agents.runner import run_until_blocked
from prefect_micro_agents.testing.scripted import ScriptedModel
from prefect_micro_agents.thread import DecisionEvent, Event, ReceiptEvent, ResultEvent, Thread
from factories import NEW, deploy_context


class FakeProd:
    """A tool implementation with an observable effect: what runs in prod and how often each call ran."""

    def __init__(self) -> None:
        self.running: dict[str, str] = {}
        self.calls: list[tuple[str, str, str]] = []

    def deploy(self, service: str, call: DeployBackendToProd | DeployFrontendToProd, ctx: ToolContext) -> dict[str, Any]:
        self.calls.append((service, call.sha, ctx.idempotency_key))
        self.running[service] = call.sha
        return {"service": service, "sha": call.sha, "ok": True}

    def impls(self) -> list[Binding[Any]]:
        return [bind(DeployBackendToProd, lambda call, ctx: self.deploy("backend", call, ctx)),
                bind(DeployFrontendToProd, lambda call, ctx: self.deploy("frontend", call, ctx))]


def decide(thread: Thread, decision: str, feedback: str = "") -> Thread:
    action = next_action(DEPLOY_AGENT, thread)
    assert isinstance(action, AwaitApproval)
    p = action.proposal
    return apply(thread, DecisionEvent(proposal_id=p.id, proposal_digest=p.digest, decision=decision, feedback=feedback,
                                       approver="alice", at=datetime(2026, 11, 26, 12, tzinfo=UTC)))


def call(intent: str, **args: str) -> dict[str, Any]:
    return {"call": {"intent": intent, **args}}


def test_full_run_with_feedback(scripted: ScriptedModel) -> None:
    prod = FakeProd()
    persisted: list[Event] = []
    scripted.enqueue(
        call("deploy_frontend_to_prod", sha=NEW),
        call("deploy_backend_to_prod", sha=NEW),
        call("deploy_frontend_to_prod", sha=NEW),
        call("done_for_now", message="backend and frontend on " + NEW),
    )

    def run(thread: Thread) -> Thread:
        return run_until_blocked(DEPLOY_AGENT, thread, prod.impls(), scripted.model,
                                 on_event=lambda t, e: persisted.append(e))

    thread = run(deploy_context())
    assert thread.events[-1].intent == "deploy_frontend_to_prod" and prod.calls == []
    thread = run(decide(thread, "rejected", "deploy the backend first"))
    assert thread.events[-1].intent == "deploy_backend_to_prod" and prod.calls == []
    thread = run(decide(thread, "approved"))
    assert thread.events[-1].intent == "deploy_frontend_to_prod"
    assert prod.running == {"backend": NEW}
    thread = run(decide(thread, "approved"))

    assert next_action(DEPLOY_AGENT, thread) == Halted("done")
    assert prod.running == {"backend": NEW, "frontend": NEW}
    assert [c[:2] for c in prod.calls] == [("backend", NEW), ("frontend", NEW)]  # each ran exactly once
    # The model saw the feedback when it made its second proposal, and not before.
    prompts = [r["messages"][1]["content"] for r in scripted.requests()]
    assert "deploy the backend first" not in prompts[0]
    assert "rejected 1 by alice: deploy the backend first" in prompts[1]
    # Receipts bind what ran to who approved it and the idempotency key the tool received.
    receipts = thread.of_type(ReceiptEvent)
    assert [r.approver for r in receipts] == ["alice", "alice"]
    assert [r.idempotency_key for r in receipts] == [c[2] for c in prod.calls]
    assert all(r.idempotency_key for r in thread.of_type(ResultEvent))
    assert [e.type for e in persisted] == [e.type for e in thread.events[len(deploy_context().events):] if e.type != "decision"]


def test_three_malformed_outputs_escalate(scripted: ScriptedModel) -> None:
    scripted.enqueue("no json here", '{"call": {"intent": "launch_rockets"}}', '{"call": {"intent": "deploy_backend_to_prod"}}')
    thread = run_until_blocked(DEPLOY_AGENT, deploy_context(), FakeProd().impls(), scripted.model)
    assert [e.type for e in thread.events[-4:]] == ["error", "error", "error", "escalation"]
    assert [e.kind for e in thread.events[-4:-1]] == ["malformed_output", "unknown_intent", "invalid_arguments"]
    assert next_action(DEPLOY_AGENT, thread) == Halted("escalated")
    assert len(scripted.requests()) == 3
    # Each retry showed the model its previous mistake.
    assert "error malformed_output: not valid JSON" in scripted.requests()[1]["messages"][1]["content"]


def test_a_failing_tool_is_an_error_the_model_sees(scripted: ScriptedModel) -> None:
    def broken(call: DeployBackendToProd | DeployFrontendToProd, ctx: ToolContext) -> Any:
        raise RuntimeError("health check timed out after 30s")

    impls = [bind(DeployBackendToProd, broken), bind(DeployFrontendToProd, broken)]

    scripted.enqueue(call("deploy_backend_to_prod", sha=NEW), call("done_for_now", message="gave up"))
    thread = run_until_blocked(DEPLOY_AGENT, deploy_context(), impls, scripted.model)
    thread = run_until_blocked(DEPLOY_AGENT, decide(thread, "approved"), impls, scripted.model)
    error = [e for e in thread.events if e.type == "error"][0]
    assert error.kind == "tool_error" and "health check timed out" in error.message
    assert "health check timed out" in scripted.requests()[1]["messages"][1]["content"]


def test_missing_implementation_is_a_configuration_error(scripted: ScriptedModel) -> None:
    with pytest.raises(ConfigurationError, match="no implementation for: deploy_frontend_to_prod"):
        run_until_blocked(DEPLOY_AGENT, deploy_context(), FakeProd().impls()[:1], scripted.model)
    assert scripted.requests() == []


def test_canary_secret_never_reaches_prompt_or_thread(scripted: ScriptedModel, monkeypatch: pytest.MonkeyPatch) -> None:
    canary = "canary-7f3a9c1e-do-not-leak"
    monkeypatch.setenv("DEPLOY_TOKEN", canary)

    def leaky(call: DeployBackendToProd | DeployFrontendToProd, ctx: ToolContext) -> Any:
        token = os.environ["DEPLOY_TOKEN"]  # the tool legitimately uses the secret ...
        if call.sha == NEW:
            return {"command": f"deploy --token {token} --sha {call.sha}", "ok": True}  # ... and echoes it back
        raise RuntimeError(f"auth failed for token {token}")

    scripted.enqueue(
        call("deploy_backend_to_prod", sha=NEW),
        call("deploy_frontend_to_prod", sha="0000000"),
        call("done_for_now", message="done"),
    )
    impls = [bind(DeployBackendToProd, leaky), bind(DeployFrontendToProd, leaky)]
    thread = run_until_blocked(DEPLOY_AGENT, deploy_context(), impls, scripted.model)
    thread = run_until_blocked(DEPLOY_AGENT, decide(thread, "approved"), impls, scripted.model)
    thread = run_until_blocked(DEPLOY_AGENT, decide(thread, "approved"), impls, scripted.model)
    assert next_action(DEPLOY_AGENT, thread) == Halted("done")

    serialized = thread.to_json()
    assert "[redacted:DEPLOY_TOKEN]" in serialized  # the effect is visible, the value is not
    assert canary not in serialized
    assert canary not in render_thread(thread)
    assert all(canary not in str(r) for r in scripted.requests())
    errors = [e for e in thread.events if e.type == "error"]
    assert len(errors) == 1 and "auth failed for token [redacted:DEPLOY_TOKEN]" in errors[0].message


def test_the_callers_initial_thread_is_redacted_too(scripted: ScriptedModel, monkeypatch: pytest.MonkeyPatch) -> None:
    """Pre-fetched context (a commit subject, a log line) is the caller's data: the loop redacts it before anything."""
    from prefect_micro_agents.thread import ContextEvent

    canary = "canary-initial-0d9e2b4f"
    monkeypatch.setenv("DEPLOY_TOKEN", canary)
    initial = deploy_context().append(ContextEvent(name="commits_since_prod", payload=[
        {"subject": f"ci: rotate token to {canary}"}]))
    persisted: list[Thread] = []
    scripted.enqueue(call("done_for_now", message="nothing to do"))
    thread = run_until_blocked(DEPLOY_AGENT, initial, FakeProd().impls(), scripted.model,
                               on_event=lambda t, e: persisted.append(t))
    assert next_action(DEPLOY_AGENT, thread) == Halted("done")
    assert canary not in thread.to_json() and "ci: rotate token to [redacted:DEPLOY_TOKEN]" in thread.to_json()
    assert all(canary not in t.to_json() for t in persisted)  # what a caller persists along the way
    assert all(canary not in str(r) for r in scripted.requests())
