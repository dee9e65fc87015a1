"""The scale-out stack (prefect_micro_agents.testing.ScaleStack, started by `python -m deployments.scale_stack`): every
part is a real process, checked through its own interface. Postgres answers SQL and has pg_trgm, Redis answers PING
and carries Prefect's event stream, the API server (--no-services) is healthy and configured for Redis, the separate
services process turns an event into an automation's action, two workers are registered in the process pool, a flow
run submitted to the pool completes on one of them with its results in S3 (moto), the deploy pipeline suspended on
one worker is resumed by the other without repeating anything, and stopping leaves no process.

One stack for the module (about 17 s to start on 2 cores); `test_stopping_the_stack_leaves_no_process_behind` stops
it. The one command (`python -m deployments.scale_stack`) is tested after that, in processes of its own.
"""

from __future__ import annotations

import asyncio
import base64
import os
import pickle
import signal
import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import httpx
import pytest

from prefect_micro_agents.testing import ScaleStack, ScriptedModel
from scale_support import (
    TERMINAL, client_env, deploy_pipeline, forked_by, ran_on, s3_keys, started_stack, wait_for_state,
)

pytestmark = pytest.mark.slow

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
FLOWS = "scale_flows.py"


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """What every worker shares, as machines share the world they deploy to: the sample app's environments
    (DEPLOY_ROOT) and the scripted model's queue."""
    return tmp_path_factory.mktemp("world")


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory, world: Path):  # noqa: ANN201
    yield from started_stack(tmp_path_factory.mktemp("scale"), world)


@pytest.fixture(scope="module")
def api(stack: ScaleStack):  # noqa: ANN201
    with httpx.Client(base_url=stack.api_url, timeout=30, trust_env=False) as client:
        yield client


@pytest.fixture(scope="module")
def smoke_deployment(stack: ScaleStack) -> str:
    """tests/app/scale_flows.py deployed to the stack's process pool from this directory (the pull step sets the
    flow-run process's working directory here); the deployment's id."""
    with stack.connected():
        from prefect import flow

        loaded = flow.from_source(source=str(HERE), entrypoint=f"{FLOWS}:scale_smoke")
        return str(loaded.deploy(name="smoke", work_pool_name=stack.pool, print_next_steps=False,
                                   ignore_warnings=True))


def test_postgres_answers_sql_runs_unprivileged_and_holds_prefects_tables(stack: ScaleStack) -> None:
    import asyncpg

    async def ask() -> tuple[Any, ...]:
        pg = stack.postgres
        conn = await asyncpg.connect(host="127.0.0.1", port=pg.port, user=pg.role, password=pg.password,
                                     database=pg.database)
        try:
            return (await conn.fetchval("select 1"),
                    await conn.fetchval("select count(*) from pg_extension where extname = 'pg_trgm'"),
                    await conn.fetchval("select count(*) from information_schema.tables where table_name = "
                                        "'flow_run'"))
        finally:
            await conn.close()

    assert asyncio.run(ask()) == (1, 1, 1)
    pid = stack.postgres.component.pid  # type: ignore[union-attr]
    assert os.stat(f"/proc/{pid}").st_uid != 0, "Postgres must not run as root"


def test_the_api_server_is_healthy_without_services_and_uses_postgres_and_redis(
        stack: ScaleStack, api: httpx.Client) -> None:
    assert api.get("/health").json() is True
    settings = api.get("/admin/settings").json()["server"]
    assert settings["events"]["messaging_broker"] == "prefect_redis.messaging"
    assert settings["events"]["causal_ordering"] == "prefect_redis.ordering"
    assert settings["concurrency"]["lease_storage"] == "prefect_redis.lease_storage"
    assert settings["database"]["migrate_on_start"] is False
    assert settings["services"] and stack.services is not None and stack.services.running
    api_log = (stack.logs / "api.log").read_text(errors="replace")
    assert "--no-services" in api_log


def test_two_workers_are_registered_in_the_pool_each_with_its_own_home(stack: ScaleStack, api: httpx.Client) -> None:
    workers = api.post(f"/work_pools/{stack.pool}/workers/filter", json={}).json()
    assert sorted(w["name"] for w in workers) == ["worker-a", "worker-b"]
    assert {w["status"] for w in workers} == {"ONLINE"}
    homes = {m.home for m in stack.workers} | {m.state_dir for m in stack.workers} | {m.workdir for m in stack.workers}
    assert len(homes) == 6 and all(path.is_dir() for path in homes)


