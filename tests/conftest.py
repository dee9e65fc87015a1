"""Shared fixtures. The LLM is the only thing replaced, at litellm's boundary (prefect_micro_agents.testing.scripted)."""

from __future__ import annotations

import ipaddress
import os
import socket
from pathlib import Path

import pytest

from prefect_micro_agents.testing.scripted import ScriptedModel

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
# The scripted model is a custom litellm provider, registered through the kit's generic hook like any other: in this
# process and in every runner, worker and flow run the tests start (they inherit the environment; a test that builds
# a child environment from scratch copies this variable).
os.environ["AGENT_LITELLM_PROVIDERS"] = "prefect_micro_agents.testing:register"

_real_connect = socket.socket.connect


def _loopback_only(self: socket.socket, address: object) -> object:
    """Network off in tests: anything but loopback and unix sockets is refused."""
    if self.family in (socket.AF_INET, socket.AF_INET6):
        host = address[0] if isinstance(address, tuple) else address
        try:
            loopback = ipaddress.ip_address(host).is_loopback
        except ValueError:
            loopback = host == "localhost"
        if not loopback:
            raise ConnectionRefusedError(f"tests may not reach {host!r}: only 127.0.0.1")
    return _real_connect(self, address)


# The `slow` and `ui` marks must match what each test uses: a plugin checks it (definitions: tests/marker_audit.py).
# A plugin, not hooks of this conftest: conftest hooks do not see session-scoped fixtures being set up.
pytest_plugins = ["marker_audit"]


@pytest.fixture(autouse=True)
def _no_network(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(socket.socket, "connect", _loopback_only)


@pytest.fixture(autouse=True)
def _clean_agent_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("AGENT_MODEL", "AGENT_OUTPUT_MODE", "AGENT_PROMPTS_DIR", "AGENT_API_BASE", "AGENT_LOCAL_MODEL_URL"):
        monkeypatch.delenv(name, raising=False)


@pytest.fixture
def scripted(tmp_path: Path) -> ScriptedModel:
    return ScriptedModel(tmp_path / "scripted-model")


@pytest.fixture(scope="session")
def local_model_url(tmp_path_factory: pytest.TempPathFactory):  # noqa: ANN201
    """The embedded local model, started once per session in this process (GGUF cached in a session temp dir).

    Tests reach it the way the code does by default: no AGENT_MODEL, no AGENT_LOCAL_MODEL_URL, the shared server.
    """
    from prefect_micro_agents import local_model

    saved = {k: os.environ.pop(k, None) for k in (local_model.CACHE_ENV, local_model.URL_ENV)}
    os.environ[local_model.CACHE_ENV] = str(tmp_path_factory.mktemp("model-cache"))
    try:
        yield local_model.endpoint()
    finally:
        local_model.shutdown()
        for key, value in saved.items():
            os.environ.pop(key, None)
            if value is not None:
                os.environ[key] = value


@pytest.fixture(scope="session")
def prefect_server(tmp_path_factory: pytest.TempPathFactory):  # noqa: ANN201
    """One real Prefect server (SQLite) for the session, on a free loopback port; its env is the tests' env."""
    from prefect_micro_agents.adapter.local_server import LocalPrefectServer

    home = tmp_path_factory.mktemp("prefect-home")
    with LocalPrefectServer(home, ui=False) as server, server.connected():
        saved = dict(os.environ)
        os.environ["AGENT_STATE_DIR"] = str(home / "agent-state")
        # What flows.serve creates for a real deployment: Prefect's automations that crash a run whose worker
        # stopped heartbeating and start it again (runs of deployments tagged microagents-recover).
        from prefect_micro_agents.adapter.recovery import ensure_recovery_automations

        ensure_recovery_automations()
        try:
            yield server
        finally:
            os.environ.clear()
            os.environ.update(saved)


@pytest.fixture(scope="session")
def http(prefect_server):  # noqa: ANN001, ANN201
    """An API client for the session server, shared by every test and module fixture (retries: prefect_harness)."""
    import httpx

    with httpx.Client(base_url=prefect_server.api_url, auth=prefect_server.httpx_auth, timeout=30, trust_env=False) as c:
        yield c


@pytest.fixture
def gate(prefect_server, http, tmp_path: Path):  # noqa: ANN001, ANN201
    """tests/kit/gate_flow.py (the kit's toy expense agent behind the approval gate) served by flow.serve in its own
    process group, stopped after the test."""
    from prefect_harness import Served

    env = {k: v for k, v in os.environ.items() if k != "AGENT_MODEL"}
    s = Served(Path(__file__).parent / "kit" / "gate_flow.py", env, http, "expense-gate/gate", tmp_path / "serve.log")
    s.deployment_id = s.start()  # type: ignore[attr-defined]
    yield s
    s.stop()


@pytest.fixture
def approvals(prefect_server):  # noqa: ANN001, ANN201
    from prefect_micro_agents.adapter.approvals import ApprovalsClient

    with ApprovalsClient(prefect_server.api_url, prefect_server.auth_string) as client:
        yield client


@pytest.fixture
def effects(tmp_path: Path) -> Path:
    path = tmp_path / "effects"
    path.mkdir()
    return path
