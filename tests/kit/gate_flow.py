"""The flow behind the kit's approval-gate tests: a deterministic pre-step (fetch the expense report), then the kit's
toy expense agent (tests/kit/toy_agent.py) with tools whose effects are observable files: paying appends a line to
<effects_dir>/pay.log, filing one to file.log. Served by `python gate_flow.py` (flow.serve), so runs can suspend.

Fault injection: write a point name into <effects_dir>/fault ("approval", "mid", "after"); when the run reaches
that point it writes <effects_dir>/reached-<point>, removes the fault file and blocks until it is killed.

`import toy_agent` resolves without a sys.path line: run as a script, this folder is sys.path[0]; in the runner's
flow-run processes, Prefect loads this file with its folder put first on sys.path while it runs the module.
"""

from __future__ import annotations

import os
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

from prefect import flow, task
from prefect.runtime import flow_run

from prefect_micro_agents import ToolContext, bind
from prefect_micro_agents.adapter import failed, run_agent, run_scoped_key
from prefect_micro_agents.adapter.recovery import RECOVER_TAG, begin_attempt
from prefect_micro_agents.adapter.serving import serve_deployments
from prefect_micro_agents.approval_policy import load_approvers
from prefect_micro_agents.thread import ContextEvent, Event, Thread, TriggerEvent
from toy_agent import AGENT, FileExpense, LookUpReceipt, PayExpense


def _append(effects: Path, name: str, line: str) -> None:
    with open(effects / name, "a") as fh:
        fh.write(line + "\n")


def _fault(effects: Path, point: str) -> None:
    fault = effects / "fault"
    if fault.exists() and fault.read_text().strip() == point:
        fault.unlink()
        (effects / f"reached-{point}").write_text(str(os.getpid()))
        time.sleep(600)  # the test kills us here


@task(persist_result=True, cache_key_fn=run_scoped_key("report", "receipt"))
def report_step(receipt: str, effects_dir: str) -> dict[str, Any]:
    _append(Path(effects_dir), "report.log", receipt)
    return {"receipt": receipt, "employee": "ana", "amount": "84.20", "currency": "EUR", "category": "meals"}


def money_tool(book: str, effects: Path) -> Any:
    """pay_expense (book "pay") or file_expense ("file"): one line in <book>.log per execution; on a new attempt
    after a crash (ctx.reconcile), a line already written under this call's idempotency key is reported, not redone."""
    def impl(call: PayExpense | FileExpense, ctx: ToolContext) -> dict[str, Any]:
        log = effects / f"{book}.log"
        if ctx.reconcile and log.exists() and ctx.idempotency_key in log.read_text():
            return {"book": book, "receipt": call.receipt, "reconciled": True}
        _fault(effects, "mid")
        _append(effects, f"{book}.log", f"{ctx.idempotency_key} {call.receipt}")
        _fault(effects, "after")
        return {"book": book, "receipt": call.receipt}

    return impl


def look_up(call: LookUpReceipt, ctx: ToolContext) -> dict[str, Any]:
    return {"receipt": call.receipt, "on_statement": True, "amount": "84.20"}


@flow(name="expense-gate", persist_result=True)
def expense_gate(receipt: str, effects_dir: str, model: str, approval_timeout_s: float = 3600,
                 approvers_file: str = "") -> Any:
    effects = Path(effects_dir)
    _append(effects, "pids.log", str(os.getpid()))
    if (exhausted := begin_attempt()) is not None:
        return failed("recovery_exhausted", exhausted)
    report = report_step(receipt, effects_dir)
    thread = Thread(
        id=f"gate-{flow_run.get_id()}",
        events=(
            TriggerEvent(source="test", actor="pytest", request=f"pay back receipt {receipt}: team lunch, 84.20 EUR"),
            ContextEvent(name="report", payload=report),
        ),
    )

    def on_event(thread: Thread, event: Event) -> None:
        if event.type == "decision" and event.decision == "approved":
            _fault(effects, "approval")

    tools = [bind(PayExpense, money_tool("pay", effects)), bind(FileExpense, money_tool("file", effects)),
             bind(LookUpReceipt, look_up)]
    # An approvers file for this run only (the UI test's policy); a deployment names its file in AGENT_APPROVERS_FILE.
    agent = replace(AGENT, approvers=load_approvers(approvers_file)) if approvers_file else AGENT
    final = run_agent(agent, thread, tools, model=model, approval_timeout_s=approval_timeout_s, on_event=on_event)
    return final.events[-1].type


if __name__ == "__main__":
    # Tagged so Prefect's recovery automations watch its runs (a test may use a tag of its own).
    serve_deployments(expense_gate.to_deployment(name="gate", tags=[os.environ.get("GATE_RECOVER_TAG", RECOVER_TAG)]))
