"""Running one tool call: idempotency key, receipt, result or compact error. Shared by every runner."""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TypeVar

from pydantic import BaseModel, JsonValue

from prefect_micro_agents.errors import ConfigurationError
from prefect_micro_agents.reducer import Execute, apply
from prefect_micro_agents.secrets import redact_data, secret_values
from prefect_micro_agents.thread import ErrorEvent, Event, ReceiptEvent, ResultEvent, Thread
from prefect_micro_agents.tools import Agent, Tool

__all__ = ["ToolContext", "ToolImpl", "check_implementations", "idempotency_key", "receipt", "record", "redact_event",
           "redact_thread", "run_tool", "run_tool_call"]

log = logging.getLogger(__name__)
E = TypeVar("E", bound=BaseModel)


@dataclass(frozen=True)
class ToolContext:
    """What a tool implementation gets besides its arguments."""

    idempotency_key: str  # same key for the same approved call, however often it is retried
    thread_id: str
    proposal_id: str
    reconcile: bool = False  # True: a previous attempt may have run; check whether the effect exists first


ToolImpl = Callable[[Tool, ToolContext], JsonValue]


def check_implementations(agent: Agent, impls: Mapping[str, ToolImpl]) -> None:
    """Every tool that executes needs an implementation; say which are missing before anything runs."""
    missing = [t.intent_name() for t in agent.tools if t.policy in ("auto", "approve") and t.intent_name() not in impls]
    if missing:
        raise ConfigurationError(f"agent {agent.name!r} has no implementation for: {', '.join(missing)}")


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
        idempotency_key=key,
    )


def run_tool(agent: Agent, action: Execute, impl: ToolImpl, ctx: ToolContext) -> ResultEvent | ErrorEvent:
    tool_cls = agent.tool(action.proposal.intent)
    assert tool_cls is not None, "next_action only executes known tools"
    return run_tool_call(tool_cls.model_validate({"intent": action.proposal.intent, **action.proposal.args}), impl, ctx)


def run_tool_call(call: Tool, impl: ToolImpl, ctx: ToolContext) -> ResultEvent | ErrorEvent:
    """Run the call; an exception from the tool becomes a short error event the model sees (factor 9)."""
    intent = call.intent_name()
    try:
        output = impl(call, ctx)
    except Exception as exc:  # tool failures are data for the model; control signals (BaseException) pass
        log.warning("tool %s failed: %s", intent, type(exc).__name__)
        message = " ".join(f"{type(exc).__name__}: {exc}".split())[:300]
        return ErrorEvent(kind="tool_error", message=message, proposal_id=ctx.proposal_id)
    return ResultEvent(proposal_id=ctx.proposal_id, intent=intent, output=output, idempotency_key=ctx.idempotency_key)


def redact_event(event: E, secrets: list[tuple[str, str]] | None = None) -> E:
    """The same event with every secret in it redacted (prefect_micro_agents.secrets)."""
    return redact_data(event, secret_values() if secrets is None else secrets)


def redact_thread(thread: Thread, secrets: list[tuple[str, str]] | None = None) -> Thread:
    """Every event redacted, the initial (pre-fetched) ones included: a runner calls this before it stores,
    publishes, renders or sends anything of a thread it was handed."""
    secrets = secret_values() if secrets is None else secrets
    return Thread(id=thread.id, events=tuple(redact_event(e, secrets) for e in thread.events))


def record(thread: Thread, event: Event, secrets: list[tuple[str, str]] | None = None) -> Thread:
    """Redact secrets, then apply: nothing secret is ever part of the thread."""
    return apply(thread, redact_event(event, secrets))


