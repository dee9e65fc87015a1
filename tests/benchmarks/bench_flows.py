"""Flows used by bench_gate.py. Served by `python bench_flows.py` (flow.serve) so their runs can suspend."""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any, Literal

import _checkout  # noqa: F401  (served as a file: the checkout first on sys.path, the app is not installed)
from prefect import flow
from prefect.runtime import flow_run

from prefect_micro_agents import ToolContext, bind, run_agent
from prefect_micro_agents.adapter.serving import serve_deployments
from agents import PROMPTS_DIR
from agents.deploybot import DEPLOY_AGENT, DeployBackendToProd, DeployFrontendToProd, DoneForNow
from prefect_micro_agents.thread import Thread, TriggerEvent
from prefect_micro_agents.tools import Agent, Tool

import executions  # tests/benchmarks/executions.py, beside this file (the serve process runs here)


class Noop(Tool):
    """Do nothing (an auto tool, to measure the loop itself)."""

    policy = "auto"
    intent: Literal["noop"]


NOOP_AGENT = Agent(name="noop", tools=(Noop, DoneForNow), prompt="deploy_agent.j2", prompts_dir=str(PROMPTS_DIR),
                   max_steps=1000)


def _noop(call: Noop, ctx: ToolContext) -> dict[str, Any]:
    return {}


@flow(name="bench-overhead", persist_result=True)
def overhead_flow(model: str, thread_id: str) -> float:
    """Runs the agent loop in a flow; returns the seconds spent inside run_agent."""
    thread = Thread(id=thread_id, events=(TriggerEvent(source="bench", actor="bench", request="noop until done"),))
    started = time.perf_counter()
    run_agent(NOOP_AGENT, thread, [bind(Noop, _noop)], model=model)
    return time.perf_counter() - started


def _stamp(effects: str, name: str) -> None:
    with open(Path(effects) / f"{flow_run.get_id()}.{name}", "a") as fh:
        fh.write(f"{time.time()} {os.getpid()}\n")


@flow(name="bench-gate", persist_result=True)
def gate_flow(model: str, effects: str) -> str:
    """One approval then done; stamps when the flow body starts and when the approved tool starts, and logs every
    execution of the tool with its idempotency key."""
    _stamp(effects, "body")

    def deploy(call: Tool, ctx: ToolContext) -> dict[str, Any]:
        _stamp(effects, "tool")
        executions.record(Path(effects) / executions.LOG_NAME, str(flow_run.get_id()), ctx.idempotency_key)
        return {"ok": True}

    thread = Thread(id=f"bench-{flow_run.get_id()}",
                    events=(TriggerEvent(source="bench", actor="bench", request="deploy the backend"),))
    tools = [bind(DeployBackendToProd, deploy), bind(DeployFrontendToProd, deploy)]
    return run_agent(DEPLOY_AGENT, thread, tools, model=model).events[-1].type


if __name__ == "__main__":
    serve_deployments(gate_flow.to_deployment(name="bench"), limit=8)
