"""Prefect's in-memory causal ordering for the trigger service, made to survive a server restart, without a race.

Prefect's trigger service evaluates an event that `follows` another only once it has processed that leader, and a
single server remembers what it processed in memory. After a restart it has forgotten: a flow run's next state event
(say the `Crashed` set by the zombie automation) follows a state event the previous server process handled, so it
is held until Prefect gives up on its leader, 15 minutes later (`PRECEDING_EVENT_LOOKBACK`). Every reactive
automation on it waits that long: the retry of a run whose worker died with the server.

This is Prefect's own memory ordering plus one rule: a leader that is stored in the events table, received before
this server process started, counts as processed (this process can never see it arrive; the earlier one did). And
one fix: registering an event as a follower is atomic with the check that its leader was not processed yet (see
`wait_for_leader`).
Selected with Prefect's setting `PREFECT_SERVER_EVENTS_CAUSAL_ORDERING=prefect_micro_agents.adapter.ordering` (the local server
sets it; a Redis-backed server, whose ordering lives in Redis, does not need it).
"""

from __future__ import annotations

import asyncio
import os
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from uuid import UUID

import anyio
from prefect.server.events.ordering import PRECEDING_EVENT_LOOKBACK, EventArrivedEarly
from prefect.server.events.ordering.memory import IN_FLIGHT_EVENT_TIMEOUT
from prefect.server.events.ordering.memory import CausalOrdering as _MemoryOrdering
from prefect.server.events.schemas.events import ReceivedEvent

__all__ = ["MODULE", "CausalOrdering"]

MODULE = "prefect_micro_agents.adapter.ordering"


def _process_start() -> datetime:
    """When this process started (Linux: /proc); elsewhere, now (this module is imported as the trigger service
    handles its first event, so an event received just before might be taken for an earlier process's)."""
    try:
        ticks = int(Path("/proc/self/stat").read_text().rsplit(")", 1)[1].split()[19])
        boot = next(int(line.split()[1]) for line in Path("/proc/stat").read_text().splitlines()
                    if line.startswith("btime "))
        return datetime.fromtimestamp(boot + ticks / os.sysconf("SC_CLK_TCK"), UTC)
    except (OSError, ValueError, IndexError, StopIteration):
        return datetime.now(UTC)


_STARTED = _process_start()


class CausalOrdering(_MemoryOrdering):
    _instances: dict[str, _MemoryOrdering] = {}  # noqa: RUF012 (the parent's per-scope singletons, kept apart)
    _locks: dict[str, asyncio.Lock] = {}  # noqa: RUF012

    async def event_has_been_seen(self, event: Any) -> bool:
        if await super().event_has_been_seen(event):
            return True
        event_id = event if isinstance(event, UUID) else event.id
        return await _received_before_this_process(event_id)

    async def wait_for_leader(self, event: ReceivedEvent) -> None:
        """Prefect's, with its last step made atomic. Prefect checks that the leader was not seen, then registers
        the event as its follower under a second lock: with two consumers (Prefect's default), a leader that
        finishes in between has already looked for its followers, and the event waits until the 15-minute
        lost-follower sweep (seen in CI: a Crashed event behind its Running event, so no retry for 15 minutes)."""
        if not event.follows or event.follows == event.id:
            return
        if datetime.now(UTC) - event.received >= PRECEDING_EVENT_LOOKBACK:
            return
        if await self.event_has_been_seen(event.follows):
            return
        if await self.event_has_started_processing(event.follows):
            try:
                with anyio.fail_after(IN_FLIGHT_EVENT_TIMEOUT.total_seconds()):
                    while not await self.event_has_been_seen(event.follows):
                        await asyncio.sleep(0.25)
                    return
            except TimeoutError:
                pass
        async with self._lock:  # the leader records itself seen under this lock, then collects its followers
            if event.follows in self._seen_events:
                return
            self._events[event.id] = event
            self._followers.setdefault(event.follows, set()).add(event.id)
            self._waitlist[event.id] = event.received
        raise EventArrivedEarly(event)


async def _received_before_this_process(event_id: UUID) -> bool:
    import sqlalchemy as sa
    from prefect.server.database import provide_database_interface

    db = provide_database_interface()
    async with db.session_context() as session:
        received = await session.scalar(sa.select(db.Event.received).where(db.Event.id == event_id))
    if received is None:
        return False
    if received.tzinfo is None:
        received = received.replace(tzinfo=UTC)
    return bool(received < _STARTED)
