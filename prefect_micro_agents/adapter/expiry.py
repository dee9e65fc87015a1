"""Approval expiry per tool (issue 14), Prefect's way: an event when a run starts waiting, proactive automations that
act when nobody decided, and Prefect's own pause timeout as the fail-safe.

Before a run suspends for a human it emits `microagents.approval.waiting.<on_expiry>-<T>s.remind-<R>s` (the run is
the event's resource; the payload names the call, the deadline and who may decide). Per distinct value, created
lazily and idempotently by name (as recovery.py does):
- policy `reject`, automation "expire approvals after T s": after that event, no resume or final state of the run
  within T -> the run is set Scheduled("Resuming"). Its runner starts it again, the flow re-runs from the top, finds no
  answer under the suspend key and the key already used (Prefect refuses a second suspension under it), and records
  `approval_expired` with the reason in the thread instead of suspending: the agent sees it and goes on. Prefect's pause
  timeout for such a suspension is T plus a grace period, so a run whose automation never fires still fails, as
  under `fail`. A resume cannot do this: the server refuses a resume without input when the pause has a form.
- policy `fail`: no automation; Prefect's pause timeout (T) fails the run, as before.
- `remind_before_s`, automation "remind approvers after T-R s": the same window, shorter; the action is Prefect's
  SendNotification to the block AGENT_APPROVAL_REMINDER_BLOCK names (`<block type slug>/<name>`, e.g.
  `slack-webhook/approvers`). Without one, no reminder automation exists and the run's log says so once.
The waiting event is in each trigger's `expect` as well as its `after`: a second wait of the same run restarts the
window instead of being ignored inside the one its first wait opened.

The restart is not a new attempt for recovery.begin_attempt: the server's rule for leaving a Paused state marks the
run as resuming even for a forced state change, so Prefect's run count stays as it was (test_expiry checks it with no
recoveries allowed).

The deadline is recorded when a run first waits under a suspend key (a flow-run input written once), so a run started
again says when its wait expired and a run that crashed before suspending keeps its deadline.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any
from uuid import UUID

from prefect_micro_agents.approval_policy import Expiry
from prefect_micro_agents.errors import ConfigurationError

__all__ = [
    "EXPIRY_RESTART",
    "REMINDER_BLOCK_ENV",
    "WAITING_EVENT",
    "Deadline",
    "announce",
    "deadline_for",
    "deadline_key",
    "ensure_expiry_automations",
    "prefect_timeout",
    "unanswered",
]

REMINDER_BLOCK_ENV = "AGENT_APPROVAL_REMINDER_BLOCK"
WAITING_EVENT = "microagents.approval.waiting"
EXPIRY_RESTART = "approval expired:"  # the message of the state the expiry automation sets starts with this
GRACE_S = 60  # Prefect's own timeout of a `reject` wait: T + max(60 s, T/10), after the automation had its chance
_RESUMED = ("Resuming", "Pending", "Running", "Completed", "Failed", "Cancelled", "Crashed", "Cancelling",
            "AwaitingRetry")
_NO_BLOCK_NOTED = "microagents-no-reminder-block"


@dataclass(frozen=True)
class Deadline:
    """One wait's deadline, as first recorded under its suspend key."""

    at: datetime
    on_expiry: str
    timeout_s: int
    who: str  # who could have decided

    def text(self) -> str:
        return self.at.strftime("%Y-%m-%d %H:%M:%S UTC")


def deadline_key(suspend_key: str) -> str:
    """The flow-run input holding the deadline of the wait under `suspend_key` (`microagents show` reads it)."""
    return f"microagents-deadline-{suspend_key}"


def deadline_for(suspend_key: str, expiry: Expiry, who: str) -> tuple[Deadline, bool]:
    """The deadline of the wait under `suspend_key`: recorded now if this is its first wait (returns it with True),
    else the one recorded before (False)."""
    from prefect.input.actions import create_flow_run_input, read_flow_run_input

    stored = read_flow_run_input(deadline_key(suspend_key))
    if isinstance(stored, dict):
        return Deadline(datetime.fromisoformat(stored["at"]), stored["on_expiry"], int(stored["timeout_s"]),
                        stored["who"]), False
    at = (datetime.now(UTC) + timedelta(seconds=expiry.timeout_s)).replace(microsecond=0)
    create_flow_run_input(deadline_key(suspend_key), {"at": at.isoformat(), "on_expiry": expiry.on_expiry,
                                                     "timeout_s": expiry.timeout_s, "who": who})
    return Deadline(at, expiry.on_expiry, expiry.timeout_s, who), True


def unanswered(run_id: str, suspend_key: str, deadline: Deadline) -> bool:
    """Whether the wait under `suspend_key` is over without an answer (call it when none is stored): Prefect already
    suspended the run under that key once (it would refuse again), or the deadline passed before it could."""
    from prefect.client.orchestration import get_client

    with get_client(sync_client=True) as client:
        run = client.read_flow_run(UUID(run_id))
    fired = suspend_key in (run.empirical_policy.pause_keys or set())
    return fired or datetime.now(UTC) >= deadline.at


