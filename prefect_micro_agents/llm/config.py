"""Which model, where, in which output mode, and whether it can work: checked by `preflight` before anyone is asked.

Resolution: an explicit `model=` parameter, then $AGENT_MODEL (any litellm model string), then the embedded offline
model. Provider keys come from the environment only; $AGENT_API_BASE points any non-local model at a self-hosted
endpoint.
"""

from __future__ import annotations

import os

from prefect_micro_agents import local_model
from prefect_micro_agents.errors import ConfigurationError
from prefect_micro_agents.llm.data import OutputMode
from prefect_micro_agents.llm.provider import PROVIDERS_ENV, missing_keys, route

__all__ = [
    "API_BASE_ENV",
    "LOCAL_MODEL",
    "MODEL_ENV",
    "MODE_ENV",
    "fix_hint",
    "litellm_target",
    "output_mode",
    "preflight",
    "resolve_model",
]

MODEL_ENV = "AGENT_MODEL"
MODE_ENV = "AGENT_OUTPUT_MODE"
API_BASE_ENV = "AGENT_API_BASE"  # base URL for an OpenAI-compatible (or any self-hosted) endpoint
LOCAL_MODEL = local_model.LOCAL_MODEL
EXAMPLES = "openai/gpt-4o-mini, anthropic/claude-3-5-haiku-latest, ollama/llama3.1"
_MODES: dict[str, OutputMode] = {"auto": "auto", "json_schema": "json_schema", "tools": "tools"}


def resolve_model(model: str | None = None) -> str:
    """The model string: an explicit parameter, then $AGENT_MODEL, then the embedded offline model."""
    return (model or "").strip() or os.environ.get(MODEL_ENV, "").strip() or LOCAL_MODEL


def _setting(model: str | None) -> str:
    """Which setting chose the model, for error messages: the one the user has to change."""
    if (model or "").strip():
        return "the model parameter"
    return MODEL_ENV if os.environ.get(MODEL_ENV, "").strip() else f"{MODEL_ENV} (unset: the embedded local model)"


def output_mode(mode: str | None = None) -> OutputMode:
    """The output mode: an explicit `mode`, then $AGENT_OUTPUT_MODE, then auto; anything else names the setting."""
    chosen = (mode or "").strip() or os.environ.get(MODE_ENV, "").strip() or "auto"
    if chosen not in _MODES:
        where = "mode" if (mode or "").strip() else MODE_ENV
        raise ConfigurationError(f"{where}={chosen!r} is not an output mode; use one of: {', '.join(_MODES)}")
    return _MODES[chosen]


def local_mode(mode: OutputMode) -> OutputMode:
    """The embedded model answers through llama.cpp's JSON-schema grammar only."""
    if mode not in ("auto", "json_schema"):
        raise ConfigurationError(f"the embedded local model supports only json_schema output; unset {MODE_ENV}")
    return "json_schema"


def litellm_target(model: str) -> dict[str, str]:
    """litellm's model/endpoint arguments: the local model becomes an OpenAI-compatible endpoint on loopback (started
    on first use); any other model goes to $AGENT_API_BASE when it is set."""
    if local_model.is_local(model):
        return local_model.litellm_target(model)
    api_base = os.environ.get(API_BASE_ENV, "").strip()
    return {"model": model, "api_base": api_base} if api_base else {"model": model}


def fix_hint(model: str) -> str:
    """What to change when a model keeps failing."""
    if local_model.is_local(model) and os.environ.get(local_model.URL_ENV):
        return f"check the server at {local_model.URL_ENV} or set {MODEL_ENV} to another model"
    return f"check the provider's status or set {MODEL_ENV} to another model"


def preflight(model: str | None = None, timeout_s: float = 2.0) -> str:
    """Check the configured model before a flow suspends anyone; returns the resolved model string.

    Unknown model, missing provider key, unreachable endpoint, a bad provider hook: one ConfigurationError naming the
    setting to change. Cheap: no model call, no start of the local server; only a self-hosted endpoint gets a quick
    HTTP probe.
    """
    resolved, setting = resolve_model(model), _setting(model)
    if local_model.is_local(resolved):
        local_model.preflight(resolved, timeout_s)
        local_mode(output_mode())
        return resolved
    api_base = os.environ.get(API_BASE_ENV, "").strip() or None
    try:
        provider_name, default_base = route(resolved, api_base)
    except ConfigurationError:
        raise
    except Exception as exc:  # litellm raises its BadRequestError for model strings it cannot route
        raise ConfigurationError(
            f"unknown model {resolved!r}: litellm has no provider for it; set {setting} to "
            f"'<provider>/<model>' (e.g. {EXAMPLES}), or register a custom provider with {PROVIDERS_ENV}"
        ) from exc
    import httpx

    base = api_base or default_base
    missing = [key for key in missing_keys(resolved, api_base) if not (key.endswith("_API_BASE") and base)]
    if missing:
        hint = " (any non-empty value if the endpoint needs no key)" if api_base else ""
        raise ConfigurationError(
            f"model {resolved!r} needs {', '.join(missing)} in the environment{hint}; set it, "
            f"or set {setting} to another model"
        )
    if base and (api_base or httpx.URL(base).host in ("localhost", "127.0.0.1", "::1")):
        base_setting = API_BASE_ENV if api_base else f"{provider_name.upper()}_API_BASE"
        try:
            httpx.get(base, timeout=timeout_s)  # any HTTP answer will do: something is listening
        except httpx.HTTPError as exc:
            raise ConfigurationError(
                f"model endpoint {base} is not reachable ({type(exc).__name__}); start it, or set {base_setting} "
                f"to where it runs, or set {setting} to another model"
            ) from exc
    return resolved
