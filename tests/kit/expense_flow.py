"""The flow behind tests/kit/test_evals.py's export test: the kit's toy expense agent run by run_agent, with tools that
only answer. Served by `python expense_flow.py` (flow.serve) against the session's Prefect server, so its runs can
suspend for approval and the test decides through the API; the run leaves the `expense-thread-<run id>` artifact
that `python -m prefect_micro_agents.evals export` reads.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))  # tests/kit/: the kit's own agent

from prefect import flow  # noqa: E402
from prefect.runtime import flow_run  # noqa: E402

from prefect_micro_agents import ToolContext, bind, run_agent  # noqa: E402
from prefect_micro_agents.adapter.serving import serve_deployments  # noqa: E402
from toy_agent import AGENT, FileExpense, LookUpReceipt, PayExpense, expense_context  # noqa: E402


def answer(call: LookUpReceipt | PayExpense | FileExpense, ctx: ToolContext) -> dict[str, Any]:
    return {"done": call.intent, "receipt": call.receipt, "key": ctx.idempotency_key}


@flow(name="expense-evals", persist_result=True)
def expense_evals(model: str) -> str:
    thread = expense_context().model_copy(update={"id": f"expense-{flow_run.get_id()}"})
    tools = [bind(LookUpReceipt, answer), bind(PayExpense, answer), bind(FileExpense, answer)]
    return run_agent(AGENT, thread, tools, model=model).events[-1].type


if __name__ == "__main__":
    serve_deployments(expense_evals.to_deployment(name="evals"))
