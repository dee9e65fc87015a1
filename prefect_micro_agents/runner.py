"""The agent loop in plain Python (no Prefect): drive an agent until it needs a human, is done, or escalates."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from prefect_micro_agents import llm
from prefect_micro_agents.binding import Binding, ToolContext
from prefect_micro_agents.execution import run_tool_call
from prefect_micro_agents.loop import drive
from prefect_micro_agents.reducer import Action, AwaitAnswer, AwaitApproval
from prefect_micro_agents.thread import AnswerEvent, DecisionEvent, ErrorEvent, Event, ProposalEvent, ResultEvent, Thread
from prefect_micro_agents.tools import Agent, Tool

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
    appended event: the place to persist it (nothing lost on a crash). A caller records humans' decisions and
    answers itself (`reducer.apply`) and calls again.
    """
    return drive(agent, thread, tools, _Plain(agent, thread.id, model, llm_options, on_event))


@dataclass(frozen=True)
class _Plain:
    """Side effects in this process: the model called directly, tools run directly, no human waited for."""

    agent: Agent
    scope: str  # the thread id: a retry of the same approved call in the same thread carries the same key
    model: str | None
    llm_options: dict[str, Any]
    on_event: Callable[[Thread, Event], None] | None

    def ask_model(self, thread: Thread, step: int) -> ProposalEvent | ErrorEvent:
        return llm.step(self.agent, thread, self.model, **self.llm_options)

    def ask_human(self, thread: Thread, wait: AwaitApproval | AwaitAnswer) -> DecisionEvent | AnswerEvent | None:
        return None  # the caller asks, records the answer, and calls again

    def began(self, key: str) -> bool:
        return False  # no record of its own: the thread (persisted by the caller) is the record

    def execute(self, binding: Binding[Any], call: Tool, ctx: ToolContext) -> ResultEvent | ErrorEvent:
        return run_tool_call(call, binding, ctx)

    def recorded(self, thread: Thread, cause: Action | None) -> None:
        if cause is None:
            return
        log.info("%s: %s", self.agent.name, thread.events[-1].type)
        if self.on_event is not None:
            self.on_event(thread, thread.events[-1])

    def halted(self, thread: Thread, outcome: str) -> None:
        pass
