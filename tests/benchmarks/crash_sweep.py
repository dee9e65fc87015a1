"""Issue 11 crash sweep: kill the worker at random moments after an approval and let the system recover on its own.

Set-up: a real Prefect server (SQLite) with the project's recovery automations, `flows/serve.py` serving the deploy
pipeline in its own process group, and the scripted model (the only stand-in). Production of every trial runs
v1.0.0 (backend and frontend, local targets in the trial's own directory); the agent proposes deploying v1.1.0's
backend, then says it is done.

A round starts `--per-round` runs, approves each, then SIGKILLs the runner's process group at a random moment `--kill-between`
seconds after the first approval (so each run is somewhere between resuming, waiting for the production
slot, deploying and finishing) and at once starts a new runner, as a supervisor would. Nothing else is done: no
state is changed through the API. Per trial it prints: when the kill came (seconds after that run's approval), the
run's state and the deploy's phase at the kill, the recovery time (kill -> the run Running again, from Prefect's
state history), the time to its final state, the deploy's executions per approved call (history entries for the
call's idempotency key, and the attempts that touched the entry), orphan service processes, and the final state.

Run: .venv/bin/python tests/benchmarks/crash_sweep.py [--rounds 5] [--per-round 4] [--kill-between 3 14] [--seed 11]
"""

from __future__ import annotations

import argparse
import os
import random
import statistics
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx

from _checkout import ROOT  # noqa: E402  (the checkout first on sys.path: the app is not installed)

from prefect_micro_agents.adapter.approvals import ApprovalsClient  # noqa: E402
from prefect_micro_agents.adapter.local_server import LocalPrefectServer  # noqa: E402
from prefect_micro_agents.adapter.recovery import ensure_recovery_automations  # noqa: E402
from prefect_micro_agents.llm import PROVIDERS_ENV  # noqa: E402
from prefect_micro_agents.testing.scripted import ScriptedModel  # noqa: E402
from flows.sample_app import create_sample_app  # noqa: E402
from flows.targets import LocalTargets  # noqa: E402
from flows.targets.procscan import listener_pid, processes_with  # noqa: E402
from flows.targets.settings import TargetSettings  # noqa: E402
from prefect_harness import Served, create_run, next_pause  # noqa: E402

# The scripted model is a custom litellm provider, registered through the kit's hook here and in the runner and flow
# runs started below (they inherit the environment).
os.environ[PROVIDERS_ENV] = "prefect_micro_agents.testing:register"

FINAL = {"COMPLETED", "FAILED", "CANCELLED"}  # CRASHED is not final here: the retry automation picks it up


def _at(value: str) -> float:
    return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()


def states(http: httpx.Client, run: str) -> list[dict[str, Any]]:
    found = http.get("/flow_run_states/", params={"flow_run_id": run}).json()
    return sorted(found, key=lambda s: s["timestamp"])


def phase_of(local: LocalTargets) -> str:
    """Where the production backend deploy stood: the phase of its entry, or 'not started'."""
    entries = [h for h in local.state("production").history if h.idempotency_key]
    return f"{entries[-1].phase or entries[-1].status}" if entries else "not started"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--per-round", type=int, default=4)
    parser.add_argument("--kill-between", type=float, nargs=2, default=(3.0, 14.0), metavar=("FROM", "TO"),
                        help="kill at a uniformly random moment this many seconds after the first approval (default: "
                             "3 14, from the resumed runs' start to the last one's end on this machine)")
    parser.add_argument("--seed", type=int, default=11)
    parser.add_argument("--timeout", type=float, default=420.0, help="per round, kill -> every run final")
    args = parser.parse_args()
    rng = random.Random(args.seed)
    with tempfile.TemporaryDirectory(prefix="crash-sweep-") as tmp_name:
        tmp = Path(tmp_name)
        with LocalPrefectServer(tmp / "prefect", ui=False) as server, server.connected():
            os.environ["AGENT_STATE_DIR"] = str(tmp / "agent-state")
            automations = ensure_recovery_automations()
            print(f"server {server.api_url}; automations: {', '.join(a.name for a in automations)}", flush=True)
            sample = create_sample_app(tmp / "sample")
            sha = sample.sha("v1.1.0")
            with httpx.Client(base_url=server.api_url, auth=server.httpx_auth, timeout=30, trust_env=False) as http:
                env = {k: v for k, v in os.environ.items() if k != "AGENT_MODEL"}
                served = Served("flows.serve", env, http, "deploy-pipeline/local", tmp / "serve.log",
                                args=("--no-schedule", "--no-trigger", "--no-notify"))
                deployment = served.start()
                rows: list[dict[str, Any]] = []
                try:
                    for round_no in range(args.rounds):
                        rows += sweep_round(round_no, args, rng, http, served, deployment, tmp, sample, sha)
                finally:
                    served.stop()
                    for row in rows:
                        row["settings"].build().stop_all()
    return report(rows)


