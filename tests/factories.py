"""The deploy bot's realistic threads, for the app's tests and the benchmarks (the kit's tests have their own agent:
tests/kit/toy_agent.py)."""

from __future__ import annotations

from datetime import UTC, datetime

from agents.deploybot import DEPLOY_AGENT
from prefect_micro_agents import (
    ContextEvent,
    DecisionEvent,
    ProposalEvent,
    ResultEvent,
    Thread,
    TriggerEvent,
    args_digest,
)

OLD = "1a2b3c4d5e6f708192a3b4c5d6e7f8091a2b3c4d"
NEW = "9f8e7d6c5b4a39281706f5e4d3c2b1a09f8e7d6c"
AT = datetime(2026, 11, 26, 12, 0, tzinfo=UTC)
AGENT = DEPLOY_AGENT


def proposal(intent: str, n: int, **args: str) -> ProposalEvent:
    return ProposalEvent(
        id=f"deploy-{n}", intent=intent, args=args, args_digest=args_digest(intent, args), model="scripted/x",
        reason=f"step {n}",
    )


def deploy_context(sha: str = NEW) -> Thread:
    """What the pipeline pre-fetches before the deploy agent's first step."""
    commits = [
        {"sha": sha, "subject": "frontend: require backend api 2", "author": "ana", "date": "2026-11-26T09:12:00Z"},
        {"sha": "5e5e5e5e5e5e5e5e5e5e5e5e5e5e5e5e5e5e5e5e", "subject": "backend: api v2", "author": "bo",
         "date": "2026-11-25T17:40:00Z"},
        {"sha": "4d4d4d4d4d4d4d4d4d4d4d4d4d4d4d4d4d4d4d4d", "subject": "backend: add /api/status", "author": "bo",
         "date": "2026-11-25T15:02:00Z"},
    ]
    return Thread(
        id="deploy-thread",
        events=(
            TriggerEvent(source="git.push", actor="ci", request=f"deploy SHA {sha} to production"),
            ContextEvent(
                name="prod_versions",
                payload={
                    "backend": {"sha": OLD, "deployed_at": "2026-11-20T10:00:00Z", "api": 1},
                    "frontend": {"sha": OLD, "deployed_at": "2026-11-20T10:03:00Z", "requires_api": 1},
                },
            ),
            ContextEvent(name="commits_since_prod", payload=commits),
            ContextEvent(
                name="staging_e2e",
                payload={
                    "passed": True,
                    "checks": [
                        {"name": "backend_health", "ok": True, "ms": 4},
                        {"name": "backend_version", "ok": True, "ms": 3},
                        {"name": "frontend_health", "ok": True, "ms": 5},
                        {"name": "frontend_compatible", "ok": True, "ms": 9},
                    ],
                },
            ),
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
    t = t.append(ResultEvent(proposal_id=p2.id, intent=p2.intent,
                             output={"service": "backend", "sha": NEW, "noop": False, "healthy_after_ms": 412}))
    p3 = proposal("deploy_frontend_to_prod", 3, sha=NEW)
    t = decided(t.append(p3), p3, "approved")
    return t.append(ResultEvent(proposal_id=p3.id, intent=p3.intent,
                                output={"service": "frontend", "sha": NEW, "noop": False, "healthy_after_ms": 388}))
