"""Exactly once on the scale-out stack (Postgres, Redis, S3, two workers), when it goes wrong:

- worker B dies (SIGKILL of it and of the flow runs it started) right after an approval, in the middle of a deploy,
  and after the deploy but before its result is recorded: Prefect's automations notice the silence, set the run
  AwaitingRetry, worker A starts it again, and each approved deploy ran once (counted by idempotency key in the
  targets' history). The test only kills; it changes no state and starts nothing but the dead worker, at the end;
- two workers poll the pool at the same instant for the same resumed runs: Prefect lets one of them start each run;
- eight approvals of one run arrive at once: the Postgres-backed server accepts one and refuses the rest cleanly
  (no 5xx), and only the accepted approver's decision is in the run's report.

The stack is this module's own (its workers arm failpoints from a shared directory); the deploy pipeline is deployed
with `prefect deploy` and the recovery automations with `python -m flows.triggers`, as the one command does.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from prefect_micro_agents import ApprovalsClient, ResumeRefused
from prefect_micro_agents.testing import FAILPOINTS_ENV, ScaleStack, ScriptedModel, arm
from flows.sample_app import SampleAppManifest, create_sample_app
from flows.targets import LocalTargets
from flows.targets.procscan import listener_pid, processes_with
from flows.targets.settings import TargetSettings
from prefect_harness import next_pause
from scale_support import TERMINAL, deploy_pipeline, ran_on, s3_keys, started_stack, submissions, wait_for_state

pytestmark = pytest.mark.slow

HERE = Path(__file__).resolve().parent
# One kill per group: a run inside a production deploy holds the one `production-changes` slot, so only one run at a
# time can be frozen inside a deploy; a run frozen right after its approval holds nothing and shares the kill.
KILLS = [("agent.approved", "local.deploy.started"), ("local.deploy.finished",)]


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("world")


@pytest.fixture(scope="module")
def faults(world: Path) -> Path:
    """The failpoints directory every worker reads (AGENT_FAILPOINTS_DIR): a test arms a point, a worker freezes."""
    return world / "faults"


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory, world: Path, faults: Path) -> Iterator[ScaleStack]:
    yield from started_stack(tmp_path_factory.mktemp("scale"), world, **{FAILPOINTS_ENV: str(faults)})


@pytest.fixture(scope="module")
def api(stack: ScaleStack) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=stack.api_url, timeout=30, trust_env=False) as client:
        yield client


@pytest.fixture(scope="module")
def deployment(stack: ScaleStack) -> str:
    return deploy_pipeline(stack, recovery=True)


@pytest.fixture(scope="module")
def sample(tmp_path_factory: pytest.TempPathFactory) -> SampleAppManifest:
    return create_sample_app(tmp_path_factory.mktemp("sample") / "repo")


@pytest.fixture
def approvals(stack: ScaleStack) -> Iterator[ApprovalsClient]:
    with ApprovalsClient(stack.api_url) as client:
        yield client


class BackendDeploy:
    """One pipeline run's world: targets whose production runs v1.0.0, a scripted model that proposes deploying
    v1.1.0's backend and then says it is done, and the run's parameters."""

    def __init__(self, where: Path, sample: SampleAppManifest) -> None:
        self.settings = TargetSettings(root=str(where / "envs"), repo=sample.repo)
        for service in ("backend", "frontend"):
            assert self.settings.build().deploy(service, "production", "v1.0.0").ok
        self.sha = sample.sha("v1.1.0")
        self.model = ScriptedModel(where / "model")
        self.model.enqueue({"call": {"intent": "deploy_backend_to_prod", "sha": self.sha[:12]}},
                           {"call": {"intent": "done_for_now", "message": "backend deployed"}})
        self.params = {"sha": self.sha, "targets": self.settings.model_dump(), "model": self.model.model,
                       "source": "git.push", "actor": "ci"}

    def create(self, api: httpx.Client, deployment: str) -> str:
        created = api.post(f"/deployments/{deployment}/create_flow_run", json={"parameters": self.params})
        assert created.status_code == 201, created.text
        self.run = str(created.json()["id"])
        return self.run

    def local(self) -> LocalTargets:
        local = self.settings.build()
        assert isinstance(local, LocalTargets)
        return local

    def deployed_once(self) -> None:
        """Exactly one approved (keyed) production call in the targets' history: the backend deploy, succeeded; the
        backend runs v1.1.0, healthy, and is the only process of ours on its port."""
        local = self.local()
        keyed = [(h.action, h.service, h.status) for h in local.state("production").history if h.idempotency_key]
        assert keyed == [("deploy", "backend", "succeeded")], keyed
        backend = local.state("production").services["backend"]
        port = int(local.url("production", "backend").rsplit(":", 1)[1])
        assert backend.sha == self.sha and backend.healthy and listener_pid(port) == backend.pid
        ours = processes_with(f"{local.service_dir('production', 'backend')}/", f"--port\0{port}\0")
        assert [p.pid for p in ours] == [backend.pid], "an orphan service is left"
        assert len(self.model.requests()) == 2, "a model call was repeated"


def state_names(api: httpx.Client, run: str) -> list[str]:
    states = api.get("/flow_run_states/", params={"flow_run_id": run}).json()
    return [s["name"] for s in sorted(states, key=lambda s: s["timestamp"])]


def records(stack: ScaleStack) -> dict[str, int]:
    """How many execution records of each kind are in the shared result storage (S3)."""
    keys = [k for k in s3_keys(stack) if "/microagents/executions/" in f"/{k}"]
    return {kind: len([k for k in keys if k.endswith(f"/{kind}")]) for kind in ("started", "finished")}


def wait_for_file(path: Path, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not path.exists():
        assert time.monotonic() < deadline, f"{what} not within {timeout:.0f} s"
        time.sleep(0.05)


def poll_time(log: Path) -> float:
    """Seconds since midnight at which this worker queried for scheduled runs (its one poll; DEBUG log line)."""
    line = next(line for line in log.read_text(errors="replace").splitlines() if "Querying for flow runs" in line)
    hours, minutes, seconds = line.split(" | ")[0].split(":")
    return int(hours) * 3600 + int(minutes) * 60 + float(seconds)


def alive(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


@pytest.mark.parametrize("points", KILLS, ids=["+".join(p.rsplit(".", 1)[-1] for p in k) for k in KILLS])
def test_worker_b_killed_mid_run_is_recovered_on_worker_a_by_prefect_and_each_approved_deploy_runs_once(
        stack: ScaleStack, api: httpx.Client, deployment: str, faults: Path, approvals: ApprovalsClient,
        sample: SampleAppManifest, tmp_path: Path, points: tuple[str, ...]) -> None:
    runs = {point: BackendDeploy(tmp_path / point, sample) for point in points}
    before = records(stack)
    stack.stop_worker("worker-a")  # worker B takes the runs, and their resumes
    try:
        for point, world in runs.items():
            world.create(api, deployment)
        for point, world in runs.items():
            next_pause(api, world.run, timeout=180)
            arm(faults, point)
            approvals.approve(world.run, "alice")
            wait_for_file(faults / f"reached-{point}", 180, f"{point} reached")
    finally:
        stack.start_worker("worker-a")
    frozen = [int((faults / f"reached-{point}").read_text()) for point in points]
    for point in points:
        (faults / f"reached-{point}").unlink()
    killed_groups = stack.kill_worker("worker-b")
    killed = time.monotonic()
    assert not any(alive(pid) for pid in frozen), "the frozen flow runs outlived their worker"
    assert len(killed_groups) >= 1 + len(points), killed_groups  # the worker's and each flow run's
    assert all(api.get(f"/flow_runs/{w.run}").json()["state"]["type"] == "RUNNING" for w in runs.values())
    try:
        for point, world in runs.items():
            final = wait_for_state(api, world.run, TERMINAL, timeout=300)
            assert final["state"]["type"] == "COMPLETED", (point, final["state"])
            assert "deployed" in (final["state"]["message"] or ""), final["state"]
            assert "AwaitingRetry" in state_names(api, world.run)  # Prefect's automation started it again
            assert ran_on(stack, world.run) == ["worker-b", "worker-b", "worker-a"], ran_on(stack, world.run)
            world.deployed_once()
        print(f"\n{'+'.join(points)}: worker B killed -> completed on worker A after {time.monotonic() - killed:.1f} s")
        after = records(stack)
        assert {k: after[k] - before[k] for k in after} == {"started": len(points), "finished": len(points)}
        assert int(api.get("/v2/concurrency_limits/tag:production-changes").json()["active_slots"]) == 0
    finally:
        stack.start_worker("worker-b")
        for world in runs.values():
            world.local().stop_all()


def test_two_workers_polling_at_the_same_instant_start_each_resumed_run_once(
        stack: ScaleStack, api: httpx.Client, deployment: str, approvals: ApprovalsClient,
        sample: SampleAppManifest, tmp_path: Path) -> None:
    """Three runs wait for approval; the stack's workers go away; the runs are approved (Scheduled again, nobody
    takes them); two fresh workers on machines of their own (DEBUG logs: each poll and what it found) poll the pool
    at the same instant. Each run is started by exactly one of them and deploys once."""
    runs = [BackendDeploy(tmp_path / f"run{i}", sample) for i in range(3)]
    for world in runs:
        world.create(api, deployment)
    for world in runs:
        next_pause(api, world.run, timeout=180)
    racers = [stack.new_machine(f"racer-{i}") for i in (1, 2)]
    procs: list[subprocess.Popen[bytes]] = []
    for name in ("worker-a", "worker-b"):
        stack.stop_worker(name)
    try:
        for world in runs:
            approvals.approve(world.run, "alice")
        go = tmp_path / "go"
        for machine in racers:
            with open(stack.logs / f"{machine.name}.log", "ab") as log:
                procs.append(subprocess.Popen(
                    [sys.executable, str(HERE / "race_worker.py"), stack.pool, machine.name,
                     str(machine.root / "ready"), str(go)], cwd=machine.workdir,
                    env={**stack.worker_process_env(machine), "PREFECT_LOGGING_LEVEL": "DEBUG"}, stdout=log,
                    stderr=subprocess.STDOUT,
                    start_new_session=True))
        for machine in racers:
            wait_for_file(machine.root / "ready", 120, f"{machine.name} ready")
        go.write_text(str(time.time() + 1.0))
        for proc in procs:
            assert proc.wait(timeout=400) == 0
        names = tuple(m.name for m in racers)
        for world in runs:
            final = wait_for_state(api, world.run, TERMINAL, timeout=60)
            assert final["state"]["type"] == "COMPLETED", final["state"]
            assert len(ran_on(stack, world.run, names)) == 1, "started by both workers, or by neither"
            world.deployed_once()
        # Both polls were made at the same moment, before any run was taken.
        polls = [poll_time(stack.logs / f"{n}.log") for n in names]
        assert abs(polls[0] - polls[1]) < 0.1, polls
        # What kept each run from starting twice: on Postgres, Prefect's poll query locks the rows it returns with
        # FOR UPDATE SKIP LOCKED, so a simultaneous poll may not see a run at all; a poll a moment later sees it too,
        # and then the server lets only one worker move it to Pending and aborts the other's submission.
        seen_by_both = [w.run for w in runs if all(submissions(stack.logs / f"{n}.log", w.run) for n in names)]
        for run in seen_by_both:
            outcomes = sorted(ahead for n in names for _, ahead in submissions(stack.logs / f"{n}.log", run))
            assert outcomes == [False, True], outcomes
        print(f"\npolls {abs(polls[0] - polls[1]) * 1000:.0f} ms apart; of {len(runs)} runs, {len(seen_by_both)} were "
              f"submitted by both workers (one submission aborted by the server), {len(runs) - len(seen_by_both)} were "
              "returned to one poll only (rows locked by the other)")
    finally:
        for proc in procs:
            if proc.poll() is None:
                os.killpg(proc.pid, 9)
        for name in ("worker-a", "worker-b"):
            stack.start_worker(name)
        for world in runs:
            world.local().stop_all()


def at_once(count: int, action: Any) -> dict[str, Any]:
    """`action(name)` from `count` threads released together; what each returned or raised, by name."""
    barrier = threading.Barrier(count)
    outcomes: dict[str, Any] = {}

    def one(name: str) -> None:
        barrier.wait()
        try:
            outcomes[name] = action(name)
        except Exception as err:  # noqa: BLE001  (kept, asserted on below)
            outcomes[name] = err

    threads = [threading.Thread(target=one, args=(f"approver-{i}",)) for i in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    return outcomes


def approved_by(api: httpx.Client, run: str) -> str:
    """The run's report artifact (all of its text)."""
    artifacts = api.post("/artifacts/filter", json={"artifacts": {"flow_run_id": {"any_": [run]}}}).json()
    return "\n".join(str(a.get("data") or "") for a in artifacts)