def test_a_flow_run_submitted_to_the_pool_completes_on_a_worker_with_its_results_in_s3(
        stack: ScaleStack, api: httpx.Client, smoke_deployment: str) -> None:
    before = s3_keys(stack)
    began = time.monotonic()
    created = api.post(f"/deployments/{smoke_deployment}/create_flow_run", json={"parameters": {"x": 21}})
    assert created.status_code == 201, created.text
    run = wait_for_state(api, created.json()["id"], TERMINAL, timeout=120)
    assert run["state"]["type"] == "COMPLETED", run["state"]
    print(f"submitted -> completed on a worker: {time.monotonic() - began:.1f} s")
    stored = run["state"]["data"]  # a persisted result is a record's address: its block and key
    block = api.get(f"/block_documents/{stored['storage_block_id']}").json()
    assert block["block_type"]["slug"] == "s3-bucket" and block["name"] == stack.storage_block_name
    new = s3_keys(stack) - before
    assert f"results/{stored['storage_key']}" in new, new
    assert len(new) >= 2, f"the task's result and the flow's: {new}"  # double(21) and scale_smoke(21)
    body = stack.s3.client().get_object(Bucket=stack.bucket, Key=f"results/{stored['storage_key']}")["Body"].read()
    assert pickle.loads(base64.b64decode(body)) == 42  # Prefect's default serializer: pickle, base64-encoded
    assert len(ran_on(stack, run["id"])) == 1
    assert forked_by(stack, run["id"]) == ran_on(stack, run["id"])  # by that worker's launcher, no fallback


def test_an_event_reaches_an_automation_through_redis_and_its_action_runs_on_a_worker(
        stack: ScaleStack, api: httpx.Client, smoke_deployment: str) -> None:
    """POST /api/events -> the API publishes to Redis -> the separate services process's triggers consume it -> the
    automation's run-deployment action -> a worker runs it. Nothing of it exists in the API process alone."""
    import redis

    marker = uuid.uuid4().hex[:12]
    resource = f"microagents.scale-test.{marker}"
    automation = api.post("/automations/", json={
        "name": f"scale-test-{marker}",
        "trigger": {"type": "event", "posture": "Reactive", "threshold": 1, "within": 0,
                    "expect": ["microagents.scale-test.ping"], "match": {"prefect.resource.id": resource}},
        "actions": [{"type": "run-deployment", "source": "selected", "deployment_id": smoke_deployment,
                     "parameters": {"x": 7}}],
    })
    assert automation.status_code == 201, automation.text
    time.sleep(2)  # the triggers service reloads automations on a change notice
    began = time.monotonic()
    event = {"id": str(uuid.uuid4()), "occurred": time.strftime("%Y-%m-%dT%H:%M:%S.000Z", time.gmtime()),
             "event": "microagents.scale-test.ping", "resource": {"prefect.resource.id": resource}, "payload": {}}
    assert api.post("/events", json=[event]).status_code == 204
    deadline = time.monotonic() + 120
    runs: list[dict[str, Any]] = []
    while time.monotonic() < deadline:
        runs = api.post("/flow_runs/filter", json={
            "deployments": {"id": {"any_": [smoke_deployment]}},
            "flow_runs": {"state": {"type": {"any_": ["COMPLETED"]}}},
        }).json()
        if any(r["parameters"].get("x") == 7 for r in runs):
            break
        time.sleep(0.5)
    assert any(r["parameters"].get("x") == 7 for r in runs), "the automation's action did not run"
    print(f"event -> automation -> completed flow run: {time.monotonic() - began:.1f} s")
    client = redis.Redis(host="127.0.0.1", port=stack.redis.port, password=stack.redis.password, db=0)
    try:
        assert client.ping() is True
        streams = [key.decode() for key in client.scan_iter(match="*events*", _type="stream")]
        assert streams, "no event stream in Redis"
    finally:
        client.close()


