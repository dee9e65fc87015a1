"""The embedded default in one command: everything the deploy bot needs, on this machine, offline.

    .venv/bin/python -m deployments.local_stack [--home .local] [--port 4200]   (from the checkout)

Starts a Prefect server (SQLite under <home>/prefect, UI included), creates the sample app and its staging and
production environments (<home>/envs), starts the offline model unless AGENT_MODEL is set, and serves the deploy
pipeline with the cron schedule and git.push trigger from deployments/prefect.yaml. It prints where the UI is and
commands that run as printed, from any directory (the `microagents` of this Python, PREFECT_API_URL set on the line),
then one line whenever a run waits for a human and one when a run ends (completed, or failed with why), read from
the server's state. Ctrl-C stops everything it started, runner first. Running it again reuses the same home: the
database, its runs (still waiting ones are announced again) and the environments.
"""

from __future__ import annotations

import argparse
import os
import shlex
import signal
import socket
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx

PROJECT = Path(__file__).resolve().parents[1]

from prefect_micro_agents.adapter.approvals import ApprovalsClient
from prefect_micro_agents.adapter.links import V2_HOW_TO, run_page
from prefect_micro_agents.adapter.local_server import LocalPrefectServer

DEPLOYMENT = "deploy-pipeline/local"
TERMINAL = ("COMPLETED", "FAILED", "CRASHED", "CANCELLED")
RUNNER_MIN_UPTIME_S = 30  # a runner that dies sooner than this after starting died of its set-up, not of bad luck
RUNNER_MAX_QUICK_DEATHS = 3
POLLING_LINE = b"polling for scheduled runs"  # what Prefect's runner logs once it serves
_started = time.monotonic()


def say(message: str) -> None:
    print(f"[stack {time.monotonic() - _started:6.1f}s] {message}", flush=True)


def cli(api_url: str) -> str:
    """The `microagents` command as a user can paste it anywhere: this Python's script by absolute path (it is not
    on PATH unless the venv is activated) and the server's address on the same line."""
    script = Path(sys.executable).absolute().parent / "microagents"
    command = shlex.quote(str(script)) if script.exists() else f"{shlex.quote(sys.executable)} -m prefect_micro_agents.cli"
    return f"PREFECT_API_URL={api_url} {command}"


def outcome_line(run: dict[str, Any]) -> str:
    """One line for a run that ended, from the server's record: completed or failed, and the state's message (the
    pipeline's outcome: what was deployed, or why not)."""
    state = run.get("state") or {}
    word = {"COMPLETED": "completed", "FAILED": "failed", "CRASHED": "crashed", "CANCELLED": "was cancelled"}
    message = " ".join(str(state.get("message") or "").split()) or "(no message)"
    return f"run {run['name']} ({run['id']}) {word.get(state.get('type'), str(state.get('type')).lower())}: {message}"


def _port_free(port: int) -> bool:
    with socket.socket() as sock:
        return sock.connect_ex(("127.0.0.1", port)) != 0


class Stopping(Exception):
    """Raised from the signal handler so every start-up step unwinds through `finally`."""


