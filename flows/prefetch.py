"""Pre-fetch (factor 13): what the agents see before their first step, as compact JSON payloads.

Plain functions over the targets' models (`EnvState`, `E2EReport`), git facts and threads; the flow runs the I/O in
cached tasks and calls these to shape the context events (JSON payloads), so a replay rebuilds the identical thread.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from prefect_micro_agents.thread import (
    ContextEvent,
    DecisionEvent,
    DoneEvent,
    EscalationEvent,
    ProposalEvent,
    ReceiptEvent,
    ResultEvent,
    Thread,
    TriggerEvent,
)
from prefect_micro_agents.reducer import void_decisions
from prefect_micro_agents.tools import Agent
from flows import outcomes
from flows.targets.base import SERVICES, E2EReport, EnvState
from flows.targets.gitinfo import RepoTags

__all__ = [
    "deploy_summary",
    "deploy_thread",
    "e2e_failure",
    "e2e_summary",
    "env_versions",
    "previous_releases",
    "recent_deploys",
    "released_shas",
    "rollback_thread",
]


def _second(at: datetime | None) -> str | None:
    """Timestamps to the second (microseconds are noise to a model), as the clock in them reads: 2026-11-26T21:03:06Z."""
    return None if at is None else at.isoformat()[:19] + "Z"


def env_versions(state: EnvState, tags: dict[str, list[str]] | None = None) -> dict[str, Any]:
    """What runs in one environment: per service its SHA (with tags), status and since when."""
    versions = {}
    for service in SERVICES:
        s = state.services[service]
        row = {"sha": s.sha, "status": s.status, "healthy": s.healthy, "since": _second(s.started_at)}
        if tags and s.sha in tags:
            row["tags"] = " ".join(tags[s.sha])
        versions[service] = row
    return versions


def released_shas(state: EnvState) -> list[str]:
    """The SHAs that run now (what the commits of a deploy are counted from)."""
    return sorted({s.sha for s in state.services.values() if s.sha})


def e2e_summary(report: E2EReport) -> dict[str, Any]:
    """Pass/fail and one row per check; details only for failed checks (they are long)."""
    checks = [{"name": c.name, "ok": c.ok, "ms": round(c.duration_ms)} for c in report.checks]
    summary: dict[str, Any] = {"env": report.env, "passed": report.passed, "checks": checks}
    failed = {c.name: c.detail[:300] for c in report.checks if not c.ok}
    if failed:
        summary["failures"] = failed
    return summary


def e2e_failure(report: E2EReport) -> dict[str, Any]:
    """For the rollback agent: what failed and why, and which checks still pass."""
    return {
        "env": report.env,
        "failed": [{"check": c.name, "detail": c.detail[:300]} for c in report.checks if not c.ok],
        "passing": [c.name for c in report.checks if c.ok],
    }


def recent_deploys(state: EnvState, limit: int = 8) -> list[dict[str, Any]]:
    """The last deploys and rollbacks of an environment, newest first."""
    rows = []
    for h in reversed(state.history[-limit:]):
        rows.append({"at": _second(h.finished_at or h.started_at), "service": h.service, "action": h.action,
                     "sha": h.sha, "status": h.status})
    return rows


def previous_releases(state: EnvState, tags: dict[str, list[str]] | None = None, limit: int = 3) -> dict[str, Any]:
    """Per service: the current SHA and the releases that ran successfully before it, most recent first."""
    result = {}
    for service in SERVICES:
        current = state.services[service].sha
        seen: list[dict[str, Any]] = []
        for h in reversed(state.history):
            if h.service != service or h.status != "succeeded" or h.sha == current:
                continue
            if any(r["sha"] == h.sha for r in seen):
                continue
            row = {"sha": h.sha, "deployed_at": _second(h.finished_at or h.started_at)}
            row["tags"] = " ".join((tags or {}).get(h.sha, [])) or "-"
            seen.append(row)
            if len(seen) == limit:
                break
        result[service] = {"current": current, "previous": seen or "none"}
    return result


def deploy_summary(thread: Thread, sha: str, policies: Agent | None = None) -> dict[str, Any]:
    """The deploy agent's thread in a few lines: what was asked, what ran (approved by whom: the receipt's counted
    approvers), how it ended. `policies`: the agent whose approval policies judged the decisions; a decision they did
    not count (or one made for another version of the call) is left out."""
    ran, rejected = [], []
    results = {e.proposal_id: e for e in thread.of_type(ResultEvent)}
    void = void_decisions(thread, policies)
    counted = [e for i, e in enumerate(thread.events) if isinstance(e, DecisionEvent) and i not in void]
    for p in thread.of_type(ProposalEvent):
        rejected += [{"call": p.intent, "by": d.approver, "feedback": d.feedback or "-"}
                     for d in counted if d.proposal_id == p.id and d.decision == "rejected"]
        receipt = next(iter(thread.for_proposal(ReceiptEvent, p.id)), None)
        approvals = [d.approver for d in counted if d.proposal_id == p.id and d.decision == "approved"]
        by = (", ".join(receipt.approvers) or receipt.approver) if receipt is not None else ", ".join(approvals)
        if p.id in results and by:
            out = results[p.id].output
            ok = out.get("ok") if isinstance(out, dict) else None
            ran.append({"call": p.intent, "sha": str(p.args.get("sha", "")), "approved_by": by, "ok": ok})
    end = thread.events[-1] if thread.events else None
    ended = (f"done: {end.message}" if isinstance(end, DoneEvent) else
             f"escalated: {end.reason}" if isinstance(end, EscalationEvent) else "unfinished")
    return {"sha": sha, "ran": ran or "nothing", "rejected": rejected or "none", "ended": ended}


def deploy_thread(run_id: str, sha: str, requested: str, *, source: str, actor: str, prod: EnvState,
                  tags: RepoTags, commits: Any, staging_e2e: E2EReport) -> Thread:
    """The deploy agent's first thread: the request, then everything it needs to decide, fetched beforehand."""
    request = f"deploy SHA {sha} to production" + (f" (requested as {requested})" if requested != sha else "")
    return Thread(id=f"deploy-{run_id}", events=(
        TriggerEvent(source=source, actor=actor, request=request),
        ContextEvent(name="target", payload={"sha": sha, "requested_as": requested}),
        ContextEvent(name="prod_versions", payload=env_versions(prod, tags.by_sha)),
        ContextEvent(name="commits_since_prod", payload=commits),
        ContextEvent(name="tags", payload=tags.recent),
        ContextEvent(name="staging_e2e", payload=e2e_summary(staging_e2e)),
        ContextEvent(name="recent_deploys", payload=recent_deploys(prod) or "none"),
        *people(sha, commits),
    ))


