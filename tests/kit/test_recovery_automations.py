"""The recovery automations on a real Prefect server: created once, and left alone by every later process.

A runner restarted right after a worker died calls `ensure_recovery_automations()` again. If that updated the zombie
automation, Prefect would give its trigger a new id and drop the open heartbeat windows, so the dead worker's runs
would never be marked Crashed. Each call below is a new process with its own string hashing (PYTHONHASHSEED), as
each restarted runner is.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from prefect_micro_agents.adapter.local_server import LocalPrefectServer

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parents[2]
ENSURE = "from prefect_micro_agents.adapter.recovery import ensure_recovery_automations as e; e('recovery-idempotence-test')"


def automations(http: httpx.Client) -> dict[str, tuple[str, str]]:
    found = http.post("/automations/filter", json={}).json()
    return {a["name"]: (a["updated"], a["trigger"]["id"]) for a in found if a["name"].startswith("recovery-idem")}


def test_a_restarted_runner_leaves_the_recovery_automations_alone(prefect_server: LocalPrefectServer,
                                                                   http: httpx.Client) -> None:
    def ensure(seed: int) -> None:
        env = {**os.environ, "PYTHONHASHSEED": str(seed)}
        subprocess.run([sys.executable, "-c", ENSURE], cwd=ROOT, env=env, check=True, timeout=120)

    ensure(0)
    first = automations(http)
    assert len(first) == 3, first
    for seed in range(1, 7):
        ensure(seed)
        assert automations(http) == first, f"updated by a process with PYTHONHASHSEED={seed}"
    for automation in http.post("/automations/filter", json={}).json():
        if automation["name"].startswith("recovery-idem"):
            http.delete(f"/automations/{automation['id']}")
