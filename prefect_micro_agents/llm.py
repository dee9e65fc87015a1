"""One LLM step: thread -> plain-data request -> litellm -> validated tool call or one compact error event.

Split in three so an orchestrator can cache the middle part: `build_request` and `parse_reply` are pure and never
import litellm (its import costs seconds); only `call_model` talks to a provider, and `preflight` checks the
configuration before a flow asks any human anything.
"""

from __future__ import annotations

import json
import logging
import os
import time
from functools import lru_cache
from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel, ConfigDict, ValidationError

from prefect_micro_agents import local_model
from prefect_micro_agents.errors import ConfigurationError, ProviderError
from prefect_micro_agents.prompts import build_messages
from prefect_micro_agents.reducer import model_steps
from prefect_micro_agents.secrets import redact, secret_values
from prefect_micro_agents.thread import ErrorEvent, ProposalEvent, Usage
from prefect_micro_agents.tools import args_digest

if TYPE_CHECKING:
    from prefect_micro_agents.thread import Thread
    from prefect_micro_agents.tools import Agent, Tool

__all__ = [
    "API_BASE_ENV",
    "LOCAL_MODEL",
    "MODEL_ENV",
    "LLMReply",
    "LLMRequest",
    "build_request",
    "call_model",
    "parse_reply",
    "preflight",
    "resolve_model",
    "step",
]

log = logging.getLogger(__name__)

MODEL_ENV = "AGENT_MODEL"
MODE_ENV = "AGENT_OUTPUT_MODE"
API_BASE_ENV = "AGENT_API_BASE"  # base URL for an OpenAI-compatible (or any self-hosted) endpoint
LOCAL_MODEL = local_model.LOCAL_MODEL
EXAMPLES = "openai/gpt-4o-mini, anthropic/claude-3-5-haiku-latest, ollama/llama3.1"
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
    """The model string: an explicit parameter, then $AGENT_MODEL, then the embedded offline model."""
    return (model or "").strip() or os.environ.get(MODEL_ENV, "").strip() or LOCAL_MODEL


def _setting(model: str | None) -> str:
    """Which setting chose the model, for error messages: the one the user has to change."""
    if (model or "").strip():
        return "the model parameter"
    return MODEL_ENV if os.environ.get(MODEL_ENV, "").strip() else f"{MODEL_ENV} (unset: the embedded local model)"


def preflight(model: str | None = None, timeout_s: float = 2.0) -> str:
    """Check the configured model before a flow suspends anyone; returns the resolved model string.

    Unknown model, missing provider key, unreachable endpoint: one ConfigurationError naming the setting to change.
    Cheap: no model call, no start of the local server; only a self-hosted endpoint gets a quick HTTP probe.
    """
    resolved, setting = resolve_model(model), _setting(model)
    if local_model.is_local(resolved):
        local_model.preflight(resolved, timeout_s)
        _local_mode(os.environ.get(MODE_ENV, "auto"))
        return resolved
    if resolved.startswith("scripted/"):
        return resolved
    from prefect_micro_agents import litellm_boundary

    litellm = litellm_boundary.load(resolved)
    api_base = os.environ.get(API_BASE_ENV, "").strip() or None
    try:
        _, provider, _, default_base = litellm.get_llm_provider(resolved, api_base=api_base)
    except Exception as exc:  # litellm raises its BadRequestError for model strings it cannot route
        raise ConfigurationError(
            f"unknown model {resolved!r}: litellm has no provider for it; set {setting} to "
            f"'<provider>/<model>' (e.g. {EXAMPLES})"
        ) from exc
    import httpx

    base = api_base or default_base
    missing = [
        key for key in litellm.validate_environment(model=resolved, api_base=api_base).get("missing_keys", [])
        if not (key.endswith("_API_BASE") and base)
    ]
    if missing:
        hint = " (any non-empty value if the endpoint needs no key)" if api_base else ""
        raise ConfigurationError(
            f"model {resolved!r} needs {', '.join(missing)} in the environment{hint}; set it, "
            f"or set {setting} to another model"
        )
    if api_base or (base and httpx.URL(base).host in ("localhost", "127.0.0.1", "::1")):
        base_setting = API_BASE_ENV if api_base else f"{provider.upper()}_API_BASE"
        try:
            httpx.get(base, timeout=timeout_s)  # any HTTP answer will do: something is listening
        except httpx.HTTPError as exc:
            raise ConfigurationError(
                f"model endpoint {base} is not reachable ({type(exc).__name__}); start it, or set {base_setting} "
                f"to where it runs, or set {setting} to another model"
            ) from exc
    return resolved


