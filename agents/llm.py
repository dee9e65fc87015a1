"""One LLM step: thread -> plain-data request -> litellm -> validated tool call or one compact error event.

Split in three so an orchestrator can cache the middle part: `build_request` and `parse_reply` are pure and never
import litellm (its import costs seconds); only `call_model` talks to a provider.
"""

from __future__ import annotations

import json
import logging
import os
import time
from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel, ConfigDict, ValidationError

from agents.errors import ConfigurationError, ProviderError
from agents.prompts import build_messages
from agents.reducer import model_steps
from agents.secrets import redact, secret_values
from agents.thread import ErrorEvent, ProposalEvent, Usage
from agents.tools import args_digest

if TYPE_CHECKING:
    from agents.thread import Thread
    from agents.tools import Agent

__all__ = ["LLMReply", "LLMRequest", "build_request", "call_model", "parse_reply", "resolve_model", "step"]

log = logging.getLogger(__name__)

MODEL_ENV = "AGENT_MODEL"
MODE_ENV = "AGENT_OUTPUT_MODE"
OutputMode = Literal["auto", "json_schema", "tools"]


class LLMRequest(BaseModel):
    """Everything one model call needs, as plain data (hashable into a cache key, safe to persist)."""

    model_config = ConfigDict(frozen=True)

    model: str
    messages: list[dict[str, str]]
    schema_: dict[str, Any]
    tools: list[dict[str, Any]]
    mode: OutputMode = "auto"
    step: int
    timeout_s: float = 60.0
    max_retries: int = 3
    backoff_s: float = 1.0


class LLMReply(BaseModel):
    """What came back: the raw text (or tool call), usage, latency. Parsing happens later, purely."""

    text: str
    tool_name: str | None = None
    model: str
    usage: Usage


def resolve_model(model: str | None = None) -> str:
    """The model string: an explicit parameter, then $AGENT_MODEL."""
    resolved = model or os.environ.get(MODEL_ENV, "").strip()
    if not resolved:
        raise ConfigurationError(
            f"no model configured: pass model=... or set {MODEL_ENV} to a litellm model string "
            "(e.g. openai/gpt-4o-mini, anthropic/claude-3-5-haiku-latest, ollama/llama3.1)"
        )
    return resolved


def build_request(agent: Agent, thread: Thread, model: str | None = None, **options: Any) -> LLMRequest:
    offered = agent.offered(thread)
    secrets = secret_values()
    messages = [{**m, "content": redact(m["content"], secrets)} for m in build_messages(agent, thread, offered)]
    tools = []
    for tool in offered:
        params = tool.model_json_schema()
        params["properties"] = {k: v for k, v in params["properties"].items() if k != "intent"}
        params["required"] = [r for r in params.get("required", []) if r != "intent"]
        tools.append(
            {
                "type": "function",
                "function": {"name": tool.intent_name(), "description": (tool.__doc__ or "").strip(), "parameters": params},
            }
        )
    mode = options.pop("mode", None) or os.environ.get(MODE_ENV, "auto")
    return LLMRequest(
        model=resolve_model(model),
        messages=messages,
        schema_=agent.response_schema(offered),
        tools=tools,
        mode=mode,
        step=model_steps(thread) + 1,
        **options,
    )


def call_model(request: LLMRequest) -> LLMReply:
    """The only function that talks to a provider. Transient failures are retried with backoff."""
    from agents import litellm_boundary

    litellm = litellm_boundary.load(request.model)
    kwargs = _output_kwargs(litellm, request)
    attempt = 0
    while True:
        started = time.perf_counter()
        try:
            response = litellm.completion(
                model=request.model, messages=request.messages, timeout=request.timeout_s, num_retries=0, **kwargs
            )
            break
        except litellm_boundary.transient_errors() as exc:
            attempt += 1
            if attempt > request.max_retries:
                raise ProviderError(
                    f"model {request.model!r} failed {attempt} times ({type(exc).__name__}: {_short(str(exc))}); "
                    f"check the provider's status or set {MODEL_ENV} to another model"
                ) from exc
            delay = request.backoff_s * 2 ** (attempt - 1)
            log.warning("model call failed (%s), retry %d/%d in %.1fs", type(exc).__name__, attempt, request.max_retries, delay)
            time.sleep(delay)
        except litellm_boundary.configuration_errors() as exc:
            raise ConfigurationError(
                f"model {request.model!r} refused the request ({type(exc).__name__}: {_short(str(exc))}); "
                f"check {MODEL_ENV} and the provider's API key variable"
            ) from exc
    latency_ms = (time.perf_counter() - started) * 1000
    return litellm_boundary.to_reply(litellm, response, request.model, latency_ms)


def _output_kwargs(litellm: Any, request: LLMRequest) -> dict[str, Any]:
    mode = request.mode
    if mode == "auto":
        from agents.litellm_boundary import supports_schema

        mode = "json_schema" if supports_schema(litellm, request.model) else "tools"
    if mode == "json_schema":
        return {"response_format": {"type": "json_schema", "json_schema": {"name": "tool_call", "schema": request.schema_}}}
    return {"tools": request.tools, "tool_choice": "required"}


def parse_reply(agent: Agent, thread: Thread, reply: LLMReply, step: int) -> ProposalEvent | ErrorEvent:
    """Validate the reply against the tools offered now; anything wrong becomes one short error event."""
    offered = {t.intent_name(): t for t in agent.offered(thread)}
    try:
        data = json.loads(reply.text) if reply.text.strip() else None
    except json.JSONDecodeError as exc:
        return ErrorEvent(kind="malformed_output", message=f"not valid JSON ({exc.msg} at char {exc.pos}): {_short(reply.text, 120)}")
    if reply.tool_name is not None:
        data = {"intent": reply.tool_name, **(data or {})} if isinstance(data, dict) or data is None else data
    if isinstance(data, dict) and isinstance(data.get("call"), dict):
        data = data["call"]
    if not isinstance(data, dict) or "intent" not in data:
        return ErrorEvent(kind="malformed_output", message=f'expected {{"call": {{"intent": ...}}}}, got: {_short(reply.text, 120)}')
    intent = data["intent"]
    if intent not in offered:
        return ErrorEvent(kind="unknown_intent", message=f"no tool {_short(str(intent), 60)!r} now; choose one of: {', '.join(offered)}")
    try:
        call = offered[intent].model_validate(data)
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(map(str, err['loc'])) or 'call'}: {err['msg']}" for err in exc.errors()[:5])
        return ErrorEvent(kind="invalid_arguments", message=f"{intent}: {problems}")
    args = call.arguments()
    return ProposalEvent(
        id=f"{agent.name}-{step}-{thread.digest()[:8]}",
        intent=intent,
        args=args,
        reason=call.reason,
        args_digest=args_digest(intent, args),
        model=reply.model,
        usage=reply.usage,
    )


def step(agent: Agent, thread: Thread, model: str | None = None, **options: Any) -> ProposalEvent | ErrorEvent:
    """Ask the model once for the next tool call."""
    request = build_request(agent, thread, model, **options)
    return parse_reply(agent, thread, call_model(request), request.step)


def _short(text: str, limit: int = 200) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 3] + "..."
