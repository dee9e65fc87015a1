"""The scale-out topology in one command, on this machine: what a team runs on many machines, each part a real process.

    .venv/bin/python -m deployments.scale_stack [--run-dir .scale] [--workers 2] [--no-model]   (from the checkout)

Starts Postgres (pg_trgm; as an unprivileged account when root), Redis (Prefect's messaging, event ordering, leases
and the services' task queue, through prefect-redis), moto's S3 server with a bucket and the `s3-bucket/...` result
storage block every worker uses, the database migration, the Prefect API server with --no-services and its UI,
`prefect server services start`, the `microagents` process work pool and N workers, each with its own PREFECT_HOME,
working directory and AGENT_STATE_DIR as if on its own machine (prefect_micro_agents.testing.ScaleStack). Then the
deploy bot: the sample app and its environments (one DEPLOY_ROOT, the "world" every worker deploys to), the offline
model unless AGENT_MODEL is set or --no-model, `prefect deploy --prefect-file deployments/prefect.yaml --all` (the
deployment deploy-pipeline/worker with its schedule and git.push trigger) and `python -m flows.triggers` (the
recovery automations). It prints what is where and the environment a client or another worker sets. Ctrl-C (or
SIGTERM) stops all of it, workers first; every log is in <run-dir>/logs. A fresh run directory each time (an
existing one is moved aside to <run-dir>.old).
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

PROJECT = Path(__file__).resolve().parents[1]

from prefect_micro_agents.testing import ComponentStartError, ScaleStack

DEPLOYMENT = "deploy-pipeline/worker"
POOL = "microagents"  # deployments/prefect.yaml's work pool
_started = time.monotonic()


def say(message: str) -> None:
    print(f"[scale {time.monotonic() - _started:6.1f}s] {message}", flush=True)


class Stopping(Exception):
    """Raised from the signal handler so every start-up step unwinds through `finally`."""


def _interrupt(signum: int, frame: object) -> None:
    raise Stopping(signal.Signals(signum).name)


class ScaleApp:
    def __init__(self, run_dir: Path, workers: int, port: int | None, model: bool) -> None:
        self.run_dir = run_dir
        self.want_model = model and not os.environ.get("AGENT_MODEL")
        self.model_started = False
        self.targets: object | None = None
        self.worker_env: dict[str, str] = {"DEPLOY_ROOT": str(run_dir / "envs")}
        self.stack = ScaleStack(run_dir, workers=workers, pool=POOL, ui=True, api_port=port,
                                worker_env=self.worker_env, progress=say)

    def start(self) -> None:
        if self.want_model:
            say("starting the offline model (Gemma 3 270M on llama.cpp; set AGENT_MODEL or pass --no-model) ...")
            from prefect_micro_agents import local_model

            self.worker_env[local_model.URL_ENV] = local_model.endpoint()
            self.model_started = True
        self.stack.start()
        os.environ.update(self.worker_env)
        say("creating the sample app and its staging and production environments ...")
        from flows.targets.settings import TargetSettings

        self.targets = TargetSettings().build()
        self._run("deploying deploy-pipeline/worker (prefect deploy --prefect-file deployments/prefect.yaml --all)",
                  [sys.executable, "-m", "prefect", "deploy", "--prefect-file", "deployments/prefect.yaml", "--all"],
                  "deploy.log")
        self._run("creating the recovery automations (python -m flows.triggers)",
                  [sys.executable, "-m", "flows.triggers"], "triggers.log")

    def _run(self, what: str, argv: list[str], log_name: str) -> None:
        say(f"{what} ...")
        env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")}
        env.update(self.stack.client_env(), PREFECT_HOME=str(self.run_dir / "client-home"), PWD=str(PROJECT),
                   **self.worker_env)
        log_path = self.stack.logs / log_name
        with open(log_path, "ab") as log:
            done = subprocess.run(argv, cwd=PROJECT, env=env, stdin=subprocess.DEVNULL, stdout=log,
                                  stderr=subprocess.STDOUT, timeout=300, start_new_session=True)
        if done.returncode != 0:
            tail = "\n".join(log_path.read_text(errors="replace").splitlines()[-30:])
            raise ComponentStartError(log_name.removesuffix(".log"),
                                      f"`{' '.join(argv[1:])}` exited with code {done.returncode}; last lines of "
                                      f"{log_path}:\n{tail}")

    def banner(self) -> None:
        from flows.sample_app import load_manifest

        repo = Path(self.targets.repo)  # type: ignore[attr-defined]
        sha = load_manifest(repo).sha("v1.2.0")
        api = self.stack.api_url
        microagents = f"PREFECT_API_URL={api} {Path(sys.executable).parent / 'microagents'}"
        say("ready.")
        print(f"""
{self.stack.describe()}
  Prefect UI      {self.stack.ui_url}
  Deployment      {DEPLOYMENT} on pool {POOL} (cron schedule and git.push trigger from deployments/prefect.yaml)
  Sample repo     {repo}   (tags v1.0.0 v1.1.0 v1.2.0; environments in {self.worker_env['DEPLOY_ROOT']})
  Fire a push     {microagents} push --sha {sha}
  Approve         in the UI (run page, menu, Resume) or: {microagents} pending
  Another worker  (on this machine or another that reaches these addresses) set the Client env above, then
                  {Path(sys.executable).parent / 'prefect'} worker start --pool {POOL}

Press Ctrl-C to stop everything.
""", flush=True)

    def watch(self) -> None:
        """Until stopped; a part that dies stops the whole stack, saying which and why."""
        while True:
            for name, part in self.stack.components().items():
                if not part.running:
                    tail = "\n".join(part.log_path.read_text(errors="replace").splitlines()[-30:])
                    raise RuntimeError(f"{name} exited; last lines of {part.log_path}:\n{tail}")
            time.sleep(1)

    def stop(self) -> None:
        self.stack.stop()
        if self.targets is not None:
            stopped = self.targets.stop_all()  # type: ignore[attr-defined]
            if stopped:
                say(f"stopped {len(stopped)} staging/production service process(es)")
        if self.model_started:
            from prefect_micro_agents import local_model

            local_model.shutdown()
        say("stopped.")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m deployments.scale_stack", description=__doc__.splitlines()[0])
    parser.add_argument("--run-dir", default=".scale", help="where everything lives (default: %(default)s)")
    parser.add_argument("--workers", type=int, default=2, help="how many workers (default: %(default)s)")
    parser.add_argument("--port", type=int, default=None, help="API/UI port (default: a free one)")
    parser.add_argument("--no-model", action="store_true", help="do not start the offline model")
    args = parser.parse_args(argv)
    run_dir = Path(args.run_dir).resolve()
    if run_dir.exists():
        old = run_dir.with_name(run_dir.name + ".old")
        shutil.rmtree(old, ignore_errors=True)
        run_dir.rename(old)
    run_dir.mkdir(parents=True)
    signal.signal(signal.SIGINT, _interrupt)
    signal.signal(signal.SIGTERM, _interrupt)
    app = ScaleApp(run_dir, args.workers, args.port, model=not args.no_model)
    code = 0
    try:
        app.start()
        app.banner()
        app.watch()
    except Stopping as why:
        say(f"{why}: shutting down ...")
    except Exception as exc:  # one clear message naming the part; every process is still stopped below
        say(f"error: {exc}")
        code = 1
    finally:
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # a second Ctrl-C must not abandon half-stopped children
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        app.stop()
    return code


if __name__ == "__main__":
    sys.exit(main())