def people(sha: str, commits: Any) -> tuple[ContextEvent, ...]:
    """Who holds which role in this run, for approval policies that exclude them (AGENT_APPROVERS_FILE): the author
    of the commit being deployed, when the commits being deployed include it. Absent, a policy that excludes the
    commit author escalates rather than let anyone approve."""
    rows = commits.get("commits") if isinstance(commits, dict) else None
    author = next((str(c.get("author", "")) for c in rows or [] if isinstance(c, dict) and c.get("sha") == sha), "")
    return (ContextEvent(name="people", payload={"commit_author": author}),) if author else ()


def rollback_thread(run_id: str, sha: str, *, actor: str, deployed: Thread, prod_e2e: E2EReport,
                    prod: EnvState, tags: RepoTags, policies: Agent | None = None) -> Thread:
    """A fresh thread for the rollback agent: the deploy in brief, the failure, and the releases to go back to."""
    what = outcomes.describe(outcomes.changes(deployed)) or "nothing"
    return Thread(id=f"rollback-{run_id}", events=(
        TriggerEvent(source="deploy-pipeline", actor=actor,
                     request=f"production e2e failed after this run (for {sha}) deployed {what}; put production back "
                             "on a working release"),
        ContextEvent(name="deploy_summary", payload=deploy_summary(deployed, sha, policies)),
        ContextEvent(name="prod_e2e", payload=e2e_failure(prod_e2e)),
        ContextEvent(name="previous_releases", payload=previous_releases(prod, tags.by_sha)),
    ))