def test_eight_approvals_of_one_run_at_once_one_is_accepted_the_rest_refused_cleanly(
        stack: ScaleStack, api: httpx.Client, deployment: str, approvals: ApprovalsClient,
        sample: SampleAppManifest, tmp_path: Path) -> None:
    """Eight valid approvals under eight names, at once, on the Postgres-backed server. Run 1: straight to
    POST /flow_runs/{id}/resume, what eight browsers send (no client retries, which would hide a 5xx). Run 2: through
    the approvals client behind `microagents approve`. Each time one is accepted and the others are refused with a
    reason; nothing answers 5xx; the run deploys once and its report names only the accepted approver."""
    raw, client = BackendDeploy(tmp_path / "raw", sample), BackendDeploy(tmp_path / "client", sample)
    for world in (raw, client):
        world.create(api, deployment)
    try:
        for world in (raw, client):
            next_pause(api, world.run, timeout=180)
        field = approvals.show(raw.run).field

        def post(name: str) -> httpx.Response:
            with httpx.Client(base_url=stack.api_url, timeout=60, trust_env=False) as http:
                return http.post(f"/flow_runs/{raw.run}/resume",
                                 json={"run_input": {field: "approve", "approver": name, "feedback": ""}})

        answers = at_once(8, post)
        seen = {name: (r.status_code, r.json().get("status"), str(r.json().get("details") or r.json())[:90])
                for name, r in answers.items()}
        print(f"\nraw resumes at once: {sorted(set(v for v in seen.values()))}")
        assert all(isinstance(r, httpx.Response) and r.status_code < 500 for r in answers.values()), seen
        accepted = [name for name, (code, status, _) in seen.items() if code in (200, 201) and status == "ACCEPT"]
        assert len(accepted) == 1, seen
        # The others: the run was no longer paused (200, ABORT), or their answer lost the insert race (409).
        assert all(code in (200, 409) and status != "ACCEPT" for name, (code, status, _) in seen.items()
                   if name not in accepted), seen

        def approve(name: str) -> object:
            with ApprovalsClient(stack.api_url) as mine:
                return mine.approve(client.run, name)

        outcomes = at_once(8, approve)
        won = [name for name, out in outcomes.items() if not isinstance(out, Exception)]
        refused = {name: str(out) for name, out in outcomes.items() if isinstance(out, Exception)}
        print(f"client approvals at once: {sorted({m[:70] for m in refused.values()})}")
        assert len(won) == 1, outcomes
        assert all(isinstance(outcomes[name], ResumeRefused) for name in refused), outcomes
        # Each refusal says why: the run had moved on before this one read it, the server found it no longer paused,
        # or its answer lost the insert race to the accepted one (a bare "HTTP 409 Data integrity conflict" before).
        reasons = re.compile(r"is not waiting for a decision|not paused|was stored first")
        assert all(reasons.search(message) for message in refused.values()), refused
        for world, winner in ((raw, accepted[0]), (client, won[0])):
            final = wait_for_state(api, world.run, TERMINAL, timeout=300)
            assert final["state"]["type"] == "COMPLETED", final["state"]
            world.deployed_once()
            report = approved_by(api, world.run)
            assert f"by {winner}" in report, report[:2000]
            assert not [f"approver-{i}" for i in range(8) if f"approver-{i}" != winner and f"by approver-{i}" in report]
    finally:
        raw.local().stop_all()
        client.local().stop_all()


