"""Who may approve a tool's calls, how many must, and who may not: a tool's approval policy (issue 14).

Declared in code next to the tool, like its `policy`:

    class DeployBackend(Tool):
        intent: Literal["deploy_backend_to_prod"]
        policy = "approve"
        approval = ApprovalPolicy(approvers=("@release-managers",), quorum=2, exclude=("commit_author",))

and overridable per deployment by an approvers file the team keeps in its repository (`AGENT_APPROVERS_FILE`, TOML
or YAML), whose groups the `@name` references resolve against:

    [groups]
    release-managers = ["alice", "bob", "carol"]

    [tools.deploy_backend_to_prod]     # any field left out keeps the tool's own value
    quorum = 2
    exclude = ["commit_author", "trigger_actor"]
    on_expiry = "reject"               # nobody decided in time: the agent is told, the run goes on
    timeout_s = 7200                   # this tool's wait (default: the run's, AGENT_APPROVAL_TIMEOUT_S)
    remind_before_s = 1800             # a reminder half an hour before (AGENT_APPROVAL_REMINDER_BLOCK)

`tally` says, for one proposal, which decisions in the thread count: an approval or a rejection counts only if it is
bound to the proposal's digest and its approver is allowed (named, directly or through a group, when the policy names
anyone) and not excluded in this run; one person counts once however often they approve. The call runs when
`quorum` distinct people approved; a rejection by any allowed approver rejects it.

`signed = true`: only approvals whose SSH signature the flow verified count (prefect_micro_agents.signing); an
unsigned or unverified one is recorded and does not count. `editable`: arguments an approver may change while
approving (prefect_micro_agents.edits); a valid edit replaces the call with the edited one, which needs its own
quorum (the editor's approval counts toward it).

Exclusions name roles whose holder in this run may not approve: `trigger_actor` (the TriggerEvent's actor) or any
key of a ContextEvent named `people` (the deploy pipeline records `commit_author` there). A role the thread does not
name cannot be checked, so nobody can approve (the reducer escalates with the reason): fail closed.

Pure: no I/O but `load_approvers`, no Prefect.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from prefect_micro_agents.errors import ConfigurationError

if TYPE_CHECKING:
    from prefect_micro_agents.thread import DecisionEvent, ProposalEvent, Thread

__all__ = ["APPROVERS_FILE_ENV", "ApprovalPolicy", "Approvers", "Expiry", "OnExpiry", "PolicyOverride", "Tally",
           "editable_fields",
           "load_approvers", "tally"]

APPROVERS_FILE_ENV = "AGENT_APPROVERS_FILE"
TRIGGER_ACTOR = "trigger_actor"
PEOPLE_CONTEXT = "people"  # a ContextEvent whose payload maps roles to the people who hold them in this run
MAX_QUORUM = 20
_NOT_ARGUMENTS = ("intent", "reason")  # a tool's fields an approver never edits: its tag and the model's reason
MAX_TIMEOUT_S = 30 * 24 * 3600  # a month: longer waits are a forgotten run, not a policy
OnExpiry = Literal["fail", "reject"]
EXPIRY_WORDS = {"fail": "the run fails and the call never runs",
                "reject": "the call is rejected (it never runs) and the agent is told why, then proposes again"}
ROLE_WORDS = {TRIGGER_ACTOR: "the person who started the run", "commit_author": "the author of the commit"}


def _names(values: tuple[str, ...], what: str) -> tuple[str, ...]:
    cleaned = tuple(v.strip() for v in values)
    if any(not v for v in cleaned):
        raise ValueError(f"{what}: an empty name")
    return cleaned


@dataclass(frozen=True)
class Expiry:
    """What happens when nobody decides on one call in time, with the run's timeout applied."""

    on_expiry: OnExpiry
    timeout_s: int  # from suspension to deadline
    remind_before_s: int | None  # a reminder this long before the deadline; None: no reminder

    @property
    def remind_after_s(self) -> int | None:
        return None if self.remind_before_s is None else self.timeout_s - self.remind_before_s

    def describe(self) -> str:
        return EXPIRY_WORDS[self.on_expiry]


