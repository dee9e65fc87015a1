"""A shared server with basic auth: the runner, the adapter and the CLI work with it; anonymous resumes are refused."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from prefect_micro_agents.adapter.local_server import LocalPrefectServer
from prefect_micro_agents.llm import PROVIDERS_ENV
from prefect_micro_agents.testing.scripted import ScriptedModel
from prefect_harness import Served, create_run, flow_state, lines, next_pause, wait_state
from expense_gate import DEPLOYMENT, DONE, FLOW, PAY, RECEIPT

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def auth_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalPrefectServer]:
    with LocalPrefectServer(tmp_path_factory.mktemp("auth-home"), auth_string="approver:s3cret-pass") as server:
        yield server


def cli(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "prefect_micro_agents.cli", *args], env=env, capture_output=True, text=True, timeout=60)


def test_basic_auth_server(auth_server: LocalPrefectServer, tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PREFECT_", "AGENT_"))}
    env.update(auth_server.client_env(), AGENT_STATE_DIR=str(tmp_path / "state"), **{PROVIDERS_ENV: os.environ[PROVIDERS_ENV]})
    scripted = ScriptedModel(tmp_path / "model")
    scripted.enqueue(PAY, DONE)
    effects = tmp_path / "effects"
    effects.mkdir()
    with httpx.Client(base_url=auth_server.api_url, auth=auth_server.httpx_auth, timeout=30, trust_env=False) as http:
        served = Served(FLOW, env, http, DEPLOYMENT, tmp_path / "serve.log")
        deployment_id = served.start()
        try:
            run = create_run(http, deployment_id, {"receipt": RECEIPT, "effects_dir": str(effects), "model": scripted.model})
            next_pause(http, run)

            anonymous = httpx.post(f"{auth_server.api_url}/flow_runs/{run}/resume", trust_env=False,
                                   json={"run_input": {f"decision_{'0' * 16}": "approve"}})
            assert anonymous.status_code == 401
            wrong = cli({**env, "PREFECT_API_AUTH_STRING": "approver:guess"}, "pending")
            assert wrong.returncode == 1 and "refused our credentials" in wrong.stderr
            assert flow_state(http, run)["type"] == "PAUSED" and lines(effects / "pay.log") == []

            listed = cli(env, "pending")
            assert listed.returncode == 0 and run in listed.stdout and "pay_expense" in listed.stdout
            shown = cli(env, "show", run)
            assert shown.returncode == 0 and "**approve** runs this call once" in shown.stdout
            approved = cli(env, "approve", run, "--as", "dana")
            assert approved.returncode == 0, approved.stderr
            digest = shown.stdout.split("(digest ", 1)[1][:12]  # the CLI says what it approved, by digest
            assert f"approved expense agent proposes `pay_expense` (digest {digest})" in approved.stdout
            wait_state(http, run, {"COMPLETED"})
            again = cli(env, "approve", run, "--as", "dana")
            assert again.returncode == 2 and "not waiting for a decision (state: Completed)" in again.stderr
            assert len(lines(effects / "pay.log")) == 1
        finally:
            served.stop()
