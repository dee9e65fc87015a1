"""History rules shared by all targets: idempotency-key replay and finding the previous release."""

from __future__ import annotations

from collections.abc import Sequence

from flows.targets.base import DeployResult, HistoryEntry
from flows.targets.errors import IdempotencyConflictError

__all__ = ["find_replay", "previous_release", "replay_result"]


def find_replay(
    history: Sequence[HistoryEntry], key: str | None, env: str, service: str, action: str, sha: str | None
) -> HistoryEntry | None:
    """The finished entry recorded under `key` for this same call, or None; a key reused for another call raises.

    `sha` None (rollback to "previous") matches any SHA. Entries still `started` (a crash mid-call) do not count, so
    such a call is executed again.
    """
    if not key:
        return None
    for entry in reversed(history):
        if entry.idempotency_key != key or entry.status == "started" or entry.result is None:
            continue
        same = (entry.env, entry.service, entry.action) == (env, service, action) and sha in (None, entry.sha)
        if not same:
            raise IdempotencyConflictError(
                f"idempotency key {key!r} was already used for {entry.action} of {entry.service} "
                f"{entry.sha[:12]} to {entry.env}; use a new key for {action} of {service} {(sha or '?')[:12]} to {env}"
            )
        return entry
    return None


def replay_result(entry: HistoryEntry) -> DeployResult:
    """The recorded result of `entry`, marked as a replay that changed nothing."""
    assert entry.result is not None
    recorded = entry.result
    message = (f"idempotency key {entry.idempotency_key!r} already finished at {recorded.finished_at.isoformat()}; "
               f"returning the recorded result, nothing was done. Recorded: {recorded.message}")
    return recorded.model_copy(update={"noop": True, "replayed": True, "message": message})


def previous_release(history: Sequence[HistoryEntry], env: str, service: str, current: str | None) -> str | None:
    """The most recent successfully activated SHA of env/service that differs from `current`."""
    for entry in reversed(history):
        if entry.env == env and entry.service == service and entry.status == "succeeded" and entry.sha != current:
            return entry.sha
    return None
