"""Issue 3 benchmarks on a real local Prefect server (SQLite):

1. orchestration overhead per agent step (instant scripted model, auto tool), flow vs plain Python;
2. resume latency: resume POST -> approved tool starting (served by prefect_micro_agents.adapter.serving, which polls every
   $AGENT_RUNNER_POLL_S seconds; `--poll` sets it for the served runner);
3. N runs suspended at once with no process per run, then all approved; executions counted per idempotency key.

Run: .venv/bin/python tests/benchmarks/bench_gate.py [--runs 200] [--samples 10] [--poll 0.25] [--skip ...]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

HERE = Path(__file__).resolve().parent
import _checkout  # noqa: E402,F401  (the checkout first on sys.path: the app is not installed)

import executions  # noqa: E402
from prefect_micro_agents.adapter.approvals import ApprovalsClient  # noqa: E402
from prefect_micro_agents.adapter.local_server import LocalPrefectServer  # noqa: E402
from prefect_micro_agents.llm import PROVIDERS_ENV  # noqa: E402
from prefect_micro_agents.adapter.serving import RUNNER_POLL_ENV  # noqa: E402
from prefect_micro_agents.testing.scripted import ScriptedModel  # noqa: E402
from prefect_harness import Served, create_run, wait_state  # noqa: E402

# The scripted model is a custom litellm provider, registered through the kit's hook here and in the runner and flow
# runs started below (they inherit the environment).
os.environ[PROVIDERS_ENV] = "prefect_micro_agents.testing:register"

BACKEND = {"call": {"intent": "deploy_backend_to_prod", "sha": "9f8e7d6c5b4a"}}
DONE = {"call": {"intent": "done_for_now", "message": "done"}}


def overhead(tmp: Path, steps: int = 50, repeats: int = 3) -> None:
    """Same scripted replies through run_until_blocked (plain Python) and run_agent (in a flow), `repeats` times."""
    from bench_flows import NOOP_AGENT, Noop, _noop, overhead_flow

    from prefect_micro_agents import bind
    from prefect_micro_agents.runner import run_until_blocked
    from prefect_micro_agents.thread import Thread, TriggerEvent

    replies = [{"call": {"intent": "noop"}}] * steps + [DONE]
    thread = Thread(id="plain", events=(TriggerEvent(source="bench", actor="bench", request="noop until done"),))
    warm = ScriptedModel(tmp / "overhead-warm")
    warm.enqueue(DONE)
    run_until_blocked(NOOP_AGENT, thread, [bind(Noop, _noop)], warm.model)  # import litellm outside the timing
    n = steps + 1
    plain, in_flow = [], []
    for i in range(repeats):
        model = ScriptedModel(tmp / f"overhead-plain-{i}")
        model.enqueue(*replies)
        started = time.perf_counter()
        run_until_blocked(NOOP_AGENT, thread, [bind(Noop, _noop)], model.model)
        plain.append((time.perf_counter() - started) / n * 1000)
        model = ScriptedModel(tmp / f"overhead-flow-{i}")
        model.enqueue(*replies)
        in_flow.append(overhead_flow(model.model, f"flow-{i}") / n * 1000)
    extra = sorted(f - p for f, p in zip(in_flow, plain, strict=True))
    print(f"[overhead] {n} agent steps (a model call plus an auto tool run each, then done), instant scripted model, "
          f"{repeats} repeats")
    print(f"[overhead] plain Python: {statistics.median(plain):.1f} ms/step; in a flow on the local server: "
          f"{statistics.median(in_flow):.1f} ms/step; orchestration overhead median {statistics.median(extra):.1f} "
          f"ms/step, best {extra[0]:.1f} (target <= 25 ms)")


def wait_exited(pid: int, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while Path(f"/proc/{pid}").exists() and time.monotonic() < deadline:
        time.sleep(0.02)


def resume_latency(served: Served, http: httpx.Client, approvals: ApprovalsClient, tmp: Path, samples: int) -> None:
    effects = tmp / "latency"
    effects.mkdir()
    totals, to_body, body_to_tool = [], [], []
    for i in range(samples):
        model = ScriptedModel(tmp / f"latency-model-{i}")
        model.enqueue(BACKEND, DONE)
        run = create_run(http, served.deployment_id, {"model": model.model, "effects": str(effects)})  # type: ignore[attr-defined]
        wait_state(http, run, {"PAUSED"})
        wait_exited(int((effects / f"{run}.body").read_text().split()[1]))  # a human is never faster than this
        field = approvals.show(run).field
        t0 = time.time()
        approvals.resume(run, {field: "approve", "approver": "bench"})
        tool = effects / f"{run}.tool"
        while not tool.exists():
            time.sleep(0.01)
        t_tool = float(tool.read_text().split()[0])
        t_body = float((effects / f"{run}.body").read_text().splitlines()[-1].split()[0])
        totals.append(t_tool - t0)
        to_body.append(t_body - t0)
        body_to_tool.append(t_tool - t_body)
        wait_state(http, run, {"COMPLETED"})
    poll = served.env.get(RUNNER_POLL_ENV, "0.25 (default)")
    print(f"[resume] {samples} samples, runner poll {poll} s ({RUNNER_POLL_ENV} of the served runner): "
          f"resume POST -> approved tool starts: median {statistics.median(totals):.2f} s "
          f"(min {min(totals):.2f}, max {max(totals):.2f}); of which resume -> flow body starts "
          f"{statistics.median(to_body):.2f} s (runner poll + new process + imports), flow body replay -> tool "
          f"{statistics.median(body_to_tool) * 1000:.0f} ms (target median <= 2 s)")


def many_suspended(served: Served, http: httpx.Client, approvals: ApprovalsClient, tmp: Path, n: int) -> None:
    effects = tmp / "many"
    effects.mkdir()
    t0 = time.perf_counter()
    runs = []
    for i in range(n):
        model = ScriptedModel(tmp / f"many-model-{i}")
        model.enqueue(BACKEND, DONE)
        runs.append(create_run(http, served.deployment_id, {"model": model.model, "effects": str(effects)}))  # type: ignore[attr-defined]
    created = time.perf_counter() - t0
    for run in runs:
        wait_state(http, run, {"PAUSED"}, timeout=1800)
    all_suspended = time.perf_counter() - t0
    def children() -> list[str]:
        return subprocess.run(["ps", "--ppid", str(served.pid), "-o", "pid="], capture_output=True, text=True).stdout.split()

    at_last_suspension = len(children())
    deadline = time.monotonic() + 60
    while children() and time.monotonic() < deadline:  # the last runs' processes are still exiting
        time.sleep(0.5)
    print(f"[many] {n} runs created in {created:.1f} s; all {n} suspended after {all_suspended:.1f} s; flow-run "
          f"processes still exiting at the last suspension: {at_last_suspension}, {len(children())} after "
          f"{time.perf_counter() - t0 - all_suspended:.0f} s more (none per waiting run)")
    per = []
    t1 = time.perf_counter()
    for run in runs:
        started = time.perf_counter()
        approvals.approve(run, "bench")
        per.append(time.perf_counter() - started)
    approving = time.perf_counter() - t1
    for run in runs:
        wait_state(http, run, {"COMPLETED"}, timeout=1800)
    done = time.perf_counter() - t1
    counts = executions.count(effects / executions.LOG_NAME, runs)
    print(f"[many] approvals: {statistics.median(per) * 1000:.0f} ms median per approval call "
          f"(p90 {sorted(per)[int(len(per) * 0.9)] * 1000:.0f} ms; show + resume over HTTP), {approving:.1f} s for all; "
          f"all {n} completed {done:.1f} s after the first approval")
    print(f"[many] executions per idempotency key ({n} runs, one approved call each): {counts.summary()}")


def poll_seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not 0 < value <= 60:
        raise argparse.ArgumentTypeError(f"--poll is seconds between the served runner's polls, 0 < s <= 60: {text!r}")
    return value


def served_env(base: dict[str, str], poll: float | None) -> dict[str, str]:
    """The served runner's environment: `--poll` becomes $AGENT_RUNNER_POLL_S, which serve_deployments passes to
    Prefect's Runner as `query_seconds` (PREFECT_RUNNER_POLL_FREQUENCY is overridden there, and whole seconds)."""
    return {**base, RUNNER_POLL_ENV: repr(poll)} if poll is not None else dict(base)


def parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=200)
    parser.add_argument("--samples", type=int, default=10)
    parser.add_argument("--poll", type=poll_seconds, default=None,
                        help=f"seconds between the served runner's polls, e.g. 0.25 or 1 (sets {RUNNER_POLL_ENV}; "
                             "default: the environment's, else 0.25)")
    parser.add_argument("--skip", default="", help="comma-separated: overhead,resume,many")
    return parser


def main() -> None:
    args = parser().parse_args()
    skip = set(args.skip.split(","))
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        with LocalPrefectServer(tmp / "home") as server, server.connected():
            os.environ["AGENT_STATE_DIR"] = str(tmp / "state")
            if "overhead" not in skip:
                overhead(tmp)
            with httpx.Client(base_url=server.api_url, timeout=30, trust_env=False) as http, \
                    ApprovalsClient(server.api_url) as approvals:
                served = Served(HERE / "bench_flows.py", served_env(dict(os.environ), args.poll), http,
                                "bench-gate/bench", tmp / "serve.log")
                served.deployment_id = served.start()  # type: ignore[attr-defined]
                try:
                    if "resume" not in skip:
                        resume_latency(served, http, approvals, tmp, args.samples)
                    if "many" not in skip:
                        many_suspended(served, http, approvals, tmp, args.runs)
                finally:
                    served.stop()


if __name__ == "__main__":
    main()
