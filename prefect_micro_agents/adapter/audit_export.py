"""Read the audit trail back from the server, as `microagents audit` prints it: the latest version of every
`audit-*` table artifact (prefect_micro_agents.adapter.audit_artifact), one record per decision or answer.

httpx only, through the approvals client (no `import prefect`), like the rest of the CLI.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

from prefect_micro_agents.adapter.approvals import ApprovalsClient
from prefect_micro_agents.audit import AUDIT_PREFIX
from prefect_micro_agents.errors import AgentError

__all__ = ["audit_trail", "parse_when"]

_PAGE = 200


def parse_when(text: str) -> datetime:
    """An ISO 8601 date (midnight UTC) or datetime (UTC unless it names a zone); ValueError says what is wrong."""
    try:
        when = datetime.fromisoformat(text.strip())
    except ValueError:
        raise ValueError(f"{text!r} is not an ISO date or datetime (e.g. 2026-11-26 or 2026-11-26T12:00:00Z)") \
            from None
    return when if when.tzinfo else when.replace(tzinfo=UTC)


def audit_trail(client: ApprovalsClient, since: datetime, until: datetime | None = None, *,
                intent: str | None = None, approver: str | None = None) -> list[dict[str, Any]]:
    """Every audit record with `since` <= at < `until`, optionally of one intent and one approver (case-insensitive),
    ordered by time (then run and position in its thread)."""
    found: list[dict[str, Any]] = []
    offset = 0
    while True:
        body = {"artifacts": {"key": {"like_": AUDIT_PREFIX}, "type": {"any_": ["table"]}},
                "sort": "UPDATED_DESC", "limit": _PAGE, "offset": offset}
        response = client.request("POST", "/artifacts/latest/filter", json=body)
        if response.status_code >= 400:
            raise AgentError(f"the server refused to list audit artifacts: HTTP {response.status_code} "
                             f"{response.text[:200]}")
        page = response.json()
        for collection in page:
            if _when(collection["updated"]) < since:
                # Sorted by last update: every record of this and later collections was published before `since`.
                return _ordered(found)
            if not str(collection.get("key") or "").startswith(AUDIT_PREFIX):
                continue
            found += [r for r in _records(collection) if _wanted(r, since, until, intent, approver)]
        if len(page) < _PAGE:
            return _ordered(found)
        offset += _PAGE


def _records(collection: dict[str, Any]) -> list[dict[str, Any]]:
    data = collection.get("data")
    rows = json.loads(data) if isinstance(data, str) else data
    return [r for r in rows or [] if isinstance(r, dict) and "at" in r]


def _wanted(record: dict[str, Any], since: datetime, until: datetime | None, intent: str | None,
            approver: str | None) -> bool:
    at = _when(str(record["at"]))
    return (since <= at and (until is None or at < until) and (intent is None or record.get("intent") == intent)
            and (approver is None or str(record.get("approver", "")).lower() == approver.lower()))


def _when(text: str) -> datetime:
    when = datetime.fromisoformat(text)
    return when if when.tzinfo else when.replace(tzinfo=UTC)


def _ordered(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return sorted(records, key=lambda r: (_when(str(r["at"])), str(r.get("run_id")), int(r.get("seq", 0))))
