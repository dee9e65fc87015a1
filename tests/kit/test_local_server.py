"""LocalPrefectServer against a real `prefect server start` subprocess (and fake servers for the failure paths)."""

from __future__ import annotations

import os
import socket
import stat
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from prefect_micro_agents.adapter.local_server import LocalPrefectServer, ServerStartError, free_port

AUTH = "admin:s3cr:et"  # a colon in the password must survive the user/password split


def _gone(pid: int) -> bool:
    for probe in (os.kill, os.killpg):
        try:
            probe(pid, 0)
        except ProcessLookupError:
            continue
        return False
    return True


def _fake_python(tmp_path: Path, body: str) -> str:
    """An executable that stands in for `python -m prefect server start`."""
    script = tmp_path / "fake-python"
    script.write_text(f"#!/bin/sh\n{body}\n")
    script.chmod(script.stat().st_mode | stat.S_IXUSR)
    return str(script)


def test_free_port_is_bindable() -> None:
    port = free_port()
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", port))


def test_connected_points_this_processes_prefect_client_at_the_server_and_back(tmp_path: Path) -> None:
    """Prefect reads its settings once, at import: an env var set later is not seen and `get_client()` quietly
    starts a temporary server of its own (on the same database; the real server's trigger service then missed an
    automation it created). `connected()` rebuilds Prefect's settings too, and puts both back."""
    from prefect.settings import get_current_settings

    server = LocalPrefectServer(tmp_path / "home", port=4321, auth_string=AUTH, progress=None)
    before, env_before = get_current_settings().api.url, os.environ.get("PREFECT_API_URL")
    assert before != server.api_url
    with server.connected():
        assert os.environ["PREFECT_API_URL"] == server.api_url
        settings = get_current_settings()
        assert settings.api.url == server.api_url and settings.api.auth_string.get_secret_value() == AUTH
        assert settings.home == (tmp_path / "home").resolve()
    assert get_current_settings().api.url == before and os.environ.get("PREFECT_API_URL") == env_before


@pytest.mark.slow
def test_the_session_server_is_the_one_this_process_talks_to(prefect_server: LocalPrefectServer) -> None:
    """What the tests create through Prefect's own client (automations, deployments) lands on the session server,
    not on a temporary one Prefect would start in this process."""
    from prefect.client.orchestration import get_client

    with get_client(sync_client=True) as client:
        assert str(client.api_url).rstrip("/") == prefect_server.api_url
        assert client.read_automations_by_name("microagents-recover: retry crashed runs")


def test_client_env_names_and_paths(tmp_path: Path) -> None:
    server = LocalPrefectServer(tmp_path / "home", port=4321, auth_string=AUTH, progress=None)
    env = server.client_env()
    home = str((tmp_path / "home").resolve())
    assert env["PREFECT_API_URL"] == "http://127.0.0.1:4321/api"
    assert env["PREFECT_HOME"] == home
    assert env["PREFECT_API_AUTH_STRING"] == AUTH
    assert env["PREFECT_RESULTS_PERSIST_BY_DEFAULT"] == "true"
    assert env["PREFECT_RESULTS_LOCAL_STORAGE_PATH"].startswith(home)
    assert env["PREFECT_RUNNER_POLL_FREQUENCY"] == "1"
    assert env["PREFECT_SERVER_ANALYTICS_ENABLED"] == "false"
    assert "PREFECT_API_AUTH_STRING" not in LocalPrefectServer(tmp_path / "h2", progress=None).client_env()
    assert server.httpx_auth == ("admin", "s3cr:et")
    with pytest.raises(ValueError):
        LocalPrefectServer(tmp_path / "h3", auth_string="no-colon")


def test_server_that_dies_raises_with_log_tail(tmp_path: Path) -> None:
    python = _fake_python(tmp_path, "echo 'boom: database is on fire'; exit 3")
    server = LocalPrefectServer(tmp_path / "home", python=python, progress=None)
    with pytest.raises(ServerStartError, match=r"(?s)exited with code 3.*database is on fire"):
        server.start()
    assert not server.running
    assert _gone(server.pid)