def test_runs_creating_the_production_limit_at_once_all_go_on(stack: ScaleStack, api: httpx.Client) -> None:
    """The pipeline creates the `production-changes` limit when it is missing (flows/production.py ensure_limit).
    Sixteen at once (five rounds) against the Postgres-backed server, with a tag nobody created: one creates it, the others find it;
    none fails. Found by the race test above: runs started together failed with "409 Conflict: Data integrity
    conflict" from the losing inserts."""
    import uuid

    from flows.production import ensure_limit

    tags = [f"race-{uuid.uuid4().hex[:8]}" for _ in range(5)]  # five rounds, each with a new tag
    errors: list[BaseException] = []

    def create(barrier: threading.Barrier, tag: str) -> None:
        barrier.wait()
        try:
            ensure_limit(tag)
        except BaseException as err:  # noqa: BLE001  (what a run would die of)
            errors.append(err)

    with stack.connected():
        for tag in tags:
            barrier = threading.Barrier(16)
            threads = [threading.Thread(target=create, args=(barrier, tag)) for _ in range(16)]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join(timeout=60)
    assert not errors, errors
    for tag in tags:
        limit = api.get(f"/concurrency_limits/tag/{tag}")
        assert limit.status_code == 200 and limit.json()["concurrency_limit"] == 1
