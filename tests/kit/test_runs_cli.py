"""`microagents runs` against a real Prefect server: which runs it calls stuck, crashed, recovering or given up, and
what it says each executed. The runs are made through Prefect's REST API with the states a dead worker, the zombie
automation and the retry automation leave (tests/app/test_recovery.py watches the real thing happen); the heartbeats are
real `prefect.flow-run.heartbeat` events.
"""

from __future__ import annotations

import json
import time
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest

from prefect_micro_agents.adapter.approvals import ApprovalsClient
from prefect_micro_agents.adapter.local_server import LocalPrefectServer
from prefect_micro_agents.adapter.troubled import troubled_runs
from prefect_micro_agents.cli import main
from prefect_harness import retrying

pytestmark = pytest.mark.slow


def _flow(http: httpx.Client) -> str:
    response = retrying(http.post, "/flows/", json={"name": "troubled-runs-test"})
    response.raise_for_status()
    return str(response.json()["id"])


def _set(http: httpx.Client, run: str, state: dict[str, Any]) -> None:
    response = retrying(http.post, f"/flow_runs/{run}/set_state", json={"state": state, "force": True})
    response.raise_for_status()
    assert response.json()["status"] == "ACCEPT", response.json()


def _run(http: httpx.Client, flow: str, *states: dict[str, Any]) -> str:
    response = retrying(http.post, "/flow_runs/", json={"flow_id": flow, "name": f"t-{uuid.uuid4().hex[:8]}"})
    response.raise_for_status()
    run = str(response.json()["id"])
    for state in states:
        _set(http, run, state)
    return run


def _task(http: httpx.Client, run: str, name: str, state: str) -> None:
    response = retrying(http.post, "/task_runs/", json={
        "flow_run_id": run, "task_key": f"execute-{name}", "dynamic_key": uuid.uuid4().hex, "name": name,
        "state": {"type": state}})
    response.raise_for_status()


def _heartbeat(http: httpx.Client, run: str, at: datetime) -> None:
    """Emit a heartbeat and wait until the server has stored it (events are persisted in batches)."""
    event_id = str(uuid.uuid4())
    event = {"id": event_id, "occurred": at.isoformat(), "event": "prefect.flow-run.heartbeat",
             "resource": {"prefect.resource.id": f"prefect.flow-run.{run}"}, "payload": {}, "related": []}
    retrying(http.post, "/events", json=[event]).raise_for_status()
    body = {"filter": {"id": {"id": [event_id]}, "occurred": {"since": (at - timedelta(minutes=1)).isoformat(),
                                                               "until": (at + timedelta(minutes=1)).isoformat()}}}
    deadline = time.monotonic() + 30
    while not retrying(http.post, "/events/filter", json=body).json()["events"]:
        assert time.monotonic() < deadline, "the heartbeat event was not stored"
        time.sleep(0.2)


RUNNING = {"type": "RUNNING"}
SCHEDULED = {"type": "SCHEDULED"}


@pytest.fixture
def runs(prefect_server: LocalPrefectServer, http: httpx.Client) -> dict[str, str]:
    flow = _flow(http)
    now = datetime.now(UTC)
    made = {
        "dead": _run(http, flow, RUNNING),  # heartbeated, then went quiet
        "alive": _run(http, flow, RUNNING),  # heartbeats on time
        "crashed": _run(http, flow, RUNNING, {"type": "CRASHED", "message": "no heartbeat for 60 s"}),
        # crashed once, then the retry automation scheduled it again: its second attempt is on its way
        "retrying": _run(http, flow, RUNNING, {"type": "CRASHED"},
                         {"type": "SCHEDULED", "name": "AwaitingRetry", "message": "crashed: starting it again"}),
        "second": _run(http, flow, RUNNING, {"type": "CRASHED"}, SCHEDULED, RUNNING),  # attempt 2, healthy
        "gave-up": _run(http, flow, RUNNING, {"type": "FAILED", "message": "gave up after 3 automatic recoveries: "
                                                                           "the worker ... died 4 times"}),
        "failed": _run(http, flow, RUNNING, {"type": "FAILED", "message": "production e2e failed"}),
        "done": _run(http, flow, RUNNING, {"type": "COMPLETED"}),
    }
    _heartbeat(http, made["dead"], now - timedelta(seconds=30))
    _task(http, made["dead"], "execute deploy_backend_to_prod sha=abc123", "RUNNING")
    _task(http, made["crashed"], "execute deploy_backend_to_prod sha=abc123", "COMPLETED")
    _task(http, made["crashed"], "execute deploy_frontend_to_prod sha=abc123", "RUNNING")
    _task(http, made["crashed"], "read_tags", "COMPLETED")  # not a tool execution: not listed
    for run in ("alive", "second"):
        _heartbeat(http, made[run], now + timedelta(seconds=100))
    return made


def test_runs_lists_stuck_crashed_recovering_and_given_up_runs_with_what_they_executed(
    runs: dict[str, str], prefect_server: LocalPrefectServer, capsys: pytest.CaptureFixture[str]
) -> None:
    later = datetime.now(UTC) + timedelta(seconds=120)  # 90 s after the dead run's heartbeat; 60 s is the window
    with ApprovalsClient() as client:
        found = {t.run_id: t for t in troubled_runs(client, now=later)}
    status = {name: found[run].status for name, run in runs.items() if run in found}
    assert status == {"dead": "stuck", "crashed": "crashed", "retrying": "recovering", "second": "recovering",
                      "gave-up": "gave up"}, status
    dead = found[runs["dead"]]
    assert dead.executed == [("execute deploy_backend_to_prod sha=abc123", "Running")]
    assert "no heartbeat for 1" in dead.why and dead.last_heartbeat is not None
    assert found[runs["crashed"]].executed == [("execute deploy_backend_to_prod sha=abc123", "Completed"),
                                               ("execute deploy_frontend_to_prod sha=abc123", "Running")]
    assert found[runs["retrying"]].attempt == 1 and found[runs["second"]].attempt == 2
    assert found[runs["gave-up"]].why.startswith("gave up after 3")

    # Right now, nothing is stuck yet: the dead run's last heartbeat is only 30 s old.
    with ApprovalsClient() as client:
        assert runs["dead"] not in {t.run_id for t in troubled_runs(client)}

    # The command prints the same, with each run's executed calls under it; --json for machines.
    assert main(["runs"]) == 0
    out = capsys.readouterr().out
    crashed_line = next(ln for ln in out.splitlines() if ln.startswith(runs["crashed"]))
    assert "crashed" in crashed_line and "no heartbeat for 60 s" in crashed_line
    assert "    execute deploy_frontend_to_prod sha=abc123: Running" in out
    assert main(["runs", "--json"]) == 0
    listed = {r["run_id"]: r for r in json.loads(capsys.readouterr().out)}
    assert listed[runs["gave-up"]]["status"] == "gave up" and runs["done"] not in listed
    assert runs["failed"] not in listed and runs["alive"] not in listed


def test_runs_says_what_is_wrong_with_bad_input(prefect_server: LocalPrefectServer,
                                                capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["runs", "--hours", "0"]) == 1
    assert "--hours must be positive" in capsys.readouterr().err
