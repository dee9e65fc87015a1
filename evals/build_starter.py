"""Write evals/starter.json: the starter suite for the deploy and rollback agents (run once; the JSON is committed).

Each case ends where the agent is asked for its next step, labelled with what a good agent does there.
    .venv/bin/python evals/build_starter.py
"""

from __future__ import annotations

from pathlib import Path

from prefect_micro_agents.evals.suite import Case, Expect, Suite, save_suite
from starter_threads import MID, NEW, OLD, OTHER, Story, deploy, expect, never, release, rollback


DB, DF = "deploy_backend_to_prod", "deploy_frontend_to_prod"
RB, RF = "rollback_backend", "rollback_frontend"
ASK, DONE, ESCALATE = "request_more_information", "done_for_now", "escalate"
DEPLOYS = (DB, DF)
STOP = (ASK, DONE)  # the deploy agent has no escalate tool: it hands over by asking or by stopping


def call(intent: str, reason: str, **args: str) -> dict[str, str]:
    return {"intent": intent, **args, "reason": reason}


def cases() -> list[Case]:
    c: list[tuple[str, str, tuple[str, ...], Story, Expect, dict[str, str]]] = [
        # -- ordinary deploys
        ("deploy-both-services-backend-first", "both services change: the backend goes first", ("ordinary", "ordering"),
         deploy(), expect(DB, sha=NEW), call(DB, "the frontend needs backend api 2", sha=NEW[:12])),
        ("deploy-frontend-after-backend", "the backend is deployed; the frontend is next", ("ordinary",),
         deploy().ran(DB, "backend", NEW), expect(DF, sha=NEW), call(DF, "backend is on the new SHA", sha=NEW[:12])),
        ("deploy-done-after-both", "both services run the target: finish", ("ordinary",),
         deploy().ran(DB, "backend", NEW).ran(DF, "frontend", NEW), expect(DONE, not_intent=DEPLOYS),
         call(DONE, "all deployed", message="backend and frontend on 9f8e7d6c5b4a")),
        ("deploy-tag-request", "the request names a tag; the target context resolves it", ("ordinary",),
         deploy("deploy v1.4.0 to production", requested="v1.4.0"), expect(DB, sha=NEW),
         call(DB, "v1.4.0 is 9f8e7d6c5b4a; backend first", sha=NEW[:12])),
        ("deploy-short-sha-request", "the request names an abbreviated SHA", ("ordinary",),
         deploy("deploy 9f8e7d6 to production", requested="9f8e7d6"), expect(DB, sha=NEW),
         call(DB, "backend first", sha=NEW[:12])),
        # -- not redeploying what already runs
        ("deploy-skip-running-backend", "production's backend already runs the target", ("already-running",),
         deploy(prod=(NEW, OLD)), expect(DF, not_intent=(DB,), sha=NEW),
         call(DF, "only the frontend differs", sha=NEW[:12])),
        ("deploy-skip-running-frontend", "production's frontend already runs the target", ("already-running",),
         deploy(prod=(OLD, NEW)), expect(DB, not_intent=(DF,), sha=NEW),
         call(DB, "only the backend differs", sha=NEW[:12])),
        ("deploy-nothing-to-do", "both services already run the target", ("already-running",),
         deploy(prod=(NEW, NEW)), expect(DONE, not_intent=DEPLOYS),
         call(DONE, "nothing differs", message="production already runs 9f8e7d6c5b4a")),
        ("deploy-nothing-to-do-abbreviated", "production reports abbreviated SHAs of the target", ("already-running",),
         deploy(prod=(NEW[:12], NEW[:12])), expect(DONE, not_intent=DEPLOYS),
         call(DONE, "nothing differs", message="production already runs 9f8e7d6c5b4a")),
        # -- honouring feedback
        ("deploy-feedback-backend-first", "frontend first was rejected: deploy the backend first", ("feedback",),
         deploy().propose(DF, sha=NEW[:12]).decide("rejected", "deploy the backend first"),
         expect(DB, not_call=(never(DF, sha=NEW),), sha=NEW), call(DB, "as asked, backend first", sha=NEW[:12])),
        ("deploy-feedback-then-frontend", "after the backend that the feedback asked for, the frontend",
         ("feedback", "ordinary"),
         deploy().propose(DF, sha=NEW[:12]).decide("rejected", "deploy the backend first").ran(DB, "backend", NEW),
         expect(DF, sha=NEW), call(DF, "backend is done; now the frontend", sha=NEW[:12])),
        ("deploy-feedback-frontend-first", "the human wants the frontend first this time", ("feedback",),
         deploy().propose(DB, sha=NEW[:12]).decide(
             "rejected", "frontend first this time: the new UI is behind a flag, the backend migration waits for it"),
         expect(DF, not_call=(never(DB, sha=NEW),), sha=NEW), call(DF, "frontend first, as asked", sha=NEW[:12])),
        ("deploy-feedback-backend-only", "the human stops the frontend deploy for today", ("feedback",),
         deploy().ran(DB, "backend", NEW).propose(DF, sha=NEW[:12]).decide(
             "rejected", "not the frontend today, design review is tomorrow; backend only"),
         expect(DONE, not_intent=(DF,)), call(DONE, "as told", message="backend on 9f8e7d6c5b4a; frontend held back")),
        ("deploy-feedback-wrong-sha", "a proposal with the wrong commit was rejected", ("feedback",),
         deploy().propose(DB, sha=OTHER[:12]).decide("rejected", "wrong commit: deploy 9f8e7d6c5b4a, it passed staging"),
         expect(DB, not_call=(never(DB, sha=OTHER),), sha=NEW), call(DB, "the requested commit", sha=NEW[:12])),
        # -- questions when the SHA is ambiguous
        ("deploy-ambiguous-no-sha", "the request names no commit and no target was resolved", ("ambiguous",),
         deploy("ship the latest to prod", target=None), expect(ASK, not_intent=DEPLOYS),
         call(ASK, "no commit named", question="Which commit should I deploy: 9f8e7d6c5b4a (v1.4.0)?")),
        ("deploy-ambiguous-two-shas", "the request names two commits", ("ambiguous",),
         deploy(f"deploy {NEW[:12]} or {OTHER[:12]} to production", target=None), expect(ASK, not_intent=DEPLOYS),
         call(ASK, "two commits named", question="Which one: 9f8e7d6c5b4a or bd9c0e56a8ca?")),
        ("deploy-ambiguous-release-candidate", "'the release candidate' matches no single tag", ("ambiguous",),
         deploy("deploy the release candidate to production", target=None), expect(ASK, not_intent=DEPLOYS),
         call(ASK, "no rc tag", question="Which commit is the release candidate?")),
        ("deploy-ambiguous-answered", "the human answered which commit", ("ambiguous", "ordinary"),
         deploy("ship the latest to prod", target=None).propose(ASK, question="Which commit should I deploy?")
         .answer(f"{NEW[:12]}, the one that passed staging this morning"),
         expect(DB, sha=NEW), call(DB, "the answered commit, backend first", sha=NEW[:12])),
        ("deploy-asked-twice-then-act", "two questions answered already: stop asking, deploy the target",
         ("ambiguous", "loop"),
         deploy().propose(ASK, question="Should I deploy 9f8e7d6c5b4a?").answer("yes, that is what the push asked for")
         .propose(ASK, question="Which service first?").answer("you decide"),
         expect(DB, not_intent=(ASK,), sha=NEW), call(DB, "the frontend needs backend api 2", sha=NEW[:12])),
        ("deploy-staging-failed", "staging e2e failed: do not promote", ("errors",),
         deploy(staging_ok=False), expect(STOP, not_intent=DEPLOYS),
         call(ASK, "staging failed", question="Staging e2e failed (frontend_compatible). Deploy anyway?")),
        # -- escalating after errors
        ("deploy-tool-error-stops", "the backend deploy failed: do not deploy the frontend on top", ("errors",),
         deploy().propose(DB, sha=NEW[:12]).decide("approved")
         .error("tool_error", "backend deploy failed: GET /health returned 502 for 30s", on_last=True),
         expect(STOP, not_intent=(DF,)),
         call(ASK, "the backend deploy failed", question="The backend deploy failed with 502s. Retry or stop?")),
        ("deploy-repeated-tool-errors", "two failed backend deploys: hand over", ("errors",),
         deploy().propose(DB, sha=NEW[:12]).decide("approved")
         .error("tool_error", "backend deploy failed: GET /health returned 502 for 30s", on_last=True)
         .propose(DB, sha=NEW[:12]).decide("approved")
         .error("tool_error", "backend deploy failed: GET /health returned 502 for 30s", on_last=True),
         expect(STOP, not_intent=DEPLOYS),
         call(ASK, "failed twice", question="The backend deploy failed twice with 502s. Who should look at it?")),
        ("deploy-malformed-output-retry", "the previous answer was not JSON: answer properly", ("errors",),
         deploy().error("malformed_output", "not valid JSON (Expecting value at char 0): Sure! I will deploy"),
         expect(DB, sha=NEW), call(DB, "backend first", sha=NEW[:12])),
        ("deploy-unknown-intent-retry", "the model named a tool that is not offered", ("errors", "already-running"),
         deploy(prod=(NEW, OLD)).error(
             "unknown_intent", f"no tool '{DB}' now; choose one of: {DF}, {ASK}, {DONE}"),
         expect(DF, not_intent=(DB,), sha=NEW), call(DF, "only the frontend is offered", sha=NEW[:12])),
        ("deploy-invalid-args-retry", "the SHA did not validate: correct it", ("errors",),
         deploy().error("invalid_arguments", f"{DB}: sha: String should match pattern '^[0-9a-f]{{7,40}}$'"),
         expect(DB, sha=NEW), call(DB, "corrected sha", sha=NEW[:12])),
        # -- rollback target choice
        ("rollback-backend-deployed", "only the backend came from this deploy", ("rollback",),
         rollback(("backend",)),
         expect(RB, not_intent=(RF,), to=OLD), call(RB, "backend api 500s since the deploy", to=OLD[:12])),
        ("rollback-both-frontend-first", "both were deployed: the frontend goes back first", ("rollback", "ordering"),
         rollback(failed={"frontend_compatible": "frontend requires api 2, backend says api 1"}),
         expect(RF, to=OLD), call(RF, "frontend first keeps them compatible", to=OLD[:12])),
        ("rollback-backend-after-frontend", "the frontend is back: now the backend", ("rollback", "ordering"),
         rollback().ran(RF, "frontend", OLD, "rolled back"), expect(RB, to=OLD),
         call(RB, "now the backend", to=OLD[:12])),
        ("rollback-done-after-both", "both services are back: finish", ("rollback",),
         rollback().ran(RF, "frontend", OLD, "rolled back").ran(RB, "backend", OLD, "rolled back"),
         expect(DONE, not_intent=(RB, RF)), call(DONE, "done", message="both services back on v1.3.0")),
        ("rollback-most-recent-previous", "two previous releases: the most recent one", ("rollback",),
         rollback(("backend",), previous={"backend": {"previous": [
             release(MID, "v1.3.1", "2026-11-23T16:20:00Z"), release(OLD, "v1.3.0", "2026-11-20T10:00:02Z")]}}),
         expect(RB, to=MID), call(RB, "most recent release that worked", to=MID[:12])),
        ("rollback-feedback-older-release", "told to skip the most recent release", ("rollback", "feedback"),
         rollback(("backend",), previous={"backend": {"previous": [
             release(MID, "v1.3.1", "2026-11-23T16:20:00Z"), release(OLD, "v1.3.0", "2026-11-20T10:00:02Z")]}})
         .propose(RB, to=MID[:12]).decide("rejected", "v1.3.1 has the same migration bug; go back to v1.3.0"),
         expect(RB, not_call=(never(RB, to=MID),), to=OLD), call(RB, "v1.3.0 as asked", to=OLD[:12])),
        ("rollback-no-previous-release", "the broken service has no previous release: escalate", ("rollback", "errors"),
         rollback(("backend",), previous={"backend": {"previous": "none"}}), expect(ESCALATE, not_intent=(RF,)),
         call(ESCALATE, "nothing to go back to", message="backend has no previous release; fix forward or restore")),
        ("rollback-not-caused-by-deploy", "the failing check is unrelated to what was deployed", ("rollback", "errors"),
         rollback(("frontend",), failed={"backend_orders": "GET /api/orders: HTTP 503 database connection pool exhausted"}),
         expect(ESCALATE, not_intent=(RB,)),
         call(ESCALATE, "database, not the deploy", message="backend database pool exhausted; not caused by 9f8e7d6c5b4a")),
        ("rollback-tool-error-escalates", "the rollback itself failed: escalate", ("rollback", "errors"),
         rollback(("backend",)).propose(RB, to=OLD[:12]).decide("approved")
         .error("tool_error", "rollback of backend to 1a2b3c4d5e6f failed: release directory missing", on_last=True),
         expect(ESCALATE), call(ESCALATE, "rollback failed", message="backend rollback failed: release dir missing")),
        ("rollback-did-not-help", "the rollback ran but the service is unhealthy: escalate", ("rollback", "errors"),
         rollback(("backend",)).propose(RB, to=OLD[:12]).decide("approved")
         .result(service="backend", sha=OLD, ok=False, noop=False, message="health check failed after switching"),
         expect(ESCALATE, not_intent=(RB,)),
         call(ESCALATE, "rollback did not help", message="backend unhealthy on 1a2b3c4d5e6f too")),
        ("rollback-frontend-deployed", "only the frontend came from this deploy", ("rollback",),
         rollback(("frontend",), failed={"frontend_compatible": "frontend requires api 3, backend serves api 2"}),
         expect(RF, not_intent=(RB,), to=OLD), call(RF, "the frontend broke compatibility", to=OLD[:12])),
        ("rollback-feedback-backend-only", "told to leave the frontend and roll back the backend", ("rollback", "feedback"),
         rollback().propose(RF, to=OLD[:12]).decide(
             "rejected", "the frontend is fine, the 500s come from the backend: roll back only the backend"),
         expect(RB, not_call=(never(RF, to=OLD),), to=OLD), call(RB, "as told", to=OLD[:12])),
        ("rollback-malformed-output-retry", "the previous answer was not JSON: answer properly", ("rollback", "errors"),
         rollback(("backend",)).error("malformed_output", "expected {\"call\": {\"intent\": ...}}, got: rollback now"),
         expect(RB, to=OLD), call(RB, "backend came from this deploy", to=OLD[:12])),
    ]
    return [Case(id=i, agent=story.agent, description=d, tags=t, thread=story.thread(i), expect=e, golden=g)
            for i, d, t, story, e, g in c]


if __name__ == "__main__":
    out = Path(__file__).with_name("starter.json")
    save_suite(Suite(description="Starter suite for the deploy and rollback agents (evals/build_starter.py).",
                     agents={"deploy": "agents.deploybot:DEPLOY_AGENT", "rollback": "agents.rollback:ROLLBACK_AGENT"},
                     cases=tuple(cases())), out)
    print(f"wrote {len(cases())} cases to {out}")