def build_request(agent: Agent, thread: Thread, model: str | None = None, **options: Any) -> LLMRequest:
    offered = agent.offered(thread)
    secrets = secret_values()
    messages = [{**m, "content": redact(m["content"], secrets)} for m in build_messages(agent, thread, offered)]
    tools = _function_specs(offered)
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


@lru_cache(maxsize=64)
def _function_specs(offered: tuple[type[Tool], ...]) -> list[dict[str, Any]]:
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


def call_model(request: LLMRequest) -> LLMReply:
    """The only function that talks to a provider. Transient failures are retried with backoff."""
    from prefect_micro_agents import litellm_boundary

    target = _target(request.model)  # for the local model: starts (or finds) its server
    litellm = litellm_boundary.load(target["model"])
    kwargs = _output_kwargs(litellm, request)
    attempt = 0
    while True:
        started = time.perf_counter()
        try:
            response = litellm.completion(
                messages=request.messages, timeout=request.timeout_s, num_retries=0, **target, **kwargs
            )
            break
        except litellm_boundary.transient_errors() as exc:
            attempt += 1
            if attempt > request.max_retries:
                raise ProviderError(
                    f"model {request.model!r} failed {attempt} times ({type(exc).__name__}: {_short(str(exc))}); "
                    f"{_fix_hint(request.model)}"
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


def _target(model: str) -> dict[str, str]:
    """litellm's model/endpoint arguments: the local model becomes an OpenAI-compatible endpoint on loopback."""
    if local_model.is_local(model):
        return local_model.litellm_target(model)
    api_base = os.environ.get(API_BASE_ENV, "").strip()
    return {"model": model, "api_base": api_base} if api_base and not model.startswith("scripted/") else {"model": model}


def _fix_hint(model: str) -> str:
    if local_model.is_local(model) and os.environ.get(local_model.URL_ENV):
        return f"check the server at {local_model.URL_ENV} or set {MODEL_ENV} to another model"
    return f"check the provider's status or set {MODEL_ENV} to another model"


def _local_mode(mode: str) -> str:
    if mode not in ("auto", "json_schema"):
        raise ConfigurationError(f"the embedded local model supports only json_schema output; unset {MODE_ENV}")
    return "json_schema"


def _output_kwargs(litellm: Any, request: LLMRequest) -> dict[str, Any]:
    mode = request.mode
    schema = request.schema_
    if local_model.is_local(request.model):
        mode = _local_mode(mode)
        # llama.cpp's llguidance takes $defs/$ref/anyOf as they are; compact JSON, so no token goes to whitespace.
        schema = {**schema, "x-guidance": {"whitespace_flexible": False}}
    elif mode == "auto":
        from prefect_micro_agents.litellm_boundary import supports_schema

        mode = "json_schema" if supports_schema(litellm, request.model) else "tools"
    if mode == "json_schema":
        return {"response_format": {"type": "json_schema", "json_schema": {"name": "tool_call", "schema": schema}}}
    return {"tools": request.tools, "tool_choice": "required"}


def parse_reply(agent: Agent, thread: Thread, reply: LLMReply, step: int) -> ProposalEvent | ErrorEvent:
    """Validate the reply against what is offered now (tools, and the call a human just rejected is not); anything
    wrong becomes one short error event."""
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
    if (why := agent.refusal(thread, intent, args)) is not None:
        return ErrorEvent(kind="invalid_arguments", message=f"{intent}: {why}")
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
