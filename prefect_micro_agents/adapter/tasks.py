"""The Prefect tasks of an agent run: plain data in, persisted results out, cache keys from plain data.

Keys are built from the flow run id plus the thread digest and step (LLM), or the idempotency key (tools), so
that when a suspended run resumes and the flow function runs again from the top, every step already taken is
read back from storage: no new LLM call, no second execution.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import replace
from typing import Any

from prefect import task
from prefect.context import TaskRunContext
from prefect.utilities.annotations import quote

from prefect_micro_agents.adapter.ledger import ExecutionLedger
from prefect_micro_agents.approval_policy import Approvers
from prefect_micro_agents.binding import Binding, ToolContext
from prefect_micro_agents.execution import redact_event, run_tool_call
from prefect_micro_agents.llm import LLMReply, LLMRequest, call_model
from prefect_micro_agents.thread import ErrorEvent, ResultEvent
from prefect_micro_agents.tools import Tool

__all__ = ["approvers_snapshot", "execute_call", "llm_step", "run_scoped_key", "verify_signature"]

log = logging.getLogger(__name__)


def run_scoped_key(name: str, *fields: str) -> Callable[[TaskRunContext, dict[str, Any]], str]:
    """A cache_key_fn for deterministic steps: `<name>-<flow run id>-<the named parameters>`.

    Use it on steps that run before the agent (staging deploy, tests) so a resumed run does not repeat them.
    """

    def key(context: TaskRunContext, parameters: dict[str, Any]) -> str:
        values = "-".join(str(parameters[f]) for f in fields)
        return f"{name}-{context.task_run.flow_run_id}-{values}".rstrip("-")

    return key


def _llm_key(context: TaskRunContext, parameters: dict[str, Any]) -> str:
    return f"llm-{context.task_run.flow_run_id}-{parameters['thread_digest'][:16]}-{parameters['step']}"


@task(name="llm-step", persist_result=True, cache_key_fn=_llm_key, task_run_name="llm step {step}")
def _llm_task(request: LLMRequest, thread_digest: str, step: int) -> LLMReply:
    return call_model(request)


def llm_step(request: LLMRequest, thread_digest: str) -> LLMReply:
    """The only place a model is called; cached per (run, thread digest, step).

    The request is passed quoted: Prefect would otherwise walk every message and schema node looking for futures,
    which cost about 5 ms per step (tests/benchmarks/bench_gate.py).
    """
    quoted: Any = quote(request)  # Prefect hands the function the request itself
    reply: LLMReply = _llm_task(quoted, thread_digest, request.step)
    return reply


def _approvers_key(context: TaskRunContext, parameters: dict[str, Any]) -> str:
    return f"approvers-{context.task_run.flow_run_id}"


@task(name="approvers-file", persist_result=True, cache_key_fn=_approvers_key)
def _approvers_task() -> dict[str, Any] | None:
    from prefect_micro_agents.approval_policy import load_approvers

    found = load_approvers()
    return None if found is None else found.model_dump(mode="json")


def approvers_snapshot() -> Approvers | None:
    """The approvers file ($AGENT_APPROVERS_FILE) as this flow run first read it: a run resumed on another machine,
    or after the file changed, is held to the policy it started under (and its records say which)."""
    from prefect_micro_agents.approval_policy import Approvers

    found = _approvers_task()
    return None if found is None else Approvers.model_validate(found)


def _verify_key(context: TaskRunContext, parameters: dict[str, Any]) -> str:
    return f"verify-{context.task_run.flow_run_id}-{parameters['suspend_key']}"


@task(name="verify-signature", persist_result=True, cache_key_fn=_verify_key,
      task_run_name="verify signature {suspend_key}")
def _verify_task(text: str, signature: str, principal: str, allowed_signers: str | None,
                 suspend_key: str) -> tuple[bool, str]:
    from pathlib import Path

    from prefect_micro_agents.signing import verify

    found = verify(text.encode(), signature, principal, Path(allowed_signers) if allowed_signers else None)
    return found.verified, found.detail


def verify_signature(text: bytes, signature: str, principal: str, allowed_signers: str | None,
                     suspend_key: str) -> tuple[bool, str]:
    """Whether `signature` is `principal`'s signature of `text` (prefect_micro_agents.signing.verify), checked once
    per answer (`suspend_key`) and persisted: a replay records the same verdict even if the allowed-signers file
    changed since (a key revoked later does not undo what ran; a key revoked before the check is refused)."""
    return tuple(_verify_task(text.decode(), signature, principal, allowed_signers, suspend_key))  # type: ignore[return-value]


def _execute_key(context: TaskRunContext, parameters: dict[str, Any]) -> str:
    return f"exec-{parameters['ctx'].idempotency_key}"


def execute_call(binding: Binding[Any], call: Tool, ctx: ToolContext) -> ResultEvent | ErrorEvent:
    """Run an approved (or auto) call once, as a task over plain data (the call as JSON, the context).

    `ctx.reconcile` comes from the loop (prefect_micro_agents.loop), which read this same ledger (`began`) before
    handing the call over. Here the ledger's `begin` decides under the key's lock, across workers: exactly one
    attempt finds the key new and runs the call; one that finds it started (an attempt that began it died, or
    began it since the loop looked) reconciles; one that finds it finished returns the recorded result.
    """

    def execute(call: dict[str, Any], ctx: ToolContext) -> ResultEvent | ErrorEvent:
        ledger = ExecutionLedger()
        status, recorded = ledger.begin(ctx.idempotency_key)
        if status == "finished":  # the tool finished but the task result was never persisted: don't run it again
            log.info("execution %s already finished; using the recorded result", ctx.idempotency_key)
            kind = ResultEvent if recorded.get("type") == "result" else ErrorEvent
            return kind.model_validate(recorded)
        if status == "started":
            log.warning("execution %s was begun by an attempt that died; the tool reconciles", ctx.idempotency_key)
            ctx = replace(ctx, reconcile=True)
        # Redacted here, inside the task: the ledger and Prefect's stored result of this task never hold a secret.
        event = redact_event(run_tool_call(binding.parse(call), binding, ctx))
        ledger.finish(ctx.idempotency_key, event.model_dump(mode="json"))
        return event

    execute.__name__ = execute.__qualname__ = f"execute_{call.intent_name()}"
    # The run name says what ran, for people and for `microagents runs` (what a crashed run executed).
    shown = " ".join(f"{k}={str(v)[:12]}" for k, v in call.arguments().items())
    runner = task(name=f"execute {call.intent_name()}", persist_result=True, cache_key_fn=_execute_key,
                  tags=list(binding.tool.concurrency_tags), task_run_name=f"execute {call.intent_name()} {shown}"[:120])
    return runner(execute)(call=call.model_dump(mode="json"), ctx=ctx)
