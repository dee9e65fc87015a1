"""The rollback agent: after production e2e failed, puts production back on a release that worked.

The rollback tools narrow themselves (factor 8): a service is offered for rollback only while it has a previous
release (context `previous_releases`, pre-fetched by the pipeline) and has not been rolled back in this thread.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Literal

from pydantic import Field

from agents.deploybot import PRODUCTION_LIMIT
from agents import PROMPTS_DIR
from prefect_micro_agents.thread import ContextEvent, ResultEvent
from prefect_micro_agents.tools import Agent, Tool

if TYPE_CHECKING:
    from prefect_micro_agents.thread import Thread

__all__ = ["RELEASES_CONTEXT", "ROLLBACK_AGENT", "DoneForNow", "Escalate", "RollbackBackend", "RollbackFrontend",
           "can_roll_back"]

RELEASES_CONTEXT = "previous_releases"

To = Field(min_length=7, max_length=40, pattern=r"^[0-9a-f]{7,40}$",
           description="SHA of a previous production release of this service (from previous_releases).")


def can_roll_back(thread: Thread, service: str, intent: str) -> bool:
    """False when the pre-fetched context says `service` has no previous release, or it was rolled back already."""
    if any(isinstance(e, ResultEvent) and e.intent == intent for e in thread.events):
        return False
    releases = next((e.payload for e in reversed(thread.events)
                     if isinstance(e, ContextEvent) and e.name == RELEASES_CONTEXT), None)
    if not isinstance(releases, dict) or not isinstance(releases.get(service), dict):
        return True  # no such context: offer it, the target refuses a release that never ran there
    previous = releases[service].get("previous")
    return isinstance(previous, list) and len(previous) > 0


class RollbackBackend(Tool):
    """Switch the production backend back to one of its previous releases."""

    policy = "approve"
    concurrency_tags = (PRODUCTION_LIMIT,)
    intent: Literal["rollback_backend"]
    to: str = To

    @classmethod
    def available(cls, thread: Thread) -> bool:
        return can_roll_back(thread, "backend", cls.intent_name())


class RollbackFrontend(Tool):
    """Switch the production frontend back to one of its previous releases."""

    policy = "approve"
    concurrency_tags = (PRODUCTION_LIMIT,)
    intent: Literal["rollback_frontend"]
    to: str = To

    @classmethod
    def available(cls, thread: Thread) -> bool:
        return can_roll_back(thread, "frontend", cls.intent_name())


class Escalate(Tool):
    """Stop and hand over to a human: no rollback can fix this, or rollbacks did not help."""

    policy = "terminal"
    intent: Literal["escalate"]
    # Named `message` (not `reason`: every tool's `reason` is its rationale) because a terminal tool's `message`
    # is what the reducer records in the final DoneEvent.
    message: str = Field(min_length=1, max_length=500, description="What is broken and what a human should do.")


class DoneForNow(Tool):
    """Finish: the rollbacks that were needed have run (or none was needed)."""

    policy = "terminal"
    intent: Literal["done_for_now"]
    message: str = Field(min_length=1, max_length=500, description="One-line summary of what was rolled back.")


ROLLBACK_AGENT = Agent(
    name="rollback",
    tools=(RollbackBackend, RollbackFrontend, Escalate, DoneForNow),
    prompt="rollback_agent.j2",
    prompts_dir=PROMPTS_DIR,
    max_steps=6,
)
