"""The scale-out path, on the session server: `prefect deploy --prefect-file deployments/prefect.yaml --all` from
the repo root, then a worker started by the documented command picks up the run a `git.push` event creates; the
run asks for approval, is approved twice (each time resuming in a new process on the worker) and completes.

The deployment gets the same schedule and trigger `python -m flows.serve` builds from the file. Only the model is
scripted (AGENT_MODEL in the worker's environment, as the file's comments document for real keys).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from prefect_micro_agents import ApprovalsClient
from prefect_micro_agents.testing import LocalPrefectServer, ScriptedModel
from flows.sample_app import SampleAppManifest, create_sample_app
from flows.targets.processes import is_alive
from flows.targets.settings import TargetSettings
from gate_support import call
from prefect_harness import next_pause, retrying, wait_state

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]
PREFECT = str(Path(sys.executable).parent / "prefect")  # the `prefect` command of this environment
POOL = "microagents"
DEPLOYMENT = "deploy-pipeline/worker"




def pipeline_runs(http: httpx.Client, since: datetime, deployment_id: str | None = None) -> list[dict[str, Any]]:
    """Pipeline runs expected to start after `since` (not the nightly ones the scheduler creates ahead)."""
    body: dict[str, Any] = {
        "flows": {"name": {"any_": ["deploy-pipeline"]}},
        "flow_runs": {"expected_start_time": {"after_": since.isoformat(),
                                              "before_": (datetime.now(UTC) + timedelta(minutes=1)).isoformat()}},
        "limit": 200}
    if deployment_id:
        body["deployments"] = {"id": {"any_": [deployment_id]}}
    response = retrying(http.post, "/flow_runs/filter", json=body)
    response.raise_for_status()
    return response.json()


def prefect_cli(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run([PREFECT, *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=180,
                          check=False)



@pytest.fixture
def deploy_root(tmp_path: Path) -> Path:
    return tmp_path / "deploy-root"


@pytest.fixture
def sample(deploy_root: Path, prefect_server: LocalPrefectServer) -> SampleAppManifest:
    return create_sample_app(deploy_root / "sample-app")


@pytest.fixture
def deployed(prefect_server: LocalPrefectServer, http: httpx.Client, tmp_path: Path) -> Iterator[dict[str, Any]]:
    """The work pool and `prefect deploy --all`, as a user runs them from the repo root; removed afterwards (its
    trigger would otherwise start a second run for every push other tests send)."""
    env = {**os.environ, "PWD": str(ROOT)}  # what a shell in the repo root has; the pull step uses it
    since = datetime.now(UTC) - timedelta(seconds=2)
    created_pool = False
    if retrying(http.get, f"/work_pools/{POOL}").status_code == 404:
        pool = prefect_cli("work-pool", "create", POOL, "--type", "process", env=env)
        assert pool.returncode == 0, pool.stdout + pool.stderr
        created_pool = True
    t = time.monotonic()
    deploy = prefect_cli("deploy", "--prefect-file", "deployments/prefect.yaml", "--all", env=env)
    seconds = time.monotonic() - t
    assert deploy.returncode == 0, deploy.stdout + deploy.stderr
    assert f"Deployment '{DEPLOYMENT}' successfully created" in deploy.stdout, deploy.stdout
    deployment = retrying(http.get, f"/deployments/name/{DEPLOYMENT}").json()
    deployment.update(deploy_seconds=seconds, since=since)
    try:
        yield deployment
    finally:
        # This deployment's runs (nightly ones included), and any run our push started elsewhere: a served
        # deploy-pipeline/local left by another module carries the same trigger, and its next runner would run it.
        runs = retrying(http.post, "/flow_runs/filter",
                         json={"deployments": {"id": {"any_": [deployment["id"]]}}, "limit": 200}).json()
        for run in runs + pipeline_runs(http, since):
            retrying(http.delete, f"/flow_runs/{run['id']}")
        # Deleting a deployment leaves its trigger's automation behind (prefect 3.9.1), so remove that first.
        retrying(http.delete, f"/automations/owned-by/prefect.deployment.{deployment['id']}")
        retrying(http.delete, f"/deployments/{deployment['id']}")
        assert owned_automations(http, deployment["id"]) == []
        if created_pool:
            retrying(http.delete, f"/work_pools/{POOL}")


def owned_automations(http: httpx.Client, deployment_id: str) -> list[dict[str, Any]]:
    automations = retrying(http.post, "/automations/filter", json={}).json()
    return [a for a in automations if any(act.get("deployment_id") == deployment_id for act in a["actions"])]


class Worker:
    """`prefect worker start --pool microagents` from the repo root, in its own process group, stopped by PID."""

    def __init__(self, env: dict[str, str], log: Path) -> None:
        self.log = log
        with open(log, "ab") as out:
            self.proc = subprocess.Popen([PREFECT, "worker", "start", "--pool", POOL], cwd=ROOT, env=env,
                                         stdout=out, stderr=subprocess.STDOUT, start_new_session=True)

    def wait_started(self, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while "started!" not in self.log.read_text(errors="replace"):
            assert self.proc.poll() is None, self.log.read_text()[-3000:]
            assert time.monotonic() < deadline, f"worker did not start: {self.log.read_text()[-3000:]}"
            time.sleep(0.1)

    def stop(self) -> None:
        """SIGINT (a second one if the first shutdown stalls: seen with prefect 3.9.1), then SIGKILL; the group."""
        for sig, wait in ((signal.SIGINT, 10), (signal.SIGINT, 10), (signal.SIGKILL, 10)):
            if self.proc.poll() is not None:
                break
            try:
                os.killpg(self.proc.pid, sig)
            except ProcessLookupError:
                break
            try:
                self.proc.wait(wait)
            except subprocess.TimeoutExpired:
                continue
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)  # whatever the group still holds (a flow-run process)
        except ProcessLookupError:
            pass


def test_prefect_deploy_and_a_worker_run_a_pushed_sha_through_approvals(
    prefect_server: LocalPrefectServer, http: httpx.Client, deployed: dict[str, Any], sample: SampleAppManifest,
    deploy_root: Path, scripted: ScriptedModel, tmp_path: Path,
) -> None:
    from flows.serve import build_deployment

    # The deployment: entrypoint, pool, pull step into the repo root, and the file's cron and trigger...
    spec = yaml.safe_load((ROOT / "deployments" / "prefect.yaml").read_text())["deployments"][0]
    assert deployed["entrypoint"] == "flows/deploy_pipeline.py:deploy_pipeline"
    assert deployed["work_pool_name"] == POOL
    assert deployed["pull_steps"] == [{"prefect.deployments.steps.set_working_directory": {"directory": str(ROOT)}}]
    assert "model" not in deployed["parameters"]  # the worker's AGENT_MODEL decides; nothing secret is stored
    [schedule] = deployed["schedules"]
    assert (schedule["schedule"]["cron"], schedule["schedule"]["timezone"]) == ("0 2 * * *", "UTC")
    assert schedule["parameters"] == spec["schedules"][0]["parameters"] and schedule["active"] is True
    [automation] = owned_automations(http, deployed["id"])
    trigger, [action] = automation["trigger"], automation["actions"]
    assert trigger["expect"] == ["git.push"] and trigger["match"] == spec["triggers"][0]["match"]
    assert action["parameters"] == spec["triggers"][0]["parameters"]

    # ...which are exactly what `python -m flows.serve` serves (one definition, two ways to run it).
    served, _ = build_deployment("local")
    [served_schedule] = served.schedules
    assert served_schedule.schedule.cron == schedule["schedule"]["cron"]
    assert served_schedule.schedule.timezone == schedule["schedule"]["timezone"]
    assert served_schedule.parameters == schedule["parameters"] and served_schedule.slug == schedule["slug"]
    [served_trigger] = served.triggers
    assert served_trigger.expect == set(trigger["expect"]) and served_trigger.match.root == trigger["match"]
    assert served_trigger.parameters == action["parameters"]

    # A worker, started the documented way, with the model and the environments in its environment.
    new = sample.sha("v1.1.0")
    short = new[:12]
    scripted.enqueue(call("deploy_backend_to_prod", sha=short), call("deploy_frontend_to_prod", sha=short),
                     call("done_for_now", message="both services on v1.1.0"))
    env = {**os.environ, "AGENT_MODEL": scripted.model, "DEPLOY_ROOT": str(deploy_root),
           "PREFECT_WORKER_QUERY_SECONDS": "1"}
    worker = Worker(env, tmp_path / "worker.log")
    try:
        worker.wait_started()
        t0 = time.monotonic()
        push = subprocess.run([sys.executable, "-m", "prefect_micro_agents.cli", "push", "--sha", new, "--pusher", "ci"],
                              cwd=ROOT, env=dict(os.environ), capture_output=True, text=True, timeout=60, check=False)
        assert push.returncode == 0, push.stderr
        deadline = time.monotonic() + 30
        runs: list[dict[str, Any]] = []
        while not runs:
            assert time.monotonic() < deadline, "the push event started no run of the deployment"
            time.sleep(0.2)
            runs = [r for r in pipeline_runs(http, deployed["since"], deployment_id=deployed["id"])
                    if r["parameters"].get("source") == "git.push"]
        [run] = runs
        assert (run["parameters"]["sha"], run["parameters"]["actor"]) == (new, "ci")
        assert run["work_pool_name"] == POOL

        with ApprovalsClient(prefect_server.api_url, prefect_server.auth_string) as approvals:
            key1 = next_pause(http, run["id"], timeout=120)
            waiting = time.monotonic() - t0
            assert "proposes `deploy_backend_to_prod`" in approvals.show(run["id"]).description
            assert "Running 1 deployment pull step" in worker.log.read_text(errors="replace")
            approvals.approve(run["id"], "alice")
            key2 = next_pause(http, run["id"], after=key1, timeout=120)  # resumed on the worker, a new process
            assert "proposes `deploy_frontend_to_prod`" in approvals.show(run["id"]).description
            approvals.approve(run["id"], "bob")
            state = wait_state(http, run["id"], {"COMPLETED"}, timeout=120)
        assert key2 != key1 and state["type"] == "COMPLETED"
        # One run for one push (on this deployment: another deployment carrying the same trigger, such as a
        # deploy-pipeline/local some other module served, starts its own, as it would in real life).
        assert [r["id"] for r in pipeline_runs(http, deployed["since"], deployment_id=deployed["id"])] == [run["id"]]
        local = TargetSettings(root=str(deploy_root)).build()
        assert {s: v.sha for s, v in local.state("production").services.items()} == \
            {"backend": new, "frontend": new}
        print(f"\nprefect deploy {deployed['deploy_seconds']:.1f}s; push -> waiting for approval on the worker "
              f"{waiting:.1f}s; push -> completed {time.monotonic() - t0:.1f}s")
    finally:
        t = time.monotonic()
        worker.stop()
        print(f"worker stopped in {time.monotonic() - t:.1f}s")
        local = TargetSettings(root=str(deploy_root)).build()
        pids = {h.result.pid for h in local.store.read().history if h.result and h.result.pid}
        local.stop_all()
    assert worker.proc.poll() is not None
    assert not [pid for pid in pids if is_alive(pid)], "service processes left running"
