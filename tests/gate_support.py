"""A scripted reply builder for any agent, and the run starter for tests/deploy_gate_flow.py (the deploy agent behind the
gate, served by conftest's `served` fixture for tests/kit/test_evals.py's live export; the kit's gate tests use
tests/kit/expense_gate.py)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx

from prefect_micro_agents.testing import ScriptedModel
from prefect_harness import Served, create_run

__all__ = ["SHA", "call", "start"]

SHA = "9f8e7d6c5b4a39281706f5e4d3c2b1a09f8e7d6c"


def call(intent: str, **args: str) -> dict[str, Any]:
    return {"call": {"intent": intent, **args}}


def start(served: Served, http: httpx.Client, scripted: ScriptedModel, effects: Path, **params: Any) -> str:
    parameters = {"sha": SHA, "effects_dir": str(effects), "model": scripted.model, **params}
    return create_run(http, served.deployment_id, parameters)  # type: ignore[attr-defined]
