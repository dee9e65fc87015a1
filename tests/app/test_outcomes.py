"""How a pipeline run ends (flows.outcomes), path by path, from what the agents actually executed. No server: the
served pipeline runs the same functions (tests/app/test_pipeline.py covers the reject-everything path end to end)."""

from __future__ import annotations

from typing import Any

import pytest

from prefect_micro_agents import DoneEvent, ErrorEvent, EscalationEvent, ProposalEvent, ResultEvent, Thread
from factories import NEW, OLD, decided, deploy_context, proposal
from flows import outcomes, prefetch
from flows.targets.base import DeployResult, E2ECheck, E2EReport, EnvState, ServiceState
from flows.targets.gitinfo import RepoTags

OTHER = "7c7c7c7c7c7c7c7c7c7c7c7c7c7c7c7c7c7c7c7c"


def state(backend: str | None, frontend: str | None) -> EnvState:
    return EnvState(target="local", env="production", history=[], services={
        "backend": ServiceState(service="backend", sha=backend), "frontend": ServiceState(service="frontend", sha=frontend)})


def e2e(*failing: str) -> E2EReport:
    names = ["backend_health", "backend_version", "frontend_health", "frontend_backend_compatible"]
    return E2EReport(target="local", env="production", passed=not failing,
                     checks=[E2ECheck(name=n, ok=n not in failing, detail="", duration_ms=1.0) for n in names])


def staged(ok: bool, message: str) -> DeployResult:
    return DeployResult(target="local", env="staging", service="backend", action="deploy", sha=NEW, ok=ok,
                        message=message)


class Story:
    """An agent thread built step by step, as the reducer would record it."""

    def __init__(self, thread: Thread | None = None) -> None:
        self.thread = thread or deploy_context()
        self.n = 0

    def propose(self, intent: str, **args: str) -> ProposalEvent:
        self.n += 1
        p = proposal(intent, self.n, **args)
        self.thread = self.thread.append(p)
        return p

    def reject(self, intent: str, feedback: str = "", **args: str) -> Story:
        p = self.propose(intent, **args)
        self.thread = decided(self.thread, p, "rejected", feedback)
        return self

    def run(self, intent: str, service: str, sha: str, *, ok: bool = True, noop: bool = False) -> Story:
        p = self.propose(intent, sha=sha[:12]) if intent.startswith("deploy") else self.propose(intent, to=sha[:12])
        self.thread = decided(self.thread, p, "approved").append(ResultEvent(
            proposal_id=p.id, intent=intent, output={"service": service, "sha": sha, "ok": ok, "noop": noop,
                                                     "message": "..."}))
        return self

    def error(self, intent: str, message: str, **args: str) -> Story:
        p = self.propose(intent, **args)
        self.thread = decided(self.thread, p, "approved").append(
            ErrorEvent(kind="tool_error", message=message, proposal_id=p.id))
        return self

    def done(self, message: str = "finished", intent: str = "done_for_now") -> Thread:
        p = self.propose(intent, message=message)
        return self.thread.append(DoneEvent(proposal_id=p.id, message=message))

    def escalated(self, reason: str = "step limit reached (10 of 10 model steps)") -> Thread:
        return self.thread.append(EscalationEvent(reason=reason))


def rollback_story() -> Story:
    return Story(Thread(id="rollback", events=deploy_context().events[:1]))


def test_every_proposal_rejected_means_nothing_deployed_and_no_rollback() -> None:
    deploy = (Story().reject("deploy_frontend_to_prod", "not today", sha=NEW[:12])
              .reject("deploy_backend_to_prod", "not today either", sha=NEW[:12]).done("nothing deployed"))
    assert outcomes.changes(deploy) == []
    assert not outcomes.needs_prod_e2e(deploy) and not outcomes.needs_rollback(None)
    ended = outcomes.decide(NEW, before=state(None, None), deploy=deploy, after=state(None, None))
    assert ended.name == "not_deployed" and ended.ok, ended
    assert ended.message.startswith("nothing was deployed: deploy_frontend_to_prod rejected by alice (not today); "
                                    "deploy_backend_to_prod rejected by alice (not today either); "
                                    "production is unchanged (nothing runs there yet)")
    assert "e2e" not in ended.message and "roll" not in ended.message


def test_production_already_on_the_sha() -> None:
    deploy = Story().done("both already run it")
    ended = outcomes.decide(NEW, before=state(NEW, NEW), deploy=deploy, after=state(NEW, NEW))
    assert (ended.name, ended.ok) == ("already_deployed", True)
    assert ended.message == (f"production already runs {NEW[:12]} (backend on {NEW[:12]}, frontend on {NEW[:12]}); "
                             "nothing needed deploying")
    # A no-op result (the target found the release running) is no change either.
    noop = Story().run("deploy_backend_to_prod", "backend", NEW, noop=True).done()
    assert outcomes.changes(noop) == [] and not outcomes.needs_prod_e2e(noop)


