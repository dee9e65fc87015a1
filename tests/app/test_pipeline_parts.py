"""The rollback agent and the pipeline's pure parts (context shaping, report rows, target settings), no server."""

from __future__ import annotations

import tempfile
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from prefect_micro_agents import (
    ContextEvent, DecisionEvent, ErrorEvent, ProposalEvent, ReceiptEvent, Thread, Tool, ToolContext, TriggerEvent, bind,
    build_messages, run_until_blocked,
)
from prefect_micro_agents.testing import ScriptedModel
from agents.rollback import ROLLBACK_AGENT, RollbackBackend, RollbackFrontend
from factories import NEW, OLD, decided, full_deploy_thread, proposal
from flows import prefetch, report
from flows.targets import TargetConfigError
from flows.targets.base import E2ECheck, E2EReport, EnvState, HistoryEntry, ServiceState
from flows.targets.settings import TargetSettings
from test_prompts import check_snapshot

AT = datetime(2026, 11, 26, 12, tzinfo=UTC)


def history(*rows: tuple[str, str, str, str]) -> list[HistoryEntry]:
    return [HistoryEntry.model_validate({
        "env": "production", "service": service, "action": action, "sha": sha, "status": status,
        "started_at": f"2026-11-2{n}T10:00:00.123456+00:00", "finished_at": f"2026-11-2{n}T10:00:02.5+00:00",
        "idempotency_key": f"key-{n}"}) for n, (service, action, sha, status) in enumerate(rows)]


def prod_state() -> EnvState:
    """Production after the deploy of NEW (backend only) over OLD."""
    rows = history(("backend", "deploy", OLD, "succeeded"), ("frontend", "deploy", OLD, "succeeded"),
                   ("backend", "deploy", NEW, "succeeded"))
    services = {"backend": ServiceState(service="backend", sha=NEW), "frontend": ServiceState(service="frontend", sha=OLD)}
    return EnvState(target="local", env="production", services=services, history=rows)


E2E_FAILED = E2EReport(
    target="local", env="production", passed=False, started_at=datetime(2026, 11, 26, 12, tzinfo=UTC), duration_ms=12.0,
    checks=[E2ECheck(name="backend_health", ok=True, detail="GET /health: HTTP 200", duration_ms=2.0),
            E2ECheck(name="backend_version", ok=False, detail="GET /api/version: HTTP 500", duration_ms=3.0)])


def rollback_thread() -> Thread:
    return Thread(id="rollback-thread", events=(
        TriggerEvent(source="deploy-pipeline", actor="ci",
                     request=f"production e2e failed after deploying {NEW}; put production back on a working release"),
        ContextEvent(name="deploy_summary", payload=prefetch.deploy_summary(full_deploy_thread(), NEW)),
        ContextEvent(name="prod_e2e", payload=prefetch.e2e_failure(E2E_FAILED)),
        ContextEvent(name="previous_releases", payload=prefetch.previous_releases(prod_state(), {OLD: ["v1.0.0"]})),
    ))


def call(intent: str, **args: str) -> dict[str, Any]:
    return {"call": {"intent": intent, **args}}


def approve(thread: Thread, approver: str = "carol") -> Thread:
    p = thread.events[-1]
    assert isinstance(p, ProposalEvent)  # the loop stopped for a human on this proposal
    return thread.append(DecisionEvent(proposal_id=p.id, proposal_digest=p.digest, decision="approved",
                                       approver=approver, at=AT))


def assert_finished(thread: Thread, impls: list[Any]) -> None:
    """The agent said it is done: the loop asks the model nothing more and changes nothing."""
    assert thread.events[-1].type == "done"
    again = ScriptedModel(Path(tempfile.mkdtemp()) / "empty")  # no replies: a model call would fail the test
    assert run_until_blocked(ROLLBACK_AGENT, thread, impls, again.model) == thread


def test_rollback_prompt_snapshot() -> None:
    thread = rollback_thread()
    system, user = build_messages(ROLLBACK_AGENT, thread, ROLLBACK_AGENT.offered(thread))
    check_snapshot({"rollback_system.txt": system["content"], "rollback_thread.txt": user["content"]})


def test_context_shaping() -> None:
    releases = prefetch.previous_releases(prod_state(), {OLD: ["v1.0.0"]})
    assert releases["backend"] == {"current": NEW, "previous": [
        {"sha": OLD, "deployed_at": "2026-11-20T10:00:02Z", "tags": "v1.0.0"}]}
    assert releases["frontend"] == {"current": OLD, "previous": "none"}
    summary = prefetch.deploy_summary(full_deploy_thread(), NEW)
    assert summary["ran"] == [{"call": "deploy_backend_to_prod", "sha": NEW, "approved_by": "alice", "ok": None},
                              {"call": "deploy_frontend_to_prod", "sha": NEW, "approved_by": "alice", "ok": None}]
    assert summary["rejected"] == [{"call": "deploy_frontend_to_prod", "by": "alice",
                                    "feedback": "deploy the backend first"}]
    assert prefetch.e2e_failure(E2E_FAILED)["failed"] == [{"check": "backend_version",
                                                           "detail": "GET /api/version: HTTP 500"}]
    assert [r["sha"] for r in prefetch.recent_deploys(prod_state())] == [NEW, OLD, OLD]


