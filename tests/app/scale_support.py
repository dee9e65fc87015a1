"""What the scale-out stack's tests share: the stack with the scripted model in every worker, the deploy pipeline
deployed to its pool the way `python -m deployments.scale_stack` deploys it, and reading what happened (run states,
which worker started a run, what landed in S3)."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx

from prefect_micro_agents.testing import ScaleStack, ScriptedModel

ROOT = Path(__file__).resolve().parents[2]
TERMINAL = ("COMPLETED", "FAILED", "CRASHED", "CANCELLED")

__all__ = ["TERMINAL", "client_env", "deploy_pipeline", "ran_on", "s3_keys", "started_stack", "wait_for_state"]


def started_stack(run_dir: Path, world: Path, **worker_env: str) -> Iterator[ScaleStack]:
    """A two-worker stack whose workers share `world` (the sample app's environments under DEPLOY_ROOT, the scripted
    model's queue) and get `worker_env` too; stopped when the generator is closed."""
    began = time.monotonic()
    env = {"AGENT_MODEL": ScriptedModel(world / "model").model, "DEPLOY_ROOT": str(world / "envs"),
           "AGENT_LITELLM_PROVIDERS": os.environ["AGENT_LITELLM_PROVIDERS"], **worker_env}
    with ScaleStack(run_dir, workers=2, worker_query_seconds=1, worker_env=env) as stack:
        stack.timings["fixture start"] = time.monotonic() - began
        yield stack


def client_env(stack: ScaleStack) -> dict[str, str]:
    """This environment minus its Prefect settings, plus the stack's client settings: a client process's env."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")}
    env.update(stack.client_env(), PREFECT_HOME=str(stack.run_dir / "client-home"), PWD=str(ROOT))
    return env


def deploy_pipeline(stack: ScaleStack, *, recovery: bool = False) -> str:
    """`prefect deploy --prefect-file deployments/prefect.yaml --all` against the stack (and, with `recovery`,
    `python -m flows.triggers`: the recovery automations), as the one command does; the pipeline deployment's id."""
    commands = [["prefect", "deploy", "--prefect-file", "deployments/prefect.yaml", "--all"]]
    if recovery:
        commands.append(["-m", "flows.triggers"])
    for command in commands:
        argv = [sys.executable, *(["-m", *command] if command[0] == "prefect" else command)]
        done = subprocess.run(argv, cwd=ROOT, env=client_env(stack), capture_output=True, text=True, timeout=300)
        assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    with httpx.Client(base_url=stack.api_url, timeout=30, trust_env=False) as api:
        return str(api.get("/deployments/name/deploy-pipeline/worker").json()["id"])


def wait_for_state(api: httpx.Client, run_id: str, types: tuple[str, ...], timeout: float = 180) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        run = api.get(f"/flow_runs/{run_id}").json()
        if run["state"] and run["state"]["type"] in types:
            return run
        time.sleep(0.5)
    raise AssertionError(f"flow run {run_id} not in {types} after {timeout:.0f} s: {run['state']}")


def s3_keys(stack: ScaleStack) -> set[str]:
    listed = stack.s3.client().list_objects_v2(Bucket=stack.bucket)
    return {item["Key"] for item in listed.get("Contents", [])}


def submissions(log: Path, run_id: str) -> list[tuple[str, bool]]:
    """(when, went ahead) for each time the worker whose log this is submitted this flow run. Two workers may take a
    scheduled run from the queue at once; Prefect lets one move it to Pending and aborts the other's submission
    ("Aborted submission of flow run ... cannot transition to a PENDING state")."""
    found: list[tuple[str, bool]] = []
    for line in log.read_text(errors="replace").splitlines() if log.exists() else []:
        if f"submitting flow run '{run_id}'" in line:
            found.append((line.split(" | ")[0], True))
        elif f"Aborted submission of flow run '{run_id}'" in line and found:
            found[-1] = (found[-1][0], False)
    return found


def forked_by(stack: ScaleStack, run_id: str) -> list[str]:
    """Which workers' launchers started a process for this flow run: one name per process, sorted by name (a launcher
    logs "flow run <id>: started process <pid>"; a client that fell back to a fresh interpreter leaves no line)."""
    found = []
    for machine in stack.workers:
        log = stack.logs / f"{machine.name}-launcher.log"
        text = log.read_text(errors="replace") if log.exists() else ""
        found += [machine.name] * text.count(f"flow run {run_id}: started process")
    return sorted(found)


def ran_on(stack: ScaleStack, run_id: str, names: tuple[str, ...] = ()) -> list[str]:
    """Which workers started this flow run, once per attempt, in time order; an aborted submission is not counted.
    `names`: the logs to read (default: the stack's workers)."""
    seen = [(when, name) for name in names or tuple(m.name for m in stack.workers)
            for when, ahead in submissions(stack.logs / f"{name}.log", run_id) if ahead]
    return [name for _, name in sorted(seen)]