@pytest.fixture(scope="module")
def pipeline(stack: ScaleStack, world: Path):  # noqa: ANN201
    """deployments/prefect.yaml deployed to the stack's pool with `prefect deploy` (what the one command does), and
    the sample app's environments in the shared DEPLOY_ROOT; the deployment's id. Services the runs deployed are
    stopped afterwards."""
    saved = os.environ.get("DEPLOY_ROOT")
    os.environ["DEPLOY_ROOT"] = str(world / "envs")
    try:
        from flows.targets.settings import TargetSettings

        targets = TargetSettings().build()
    finally:
        os.environ.pop("DEPLOY_ROOT") if saved is None else os.environ.update(DEPLOY_ROOT=saved)
    yield deploy_pipeline(stack), targets
    targets.stop_all()


def test_a_pipeline_run_suspended_on_one_worker_is_resumed_by_the_other_and_repeats_nothing(
        stack: ScaleStack, api: httpx.Client, world: Path, pipeline: tuple[str, Any]) -> None:
    """The deploy pipeline from deployments/prefect.yaml, on the pool: staging and the agent's first proposal on the
    worker that took the run; that worker then goes away (stopped), the approval is given, and the other worker
    resumes the run in a new process with its own home and state directory. Nothing is repeated: staging deployed
    once per service, three model calls for three decisions, one production deploy per approval."""
    import json

    from flows.sample_app import load_manifest

    deployment, _ = pipeline
    model = ScriptedModel(world / "model")
    sha = load_manifest(world / "envs" / "sample-app").sha("v1.1.0")
    model.enqueue({"call": {"intent": "deploy_backend_to_prod", "sha": sha[:12]}},
                  {"call": {"intent": "deploy_frontend_to_prod", "sha": sha[:12]}},
                  {"call": {"intent": "done_for_now", "message": "deployed"}})
    created = api.post(f"/deployments/{deployment}/create_flow_run",
                       json={"parameters": {"sha": sha, "source": "test", "actor": "test"}})
    assert created.status_code == 201, created.text
    run_id = created.json()["id"]
    wait_for_state(api, run_id, ("PAUSED", *TERMINAL))
    first = ran_on(stack, run_id)
    assert len(first) == 1, first
    other = next(m.name for m in stack.workers if m.name != first[0])
    stack.stop_worker(first[0])  # the machine that served it goes away
    try:
        microagents = [sys.executable, "-m", "prefect_micro_agents.cli"]
        env = client_env(stack)
        for _ in range(2):  # backend, then frontend
            approved = subprocess.run([*microagents, "approve", run_id], env=env, capture_output=True, text=True,
                                      timeout=60)
            assert approved.returncode == 0, approved.stdout + approved.stderr
            time.sleep(1)
            run = wait_for_state(api, run_id, ("PAUSED", *TERMINAL))
        assert run["state"]["type"] == "COMPLETED", run["state"]
    finally:
        stack.start_worker(first[0])
    assert ran_on(stack, run_id) == [first[0], other, other]
    assert forked_by(stack, run_id) == sorted(ran_on(stack, run_id))  # every process by its worker's launcher
    assert len(model.requests()) == 3  # no model call repeated on resume
    history = json.loads((world / "envs" / "environments" / "state.json").read_text())["history"]
    assert [(h["env"], h["service"], h["status"]) for h in history if h["action"] == "deploy"] == [
        ("staging", "backend", "succeeded"), ("staging", "frontend", "succeeded"),
        ("production", "backend", "succeeded"), ("production", "frontend", "succeeded")]
    # The execution records live in the shared result storage (S3), not on either machine: one "started" and one
    # "finished" per approved call (two production deploys), under microagents/executions/.
    records = sorted(k for k in s3_keys(stack) if "/microagents/executions/" in f"/{k}")
    assert len([k for k in records if k.endswith("/started")]) == 2, records
    assert len([k for k in records if k.endswith("/finished")]) == 2, records
    assert not (stack.worker(other).state_dir / "executions").exists()


def test_stopping_the_stack_leaves_no_process_behind(stack: ScaleStack) -> None:
    memory = stack.rss_mib()
    print("idle RSS MiB: " + ", ".join(f"{name} {mib:.0f}" for name, mib in memory.items()))
    print("start timings s: " + ", ".join(f"{name} {seconds:.1f}" for name, seconds in stack.timings.items()))
    assert set(memory) == {"postgres", "redis", "s3 (moto)", "api", "services", "worker-a", "worker-b",
                           "worker-a launcher", "worker-b launcher"}
    groups = stack.pgids()
    places = (str(stack.run_dir), str(stack.postgres.data_dir))  # the cluster may live outside the run dir
    began = time.monotonic()
    stack.stop()
    print(f"stopped in {time.monotonic() - began:.1f} s")
    left = []
    for entry in Path("/proc").glob("[0-9]*"):
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except (OSError, IndexError):
            continue
        if fields[0] != "Z" and (int(fields[2]) in groups or any(p in cmdline for p in places)):
            left.append(f"{entry.name}: {cmdline}")
    assert not left, left
    assert not any(part.running for part in stack.components().values())


