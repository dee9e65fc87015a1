"""A dead worker, recovered by Prefect alone, on the real pipeline: the served runner is killed (SIGKILL of its process
group) with a run frozen right after its approval and at each point of a local deploy; the test then only restarts
the runner, as a supervisor would, and changes no state. Each time: Prefect's automation notices and starts it
again, it completes, the targets' history holds exactly one deploy per approved call, no orphan process
is left, the production slot is free again, and a later deploy really replaces what runs.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from prefect_micro_agents import ApprovalsClient, ThreadStore
from prefect_micro_agents.testing import FAILPOINTS_ENV, LocalPrefectServer, ScriptedModel, arm, free_port
from flows.sample_app import SampleAppManifest, create_sample_app
from flows.targets import LocalTargets
from flows.targets.httpget import http_get
from flows.targets.procscan import listener_pid, processes_with
from flows.targets.settings import TargetSettings
from prefect_harness import Served, create_run, flow_state, next_pause, wait_state

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]
DEPLOYMENT = "deploy-pipeline/local"
# One SIGKILL per group: runs inside a production change hold the one production slot, so they freeze one at a time;
# a run frozen right after its approval holds nothing and shares a kill.
KILLS = [("agent.approved", "local.deploy.exported"), ("local.deploy.switched",), ("local.deploy.started",),
         ("local.deploy.health",), ("local.deploy.finished",)]


@pytest.fixture(scope="module")
def sample(tmp_path_factory: pytest.TempPathFactory) -> SampleAppManifest:
    return create_sample_app(tmp_path_factory.mktemp("sample") / "repo")


@pytest.fixture(scope="module")
def faults(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("faults")


@pytest.fixture(scope="module")
def served(prefect_server: LocalPrefectServer, http: httpx.Client, faults: Path,
           tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    env = {k: v for k, v in os.environ.items() if k != "AGENT_MODEL"}
    env[FAILPOINTS_ENV] = str(faults)
    s = Served("flows.serve", env, http, DEPLOYMENT, tmp_path_factory.mktemp("serve") / "serve.log",
               args=("--no-schedule", "--no-trigger"))
    s.deployment_id = s.start()  # type: ignore[attr-defined]
    yield s
    s.stop()


def ours(local: LocalTargets, env: str, service: str) -> list[int]:
    port = int(local.url(env, service).rsplit(":", 1)[1])
    return [p.pid for p in processes_with(f"{local.service_dir(env, service)}/", f"--port\0{port}\0")]


def production_slots(http: httpx.Client) -> int:
    return int(http.get("/v2/concurrency_limits/tag:production-changes").json()["active_slots"])


def state_names(http: httpx.Client, run: str) -> list[str]:
    states = http.get("/flow_run_states/", params={"flow_run_id": run}).json()
    return [s["name"] for s in sorted(states, key=lambda s: s["timestamp"])]


def backend_deploy(where: Path, sample: SampleAppManifest) -> tuple[TargetSettings, ScriptedModel, dict[str, Any]]:
    """Targets in `where` whose production runs v1.0.0 (v1.1.0's backend stays compatible with its frontend), a model
    that proposes deploying v1.1.0's backend and then says it is done, and the pipeline parameters for both."""
    settings = TargetSettings(root=str(where / "envs"), repo=sample.repo)
    for service in ("backend", "frontend"):
        assert settings.build().deploy(service, "production", "v1.0.0").ok
    sha = sample.sha("v1.1.0")
    model = ScriptedModel(where / "model")
    model.enqueue({"call": {"intent": "deploy_backend_to_prod", "sha": sha[:12]}},
                  {"call": {"intent": "done_for_now", "message": "backend deployed"}})
    params = {"sha": sha, "targets": settings.model_dump(), "model": model.model, "source": "git.push", "actor": "ci"}
    return settings, model, params


def one_backend_deploy(settings: TargetSettings) -> None:
    """The production history holds exactly one approved (keyed) call: the backend deploy, succeeded."""
    local = settings.build()
    assert isinstance(local, LocalTargets)
    keyed = [h for h in local.state("production").history if h.idempotency_key]
    assert [(h.service, h.status) for h in keyed] == [("backend", "succeeded")], keyed


@pytest.mark.parametrize("points", KILLS, ids=["+".join(p.rsplit(".", 1)[-1] for p in k) for k in KILLS])
def test_a_killed_worker_is_recovered_by_prefect_and_each_approved_deploy_runs_once(
    served: Served, http: httpx.Client, faults: Path, tmp_path: Path, sample: SampleAppManifest,
    points: tuple[str, ...],
) -> None:
    sha = sample.sha("v1.1.0")
    runs: dict[str, tuple[str, TargetSettings, ScriptedModel]] = {}
    with ApprovalsClient() as approvals:
        for point in points:
            settings, model, params = backend_deploy(tmp_path / point, sample)
            runs[point] = (create_run(http, served.deployment_id, params), settings, model)  # type: ignore[attr-defined]
        for point, (run, _, _) in runs.items():
            next_pause(http, run, timeout=180)
            arm(faults, point)
            approvals.approve(run, "alice")
            deadline = time.monotonic() + 120
            while not (faults / f"reached-{point}").exists():
                assert time.monotonic() < deadline, f"{point} not reached"
                time.sleep(0.05)
    served.kill()
    killed = time.monotonic()
    assert all(flow_state(http, run)["type"] == "RUNNING" for run, _, _ in runs.values())  # nobody knows yet

    served.start()  # the supervisor's part; no state is changed by the test
    try:
        for point, (run, settings, model) in runs.items():
            final = wait_state(http, run, {"COMPLETED"}, timeout=300, passing=frozenset({"CRASHED"}))
            assert "deployed" in (final["message"] or ""), final
            names = state_names(http, run)
            assert "AwaitingRetry" in names, names  # Prefect's automation started it again
            assert http.get(f"/flow_runs/{run}").json()["run_count"] == 2
            local = settings.build()
            assert isinstance(local, LocalTargets)
            thread = ThreadStore().load(run, "deploy")
            assert thread is not None
            receipts = [e for e in thread.events if e.type == "receipt"]
            assert len(receipts) == 1 and len([e for e in thread.events if e.type == "result"]) == 1
            key = receipts[0].idempotency_key
            entries = [h for h in local.state("production").history if h.idempotency_key == key]
            assert [(h.action, h.status) for h in entries] == [("deploy", "succeeded")], entries  # one deploy
            backend = local.state("production").services["backend"]
            port = int(local.url("production", "backend").rsplit(":", 1)[1])
            assert backend.sha == sha and backend.healthy and listener_pid(port) == backend.pid
            assert ours(local, "production", "backend") == [backend.pid], "an orphan service is left"
            assert len(model.requests()) == 2  # no model call repeated by the new attempt
        print(f"\n{'+'.join(points)}: kill -> every run completed {time.monotonic() - killed:.1f} s")
        assert production_slots(http) == 0  # the dead attempt's hold on production was released

        # A later deploy really replaces what runs (nothing stale answers on the port).
        for point, (run, settings, _) in runs.items():
            local = settings.build()
            old = local.state("production").services["backend"].pid
            assert local.deploy("backend", "production", "v1.2.0", idempotency_key=f"later-{run}").ok
            port = int(local.url("production", "backend").rsplit(":", 1)[1])
            now = local.state("production").services["backend"]
            assert now.pid != old and listener_pid(port) == now.pid
            assert http_get(local.url("production", "backend") + "/api/version").json()["sha"] == sample.sha("v1.2.0")
            assert ours(local, "production", "backend") == [now.pid]
    finally:
        for _, settings, _ in runs.values():
            settings.build().stop_all()


def test_a_run_whose_worker_died_before_starting_it_is_recovered(
    served: Served, http: httpx.Client, tmp_path: Path, sample: SampleAppManifest
) -> None:
    """The runner is killed while the approved run is Pending again (taken after its resume, its process not started
    yet). Found by the crash sweep: such a run stayed Pending for good (no heartbeat, and the Pending of its first
    start had opened, and closed, the only window). Prefect's "restart runs that never start" schedules it again, it is
    started again, reads its approval back (nobody is asked again) and deploys once."""
    settings, _, params = backend_deploy(tmp_path, sample)
    run = create_run(http, served.deployment_id, params)  # type: ignore[attr-defined]
    next_pause(http, run, timeout=180)
    with ApprovalsClient() as approvals:
        approvals.approve(run, "alice")
    deadline = time.monotonic() + 120
    while (state := flow_state(http, run))["type"] != "PENDING":
        assert state["type"] in ("PAUSED", "SCHEDULED") and time.monotonic() < deadline, state
        time.sleep(0.01)
    served.kill()
    killed = time.monotonic()
    assert flow_state(http, run)["type"] == "PENDING", "the run started before the kill"
    served.start()
    try:
        final = wait_state(http, run, {"COMPLETED"}, timeout=300, passing=frozenset({"CRASHED"}))
        recovered = time.monotonic() - killed
        states = http.get("/flow_run_states/", params={"flow_run_id": run}).json()
        restarted = [s for s in states if s["name"] == "AwaitingRetry"]
        assert len(restarted) == 1 and "Pending for 60 s" in restarted[0]["message"], restarted
        assert "deployed" in (final["message"] or "")
        one_backend_deploy(settings)
        print(f"\nkilled while Pending -> completed {recovered:.1f} s")
    finally:
        settings.build().stop_all()


def test_a_dead_runs_production_slot_is_released_after_the_server_restarted_too(
    tmp_path: Path, sample: SampleAppManifest
) -> None:
    """The worker AND the Prefect server die while a production deploy holds the `production-changes` slot; the
    server restarts on the same home, then the runner. The slot's lease survived on disk, so the recovered attempt
    releases the dead one's slot and the run completes, without waiting out a lease or a human."""
    import signal


    server = LocalPrefectServer(tmp_path / "prefect", port=free_port(), ui=False)
    faults = tmp_path / "faults"
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_") and k != "AGENT_MODEL"}
    server.start()
    try:
        env.update(server.client_env(), AGENT_STATE_DIR=str(tmp_path / "agent-state"), **{FAILPOINTS_ENV: str(faults)})
        with httpx.Client(base_url=server.api_url, auth=server.httpx_auth, timeout=30, trust_env=False) as http:
            served = Served("flows.serve", env, http, DEPLOYMENT, tmp_path / "serve.log",
                            args=("--no-schedule", "--no-trigger", "--no-notify"))
            deployment = served.start()
            try:
                settings, _, params = backend_deploy(tmp_path, sample)
                run = create_run(http, deployment, params)
                next_pause(http, run, timeout=180)
                arm(faults, "local.deploy.switched")
                with ApprovalsClient(server.api_url, server.auth_string) as approvals:
                    approvals.approve(run, "alice")
                deadline = time.monotonic() + 120
                while not (faults / "reached-local.deploy.switched").exists():
                    assert time.monotonic() < deadline, "the deploy never reached its switch"
                    time.sleep(0.05)
                assert production_slots(http) == 1  # held by the deploy that is about to die
                served.kill()
                os.killpg(server.pid, signal.SIGKILL)  # type: ignore[arg-type]
                killed = time.monotonic()
                server.stop()
                server.start()  # same home, same port: what a supervisor (or the local stack) does
                served.start()
                final = wait_state(http, run, {"COMPLETED"}, timeout=300, passing=frozenset({"CRASHED"}))
                took = time.monotonic() - killed
                assert "deployed" in (final["message"] or "") and production_slots(http) == 0
                names = state_names(http, run)
                assert "AwaitingRetry" in names, names  # Prefect's automation started it again
                one_backend_deploy(settings)
                print(f"\nworker and server killed -> run completed {took:.1f} s")
            finally:
                served.stop()
                settings.build().stop_all()
    finally:
        server.stop()