class ApprovalPolicy(BaseModel):
    """`approvers`: people, and groups as `@group`; empty: anyone may approve. `quorum`: distinct approvals needed.
    `exclude`: roles whose holder in this run may not approve (see the module docstring). `on_expiry`: what happens
    when nobody decides within `timeout_s` (default: the run's timeout): `fail` the run, or `reject` the call into the
    thread with the reason, so the agent sees it and goes on. `remind_before_s`: notify that long before the deadline."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    approvers: tuple[str, ...] = ()
    quorum: int = Field(default=1, ge=1, le=MAX_QUORUM)
    exclude: tuple[str, ...] = ()
    signed: bool = False  # only approvals signed with a key of the allowed-signers file count (signing.py)
    editable: tuple[str, ...] = ()  # arguments an approver may change when approving; ("*",): all of them
    on_expiry: OnExpiry = "fail"
    timeout_s: int | None = Field(default=None, ge=1, le=MAX_TIMEOUT_S)
    remind_before_s: int | None = Field(default=None, ge=1, le=MAX_TIMEOUT_S)

    @field_validator("approvers", "exclude", "editable")
    @classmethod
    def _no_empty(cls, values: tuple[str, ...]) -> tuple[str, ...]:
        return _names(values, "approvers and exclusions")

    @model_validator(mode="after")
    def _reminder_before_deadline(self) -> ApprovalPolicy:
        if self.timeout_s is not None and self.remind_before_s is not None:
            self.expiry(self.timeout_s)
        return self

    def expiry(self, run_timeout_s: float) -> Expiry:
        """This policy's expiry with the run's timeout filling in `timeout_s`; a reminder that would come at or
        before the suspension itself raises ValueError (ConfigurationError when it is the run's timeout's fault)."""
        timeout = self.timeout_s if self.timeout_s is not None else int(run_timeout_s)
        if self.remind_before_s is not None and self.remind_before_s >= timeout:
            whose = "timeout_s" if self.timeout_s is not None else "the run's approval timeout (AGENT_APPROVAL_TIMEOUT_S)"
            message = (f"remind_before_s ({self.remind_before_s}) must be shorter than {whose} ({timeout}): the reminder "
                       "would come before anyone was asked")
            raise ValueError(message) if self.timeout_s is not None else ConfigurationError(message)
        return Expiry(self.on_expiry, timeout, self.remind_before_s)

    def people(self, groups: dict[str, tuple[str, ...]]) -> frozenset[str] | None:
        """Who the policy names, groups expanded, lower-cased; None when it names nobody (anyone may approve)."""
        if not self.approvers:
            return None
        found: set[str] = set()
        for entry in self.approvers:
            if entry.startswith("@"):
                if entry[1:] not in groups:
                    raise ConfigurationError(f"approvers name the group {entry}, which no approvers file defines "
                                             f"(groups: {sorted(groups) or 'none'})")
                found.update(p.lower() for p in groups[entry[1:]])
            else:
                found.add(entry.lower())
        return frozenset(found)

    def describe(self) -> str:
        who = ", ".join(self.approvers) if self.approvers else "anyone"
        text = f"{self.quorum} distinct approval{'s' if self.quorum > 1 else ''} from {who}"
        roles = [ROLE_WORDS.get(role, f"the run's {role}") for role in self.exclude]
        text += f", not {' or '.join(roles)}" if roles else ""
        if self.signed:
            text += "; approvals must be signed (an unsigned or unverified one does not count)"
        if self.editable:
            text += "; an approver may edit " + ("its arguments" if "*" in self.editable else
                                                 ", ".join(self.editable))
        if self.timeout_s is not None or self.on_expiry != "fail" or self.remind_before_s is not None:
            within = f"within {_duration(self.timeout_s)}" if self.timeout_s is not None else "in time"
            text += f"; if nobody decides {within}, {EXPIRY_WORDS[self.on_expiry]}"
            if self.remind_before_s is not None:
                text += f" (a reminder goes out {_duration(self.remind_before_s)} before)"
        return text


def _duration(seconds: int) -> str:
    for unit, size in (("h", 3600), ("min", 60)):
        if seconds >= size and seconds % size == 0:
            return f"{seconds // size} {unit}"
    return f"{seconds} s"


class PolicyOverride(BaseModel):
    """One tool's entry in the approvers file: the fields it sets replace the tool's own."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    approvers: tuple[str, ...] | None = None
    quorum: int | None = Field(default=None, ge=1, le=MAX_QUORUM)
    exclude: tuple[str, ...] | None = None
    signed: bool | None = None
    editable: tuple[str, ...] | None = None
    on_expiry: OnExpiry | None = None
    timeout_s: int | None = Field(default=None, ge=1, le=MAX_TIMEOUT_S)
    remind_before_s: int | None = Field(default=None, ge=1, le=MAX_TIMEOUT_S)


