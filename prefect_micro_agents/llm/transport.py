"""Request -> reply: the only code that calls a provider. Transient failures are retried with backoff; a refusal
(key, permission, model name) is a ConfigurationError at once; a provider that keeps failing is one ProviderError.
"""

from __future__ import annotations

import logging
import time
from typing import Any

from prefect_micro_agents import local_model
from prefect_micro_agents.errors import ConfigurationError, ProviderError
import prefect_micro_agents.llm.provider as provider
from prefect_micro_agents.llm.config import MODEL_ENV, fix_hint, litellm_target, local_mode
from prefect_micro_agents.llm.data import LLMReply, LLMRequest, excerpt

__all__ = ["call_model", "output_kwargs"]

log = logging.getLogger(__name__)


def call_model(request: LLMRequest) -> LLMReply:
    """One model call for `request`, retried on transient provider errors (`max_retries`, doubling `backoff_s`)."""
    transient, refused = provider.transient_errors(), provider.configuration_errors()  # loads litellm, runs hooks
    target = litellm_target(request.model)  # for the local model: starts (or finds) its server
    kwargs = output_kwargs(request)
    attempt = 0
    while True:
        started = time.perf_counter()
        try:
            response = provider.complete(request.messages, request.timeout_s, **target, **kwargs)
            break
        except transient as exc:
            attempt += 1
            if attempt > request.max_retries:
                raise ProviderError(
                    f"model {request.model!r} failed {attempt} times ({type(exc).__name__}: {excerpt(str(exc))}); "
                    f"{fix_hint(request.model)}"
                ) from exc
            delay = request.backoff_s * 2 ** (attempt - 1)
            log.warning("model call failed (%s), retry %d/%d in %.1fs", type(exc).__name__, attempt,
                        request.max_retries, delay)
            time.sleep(delay)
        except refused as exc:
            raise ConfigurationError(
                f"model {request.model!r} refused the request ({type(exc).__name__}: {excerpt(str(exc))}); "
                f"check {MODEL_ENV} and the provider's API key variable"
            ) from exc
    return provider.to_reply(response, request.model, (time.perf_counter() - started) * 1000)


def output_kwargs(request: LLMRequest) -> dict[str, Any]:
    """How the answer is constrained to the tool union: a JSON schema as response_format, or required tool calls."""
    mode = request.mode
    schema = request.schema_
    if local_model.is_local(request.model):
        mode = local_mode(mode)
        # llama.cpp's llguidance takes $defs/$ref/anyOf as they are; compact JSON, so no token goes to whitespace.
        schema = {**schema, "x-guidance": {"whitespace_flexible": False}}
    elif mode == "auto":
        mode = "json_schema" if provider.supports_schema(request.model) else "tools"
    if mode == "json_schema":
        return {"response_format": {"type": "json_schema", "json_schema": {"name": "tool_call", "schema": schema}}}
    return {"tools": request.tools, "tool_choice": "required"}
