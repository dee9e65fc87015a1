"""The approval gate's flow on the deploy agent: a deterministic pre-step, then the deploy agent with tools whose
effects are observable files. Served by `python deploy_gate_flow.py` (flow.serve), so runs can suspend.

Only tests/kit/test_evals.py's live export still serves it (conftest's `served` fixture); the kit's gate tests serve
tests/kit/gate_flow.py, the same flow on the kit's toy agent. It goes when that test moves to the toy agent.

Fault injection: write a point name into <effects_dir>/fault ("approval", "mid", "after"); when the run reaches
that point it writes <effects_dir>/reached-<point>, removes the fault file and blocks until it is killed.
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path
from typing import Any

# Run as `python tests/deploy_gate_flow.py` (and loaded by the runner's flow-run processes) with tests/ first on sys.path:
# the app's agents/ is not installed, and OpenAI's `agents` (openai-agents, in the dev extra) would shadow it.
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from prefect import flow, task  # noqa: E402
from prefect.runtime import flow_run  # noqa: E402

from agents.deploybot import DEPLOY_AGENT, DeployBackendToProd, DeployFrontendToProd  # noqa: E402
from prefect_micro_agents import ToolContext, bind  # noqa: E402
from prefect_micro_agents.adapter import failed, run_agent, run_scoped_key  # noqa: E402
from prefect_micro_agents.adapter.recovery import RECOVER_TAG, begin_attempt  # noqa: E402
from prefect_micro_agents.adapter.serving import serve_deployments  # noqa: E402
from prefect_micro_agents.thread import ContextEvent, Event, Thread, TriggerEvent  # noqa: E402


def _append(effects: Path, name: str, line: str) -> None:
    with open(effects / name, "a") as fh:
        fh.write(line + "\n")


def _fault(effects: Path, point: str) -> None:
    fault = effects / "fault"
    if fault.exists() and fault.read_text().strip() == point:
        fault.unlink()
        (effects / f"reached-{point}").write_text(str(os.getpid()))
        time.sleep(600)  # the test kills us here


@task(persist_result=True, cache_key_fn=run_scoped_key("staging", "sha"))
def staging_step(sha: str, effects_dir: str) -> dict[str, Any]:
    _append(Path(effects_dir), "staging.log", sha)
    return {"sha": sha, "passed": True}


def deploy_tool(service: str, effects: Path) -> Any:
    def impl(call: DeployBackendToProd | DeployFrontendToProd, ctx: ToolContext) -> dict[str, Any]:
        log = effects / f"{service}.log"
        if ctx.reconcile and log.exists() and ctx.idempotency_key in log.read_text():
            return {"service": service, "sha": call.sha, "reconciled": True}
        _fault(effects, "mid")
        _append(effects, f"{service}.log", f"{ctx.idempotency_key} {call.sha}")
        _fault(effects, "after")
        return {"service": service, "sha": call.sha}

    return impl


@flow(name="gate-demo", persist_result=True)
def gate_demo(sha: str, effects_dir: str, model: str, approval_timeout_s: float = 3600) -> Any:
    effects = Path(effects_dir)
    _append(effects, "pids.log", str(os.getpid()))
    if (exhausted := begin_attempt()) is not None:
        return failed("recovery_exhausted", exhausted)
    staging = staging_step(sha, effects_dir)
    thread = Thread(
        id=f"gate-{flow_run.get_id()}",
        events=(
            TriggerEvent(source="test", actor="pytest", request=f"deploy SHA {sha} to production"),
            ContextEvent(name="staging", payload=staging),
        ),
    )

    def on_event(thread: Thread, event: Event) -> None:
        if event.type == "decision" and event.decision == "approved":
            _fault(effects, "approval")

    tools = [bind(DeployBackendToProd, deploy_tool("backend", effects)),
             bind(DeployFrontendToProd, deploy_tool("frontend", effects))]
    final = run_agent(DEPLOY_AGENT, thread, tools, model=model, approval_timeout_s=approval_timeout_s, on_event=on_event)
    return final.events[-1].type


if __name__ == "__main__":
    # Tagged so Prefect's recovery automations watch its runs (a test may use a tag of its own).
    serve_deployments(gate_demo.to_deployment(name="gate", tags=[os.environ.get("GATE_RECOVER_TAG", RECOVER_TAG)]))
