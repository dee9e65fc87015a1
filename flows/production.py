"""The tools that change production (deploy agent, rollback agent), one change at a time.

Failed deploys are DATA: `target.deploy` returning ok=false (the release is current but unhealthy) becomes a normal
result `ok=false` the agent reads and the pipeline's production e2e then catches; the call did run and changed
production, so it is a fact, not an error to retry. Calls that cannot run at all (an unknown or out-of-scope SHA, a
release never deployed there) raise, and become a capped `tool_error` event the agent can correct.

Serialisation: the deploy and rollback tools declare `concurrency_tags = ("production-changes",)`, so their execute
task holds a slot of Prefect's tag concurrency limit `production-changes` (limit 1, created if missing) while it runs,
and only then: never a run that waits for a human. A second run reaching its own approved change waits for the slot
(its execute task stays Pending); it does not fail. The server frees the slot when the task run ends, and when a new
attempt of a crashed run marks its dead predecessor's task run Crashed (prefect_micro_agents/adapter/recovery.py).
"""

from __future__ import annotations

import logging
from typing import Any

from agents.deploybot import PRODUCTION_LIMIT, DeployBackendToProd, DeployFrontendToProd
from agents.rollback import RollbackBackend, RollbackFrontend
from prefect_micro_agents import Binding, ToolContext, bind
from flows.targets.base import DeployResult, Service
from flows.targets.errors import TargetError
from flows.targets.settings import TargetSettings

__all__ = ["PRODUCTION_LIMIT", "OutOfScopeError", "deploy_tools", "ensure_limit", "rollback_tools"]
log = logging.getLogger(__name__)


class OutOfScopeError(TargetError):
    """The agent asked for something this pipeline run is not about (another SHA)."""


def ensure_limit(tag: str = PRODUCTION_LIMIT) -> None:
    """Create the tag concurrency limit (limit 1) if it does not exist; an existing one is left as configured.

    Runs that start together race to create it: on a Postgres-backed server all but one insert fail with 409
    ("Data integrity conflict"); that is the limit existing, not an error (SQLite serialises the writes)."""
    from prefect.client.orchestration import get_client
    from prefect.exceptions import ObjectNotFound, PrefectHTTPStatusError

    with get_client(sync_client=True) as client:
        try:
            client.read_concurrency_limit_by_tag(tag)
            return
        except ObjectNotFound:
            pass
        try:
            client.create_concurrency_limit(tag=tag, concurrency_limit=1)
            log.info("created tag concurrency limit %r (limit 1)", tag)
        except PrefectHTTPStatusError as err:
            if err.response.status_code != 409:
                raise
            client.read_concurrency_limit_by_tag(tag)  # another run created it first; it must be there now


def _output(result: DeployResult, ctx: ToolContext) -> dict[str, Any]:
    """What the agent reads: compact, no PIDs or timings beyond the message."""
    out: dict[str, Any] = {"service": result.service, "sha": result.sha, "ok": result.ok, "noop": result.noop,
                           "message": result.message[:300]}
    if ctx.reconcile:
        out["reconciled"] = True  # an earlier attempt may have run; the target's idempotency key decided
    return out


def _deploy(settings: TargetSettings, service: Service, sha: str,
            call: DeployBackendToProd | DeployFrontendToProd, ctx: ToolContext) -> dict[str, Any]:
    target = settings.build()
    resolved = target.resolve(call.sha)  # without a repo (command targets) a prefix comes back as it is
    if resolved != sha and not sha.startswith(resolved):
        raise OutOfScopeError(f"this run deploys {sha[:12]} only; {call.sha} is another commit")
    # On reconcile the same idempotency key makes the target finish the interrupted call in its history entry
    # (flows/targets/local.py), return its recorded result, or find the release already running.
    return _output(target.deploy(service, "production", sha, idempotency_key=ctx.idempotency_key), ctx)


def _rollback(settings: TargetSettings, service: Service, call: RollbackBackend | RollbackFrontend,
              ctx: ToolContext) -> dict[str, Any]:
    target = settings.build()
    to = target.resolve(call.to)
    if target.repo is None:  # no git to expand a prefix: match the releases production has run
        known = {h.sha for h in target.state("production").history if h.sha.startswith(to)}
        to = known.pop() if len(known) == 1 else to
    return _output(target.rollback(service, "production", to, idempotency_key=ctx.idempotency_key), ctx)


def deploy_tools(settings: TargetSettings, sha: str) -> list[Binding[Any]]:
    """Implementations of the deploy agent's executing tools, bound to this run's targets and SHA."""

    def backend(call: DeployBackendToProd, ctx: ToolContext) -> dict[str, Any]:
        return _deploy(settings, "backend", sha, call, ctx)

    def frontend(call: DeployFrontendToProd, ctx: ToolContext) -> dict[str, Any]:
        return _deploy(settings, "frontend", sha, call, ctx)

    return [bind(DeployBackendToProd, backend), bind(DeployFrontendToProd, frontend)]


def rollback_tools(settings: TargetSettings) -> list[Binding[Any]]:
    """Implementations of the rollback agent's executing tools."""

    def backend(call: RollbackBackend, ctx: ToolContext) -> dict[str, Any]:
        return _rollback(settings, "backend", call, ctx)

    def frontend(call: RollbackFrontend, ctx: ToolContext) -> dict[str, Any]:
        return _rollback(settings, "frontend", call, ctx)

    return [bind(RollbackBackend, backend), bind(RollbackFrontend, frontend)]