class Approvers(BaseModel):
    """The approvers file: groups of people, and per-tool overrides by intent."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    groups: dict[str, tuple[str, ...]] = {}
    tools: dict[str, PolicyOverride] = {}
    # ssh-keygen's allowed-signers file (principal = approver name, then the public key): relative to this file
    allowed_signers: str = ""
    source: str = ""  # where it was read from, for messages

    def allowed_signers_path(self) -> Path | None:
        if not self.allowed_signers:
            return None
        path = Path(self.allowed_signers).expanduser()
        return path if path.is_absolute() or not self.source else Path(self.source).parent / path

    @field_validator("groups")
    @classmethod
    def _groups(cls, groups: dict[str, tuple[str, ...]]) -> dict[str, tuple[str, ...]]:
        return {name: _names(people, f"group {name}") for name, people in groups.items()}

    def policy(self, intent: str, declared: ApprovalPolicy) -> ApprovalPolicy:
        """The tool's declared policy with this file's entry for `intent` applied; checked against the groups."""
        entry = self.tools.get(intent)
        merged = declared if entry is None else declared.model_copy(
            update={k: v for k, v in entry.model_dump().items() if v is not None})
        try:
            merged = ApprovalPolicy.model_validate(merged.model_dump())  # the override's values validated as a policy
        except ValidationError as exc:
            problems = "; ".join(f"{'.'.join(str(p) for p in e['loc']) or 'policy'}: {e['msg']}" for e in exc.errors())
            where = f"approvers file {self.source}: " if self.source else ""
            raise ConfigurationError(f"{where}tools.{intent}: {problems}") from None
        try:
            people = merged.people(self.groups)
            if people is not None and len(people) < merged.quorum:
                raise ConfigurationError(f"{intent} needs {merged.quorum} approvals but only {len(people)} people may "
                                         f"give one ({', '.join(sorted(people))})")
        except ConfigurationError as exc:
            raise ConfigurationError(f"approvers file {self.source}: {exc}" if self.source else str(exc)) from None
        return merged


def editable_fields(tool: type[BaseModel], policy: ApprovalPolicy) -> tuple[str, ...]:
    """The arguments of `tool` an approver may change under `policy`, in the tool's field order. A name the tool
    does not have is a configuration error (raised when the Agent is built)."""
    fields = tuple(name for name in tool.model_fields if name not in _NOT_ARGUMENTS)
    if "*" in policy.editable:
        return fields
    unknown = [name for name in policy.editable if name not in fields]
    if unknown:
        raise ConfigurationError(f"{_intent(tool)}: editable names {unknown}, which are not its arguments "
                                 f"({', '.join(fields) or 'none'})")
    return tuple(name for name in fields if name in policy.editable)


def _intent(tool: type[BaseModel]) -> str:
    intent = getattr(tool, "intent_name", None)
    return str(intent()) if callable(intent) else tool.__name__


def load_approvers(path: str | os.PathLike[str] | None = None) -> Approvers | None:
    """The approvers file at `path` (default: $AGENT_APPROVERS_FILE); None when neither names one. A file that is
    missing, unreadable or invalid raises ConfigurationError naming it and what is wrong."""
    where = path if path is not None else os.environ.get(APPROVERS_FILE_ENV) or None
    if where is None:
        return None
    file = Path(where)
    try:
        text = file.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigurationError(f"approvers file {file}: cannot read it ({exc.strerror or exc})") from None
    data: Any
    try:
        if file.suffix in (".yaml", ".yml"):
            import yaml

            data = yaml.safe_load(text) or {}
        else:
            import tomllib

            data = tomllib.loads(text)
    except Exception as exc:  # a parse error of either format: one clear message
        raise ConfigurationError(f"approvers file {file}: not valid {file.suffix.lstrip('.') or 'TOML'} ({exc})") \
            from None
    if not isinstance(data, dict):
        raise ConfigurationError(f"approvers file {file}: expected a table of groups and tools")
    try:
        approvers = Approvers.model_validate({**data, "source": str(file)})
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in exc.errors())
        raise ConfigurationError(f"approvers file {file}: {problems}") from None
    for intent, entry in approvers.tools.items():  # undefined groups and impossible quorums fail now, not mid-run
        approvers.policy(intent, ApprovalPolicy())
    return approvers


def role_holders(thread: Thread) -> dict[str, frozenset[str]]:
    """Who holds each role in this run (lower-cased): the trigger's actor, and the `people` context's entries."""
    from prefect_micro_agents.thread import ContextEvent, TriggerEvent

    holders: dict[str, set[str]] = {}
    for event in thread.events:
        if isinstance(event, TriggerEvent) and TRIGGER_ACTOR not in holders:
            holders[TRIGGER_ACTOR] = {event.actor.lower()}
        elif isinstance(event, ContextEvent) and event.name == PEOPLE_CONTEXT and isinstance(event.payload, dict):
            for role, who in event.payload.items():
                names = who if isinstance(who, list) else [who]
                holders.setdefault(role, set()).update(str(n).lower() for n in names if n)
    return {role: frozenset(names) for role, names in holders.items()}


@dataclass(frozen=True)
class Tally:
    """Where one proposal's approval stands under its policy."""

    policy: ApprovalPolicy
    approved_by: tuple[DecisionEvent, ...]  # the counted approvals, one per person, in order
    rejected_by: DecisionEvent | None  # the first counted rejection
    edited_by: DecisionEvent | None  # the first counted approval with valid edits: the edited call replaces this one
    ignored: tuple[tuple[DecisionEvent, str], ...]  # decisions that do not count, with why
    may_approve: frozenset[str] | None  # who may still approve (None: anyone not excluded)
    excluded: frozenset[str]
    unknown_roles: tuple[str, ...]  # exclusions this thread names nobody for: nobody can approve

    @property
    def met(self) -> bool:
        return (not self.unknown_roles and self.rejected_by is None and self.edited_by is None
                and len(self.approved_by) >= self.policy.quorum)

    @property
    def missing(self) -> int:
        return max(0, self.policy.quorum - len(self.approved_by))

    def status(self) -> str:
        """For people: who approved and who is still needed."""
        got = ", ".join(d.approver for d in self.approved_by) or "nobody yet"
        if self.unknown_roles:
            return f"cannot be approved: this run names no {' and no '.join(self.unknown_roles)} to exclude"
        more = (f"; {self.missing} more needed from {', '.join(sorted(self.may_approve))}" if self.may_approve
                is not None else f"; {self.missing} more needed") if self.missing else ""
        return f"approved by {got} ({len(self.approved_by)} of {self.policy.quorum}){more}"


