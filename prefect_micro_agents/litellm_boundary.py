"""Everything that knows litellm's shapes, imported only when a model is actually called."""

from __future__ import annotations

import json
import os
from typing import Any

from prefect_micro_agents.thread import Usage

__all__ = ["configuration_errors", "load", "supports_schema", "to_reply", "transient_errors"]


def load(model: str) -> Any:
    """Import litellm quietly and offline-friendly; register the scripted test provider when it is asked for."""
    os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")  # no cost-map download at import
    import litellm

    litellm.telemetry = False
    litellm.suppress_debug_info = True
    if model.startswith("scripted/"):
        from prefect_micro_agents.testing.scripted import register

        register(litellm)
    return litellm


def supports_schema(litellm: Any, model: str) -> bool:
    try:
        return bool(litellm.supports_response_schema(model=model))
    except Exception:  # unknown model strings: fall back to tool calling, which nearly every provider has
        return False


def transient_errors() -> tuple[type[BaseException], ...]:
    import litellm

    return (
        litellm.Timeout,
        litellm.RateLimitError,
        litellm.APIConnectionError,
        litellm.ServiceUnavailableError,
        litellm.InternalServerError,
    )


def configuration_errors() -> tuple[type[BaseException], ...]:
    import litellm

    return (
        litellm.AuthenticationError,
        litellm.PermissionDeniedError,
        litellm.NotFoundError,
        litellm.BadRequestError,
    )


def to_reply(litellm: Any, response: Any, model: str, latency_ms: float) -> Any:
    from prefect_micro_agents.llm import LLMReply

    message = response.choices[0].message
    tool_calls = getattr(message, "tool_calls", None) or []
    if tool_calls:
        text, tool_name = tool_calls[0].function.arguments or "", tool_calls[0].function.name
    else:
        text, tool_name = message.content or "", None
    usage = getattr(response, "usage", None)
    try:
        cost: float | None = float(litellm.completion_cost(completion_response=response))
    except Exception:  # unknown or local models have no price; that is not an error
        cost = None
    return LLMReply(
        text=text if isinstance(text, str) else json.dumps(text),
        tool_name=tool_name,
        model=model,
        usage=Usage(
            prompt_tokens=getattr(usage, "prompt_tokens", 0) or 0,
            completion_tokens=getattr(usage, "completion_tokens", 0) or 0,
            cost_usd=cost,
            latency_ms=round(latency_ms, 3),
        ),
    )
