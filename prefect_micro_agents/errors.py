"""The project's error types: misconfiguration is never retried, provider trouble is retried then surfaced."""

from __future__ import annotations

__all__ = ["AgentError", "ConfigurationError", "ProviderError", "ThreadError"]


class AgentError(Exception):
    """Base class for every error this project raises on purpose."""


class ConfigurationError(AgentError):
    """Something a user must change (a setting, a file, a parameter); the message says what. Never retried."""


class ProviderError(AgentError):
    """The model provider kept failing (timeouts, rate limits, outages) after the configured retries."""


class ThreadError(AgentError):
    """An event that cannot be applied to a thread (a bug in the caller, not model output)."""