def test_escalation_before_and_after_a_partial_deploy() -> None:
    before = (Story().reject("deploy_backend_to_prod", "wait", sha=NEW[:12]).escalated())
    ended = outcomes.decide(NEW, before=state(OLD, OLD), deploy=before, after=state(OLD, OLD))
    assert (ended.name, ended.ok) == ("deploy_escalated", False)
    assert ended.message == ("the deploy agent escalated before deploying anything: step limit reached (10 of 10 "
                             "model steps); nothing was deployed: deploy_backend_to_prod rejected by alice (wait); "
                             f"production is unchanged (backend on {OLD[:12]}, frontend on {OLD[:12]})")

    partial = Story().run("deploy_backend_to_prod", "backend", NEW).escalated("3 consecutive errors; last: ...")
    assert outcomes.needs_prod_e2e(partial)
    ended = outcomes.decide(NEW, before=state(OLD, OLD), deploy=partial, after=state(NEW, OLD), prod_e2e=e2e())
    assert (ended.name, ended.ok) == ("deploy_escalated", False)
    assert ended.message == (f"the deploy agent escalated after deploying backend {NEW[:12]}: 3 consecutive errors; "
                             f"last: ...; production e2e passes (backend on {NEW[:12]}, frontend on {OLD[:12]})")


def test_a_call_that_could_not_run_changed_nothing_and_fails_the_run() -> None:
    deploy = Story().error("deploy_backend_to_prod", "OutOfScopeError: this run deploys ... only",
                           sha=OTHER[:12]).done("gave up")
    assert not outcomes.needs_prod_e2e(deploy)
    ended = outcomes.decide(NEW, before=state(OLD, OLD), deploy=deploy, after=state(OLD, OLD))
    assert (ended.name, ended.ok) == ("not_deployed", False)
    assert "deploy_backend_to_prod could not run: OutOfScopeError" in ended.message


def test_deployed_names_the_services_and_shas_that_changed() -> None:
    both = Story().run("deploy_backend_to_prod", "backend", NEW).run("deploy_frontend_to_prod", "frontend", NEW)
    ended = outcomes.decide(NEW, before=state(OLD, OLD), deploy=both.done("both on v1.2.0"), after=state(NEW, NEW),
                            prod_e2e=e2e())
    assert (ended.name, ended.ok) == ("deployed", True)
    assert ended.message == (f"deployed backend {NEW[:12]} and frontend {NEW[:12]}; production e2e passes (backend "
                             f"on {NEW[:12]}, frontend on {NEW[:12]}): both on v1.2.0")
    # Only the backend changed (the frontend already ran the SHA): the message says so, not "deploying <sha>".
    one = Story().run("deploy_backend_to_prod", "backend", NEW).done("backend done")
    ended = outcomes.decide(NEW, before=state(OLD, NEW), deploy=one, after=state(NEW, NEW), prod_e2e=e2e())
    assert ended.message.startswith(f"deployed backend {NEW[:12]}; frontend already ran it; production e2e passes")


def test_partial_deploy_by_decision() -> None:
    deploy = (Story().run("deploy_backend_to_prod", "backend", NEW)
              .reject("deploy_frontend_to_prod", "tomorrow", sha=NEW[:12]).done("backend only"))
    ended = outcomes.decide(NEW, before=state(OLD, OLD), deploy=deploy, after=state(NEW, OLD), prod_e2e=e2e())
    assert (ended.name, ended.ok) == ("partially_deployed", True)
    assert ended.message == (f"deployed backend {NEW[:12]}; frontend not deployed (deploy_frontend_to_prod rejected "
                             f"by alice (tomorrow)); production e2e passes (backend on {NEW[:12]}, frontend on "
                             f"{OLD[:12]})")


def test_an_unhealthy_deploy_changed_production_and_is_rolled_back() -> None:
    deploy = Story().run("deploy_backend_to_prod", "backend", NEW, ok=False).done("backend deployed")
    assert outcomes.changes(deploy) == [outcomes.Change("backend", NEW, ok=False)]
    assert outcomes.needs_prod_e2e(deploy) and outcomes.needs_rollback(e2e("backend_version"))
    rollback = rollback_story().run("rollback_backend", "backend", OLD)
    assert outcomes.needs_e2e_again(rollback.thread)
    ended = outcomes.decide(NEW, before=state(OLD, OLD), deploy=deploy, after=state(NEW, OLD),
                            prod_e2e=e2e("backend_version"), rollback=rollback.done("backend back"),
                            final=state(OLD, OLD), again=e2e())
    assert (ended.name, ended.ok) == ("rolled_back", False)
    assert ended.message == (f"production e2e failed (backend_version) after this run deployed backend {NEW[:12]} "
                             f"(unhealthy); rolled back backend to {OLD[:12]}; production e2e passes again (backend "
                             f"on {OLD[:12]}, frontend on {OLD[:12]})")


