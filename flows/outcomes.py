"""How a pipeline run ends, decided from what actually executed, never from what was asked for.

Pure functions over the agents' threads (their `result` events) and the target's models (`EnvState`, `E2EReport`,
`DeployResult`). The flow asks `changes`/`needs_*` what to run next and `decide` how the run ended, so every path is unit-testable.

What counts as a change of production (the facts the deploy and rollback tools return, see flows.production):
- a result with `noop` true changed nothing (the service already ran that release);
- a result with `ok` false DID change production: the release is current but unhealthy;
- a `tool_error` (the call could not run at all), a rejection or an expired approval changed nothing.
"""

from __future__ import annotations

from dataclasses import dataclass

from prefect_micro_agents.commits import same_commit
from prefect_micro_agents.thread import DecisionEvent, DoneEvent, ErrorEvent, EscalationEvent, ProposalEvent, ResultEvent, Thread
from flows.targets.base import SERVICES, DeployResult, E2EReport, EnvState

__all__ = [
    "Change",
    "Outcome",
    "changes",
    "decide",
    "describe",
    "escalated",
    "needs_e2e_again",
    "needs_prod_e2e",
    "needs_rollback",
    "staging_outcome",
]


@dataclass(frozen=True)
class Change:
    """One call that changed production: which service, to which release, healthy or not."""

    service: str
    sha: str
    ok: bool

    def __str__(self) -> str:
        return f"{self.service} {self.sha[:12]}" + ("" if self.ok else " (unhealthy)")


@dataclass(frozen=True)
class Outcome:
    """How the run ended: `ok` runs end Completed, the others Failed; `message` is the state message."""

    name: str
    message: str
    ok: bool


def changes(thread: Thread | None) -> list[Change]:
    """The calls of this thread that changed production, in the order they ran."""
    found = []
    for result in thread.of_type(ResultEvent) if thread is not None else ():
        out = result.output if isinstance(result.output, dict) else {}
        if out.get("noop") is True:
            continue
        # An output we cannot read is counted as a change: assuming nothing ran would skip the checks.
        found.append(Change(service=str(out.get("service") or result.intent), sha=str(out.get("sha") or "?"),
                            ok=out.get("ok") is not False))
    return found


def describe(found: list[Change], verb: str = "") -> str:
    """'backend 89a13a9aaf27 and frontend 89a13a9aaf27' (with `verb`: 'backend to 02e3d4935a78')."""
    parts = [f"{c.service} {verb}{c.sha[:12]}" + ("" if c.ok else " (unhealthy)") for c in found]
    return " and ".join(parts) if len(parts) < 3 else ", ".join(parts[:-1]) + " and " + parts[-1]


def escalated(thread: Thread) -> bool:
    """Stopped by the limits, or by calling an `escalate` tool (terminal, like done_for_now)."""
    done = thread.events[-1] if thread.events else None
    if not isinstance(done, DoneEvent) or done.proposal_id is None:
        return True
    return any(isinstance(e, ProposalEvent) and e.id == done.proposal_id and e.intent == "escalate"
               for e in thread.events)


def _said(thread: Thread) -> str:
    """The agent's last word: its terminal tool's message, or why the limits stopped it."""
    last = thread.events[-1] if thread.events else None
    return last.message if isinstance(last, DoneEvent) else getattr(last, "reason", "")


def _not_run(thread: Thread) -> list[str]:
    """Proposals that did not run, and why: rejected (with feedback) or failed to run (tool error)."""
    proposals = {p.id: p for p in thread.of_type(ProposalEvent)}
    why = []
    for d in thread.of_type(DecisionEvent):
        if d.decision == "rejected" and d.proposal_id in proposals:
            why.append(f"{proposals[d.proposal_id].intent} rejected by {d.approver}"
                       + (f" ({d.feedback})" if d.feedback else ""))
    for e in thread.of_type(ErrorEvent):
        if e.kind in ("tool_error", "approval_expired") and e.proposal_id in proposals:
            verb = "could not run" if e.kind == "tool_error" else "was never approved"
            why.append(f"{proposals[e.proposal_id].intent} {verb}: {e.message}")
    return why


def _tool_errors(thread: Thread) -> bool:
    return any(e.kind in ("tool_error", "approval_expired") for e in thread.of_type(ErrorEvent))


def _versions(state: EnvState) -> str:
    """'backend on 89a13a9aaf27, frontend on 02e3d4935a78' ('nothing runs there yet' when empty)."""
    running = {s: state.services[s].sha for s in SERVICES}
    if not any(running.values()):
        return "nothing runs there yet"
    return ", ".join(f"{s} on {sha[:12]}" if sha else f"no {s}" for s, sha in running.items())


def _failing(e2e: E2EReport | None) -> str:
    return ", ".join(c.name for c in e2e.checks if not c.ok) if e2e is not None else ""


def _runs_everywhere(state: EnvState, sha: str) -> bool:
    return all(same_commit(state.services[s].sha, sha) for s in SERVICES)


def needs_prod_e2e(deploy: Thread) -> bool:
    """Production is tested only if the deploy agent changed it; otherwise a failure would not be this run's."""
    return bool(changes(deploy))


