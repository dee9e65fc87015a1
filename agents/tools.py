"""Tools are typed pydantic models tagged by `intent`; each class declares its policy (factors 1, 4, 7)."""

from __future__ import annotations

import typing
from dataclasses import dataclass
from functools import cached_property, lru_cache
from typing import TYPE_CHECKING, Annotated, Any, ClassVar, Literal, Union

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter

from agents.errors import ConfigurationError
from agents.thread import digest_of

if TYPE_CHECKING:
    from agents.thread import Thread

__all__ = ["Agent", "Policy", "Tool", "args_digest"]

Policy = Literal["auto", "approve", "human", "terminal"]
POLICIES: tuple[str, ...] = typing.get_args(Policy)


class Tool(BaseModel):
    """Base of every tool. Subclasses set `intent: Literal["name"]`, `policy`, and described, bounded fields."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    policy: ClassVar[Policy] = "auto"

    reason: str = Field(
        default="", max_length=300, description="One short sentence: why this call is the right next step."
    )

    @classmethod
    def intent_name(cls) -> str:
        annotation = cls.model_fields["intent"].annotation if "intent" in cls.model_fields else None
        values = typing.get_args(annotation)
        if typing.get_origin(annotation) is not Literal or len(values) != 1:
            raise ConfigurationError(f"{cls.__name__} must declare `intent: Literal['<name>']` with one name")
        return str(values[0])

    @classmethod
    def available(cls, thread: Thread) -> bool:
        """Whether to offer this tool for the next step (factor 8: narrow the action space in code)."""
        return True

    def arguments(self) -> dict[str, Any]:
        """The arguments that execute: everything but the tag and the model's stated reason."""
        return self.model_dump(mode="json", exclude={"intent", "reason"})


def args_digest(intent: str, args: dict[str, Any]) -> str:
    return digest_of({"intent": intent, "args": args})


@dataclass(frozen=True)
class Agent:
    """A micro-agent is a declaration: a name, its tools, its prompt, its limits. The loop lives elsewhere."""

    name: str
    tools: tuple[type[Tool], ...]
    prompt: str
    max_steps: int = 10
    max_consecutive_errors: int = 3
    description: str = ""

    def __post_init__(self) -> None:
        if not self.tools:
            raise ConfigurationError(f"agent {self.name!r} declares no tools")
        intents = [t.intent_name() for t in self.tools]
        if len(set(intents)) != len(intents):
            raise ConfigurationError(f"agent {self.name!r} declares the same intent twice: {intents}")
        for tool in self.tools:
            if tool.policy not in POLICIES:
                raise ConfigurationError(f"{tool.__name__}.policy must be one of {POLICIES}, not {tool.policy!r}")
        if not any(t.policy == "terminal" for t in self.tools):
            raise ConfigurationError(f"agent {self.name!r} needs a tool with policy 'terminal' to be able to finish")
        if self.max_steps < 1 or self.max_consecutive_errors < 1:
            raise ConfigurationError(f"agent {self.name!r}: max_steps and max_consecutive_errors must be >= 1")

    @cached_property
    def by_intent(self) -> dict[str, type[Tool]]:
        return {t.intent_name(): t for t in self.tools}

    def tool(self, intent: str) -> type[Tool] | None:
        return self.by_intent.get(intent)

    def offered(self, thread: Thread) -> tuple[type[Tool], ...]:
        """The tools available for the next step; terminal tools are always offered so the agent can stop."""
        return tuple(t for t in self.tools if t.policy == "terminal" or t.available(thread))

    def response_schema(self, tools: tuple[type[Tool], ...]) -> dict[str, Any]:
        """JSON schema of one call to any of `tools`, wrapped in an object (providers want an object root)."""
        return _response_schema(tools)


@lru_cache(maxsize=64)
def _response_schema(tools: tuple[type[Tool], ...]) -> dict[str, Any]:
    schema = _union_adapter(tools).json_schema()
    defs = schema.pop("$defs", {})
    variants = schema.get("oneOf") or schema.get("anyOf") or [schema]
    return {
        "type": "object",
        "properties": {"call": {"anyOf": variants}},
        "required": ["call"],
        "additionalProperties": False,
        "$defs": defs,
    }


@lru_cache(maxsize=64)
def _union_adapter(tools: tuple[type[Tool], ...]) -> TypeAdapter[Any]:
    union: Any = tools[0] if len(tools) == 1 else Annotated[Union[tools], Field(discriminator="intent")]  # noqa: UP007
    return TypeAdapter(union)
