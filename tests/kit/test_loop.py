"""One agent loop (prefect_micro_agents.loop) behind both runners: the same thread makes the same calls through the
plain-Python run_until_blocked and through run_agent inside a flow run on the session's Prefect server.

The case where the two used to disagree: a thread whose approved call has its receipt and no result (the attempt
that recorded the receipt died before the result). The plain runner reconciled under the receipt's key; run_agent
ran the call blind (reconcile False) under a new key of its own. Now both reconcile under the receipt's key.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from loop_flows import interrupted, recording_tools
from prefect_micro_agents.adapter.local_server import LocalPrefectServer
from prefect_micro_agents.reducer import Halted, next_action
from prefect_micro_agents.runner import run_until_blocked
from prefect_micro_agents.testing.scripted import ScriptedModel
from prefect_micro_agents.thread import ReceiptEvent, ResultEvent, Thread
from toy_agent import AGENT, NEW

HERE = Path(__file__).resolve().parent
DONE = {"call": {"intent": "done_for_now", "message": "paid " + NEW}}


def calls_of(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def assert_reconciled_under_the_receipts_key(final: Thread, calls: list[dict[str, Any]], key: str) -> None:
    assert calls == [{"intent": "pay_expense", "receipt": NEW, "key": key, "reconcile": True}]
    assert [r.idempotency_key for r in final.of_type(ReceiptEvent)] == [key]  # no second receipt
    assert [r.idempotency_key for r in final.of_type(ResultEvent)] == [key]
    assert next_action(AGENT, final) == Halted("done")


def test_the_plain_runner_reconciles_a_call_whose_receipt_has_no_result(scripted: ScriptedModel,
                                                                        tmp_path: Path) -> None:
    thread, key = interrupted()
    scripted.enqueue(DONE)
    final = run_until_blocked(AGENT, thread, recording_tools(tmp_path / "calls.jsonl"), scripted.model)
    assert_reconciled_under_the_receipts_key(final, calls_of(tmp_path / "calls.jsonl"), key)


@pytest.mark.slow
def test_run_agent_reconciles_it_too(prefect_server: LocalPrefectServer, scripted: ScriptedModel,
                                     tmp_path: Path) -> None:
    thread, key = interrupted()
    (tmp_path / "thread.json").write_text(thread.to_json())
    scripted.enqueue(DONE)
    proc = subprocess.run([sys.executable, str(HERE / "loop_flows.py"), scripted.model, str(tmp_path / "thread.json"),
                           str(tmp_path / "calls.jsonl")], env=dict(os.environ), cwd=HERE, capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    final = Thread.from_json(proc.stdout.strip().splitlines()[-1])
    assert_reconciled_under_the_receipts_key(final, calls_of(tmp_path / "calls.jsonl"), key)
