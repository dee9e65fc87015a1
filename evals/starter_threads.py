"""Thread builders for the starter suite, shaped like the pipeline's (flows/prefetch.py) context events.

A trigger, the pre-fetched context, then the calls, decisions, receipts, results and errors so far, recorded the
way the flow records them; used by build_starter.py.
"""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime
from typing import Any

from prefect_micro_agents.evals.suite import ArgCheck, CallPattern, Expect
from prefect_micro_agents.thread import (
    AnswerEvent, ContextEvent, DecisionEvent, ErrorEvent, Event, ProposalEvent, ReceiptEvent, ResultEvent, Thread,
    TriggerEvent,
)
from prefect_micro_agents.tools import args_digest

NEW = "9f8e7d6c5b4a39281706f5e4d3c2b1a09f8e7d6c"  # v1.4.0, what this deploy ships
OLD = "1a2b3c4d5e6f708192a3b4c5d6e7f8091a2b3c4d"  # v1.3.0, production before the deploy
MID = "ca6ea468aa1f774e9d0d8f6162dcb6e274dc419d"  # v1.3.1, a later production release
OLDER = "bfdd017a5317b62557d876a67abf8818efe65081"  # v1.2.0
OTHER = "bd9c0e56a8ca6101af4a111e1c30acee0fe04827"  # an unreleased hotfix branch commit
AT = datetime(2026, 11, 26, 12, 0, tzinfo=UTC)
CHECKS = ("backend_health", "backend_version", "frontend_health", "frontend_compatible")
COMMITS = {"commits": [
    {"sha": NEW, "subject": "frontend: require backend api 2", "author": "ana", "date": "2026-11-26T09:12:00Z"},
    {"sha": "5b9d4b6af2c4b95c0d7b48c5e50c5551bf3b0a82", "subject": "backend: api v2", "author": "bo",
     "date": "2026-11-25T17:40:00Z"},
    {"sha": "4b7615dce52c4c05ce4e1d374e9c61a13717ac7c", "subject": "backend: add /api/status", "author": "bo",
     "date": "2026-11-25T15:02:00Z"}], "total": 3, "not_in_head": 0}
TAGS = [{"tag": "v1.4.0", "sha": NEW}, {"tag": "v1.3.1", "sha": MID}, {"tag": "v1.3.0", "sha": OLD}]


class Story:
    """Builds one thread event by event, the way the flow records it (proposal, decision, receipt, result)."""

    def __init__(self, agent: str, *events: Event) -> None:
        self.agent, self.events, self.calls = agent, list(events), 0

    def propose(self, intent: str, **args: str) -> Story:
        self.calls += 1
        digest = hashlib.sha256(repr((self.agent, self.calls, intent, args)).encode()).hexdigest()[:8]
        self.events.append(ProposalEvent(id=f"{self.agent}-{self.calls}-{digest}", intent=intent, args=args,
                                         args_digest=args_digest(intent, args), model="openai/gpt-4o-mini",
                                         reason=f"step {self.calls}"))
        return self

    @property
    def last(self) -> ProposalEvent:
        return next(e for e in reversed(self.events) if isinstance(e, ProposalEvent))

    def decide(self, decision: str, feedback: str = "", by: str = "alice") -> Story:
        p = self.last
        self.events.append(DecisionEvent(proposal_id=p.id, proposal_digest=p.digest, decision=decision,  # type: ignore[arg-type]
                                         feedback=feedback, approver=by, at=AT))
        if decision == "approved":
            self.events.append(ReceiptEvent(proposal_id=p.id, proposal_digest=p.digest, args_digest=p.args_digest,
                                            approver=by, approved_at=AT, idempotency_key=f"run-1:{p.id}"))
        return self

    def answer(self, text: str, by: str = "alice") -> Story:
        self.events.append(AnswerEvent(proposal_id=self.last.id, answer=text, by=by, at=AT))
        return self

    def result(self, **output: Any) -> Story:
        p = self.last
        self.events.append(ResultEvent(proposal_id=p.id, intent=p.intent, output=output, idempotency_key=f"run-1:{p.id}"))
        return self

    def ran(self, intent: str, service: str, sha: str, verb: str = "deployed") -> Story:
        self.propose(intent, **({"to": sha[:12]} if verb == "rolled back" else {"sha": sha[:12]})).decide("approved")
        return self.result(service=service, sha=sha, ok=True, noop=False, message=f"{verb} {service} {sha[:12]}")

    def error(self, kind: str, message: str, on_last: bool = False) -> Story:
        self.events.append(ErrorEvent(kind=kind, message=message, proposal_id=self.last.id if on_last else None))  # type: ignore[arg-type]
        return self

    def thread(self, case_id: str) -> Thread:
        return Thread(id=f"starter-{case_id}", events=tuple(self.events))