def prefect_timeout(expiry: Expiry, deadline: Deadline) -> int:
    """The pause timeout to give Prefect: the time left, plus the grace period when an automation acts first."""
    left = max(1, int((deadline.at - datetime.now(UTC)).total_seconds()))
    return left + (max(GRACE_S, expiry.timeout_s // 10) if expiry.on_expiry == "reject" else 0)


def _event_name(expiry: Expiry) -> str:
    remind = expiry.remind_after_s if expiry.remind_after_s is not None else "none"
    return f"{WAITING_EVENT}.{expiry.on_expiry}-{expiry.timeout_s}s.remind-{remind}s"


def announce(run_id: str, suspend_key: str, expiry: Expiry, deadline: Deadline, call: str,
             where: str) -> None:
    """Emit the waiting event (synchronously: the process exits on suspension, before a background sender would)."""
    from prefect.client.orchestration import get_client
    from prefect.events import Event

    with get_client(sync_client=True) as client:
        run = client.read_flow_run(UUID(run_id))
        related = [{"prefect.resource.id": f"prefect.flow.{run.flow_id}", "prefect.resource.role": "flow"}]
        if run.deployment_id:
            related.append({"prefect.resource.id": f"prefect.deployment.{run.deployment_id}",
                            "prefect.resource.role": "deployment"})
        event = Event(
            event=_event_name(expiry),
            resource={"prefect.resource.id": f"prefect.flow-run.{run_id}", "prefect.resource.name": run.name,
                      "microagents.on-expiry": expiry.on_expiry, "microagents.expires-after-s": str(expiry.timeout_s),
                      "microagents.suspend-key": suspend_key},
            related=related,  # type: ignore[arg-type]
            payload={"call": call, "deadline": deadline.text(), "on_expiry": expiry.describe(), "who": deadline.who,
                     "where": where, "run_name": run.name},
        )
        client.request("POST", "/events", json=[event.model_dump(mode="json")]).raise_for_status()


def ensure_expiry_automations(expiry: Expiry, logger: logging.Logger | logging.LoggerAdapter[logging.Logger]) -> \
        list[Any]:
    """Create (or leave alone, when already right) the automations this wait needs; returns them."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.objects import StateType
    from prefect.events.actions import ChangeFlowRunState, SendNotification
    from prefect.events.schemas.automations import AutomationCore, EventTrigger, Posture

    from prefect_micro_agents.adapter.recovery import upsert_automations

    def window(name: str, after: str, seconds: int, action: Any, description: str) -> AutomationCore:
        return AutomationCore(
            name=name, enabled=True, description=f"{description} (prefect_micro_agents.adapter.expiry)",
            trigger=EventTrigger(
                after={after}, expect={after, *(f"prefect.flow-run.{s}" for s in _RESUMED)},
                match={"prefect.resource.id": "prefect.flow-run.*"}, for_each={"prefect.resource.id"},
                posture=Posture.Proactive, threshold=1, within=timedelta(seconds=seconds)),
            actions=[action])

    wanted = []
    t = expiry.timeout_s
    if expiry.on_expiry == "reject":
        name = f"microagents: expire approvals after {t} s"
        wanted.append(window(
            name, f"{WAITING_EVENT}.reject-{t}s.*", t,
            ChangeFlowRunState(state=StateType.SCHEDULED, name="Resuming",
                               message=f"{EXPIRY_RESTART} nobody decided within {t} s; starting the run again to "
                                       f"record that in its thread (automation {name!r})"),
            f"A run waiting for an approval whose tool's policy is on_expiry=reject, undecided after {t} s, is "
            "started again; it records the expiry in the agent's thread instead of waiting."))
    with get_client(sync_client=True) as client:
        if expiry.remind_after_s is not None:
            block = _reminder_block(client, logger)
            if block is not None:
                after = expiry.remind_after_s
                wanted.append(window(
                    f"microagents: remind approvers after {after} s via {block[1]}",
                    f"{WAITING_EVENT}.*.remind-{after}s", after,
                    SendNotification(block_document_id=block[0], subject=REMINDER_SUBJECT, body=REMINDER_BODY),
                    f"A run still waiting for a decision {after} s after it asked: the approvers are reminded "
                    f"through the notification block {block[1]}."))
        return upsert_automations(client, wanted)


REMINDER_SUBJECT = "Reminder: {{ event.payload.call }} is still undecided (flow run {{ event.payload.run_name }})"
REMINDER_BODY = ("Flow run {{ event.payload.run_name }} ({{ event.resource.id }}) still waits for a decision on "
                 "{{ event.payload.call }}. Who may decide: {{ event.payload.who }}. Deadline: "
                 "{{ event.payload.deadline }}; after that {{ event.payload.on_expiry }}. To decide: "
                 "{{ event.payload.where }}.")


def _reminder_block(client: Any, logger: logging.Logger | logging.LoggerAdapter[logging.Logger]) -> \
        tuple[UUID, str] | None:
    """(id, reference) of the notification block reminders go to, or None (logged once per run) when none is set."""
    reference = os.environ.get(REMINDER_BLOCK_ENV, "").strip()
    if not reference:
        from prefect.input.actions import create_flow_run_input, read_flow_run_input

        if read_flow_run_input(_NO_BLOCK_NOTED) is None:
            create_flow_run_input(_NO_BLOCK_NOTED, True)
            logger.warning("a tool's approval policy asks for a reminder (remind_before_s), but %s names no "
                           "notification block: no reminder is sent. Set it to <block type slug>/<block name>, e.g. "
                           "slack-webhook/approvers", REMINDER_BLOCK_ENV)
        return None
    slug, _, name = reference.partition("/")
    if not slug or not name:
        raise ConfigurationError(f"{REMINDER_BLOCK_ENV}={reference!r}: expected <block type slug>/<block name>, "
                                 "e.g. slack-webhook/approvers")
    from prefect.exceptions import ObjectNotFound

    try:
        block = client.read_block_document_by_name(name, block_type_slug=slug)
    except ObjectNotFound:
        raise ConfigurationError(f"{REMINDER_BLOCK_ENV}={reference!r}: the server has no {slug} block named "
                                 f"{name!r} (create it first: see the README, Approval policies)") from None
    return block.id, reference