def tally(policy: ApprovalPolicy, groups: dict[str, tuple[str, ...]], thread: Thread,
          proposal: ProposalEvent) -> Tally:
    from prefect_micro_agents.thread import DecisionEvent

    allowed = policy.people(groups)
    holders = role_holders(thread)
    unknown = tuple(role for role in policy.exclude if not holders.get(role))
    excluded = frozenset(name for role in policy.exclude for name in holders.get(role, ()))
    approved: list[DecisionEvent] = []
    rejected: DecisionEvent | None = None
    edited: DecisionEvent | None = None
    ignored: list[tuple[DecisionEvent, str]] = []
    for decision in thread.for_proposal(DecisionEvent, proposal.id):
        who = decision.approver.strip().lower()
        if decision.proposal_digest != proposal.digest:
            ignored.append((decision, "bound to another version of the proposal"))
        elif allowed is not None and who not in allowed:
            ignored.append((decision, f"{decision.approver} is not among the approvers ({', '.join(policy.approvers)})"))
        elif who in excluded:
            roles = [r for r in policy.exclude if who in holders.get(r, ())]
            ignored.append((decision, f"{decision.approver} is this run's {' and '.join(roles)}, who may not approve"))
        elif decision.decision == "rejected":
            rejected = rejected or decision
        elif policy.signed and not decision.verified:
            why = decision.verification or "not signed"
            ignored.append((decision, f"{decision.approver}'s approval is not verified ({why}), and this call needs "
                                      "signed approvals"))
        elif decision.edit_error:
            ignored.append((decision, f"{decision.approver}'s edits were refused: {decision.edit_error}"))
        elif decision.edits:
            edited = edited or decision
            ignored.append((decision, f"{decision.approver} approved an edited call instead, which replaces this one"))
        elif any(d.approver.strip().lower() == who for d in approved):
            ignored.append((decision, f"{decision.approver} approved already; one person counts once"))
        else:
            approved.append(decision)
    still = None if allowed is None else allowed - excluded - {d.approver.strip().lower() for d in approved}
    return Tally(policy, tuple(approved), rejected, edited, tuple(ignored), still, excluded, unknown)
