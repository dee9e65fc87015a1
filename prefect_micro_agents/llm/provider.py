"""litellm, and the only module that imports it: loaded on first use, custom providers registered before it is used.

Custom providers (litellm's `custom_provider_map`) come from hooks: functions without arguments that import litellm
and append their entries to `litellm.custom_provider_map` (this module then tells litellm's router about them).
`$AGENT_LITELLM_PROVIDERS` names them (`package.module:function`, comma-separated), so a process the kit did not
start (a Prefect worker's flow run) registers the same providers as the one that configured it; `use_provider(hook)`
does the same from code. Each hook runs once per process, before the first litellm call.
"""

from __future__ import annotations

import importlib
import json
import os
import threading
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, cast

from prefect_micro_agents.errors import ConfigurationError
from prefect_micro_agents.llm.data import LLMReply
from prefect_micro_agents.thread import Usage

if TYPE_CHECKING:
    from litellm.types.utils import ModelResponse

__all__ = [
    "PROVIDERS_ENV",
    "ProviderHook",
    "complete",
    "configuration_errors",
    "missing_keys",
    "route",
    "supports_schema",
    "to_reply",
    "transient_errors",
    "use_provider",
]

PROVIDERS_ENV = "AGENT_LITELLM_PROVIDERS"
ProviderHook = Callable[[], object]

_lock = threading.RLock()  # reentrant: a hook may call use_provider
_in_code: dict[str, ProviderHook] = {}  # use_provider(), by "module:qualname"
_done: set[str] = set()  # hooks that ran in this process


def use_provider(hook: ProviderHook) -> None:
    """Register custom providers from code: `hook()` runs once, before this process's next litellm call."""
    with _lock:
        name = f"{getattr(hook, '__module__', '?')}:{getattr(hook, '__qualname__', repr(hook))}"  # partials have none
        _in_code.setdefault(name, hook)


def _load() -> None:
    """Import litellm quietly and offline (no cost-map download, no telemetry), then run the hooks not yet run."""
    os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
    import litellm
    import litellm.utils

    litellm.telemetry = False
    litellm.suppress_debug_info = True
    with _lock:
        pending = [(name, hook) for name, hook in [*_named_hooks(), *_in_code.items()] if name not in _done]
        for name, hook in pending:
            try:
                hook()
            except Exception as exc:  # a hook is configuration: its failure is a setting to fix, not a retry
                raise ConfigurationError(
                    f"{_origin(name)}: the provider hook {name} failed ({type(exc).__name__}: {exc})"
                ) from exc
            _done.add(name)
        if pending:  # tell litellm's router (preflight) about the new providers; completion() does so itself
            setup = cast("Callable[[], None]", litellm.utils.custom_llm_setup)  # unannotated in litellm
            setup()


def _origin(name: str) -> str:
    return "use_provider" if name in _in_code else PROVIDERS_ENV


def _named_hooks() -> list[tuple[str, ProviderHook]]:
    """The hooks $AGENT_LITELLM_PROVIDERS names; a malformed entry or a name that does not resolve is an error."""
    hooks = []
    for entry in os.environ.get(PROVIDERS_ENV, "").split(","):
        name = entry.strip()
        if not name or name in _done:
            continue
        module_name, sep, attribute = name.partition(":")
        if not sep or not module_name or not attribute:
            raise ConfigurationError(
                f"{PROVIDERS_ENV}: {name!r} is not 'package.module:function'; fix or unset {PROVIDERS_ENV}"
            )
        try:
            module = importlib.import_module(module_name)
        except ImportError as exc:
            raise ConfigurationError(
                f"{PROVIDERS_ENV}: cannot import {module_name!r} for {name!r} ({exc}); install it, or fix "
                f"or unset {PROVIDERS_ENV}"
            ) from exc
        hook = getattr(module, attribute, None)
        if not callable(hook):
            raise ConfigurationError(
                f"{PROVIDERS_ENV}: {module_name!r} has no function {attribute!r} (for {name!r}); fix or unset "
                f"{PROVIDERS_ENV}"
            )
        hooks.append((name, hook))
    return hooks


def route(model: str, api_base: str | None) -> tuple[str, str | None]:
    """litellm's provider for a model string and that provider's default base URL; raises for one it cannot route."""
    _load()
    import litellm

    _, provider, _, default_base = litellm.get_llm_provider(model, api_base=api_base)
    return provider, default_base


def missing_keys(model: str, api_base: str | None) -> list[str]:
    """The environment variables litellm says the provider needs and that are not set."""
    _load()
    import litellm

    found = litellm.validate_environment(model=model, api_base=api_base).get("missing_keys", [])
    return [str(key) for key in found]


def supports_schema(model: str) -> bool:
    _load()
    import litellm

    try:
        return bool(litellm.supports_response_schema(model=model))
    except Exception:  # unknown model strings: fall back to tool calling, which nearly every provider has
        return False


def transient_errors() -> tuple[type[Exception], ...]:
    """Errors worth a retry: the provider is slow, busy or briefly away."""
    _load()
    from litellm import exceptions

    return (
        exceptions.Timeout,
        exceptions.RateLimitError,
        exceptions.APIConnectionError,
        exceptions.ServiceUnavailableError,
        exceptions.InternalServerError,
    )


def configuration_errors() -> tuple[type[Exception], ...]:
    """Errors no retry fixes: a key, a permission, a model name or a request the provider refuses."""
    _load()
    from litellm import exceptions

    return (
        exceptions.AuthenticationError,
        exceptions.PermissionDeniedError,
        exceptions.NotFoundError,
        exceptions.BadRequestError,
    )


def complete(messages: list[dict[str, str]], timeout_s: float, **kwargs: Any) -> ModelResponse:
    """One litellm completion, no retries of litellm's own (the transport decides); `kwargs`: model, endpoint,
    output format."""
    _load()
    import litellm
    from litellm.types.utils import ModelResponse

    response = litellm.completion(messages=messages, timeout=timeout_s, num_retries=0, **kwargs)
    if not isinstance(response, ModelResponse):  # only a stream=True call returns anything else
        raise TypeError(f"litellm returned {type(response).__name__}, not a ModelResponse")
    return response


def to_reply(response: ModelResponse, model: str, latency_ms: float) -> LLMReply:
    """A completion as plain data: the text or the first tool call's arguments, tokens, cost if litellm knows it."""
    _load()
    import litellm
    from litellm.types.utils import ChatCompletionMessageToolCall, Choices

    choice = response.choices[0]
    if not isinstance(choice, Choices):  # StreamingChoices: only in streamed responses
        raise TypeError(f"litellm returned {type(choice).__name__}, not Choices")
    message = choice.message
    first_call = message.tool_calls[0] if message.tool_calls else None
    tool_name: str | None
    if isinstance(first_call, ChatCompletionMessageToolCall):  # a function call (we offer no other kind of tool)
        text, tool_name = first_call.function.arguments or "", first_call.function.name
    else:
        text, tool_name = message.content or "", None
    usage = getattr(response, "usage", None)  # set by every provider we call, but not part of the declared type
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
