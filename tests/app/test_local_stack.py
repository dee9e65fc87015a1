"""The README's main command (after its install step) as a subprocess in a temp directory: it reaches 'waiting for
approval' for a pushed SHA, the commands it prints run as printed, it prints a line when a run ends, it shuts down
cleanly on SIGINT with no process left behind, and a second start reuses the home (database, runs, environments)."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from prefect_micro_agents.testing import free_port

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parents[2]


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
    started: list[Stack] = []  # stopped after the test whatever happened (fixture `stop_stacks`)

    def __init__(self, home: Path, port: int, env: dict[str, str], log: Path) -> None:
        self.log = log
        Stack.started.append(self)
        with open(log, "w") as out:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "deployments.local_stack", "--home", str(home), "--port",
                 str(port)], cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)

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


@pytest.fixture(autouse=True)
def stop_stacks() -> Iterator[None]:
    """A failed assertion must not leave a stack (server, runner, model, services) running: Ctrl-C it like a user."""
    yield
    while Stack.started:
        stack = Stack.started.pop()
        if stack.proc.poll() is None:
            os.kill(stack.proc.pid, signal.SIGINT)
            try:
                stack.proc.wait(90)
            except subprocess.TimeoutExpired:
                os.killpg(stack.proc.pid, signal.SIGKILL)
                stack.proc.wait(10)


def shell(line: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    """Run a printed command line as a user pasting it would: a shell in another directory, no venv on PATH, no
    PREFECT_* variables."""
    env = {"PATH": "/usr/bin:/bin", "HOME": str(cwd), "LANG": "C.UTF-8"}
    return subprocess.run(["bash", "-c", line], cwd=cwd, env=env, capture_output=True, text=True, timeout=120)


def printed(stack: Stack, pattern: str, timeout: float = 240) -> str:
    """The whole printed line matching `pattern` (a regex for part of it)."""
    return stack.wait_for(r"(?m)^.*" + pattern + r".*$", timeout).group(0).strip()


def command(line: str) -> str:
    """The command part of a printed line (after its label): everything from `PREFECT_API_URL=` on."""
    return line[line.index("PREFECT_API_URL="):]


def test_main_command_reaches_approval_and_stops_cleanly(tmp_path: Path, local_model_url: str) -> None:
    """On its embedded defaults: the offline model decides (it proposes a deploy or asks a question; both wait for
    a human), so this is also the full pipeline reaching its first approval request offline. The commands it prints
    run as printed, it says when a run ends, and a second start reuses the same home."""
    home = tmp_path / "work" / ".local"
    home.parent.mkdir()
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PREFECT_", "AGENT_", "DEPLOY_"))}
    env["AGENT_MODEL_CACHE"] = os.environ.get("AGENT_MODEL_CACHE", "")  # reuse the session's assembled GGUF
    env = {k: v for k, v in env.items() if v}

    stack = Stack(home, port, env, tmp_path / "stack-1.log")
    push_line = command(printed(stack, r"microagents push --sha [0-9a-f]{40}"))
    sha = re.search(r"--sha ([0-9a-f]{40})", push_line).group(1)  # type: ignore[union-attr]
    pending_line = command(printed(stack, r"Approve .*microagents pending"))
    assert f"Prefect UI      http://127.0.0.1:{port}" in stack.log.read_text()
    push = shell(push_line, elsewhere)
    assert push.returncode == 0 and f"git.push sample-app@main {sha[:12]}" in push.stdout, push

    waiting = stack.wait_for(r"waiting for (approval|an answer): \S+ \(([0-9a-f-]{36})\): (.*)\n\s+open (\S+) \(menu: Resume\)\n"
                             r"\s+or see it: (.*)\n\s+decide: (.*)\n")
    first = waiting.group(2)
    assert re.search(r"proposes `deploy_(backend|frontend)_to_prod`|asks", waiting.group(3)), waiting.group(0)
    assert waiting.group(4) == f"http://127.0.0.1:{port}/v2/runs/flow-run/{first}"  # the UI the README describes
    decide = waiting.group(6)
    assert decide.endswith(f"approve {first}" if waiting.group(1) == "approval" else f'answer {first} "<your answer>"')
    # The printed commands run as printed, from another directory, with nothing set up.
    listed = shell(pending_line, elsewhere)
    assert listed.returncode == 0 and first in listed.stdout, listed
    shown = shell(command(waiting.group(5)), elsewhere)
    assert shown.returncode == 0 and waiting.group(3).strip() in shown.stdout, shown

    # A run that ends is reported once, with why: a commit whose staging e2e fails.
    from flows.sample_app import load_manifest

    bad = load_manifest(home / "envs" / "sample-app").sha("staging_fail")
    assert shell(push_line.replace(sha, bad), elsewhere).returncode == 0
    ended = stack.wait_for(r"run \S+ \(([0-9a-f-]{36})\) failed: (staging rejected " + bad[:12] + r".*)\n", timeout=180)
    second, why = ended.group(1), ended.group(2)
    assert "Nothing was deployed to production." in why
    services = json.loads((home / "envs" / "environments" / "state.json").read_text())
    database = (home / "prefect" / "prefect.db").stat()
    before = stack.interrupt()
    assert before, "the stack had child processes (server, runner, staging services)"
    time.sleep(0.5)
    assert not [p for p in before if alive(p)], f"left behind: {[p for p in before if alive(p)]}"
    assert "stopped." in stack.log.read_text() and services  # staging services were running before the stop
    assert stack.log.read_text().count(f"({second}) failed") == 1

    # The same home again: the same database file, the first session's runs and environment history are still there,
    # and the run that still waits for a human is announced again.
    again = Stack(home, port, env, tmp_path / "stack-2.log")
    again.wait_for(r"microagents push --sha " + sha)
    again.wait_for(r"waiting for (approval|an answer): \S+ \(" + first + r"\)")
    reused = (home / "prefect" / "prefect.db").stat()
    assert (reused.st_dev, reused.st_ino) == (database.st_dev, database.st_ino)
    with httpx.Client(base_url=f"http://127.0.0.1:{port}/api", timeout=30, trust_env=False) as api:
        states = {run: api.get(f"/flow_runs/{run}").json()["state"] for run in (first, second)}
    assert states[first]["type"] == "PAUSED" and states[second]["type"] == "FAILED"
    assert states[second]["message"] == why
    history = json.loads((home / "envs" / "environments" / "state.json").read_text())["history"]
    assert history[:len(services["history"])] == services["history"]
    assert f"({second}) failed" not in again.log.read_text()  # told once, in the session where it ended
    left = [p for p in again.interrupt() if alive(p)]
    assert not left


def test_the_stack_restarts_a_dead_runner_keeps_services_up_and_the_run_recovers(tmp_path: Path) -> None:
    """The runner (and the flow run it executes, frozen in the middle of a production deploy) is SIGKILLed as a
    group. The stack says so and starts another runner; the staging and production services keep running; Prefect
    notices the run and starts it again on the new runner, which finishes the deploy once; the stack reports
    the run completed. The test changes no state."""
    from prefect_micro_agents.testing import FAILPOINTS_ENV, ScriptedModel, arm
    from flows.sample_app import load_manifest

    home = tmp_path / "work" / ".local"
    home.parent.mkdir()
    faults = tmp_path / "faults"
    model = ScriptedModel(tmp_path / "model")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PREFECT_", "AGENT_", "DEPLOY_"))}
    env.update({"AGENT_MODEL": model.model, "AGENT_LITELLM_PROVIDERS": os.environ["AGENT_LITELLM_PROVIDERS"], FAILPOINTS_ENV: str(faults)})
    port = free_port()
    stack = Stack(home, port, env, tmp_path / "stack.log")
    push_line = command(printed(stack, r"microagents push --sha [0-9a-f]{40}"))
    sha = load_manifest(home / "envs" / "sample-app").sha("v1.1.0")
    model.enqueue({"call": {"intent": "deploy_backend_to_prod", "sha": sha[:12]}},
                  {"call": {"intent": "deploy_frontend_to_prod", "sha": sha[:12]}},
                  {"call": {"intent": "done_for_now", "message": "deployed"}})
    assert shell(re.sub(r"--sha [0-9a-f]{40}", f"--sha {sha}", push_line), tmp_path).returncode == 0
    run = stack.wait_for(r"waiting for approval: \S+ \(([0-9a-f-]{36})\)").group(1)
    arm(faults, "local.deploy.started")  # the new backend process exists, its pid is not recorded yet
    approve_line = command(printed(stack, rf"decide: .*approve {run}"))
    approve = shell(approve_line, tmp_path)
    assert approve.returncode == 0, approve
    deadline = time.monotonic() + 120
    while not (faults / "reached-local.deploy.started").exists():
        assert time.monotonic() < deadline, stack.log.read_text()[-3000:]
        time.sleep(0.1)

    state = home / "envs" / "environments" / "state.json"
    staging = {name: s["pid"] for name, s in json.loads(state.read_text())["services"]["staging"].items()}
    runners = [p for p in descendants(stack.proc.pid) if b"flows.serve" in Path(f"/proc/{p}/cmdline").read_bytes()]
    assert len(runners) == 1, runners
    os.killpg(runners[0], signal.SIGKILL)
    killed = time.monotonic()
    stack.wait_for(r"the runner died \(exit code -9\); restarting it. Deployed services stay up", timeout=30)
    stack.wait_for(r"runner restarted: serving deploy-pipeline/local again", timeout=120)
    # Recovered: the new attempt finishes the backend deploy and the agent proposes the frontend.
    stack.wait_for(rf"(?s)waiting for approval: \S+ \({run}\).*waiting for approval: \S+ \({run}\)", timeout=300)
    recovered = time.monotonic() - killed
    assert shell(approve_line, tmp_path).returncode == 0
    ended = stack.wait_for(rf"run \S+ \({run}\) (completed|failed): (.*)\n", timeout=180)
    assert ended.group(1) == "completed", ended.group(0)
    with httpx.Client(base_url=f"http://127.0.0.1:{port}/api", timeout=30, trust_env=False) as api:
        names = [s["name"] for s in api.get("/flow_run_states/", params={"flow_run_id": run}).json()]
    assert "AwaitingRetry" in names, names  # Prefect's automation started it again
    # The services the dead runner's runs deployed are still the same processes.
    assert staging and all(alive(pid) for pid in staging.values()), staging
    services = json.loads(state.read_text())
    backend = services["services"]["production"]["backend"]
    assert backend["sha"] == sha and alive(backend["pid"])
    deploys = [h for h in services["history"] if h["env"] == "production" and h["action"] == "deploy"]
    assert [(h["service"], h["status"]) for h in deploys] == [("backend", "succeeded"), ("frontend", "succeeded")], \
        deploys  # one deploy per approval
    assert len(model.requests()) == 3
    print(f"\nrunner killed -> the recovered run asks for its next approval {recovered:.1f} s")
