"""A tool class bound to its implementation: `bind(Deploy, deploy)`, where `deploy` takes a `Deploy`.

The binding is typed (`Binding[T]` holds a `Callable[[T, ToolContext], JsonValue]`), so a type checker holds each
implementation against the class it is bound to: `call.sha` needs no cast, and binding the rollback tool's function
to the deploy tool is an error before anything runs (tests/kit/test_binding.py runs mypy on both). A runner receives the
bindings with the agent and checks them before its first step (`check_bindings`): every tool that executes is bound
once, nothing else is.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Generic, TypeAlias, TypeVar

from pydantic import JsonValue

from prefect_micro_agents.errors import ConfigurationError
from prefect_micro_agents.tools import Agent, Tool

__all__ = ["EXECUTING", "Binding", "ToolContext", "ToolImpl", "bind", "check_bindings"]

T = TypeVar("T", bound=Tool)
EXECUTING = ("auto", "approve")  # the policies whose calls run an implementation


@dataclass(frozen=True)
class ToolContext:
    """What a tool implementation gets besides its call."""

    idempotency_key: str  # same key for the same approved call, however often it is retried
    thread_id: str
    proposal_id: str
    # True: an earlier attempt may have run this call; check whether its effect exists before acting again.
    # Decided in one place for every runner: prefect_micro_agents.loop (its module docstring states the rule).
    reconcile: bool = False


ToolImpl: TypeAlias = Callable[[T, ToolContext], JsonValue]


@dataclass(frozen=True)
class Binding(Generic[T]):
    """One tool class and the function that executes its calls."""

    tool: type[T]
    impl: ToolImpl[T]

    def parse(self, call: Mapping[str, Any]) -> T:
        """The call from its JSON form (what crosses a task boundary), as this binding's tool class."""
        return self.tool.model_validate(call)

    def run(self, call: Tool, ctx: ToolContext) -> JsonValue:
        if not isinstance(call, self.tool):
            raise TypeError(f"the implementation of {self.tool.__name__} got a {type(call).__name__} call")
        return self.impl(call, ctx)


def bind(tool: type[T], impl: ToolImpl[T]) -> Binding[T]:
    """`impl` executes calls of `tool` and receives them as `tool` instances (a type checker holds it to that)."""
    return Binding(tool, impl)


def check_bindings(agent: Agent, bindings: Iterable[Binding[Any]]) -> dict[type[Tool], Binding[Any]]:
    """The agent's bindings by tool class; anything wrong is one ConfigurationError before anything runs."""
    if isinstance(bindings, Mapping | str):
        raise ConfigurationError(f"agent {agent.name!r}: pass the tool implementations as bindings, "
                                 "e.g. [bind(DeployBackendToProd, deploy_backend)], not a mapping")
    found: dict[type[Tool], Binding[Any]] = {}
    for binding in bindings:
        if not isinstance(binding, Binding):
            raise ConfigurationError(f"agent {agent.name!r}: {binding!r} is not a binding; "
                                     "make one with bind(ToolClass, implementation)")
        tool = binding.tool
        if tool not in agent.tools:
            raise ConfigurationError(f"agent {agent.name!r} does not declare {tool.__name__}; its tools: "
                                     f"{', '.join(t.__name__ for t in agent.tools)}")
        if tool.policy not in EXECUTING:
            raise ConfigurationError(f"{tool.__name__} has policy {tool.policy!r}: its calls never execute, "
                                     "so it takes no implementation")
        if tool in found:
            raise ConfigurationError(f"agent {agent.name!r}: {tool.__name__} is bound twice")
        found[tool] = binding
    missing = [t.intent_name() for t in agent.tools if t.policy in EXECUTING and t not in found]
    if missing:
        raise ConfigurationError(f"agent {agent.name!r} has no implementation for: {', '.join(missing)}")
    return found