def needs_rollback(prod_e2e: E2EReport | None) -> bool:
    return prod_e2e is not None and not prod_e2e.passed


def needs_e2e_again(rollback: Thread | None) -> bool:
    return bool(changes(rollback))


def staging_outcome(sha: str, deploys: list[DeployResult], e2e: E2EReport | None) -> Outcome | None:
    """None when staging passed; otherwise the run ends here, before any agent and with production untouched."""
    broken = [r.message for r in deploys if not r.ok]
    if not broken and e2e is not None and e2e.passed:
        return None
    why = "; ".join(broken) or f"failed checks: {_failing(e2e)}"
    return Outcome("staging_failed", f"staging rejected {sha[:12]}: {why}. Nothing was deployed to production.",
                   ok=False)


def decide(sha: str, *, before: EnvState, deploy: Thread, after: EnvState, prod_e2e: E2EReport | None = None,
           rollback: Thread | None = None, final: EnvState | None = None, again: E2EReport | None = None) -> Outcome:
    """The outcome of a run whose staging passed. Production states are the target's `state()`: `before` the deploy
    agent, `after` it, `final` after the rollback agent; e2e reports: `prod_e2e` after the deploy, `again` after the
    rollback. Facts a path needs but lacks (say, changes but no prod_e2e) are a caller bug and raise ValueError."""
    deployed = changes(deploy)
    if not deployed:
        return _nothing_deployed(sha, before, deploy, after)
    if prod_e2e is None:
        raise ValueError("the deploy agent changed production: the outcome needs the production e2e report")
    what = describe(deployed)
    if prod_e2e.passed:
        return _deployed(sha, what, deployed, deploy, after)
    failed = f"production e2e failed ({_failing(prod_e2e)}) after this run deployed {what}"
    if rollback is None or final is None:
        raise ValueError("production e2e failed: the outcome needs the rollback agent's thread and the final state")
    rolled = changes(rollback)
    if not rolled:
        skipped = _not_run(rollback)
        note = f" ({'; '.join(skipped)})" if skipped else ""
        if escalated(rollback):
            return Outcome("rollback_escalated", f"{failed}; nothing was rolled back{note}; the rollback agent "
                                                 f"escalated: {_said(rollback)}; production: {_versions(final)}",
                           ok=False)
        return Outcome("prod_failed", f"{failed}; nothing was rolled back{note}; the rollback agent said: "
                                      f"{_said(rollback)}; production: {_versions(final)}", ok=False)
    if again is None:
        raise ValueError("the rollback agent changed production: the outcome needs the e2e report after it")
    back = describe(rolled, verb="to ")
    if again.passed:
        return Outcome("rolled_back", f"{failed}; rolled back {back}; production e2e passes again "
                                      f"({_versions(final)})", ok=False)
    return Outcome("rollback_failed", f"{failed}; still failing after rolling back {back} ({_failing(again)}); "
                                      f"production: {_versions(final)}. A human must look now", ok=False)


def _nothing_deployed(sha: str, before: EnvState, deploy: Thread, after: EnvState) -> Outcome:
    """The deploy agent changed nothing: production is as it was; it is neither tested nor rolled back."""
    if _runs_everywhere(before, sha):
        return Outcome("already_deployed", f"production already runs {sha[:12]} ({_versions(after)}); "
                                           "nothing needed deploying", ok=True)
    skipped = _not_run(deploy)
    note = f": {'; '.join(skipped)}" if skipped else ""
    unchanged = f"production is unchanged ({_versions(after)})"
    if escalated(deploy):
        return Outcome("deploy_escalated", f"the deploy agent escalated before deploying anything: {_said(deploy)}; "
                                           f"nothing was deployed{note}; {unchanged}", ok=False)
    return Outcome("not_deployed", f"nothing was deployed{note}; {unchanged}; the deploy agent said: "
                                   f"{_said(deploy)}", ok=not _tool_errors(deploy))


def _deployed(sha: str, what: str, deployed: list[Change], deploy: Thread, after: EnvState) -> Outcome:
    """Something was deployed and production e2e passes: complete, partial, or stopped by an escalation."""
    missing = [s for s in SERVICES if not same_commit(after.services[s].sha, sha)]
    skipped = _not_run(deploy)
    note = f" ({'; '.join(skipped)})" if skipped and missing else ""
    where = f"production e2e passes ({_versions(after)})"
    if escalated(deploy):
        return Outcome("deploy_escalated", f"the deploy agent escalated after deploying {what}: {_said(deploy)}; "
                                           f"{where}", ok=False)
    healthy = all(c.ok for c in deployed)
    if missing:  # a human rejected the rest (a decision, not a failure), or it could not run (a failure)
        return Outcome("partially_deployed", f"deployed {what}; {' and '.join(missing)} not deployed{note}; {where}",
                       ok=healthy and not _tool_errors(deploy))
    already = [s for s in SERVICES if s not in {c.service for c in deployed}]
    ran = f"; {' and '.join(already)} already ran it" if already else ""
    return Outcome("deployed", f"deployed {what}{ran}; {where}: {_said(deploy)}", ok=healthy)
