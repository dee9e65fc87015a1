"""The deploy bot's report artifact is redacted on the session's Prefect server (the flow, tests/app/report_flows.py,
runs in a fresh Python process). The kit's own redaction in real flow runs: tests/kit/test_redaction_flows.py."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from prefect_micro_agents.testing import LocalPrefectServer

pytestmark = pytest.mark.slow

HERE = Path(__file__).resolve().parent
CANARY = "canary-report-0f6e2a8c"


def test_the_report_artifact_is_redacted(prefect_server: LocalPrefectServer, http: httpx.Client) -> None:
    proc = subprocess.run([sys.executable, str(HERE / "report_flows.py")], env={**os.environ, "REPORT_TOKEN": CANARY},
                          cwd=HERE, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    run = json.loads(proc.stdout.strip().splitlines()[-1])
    assert run["type"] == "COMPLETED"
    found = http.post("/artifacts/filter", json={"artifacts": {"flow_run_id": {"any_": [run["id"]]}}}).json()
    published = json.dumps(found)
    assert "used [redacted:REPORT_TOKEN]" in published and "done with [redacted:REPORT_TOKEN]" in published
    assert CANARY not in published
    assert CANARY not in proc.stderr  # Prefect's console handler: what a runner relays to its own output
