"""The typed forms a human fills in the Prefect UI (or through the CLI) when a run is suspended.

Binding without a field for humans to guard: each form is built for ONE proposal, and the name of its answer field
carries the proposal digest (`decision_<first 16 hex of the digest>`, shown in the UI under the title "Decision").
The server validates every resume against the schema of the suspension that is pending now, and the schema
forbids extra fields, so an answer built for another proposal (a stale browser dialog, a scripted resume of an
older proposal, a malformed or omitted digest) names a field the pending form does not have: the SERVER refuses it
and the run stays suspended. Every constraint here is JSON schema for the same reason: a pydantic-only validator
would run after resume, inside the flow, too late to refuse.

Prefect is imported only where a form is built: the approvals client and the CLI read field names without it.
"""

from __future__ import annotations

from collections.abc import Collection
from copy import copy
from typing import TYPE_CHECKING, Any, Literal, cast

from pydantic import BaseModel, Field, JsonValue, create_model

if TYPE_CHECKING:
    from prefect.input import RunInput

__all__ = [
    "DIGEST_IN_FIELD",
    "DIGEST_SCHEMA_KEY",
    "Decision",
    "answer_field",
    "answer_form",
    "answer_key",
    "answer_of",
    "approval_form",
    "argument_fields",
    "edited_values",
    "signature_field",
    "approval_key",
    "decision_field",
    "decision_of",
    "form_digest",
]

Decision = Literal["approve", "reject"]
DIGEST_IN_FIELD = 16  # hex characters of the proposal digest in the answer field's name (64 bits)
DIGEST_SCHEMA_KEY = "x-proposal-digest"  # the full digest, for clients; JSON schema validators ignore x- keywords


def decision_field(digest: str) -> str:
    return f"decision_{digest[:DIGEST_IN_FIELD]}"


def answer_field(digest: str) -> str:
    return f"answer_{digest[:DIGEST_IN_FIELD]}"


_AFTER = {"fail": "after that the run fails and nothing runs.",
          "reject": "after that the call is rejected (nothing runs) and the agent is told nobody decided."}


def approver_field(may_approve: Collection[str] | None, excluded: Collection[str]) -> tuple[Any, Any]:
    """The approver field under an approval policy, checked by the SERVER like the rest of the form: when the policy
    names people, one of those who may still approve (a choice list in the UI; anyone else is refused before the run
    resumes); otherwise free text that may not be one of this run's excluded people."""
    if may_approve is not None:
        names = tuple(sorted(may_approve))
        if not names:  # nobody left who could approve: the reducer escalates before a form is ever built
            raise ValueError("no one may approve this call")
        def as_choices(schema: dict[str, Any]) -> None:
            # One name left is `const` in pydantic's schema, which the UI renders with no choice to pick: a list
            # of one instead (the server refuses anyone else either way).
            schema.pop("const", None)
            schema["enum"] = list(names)

        return (Literal[names], Field(
            title="Approver", description="Who you are: only the people listed may approve this call, each once.",
            json_schema_extra=as_choices))
    extra: dict[str, JsonValue] | None = {"not": {"enum": list(sorted(excluded))}} if excluded else None
    return (str, Field(default="", max_length=100, title="Approver", json_schema_extra=extra,
                       description="Your name, recorded with the decision." + (
                           f" Not {', '.join(sorted(excluded))}: this run's policy excludes them." if excluded else "")))


ARG_PREFIX = "arg_"  # an editable argument's field: `arg_<name>`, pre-filled with the proposed value


def argument_fields(tool: type[BaseModel], values: dict[str, Any], names: Collection[str]) -> dict[str, Any]:
    """Form fields for the arguments an approver may edit: each the tool's own field (type, bounds, enum, pattern:
    so the SERVER validates an edit against the tool's schema before the run resumes), pre-filled with the proposed
    value. Arguments not listed get no field, and the form forbids extra fields: the server refuses their edit."""
    fields: dict[str, Any] = {}
    for name in names:
        info = copy(tool.model_fields[name])
        info.default, info.default_factory = values.get(name), None
        info.title = f"{name} (edit to change)"
        info.description = (info.description or "") + " Proposed value pre-filled; what you leave here is what runs."
        fields[ARG_PREFIX + name] = (info.annotation, info)
    return fields


