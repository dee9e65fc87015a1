"""Thread -> request: the rendered messages (secrets redacted), the schema of the tools offered now, the step.

Pure and cheap (no litellm), so an orchestrator can build the request, hash it into a cache key and call the model
only when no earlier result exists.
"""

from __future__ import annotations

from functools import lru_cache
from typing import TYPE_CHECKING, Any

from prefect_micro_agents.llm.config import output_mode, resolve_model
from prefect_micro_agents.llm.data import LLMRequest
from prefect_micro_agents.prompts import build_messages
from prefect_micro_agents.reducer import model_steps
from prefect_micro_agents.secrets import redact, secret_values

if TYPE_CHECKING:
    from prefect_micro_agents.thread import Thread
    from prefect_micro_agents.tools import Agent, Tool

__all__ = ["build_request", "function_specs"]


def build_request(agent: Agent, thread: Thread, model: str | None = None, **options: Any) -> LLMRequest:
    """The next model call for `agent` on `thread`; `options` override LLMRequest's defaults (mode, timeout_s,
    max_retries, backoff_s). The last line before the provider: it redacts whatever thread it is handed."""
    offered = agent.offered(thread)
    secrets = secret_values()
    messages = [{**m, "content": redact(m["content"], secrets)} for m in build_messages(agent, thread, offered)]
    return LLMRequest(
        model=resolve_model(model),
        messages=messages,
        schema_=agent.response_schema(offered),
        tools=function_specs(offered),
        mode=output_mode(options.pop("mode", None)),
        step=model_steps(thread) + 1,
        **options,
    )


@lru_cache(maxsize=64)
def function_specs(offered: tuple[type[Tool], ...]) -> list[dict[str, Any]]:
    """Tool-calling specs (one function per tool, `intent` implied by the name); cached: schemas are static."""
    specs = []
    for tool in offered:
        params = tool.model_json_schema()
        params["properties"] = {k: v for k, v in params["properties"].items() if k != "intent"}
        params["required"] = [r for r in params.get("required", []) if r != "intent"]
        description = (tool.__doc__ or "").strip()
        specs.append({"type": "function", "function": {"name": tool.intent_name(), "description": description,
                                                        "parameters": params}})
    return specs
