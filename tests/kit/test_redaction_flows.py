"""Redaction in real flow runs on the session's Prefect server: what run_agent stores and publishes for a thread it
was handed unredacted, what the execute task persists, what a run's logs carry (the engine's traceback of a failed
task included). The deploy bot's report artifact: tests/app/test_report_redaction.py. The flows (tests/kit/redaction_flows.py) run in a fresh Python process."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from prefect_micro_agents.adapter.local_server import LocalPrefectServer
from prefect_micro_agents.adapter.ledger import ExecutionLedger
from prefect_micro_agents.adapter.store import ThreadStore
from prefect_micro_agents.testing.scripted import ScriptedModel
from prefect_harness import stored_text

pytestmark = pytest.mark.slow

HERE = Path(__file__).resolve().parent
CANARIES = {"LEDGER_TOKEN": "canary-context-2b7c9d1e", "TOOL_TOKEN": "canary-tool-5e8f0a3b",
            "ERROR_TOKEN": "canary-error-7d1c4b9a"}


def run_logs(http: httpx.Client, run_id: str, until: str, timeout: float = 30) -> list[str]:
    """The run's log messages once one containing `until` arrived (logs reach the API in batches)."""
    deadline = time.monotonic() + timeout
    while True:
        body = {"logs": {"flow_run_id": {"any_": [run_id]}}, "limit": 200}
        messages = [log["message"] for log in http.post("/logs/filter", json=body).json()]
        if any(until in m for m in messages) or time.monotonic() > deadline:
            return messages
        time.sleep(0.3)


def artifacts(http: httpx.Client, run_id: str) -> list[dict[str, Any]]:
    return http.post("/artifacts/filter", json={"artifacts": {"flow_run_id": {"any_": [run_id]}}}).json()


@pytest.fixture(scope="module")
def flows(prefect_server: LocalPrefectServer, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    scripted = ScriptedModel(tmp_path_factory.mktemp("redaction-model"))
    scripted.enqueue({"call": {"intent": "done_for_now", "message": "nothing to pay"}})
    env = {**os.environ, **CANARIES}
    proc = subprocess.run([sys.executable, str(HERE / "redaction_flows.py"), scripted.model], env=env, cwd=HERE,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    runs = json.loads(proc.stdout.strip().splitlines()[-1])
    return {"runs": runs, "console": proc.stderr, "scripted": scripted}  # Prefect's console handler: stderr


def test_run_agent_redacts_the_thread_it_was_handed(flows: dict[str, Any], http: httpx.Client) -> None:
    canary, run = CANARIES["LEDGER_TOKEN"], flows["runs"]["agent"]
    assert run["type"] == "COMPLETED" and run["result"] == "done"
    thread = ThreadStore().load(run["id"], "expense")
    assert thread is not None and "rotate the ledger token to [redacted:LEDGER_TOKEN]" in thread.to_json()
    assert canary not in ThreadStore().path(run["id"], "expense").read_text()
    published = artifacts(http, run["id"])
    assert published and all(canary not in json.dumps(a) for a in published)
    assert "[redacted:LEDGER_TOKEN]" in json.dumps(published)
    assert all(canary not in json.dumps(r) for r in flows["scripted"].requests())


def test_run_logs_hold_no_secret_not_even_in_an_engine_traceback(flows: dict[str, Any], http: httpx.Client) -> None:
    messages = run_logs(http, flows["runs"]["agent"]["id"], until="Task run failed")
    failure = [m for m in messages if "Task run failed" in m]
    assert failure and "Traceback" in failure[0] and "registry refused [redacted:ERROR_TOKEN]" in failure[0]
    assert "registry refused [redacted:ERROR_TOKEN]" in flows["console"]  # the console got the traceback too
    for canary in CANARIES.values():
        assert all(canary not in m for m in messages), canary
        assert canary not in flows["console"]  # what a runner relays to its own output (the stack's log file)


def test_the_execute_task_persists_only_the_redacted_event(flows: dict[str, Any],
                                                          prefect_server: LocalPrefectServer) -> None:
    canary, run = CANARIES["TOOL_TOKEN"], flows["runs"]["execute"]
    assert run["type"] == "COMPLETED"
    assert run["result"]["output"]["stdout"] == "login with [redacted:TOOL_TOKEN] refused"
    key = f"redaction-{run['id']}"
    from prefect.filesystems import LocalFileSystem

    # The storage the runner used (the server's result storage path). ExecutionLedger() outside a run would ask
    # Prefect for its default, which reads the server's default block through a client Prefect never closes.
    status, recorded = ExecutionLedger(LocalFileSystem(basepath=str(prefect_server.storage_path))).status(key)
    assert status == "finished" and canary not in json.dumps(recorded)
    assert "[redacted:TOOL_TOKEN]" in json.dumps(recorded)
    stored = prefect_server.storage_path / f"exec-{key}"  # the task's cache key is its result's storage key
    assert "[redacted:TOOL_TOKEN]" in stored_text(stored) and canary not in stored_text(stored)
