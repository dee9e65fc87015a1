"""Errors of the deploy-target layer, rooted in the project's error types so callers can tell 'fix input' from bugs."""

from __future__ import annotations

from prefect_micro_agents.errors import AgentError, ConfigurationError

__all__ = [
    "IdempotencyConflictError",
    "ReleaseNotFoundError",
    "TargetConfigError",
    "TargetError",
    "UnknownRevisionError",
]


class TargetError(AgentError):
    """Base class for errors raised by deploy targets."""


class TargetConfigError(TargetError, ConfigurationError):
    """Bad target configuration or argument (service, env, config file); the message says what to change."""


class UnknownRevisionError(TargetConfigError):
    """A SHA or tag that does not resolve to a commit; raised before anything is changed."""


class ReleaseNotFoundError(TargetConfigError):
    """A rollback to a release that was never deployed to that environment/service (or no previous release exists)."""


class IdempotencyConflictError(TargetError):
    """An idempotency key already recorded for a different action, service, environment or SHA."""