def test_server_that_never_answers_times_out_and_is_killed(tmp_path: Path) -> None:
    python = _fake_python(tmp_path, "echo 'still migrating'; exec sleep 600")
    lines: list[str] = []
    server = LocalPrefectServer(
        tmp_path / "home", python=python, startup_timeout=1.5, progress=lines.append, progress_interval=0.5
    )
    with pytest.raises(ServerStartError, match=r"(?s)within 2 s.*still migrating"):
        server.start()
    assert any("waiting for" in line for line in lines)
    assert _gone(server.pid)


@pytest.mark.slow
@pytest.mark.timeout(60)
def test_explicit_busy_port_is_reported(tmp_path: Path) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        port = sock.getsockname()[1]
        server = LocalPrefectServer(tmp_path / "home", port=port, progress=None)
        with pytest.raises(ServerStartError, match="already in use"):
            server.start()
    assert _gone(server.pid)


@pytest.mark.slow
@pytest.mark.timeout(240)
def test_server_starts_answers_health_and_stops_cleanly(tmp_path: Path) -> None:
    with LocalPrefectServer(tmp_path / "home", progress=None) as server:
        pid = server.pid
        assert pid is not None and server.running
        assert server.api_url == f"http://127.0.0.1:{server.port}/api"
        response = httpx.get(f"{server.api_url}/health", timeout=10, trust_env=False)
        assert response.status_code == 200
        assert response.json() is True
        assert (tmp_path / "home" / "prefect.db").exists()
        assert (tmp_path / "home" / "server.log").exists()
    assert not server.running
    deadline = time.monotonic() + 5
    while not _gone(pid) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert _gone(pid), f"server process group {pid} survived stop()"
    server.stop()  # idempotent
    with pytest.raises(httpx.TransportError):
        httpx.get(f"{server.api_url}/health", timeout=2, trust_env=False)


@pytest.fixture(scope="module")
def auth_server(tmp_path_factory: pytest.TempPathFactory):
    with LocalPrefectServer(tmp_path_factory.mktemp("auth") / "home", auth_string=AUTH, progress=None) as server:
        yield server


@pytest.mark.slow
@pytest.mark.timeout(240)
def test_auth_refuses_unauthenticated_requests(auth_server: LocalPrefectServer) -> None:
    url = f"{auth_server.api_url}/flow_runs/filter"
    with httpx.Client(timeout=10, trust_env=False) as http:
        assert http.post(url, json={}).status_code == 401
        assert http.post(url, json={}, auth=("admin", "wrong")).status_code == 401
        refused = http.post(url, json={}, headers={"Authorization": "Bearer x"})
        assert refused.status_code == 401
        assert refused.json() == {"exception_message": "Unauthorized"}


@pytest.mark.slow
@pytest.mark.timeout(240)
def test_auth_accepts_the_configured_credentials(auth_server: LocalPrefectServer) -> None:
    with httpx.Client(timeout=10, trust_env=False, auth=auth_server.httpx_auth) as http:
        response = http.post(f"{auth_server.api_url}/flow_runs/filter", json={})
        assert response.status_code == 200
        assert response.json() == []
    # Health probes stay open, which is what start() polls.
    assert httpx.get(f"{auth_server.api_url}/health", timeout=10, trust_env=False).status_code == 200


@pytest.mark.slow
@pytest.mark.timeout(240)
def test_prefect_client_uses_client_env(auth_server: LocalPrefectServer, tmp_path: Path) -> None:
    code = (
        "import asyncio\n"
        "from prefect.client.orchestration import get_client\n"
        "async def main():\n"
        "    async with get_client() as client:\n"
        "        print(len(await client.read_flow_runs()))\n"
        "asyncio.run(main())\n"
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")}
    env.update(auth_server.client_env())
    done = subprocess.run(
        [sys.executable, "-c", code], env=env, cwd=tmp_path, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip() == "0"
