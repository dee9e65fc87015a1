"""One LLM step: thread -> plain-data request -> litellm -> validated tool call or one compact error event.

Split by job so an orchestrator can cache the middle part and nothing pays for litellm's import (seconds) before a
model is called:

- `config`: which model (`resolve_model`), where (`$AGENT_API_BASE`, the local model), output mode, `preflight`;
- `request`: `build_request` renders the prompt (secrets redacted) and the tool schema; pure;
- `transport`: `call_model`, the only code that calls a provider (retries, transient vs configuration errors);
- `provider`: litellm itself, imported on first use, with the custom providers of `$AGENT_LITELLM_PROVIDERS`;
- `parse`: `parse_reply` turns the reply into a proposal or one short error event; pure.

Submodules import each other, never this package; callers import the names below from here.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from prefect_micro_agents.llm.config import (
    API_BASE_ENV, LOCAL_MODEL, MODE_ENV, MODEL_ENV, litellm_target, output_mode, preflight, resolve_model,
)
from prefect_micro_agents.llm.data import LLMReply, LLMRequest, OutputMode
from prefect_micro_agents.llm.parse import parse_reply
from prefect_micro_agents.llm.provider import PROVIDERS_ENV, ProviderHook, use_provider
from prefect_micro_agents.llm.request import build_request
from prefect_micro_agents.llm.transport import call_model

if TYPE_CHECKING:
    from prefect_micro_agents.thread import ErrorEvent, ProposalEvent, Thread
    from prefect_micro_agents.tools import Agent

__all__ = [
    "API_BASE_ENV",
    "LOCAL_MODEL",
    "MODEL_ENV",
    "MODE_ENV",
    "PROVIDERS_ENV",
    "LLMReply",
    "LLMRequest",
    "OutputMode",
    "ProviderHook",
    "build_request",
    "call_model",
    "litellm_target",
    "output_mode",
    "parse_reply",
    "preflight",
    "resolve_model",
    "step",
    "use_provider",
]


def step(agent: Agent, thread: Thread, model: str | None = None, **options: Any) -> ProposalEvent | ErrorEvent:
    """Ask the model once for the next tool call."""
    request = build_request(agent, thread, model, **options)
    return parse_reply(agent, thread, call_model(request), request.step)
