"""The embedded default in one command: everything the deploy bot needs, on this machine, offline.

    .venv/bin/python deployments/local_stack.py [--home .local] [--port 4200]

Starts a Prefect server (SQLite under <home>/prefect, UI included), creates the sample app and its staging and
production environments (<home>/envs), starts the offline model unless AGENT_MODEL is set, and serves the deploy
pipeline with the cron schedule and git.push trigger from deployments/prefect.yaml. It prints where the UI is, how
to fire a push, and a line whenever a run waits for a human. Ctrl-C stops everything it started, runner first.
Running it again reuses the same home (idempotent).
"""

from __future__ import annotations

import argparse
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx

PROJECT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(PROJECT))  # run by path from anywhere: the project's packages come first

from agents.adapter.approvals import ApprovalsClient  # noqa: E402
from agents.adapter.local_server import LocalPrefectServer  # noqa: E402

DEPLOYMENT = "deploy-pipeline/local"
_started = time.monotonic()


def say(message: str) -> None:
    print(f"[stack {time.monotonic() - _started:6.1f}s] {message}", flush=True)


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
            from agents import local_model

            self.env[local_model.URL_ENV] = local_model.endpoint()
            self.model_started = True
        say(f"serving {DEPLOYMENT} ...")
        log = open(self.home / "serve.log", "ab")  # noqa: SIM115 (lives as long as the runner)
        self.runner = subprocess.Popen([sys.executable, "-m", "flows.serve"], cwd=PROJECT, env=self.env, stdout=log,
                                       stderr=subprocess.STDOUT, start_new_session=True)
        self._wait_served()

    def _wait_served(self, timeout: float = 180) -> None:
        deadline = time.monotonic() + timeout
        with httpx.Client(base_url=self.server.api_url, auth=self.server.httpx_auth, timeout=10, trust_env=False) as c:
            while time.monotonic() < deadline:
                assert self.runner is not None
                if self.runner.poll() is not None:
                    tail = (self.home / "serve.log").read_text(errors="replace")[-2000:]
                    raise RuntimeError(f"the runner exited (code {self.runner.returncode}):\n{tail}")
                if c.get(f"/deployments/name/{DEPLOYMENT}").status_code == 200:
                    return
                time.sleep(0.25)
        raise RuntimeError(f"{DEPLOYMENT} was not served after {timeout:.0f}s; see {self.home / 'serve.log'}")

    def banner(self) -> None:
        from flows.sample_app import load_manifest

        repo = Path(self.targets.repo)  # type: ignore[union-attr]
        sha = load_manifest(repo).sha("v1.2.0")
        say("ready.")
        print(f"""
  Prefect UI      {self.server.ui_url}
  Deployment      {DEPLOYMENT} (cron schedule and git.push trigger from deployments/prefect.yaml)
  Sample repo     {repo}   (tags v1.0.0 v1.1.0 v1.2.0; prod is empty until the first deploy)
  Fire a push     PREFECT_API_URL={self.server.api_url} .venv/bin/microagents push --sha {sha}
                  or commit on main in the sample repo: its git hook sends the same event
  Approve         in the UI (run page, menu, Resume) or: PREFECT_API_URL={self.server.api_url} .venv/bin/microagents pending
  Logs            {self.home / 'serve.log'}

Press Ctrl-C to stop everything.
""", flush=True)

    def watch(self) -> None:
        """Say when a run waits for a human (the offline default for 'tell approvers'); notice a dead runner."""
        seen: set[tuple[str, str]] = set()
        with ApprovalsClient(self.server.api_url, self.server.auth_string) as approvals:
            while True:
                assert self.runner is not None
                if self.runner.poll() is not None:
                    raise RuntimeError(f"the runner exited (code {self.runner.returncode}); see {self.home / 'serve.log'}")
                for request in approvals.pending():
                    if (request.run_id, request.key) not in seen:
                        seen.add((request.run_id, request.key))
                        title = next((ln.strip("# ") for ln in request.description.splitlines() if ln.startswith("#")), "")
                        what = "approval" if request.kind == "approval" else "an answer"
                        say(f"waiting for {what}: {request.run_name}: {title}\n    open {self.server.ui_url}/runs/"
                            f"flow-run/{request.run_id} or run: microagents {'approve' if what == 'approval' else 'answer'} "
                            f"{request.run_id}")
                time.sleep(1)

    def stop(self) -> None:
        """Runner first (a runner whose server died first hangs), then services, the model, the server."""
        if self.runner is not None and self.runner.poll() is None:
            say("stopping the runner ...")
            _stop_group(self.runner)
        if self.targets is not None:
            stopped = self.targets.stop_all()  # type: ignore[union-attr]
            if stopped:
                say(f"stopped {len(stopped)} staging/production service process(es)")
        if self.model_started:
            from agents import local_model

            local_model.shutdown()
        if self.server.running:
            say("stopping the Prefect server ...")
        self.server.stop()
        say("stopped.")


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
    parser = argparse.ArgumentParser(prog="local_stack.py", description=__doc__.splitlines()[0])
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
