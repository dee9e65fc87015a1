"""Recovery from a dead worker, Prefect's way: heartbeats, three automations, and a bounded number of new attempts.

A worker that dies (SIGKILL, OOM, a lost machine) leaves its flow run `Running` for good: nothing in Prefect marks
it by default. So, for the runs of deployments tagged `microagents-recover`:
1. every run heartbeats (`PREFECT_FLOWS_HEARTBEAT_FREQUENCY`, 30 s: the shortest Prefect allows);
2. automation "restart runs without heartbeats" (proactive): no heartbeat, final state or suspension within twice
   that after a heartbeat (or the Running state) -> the run is set Scheduled/AwaitingRetry with a message saying its
   worker died; "restart runs that never start": Pending for 60 s without Running (the worker died between taking
   the run and starting its process) -> the same. Straight to AwaitingRetry: a Crashed state and a reactive retry on
   its event hung on Prefect's event ordering in full test runs (retried only 15 minutes later);
3. automation "retry crashed runs" (reactive): a run Crashed some other way (a runner that saw its process die)
   whose `prefect.run-count` is at most N+1 is set to Scheduled/AwaitingRetry. A runner or worker starts it again:
   the flow re-runs from the top, every finished step comes back from its persisted result, earlier approvals are
   read back, and an interrupted tool call reconciles (the execution ledger);
4. an attempt beyond N+1 (N failed recoveries) runs nothing: `begin_attempt()` returns why, with what the run had
   executed, the flow ends Failed with it, and the event `microagents.recovery.exhausted` tells approvers.
Each new attempt first marks the task runs its dead predecessor left Running as Crashed: the server then releases
the tag-concurrency slots they held (a deploy's hold on `production-changes`) at once, not when the lease expires.
No watchdog of ours: Prefect's server does the watching.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable
from datetime import timedelta
from typing import Any
from uuid import UUID

__all__ = [
    "EXHAUSTED_EVENT",
    "exhausted_event",
    "HEARTBEAT_ENV",
    "MAX_RECOVERIES_ENV",
    "RECOVER_TAG",
    "begin_attempt",
    "enable_heartbeats",
    "ensure_recovery_automations",
    "executed_by",
    "heartbeat_seconds",
    "max_recoveries",
    "upsert_automations",
]

log = logging.getLogger(__name__)

RECOVER_TAG = "microagents-recover"  # deployments with this tag are watched and recovered
HEARTBEAT_ENV = "PREFECT_FLOWS_HEARTBEAT_FREQUENCY"
DEFAULT_HEARTBEAT_S = 30  # Prefect's minimum
MAX_RECOVERIES_ENV = "AGENT_MAX_RECOVERIES"
DEFAULT_MAX_RECOVERIES = 3
EXHAUSTED_EVENT = "microagents.recovery.exhausted"
_FINAL = ("Completed", "Failed", "Cancelled", "Crashed")
_WAITING = ("Suspended", "Paused")
START_WINDOW_S = 60  # Pending -> Running is a process start: seconds; under 8 concurrent starts on 2 cores, about 20


def heartbeat_seconds() -> int:
    return max(DEFAULT_HEARTBEAT_S, int(os.environ.get(HEARTBEAT_ENV, DEFAULT_HEARTBEAT_S)))


def max_recoveries() -> int:
    value = int(os.environ.get(MAX_RECOVERIES_ENV, DEFAULT_MAX_RECOVERIES))
    if value < 0:
        from prefect_micro_agents.errors import ConfigurationError

        raise ConfigurationError(f"{MAX_RECOVERIES_ENV} must be >= 0, not {value}")
    return value


def enable_heartbeats() -> int:
    """Make flow runs started by this process (a runner's children) heartbeat every 30 s unless configured."""
    os.environ.setdefault(HEARTBEAT_ENV, str(DEFAULT_HEARTBEAT_S))
    return heartbeat_seconds()


def _names(tag: str) -> tuple[str, str, str]:
    return (f"{tag}: restart runs without heartbeats", f"{tag}: restart runs that never start",
            f"{tag}: retry crashed runs")


def ensure_recovery_automations(tag: str = RECOVER_TAG, *, heartbeat_s: int | None = None,
                                recoveries: int | None = None) -> list[Any]:
    """Create or update the three automations for runs tagged `tag` (idempotent); returns them."""
    from prefect.client.schemas.objects import StateType
    from prefect.events.actions import ChangeFlowRunState
    from prefect.events.schemas.automations import AutomationCore, EventTrigger, Posture

    beat = heartbeat_s or heartbeat_seconds()
    n = max_recoveries() if recoveries is None else recoveries
    window = 2 * beat
    tagged: dict[str, str | list[str]] = {"prefect.resource.role": "tag", "prefect.resource.id": f"prefect.tag.{tag}"}
    zombie_name, unstarted_name, retry_name = _names(tag)
    def crash_when_silent(name: str, what: str, opens: set[str], closes: set[str], seconds: int,
                          message: str) -> Any:
        """Proactive: after an `opens` event, no `closes` event within `seconds` -> the run is started again. An
        event in both sets restarts an open window (an `opens`-only one would be ignored inside it)."""
        return AutomationCore(
            name=name, enabled=True, description=f"A run tagged {tag} that {what} is started again. "
                                                 "(prefect_micro_agents.adapter.recovery)",
            trigger=EventTrigger(
                after={f"prefect.flow-run.{e}" for e in opens},
                expect={f"prefect.flow-run.{e}" for e in (*closes, *_FINAL, *_WAITING)},
                match={"prefect.resource.id": "prefect.flow-run.*"}, match_related=tagged,
                for_each={"prefect.resource.id"}, posture=Posture.Proactive, threshold=1,
                within=timedelta(seconds=seconds)),
            # Straight to AwaitingRetry, not Crashed and then a second automation: that hop hangs on Prefect's event
            # ordering, and in full test runs some Crashed runs were retried only 15 minutes later.
            actions=[ChangeFlowRunState(state=StateType.SCHEDULED, name="AwaitingRetry",
                                        message=f"{message}: starting it again (automation {name!r})")],
        )

    # Running opens a window too: a process that dies before its first heartbeat is caught as well.
    zombie = crash_when_silent(
        zombie_name, f"stops heartbeating (every {beat} s) without ending or suspending",
        opens={"heartbeat", "Running"}, closes={"heartbeat", "Running"}, seconds=window,
        message=f"no heartbeat for {window} s: the worker running this flow run died")
    # A worker that dies between taking a run (Pending) and starting its process leaves a run that never heartbeats;
    # Pending closes too, so that a run taken again (after a resume) restarts an open window.
    unstarted = crash_when_silent(
        unstarted_name, f"stays Pending for {START_WINDOW_S} s (its worker took it, then died before starting it)",
        opens={"Pending"}, closes={"Pending", "Running", "Scheduled", "Cancelling", "heartbeat"},
        seconds=START_WINDOW_S,
        message=f"Pending for {START_WINDOW_S} s without starting: the worker that took this flow run died before "
                "it started")
    retry = AutomationCore(
        name=retry_name, enabled=True,
        description=f"A Crashed run tagged {tag} is started again, at most {n} times (run count 0..{n + 1}; 0: it "
                    "crashed before it started); one more attempt then ends it Failed with what it executed. "
                    "(prefect_micro_agents.adapter.recovery)",
        trigger=EventTrigger(
            expect={"prefect.flow-run.Crashed"},
            match={"prefect.resource.id": "prefect.flow-run.*",
                   # 0: it never started (nothing ran; safe to start), 1..N+1: it ran that many attempts
                   "prefect.run-count": [str(i) for i in range(0, n + 2)]},
            # One bucket per run: with one shared bucket, runs that crash at the same moment interfere (seen in full
            # test runs: of runs crashed together, some were never retried).
            match_related=tagged, for_each={"prefect.resource.id"}, posture=Posture.Reactive, threshold=1),
        actions=[ChangeFlowRunState(
            state=StateType.SCHEDULED, name="AwaitingRetry",
            message=f"crashed: starting it again (automation {retry_name!r}); finished steps are not repeated")],
    )
    from prefect.client.orchestration import get_client

    with get_client(sync_client=True) as client:
        return upsert_automations(client, (zombie, unstarted, retry))


def upsert_automations(client: Any, automations: Iterable[Any]) -> list[Any]:
    """Each automation created, or updated when it differs from the one of its name on the server, or left alone
    when it is the same (extra copies of a name deleted); returns them as the server has them. Left alone, not
    updated: an update resets the trigger's open windows, so a runner restarted right after a worker died (what a
    supervisor does) would otherwise erase the countdown of the runs it lost, and a waiting run its deadline."""
    found = []
    for automation in automations:
        existing = client.read_automations_by_name(automation.name)
        for extra in existing[1:]:
            client.delete_automation(extra.id)
        if not existing:
            automation_id = client.create_automation(automation)
        elif _same(existing[0], automation):
            automation_id = existing[0].id
        else:
            client.update_automation(existing[0].id, automation)
            automation_id = existing[0].id
        found.append(client.read_automation(automation_id))
    return found


def _same(existing: Any, wanted: Any) -> bool:
    """Whether an automation on the server already is `wanted` (ids aside). The trigger's `expect`, `after` and
    `for_each` are sets: compared as sets, since their JSON order changes with each process's string hashing."""
    def shape(a: Any) -> Any:
        trigger = a.trigger.model_dump(mode="json", exclude={"id"})
        for field in ("expect", "after", "for_each"):
            trigger[field] = sorted(trigger.get(field) or [])
        return (a.name, a.description, a.enabled, trigger, [x.model_dump(mode="json") for x in a.actions])

    return bool(shape(existing) == shape(wanted))


def executed_by(run_id: str | UUID) -> list[tuple[str, str]]:
    """(task run name, state name) of every tool execution of a flow run, oldest first: what it changed."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId, TaskRunFilter, TaskRunFilterName
    from prefect.client.schemas.sorting import TaskRunSort

    with get_client(sync_client=True) as client:
        runs = client.read_task_runs(
            flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[UUID(str(run_id))])),
            task_run_filter=TaskRunFilter(name=TaskRunFilterName(like_="execute ")),
            sort=TaskRunSort.EXPECTED_START_TIME_ASC, limit=200)
    return [(r.name, r.state.name if r.state and r.state.name else "?") for r in runs if r.name.startswith("execute ")]


def begin_attempt() -> str | None:
    """Call first in a flow whose deployment is tagged for recovery. On a new attempt after a crash it releases
    what the dead attempt held; returns None to go on, or, past the last allowed attempt, why to stop (end the run
    Failed with it)."""
    from prefect.runtime import flow_run

    attempt = int(flow_run.run_count or 1)
    if attempt <= 1:
        return None
    run_id = str(flow_run.get_id())
    released = _crash_leftovers(run_id)
    allowed = max_recoveries() + 1
    if released:
        log.warning("attempt %d of at most %d after a crash: %d task run(s) the dead attempt left running marked "
                    "Crashed (their concurrency slots released)", attempt, allowed, released)
    if attempt <= allowed:
        return None
    done = executed_by(run_id)
    what = "; ".join(f"{name}: {state}" for name, state in done) or "no tool call"
    message = (f"gave up after {allowed - 1} automatic recoveries: the worker running this flow run died {allowed} "
               f"time{'s' if allowed != 1 else ''}. What it executed before: {what}. A Crashed tool call may have been half done: check the "
               "targets before you run it again.")
    _emit_exhausted(run_id, message)
    return message


def _crash_leftovers(run_id: str) -> int:
    """Mark the task runs still Pending/Running from a dead attempt Crashed; the server frees their slots."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import (
        FlowRunFilter,
        FlowRunFilterId,
        TaskRunFilter,
        TaskRunFilterState,
        TaskRunFilterStateType,
    )
    from prefect.client.schemas.objects import StateType
    from prefect.states import Crashed

    states = TaskRunFilterState(type=TaskRunFilterStateType(any_=[StateType.RUNNING, StateType.PENDING]))
    with get_client(sync_client=True) as client:
        stale = client.read_task_runs(flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[UUID(run_id)])),
                                      task_run_filter=TaskRunFilter(state=states), limit=200)
        for task_run in stale:
            client.set_task_run_state(task_run.id, Crashed(message="the worker running its flow run died; a new "
                                                                   "attempt of the flow run started"), force=True)
    return len(stale)


def exhausted_event(run_id: str, flow_id: str, deployment_id: str | None, message: str) -> dict[str, Any]:
    """The `microagents.recovery.exhausted` event of one run: the run is its resource; its flow and deployment are
    related, so automations' templates can say `{{ flow.name }}` and `{{ deployment.name }}` as for Prefect's own
    flow-run events."""
    related = [{"prefect.resource.id": f"prefect.flow.{flow_id}", "prefect.resource.role": "flow"}]
    if deployment_id:
        related.append({"prefect.resource.id": f"prefect.deployment.{deployment_id}",
                        "prefect.resource.role": "deployment"})
    return {"event": EXHAUSTED_EVENT, "resource": {"prefect.resource.id": f"prefect.flow-run.{run_id}"},
            "related": related, "payload": {"message": message}}


def _emit_exhausted(run_id: str, message: str) -> None:
    from prefect.client.orchestration import get_client
    from prefect.events import emit_event

    with get_client(sync_client=True) as client:
        run = client.read_flow_run(UUID(run_id))
    emit_event(**exhausted_event(run_id, str(run.flow_id), str(run.deployment_id) if run.deployment_id else None,
                                 message))
