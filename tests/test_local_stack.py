"""The README's main command (after its install step) as a subprocess in a temp directory: it reaches 'waiting for
approval' for a pushed SHA, shuts down cleanly on SIGINT with no process left behind, and a second start reuses the
same home."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from agents.adapter.local_server import free_port

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parents[1]


def descendants(pid: int) -> set[int]:
    """Every process whose parent chain leads to `pid`, plus those in its sessions (the runner and services
    start their own sessions, so walk parents rather than process groups)."""
    parents: dict[int, int] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        parents[int(stat.parent.name)] = int(fields[1])
    found, frontier = set(), {pid}
    while frontier:
        children = {child for child, parent in parents.items() if parent in frontier} - found
        found |= children
        frontier = children
    return found


def alive(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


class Stack:
    def __init__(self, home: Path, port: int, env: dict[str, str], log: Path) -> None:
        self.log = log
        with open(log, "w") as out:
            self.proc = subprocess.Popen(
                [sys.executable, str(ROOT / "deployments" / "local_stack.py"), "--home", str(home), "--port",
                 str(port)], cwd=home.parent, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)

    def wait_for(self, pattern: str, timeout: float = 240) -> re.Match[str]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            found = re.search(pattern, self.log.read_text())
            if found:
                return found
            assert self.proc.poll() is None, f"stack exited early:\n{self.log.read_text()[-3000:]}"
            time.sleep(0.2)
        raise TimeoutError(f"{pattern!r} not printed after {timeout}s:\n{self.log.read_text()[-3000:]}")

    def interrupt(self) -> set[int]:
        """SIGINT like Ctrl-C; returns the processes that were running under it just before."""
        before = descendants(self.proc.pid)
        os.kill(self.proc.pid, signal.SIGINT)
        assert self.proc.wait(90) == 0, self.log.read_text()[-3000:]
        return before


def test_main_command_reaches_approval_and_stops_cleanly(tmp_path: Path, local_model_url: str) -> None:
    """On its embedded defaults: the offline model decides (it proposes a deploy or asks a question; both wait for
    a human), so this is also the full pipeline reaching its first approval request offline."""
    home = tmp_path / "work" / ".local"
    home.parent.mkdir()
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PREFECT_", "AGENT_", "DEPLOY_"))}
    env["AGENT_MODEL_CACHE"] = os.environ.get("AGENT_MODEL_CACHE", "")  # reuse the session's assembled GGUF
    env = {k: v for k, v in env.items() if v}

    stack = Stack(home, port, env, tmp_path / "stack-1.log")
    match = stack.wait_for(r"microagents push --sha ([0-9a-f]{40})")
    assert f"Prefect UI      http://127.0.0.1:{port}" in stack.log.read_text()
    sha = match.group(1)
    api = f"http://127.0.0.1:{port}/api"
    push = subprocess.run([sys.executable, "-m", "agents.cli", "push", "--sha", sha, "--branch", "main"],
                          env={**env, "PREFECT_API_URL": api}, capture_output=True, text=True, timeout=60)
    assert push.returncode == 0, push.stderr
    waiting = stack.wait_for(r"waiting for (approval|an answer): (.*)\n\s+open (\S+)")
    assert re.search(r"proposes `deploy_(backend|frontend)_to_prod`|asks", waiting.group(2)), waiting.group(0)
    assert waiting.group(3).startswith(f"http://127.0.0.1:{port}/")
    services = json.loads((home / "envs" / "environments" / "state.json").read_text())
    before = stack.interrupt()
    assert before, "the stack had child processes (server, runner, staging services)"
    time.sleep(0.5)
    assert not [p for p in before if alive(p)], f"left behind: {[p for p in before if alive(p)]}"
    assert "stopped." in stack.log.read_text() and services  # staging services were running before the stop

    # Idempotent set-up: the same home again starts quickly and is served again.
    again = Stack(home, port, env, tmp_path / "stack-2.log")
    again.wait_for(r"microagents push --sha " + sha)
    assert "creating the sample app" in again.log.read_text()
    left = [p for p in again.interrupt() if alive(p)]
    assert not left
