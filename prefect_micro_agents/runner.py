"""The loop in plain Python (no Prefect): drive an agent until it needs a human, is done, or escalates."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from typing import Any

from typing_extensions import assert_never

from prefect_micro_agents import llm
from prefect_micro_agents.binding import Binding, ToolContext, check_bindings
from prefect_micro_agents.execution import idempotency_key, receipt, record, redact_thread, run_tool_call
from prefect_micro_agents.reducer import AskModel, AwaitAnswer, AwaitApproval, Escalate, Execute, Finish, Halted, next_action
from prefect_micro_agents.thread import Event, ReceiptEvent, Thread
from prefect_micro_agents.tools import Agent

__all__ = ["run_until_blocked"]

log = logging.getLogger(__name__)


def run_until_blocked(
    agent: Agent,
    thread: Thread,
    tools: Iterable[Binding[Any]],
    model: str | None = None,
    *,
    on_event: Callable[[Thread, Event], None] | None = None,
    **llm_options: Any,
) -> Thread:
    """Returns the thread when the next action is a human's (approval, answer) or the agent has halted.

    `tools`: a binding per tool that executes (`bind(Deploy, deploy)`). `on_event` sees the thread after every
    appended event: the place to persist it (nothing lost on a crash).
    """
    bound = check_bindings(agent, tools)
    thread = redact_thread(thread)  # the caller's events too (pre-fetched context): nothing secret goes further

    def add(event: Event) -> None:
        nonlocal thread
        thread = record(thread, event)
        log.info("%s: %s", agent.name, thread.events[-1].type)
        if on_event is not None:
            on_event(thread, thread.events[-1])

    while True:
        action = next_action(agent, thread)
        match action:
            case AskModel():
                add(llm.step(agent, thread, model, **llm_options))
            case Execute():
                key = idempotency_key(thread.id, action)
                # A receipt without a result means an earlier attempt may have run the tool: reconcile, not re-run.
                started = bool(thread.for_proposal(ReceiptEvent, action.proposal.id))
                if not started and (proof := receipt(action, key)) is not None:
                    add(proof)
                ctx = ToolContext(key, thread.id, action.proposal.id, reconcile=started)
                call = agent.call(action.proposal)
                add(run_tool_call(call, bound[type(call)], ctx))
            case Finish() | Escalate():
                add(action.event)
            case AwaitApproval() | AwaitAnswer() | Halted():
                return thread
            case _:
                assert_never(action)