def edited_values(response: Any, names: Collection[str]) -> dict[str, Any]:
    """The editable arguments as the approver left them (JSON values)."""
    dumped = response.model_dump(mode="json")
    return {name: dumped[ARG_PREFIX + name] for name in names if ARG_PREFIX + name in dumped}


def signature_field(command: str, required: bool) -> tuple[Any, Any]:
    return (str, Field(default="", max_length=4000, title="Signature", description=(
        ("Required: this call counts only signed approvals; an approval without a valid signature is recorded as "
         "unverified and does not count. " if required else "Optional. ")
        + f"To sign, run in a terminal instead of using this form: {command}")))


def approval_form(digest: str, description: str, expires_at: str | None = None,
                  may_approve: Collection[str] | None = None, excluded: Collection[str] = (),
                  arguments: dict[str, Any] | None = None, sign_command: str = "",
                  signed: bool = False, on_expiry: str = "fail") -> type[RunInput]:
    """The approval form for the proposal with this digest: decision (required), feedback, approver (see
    approver_field for how the approval policy shapes it), the editable `arguments` (argument_fields) and, with a
    `sign_command`, the signature the CLI fills in (prefect_micro_agents.signing).

    The deadline goes into the Decision field's text too: it stays on screen below the description's scroll box.
    """
    from prefect.input import RunInput

    extra: dict[str, Any] = dict(arguments or {})
    if sign_command:
        extra["signature"] = signature_field(sign_command, signed)

    model = create_model(
        "ApprovalInput",
        __base__=RunInput,
        **{
            decision_field(digest): (Decision, Field(
                title="Decision",
                description=(
                    "approve: the call runs once, exactly as shown"
                    + (" or as you edit it below (an edited call is proposed in its place, approved by you)"
                       if arguments else "")
                    + ". reject: nothing runs; your feedback goes to the agent."
                    + (f" Decide before {expires_at}: {_AFTER[on_expiry]}" if expires_at else "")),
                json_schema_extra={DIGEST_SCHEMA_KEY: digest},
            )),
            "feedback": (str, Field(default="", max_length=2000, title="Feedback",
                                    description="Why, or what to do instead (sent to the agent).")),
            "approver": approver_field(may_approve, excluded),
            **extra,
        },
    )
    return cast(type[RunInput], model.with_initial_data(description=description))


def answer_form(digest: str, description: str, expires_at: str | None = None,
                on_expiry: str = "fail") -> type[RunInput]:
    """The answer form for the question with this digest: answer (required), by."""
    from prefect.input import RunInput

    model = create_model(
        "AnswerInput",
        __base__=RunInput,
        **{
            answer_field(digest): (str, Field(
                min_length=1, max_length=4000, title="Answer",
                description="Your answer to the agent's question." + (
                    f" Answer before {expires_at}: " + ("after that the run fails." if on_expiry == "fail" else
                                                        "after that the agent is told nobody answered.")
                    if expires_at else ""),
                json_schema_extra={DIGEST_SCHEMA_KEY: digest},
            )),
            "by": (str, Field(default="", max_length=100, title="By", description="Your name, recorded with the answer.")),
        },  # type: ignore[call-overload]
    )
    return cast(type[RunInput], model.with_initial_data(description=description))


def decision_of(response: Any, digest: str) -> Decision:
    return cast(Decision, getattr(response, decision_field(digest)))


def answer_of(response: Any, digest: str) -> str:
    return str(getattr(response, answer_field(digest)))


def form_digest(schema: dict[str, Any]) -> tuple[str, str] | None:
    """(answer field name, full proposal digest) of a stored form schema, or None if it is not one of ours."""
    for name, prop in (schema.get("properties") or {}).items():
        if name.startswith(("decision_", "answer_")) and isinstance(prop, dict) and DIGEST_SCHEMA_KEY in prop:
            return name, str(prop[DIGEST_SCHEMA_KEY])
    return None


def approval_key(proposal_id: str, attempt: int) -> str:
    """One suspend key per proposal and attempt: a fired key is never reused for another question (bypass)."""
    return f"approve-{proposal_id}-{attempt}"


def answer_key(proposal_id: str, attempt: int) -> str:
    return f"answer-{proposal_id}-{attempt}"
