"""The deploy agent: promotes one commit to production, one approved service at a time."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from agents.tools import Agent, Tool

__all__ = ["DEPLOY_AGENT", "DeployBackendToProd", "DeployFrontendToProd", "DoneForNow", "RequestMoreInformation"]

Sha = Field(min_length=7, max_length=40, pattern=r"^[0-9a-f]{7,40}$", description="The commit SHA to deploy.")


class DeployBackendToProd(Tool):
    """Deploy the backend service at a commit to production."""

    policy = "approve"
    intent: Literal["deploy_backend_to_prod"]
    sha: str = Sha


class DeployFrontendToProd(Tool):
    """Deploy the frontend service at a commit to production."""

    policy = "approve"
    intent: Literal["deploy_frontend_to_prod"]
    sha: str = Sha


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
    max_steps=10,
)
