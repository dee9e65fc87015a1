"""The plain data each side of a model call: what is sent (`LLMRequest`) and what came back (`LLMReply`).

Plain data so a request hashes into a cache key and a reply persists as a Prefect task result; nothing here
imports litellm.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict

from prefect_micro_agents.thread import Usage

__all__ = ["LLMReply", "LLMRequest", "OutputMode", "excerpt"]

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


def excerpt(text: str, limit: int = 200) -> str:
    """One line of at most `limit` characters: how error messages quote a reply or a provider's message."""
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 3] + "..."
