"""Eval suites: recorded thread prefixes, each labelled with what a good agent does next (factor 2 needs tests).

A suite file (JSON, or YAML with a .yaml/.yml suffix) is `{"version": 1, "description": ..., "agents": {...},
"cases": [...]}`. `agents` names the agents its cases use: `{"deploy": "agents.deploybot:DEPLOY_AGENT"}` (an importable
`package.module:AGENT`); a case's `agent` is one of those names or a `package.module:AGENT` itself. A case is `{"id", "agent", "thread", "expect", "golden"?, "description"?, "tags"?, "source"?}`. `thread` is the
project's own Thread JSON, cut where the agent is asked for its next step; `expect` says which steps pass:
`intent` (one name or a list of acceptable names) with optional `args` checks, and/or `not_intent` (names that must
not be chosen) and `not_call` (calls that must not be made, e.g. one a human just rejected). An argument check has
exactly one key: `equals`, `commit` (same commit, either side abbreviated), `prefix`, `contains` (case-insensitive)
or `one_of`. `golden` is a call a correct agent makes here; the scripted "golden" run replies with it.
"""

from __future__ import annotations

import importlib
import json
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel, ConfigDict, Field, JsonValue, PrivateAttr, ValidationError, field_validator, model_serializer,
    model_validator,
)

from prefect_micro_agents.errors import ConfigurationError
from prefect_micro_agents.reducer import AskModel, next_action
from prefect_micro_agents.thread import Thread
from prefect_micro_agents.tools import Agent

__all__ = ["ArgCheck", "CallPattern", "Case", "Expect", "Suite", "load_suite", "resolve_agent",
           "save_suite"]

AGENT_REF = r"^[A-Za-z_][\w.]*:[A-Za-z_][\w.]*$"
SHA_PATTERN = r"^[0-9a-f]{7,40}$"
CHECKS = ("equals", "commit", "prefix", "contains", "one_of")


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ArgCheck(_Model):
    """Exactly one test of one argument's value; `commit` matches 9f8e7d6c5b4a against the full 40-char SHA."""

    equals: JsonValue = None
    commit: str | None = Field(default=None, pattern=SHA_PATTERN)
    prefix: str | None = Field(default=None, min_length=1)
    contains: str | None = Field(default=None, min_length=1)
    one_of: list[JsonValue] | None = Field(default=None, min_length=1)

    @model_validator(mode="after")
    def _exactly_one(self) -> ArgCheck:
        if len(self.model_fields_set) != 1:
            raise ValueError(f"an argument check has exactly one of {', '.join(CHECKS)}; got {sorted(self.model_fields_set) or 'none'}")
        return self

    @property
    def kind(self) -> str:
        return next(iter(self.model_fields_set))

    @property
    def value(self) -> Any:
        return getattr(self, self.kind)

    @model_serializer
    def _as_one_key(self) -> dict[str, Any]:
        return {self.kind: self.value}


class CallPattern(_Model):
    """A call the next step must not be: this intent with arguments passing every check (no checks: any args)."""

    intent: str
    args: dict[str, ArgCheck] = {}


class Expect(_Model):
    intent: tuple[str, ...] | None = None  # any of these; a single name is accepted too
    args: dict[str, ArgCheck] = {}
    not_intent: tuple[str, ...] = ()
    not_call: tuple[CallPattern, ...] = ()

    @field_validator("intent", "not_intent", mode="before")
    @classmethod
    def _one_or_many(cls, value: Any) -> Any:
        return (value,) if isinstance(value, str) else value

    @model_validator(mode="after")
    def _says_something(self) -> Expect:
        if self.intent is None and not self.not_intent and not self.not_call:
            raise ValueError("expect needs `intent`, `not_intent` or `not_call`")
        if self.args and self.intent is None:
            raise ValueError("`args` checks need an `intent`")
        return self

    @model_serializer(mode="wrap")
    def _lean(self, handler: Any) -> dict[str, Any]:
        data = {k: v for k, v in handler(self).items() if v not in (None, [], {}, ())}
        if isinstance(data.get("intent"), list | tuple) and len(data["intent"]) == 1:
            data["intent"] = data["intent"][0]
        return data

    def intents(self) -> set[str]:
        return {*(self.intent or ()), *self.not_intent, *(c.intent for c in self.not_call)}


class Case(_Model):
    id: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]*$", max_length=120)
    agent: str = Field(min_length=1)
    description: str = ""
    tags: tuple[str, ...] = ()
    thread: Thread
    expect: Expect
    golden: dict[str, JsonValue] | None = None  # {"intent": ..., ...fields}: what the scripted golden run replies
    source: dict[str, JsonValue] = {}  # provenance of exported cases: run id, proposal, decision
    _agent_ref: str | None = PrivateAttr(default=None)  # set by load_suite from the suite's `agents`

    @property
    def agent_ref(self) -> str:
        """Where the agent is: `package.module:AGENT` (the suite's name for it resolved), for `resolve_agent`."""
        return self._agent_ref or self.agent

    def with_agent_ref(self, aliases: dict[str, str]) -> Case:
        self._agent_ref = aliases.get(self.agent, self.agent)
        return self


