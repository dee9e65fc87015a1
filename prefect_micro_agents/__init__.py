"""prefect-micro-agents: small, focused LLM micro-agents inside deterministic Prefect flows.

An agent is a declaration (`Agent`: a name, its `Tool` classes, its prompt template); `run_agent` drives it inside a
Prefect flow run with an implementation bound to each tool that executes (`bind(Deploy, deploy)`, where `deploy`
takes a `Deploy` call), and suspends the run whenever a human must approve a proposed call or answer a question.
Everything else is ordinary, typed Python.

    from prefect_micro_agents import Agent, Tool, ToolContext, bind, run_agent

`run_agent` and the other Prefect-side names import Prefect when first used, so the CLI and the plain-Python parts
start fast.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from prefect_micro_agents.approval_policy import ApprovalPolicy, Approvers, load_approvers
from prefect_micro_agents.binding import Binding, ToolContext, ToolImpl, bind
from prefect_micro_agents.errors import AgentError, ConfigurationError, ProviderError, ThreadError
from prefect_micro_agents.secrets import redact, redacted, register_secret
from prefect_micro_agents.thread import (
    AnswerEvent, ContextEvent, DecisionEvent, DoneEvent, ErrorEvent, EscalationEvent, Event, ProposalEvent, ReceiptEvent,
    ResultEvent, Thread, TriggerEvent,
)
from prefect_micro_agents.tools import Agent, Policy, Tool, args_digest

if TYPE_CHECKING:
    from prefect_micro_agents.adapter.approvals import ApprovalsClient, PendingRequest, ResumeRefused
    from prefect_micro_agents.adapter.failure import OutcomeFailure, failed
    from prefect_micro_agents.adapter.loop import run_agent
    from prefect_micro_agents.adapter.recovery import EXHAUSTED_EVENT, exhausted_event
    from prefect_micro_agents.adapter.store import ThreadStore
    from prefect_micro_agents.adapter.tasks import run_scoped_key
    from prefect_micro_agents.llm import build_request
    from prefect_micro_agents.prompts import build_messages
    from prefect_micro_agents.runner import run_until_blocked

__all__ = [
    "Agent",
    "AgentError",
    "ApprovalPolicy",
    "Approvers",
    "AnswerEvent",
    "ApprovalsClient",
    "Binding",
    "ConfigurationError",
    "ContextEvent",
    "DecisionEvent",
    "DoneEvent",
    "EXHAUSTED_EVENT",
    "ErrorEvent",
    "EscalationEvent",
    "Event",
    "OutcomeFailure",
    "PendingRequest",
    "Policy",
    "ProposalEvent",
    "ProviderError",
    "ReceiptEvent",
    "ResultEvent",
    "ResumeRefused",
    "Thread",
    "ThreadError",
    "ThreadStore",
    "Tool",
    "ToolContext",
    "ToolImpl",
    "TriggerEvent",
    "args_digest",
    "bind",
    "build_messages",
    "build_request",
    "exhausted_event",
    "failed",
    "redact",
    "redacted",
    "load_approvers",
    "register_secret",
    "run_agent",
    "run_scoped_key",
    "run_until_blocked",
]

_LAZY = {
    "EXHAUSTED_EVENT": "prefect_micro_agents.adapter.recovery",
    "exhausted_event": "prefect_micro_agents.adapter.recovery",
    "ApprovalsClient": "prefect_micro_agents.adapter.approvals",
    "PendingRequest": "prefect_micro_agents.adapter.approvals",
    "ResumeRefused": "prefect_micro_agents.adapter.approvals",
    "OutcomeFailure": "prefect_micro_agents.adapter.failure",
    "failed": "prefect_micro_agents.adapter.failure",
    "run_agent": "prefect_micro_agents.adapter.loop",
    "ThreadStore": "prefect_micro_agents.adapter.store",
    "run_scoped_key": "prefect_micro_agents.adapter.tasks",
    "build_request": "prefect_micro_agents.llm",
    "build_messages": "prefect_micro_agents.prompts",
    "run_until_blocked": "prefect_micro_agents.runner",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'prefect_micro_agents' has no attribute {name!r}")
    import importlib

    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value
