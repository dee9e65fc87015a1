"""Tools are typed pydantic models tagged by `intent`; each class declares its policy (factors 1, 4, 7).

What is offered at a step is decided here, in code (factor 8), not in the prompt; the model's reply is validated
against it (`prefect_micro_agents.llm.parse_reply`), so a weak model cannot loop where a strong one would not:
- a tool's own `available(thread)` narrows it by the facts in the thread;
- after `max_consecutive_questions` questions in a row (`human` tools), no `human` tool is offered: the agent must
  propose a call that acts, or finish;
- a call a human rejected is not accepted again unchanged as the agent's next proposal: the same intent with the
  same arguments (a SHA matches its abbreviation) is refused as `invalid_arguments` until the agent has proposed
  something else. Arguments matter: "right tool, wrong commit" feedback must leave the tool itself on offer.
"""

from __future__ import annotations

import typing
from dataclasses import dataclass
from functools import cached_property, lru_cache
from typing import TYPE_CHECKING, Annotated, Any, ClassVar, Literal, Union

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter

from prefect_micro_agents.approval_policy import ApprovalPolicy, Approvers, Tally, editable_fields, tally
from prefect_micro_agents.commits import is_sha, same_commit
from prefect_micro_agents.errors import ConfigurationError, ThreadError
from prefect_micro_agents.thread import digest_of

if TYPE_CHECKING:
    from prefect_micro_agents.thread import ProposalEvent, Thread

__all__ = ["Agent", "Policy", "Tool", "args_digest", "consecutive_questions", "rejected_call", "same_call"]

Policy = Literal["auto", "approve", "human", "terminal"]
POLICIES: tuple[str, ...] = typing.get_args(Policy)


class Tool(BaseModel):
    """Base of every tool. Subclasses set `intent: Literal["name"]`, `policy`, and described, bounded fields."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    policy: ClassVar[Policy] = "auto"
    # For `approve` tools: who may approve, how many distinct people must, who may not (prefect_micro_agents.
    # approval_policy); an approvers file (AGENT_APPROVERS_FILE) given to the Agent overrides it per deployment.
    approval: ClassVar[ApprovalPolicy] = ApprovalPolicy()
    # Prefect tag-concurrency limits an execution of this tool holds (its execute task carries these tags), e.g.
    # ("production-changes",): one change at a time, held only while it executes, released by the server when the
    # task run ends, including when a new attempt marks a dead attempt's task run Crashed.
    concurrency_tags: ClassVar[tuple[str, ...]] = ()

    reason: str = Field(
        default="", max_length=300, description="One short sentence: why this call is the right next step."
    )

    @classmethod
    def intent_name(cls) -> str:
        field = cls.model_fields.get("intent")
        annotation = field.annotation if field is not None else None
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


def same_call(intent: str, args: dict[str, Any], other: ProposalEvent) -> bool:
    """The same intent with the same arguments; a SHA equals its abbreviation (the prompt shows 12 characters)."""
    if intent != other.intent or set(args) != set(other.args):
        return False
    return all(v == other.args[k] or (is_sha(v) and same_commit(v, other.args[k])) for k, v in args.items())


def rejected_call(thread: Thread) -> ProposalEvent | None:
    """The agent's latest proposal if a human rejected it (a rejection bound to its digest; a void one does not
    count), else None. It stays the latest proposal until the agent proposes something else."""
    proposals = [e for e in thread.events if e.type == "proposal"]
    if not proposals:
        return None
    last = proposals[-1]
    rejected = any(
        e.type == "decision" and e.proposal_id == last.id and e.decision == "rejected"
        and e.proposal_digest == last.digest
        for e in thread.events
    )
    return last if rejected else None


def consecutive_questions(agent: Agent, thread: Thread) -> int:
    """How many of the agent's latest proposals in a row asked a human (`human` tools)."""
    count = 0
    for event in reversed(thread.events):
        if event.type != "proposal":
            continue
        tool = agent.tool(event.intent)
        if tool is None or tool.policy != "human":
            break
        count += 1
    return count


@dataclass(frozen=True)
class Agent:
    """A micro-agent is a declaration: a name, its tools, its prompt, its limits. The loop lives elsewhere."""

    name: str
    tools: tuple[type[Tool], ...]
    prompt: str
    max_steps: int = 10
    max_consecutive_errors: int = 3
    max_consecutive_questions: int = 2  # then `human` tools are not offered until the agent proposes something else
    description: str = ""
    prompts_dir: str | None = None  # this agent's templates (its `prompt` among them); the kit's are the fallback
    approvers: Approvers | None = None  # the team's approvers file: groups, and per-tool policy overrides

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
        for tool in self.tools:  # an unknown group, a quorum nobody can meet, an unknown editable argument: here
            if tool.policy == "approve":
                editable_fields(tool, self.approval_policy(tool.intent_name()))
        if min(self.max_steps, self.max_consecutive_errors, self.max_consecutive_questions) < 1:
            raise ConfigurationError(
                f"agent {self.name!r}: max_steps, max_consecutive_errors and max_consecutive_questions must be >= 1"
            )

    @cached_property
    def by_intent(self) -> dict[str, type[Tool]]:
        return {t.intent_name(): t for t in self.tools}

    def tool(self, intent: str) -> type[Tool] | None:
        return self.by_intent.get(intent)

    def approval_policy(self, intent: str) -> ApprovalPolicy:
        """The policy an approval of `intent` is held to: the tool's own, with the approvers file's entry applied."""
        tool = self.tool(intent)
        if tool is None:
            raise ThreadError(f"{intent!r} is not a tool of agent {self.name!r}")
        if self.approvers is None:
            tool.approval.people({})  # a group needs an approvers file that defines it
            return tool.approval
        return self.approvers.policy(intent, tool.approval)

    def tally(self, thread: Thread, proposal: ProposalEvent) -> Tally:
        """Which decisions on `proposal` count under its tool's approval policy, and whether they suffice."""
        groups = self.approvers.groups if self.approvers is not None else {}
        return tally(self.approval_policy(proposal.intent), groups, thread, proposal)

    def call(self, proposal: ProposalEvent) -> Tool:
        """The proposal as a call of its tool class: what an implementation receives."""
        tool = self.tool(proposal.intent)
        if tool is None:
            raise ThreadError(f"proposal {proposal.id} names {proposal.intent!r}, not a tool of agent {self.name!r}")
        return tool.model_validate({"intent": proposal.intent, **proposal.args})

    def offered(self, thread: Thread) -> tuple[type[Tool], ...]:
        """The tools available for the next step; terminal tools are always offered so the agent can stop."""
        asked_enough = consecutive_questions(self, thread) >= self.max_consecutive_questions
        return tuple(
            t for t in self.tools
            if t.policy == "terminal" or (t.available(thread) and not (asked_enough and t.policy == "human"))
        )

    def refusal(self, thread: Thread, intent: str, args: dict[str, Any]) -> str | None:
        """Why this exact call of an offered tool is not accepted now (None: it is): the call just rejected."""
        rejected = rejected_call(thread)
        if rejected is None or not same_call(intent, args, rejected):
            return None
        return "a human rejected this same call just now; follow the feedback: other arguments or another step"

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
