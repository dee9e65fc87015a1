"""The tools that change production (deploy agent, rollback agent), one change at a time.

Failed deploys are DATA: `target.deploy` returning ok=false (the release is current but unhealthy) becomes a normal
result `ok=false` the agent reads and the pipeline's production e2e then catches; the call did run and changed
production, so it is a fact, not an error to retry. Calls that cannot run at all (an unknown or out-of-scope SHA, a
release never deployed there) raise, and become a capped `tool_error` event the agent can correct.

Serialisation: only the production-changing part of a tool (never a run that waits for a human) holds a slot of the
Prefect global concurrency limit `production-changes` (limit 1, created if missing). A second run reaching its own
approved change waits for the slot; it does not fail.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from typing import Any

from agents.execution import ToolContext, ToolImpl
from agents.tools import Tool
from flows.targets.base import DeployResult
from flows.targets.errors import TargetError
from flows.targets.settings import TargetSettings

__all__ = ["PRODUCTION_LIMIT", "OutOfScopeError", "deploy_tools", "ensure_limit", "production_change", "rollback_tools"]

PRODUCTION_LIMIT = "production-changes"
log = logging.getLogger(__name__)


class OutOfScopeError(TargetError):
    """The agent asked for something this pipeline run is not about (another SHA)."""


def ensure_limit(name: str = PRODUCTION_LIMIT) -> None:
    """Create the global concurrency limit (limit 1) if it does not exist; an existing one is left as configured."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.actions import GlobalConcurrencyLimitCreate
    from prefect.exceptions import ObjectAlreadyExists, ObjectNotFound

    with get_client(sync_client=True) as client:
        try:
            client.read_global_concurrency_limit_by_name(name)
            return
        except ObjectNotFound:
            pass
        try:
            client.create_global_concurrency_limit(GlobalConcurrencyLimitCreate(name=name, limit=1))
            log.info("created global concurrency limit %r (limit 1)", name)
        except ObjectAlreadyExists:  # another run created it a moment ago
            pass


@contextmanager
def production_change(what: str) -> Iterator[None]:
    """Hold the production slot while `what` runs; waits (without a timeout) while another run holds it, and says so
    in the run's log only when the server really refused the slot (a fact, not a guess)."""
    from prefect import get_run_logger
    from prefect.concurrency.asyncio import ConcurrencySlotAcquisitionError
    from prefect.concurrency.sync import concurrency

    logger = get_run_logger()  # tools run inside the execute task: their waits show in the run's log
    ensure_limit()
    asked = time.monotonic()
    with ExitStack() as slot:
        try:  # one attempt first, so a refusal can be told apart from a free slot
            slot.enter_context(concurrency(PRODUCTION_LIMIT, occupy=1, strict=True, max_retries=0))
        except ConcurrencySlotAcquisitionError as exc:
            if not _refused(exc):
                raise
            logger.info("%s: waiting for %r: another run is changing production", what, PRODUCTION_LIMIT)
            slot.enter_context(concurrency(PRODUCTION_LIMIT, occupy=1, strict=True))
        logger.info("%s: holding %r (waited %.1f s for it)", what, PRODUCTION_LIMIT, time.monotonic() - asked)
        yield
    logger.info("%s: released %r", what, PRODUCTION_LIMIT)


def _refused(exc: Exception) -> bool:
    """The server answered 423 Locked: every slot is taken (Prefect wraps it in ConcurrencySlotAcquisitionError)."""
    cause = exc.__cause__
    response = getattr(cause, "response", None)
    return getattr(response, "status_code", None) == 423


def _output(result: DeployResult, ctx: ToolContext) -> dict[str, Any]:
    """What the agent reads: compact, no PIDs or timings beyond the message."""
    out: dict[str, Any] = {"service": result.service, "sha": result.sha, "ok": result.ok, "noop": result.noop,
                           "message": result.message[:300]}
    if ctx.reconcile:
        out["reconciled"] = True  # an earlier attempt may have run; the target's idempotency key decided
    return out


def _deploy(settings: TargetSettings, service: str, sha: str) -> ToolImpl:
    def impl(call: Tool, ctx: ToolContext) -> dict[str, Any]:
        target = settings.build()
        asked = call.sha  # type: ignore[attr-defined]
        resolved = target.resolve(asked)  # without a repo (command targets) a prefix comes back as it is
        if resolved != sha and not sha.startswith(resolved):
            raise OutOfScopeError(f"this run deploys {sha[:12]} only; {asked} is another commit")
        with production_change(f"deploy {service} {sha[:12]}"):
            # On reconcile the same idempotency key makes the target return the recorded result, or find the
            # release already running (a no-op), or deploy it if the earlier attempt never got that far.
            result = target.deploy(service, "production", sha, idempotency_key=ctx.idempotency_key)
        return _output(result, ctx)

    return impl


def _rollback(settings: TargetSettings, service: str) -> ToolImpl:
    def impl(call: Tool, ctx: ToolContext) -> dict[str, Any]:
        target = settings.build()
        to = target.resolve(call.to)  # type: ignore[attr-defined]
        if target.repo is None:  # no git to expand a prefix: match the releases production has run
            known = {h.sha for h in target.state("production").history if h.sha.startswith(to)}
            to = known.pop() if len(known) == 1 else to
        with production_change(f"roll back {service} to {to[:12]}"):
            result = target.rollback(service, "production", to, idempotency_key=ctx.idempotency_key)
        return _output(result, ctx)

    return impl


def deploy_tools(settings: TargetSettings, sha: str) -> dict[str, ToolImpl]:
    """Implementations of the deploy agent's executing tools, bound to this run's targets and SHA."""
    return {"deploy_backend_to_prod": _deploy(settings, "backend", sha),
            "deploy_frontend_to_prod": _deploy(settings, "frontend", sha)}


def rollback_tools(settings: TargetSettings) -> dict[str, ToolImpl]:
    """Implementations of the rollback agent's executing tools."""
    return {"rollback_backend": _rollback(settings, "backend"), "rollback_frontend": _rollback(settings, "frontend")}