def test_a_service_without_a_previous_release_is_not_offered(scripted: ScriptedModel) -> None:
    thread = rollback_thread()
    assert [t.intent_name() for t in ROLLBACK_AGENT.offered(thread)] == ["rollback_backend", "escalate", "done_for_now"]
    scripted.enqueue(call("rollback_frontend", to=OLD[:12]), call("escalate", message="frontend cannot go back"))
    thread = run_until_blocked(ROLLBACK_AGENT, thread, [bind(RollbackBackend, _never), bind(RollbackFrontend, _never)],
                               scripted.model)
    assert [e.type for e in thread.events[-3:]] == ["error", "proposal", "done"]
    assert thread.events[-3].kind == "unknown_intent"
    assert_finished(thread, [bind(RollbackBackend, _never), bind(RollbackFrontend, _never)])


def _never(call: Tool, ctx: ToolContext) -> Any:
    raise AssertionError("must not run")


def test_approved_rollback_runs_once_then_the_agent_finishes(scripted: ScriptedModel) -> None:
    ran: list[tuple[str, str]] = []

    def rollback(call: RollbackBackend, ctx: ToolContext) -> dict[str, Any]:
        ran.append((call.to, ctx.idempotency_key))
        return {"service": "backend", "sha": OLD, "ok": True, "noop": False, "message": "rolled back"}

    scripted.enqueue(call("rollback_backend", to=OLD[:12]), call("done_for_now", message="backend back on v1.0.0"))
    impls = [bind(RollbackBackend, rollback), bind(RollbackFrontend, _never)]
    thread = run_until_blocked(ROLLBACK_AGENT, rollback_thread(), impls, scripted.model)
    assert thread.events[-1].type == "proposal" and ran == []
    thread = run_until_blocked(ROLLBACK_AGENT, approve(thread), impls, scripted.model)
    assert_finished(thread, impls)
    assert [to for to, _ in ran] == [OLD[:12]]
    assert [r.approver for r in thread.of_type(ReceiptEvent)] == ["carol"]
    # Rolled back once: the tool is no longer offered for that service.
    assert "rollback_backend" not in [t.intent_name() for t in ROLLBACK_AGENT.offered(thread)]

    executed = [history(("backend", "rollback", OLD, "succeeded"))[0].model_copy(update={"idempotency_key": ran[0][1]})]
    rows = report.agent_rows("rollback", thread, executed)
    assert [(r["step"], r["by"], r["outcome"], r["seconds"]) for r in rows] == [
        ("rollback: rollback_backend", "approved by carol", "ok: rolled back", 2.38),
        ("rollback: done_for_now", "agent", "ended the agent", None)]


def test_target_settings_fail_with_what_to_fix(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    cases = [
        ({"kind": "command"}, "targets.commands is empty"),
        ({"commands": {"environments": {}}}, "set kind: command"),
        ({"kind": "command", "commands": str(tmp_path / "none.yaml")}, "does not exist"),
        ({"kind": "command", "commands": {"environments": {"staging": {"services": {
            "backend": {"deploy": "d {sha}", "health": "h"}, "frontend": {"deploy": "d {sha}", "health": "h"}}}}}},
         "add environments.production"),
        ({"repo": str(tmp_path)}, "is not a git repository"),
    ]
    for raw, message in cases:
        with pytest.raises(TargetConfigError, match=message):
            TargetSettings.model_validate(raw).build()


def test_default_targets_need_no_configuration(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DEPLOY_ROOT", str(tmp_path / "deploy"))
    targets = TargetSettings().build()
    assert targets.resolve("v1.2.0") and (tmp_path / "deploy" / "sample-app" / ".git").is_dir()
    assert targets.state("production").history == []


def test_the_deploy_tool_refuses_another_commit_before_touching_production(tmp_path: Path) -> None:
    from agents.deploybot import DeployBackendToProd
    from flows.production import OutOfScopeError, deploy_tools
    from flows.sample_app import create_sample_app

    sample = create_sample_app(tmp_path / "repo")
    settings = TargetSettings(root=str(tmp_path / "envs"), repo=sample.repo)
    tool = next(b for b in deploy_tools(settings, sample.sha("v1.2.0")) if b.tool is DeployBackendToProd)
    other = DeployBackendToProd(intent="deploy_backend_to_prod", sha=sample.sha("v1.1.0")[:12])
    with pytest.raises(OutOfScopeError, match="this run deploys .* only"):
        tool.run(other, ToolContext("key", "thread", "p1"))
    assert settings.build().state("production").history == []


MID = "ca6ea468aa1f774e9d0d8f6162dcb6e274dc419d"


def test_the_rollback_agent_refuses_the_rejected_release_but_not_another_one(scripted: ScriptedModel) -> None:
    p = proposal("rollback_backend", 1, to=MID[:12])
    trigger = TriggerEvent(source="pipeline", actor="deploy-pipeline", request="production e2e failed: roll back")
    thread = decided(Thread(id="rb", events=(trigger, p)), p, "rejected", "v1.3.1 has the bug too; go to v1.3.0")
    assert "rollback_backend" in [t.intent_name() for t in ROLLBACK_AGENT.offered(thread)]
    scripted.enqueue(call("rollback_backend", to=MID[:12]), call("rollback_backend", to=OLD[:12]))
    thread = run_until_blocked(ROLLBACK_AGENT, thread, [bind(RollbackBackend, _never), bind(RollbackFrontend, _never)],
                               scripted.model)
    same, other = thread.events[-2:]
    assert isinstance(same, ErrorEvent) and same.kind == "invalid_arguments"
    assert "a human rejected this same call just now" in same.message
    assert isinstance(other, ProposalEvent) and other.args == {"to": OLD[:12]}  # another release: proposed
