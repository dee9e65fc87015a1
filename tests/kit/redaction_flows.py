"""Flows behind tests/kit/test_redaction_flows.py, run as `python redaction_flows.py <model>` in a fresh process (so no
log filter is installed unless the code under test installs it). Prints one JSON line: the flow run ids.

The secrets come from the environment the test gives this process: $LEDGER_TOKEN (in pre-fetched context),
$TOOL_TOKEN (in a tool's output), $ERROR_TOKEN (in a failing task's exception). (The deploy bot's report artifact:
tests/app/report_flows.py.)
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))  # tests/kit/: the kit's own agent

from prefect import flow, task  # noqa: E402
from prefect.runtime import flow_run  # noqa: E402

from prefect_micro_agents import ToolContext, bind, run_agent  # noqa: E402
from prefect_micro_agents.adapter.tasks import execute_call  # noqa: E402
from prefect_micro_agents.thread import ContextEvent, Thread, TriggerEvent  # noqa: E402
from prefect_micro_agents.tools import Tool  # noqa: E402
from toy_agent import AGENT, FileExpense, LookUpReceipt, PayExpense  # noqa: E402

SHA = "9f8e7d6c5b4a39281706f5e4d3c2b1a09f8e7d6c"


@task
def fails() -> None:
    raise RuntimeError(f"registry refused {os.environ['ERROR_TOKEN']}")


@flow(name="redaction-agent", persist_result=True)
def agent_flow(model: str) -> str:
    """run_agent handed a thread nobody redacted; then a task fails with a secret in its exception."""
    thread = Thread(id=f"redaction-{flow_run.get_id()}", events=(
        TriggerEvent(source="test", actor="pytest", request=f"pay back receipt {SHA}"),
        ContextEvent(name="notes", payload=[
            {"receipt": SHA, "note": f"ci: rotate the ledger token to {os.environ['LEDGER_TOKEN']}"}]),
    ))
    unused = [bind(PayExpense, leaky), bind(FileExpense, leaky), bind(LookUpReceipt, leaky)]
    final = run_agent(AGENT, thread, unused, model=model)
    fails(return_state=True)  # the engine logs the failure with its traceback; the flow goes on
    return final.events[-1].type


def leaky(call: Tool, ctx: ToolContext) -> dict[str, Any]:
    return {"ok": False, "stdout": f"login with {os.environ['TOOL_TOKEN']} refused"}


@flow(name="redaction-execute", persist_result=True)
def execute_flow() -> dict[str, Any]:
    """An approved call whose tool echoes a secret: the ledger and the task's stored result must not hold it."""
    call = PayExpense(intent="pay_expense", receipt=SHA)
    ctx = ToolContext(f"redaction-{flow_run.get_id()}", "thread", "proposal-1")
    return execute_call(bind(PayExpense, leaky), call, ctx).model_dump(mode="json")


def main() -> None:
    runs = {}
    for name, run in (("agent", lambda: agent_flow(sys.argv[1], return_state=True)),
                      ("execute", lambda: execute_flow(return_state=True))):
        state = run()
        runs[name] = {"id": str(state.state_details.flow_run_id), "type": state.type.value,
                      "result": state.result(raise_on_failure=False) if state.is_completed() else None}
    print(json.dumps(runs), flush=True)


if __name__ == "__main__":
    main()
