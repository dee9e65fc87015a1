"""Issue 13 benchmarks on the scale-out stack (prefect_micro_agents.testing.ScaleStack: Postgres, Redis, moto's S3,
API server without services, the services process, a process pool and its workers), with the scripted model.

The flow is bench_flows.py's `bench-gate` (one agent step, one approval, then done), deployed to the stack's pool from
this folder. Every flow run is a process a worker starts; it exits when the run suspends. `--mode` says how the worker
starts it: `launcher` (the stack's default: forked by the kit's warm launcher beside the worker), `engine` (Prefect's
`command: python -m prefect.engine`, a fresh interpreter per run: the fairest baseline) or `default` (Prefect's own
default command, a workspace supervisor that execs the engine).

1. many (`--runs`, default 1000): N runs created at once, each suspended at its approval with no process held while
   it waits. Printed: time to create them and until all are suspended; flow-run processes left; CPU-seconds per run
   (the workers' reaped children: every flow-run process, start to suspension), the server's CPU per run (API,
   services, Postgres, Redis), the database's growth per waiting run; resume latency (resume POST -> the approved
   tool starts) p50/p90 over `--latency` runs while the others wait; then all approved, executions counted per
   idempotency key.
2. cpu: where one run's CPU goes before its first suspension: a bare interpreter, `import prefect.engine`, the kit,
   `import litellm`, measured as processes of their own (getrusage of children; minimum of 3).
3. throughput (`--throughput 1,2,4`, `--throughput-runs`): a fresh stack per worker count; M runs created at once,
   each approved as soon as it suspends; runs per minute from creation to all completed.

Run: .venv/bin/python tests/benchmarks/bench_scale_runs.py [--runs 1000] [--latency 20] [--workers 2] [--limit 4]
     [--throughput 1,2,4] [--throughput-runs 40] [--skip cpu,many,throughput] [--mode launcher|engine|default]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx

HERE = Path(__file__).resolve().parent
import _checkout  # noqa: E402,F401  (the checkout first on sys.path: the app is not installed)

import executions  # noqa: E402
from bench_gate import BACKEND, DONE  # noqa: E402
from prefect_micro_agents.adapter.approvals import ApprovalsClient, ResumeRefused  # noqa: E402
from prefect_micro_agents.llm import PROVIDERS_ENV  # noqa: E402
from prefect_micro_agents.stack.processes import live_stats  # noqa: E402
from prefect_micro_agents.testing import ScaleStack, ScriptedModel  # noqa: E402

TICK = os.sysconf("SC_CLK_TCK")
SERVER_PARTS = ("api", "services", "postgres", "redis")


def cpu_seconds(pgid: int, *, children: bool = True, own: bool = True) -> float:
    """CPU-seconds of the live processes of a process group: their own time and (with `children`) the time of the
    children they reaped (a worker's reaped flow-run processes; Postgres's exited backends)."""
    total = 0
    for entry in Path("/proc").glob("[0-9]*"):
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        if int(fields[2]) != pgid:
            continue
        total += (int(fields[11]) + int(fields[12])) * own + (int(fields[13]) + int(fields[14])) * children
    return total / TICK


def group_cpu(stack: ScaleStack, names: tuple[str, ...], **kwargs: bool) -> float:
    parts = stack.components()
    return sum(cpu_seconds(parts[n].pid, **kwargs) for n in names if n in parts and parts[n].pid)  # type: ignore[arg-type]


def flow_run_processes(stack: ScaleStack) -> int:
    """Processes the workers or their launchers started that are alive now: flow runs in progress (with the launcher
    a run is two processes, the worker's client and the launcher's child; counted once, by the child)."""
    parents = {part.pid for m in stack.workers for part in ([m.launcher] if m.launcher else [m.component])
               if part is not None}
    return sum(1 for _, fields in live_stats() if int(fields[1]) in parents)


def flow_run_cpu(stack: ScaleStack) -> float:
    """CPU-seconds of every flow-run process that has exited: the workers' reaped children (the engine, or the
    launcher's client) and, with the launcher, the launcher itself (accepting, forking) and its reaped children."""
    total = group_cpu(stack, tuple(m.name for m in stack.workers), own=False)
    return total + group_cpu(stack, tuple(f"{m.name} launcher" for m in stack.workers))


