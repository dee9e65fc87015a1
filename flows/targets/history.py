"""History rules shared by all targets: idempotency-key replay and finding the previous release."""

from __future__ import annotations

import logging
from collections.abc import Sequence

from flows.targets.base import DeployResult, HistoryEntry, utcnow
from flows.targets.errors import IdempotencyConflictError

__all__ = ["find_entry", "open_entry", "previous_release", "replay_result", "resume"]

logger = logging.getLogger(__name__)


def find_entry(
    history: Sequence[HistoryEntry], key: str | None, env: str, service: str, action: str, sha: str | None
) -> HistoryEntry | None:
    """The entry recorded under `key` for this same call, or None; a key reused for another call raises.

    A finished entry is replayed (`replay_result`); one still `started` is a call a crash interrupted, which the
    target resumes IN that entry (one entry per key, however often it is retried). `sha` None (rollback to
    "previous") matches any SHA.
    """
    if not key:
        return None
    for entry in reversed(history):
        if entry.idempotency_key != key:
            continue
        same = (entry.env, entry.service, entry.action) == (env, service, action) and sha in (None, entry.sha)
        if not same:
            raise IdempotencyConflictError(
                f"idempotency key {key!r} was already used for {entry.action} of {entry.service} "
                f"{entry.sha[:12]} to {entry.env}; use a new key for {action} of {service} {(sha or '?')[:12]} to {env}"
            )
        return entry
    return None


def resume(entry: HistoryEntry) -> HistoryEntry:
    """Mark an interrupted entry as resumed (its attempt count) before the target finishes the call in it."""
    entry.attempts += 1
    logger.warning("resuming %s of %s %s to %s (idempotency key %s), interrupted after phase %r", entry.action,
                   entry.service, entry.sha[:12], entry.env, entry.idempotency_key, entry.phase)
    return entry


def open_entry(history: list[HistoryEntry], entry: HistoryEntry | None, *, env: str, service: str, action: str,
               sha: str, previous_sha: str | None, key: str | None, requested: str | None) -> HistoryEntry:
    """The history entry a call runs in: `entry` (found by `find_entry`, interrupted) resumed, or a new one appended."""
    if entry is not None:
        return resume(entry)
    entry = HistoryEntry(env=env, service=service, action=action, sha=sha, previous_sha=previous_sha,
                         status="started", started_at=utcnow(), idempotency_key=key, requested=requested)
    history.append(entry)
    return entry


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
