"""The deploy agent: promotes one commit to production, one approved service at a time.

The deploy tools narrow themselves (factor 8): a service whose production already runs the target SHA, or that this
thread has already deployed, is not offered, so no model can propose a useless or repeated deploy. Nor is a service
whose deploy of the target a human has just rejected, until the agent proposes something else: the target is the
only commit this run deploys, so that tool could only repeat the rejected call. The pipeline
provides the facts as context events, before the agent's first step:
- `target`: {"sha": "<full sha>"}, what this run deploys (without it, the one SHA named in the trigger is used);
- `prod_versions`: {"backend": {"sha": ...}, "frontend": {"sha": ...}}, what production runs now.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Literal

from pydantic import Field

from agents import PROMPTS_DIR
from prefect_micro_agents.commits import is_sha, same_commit
from prefect_micro_agents.thread import ContextEvent, ProposalEvent, ResultEvent, TriggerEvent
from prefect_micro_agents.tools import Agent, Tool, rejected_call

if TYPE_CHECKING:
    from prefect_micro_agents.thread import Thread

__all__ = [
    "DEPLOY_AGENT",
    "PRODUCTION_LIMIT",
    "PROD_CONTEXT",
    "TARGET_CONTEXT",
    "DeployBackendToProd",
    "DeployFrontendToProd",
    "DoneForNow",
    "RequestMoreInformation",
    "just_rejected",
    "needs_deploy",
    "target_sha",
]

PRODUCTION_LIMIT = "production-changes"  # the Prefect tag-concurrency limit every production change holds
TARGET_CONTEXT = "target"
PROD_CONTEXT = "prod_versions"
_SHA_IN_TEXT = re.compile(r"\b[0-9a-f]{7,40}\b")

Sha = Field(min_length=7, max_length=40, pattern=r"^[0-9a-f]{7,40}$", description="The commit SHA to deploy.")


def _context(thread: Thread, name: str) -> object:
    """The latest context event of that name (a pipeline may refresh one), or None."""
    return next((e.payload for e in reversed(thread.events) if isinstance(e, ContextEvent) and e.name == name), None)


def target_sha(thread: Thread) -> str | None:
    """The SHA this run deploys: the `target` context, else the only SHA the trigger names; None when unsure."""
    payload = _context(thread, TARGET_CONTEXT)
    if isinstance(payload, dict) and is_sha(payload.get("sha")):
        return payload["sha"].lower()
    trigger = next((e for e in thread.events if isinstance(e, TriggerEvent)), None)
    words = _SHA_IN_TEXT.findall(trigger.request.lower()) if trigger else []
    found = {w for w in words if any(c.isdigit() for c in w)}  # "defaced" is hex too; a real SHA has a digit
    return found.pop() if len(found) == 1 else None


def needs_deploy(thread: Thread, service: str, intent: str) -> bool:
    """False when production already runs the target for `service`, or this thread already deployed it there."""
    target = target_sha(thread)
    prod = _context(thread, PROD_CONTEXT)
    running = prod.get(service) if isinstance(prod, dict) else None
    if target and isinstance(running, dict) and same_commit(running.get("sha"), target):
        return False
    proposals = {e.id: e for e in thread.events if isinstance(e, ProposalEvent)}
    for result in (e for e in thread.events if isinstance(e, ResultEvent) and e.intent == intent):
        proposal = proposals.get(result.proposal_id)
        if target is None or (proposal is not None and same_commit(proposal.args.get("sha"), target)):
            return False
    return True


def just_rejected(thread: Thread, intent: str) -> bool:
    """True when the agent's latest proposal deployed the target with `intent` and a human rejected it."""
    target, rejected = target_sha(thread), rejected_call(thread)
    return bool(target and rejected and rejected.intent == intent and same_commit(rejected.args.get("sha"), target))


class DeployBackendToProd(Tool):
    """Deploy the backend service at a commit to production."""

    policy = "approve"
    concurrency_tags = (PRODUCTION_LIMIT,)
    intent: Literal["deploy_backend_to_prod"]
    sha: str = Sha

    @classmethod
    def available(cls, thread: Thread) -> bool:
        return needs_deploy(thread, "backend", cls.intent_name()) and not just_rejected(thread, cls.intent_name())


class DeployFrontendToProd(Tool):
    """Deploy the frontend service at a commit to production."""

    policy = "approve"
    concurrency_tags = (PRODUCTION_LIMIT,)
    intent: Literal["deploy_frontend_to_prod"]
    sha: str = Sha

    @classmethod
    def available(cls, thread: Thread) -> bool:
        return needs_deploy(thread, "frontend", cls.intent_name()) and not just_rejected(thread, cls.intent_name())


class RequestMoreInformation(Tool):
    """Ask the human a question when the request is ambiguous or context is missing."""

    policy = "human"
    intent: Literal["request_more_information"]
    question: str = Field(min_length=1, max_length=500, description="One clear question for the human.")


class DoneForNow(Tool):
    """Finish: everything that needed deploying is deployed (or nothing needed it)."""

    policy = "terminal"
    intent: Literal["done_for_now"]
    message: str = Field(min_length=1, max_length=500, description="One-line summary of what was done.")


DEPLOY_AGENT = Agent(
    name="deploy",
    tools=(DeployBackendToProd, DeployFrontendToProd, RequestMoreInformation, DoneForNow),
    prompt="deploy_agent.j2",
    prompts_dir=PROMPTS_DIR,
    max_steps=10,
)