def db_size(stack: ScaleStack) -> int:
    import asyncpg

    async def ask() -> int:
        pg = stack.postgres
        conn = await asyncpg.connect(host="127.0.0.1", port=pg.port, user=pg.role, password=pg.password,
                                     database=pg.database)
        try:
            return int(await conn.fetchval("select pg_database_size(current_database())"))
        finally:
            await conn.close()

    return asyncio.run(ask())


MODES = {
    "launcher": "the kit's warm launcher (the stack's default): each run forked from a process that imported once",
    "engine": "Prefect's process worker with `command: python -m prefect.engine` (one fresh interpreter per run)",
    "default": "Prefect's process worker as installed (a workspace supervisor that then execs python -m "
               "prefect.engine)",
}


def deploy(stack: ScaleStack, mode: str) -> str:
    with stack.connected():
        from prefect import flow

        loaded = flow.from_source(source=str(HERE), entrypoint="bench_flows.py:gate_flow")
        variables = {"command": f"{sys.executable} -m prefect.engine"} if mode == "engine" else {}
        return str(loaded.deploy(name="bench", work_pool_name=stack.pool, print_next_steps=False,
                                 ignore_warnings=True, job_variables=variables))


def start_stack(run_dir: Path, workers: int, limit: int, mode: str) -> ScaleStack:
    env = {PROVIDERS_ENV: "prefect_micro_agents.testing:register", "LITELLM_LOCAL_MODEL_COST_MAP": "True"}
    stack = ScaleStack(run_dir, workers=workers, worker_query_seconds=1, worker_limit=limit, worker_env=env,
                       launcher=mode == "launcher", progress=None)
    stack.start()
    return stack


@contextmanager
def bench_stack(where: Path, workers: int, limit: int, mode: str) -> Iterator[tuple[ScaleStack, str, httpx.Client,
                                                                         ApprovalsClient, Path]]:
    """A stack in `where` with the benchmark flow deployed: (stack, deployment id, API client, approvals client,
    the effects directory the flow stamps); stopped afterwards."""
    effects = where / "effects"
    effects.mkdir(parents=True)
    stack = start_stack(where / "stack", workers, limit, mode)
    try:
        deployment = deploy(stack, mode)
        with httpx.Client(base_url=stack.api_url, timeout=60, trust_env=False) as http, \
                ApprovalsClient(stack.api_url) as approvals:
            yield stack, deployment, http, approvals, effects
    finally:
        stack.stop()


def create_runs(http: httpx.Client, deployment: str, tmp: Path, effects: Path, n: int, tag: str) -> list[str]:
    def one(i: int) -> str:
        model = ScriptedModel(tmp / f"{tag}-model-{i}")
        model.enqueue(BACKEND, DONE)
        created = http.post(f"/deployments/{deployment}/create_flow_run",
                            json={"parameters": {"model": model.model, "effects": str(effects)}})
        created.raise_for_status()
        return str(created.json()["id"])

    with ThreadPoolExecutor(8) as pool:
        return list(pool.map(one, range(n)))


def states(http: httpx.Client, runs: list[str]) -> dict[str, str]:
    found: dict[str, str] = {}
    for i in range(0, len(runs), 200):
        batch = runs[i:i + 200]
        listed = http.post("/flow_runs/filter", json={"flow_runs": {"id": {"any_": batch}}, "limit": 200}).json()
        found.update({r["id"]: r["state"]["type"] for r in listed})
    return found


