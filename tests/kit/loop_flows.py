"""The thread and tools behind tests/kit/test_loop.py, and the flow that hands them to run_agent. Run as
`python loop_flows.py <model> <thread.json> <calls.jsonl>` in a fresh process against the session's Prefect server;
prints the final thread as JSON on its last line.

The thread: an approved expense payment whose receipt was recorded and whose result was not (the attempt that
recorded it died in between). The tools append each call they receive, with its context, to <calls.jsonl>.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))  # tests/kit/: the kit's own agent

from prefect_micro_agents import Binding, ToolContext, bind  # noqa: E402
from prefect_micro_agents.execution import idempotency_key, receipt  # noqa: E402
from prefect_micro_agents.reducer import Execute, next_action  # noqa: E402
from prefect_micro_agents.thread import Thread  # noqa: E402
from toy_agent import AGENT, NEW, FileExpense, LookUpReceipt, PayExpense, decided, expense_context, proposal  # noqa: E402


def interrupted() -> tuple[Thread, str]:
    """The thread, and the idempotency key its receipt names (what the attempt that died had used)."""
    p = proposal("pay_expense", 1, receipt=NEW)
    thread = decided(expense_context().append(p), p, "approved")
    action = next_action(AGENT, thread)
    assert isinstance(action, Execute)
    key = idempotency_key(thread.id, action)
    proof = receipt(action, key)
    assert proof is not None
    return thread.append(proof), key


def recording_tools(calls: Path) -> list[Binding[Any]]:
    def record(call: PayExpense | FileExpense | LookUpReceipt, ctx: ToolContext) -> dict[str, Any]:
        with open(calls, "a") as fh:
            fh.write(json.dumps({"intent": call.intent, "receipt": call.receipt, "key": ctx.idempotency_key,
                                 "reconcile": ctx.reconcile}) + "\n")
        return {"book": call.intent, "receipt": call.receipt, "ok": True}

    return [bind(PayExpense, record), bind(FileExpense, record), bind(LookUpReceipt, record)]


def main() -> None:
    from prefect import flow

    from prefect_micro_agents import run_agent

    model, thread_file, calls = sys.argv[1], Path(sys.argv[2]), Path(sys.argv[3])

    @flow(name="loop-resume", persist_result=True)
    def resume(model: str) -> str:
        thread = Thread.from_json(thread_file.read_text())
        return run_agent(AGENT, thread, recording_tools(calls), model=model).to_json()

    print(resume(model), flush=True)


if __name__ == "__main__":
    main()