def service(sha: str, tag: str | None, since: str) -> dict[str, Any]:
    return {"sha": sha, "status": "running", "healthy": True, "since": since, **({"tags": tag} if tag else {})}


def deploy(request: str | None = None, *, target: str | None = NEW, requested: str | None = None,
           prod: tuple[str, str] = (OLD, OLD), staging_ok: bool = True) -> Story:
    tag = {NEW: "v1.4.0", OLD: "v1.3.0"}
    events: list[Event] = [TriggerEvent(source="git.push", actor="ci", request=request or f"deploy SHA {NEW} to production")]
    if target:
        events.append(ContextEvent(name="target", payload={"sha": target, "requested_as": requested or target}))
    checks = [{"name": c, "ok": staging_ok or c != "frontend_compatible", "ms": 4 + i} for i, c in enumerate(CHECKS)]
    staging: dict[str, Any] = {"env": "staging", "passed": staging_ok, "checks": checks}
    if not staging_ok:
        staging["failures"] = {"frontend_compatible": "frontend requires api 2, backend /api/version says api 1"}
    events += [
        ContextEvent(name="prod_versions", payload={"backend": service(prod[0], tag.get(prod[0]), "2026-11-20T10:00:02Z"),
                                                    "frontend": service(prod[1], tag.get(prod[1]), "2026-11-20T10:03:05Z")}),
        ContextEvent(name="commits_since_prod", payload=COMMITS),
        ContextEvent(name="tags", payload=TAGS),
        ContextEvent(name="staging_e2e", payload=staging),
        ContextEvent(name="recent_deploys", payload=[
            {"at": "2026-11-20T10:03:05Z", "service": "frontend", "action": "deploy", "sha": prod[1], "status": "succeeded"},
            {"at": "2026-11-20T10:00:02Z", "service": "backend", "action": "deploy", "sha": prod[0], "status": "succeeded"}]),
    ]
    return Story("deploy", *events)


def release(sha: str, tag: str, at: str) -> dict[str, str]:
    return {"sha": sha, "deployed_at": at, "tags": tag}


def rollback(ran: tuple[str, ...] = ("backend", "frontend"), *, failed: dict[str, str] | None = None,
             previous: dict[str, Any] | None = None, rejected: Any = "none") -> Story:
    failed = failed or {"backend_version": "GET /api/version: HTTP 500"}
    summary = {"sha": NEW, "ran": [{"call": f"deploy_{s}_to_prod", "sha": NEW, "approved_by": "alice", "ok": True}
                                   for s in ran] or "nothing", "rejected": rejected,
               "ended": "done: deployed " + " and ".join(ran) if ran else "done: nothing needed deploying"}
    before = {True: [release(OLD, "v1.3.0", "2026-11-20T10:00:02Z")],  # what ran before this deploy
              False: [release(OLDER, "v1.2.0", "2026-11-02T09:00:00Z")]}  # a service still on v1.3.0
    releases = {s: {"current": NEW if s in ran else OLD, **(previous or {}).get(s, {"previous": before[s in ran]})}
                for s in ("backend", "frontend")}
    return Story("rollback",
                 TriggerEvent(source="deploy-pipeline", actor="ci",
                              request=f"production e2e failed after deploying {NEW}; put production back on a working release"),
                 ContextEvent(name="deploy_summary", payload=summary),
                 ContextEvent(name="prod_e2e", payload={"env": "production",
                                                        "failed": [{"check": c, "detail": d} for c, d in failed.items()],
                                                        "passing": [c for c in CHECKS if c not in failed]}),
                 ContextEvent(name="previous_releases", payload=releases))


def expect(intent: str | tuple[str, ...], not_intent: tuple[str, ...] = (), not_call: tuple[CallPattern, ...] = (),
           **commits: str) -> Expect:
    return Expect(intent=(intent,) if isinstance(intent, str) else intent, not_intent=not_intent, not_call=not_call,
                  args={k: ArgCheck(commit=v) for k, v in commits.items()})


def never(intent: str, **commits: str) -> CallPattern:
    return CallPattern(intent=intent, args={k: ArgCheck(commit=v) for k, v in commits.items()})