def wait_all(http: httpx.Client, runs: list[str], wanted: str, timeout: float, say: str = "") -> float:
    began = time.monotonic()
    last = 0.0
    while True:
        now = states(http, runs)
        bad = {r: s for r, s in now.items() if s in ("FAILED", "CRASHED", "CANCELLED")}
        if bad:
            raise RuntimeError(f"runs ended badly: {list(bad.items())[:5]}")
        done = sum(1 for s in now.values() if s == wanted)
        if done == len(runs):
            return time.monotonic() - began
        if time.monotonic() - began > timeout:
            raise TimeoutError(f"{done}/{len(runs)} {wanted} after {timeout:.0f} s")
        if say and time.monotonic() - last > 30:
            last = time.monotonic()
            print(f"  {say}: {done}/{len(runs)} {wanted} after {time.monotonic() - began:.0f} s", flush=True)
        time.sleep(1)


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def approve_all(approvals: ApprovalsClient, runs: list[str]) -> list[str]:
    """Approve each run (8 at a time); the runs approved. A run just Suspended may not have stored its form yet
    (Prefect writes the state first): it is refused as "not waiting for a decision" and left for the next try."""
    def one(run: str) -> str | None:
        try:
            approvals.approve(run, "bench")
        except ResumeRefused as err:
            if "not waiting for a decision (state: Suspended" not in str(err):
                raise
            return None
        return run

    with ThreadPoolExecutor(8) as pool:
        return [run for run in pool.map(one, runs) if run is not None]


def many(tmp: Path, n: int, latency_samples: int, workers: int, limit: int, mode: str) -> None:
    with bench_stack(tmp, workers, limit, mode) as (stack, deployment, http, approvals, effects):
        size0 = db_size(stack)
        runs_cpu0 = flow_run_cpu(stack)
        server_cpu0 = group_cpu(stack, SERVER_PARTS)
        t0 = time.monotonic()
        runs = create_runs(http, deployment, tmp, effects, n, "many")
        created = time.monotonic() - t0
        wait_all(http, runs, "PAUSED", timeout=4 * 3600, say="suspending")
        suspended = time.monotonic() - t0
        at_last = flow_run_processes(stack)
        deadline = time.monotonic() + 60
        while flow_run_processes(stack) and time.monotonic() < deadline:
            time.sleep(0.5)
        left = flow_run_processes(stack)
        runs_cpu = flow_run_cpu(stack) - runs_cpu0
        server_cpu = group_cpu(stack, SERVER_PARTS) - server_cpu0
        grown = db_size(stack) - size0
        print(f"[many] {n} runs created in {created:.1f} s; all suspended {suspended:.1f} s after the first "
              f"({n / suspended * 60:.0f} runs/min with {workers} workers, --limit {limit} each); flow-run "
              f"processes alive at the last suspension {at_last}, {left} a minute later (none per waiting run)")
        print(f"[many] CPU per run, start to suspension: {runs_cpu / n:.2f} CPU-s (flow-run processes, reaped by "
              f"the workers{' and launchers, launchers included' if mode == 'launcher' else ''}); server (API, services, Postgres, Redis): {server_cpu / n:.3f} CPU-s per run; "
              f"database growth {grown / n / 1024:.1f} KiB per waiting run ({grown / 2**20:.1f} MiB for {n})",
              flush=True)
        samples = runs[:latency_samples]
        lat = []
        for run in samples:
            field = approvals.show(run).field
            began = time.time()
            approvals.resume(run, {field: "approve", "approver": "bench"})
            tool = effects / f"{run}.tool"
            while not tool.exists():
                time.sleep(0.01)
            lat.append(float(tool.read_text().split()[0]) - began)
        print(f"[many] resume POST -> approved tool starts, {len(lat)} samples while {n - len(lat)} runs wait: "
              f"p50 {statistics.median(lat):.2f} s, p90 {pct(lat, 0.9):.2f} s, max {max(lat):.2f} s", flush=True)
        t1 = time.monotonic()
        rest = runs[latency_samples:]
        while rest:
            rest = sorted(set(rest) - set(approve_all(approvals, rest)))
        approving = time.monotonic() - t1
        wait_all(http, runs, "COMPLETED", timeout=4 * 3600, say="completing")
        done = time.monotonic() - t1
        counts = executions.count(effects / executions.LOG_NAME, runs)
        print(f"[many] the other {n - len(lat)} approved in {approving:.1f} s (8 at a time); all {n} completed "
              f"{done:.1f} s after the first approval")
        print(f"[many] executions per idempotency key ({n} runs, one approved call each): {counts.summary()}",
              flush=True)