# -- the one command (deployments/scale_stack.py) ---------------------------------------------------------------------

def processes_under(*places: Path) -> list[str]:
    """Live processes whose command line or working directory is in one of these directories."""
    found = []
    for entry in Path("/proc").glob("[0-9]*"):
        try:
            if (entry / "stat").read_text().rsplit(")", 1)[1].split()[0] == "Z":
                continue
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            cwd = os.readlink(entry / "cwd")
        except (OSError, IndexError):
            continue
        if any(str(p) in cmdline or cwd.startswith(str(p)) for p in places):
            found.append(f"{entry.name} (cwd {cwd}): {cmdline}")
    return found


def start_command(run_dir: Path, *args: str) -> tuple[subprocess.Popen[str], list[str]]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")}
    proc = subprocess.Popen([sys.executable, "-m", "deployments.scale_stack", "--run-dir", str(run_dir), "--no-model",
                             *args], cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    return proc, []


def read_until(proc: subprocess.Popen[str], lines: list[str], needle: str, timeout: float) -> None:
    assert proc.stdout is not None
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if not line:
            break
        lines.append(line)
        if needle in line:
            return
    raise AssertionError(f"no {needle!r} within {timeout:.0f} s:\n" + "".join(lines[-40:]))


def test_the_one_command_deploys_the_pipeline_to_the_pool_and_ctrl_c_stops_everything(tmp_path: Path) -> None:
    run_dir = tmp_path / "scale"
    began = time.monotonic()
    proc, lines = start_command(run_dir)
    try:
        read_until(proc, lines, "Press Ctrl-C to stop everything.", timeout=300)
        print(f"`python -m deployments.scale_stack --no-model` ready after {time.monotonic() - began:.1f} s")
        text = "".join(lines)
        api_url = next(w for w in text.split() if w.startswith("http://127.0.0.1:") and w.endswith("/api"))
        with httpx.Client(base_url=api_url, timeout=30, trust_env=False) as api:
            deployment = api.get("/deployments/name/deploy-pipeline/worker").json()
            assert deployment["work_pool_name"] == "microagents"
            assert deployment["entrypoint"] == "flows/deploy_pipeline.py:deploy_pipeline"
            workers = api.post("/work_pools/microagents/workers/filter", json={}).json()
            assert sorted(w["name"] for w in workers) == ["worker-a", "worker-b"]
            automations = [a["name"] for a in api.post("/automations/filter", json={}).json()]
            assert any(name.startswith("microagents-recover") for name in automations), automations
        pg_data = next(w for w in text.split() if w.endswith("/data"))  # the cluster may live outside the run dir
        assert processes_under(run_dir, Path(pg_data))
    finally:
        stopping = time.monotonic()
        proc.send_signal(signal.SIGINT)
        rest, _ = proc.communicate(timeout=120)
        lines.append(rest)
    print(f"stopped {time.monotonic() - stopping:.1f} s after SIGINT")
    assert proc.returncode == 0, "".join(lines[-40:])
    assert "stopped." in rest
    assert not processes_under(run_dir, Path(pg_data))


def test_a_part_that_cannot_start_is_named_with_its_log_and_the_rest_is_stopped(tmp_path: Path) -> None:
    run_dir = tmp_path / "scale"
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        proc, lines = start_command(run_dir, "--port", str(taken.getsockname()[1]))
        out, _ = proc.communicate(timeout=300)
    assert proc.returncode == 1, out
    error = next(line for line in out.splitlines() if "error:" in line)
    assert "error: api: exited with code" in error, out
    assert "last lines of" in out and "api.log" in out
    elsewhere = [Path(w) for w in out.split() if w.endswith("/data")]  # a cluster outside the run dir, if any
    assert not processes_under(run_dir, *elsewhere), out
