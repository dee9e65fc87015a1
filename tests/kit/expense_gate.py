"""Scripted replies and the run starter shared by the kit tests that drive tests/kit/gate_flow.py (the toy expense
agent behind the approval gate; the `gate` fixture in tests/conftest.py serves it)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx

from prefect_micro_agents.testing import ScriptedModel
from prefect_harness import Served, create_run
from toy_agent import NEW, call

__all__ = ["DEPLOYMENT", "DONE", "FILE", "FLOW", "PAY", "RECEIPT", "call", "start"]

FLOW = Path(__file__).resolve().parent / "gate_flow.py"
DEPLOYMENT = "expense-gate/gate"  # flow name / deployment name, as gate_flow.py serves it
RECEIPT = NEW

PAY, FILE = call("pay_expense", receipt=RECEIPT), call("file_expense", receipt=RECEIPT)
DONE = call("done_for_now", message="receipt paid back and filed")


def start(served: Served, http: httpx.Client, scripted: ScriptedModel, effects: Path, **params: Any) -> str:
    parameters = {"receipt": RECEIPT, "effects_dir": str(effects), "model": scripted.model, **params}
    return create_run(http, served.deployment_id, parameters)  # type: ignore[attr-defined]
