"""Helpers for tests against a real Prefect server: serve a flow in a subprocess, create runs, wait for states."""

from __future__ import annotations

import base64
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx

CHECKOUT = Path(__file__).resolve().parents[1]  # where the app runs from

__all__ = ["Served", "create_run", "flow_state", "lines", "next_pause", "retrying", "run_logs", "stored_text",
           "wait_engine_exit", "wait_state"]


def retrying(call: Any, *args: Any, **kwargs: Any) -> httpx.Response:
    for attempt in range(8):
        response = call(*args, **kwargs)
        if response.status_code not in (502, 503, 504):
            return response
        time.sleep(0.2 * 2**attempt)
    return response


class Served:
    """A process calling flow.serve(), in its own process group so it can be killed by PID with its runs.

    `script` is a file (`python <script>`, run in its folder) or a module of the app (`python -m flows.serve`, run in
    the checkout, as the app always runs: the checkout first on sys.path). `python` is the interpreter (default: this
    one; tests/kit/test_packaging.py serves with a fresh venv's)."""

    def __init__(self, script: Path | str, env: dict[str, str], http: httpx.Client, deployment: str, log: Path,
                 args: tuple[str, ...] = (), python: str = sys.executable) -> None:
        self.script, self.env, self.http, self.deployment, self.log = script, env, http, deployment, log
        self.args, self.python = args, python
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 60) -> str:
        if isinstance(self.script, Path):
            command, cwd = [self.python, str(self.script)], self.script.parent
        else:
            command, cwd = [self.python, "-m", self.script], CHECKOUT
        with open(self.log, "ab") as out:
            self.proc = subprocess.Popen([*command, *self.args], env=self.env, cwd=cwd,
                                         stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"serve process exited: {self.log.read_text()[-2000:]}")
            if "polling for scheduled runs" in self.log.read_text(errors="replace"):
                response = retrying(self.http.get, f"/deployments/name/{self.deployment}")
                if response.status_code == 200:
                    self.deployment_id: str = response.json()["id"]
                    return self.deployment_id
            time.sleep(0.1)
        raise TimeoutError(f"{self.deployment} not served after {timeout}s: {self.log.read_text()[-2000:]}")

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def kill(self) -> None:
        """SIGKILL the whole group: the runner and the flow-run process it started (a crashed worker)."""
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(10)

    def stop(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        os.killpg(self.proc.pid, signal.SIGTERM)
        try:
            self.proc.wait(15)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(10)


def create_run(http: httpx.Client, deployment_id: str, parameters: dict[str, Any]) -> str:
    response = retrying(http.post, f"/deployments/{deployment_id}/create_flow_run", json={"parameters": parameters})
    response.raise_for_status()
    return response.json()["id"]


def flow_state(http: httpx.Client, run_id: str) -> dict[str, Any]:
    response = retrying(http.get, f"/flow_runs/{run_id}")
    response.raise_for_status()
    return response.json()["state"]


def wait_state(http: httpx.Client, run_id: str, types: set[str], timeout: float = 90, name: str | None = None,
               passing: frozenset[str] = frozenset()) -> dict[str, Any]:
    """Poll until the run is in one of `types` (and has `name`, if given); fail fast on a terminal surprise, except
    the final-looking states in `passing` (CRASHED, when Prefect's recovery is expected to start the run again)."""
    deadline = time.monotonic() + timeout
    state: dict[str, Any] = {}
    while time.monotonic() < deadline:
        state = flow_state(http, run_id)
        if state["type"] in types and (name is None or state["name"] == name):
            return state
        if state["type"] in {"FAILED", "CRASHED", "CANCELLED", "COMPLETED"} - types - passing:
            raise AssertionError(f"run {run_id} ended {state['type']}: {state.get('message')}")
        time.sleep(0.1)
    raise TimeoutError(f"run {run_id} not in {types} after {timeout}s; last state {state.get('type')}/{state.get('name')}")


def next_pause(http: httpx.Client, run_id: str, after: str | None = None, timeout: float = 90,
               passing: frozenset[str] = frozenset()) -> str:
    """Wait for a suspension whose key differs from `after` and whose form is stored; returns its key.

    Prefect sets the run Suspended first and stores the form (schema, then description) right after; a resume in
    between is refused ("Run input schema not found"), so wait for the description, the last input written.
    """
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        state = wait_state(http, run_id, {"PAUSED"}, timeout=deadline - time.monotonic(), passing=passing)
        key = state["state_details"]["pause_key"]
        keyset = state["state_details"].get("run_input_keyset") or {}
        if key != after and (not keyset or retrying(http.get, f"/flow_runs/{run_id}/input/{keyset['description']}")
                             .status_code == 200):
            return key
        time.sleep(0.1)
    raise TimeoutError(f"no new suspension after {after}")


def lines(path: Path) -> list[str]:
    return path.read_text().splitlines() if path.exists() else []


def _engine_pids(run_id: str) -> list[int]:
    """The `python -m prefect.engine` processes executing this flow run (the runner passes the run id in their
    environment; services the run started inherit it too, hence the command-line check)."""
    marker = f"PREFECT__FLOW_RUN_ID={run_id}".encode()
    found = []
    for proc in Path("/proc").glob("[0-9]*"):
        try:
            if b"prefect.engine" in (proc / "cmdline").read_bytes().split(b"\0") and \
                    marker in (proc / "environ").read_bytes().split(b"\0"):
                found.append(int(proc.name))
        except OSError:
            continue
    return found


def wait_engine_exit(run_id: str, timeout: float = 60) -> None:
    """Wait until no process executes this run any more. Call it once the run is final: the process set that state,
    so it existed, and its log worker drains to the API before it exits, so every log line of the run is stored."""
    deadline = time.monotonic() + timeout
    while _engine_pids(run_id):
        if time.monotonic() > deadline:
            raise TimeoutError(f"the process of run {run_id} still runs after {timeout}s")
        time.sleep(0.1)


def run_logs(http: httpx.Client, run_id: str) -> list[dict[str, Any]]:
    """Every log line the server stored for this flow run, oldest first (call wait_engine_exit first)."""
    body = {"logs": {"flow_run_id": {"any_": [run_id]}}, "sort": "TIMESTAMP_ASC", "limit": 200}
    response = retrying(http.post, "/logs/filter", json=body)
    response.raise_for_status()
    return response.json()


def stored_text(path: Path) -> str:
    """A result file as text, with Prefect's base64-wrapped (pickled) result decoded so strings inside are visible."""
    raw = path.read_bytes()
    try:
        record = json.loads(raw)
    except ValueError:
        return raw.decode("utf-8", errors="replace")
    inner = record.get("result") if isinstance(record, dict) else None
    decoded = base64.b64decode(inner).decode("utf-8", errors="replace") if isinstance(inner, str) else ""
    return raw.decode("utf-8", errors="replace") + decoded
