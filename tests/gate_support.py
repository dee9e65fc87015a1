"""Scripted replies and run starters shared by the tests that drive tests/gate_flow.py."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx

from prefect_micro_agents.testing import ScriptedModel
from prefect_harness import Served, create_run

__all__ = ["BACKEND", "DONE", "FRONTEND", "SHA", "call", "start"]

SHA = "9f8e7d6c5b4a39281706f5e4d3c2b1a09f8e7d6c"


def call(intent: str, **args: str) -> dict[str, Any]:
    return {"call": {"intent": intent, **args}}


FRONTEND, BACKEND = call("deploy_frontend_to_prod", sha=SHA), call("deploy_backend_to_prod", sha=SHA)
DONE = call("done_for_now", message="both services on the new SHA")


def start(served: Served, http: httpx.Client, scripted: ScriptedModel, effects: Path, **params: Any) -> str:
    parameters = {"sha": SHA, "effects_dir": str(effects), "model": scripted.model, **params}
    return create_run(http, served.deployment_id, parameters)  # type: ignore[attr-defined]