@pytest.mark.parametrize(("rollback", "name", "says"), [
    (lambda: rollback_story().reject("rollback_backend", "no", to=OLD[:12]).done("left as is"), "prod_failed",
     "nothing was rolled back (rollback_backend rejected by alice (no)); the rollback agent said: left as is"),
    (lambda: rollback_story().done("cannot fix", intent="escalate"), "rollback_escalated",
     "nothing was rolled back; the rollback agent escalated: cannot fix"),
    (lambda: rollback_story().escalated("step limit reached (6 of 6 model steps)"), "rollback_escalated",
     "the rollback agent escalated: step limit reached"),
    (lambda: rollback_story().run("rollback_backend", "backend", OLD, noop=True).done("it was already back"),
     "prod_failed", "nothing was rolled back; the rollback agent said: it was already back"),
])
def test_nothing_rolled_back(rollback: Any, name: str, says: str) -> None:
    deploy = Story().run("deploy_backend_to_prod", "backend", NEW).done()
    thread = rollback()
    assert not outcomes.needs_e2e_again(thread)
    ended = outcomes.decide(NEW, before=state(OLD, OLD), deploy=deploy, after=state(NEW, OLD),
                            prod_e2e=e2e("backend_version"), rollback=thread, final=state(NEW, OLD))
    assert (ended.name, ended.ok) == (name, False)
    assert ended.message.startswith(f"production e2e failed (backend_version) after this run deployed backend "
                                    f"{NEW[:12]}; ")
    assert says in ended.message and ended.message.endswith(f"production: backend on {NEW[:12]}, frontend on "
                                                            f"{OLD[:12]}")


def test_still_failing_after_the_rollback() -> None:
    deploy = Story().run("deploy_backend_to_prod", "backend", NEW).run("deploy_frontend_to_prod", "frontend", NEW)
    rollback = rollback_story().run("rollback_frontend", "frontend", OLD).done("frontend back")
    ended = outcomes.decide(NEW, before=state(OLD, OLD), deploy=deploy.done(), after=state(NEW, NEW),
                            prod_e2e=e2e("backend_version"), rollback=rollback, final=state(NEW, OLD),
                            again=e2e("backend_version", "frontend_backend_compatible"))
    assert (ended.name, ended.ok) == ("rollback_failed", False)
    assert ended.message == (f"production e2e failed (backend_version) after this run deployed backend {NEW[:12]} "
                             f"and frontend {NEW[:12]}; still failing after rolling back frontend to {OLD[:12]} "
                             "(backend_version, frontend_backend_compatible); production: backend on "
                             f"{NEW[:12]}, frontend on {OLD[:12]}. A human must look now")


def test_missing_facts_are_a_caller_bug() -> None:
    deploy = Story().run("deploy_backend_to_prod", "backend", NEW).done()
    with pytest.raises(ValueError, match="production e2e report"):
        outcomes.decide(NEW, before=state(OLD, OLD), deploy=deploy, after=state(NEW, OLD))
    with pytest.raises(ValueError, match="rollback agent's thread"):
        outcomes.decide(NEW, before=state(OLD, OLD), deploy=deploy, after=state(NEW, OLD), prod_e2e=e2e("x"))
    rolled = rollback_story().run("rollback_backend", "backend", OLD).done()
    with pytest.raises(ValueError, match="e2e report after it"):
        outcomes.decide(NEW, before=state(OLD, OLD), deploy=deploy, after=state(NEW, OLD), prod_e2e=e2e("x"),
                        rollback=rolled, final=state(OLD, OLD))


def test_staging() -> None:
    ok = staged(True, "done")
    assert outcomes.staging_outcome(NEW, [ok, ok], e2e()) is None
    failed = outcomes.staging_outcome(NEW, [ok, ok], e2e("backend_version"))
    assert failed == outcomes.Outcome("staging_failed", f"staging rejected {NEW[:12]}: failed checks: backend_version."
                                                        " Nothing was deployed to production.", ok=False)
    broken = outcomes.staging_outcome(NEW, [staged(False, "health check failed"), ok], None)
    assert broken is not None and "staging rejected" in broken.message and "health check failed" in broken.message


def test_the_rollback_agent_is_told_what_was_deployed() -> None:
    deploy = Story().run("deploy_backend_to_prod", "backend", NEW).done()
    prod = EnvState(target="local", env="production", history=[], services={
        s: ServiceState(service=s, sha=NEW if s == "backend" else OLD, status="running", healthy=True)
        for s in ("backend", "frontend")})
    thread = prefetch.rollback_thread("run", NEW, actor="ci", deployed=deploy, prod_e2e=e2e("backend_version"),
                                      prod=prod, tags=RepoTags(recent=[], by_sha={}))
    assert thread.events[0].request == (f"production e2e failed after this run (for {NEW}) deployed backend "
                                        f"{NEW[:12]}; put production back on a working release")