class LocalStack:
    def __init__(self, home: Path, port: int | None) -> None:
        self.home = home
        self.server = LocalPrefectServer(home / "prefect", port=port, ui=True, progress=say)
        self.runner: subprocess.Popen[bytes] | None = None
        self.targets = None
        self.model_started = False
        self.env: dict[str, str] = {}
        self.deployment_id = ""
        self.since = datetime.now(UTC)
        self.runner_started = 0.0
        self.quick_deaths = 0
        self.log_offset = 0

    def start(self) -> None:
        say(f"starting the Prefect server in {self.server.home} (a new database is migrated first: 10-30 s) ...")
        self.server.start()
        self.env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")}
        self.env.update(self.server.client_env(), PREFECT_UI_URL=self.server.ui_url, PYTHONUNBUFFERED="1",
                        AGENT_STATE_DIR=str(self.home / "agent-state"), DEPLOY_ROOT=str(self.home / "envs"))
        os.environ.update(self.env)
        say("creating the sample app and its staging and production environments ...")
        from flows.targets.settings import TargetSettings

        self.targets = TargetSettings().build()
        if not os.environ.get("AGENT_MODEL"):
            say("starting the offline model (Gemma 3 270M on llama.cpp; set AGENT_MODEL to use a real one) ...")
            from prefect_micro_agents import local_model

            self.env[local_model.URL_ENV] = local_model.endpoint()
            self.model_started = True
        say(f"serving {DEPLOYMENT} ...")
        self._start_runner()

    def _start_runner(self) -> None:
        self.log_offset = (self.home / "serve.log").stat().st_size if (self.home / "serve.log").exists() else 0
        with open(self.home / "serve.log", "ab") as log:  # the child keeps its own descriptor
            self.runner = subprocess.Popen([sys.executable, "-m", "flows.serve"], cwd=PROJECT, env=self.env,
                                           stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        self.runner_started = time.monotonic()
        self._wait_served()

    def _restart_runner(self) -> None:
        """The runner died (killed, OOM): start another and keep everything else up, deployed services included.
        Prefect recovers the runs it was executing by itself (prefect_micro_agents.adapter.recovery): no heartbeat for 60 s ->
        Crashed -> scheduled again -> this new runner picks them up. A runner that keeps dying at start is not
        restarted forever."""
        assert self.runner is not None
        code = self.runner.returncode
        quick = time.monotonic() - self.runner_started < RUNNER_MIN_UPTIME_S
        self.quick_deaths = self.quick_deaths + 1 if quick else 0
        if self.quick_deaths >= RUNNER_MAX_QUICK_DEATHS:
            raise RuntimeError(f"the runner exited (code {code}) {self.quick_deaths} times within "
                               f"{RUNNER_MIN_UPTIME_S} s of starting; see {self.home / 'serve.log'}")
        say(f"the runner died (exit code {code}); restarting it. Deployed services stay up; Prefect marks the runs "
            "it was executing Crashed once their heartbeats stop (within about 2 minutes) and starts them again "
            f"(`{cli(self.server.api_url)} runs` lists them)")
        self._start_runner()
        say(f"runner restarted: serving {DEPLOYMENT} again")

    def _wait_served(self, timeout: float = 180) -> None:
        deadline = time.monotonic() + timeout
        with httpx.Client(base_url=self.server.api_url, auth=self.server.httpx_auth, timeout=10, trust_env=False) as c:
            while time.monotonic() < deadline:
                assert self.runner is not None
                if self.runner.poll() is not None:
                    tail = (self.home / "serve.log").read_text(errors="replace")[-2000:]
                    raise RuntimeError(f"the runner exited (code {self.runner.returncode}):\n{tail}")
                with open(self.home / "serve.log", "rb") as log:  # this runner's lines only
                    log.seek(self.log_offset)
                    polling = POLLING_LINE in log.read()
                found = c.get(f"/deployments/name/{DEPLOYMENT}") if polling else None
                if found is not None and found.status_code == 200:
                    self.deployment_id = found.json()["id"]
                    return
                time.sleep(0.25)
        raise RuntimeError(f"{DEPLOYMENT} was not served after {timeout:.0f}s; see {self.home / 'serve.log'}")

    def banner(self) -> None:
        from flows.sample_app import load_manifest

        repo = Path(self.targets.repo)  # type: ignore[union-attr]
        sha = load_manifest(repo).sha("v1.2.0")
        microagents = cli(self.server.api_url)
        say("ready.")
        print(f"""
  Prefect UI      {self.server.ui_url}
  Deployment      {DEPLOYMENT} (cron schedule and git.push trigger from deployments/prefect.yaml)
  Sample repo     {repo}   (tags v1.0.0 v1.1.0 v1.2.0)
  Fire a push     {microagents} push --sha {sha}
                  or commit on main in the sample repo: its git hook sends the same event
  Approve         in the UI (run page, menu, Resume) or: {microagents} pending
  Other shells    export PREFECT_API_URL={self.server.api_url}   (then the commands work without the prefix)
  Logs            {self.home / 'serve.log'}

Press Ctrl-C to stop everything.
""", flush=True)

    def watch(self) -> None:
        """Say when a run waits for a human (the offline default for 'tell approvers') and when a run ends, each once,
        from the server's state; restart a dead runner."""
        seen: set[tuple[str, str]] = set()
        microagents = cli(self.server.api_url)
        with ApprovalsClient(self.server.api_url, self.server.auth_string) as approvals:
            while True:
                assert self.runner is not None
                if self.runner.poll() is not None:
                    self._restart_runner()
                for request in approvals.pending():
                    if (request.run_id, request.key) not in seen:
                        seen.add((request.run_id, request.key))
                        say(self._waiting(request, microagents))
                for run in self._ended_runs(approvals):
                    if (run["id"], run["state"]["id"]) not in seen:
                        seen.add((run["id"], run["state"]["id"]))
                        say(outcome_line(run))
                time.sleep(1)

    def _waiting(self, request: Any, microagents: str) -> str:
        title = next((ln.strip("# ") for ln in request.description.splitlines() if ln.startswith("#")), "")
        run = request.run_id
        if request.kind == "approval":
            decide = f"{microagents} approve {run}\n    or: {microagents} reject {run} -f \"<why>\""
        else:
            decide = f"{microagents} answer {run} \"<your answer>\""
        what = "approval" if request.kind == "approval" else "an answer"
        return (f"waiting for {what}: {request.run_name} ({run}): {title}\n"
                f"    open {run_page(self.server.ui_url, run)} ({V2_HOW_TO})\n"
                f"    or see it: {microagents} show {run}\n"
                f"    decide: {decide}")

    def _ended_runs(self, approvals: ApprovalsClient) -> list[dict[str, Any]]:
        """This deployment's runs that reached a final state since the stack started (older ones were told before)."""
        body = {"flow_runs": {"deployment_id": {"any_": [self.deployment_id]},
                              "state": {"type": {"any_": list(TERMINAL)}}},
                "sort": "END_TIME_DESC", "limit": 50}
        response = approvals.request("POST", "/flow_runs/filter", json=body)
        response.raise_for_status()
        ended = [r for r in response.json() if r.get("state") and r["state"].get("timestamp")]
        return [r for r in reversed(ended) if datetime.fromisoformat(r["state"]["timestamp"]) >= self.since]

    def stop(self) -> None:
        """Runner first (a runner whose server died first hangs), then services, the model, the server."""
        if self.runner is not None and self.runner.poll() is None:
            self._settle()
            say("stopping the runner ...")
            _stop_group(self.runner)
        if self.targets is not None:
            stopped = self.targets.stop_all()  # type: ignore[union-attr]
            if stopped:
                say(f"stopped {len(stopped)} staging/production service process(es)")
        if self.model_started:
            from prefect_micro_agents import local_model

            local_model.shutdown()
        if self.server.running:
            say("stopping the Prefect server ...")
        self.server.stop()
        say("stopped.")


    def _settle(self, timeout: float = 20) -> None:
        """Let runs that already ended (or suspended) finish exiting first: a stopping runner cancels every run whose
        process is still alive, and Prefect then records Cancelled over a Failed or Completed set a moment before."""
        assert self.runner is not None
        deadline = time.monotonic() + timeout
        try:
            with httpx.Client(base_url=self.server.api_url, auth=self.server.httpx_auth, timeout=5,
                              trust_env=False) as c:
                while time.monotonic() < deadline:
                    runs = _engine_runs(self.runner.pid)
                    states = [c.get(f"/flow_runs/{run}").json()["state"]["type"] for run in runs]
                    if not any(state in (*TERMINAL, "PAUSED") for state in states):
                        return
                    time.sleep(0.2)
        except (httpx.HTTPError, KeyError, TypeError):  # no server to ask: stop without waiting
            return


def _engine_runs(runner: int) -> list[str]:
    """Flow-run ids of the `python -m prefect.engine` processes the runner started and that are still alive."""
    found = []
    for proc in Path("/proc").glob("[0-9]*"):  # Linux; elsewhere nothing is found and nothing waits
        try:
            if int((proc / "stat").read_text().rsplit(")", 1)[1].split()[1]) != runner:
                continue
            if b"prefect.engine" not in (proc / "cmdline").read_bytes().split(b"\0"):
                continue
            env = dict(item.split(b"=", 1) for item in (proc / "environ").read_bytes().split(b"\0") if b"=" in item)
        except (OSError, ValueError, IndexError):
            continue
        if env.get(b"PREFECT__FLOW_RUN_ID"):
            found.append(env[b"PREFECT__FLOW_RUN_ID"].decode())
    return found


def _stop_group(proc: subprocess.Popen[bytes], timeout: float = 20) -> None:
    try:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(10)
    except ProcessLookupError:
        pass


def _interrupt(signum: int, frame: object) -> None:
    raise Stopping(signal.Signals(signum).name)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m deployments.local_stack", description=__doc__.splitlines()[0])
    parser.add_argument("--home", default=".local", help="where everything lives (default: %(default)s)")
    parser.add_argument("--port", type=int, default=4200, help="UI/API port; a free one if taken (default: %(default)s)")
    args = parser.parse_args(argv)
    home = Path(args.home).resolve()
    home.mkdir(parents=True, exist_ok=True)
    port = args.port if args.port and _port_free(args.port) else None
    if args.port and port is None:
        say(f"port {args.port} is taken; using a free one")
    signal.signal(signal.SIGINT, _interrupt)
    signal.signal(signal.SIGTERM, _interrupt)
    stack = LocalStack(home, port)
    code = 0
    try:
        stack.start()
        stack.banner()
        stack.watch()
    except Stopping as why:
        say(f"{why}: shutting down ...")
    except Exception as exc:  # one clear line; every process is still stopped below
        say(f"error: {exc}")
        code = 1
    finally:
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # a second Ctrl-C must not abandon half-stopped children
        stack.stop()
    return code


if __name__ == "__main__":
    sys.exit(main())
