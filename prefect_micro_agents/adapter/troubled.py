"""Runs that need a look, as `microagents runs` lists them: stuck, crashed, recovering, or given up.

- stuck: Running, but no heartbeat for over twice the heartbeat interval (its worker is probably dead; the zombie
  automation marks it Crashed soon) or, for a run that never heartbeated, started that long ago;
- crashed: Crashed (its worker died; the retry automation starts it again unless it ran out of attempts);
- recovering: waiting to start again after a crash (`AwaitingRetry`), or any later attempt still going;
- gave up: Failed after the last allowed recovery (`prefect_micro_agents.adapter.recovery`).
Each comes with what it already executed: its `execute <tool>` task runs and their states, oldest first. Only
Prefect's REST API is read (runs, task runs, heartbeat events); nothing is changed.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from prefect_micro_agents.adapter.approvals import ApprovalsClient
from prefect_micro_agents.adapter.recovery import heartbeat_seconds

__all__ = ["TroubledRun", "troubled_runs"]

GAVE_UP = "gave up after"  # how recovery.begin_attempt's message starts


@dataclass
class TroubledRun:
    run_id: str
    name: str
    status: str  # stuck | crashed | recovering | gave up
    state: str  # Prefect's state name
    attempt: int  # Prefect's run_count
    why: str
    last_heartbeat: str | None
    executed: list[tuple[str, str]] = field(default_factory=list)  # (task run name, state name)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def _at(value: str | None) -> datetime | None:
    return datetime.fromisoformat(value.replace("Z", "+00:00")) if value else None


def _runs(client: ApprovalsClient, types: list[str], since: datetime) -> list[dict[str, Any]]:
    body: dict[str, Any] = {"flow_runs": {"state": {"type": {"any_": types}}}, "sort": "START_TIME_DESC",
                            "limit": 200}
    response = client.request("POST", "/flow_runs/filter", json=body)
    response.raise_for_status()
    runs: list[dict[str, Any]] = response.json()
    # Running/Scheduled runs are listed whatever their age; final ones only if they ended after `since`.
    return [r for r in runs if r["state_type"] in ("RUNNING", "PENDING", "SCHEDULED")
            or (_at(r.get("end_time") or r["state"]["timestamp"]) or since) >= since]


def _heartbeats(client: ApprovalsClient, run_ids: list[str], since: datetime, until: datetime) -> dict[str, datetime]:
    """The newest heartbeat of each run since `since`."""
    if not run_ids:
        return {}
    body = {"filter": {"occurred": {"since": since.isoformat(), "until": until.isoformat()},
                       "event": {"name": ["prefect.flow-run.heartbeat"]},
                       "resource": {"id": [f"prefect.flow-run.{r}" for r in run_ids]}},
            "limit": 50}
    newest: dict[str, datetime] = {}
    response = client.request("POST", "/events/filter", json=body)
    while True:
        response.raise_for_status()
        page = response.json()
        for event in page["events"]:
            run = event["resource"]["prefect.resource.id"].removeprefix("prefect.flow-run.")
            at = _at(event["occurred"])
            if at and (run not in newest or at > newest[run]):
                newest[run] = at
        if not page.get("next_page"):
            return newest
        response = client.request("GET", page["next_page"].split("/api", 1)[-1])


def _executed(client: ApprovalsClient, run_ids: list[str]) -> dict[str, list[tuple[str, str]]]:
    done: dict[str, list[tuple[str, str]]] = {r: [] for r in run_ids}
    if not run_ids:
        return done
    body = {"flow_runs": {"id": {"any_": run_ids}}, "task_runs": {"name": {"like_": "execute "}},
            "sort": "EXPECTED_START_TIME_ASC", "limit": 200}
    response = client.request("POST", "/task_runs/filter", json=body)
    response.raise_for_status()
    for task in response.json():
        if task["name"].startswith("execute ") and task["flow_run_id"] in done:
            done[task["flow_run_id"]].append((task["name"], task.get("state_name") or task["state_type"]))
    return done


def troubled_runs(client: ApprovalsClient, *, since: timedelta = timedelta(hours=24),
                  now: datetime | None = None) -> list[TroubledRun]:
    """Every run that is stuck, crashed, recovering or gave up (final ones: ended within `since`), newest first."""
    now = now or datetime.now(UTC)
    window = timedelta(seconds=2 * heartbeat_seconds())
    runs = _runs(client, ["RUNNING", "PENDING", "SCHEDULED", "CRASHED", "FAILED"], now - since)
    live = [r["id"] for r in runs if r["state_type"] == "RUNNING"]
    beats = _heartbeats(client, live, now - max(since, timedelta(hours=1)), now)
    found: list[TroubledRun] = []
    for run in runs:
        kind, state, message = run["state_type"], run["state_name"] or run["state_type"], run["state"]["message"] or ""
        attempt = int(run.get("run_count") or 0)
        beat = beats.get(run["id"])
        status = why = ""
        if kind == "RUNNING":
            quiet_since = beat or _at(run.get("start_time")) or now
            if now - quiet_since > window:
                status = "stuck"
                why = (f"no heartbeat for {int((now - quiet_since).total_seconds())} s (expected every "
                       f"{heartbeat_seconds()} s): its worker is probably dead"
                       if beat else f"running {int((now - quiet_since).total_seconds())} s without a heartbeat")
            elif attempt > 1:
                status, why = "recovering", f"attempt {attempt}, running"
        elif kind == "CRASHED":
            status, why = "crashed", message or "its worker died"
        elif kind == "SCHEDULED" and state == "AwaitingRetry":
            status, why = "recovering", message or "waiting to start again after a crash"
        elif kind in ("PENDING", "SCHEDULED") and attempt > 1:
            status, why = "recovering", f"attempt {attempt}, {state}"
        elif kind == "FAILED" and message.startswith(GAVE_UP):
            status, why = "gave up", message
        if status:
            found.append(TroubledRun(run["id"], run["name"], status, state, attempt, why,
                                     beat.isoformat() if beat else None))
    executed = _executed(client, [t.run_id for t in found])
    for t in found:
        t.executed = executed[t.run_id]
    return found