def cpu_breakdown() -> None:
    env = {**os.environ, "LITELLM_LOCAL_MODEL_COST_MAP": "True"}
    steps = [("interpreter", "pass"), ("+ prefect.engine", "import prefect.engine"),
             ("+ the kit", "import prefect.engine, prefect_micro_agents.adapter"),
             ("+ litellm", "import prefect.engine, prefect_micro_agents.adapter, litellm"),
             ("litellm alone", "import litellm")]
    found = {}
    for name, code in steps:
        values = []
        for _ in range(3):
            before = resource.getrusage(resource.RUSAGE_CHILDREN)
            subprocess.run([sys.executable, "-c", code], check=True, env=env, cwd=HERE.parents[1])
            after = resource.getrusage(resource.RUSAGE_CHILDREN)
            values.append(after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime)
        found[name] = min(values)
    print("[cpu] a process's CPU-s before it does anything (min of 3): " + ", ".join(
        f"{name} {seconds:.2f}" for name, seconds in found.items()), flush=True)


def throughput(tmp: Path, counts: list[int], m: int, limit: int, mode: str) -> None:
    for workers in counts:
        where = tmp / f"throughput-{workers}"
        with bench_stack(where, workers, limit, mode) as (stack, deployment, http, approvals, effects):
            cpu0 = flow_run_cpu(stack)
            server0 = group_cpu(stack, SERVER_PARTS)
            t0 = time.monotonic()
            runs = create_runs(http, deployment, where, effects, m, "tp")
            approved: set[str] = set()
            while len(approved) < m:
                now = states(http, [r for r in runs if r not in approved])
                approved.update(approve_all(approvals, [r for r, s in now.items() if s == "PAUSED"]))
                time.sleep(0.5)
            wait_all(http, runs, "COMPLETED", timeout=3600)
            took = time.monotonic() - t0
            cpu = flow_run_cpu(stack) - cpu0
            server = group_cpu(stack, SERVER_PARTS) - server0
            counts_ = executions.count(effects / executions.LOG_NAME, runs)
            print(f"[throughput] {workers} worker(s), --limit {limit} each: {m} runs created -> suspended -> "
                  f"approved -> completed in {took:.1f} s = {m / took * 60:.1f} runs/min; flow-run CPU "
                  f"{cpu / m:.2f} CPU-s per run (two processes: to the suspension, and from the resume); server "
                  f"(API, services, Postgres, Redis) {server / m:.2f} CPU-s per run; {counts_.summary()}", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=1000)
    parser.add_argument("--latency", type=int, default=20, help="resume-latency samples taken while the rest wait")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--limit", type=int, default=4, help="each worker's --limit (flow runs at once)")
    parser.add_argument("--throughput", default="1,2,4", help="worker counts to measure throughput with")
    parser.add_argument("--throughput-runs", type=int, default=40)
    parser.add_argument("--skip", default="", help="comma-separated: cpu,many,throughput")
    parser.add_argument("--mode", default="launcher", choices=sorted(MODES),
                        help="how workers start flow-run processes: " + "; ".join(f"{k}: {v}" for k, v in MODES.items()))
    args = parser.parse_args()
    skip = set(args.skip.split(","))
    if args.latency >= args.runs:
        parser.error("--latency must be smaller than --runs")
    print(f"[machine] {os.cpu_count()} cores; load average now {os.getloadavg()[0]:.1f}; mode {args.mode}: "
          f"{MODES[args.mode]}", flush=True)
    with tempfile.TemporaryDirectory(prefix="bench-scale-runs-") as name:
        tmp = Path(name)
        if "cpu" not in skip:
            cpu_breakdown()
        if "many" not in skip:
            many(tmp / "many", args.runs, args.latency, args.workers, args.limit, args.mode)
        if "throughput" not in skip:
            throughput(tmp, [int(c) for c in args.throughput.split(",")], args.throughput_runs, args.limit, args.mode)


if __name__ == "__main__":
    main()
