"""The thread is the agent's whole state: an id and a list of typed events (factors 3, 5, 12)."""

from __future__ import annotations

import hashlib
import json
from typing import Annotated, Any, ClassVar, Literal, TypeVar, Union

from pydantic import (
    AwareDatetime,
    BaseModel,
    ConfigDict,
    Field,
    JsonValue,
    SerializerFunctionWrapHandler,
    model_serializer,
)

__all__ = [
    "AnswerEvent",
    "ContextEvent",
    "DecisionEvent",
    "DoneEvent",
    "ErrorEvent",
    "ErrorKind",
    "EscalationEvent",
    "Event",
    "ProposalEvent",
    "ReceiptEvent",
    "ResultEvent",
    "Thread",
    "TriggerEvent",
    "Usage",
    "canonical_json",
    "digest_of",
]

ErrorKind = Literal[
    "malformed_output",  # not JSON, or no tool call at all
    "unknown_intent",  # JSON naming a tool this agent does not have (or that is not offered now)
    "invalid_arguments",  # the right tool with arguments that fail validation
    "tool_error",  # the tool ran and failed
    "approval_expired",  # nobody decided in time; the call never ran
]


def canonical_json(value: Any) -> str:
    """One stable text per value, so digests do not depend on key order or whitespace."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def digest_of(value: Any) -> str:
    return hashlib.sha256(canonical_json(value).encode()).hexdigest()


class _Event(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    # Fields added after events were first stored: left out of the serialised event while they hold their default, so
    # a thread that does not use them serialises (and digests) exactly as before they existed: stored threads, eval
    # suites and cache keys stay valid across the upgrade.
    _OMIT_WHEN_DEFAULT: ClassVar[tuple[str, ...]] = ()

    @model_serializer(mode="wrap")
    def _omit_unused(self, handler: SerializerFunctionWrapHandler) -> Any:
        data = handler(self)
        if isinstance(data, dict):
            for name in self._OMIT_WHEN_DEFAULT:
                if name in data and getattr(self, name) == type(self).model_fields[name].get_default(
                        call_default_factory=True):
                    del data[name]
        return data


class TriggerEvent(_Event):
    """Who or what asked, in their words: 'deploy SHA abc123 to production'."""

    type: Literal["trigger"] = "trigger"
    source: str  # e.g. "git.push", "cron", "cli"
    actor: str
    request: str


class ContextEvent(_Event):
    """Context the flow fetched before asking the model (factor 13): a named payload."""

    type: Literal["context"] = "context"
    name: str = Field(pattern=r"^[a-z][a-z0-9_]*$")
    payload: JsonValue


class Usage(_Event):
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cost_usd: float | None = None
    latency_ms: float | None = None


class ProposalEvent(_Event):
    """The model's choice of the next tool call. `args` are exactly what would execute."""

    type: Literal["proposal"] = "proposal"
    id: str
    intent: str
    args: dict[str, JsonValue]
    reason: str = ""
    args_digest: str
    model: str = ""
    usage: Usage | None = None
    # An approver's edit of an earlier proposal (approval policy `editable`): who, and which proposal it replaces.
    _OMIT_WHEN_DEFAULT = ("edited_by", "edited_from")
    edited_by: str = ""
    edited_from: str = ""

    @property
    def digest(self) -> str:
        """What an approval binds to: this proposal id with these exact arguments."""
        return digest_of({"id": self.id, "intent": self.intent, "args_digest": self.args_digest})


class DecisionEvent(_Event):
    """A human approved or rejected one proposal; feedback goes back to the model."""

    type: Literal["decision"] = "decision"
    proposal_id: str
    proposal_digest: str
    decision: Literal["approved", "rejected"]
    feedback: str = ""
    approver: str
    at: AwareDatetime
    _OMIT_WHEN_DEFAULT = ("edits", "edit_error", "signature", "verified", "verification")
    # Approve with edits: the arguments the approver changed (name -> new value). A valid edit settles this proposal
    # and the edited call is proposed in its place (prefect_micro_agents.edits); `edit_error` says why an edit was
    # refused (then this decision counts for nothing and the approvers are asked again).
    edits: dict[str, JsonValue] = {}
    edit_error: str = ""
    # Signed approvals (prefect_micro_agents.signing): the approver's SSH signature of the decision, and whether the
    # flow verified it against the allowed-signers file (`verification`: what ssh-keygen said, or why it was not).
    signature: str = ""
    verified: bool = False
    verification: str = ""

    def __hash__(self) -> int:  # hashable despite `edits` (a dict): records keep decisions in sets
        return hash(canonical_json(self.model_dump(mode="json")))


class AnswerEvent(_Event):
    """A human's answer to a question the agent asked with a `human` tool."""

    type: Literal["answer"] = "answer"
    proposal_id: str
    answer: str
    by: str
    at: AwareDatetime


class ReceiptEvent(_Event):
    """Proof that an approved call was handed to its tool: who approved what, under which idempotency key."""

    type: Literal["receipt"] = "receipt"
    proposal_id: str
    proposal_digest: str
    args_digest: str
    approver: str
    approved_at: AwareDatetime
    idempotency_key: str
    _OMIT_WHEN_DEFAULT = ("approvers",)
    approvers: tuple[str, ...] = ()  # with a quorum above one: every counted approver, `approver` first


class ResultEvent(_Event):
    """A tool's output, recorded before the next step starts."""

    type: Literal["result"] = "result"
    proposal_id: str
    intent: str
    output: JsonValue
    idempotency_key: str = ""


class ErrorEvent(_Event):
    """A compact error the model sees on its next try (factor 9)."""

    type: Literal["error"] = "error"
    kind: ErrorKind
    message: str
    proposal_id: str | None = None


class DoneEvent(_Event):
    type: Literal["done"] = "done"
    proposal_id: str | None = None
    message: str


class EscalationEvent(_Event):
    type: Literal["escalation"] = "escalation"
    reason: str


Event = Annotated[
    Union[
        TriggerEvent,
        ContextEvent,
        ProposalEvent,
        DecisionEvent,
        AnswerEvent,
        ReceiptEvent,
        ResultEvent,
        ErrorEvent,
        DoneEvent,
        EscalationEvent,
    ],
    Field(discriminator="type"),
]

E = TypeVar("E", bound=_Event)


class Thread(BaseModel):
    """Immutable: every change returns a new thread, so any prefix is a reproducible input."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    id: str = Field(min_length=1)
    events: tuple[Event, ...] = ()

    def append(self, *events: Event) -> Thread:
        return Thread(id=self.id, events=self.events + tuple(events))

    def fork(self, n: int, id: str | None = None) -> Thread:
        """A new thread holding the first n events (a deterministic id unless one is given)."""
        if not 0 <= n <= len(self.events):
            raise ValueError(f"cannot fork at {n}: thread {self.id} has {len(self.events)} events")
        return Thread(id=id or f"{self.id}.fork{n}", events=self.events[:n])

    def digest(self) -> str:
        return digest_of(self.model_dump(mode="json"))

    def to_json(self) -> str:
        return self.model_dump_json()

    @classmethod
    def from_json(cls, text: str | bytes) -> Thread:
        return cls.model_validate_json(text)

    def of_type(self, kind: type[E]) -> list[E]:
        return [e for e in self.events if isinstance(e, kind)]

    def for_proposal(self, kind: type[E], proposal_id: str) -> list[E]:
        return [e for e in self.events if isinstance(e, kind) and getattr(e, "proposal_id", None) == proposal_id]
