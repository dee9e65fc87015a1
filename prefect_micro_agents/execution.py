"""Running one tool call: idempotency key, receipt, result or compact error. Shared by every runner."""

from __future__ import annotations

import logging
from typing import Any, TypeVar

from pydantic import BaseModel

from prefect_micro_agents.binding import Binding, ToolContext
from prefect_micro_agents.reducer import Execute, apply
from prefect_micro_agents.secrets import redact_data, secret_values
from prefect_micro_agents.thread import ErrorEvent, Event, ReceiptEvent, ResultEvent, Thread
from prefect_micro_agents.tools import Agent, Tool

__all__ = ["idempotency_key", "receipt", "record", "redact_event", "redact_thread", "run_tool_call"]

log = logging.getLogger(__name__)
E = TypeVar("E", bound=BaseModel)


def idempotency_key(scope: str, action: Execute) -> str:
    """(run or thread scope, proposal id, args digest): a retry of the same approved call carries the same key."""
    return f"{scope}:{action.proposal.id}:{action.proposal.args_digest[:16]}"


def receipt(action: Execute, key: str) -> ReceiptEvent | None:
    if action.approval is None:
        return None
    return ReceiptEvent(
        proposal_id=action.proposal.id,
        proposal_digest=action.proposal.digest,
        args_digest=action.proposal.args_digest,
        approver=action.approval.approver,
        approved_at=action.approval.at,
        approvers=tuple(d.approver for d in action.approvals) if len(action.approvals) > 1 else (),
        idempotency_key=key,
    )


def run_tool_call(call: Tool, binding: Binding[Any], ctx: ToolContext) -> ResultEvent | ErrorEvent:
    """Run the call; an exception from the tool becomes a short error event the model sees (factor 9)."""
    intent = call.intent_name()
    try:
        output = binding.run(call, ctx)
    except Exception as exc:  # tool failures are data for the model; control signals (BaseException) pass
        log.warning("tool %s failed: %s", intent, type(exc).__name__)
        message = " ".join(f"{type(exc).__name__}: {exc}".split())[:300]
        return ErrorEvent(kind="tool_error", message=message, proposal_id=ctx.proposal_id)
    return ResultEvent(proposal_id=ctx.proposal_id, intent=intent, output=output, idempotency_key=ctx.idempotency_key)


def redact_event(event: E, secrets: list[tuple[str, str]] | None = None) -> E:
    """The same event with every secret in it redacted (prefect_micro_agents.secrets)."""
    redacted: E = redact_data(event, secret_values() if secrets is None else secrets)
    return redacted


def redact_thread(thread: Thread, secrets: list[tuple[str, str]] | None = None) -> Thread:
    """Every event redacted, the initial (pre-fetched) ones included: a runner calls this before it stores,
    publishes, renders or sends anything of a thread it was handed."""
    secrets = secret_values() if secrets is None else secrets
    return Thread(id=thread.id, events=tuple(redact_event(e, secrets) for e in thread.events))


def record(thread: Thread, event: Event, secrets: list[tuple[str, str]] | None = None,
           agent: Agent | None = None) -> Thread:
    """Redact secrets, then apply (judging rejections by `agent`'s approval policies): nothing secret is ever part
    of the thread."""
    return apply(thread, redact_event(event, secrets), agent)


