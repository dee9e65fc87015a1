"""The typed forms a human fills in the Prefect UI (or through the CLI) when a run is suspended.

Every constraint here is expressible in JSON schema, so the SERVER refuses bad input before the run resumes (the
run stays suspended). A pydantic-only validator would run after resume, inside the flow, too late to refuse.
"""

from __future__ import annotations

from typing import Literal

from prefect.input import RunInput
from pydantic import Field

__all__ = ["AnswerInput", "ApprovalInput", "approval_key", "answer_key"]


class ApprovalInput(RunInput):
    decision: Literal["approve", "reject"] = Field(
        description="approve: the call runs once, exactly as shown. reject: nothing runs; your feedback goes to the agent."
    )
    feedback: str = Field(default="", max_length=2000, description="Why, or what to do instead (sent to the agent).")
    approver: str = Field(default="", max_length=100, description="Your name, recorded with the decision.")
    proposal_digest: str = Field(
        min_length=64, max_length=64, description="Binds this answer to the proposal shown above. Leave it as it is."
    )


class AnswerInput(RunInput):
    answer: str = Field(min_length=1, max_length=4000, description="Your answer to the agent's question.")
    by: str = Field(default="", max_length=100, description="Your name, recorded with the answer.")
    proposal_digest: str = Field(
        min_length=64, max_length=64, description="Binds this answer to the question shown above. Leave it as it is."
    )


def approval_key(proposal_id: str, attempt: int) -> str:
    """One suspend key per proposal and attempt: a fired key is never reused for another question (bypass)."""
    return f"approve-{proposal_id}-{attempt}"


def answer_key(proposal_id: str, attempt: int) -> str:
    return f"answer-{proposal_id}-{attempt}"
