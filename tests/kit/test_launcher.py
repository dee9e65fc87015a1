"""The warm launcher (prefect_micro_agents.launcher) as real processes against the session's Prefect server: its
server forks flow-run processes for its client, which the tests run the way Prefect's process worker runs its
`command` (an environment with PREFECT__FLOW_RUN_ID, a working directory, stdin/stdout/stderr, signals).

The scale-out stack runs every flow run through it (tests/app/test_scale_stack.py, test_scale_recovery.py); these
tests pin down what the worker relies on: the child is the flow-run process the client stands for (its working
directory, environment, settings and output), its exit code and signals pass through, and no flow-run process
outlives the client or the server that forked it.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

import launcher_flows
from prefect_harness import wait_state
from prefect_micro_agents.launcher import SOCKET_ENV
from prefect_micro_agents.launcher.client import LOST_SERVER_EXIT
from prefect_micro_agents.launcher.protocol import receive, send

pytestmark = pytest.mark.slow

KIT = Path(__file__).resolve().parent


class Server:
    """`python -m prefect_micro_agents.launcher.server` in a session of its own, ready once its socket answers."""

    def __init__(self, path: Path, log: Path, *args: str, cwd: Path | None = None,
                 env: dict[str, str] | None = None) -> None:
        self.path = path
        self.log = log
        self.cwd = cwd
        with open(log, "ab") as out:
            self.proc = subprocess.Popen([sys.executable, "-m", "prefect_micro_agents.launcher.server", "--socket",
                                          str(path), *args], stdin=subprocess.DEVNULL, stdout=out,
                                         stderr=subprocess.STDOUT, cwd=cwd, env=env,
                                         start_new_session=True)

    def wait_ready(self, timeout: float = 90) -> Server:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(f"the launcher exited with {self.proc.returncode}: {self.log.read_text()}")
            with socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET) as probe:
                try:
                    probe.connect(str(self.path))
                    return self
                except OSError:
                    time.sleep(0.1)
        raise AssertionError(f"the launcher did not listen within {timeout} s: {self.log.read_text()}")

    def stop(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            self.proc.wait(timeout=60)


@pytest.fixture(scope="module")
def launcher(prefect_server, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:  # noqa: ANN001
    where = tmp_path_factory.mktemp("launcher")
    (where / "server-cwd").mkdir()
    server = Server(where / "l.sock", where / "launcher.log", cwd=where / "server-cwd").wait_ready()
    yield server
    server.stop()


def new_run(flow: Any, out: Path) -> str:
    from prefect.client.orchestration import get_client

    with get_client(sync_client=True) as client:
        return str(client.create_flow_run(flow, parameters={"out": str(out)}).id)


def start_client(run_id: str, entrypoint: str, socket_path: Path, **env: str) -> subprocess.Popen[str]:
    """The launcher's client as the process worker starts its `command`: in the flow's project folder (tests/), the
    run and its entrypoint in the environment."""
    return subprocess.Popen([sys.executable, "-m", "prefect_micro_agents.launcher"], cwd=KIT.parent, text=True,
                            env={**os.environ, SOCKET_ENV: str(socket_path), "PREFECT__FLOW_RUN_ID": run_id,
                                 "PREFECT__FLOW_ENTRYPOINT": f"kit/launcher_flows.py:{entrypoint}", **env},
                            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            start_new_session=True)


def gone(pid: int, timeout: float = 30) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return True
        time.sleep(0.1)
    return False


def engine_for_a_bad_run_id(socket_path: Path, **env: str) -> subprocess.CompletedProcess[str]:
    """The client with a flow run id the engine rejects (exit code 1 and a logged error): no flow run needed."""
    return subprocess.run([sys.executable, "-m", "prefect_micro_agents.launcher", "not-a-flow-run-id"],
                          env={**os.environ, SOCKET_ENV: str(socket_path), **env}, capture_output=True, text=True,
                          timeout=120)


def sleeping_child(run_out: Path, client: subprocess.Popen[Any], timeout: float = 90) -> int:
    deadline = time.monotonic() + timeout
    while not (run_out.exists() and run_out.read_text()):
        if client.poll() is not None or time.monotonic() > deadline:
            raise AssertionError(f"the sleeper did not start (client: {client.poll()}, {client.communicate()})")
        time.sleep(0.1)
    return int(run_out.read_text())


def test_the_run_is_forked_by_the_server_and_sees_the_clients_folder_environment_settings_and_stdout(
        launcher: Server, http: httpx.Client, tmp_path: Path) -> None:
    out = tmp_path / "probe.json"
    run = new_run(launcher_flows.probe, out)
    # Settings the server's environment does not have: the child must rebuild Prefect's settings from the client's.
    client = start_client(run, "probe", launcher.path, LAUNCHER_MARKER="from-the-client", PREFECT_CLIENT_MAX_RETRIES="7")
    stdout, stderr = client.communicate(timeout=120)
    assert client.returncode == 0, stderr
    seen = json.loads(out.read_text())
    assert seen["ppid"] == launcher.proc.pid  # forked by the server, not the client's fallback
    assert seen["pid"] != client.pid
    assert seen["cwd"] == str(KIT.parent)
    assert str(KIT.parent) in seen["sys_path"]  # as `python -m` puts its folder first: the project's modules import
    assert str(launcher.cwd) not in seen["sys_path"]  # and nothing from wherever the server was started
    assert seen["marker"] == "from-the-client"
    assert seen["max_retries"] == 7
    assert "the probe speaks on stdout" in stdout  # the child wrote to the client's stdout, not the server's log
    assert "the probe speaks" not in launcher.log.read_text()
    assert wait_state(http, run, {"COMPLETED"})["type"] == "COMPLETED"


def test_the_engines_exit_code_and_logging_level_are_the_clients(launcher: Server) -> None:
    loud = engine_for_a_bad_run_id(launcher.path)
    assert loud.returncode == 1
    assert "Invalid flow run id" in loud.stderr and "not-a-flow-run-id" in loud.stderr
    assert "running python -m prefect.engine directly" not in loud.stderr  # the server ran it
    quiet = engine_for_a_bad_run_id(launcher.path, PREFECT_LOGGING_LEVEL="CRITICAL")  # logging is set up again from the client's settings
    assert quiet.returncode == 1
    assert "Invalid flow run id" not in quiet.stderr


def test_sigterm_to_the_client_reaches_the_flow_run_process(launcher: Server, tmp_path: Path) -> None:
    out = tmp_path / "sleeper.pid"
    client = start_client(new_run(launcher_flows.sleeper, out), "sleeper", launcher.path)
    child = sleeping_child(out, client)
    client.send_signal(signal.SIGTERM)  # what the process worker sends its flow-run process on cancel
    client.communicate(timeout=60)
    assert gone(child), "the flow-run process kept running after its client got SIGTERM"
    # The child got the SIGTERM itself (Prefect's engine handles it), not a SIGKILL because its client died of it.
    assert f"client of flow-run process {child} went away" not in launcher.log.read_text()
    assert client.returncode == -signal.SIGTERM  # the child's end, re-raised by the client


def test_a_killed_client_takes_its_flow_run_process_with_it(launcher: Server, tmp_path: Path) -> None:
    out = tmp_path / "sleeper.pid"
    client = start_client(new_run(launcher_flows.sleeper, out), "sleeper", launcher.path)
    child = sleeping_child(out, client)
    client.kill()  # the worker's last resort (or the worker's machine going): nobody would watch the run
    client.communicate(timeout=30)
    assert gone(child), "the flow-run process outlived its client"
    assert "went away; killing it" in launcher.log.read_text()


def test_a_killed_server_takes_its_flow_run_processes_with_it_and_the_client_says_so(
        prefect_server, tmp_path: Path) -> None:  # noqa: ANN001
    server = Server(tmp_path / "l.sock", tmp_path / "launcher.log").wait_ready()
    try:
        out = tmp_path / "sleeper.pid"
        client = start_client(new_run(launcher_flows.sleeper, out), "sleeper", server.path)
        child = sleeping_child(out, client)
        os.killpg(server.proc.pid, signal.SIGKILL)
        _, stderr = client.communicate(timeout=30)
        assert client.returncode == LOST_SERVER_EXIT  # not 0: the worker reports the run crashed
        assert "the launcher went away" in stderr
        assert gone(child), "the flow-run process outlived the launcher that forked it"
    finally:
        server.stop()


def test_without_a_server_the_client_runs_the_engine_itself(prefect_server, http: httpx.Client,  # noqa: ANN001
                                                           tmp_path: Path) -> None:
    out = tmp_path / "probe.json"
    run = new_run(launcher_flows.probe, out)
    client = start_client(run, "probe", tmp_path / "nobody-listens.sock")
    stdout, stderr = client.communicate(timeout=120)
    assert client.returncode == 0, stderr
    assert "no launcher at" in stderr and "running python -m prefect.engine directly" in stderr
    assert json.loads(out.read_text())["pid"] == client.pid  # the client became the engine (exec)
    assert wait_state(http, run, {"COMPLETED"})["type"] == "COMPLETED"


def test_a_malformed_request_is_refused_and_the_server_keeps_serving(launcher: Server, tmp_path: Path) -> None:
    def ask(payload: bytes | dict[str, Any], fds: list[int] | None = None) -> dict[str, Any] | None:
        with socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET) as conn:
            conn.connect(str(launcher.path))
            if isinstance(payload, bytes):
                conn.send(payload)
            else:
                send(conn, payload, fds)
            conn.settimeout(30)
            return receive(conn)[0]

    assert ask(b"this is not json") is None  # dropped: there is no one to answer
    refused = ask({"argv": [], "env": {}, "cwd": "/"})  # no stdin/stdout/stderr attached
    assert refused is not None and "expected stdin, stdout and stderr, got 0" in refused["error"]
    refused = ask({"argv": "x", "cwd": "/"}, [0, 1, 2])
    assert refused is not None and "malformed request" in refused["error"]
    test_the_engines_exit_code_and_logging_level_are_the_clients(launcher)  # still forking


def test_the_server_refuses_to_start_when_its_imports_leave_a_thread_running(tmp_path: Path) -> None:
    (tmp_path / "threaded_module.py").write_text(
        "import threading, time\nthreading.Thread(target=time.sleep, args=(60,), name='busy', daemon=True).start()\n")
    done = subprocess.run([sys.executable, "-m", "prefect_micro_agents.launcher.server", "--socket",
                           str(tmp_path / "l.sock"), "--no-default-preload", "--preload", "threaded_module"],
                          env={**os.environ, "PYTHONPATH": str(tmp_path)}, capture_output=True, text=True, timeout=60)
    assert done.returncode == 2
    assert "left threads running (busy)" in done.stderr
    assert not (tmp_path / "l.sock").exists()


def test_a_socket_path_too_long_for_unix_is_a_clear_error(tmp_path: Path) -> None:
    path = tmp_path / ("x" * 120) / "l.sock"
    done = subprocess.run([sys.executable, "-m", "prefect_micro_agents.launcher.server", "--socket", str(path),
                           "--no-default-preload"], capture_output=True, text=True, timeout=60)
    assert done.returncode != 0
    assert "a Unix socket's path may have at most 107" in done.stderr


def test_after_an_upgrade_on_disk_the_server_refuses_and_the_run_starts_without_it(tmp_path: Path) -> None:
    module = tmp_path / "upgraded_module.py"
    module.write_text("VERSION = 1\n")
    env = {**os.environ, "PYTHONPATH": str(tmp_path)}
    server = Server(tmp_path / "l.sock", tmp_path / "launcher.log", "--no-default-preload", "--preload",
                    "prefect", "--preload", "upgraded_module", env=env).wait_ready()
    try:
        assert "directly" not in engine_for_a_bad_run_id(server.path).stderr  # forked
        module.write_text("VERSION = 2\n")  # pip install --upgrade, as the launcher sees it
        os.utime(module, ns=(time.time_ns(), time.time_ns() + 10**9))
        after = engine_for_a_bad_run_id(server.path)
        assert after.returncode == 1 and "Invalid flow run id" in after.stderr  # the engine still ran, itself
        assert "changed on disk since it started" in after.stderr and "upgraded_module.py" in after.stderr
        assert "running python -m prefect.engine directly" in after.stderr
        assert "restart the launcher" in server.log.read_text()
    finally:
        server.stop()


def test_a_signal_to_the_workers_whole_group_does_not_reach_the_flow_run(launcher: Server, tmp_path: Path) -> None:
    """Prefect's process worker starts its `command` in the worker's own process group; the client leaves it (as
    Prefect's default command does), so Ctrl-C in the worker's terminal or a group-wide stop does not end the run."""
    out = tmp_path / "sleeper.pid"
    run = new_run(launcher_flows.sleeper, out)
    env = {**os.environ, SOCKET_ENV: str(launcher.path), "PREFECT__FLOW_RUN_ID": run,
           "PREFECT__FLOW_ENTRYPOINT": "kit/launcher_flows.py:sleeper"}
    worker = subprocess.Popen(["sh", "-c", f"{sys.executable} -m prefect_micro_agents.launcher; sleep 300"],
                              cwd=KIT.parent, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL, start_new_session=True)  # the shell stands for the worker
    try:
        child = sleeping_child(out, worker)
        os.killpg(worker.pid, signal.SIGINT)  # Ctrl-C in the worker's terminal
        os.killpg(worker.pid, signal.SIGTERM)
        worker.wait(timeout=30)
        assert not gone(child, timeout=3), "a signal to the worker's group ended the flow run"
    finally:
        os.kill(child, signal.SIGKILL)
