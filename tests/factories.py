"""Realistic threads used by several tests and by the benchmarks."""

from __future__ import annotations

from datetime import UTC, datetime

from agents.deploybot import DEPLOY_AGENT
from agents.thread import (
    ContextEvent,
    DecisionEvent,
    ProposalEvent,
    ResultEvent,
    Thread,
    TriggerEvent,
)
from agents.tools import args_digest

OLD, NEW = "1a2b3c4d5e6f", "9f8e7d6c5b4a"
AT = datetime(2026, 11, 26, 12, 0, tzinfo=UTC)


def proposal(intent: str, n: int, **args: str) -> ProposalEvent:
    return ProposalEvent(
        id=f"deploy-{n}", intent=intent, args=args, args_digest=args_digest(intent, args), model="scripted/x",
        reason=f"step {n}",
    )


def deploy_context(sha: str = NEW) -> Thread:
    return Thread(
        id="deploy-thread",
        events=(
            TriggerEvent(source="git.push", actor="ci", request=f"deploy SHA {sha} to production"),
            ContextEvent(
                name="prod_versions",
                payload={"backend": {"sha": OLD, "deployed_at": "2026-11-20T10:00:00Z"}, "frontend": {"sha": OLD}},
            ),
            ContextEvent(
                name="commits_since_prod",
                payload=[
                    {"sha": sha, "subject": "frontend: require backend api 2", "author": "ana"},
                    {"sha": "5e5e5e5e5e5e", "subject": "backend: api v2", "author": "bo"},
                ],
            ),
            ContextEvent(name="staging_e2e", payload={"passed": True, "checks": 4, "failed": []}),
        ),
    )


def decided(thread: Thread, p: ProposalEvent, decision: str, feedback: str = "") -> Thread:
    return thread.append(
        DecisionEvent(
            proposal_id=p.id, proposal_digest=p.digest, decision=decision, feedback=feedback, approver="alice", at=AT
        )
    )


def full_deploy_thread() -> Thread:
    """Frontend-first rejected with feedback, then backend and frontend approved and run."""
    t = deploy_context()
    p1 = proposal("deploy_frontend_to_prod", 1, sha=NEW)
    t = decided(t.append(p1), p1, "rejected", "deploy the backend first")
    p2 = proposal("deploy_backend_to_prod", 2, sha=NEW)
    t = decided(t.append(p2), p2, "approved")
    t = t.append(ResultEvent(proposal_id=p2.id, intent=p2.intent, output={"service": "backend", "sha": NEW, "ok": True}))
    p3 = proposal("deploy_frontend_to_prod", 3, sha=NEW)
    t = decided(t.append(p3), p3, "approved")
    return t.append(ResultEvent(proposal_id=p3.id, intent=p3.intent, output={"service": "frontend", "sha": NEW, "ok": True}))


AGENT = DEPLOY_AGENT
