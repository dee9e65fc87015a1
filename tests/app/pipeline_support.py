"""What the deploy-pipeline tests share: the scripted model's calls, starting a run, local environments that are
checked clean after each test, and production as an earlier release left it."""

from __future__ import annotations

import os
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx

from flows.sample_app import SampleAppManifest
from flows.targets import LocalTargets
from flows.targets.processes import is_alive
from flows.targets.settings import TargetSettings
from prefect_harness import Served, create_run
from prefect_micro_agents.testing import ScriptedModel

__all__ = ["DEPLOYMENT", "call", "deploy_prod", "local_settings", "serve_pipeline", "start"]

DEPLOYMENT = "deploy-pipeline/local"


def call(intent: str, **args: str) -> dict[str, Any]:
    return {"call": {"intent": intent, **args}}


def serve_pipeline(http: httpx.Client, folder: Path, **env: str) -> Iterator[Served]:
    """For a module fixture: the pipeline served (`python -m flows.serve`) with no cron (a suite running across 02:00
    UTC would get a nightly run) and no trigger (runs are created directly); `env`: variables to add."""
    base = {k: v for k, v in os.environ.items() if k != "AGENT_MODEL"}
    s = Served("flows.serve", {**base, **env}, http, DEPLOYMENT, folder / "serve.log",
               args=("--no-schedule", "--no-trigger"))
    s.deployment_id = s.start()  # type: ignore[attr-defined]
    yield s
    s.stop()


def local_settings(tmp_path: Path, sample: SampleAppManifest) -> Iterator[TargetSettings]:
    """For a fixture: local staging/production of the sample app under tmp_path; after the test, every process they
    started is stopped and no port is left listening."""
    settings = TargetSettings(root=str(tmp_path / "envs"), repo=sample.repo)
    yield settings
    local = settings.build()
    assert isinstance(local, LocalTargets)
    history = local.store.read().history
    local.stop_all()
    pids = {h.result.pid for h in history if h.result and h.result.pid}
    assert not [pid for pid in pids if is_alive(pid)], "service processes left running"
    for ports in local.store.read().ports.values():
        for port in ports.values():
            with socket.socket() as sock:
                assert sock.connect_ex(("127.0.0.1", port)) != 0, f"something still listens on port {port}"


def start(served: Served, http: httpx.Client, sha: str, model: ScriptedModel | None,
          targets: TargetSettings | dict[str, Any], **params: Any) -> str:
    targets = targets.model_dump() if isinstance(targets, TargetSettings) else targets
    parameters = {"sha": sha, "targets": targets, "source": "git.push", "actor": "ci", **params}
    if model is not None:
        parameters["model"] = model.model
    return create_run(http, served.deployment_id, parameters)  # type: ignore[attr-defined]


def deploy_prod(local: LocalTargets, sha: str) -> None:
    """What production runs before the pipeline starts (deployed by an earlier release)."""
    for service in ("backend", "frontend"):
        assert local.deploy(service, "production", sha).ok