def sweep_round(round_no: int, args: argparse.Namespace, rng: random.Random, http: httpx.Client, served: Served,
                deployment: str, tmp: Path, sample: Any, sha: str) -> list[dict[str, Any]]:
    trials = []
    for i in range(args.per_round):
        where = tmp / f"r{round_no}-{i}"
        settings = TargetSettings(root=str(where / "envs"), repo=sample.repo)
        for service in ("backend", "frontend"):
            assert settings.build().deploy(service, "production", "v1.0.0").ok
        model = ScriptedModel(where / "model")
        model.enqueue({"call": {"intent": "deploy_backend_to_prod", "sha": sha[:12]}},
                      {"call": {"intent": "done_for_now", "message": "backend deployed"}})
        params = {"sha": sha, "targets": settings.model_dump(), "model": model.model, "source": "git.push",
                  "actor": "sweep"}
        trials.append({"trial": f"{round_no}.{i}", "run": create_run(http, deployment, params),
                       "settings": settings, "model": model})
    with ApprovalsClient() as approvals:
        for t in trials:
            next_pause(http, t["run"], timeout=240)
        for t in trials:  # approve all, then kill at a random moment in --kill-between
            approvals.approve(t["run"], "sweep")
            t["approved"] = time.time()
    first = min(t["approved"] for t in trials)
    time.sleep(max(0.0, first + rng.uniform(*args.kill_between) - time.time()))
    at_kill = {t["run"]: http.get(f"/flow_runs/{t['run']}").json()["state_name"] for t in trials}
    phases = {t["run"]: phase_of(t["settings"].build()) for t in trials}
    served.kill()
    killed = time.time()
    served.start()  # the supervisor's part
    deadline = time.monotonic() + args.timeout
    for t in trials:
        state: dict[str, Any] = {}
        while time.monotonic() < deadline:
            state = http.get(f"/flow_runs/{t['run']}").json()["state"]
            if state["type"] in FINAL:
                break
            time.sleep(0.5)
        history = states(http, t["run"])
        after = [s for s in history if _at(s["timestamp"]) >= killed]
        crashed = next((s for s in after if s["type"] == "CRASHED" or s["name"] == "AwaitingRetry"), None)
        rerun = next((s for s in after if crashed and s["type"] == "RUNNING"
                      and _at(s["timestamp"]) > _at(crashed["timestamp"])), None)
        local = t["settings"].build()
        keyed = [h for h in local.state("production").history if h.idempotency_key]
        per_key: dict[str, list[Any]] = {}
        for h in keyed:
            per_key.setdefault(h.idempotency_key, []).append(h)
        port = int(local.url("production", "backend").rsplit(":", 1)[1])
        ours = [p.pid for p in processes_with(f"{local.service_dir('production', 'backend')}/", f"--port\0{port}\0")]
        backend = local.state("production").services["backend"]
        t.update({
            "kill_after_approval_s": killed - t["approved"], "state_at_kill": at_kill[t["run"]],
            "phase_at_kill": phases[t["run"]],
            "detected_s": _at(crashed["timestamp"]) - killed if crashed else None,
            "recovered_s": _at(rerun["timestamp"]) - killed if rerun else None,
            "final_s": _at(history[-1]["timestamp"]) - killed if state.get("type") in FINAL else None,
            "final": f"{state.get('type')}/{state.get('name')}",
            "entries_per_key": [len(v) for v in per_key.values()],
            "attempts": [h.attempts for h in keyed],
            "orphans": len([p for p in ours if p != backend.pid]),
            "listener_is_recorded": listener_pid(port) == backend.pid,
            "model_requests": len(t["model"].requests()),
        })
        print(line(t), flush=True)
    return trials


def line(t: dict[str, Any]) -> str:
    def s(v: float | None) -> str:
        return f"{v:6.1f}" if v is not None else "     -"

    return (f"trial {t['trial']:>5}: kill {t['kill_after_approval_s']:5.1f} s after approval, at kill "
            f"{t['state_at_kill']:<13} deploy {t['phase_at_kill']:<11} | detected {s(t['detected_s'])} s, running "
            f"again {s(t['recovered_s'])} s, final {s(t['final_s'])} s: {t['final']:<20} | executions per call "
            f"{t['entries_per_key']} (attempts {t['attempts']}), orphans {t['orphans']}, listener is recorded pid "
            f"{t['listener_is_recorded']}, model calls {t['model_requests']}")


def report(rows: list[dict[str, Any]]) -> int:
    terminal = [r for r in rows if r["final_s"] is not None]
    completed = [r for r in rows if r["final"].startswith("COMPLETED")]
    doubles = [r for r in rows if any(n > 1 for n in r["entries_per_key"])]
    orphans = sum(r["orphans"] for r in rows)
    recovered = [r["recovered_s"] for r in rows if r["recovered_s"] is not None]
    print(f"\n{len(rows)} trials: {len(terminal)}/{len(rows)} terminal with no human action "
          f"({len(completed)} completed), {len(doubles)} double executions, {orphans} orphan processes, "
          f"{sum(not r['listener_is_recorded'] for r in rows)} listeners that are not the recorded process")
    if recovered:
        print(f"recovery (kill -> running again) over {len(recovered)} recovered runs: median "
              f"{statistics.median(recovered):.1f} s, max {max(recovered):.1f} s, min {min(recovered):.1f} s; "
              f"{len(rows) - len(recovered)} runs had finished or not started a crashable attempt at the kill")
    ok = len(terminal) == len(rows) and not doubles and not orphans
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