class Suite(_Model):
    version: Literal[1] = 1
    description: str = ""
    agents: dict[str, Annotated[str, Field(pattern=AGENT_REF)]] = {}
    cases: tuple[Case, ...] = ()


def resolve_agent(ref: str) -> Agent:
    """The `Agent` at `package.module:AGENT` (a case's `agent_ref`); imported as Python imports it (from the checkout,
    run `python -m ...` there)."""
    module, _, attr = ref.partition(":")
    try:
        agent = getattr(importlib.import_module(module), attr) if module and attr else None
    except (ImportError, AttributeError) as exc:
        raise ConfigurationError(f"agent {ref!r}: cannot import it ({type(exc).__name__}: {exc})") from exc
    if not isinstance(agent, Agent):
        raise ConfigurationError(f"unknown agent {ref!r}: name it in the suite's `agents` map "
                                 f"(\"deploy\": \"package.module:AGENT\") or write 'package.module:AGENT'")
    return agent


def _read(path: Path) -> Any:
    try:
        text = path.read_text()
    except OSError as exc:
        raise ConfigurationError(f"{path}: cannot read the suite ({exc.strerror})") from exc
    if path.suffix in (".yaml", ".yml"):
        import yaml

        try:
            return yaml.safe_load(text)
        except yaml.YAMLError as exc:
            raise ConfigurationError(f"{path}: not valid YAML: {exc}") from exc
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise ConfigurationError(f"{path}: not valid JSON: {exc}") from exc


def _golden_problems(agent: Agent, golden: dict[str, Any]) -> list[str]:
    tool = agent.tool(str(golden.get("intent", "")))
    if tool is None:
        return [f"golden.intent: {golden.get('intent')!r} is not a tool of agent {agent.name!r}"]
    try:
        tool.model_validate(golden)
    except ValidationError as exc:
        return [f"golden.{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors()[:3]]
    return []


def _problems(case: Case) -> list[str]:
    """What pydantic cannot see: the names must be the agent's tools, and the agent must be asked next."""
    try:
        agent = resolve_agent(case.agent_ref)
    except ConfigurationError as exc:
        return [str(exc)]
    found = [f"intent {i!r} is not a tool of agent {agent.name!r} ({', '.join(agent.by_intent)})"
             for i in sorted(case.expect.intents()) if i not in agent.by_intent]
    if case.golden is not None:
        found += _golden_problems(agent, case.golden)
    for intent in case.expect.intent or ():
        tool = agent.tool(intent)
        found += [f"expect.args.{a}: {intent} has no argument {a!r}" for a in case.expect.args
                  if tool is not None and a not in tool.model_fields]
    action = next_action(agent, case.thread)
    if not isinstance(action, AskModel):
        found.append(f"the thread prefix must end where the agent is asked for a step; here the next action is "
                     f"{type(action).__name__} (cut the thread before the proposal, or after its decision)")
    return found


def load_suite(path: str | Path) -> Suite:
    """Validate a suite file; every problem is reported with the file and the case id (or position)."""
    path = Path(path)
    raw = _read(path)
    if not isinstance(raw, dict) or not isinstance(raw.get("cases"), list):
        raise ConfigurationError(f"{path}: a suite is an object with a `cases` list")
    problems, cases, seen = [], [], set()
    aliases = raw.get("agents") or {}
    if not isinstance(aliases, dict) or not all(isinstance(v, str) for v in aliases.values()):
        raise ConfigurationError(f"{path}: `agents` maps a name to 'package.module:AGENT'")
    for n, item in enumerate(raw["cases"], start=1):
        name = f"case {item.get('id')!r}" if isinstance(item, dict) and item.get("id") else f"case #{n}"
        try:
            case = Case.model_validate(item).with_agent_ref(aliases)
        except ValidationError as exc:
            problems += [f"{path}: {name}: {'.'.join(map(str, e['loc'])) or 'case'}: {e['msg']}" for e in exc.errors()[:8]]
            continue
        problems += [f"{path}: {name}: {p}" for p in _problems(case)]
        problems += [f"{path}: {name}: duplicate id"] if case.id in seen else []
        seen.add(case.id)
        cases.append(case)
    try:
        suite = Suite.model_validate({**raw, "cases": []}).model_copy(update={"cases": tuple(cases)})
    except ValidationError as exc:
        problems += [f"{path}: {'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors()]
    if problems:
        more = f"\n... and {len(problems) - 30} more" if len(problems) > 30 else ""
        raise ConfigurationError(f"invalid eval suite ({len(problems)} problems):\n" + "\n".join(problems[:30]) + more)
    return suite


def save_suite(suite: Suite, path: str | Path) -> None:
    path = Path(path)
    data = suite.model_dump(mode="json")
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.suffix in (".yaml", ".yml"):
        import yaml

        path.write_text(yaml.safe_dump(data, sort_keys=False, allow_unicode=True))
    else:
        path.write_text(json.dumps(data, indent=1, ensure_ascii=False) + "\n")
