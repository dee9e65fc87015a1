"""A scripted model behind litellm's own custom-provider boundary, for tests and offline evals.

Model string `scripted/<directory>`. Replies are queued as files in the directory and every request litellm passes
to the provider is recorded there, so the script works across processes (a Prefect runner resuming a flow run in a
new process consumes the same queue). Nothing of ours is patched: the code under test calls litellm as usual.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from litellm.types.utils import ModelResponse

__all__ = ["ScriptExhausted", "ScriptedModel", "register"]

_ERRORS = ("RateLimitError", "Timeout", "APIConnectionError", "ServiceUnavailableError", "AuthenticationError")


class ScriptExhausted(Exception):
    pass


class ScriptedModel:
    """Queue replies with `enqueue`; read what the model was sent with `requests()`."""

    def __init__(self, directory: str | os.PathLike[str]) -> None:
        self.directory = Path(directory).resolve()
        for sub in ("queue", "used", "requests"):
            (self.directory / sub).mkdir(parents=True, exist_ok=True)

    @property
    def model(self) -> str:
        return f"scripted/{self.directory}"

    def enqueue(self, *replies: str | dict[str, Any], prompt_tokens: int = 100, completion_tokens: int = 20) -> None:
        """Each reply is raw text (may be malformed on purpose) or a dict sent as JSON."""
        for reply in replies:
            text = reply if isinstance(reply, str) else json.dumps(reply)
            self._push({"text": text, "prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens})

    def enqueue_error(self, error: str, message: str = "scripted provider failure") -> None:
        if error not in _ERRORS:
            raise ValueError(f"error must be one of {_ERRORS}")
        self._push({"error": error, "message": message})

    def _push(self, item: dict[str, Any]) -> None:
        n = len(list((self.directory / "queue").iterdir())) + len(list((self.directory / "used").iterdir()))
        path = self.directory / "queue" / f"{n:06d}.json"
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(item))
        os.replace(tmp, path)

    def pop(self) -> dict[str, Any]:
        for path in sorted((self.directory / "queue").glob("*.json")):
            try:
                os.rename(path, self.directory / "used" / path.name)  # atomic: one consumer wins
            except FileNotFoundError:
                continue
            item = json.loads((self.directory / "used" / path.name).read_text())
            if not isinstance(item, dict):
                raise TypeError(f"{path.name} in {self.directory} is not a queued reply (written by hand?)")
            return item
        raise ScriptExhausted(f"scripted model at {self.directory} has no reply queued")

    def record(self, request: dict[str, Any]) -> None:
        name = f"{time.time_ns()}-{os.getpid()}.json"
        (self.directory / "requests" / name).write_text(json.dumps(request, default=str))

    def requests(self) -> list[dict[str, Any]]:
        files = sorted((self.directory / "requests").glob("*.json"), key=lambda p: int(p.name.split("-")[0]))
        return [json.loads(p.read_text()) for p in files]

    @property
    def pending(self) -> int:
        return len(list((self.directory / "queue").glob("*.json")))


def _response(item: dict[str, Any], optional_params: dict[str, Any], model: str) -> ModelResponse:
    from litellm.types.utils import ChatCompletionMessageToolCall, Choices, Function, Message, ModelResponse, Usage

    text = item["text"]
    message = Message(content=text, role="assistant")
    if optional_params.get("tools"):
        call = _as_call(text)
        if call is not None:
            intent = call.pop("intent")
            function = Function(name=str(intent), arguments=json.dumps(call))
            message = Message(
                content=None,
                role="assistant",
                tool_calls=[ChatCompletionMessageToolCall(id="call_0", type="function", function=function)],
            )
    usage = Usage(
        prompt_tokens=item["prompt_tokens"],
        completion_tokens=item["completion_tokens"],
        total_tokens=item["prompt_tokens"] + item["completion_tokens"],
    )
    return ModelResponse(choices=[Choices(index=0, finish_reason="stop", message=message)], usage=usage, model=model)


def _as_call(text: str) -> dict[str, Any] | None:
    try:
        data = json.loads(text)
    except json.JSONDecodeError:
        return None
    if isinstance(data, dict) and isinstance(data.get("call"), dict):
        data = data["call"]
    return dict(data) if isinstance(data, dict) and "intent" in data else None


def register() -> None:
    """A provider hook (prefect_micro_agents.llm.provider): adds the `scripted` provider to litellm's custom-provider
    map, once per process. Name it wherever model calls happen, for every process:
    `AGENT_LITELLM_PROVIDERS=prefect_micro_agents.testing:register` (runners, workers and flow runs inherit it)."""
    import litellm
    from litellm.llms.custom_llm import CustomLLM

    if any(p.get("provider") == "scripted" for p in litellm.custom_provider_map):
        return

    class _Handler(CustomLLM):
        def completion(self, model: str, messages: list[Any], *args: Any, **kwargs: Any) -> ModelResponse:
            # litellm passes its arguments by keyword (CustomLLM.completion lists them; optional_params is the 8th)
            optional_params = kwargs.get("optional_params") or (args[7] if len(args) > 7 else {})
            api_base = kwargs.get("api_base", args[0] if args else None)
            script = ScriptedModel(model)
            script.record({"messages": messages, "optional_params": optional_params, "api_base": api_base})
            try:
                item = script.pop()
            except ScriptExhausted as exc:
                raise _error("BadRequestError", str(exc), model) from exc
            if "error" in item:
                raise _error(item["error"], item["message"], model)
            return _response(item, optional_params, model)

    litellm.custom_provider_map.append({"provider": "scripted", "custom_handler": _Handler()})


def _error(name: str, message: str, model: str) -> Exception:
    """litellm's own exception for a queued failure, as a real provider's would be raised."""
    from litellm import exceptions

    match name:
        case "RateLimitError":
            return exceptions.RateLimitError(message=message, llm_provider="scripted", model=model)
        case "Timeout":
            return exceptions.Timeout(message=message, llm_provider="scripted", model=model)
        case "APIConnectionError":
            return exceptions.APIConnectionError(message=message, llm_provider="scripted", model=model)
        case "ServiceUnavailableError":
            return exceptions.ServiceUnavailableError(message=message, llm_provider="scripted", model=model)
        case "AuthenticationError":
            return exceptions.AuthenticationError(message=message, llm_provider="scripted", model=model)
        case "BadRequestError":
            return exceptions.BadRequestError(message=message, llm_provider="scripted", model=model)
    raise ValueError(f"no scripted error {name!r}; one of {_ERRORS}")
