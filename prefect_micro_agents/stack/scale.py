"""Prefect's distributed setup on one machine, each part a real process: Postgres, Redis, moto's S3 server, the
database migration, an API server with `--no-services`, `prefect server services start`, a process work pool and
N workers, each worker with its own PREFECT_HOME, working directory and AGENT_STATE_DIR as if on its own machine,
and beside each worker the kit's warm launcher (prefect_micro_agents.launcher: flow-run processes forked from a
process that imported Prefect and litellm once; the pool's `command` runs its client; `launcher=False` for Prefect's
own `python -m prefect.engine` per run).

    with ScaleStack(run_dir, workers=2) as stack:
        env = {**os.environ, **stack.client_env()}     # PREFECT_API_URL, result storage, ...
        ...                                            # deploy to stack.pool; its workers run the flow runs

`start()` starts the parts in dependency order and prints a progress line per part; a part that fails raises
`ComponentStartError` naming it, with its log's last lines, after everything already started was stopped. `stop()`
stops them in reverse order (workers first: a worker whose server died first can hang), each process group whole.
Every log is in `run_dir/logs`.
"""

from __future__ import annotations

import os
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from types import TracebackType

import httpx

from prefect_micro_agents.adapter.local_server import free_port, prefect_settings_from
from prefect_micro_agents.launcher import SOCKET_ENV
from prefect_micro_agents.launcher.server import MAX_SOCKET_PATH
from prefect_micro_agents.stack.postgres import LocalPostgres
from prefect_micro_agents.stack.processes import Component, ComponentStartError, kill_all, log_tail
from prefect_micro_agents.stack.redis import LocalRedis
from prefect_micro_agents.stack.s3 import LocalS3, save_result_storage
from prefect_micro_agents.stack.settings import RedisAddress, client_settings, server_settings

__all__ = ["ScaleStack", "WorkerMachine"]

HOST = "127.0.0.1"
SERVICES_LINE = b"Starting services"
SERVICES_EVENT_GROUPS = {"reactive-triggers", "event-persister"}  # prefect_redis consumer groups on `events`


def _print_progress(message: str) -> None:
    print(f"[scale-stack] {message}", file=sys.stderr, flush=True)


class WorkerMachine:
    """One worker and what stands for its machine: `home` (PREFECT_HOME), `workdir` (its working directory),
    `state_dir` (AGENT_STATE_DIR), and its warm launcher's socket (`launcher_socket`; under /tmp when the machine's
    folder would make the path too long for a Unix socket)."""

    def __init__(self, name: str, root: Path) -> None:
        self.name = name
        self.root = root
        self.home = root / "prefect-home"
        self.workdir = root / "work"
        self.state_dir = root / "agent-state"
        self.launcher_socket = root / "launcher.sock"
        if len(os.fsencode(self.launcher_socket)) > MAX_SOCKET_PATH:
            self.launcher_socket = Path(tempfile.mkdtemp(prefix="microagents-")) / f"{name}.sock"
        self.component: Component | None = None
        self.launcher: Component | None = None

    def parts(self) -> list[Component]:
        """Its running parts, the worker first."""
        return [part for part in (self.component, self.launcher) if part is not None]

    def make_dirs(self) -> None:
        for folder in (self.home, self.workdir, self.state_dir):
            folder.mkdir(parents=True, exist_ok=True)


class ScaleStack:
    def __init__(
        self,
        run_dir: str | os.PathLike[str],
        *,
        workers: int = 2,
        pool: str = "microagents",
        bucket: str = "microagents-results",
        storage_block: str = "microagents-results",
        ui: bool = False,
        api_port: int | None = None,
        worker_env: Mapping[str, str] | None = None,
        worker_query_seconds: float = 2.0,
        worker_limit: int | None = None,
        launcher: bool = True,
        postgres_account: str | None = None,
        python: str | None = None,
        progress: Callable[[str], None] | None = _print_progress,
    ) -> None:
        """`worker_env` is added to every worker's environment (a model, its key, a DEPLOY_ROOT...); `worker_limit`
        is each worker's `--limit` (flow runs it runs at once; default: no limit); `launcher` puts the warm launcher
        beside each worker and makes it the pool's `command` (False: Prefect's default command)."""
        if workers < 1:
            raise ValueError("workers must be at least 1")
        self.run_dir = Path(run_dir).resolve()
        self.logs = self.run_dir / "logs"
        self.pool = pool
        self.bucket = bucket
        self.storage_block_name = storage_block
        self.ui = ui
        self.python = python or sys.executable
        self.progress = progress
        self.worker_env = dict(worker_env or {})
        self.worker_query_seconds = worker_query_seconds
        if worker_limit is not None and worker_limit < 1:
            raise ValueError("worker_limit must be at least 1")
        self.worker_limit = worker_limit
        self.launcher = launcher
        self.api_port = api_port or free_port()
        self.postgres = LocalPostgres(self.run_dir / "postgres", port=free_port(), account=postgres_account,
                                      progress=progress, log_path=self.logs / "postgres.log")
        self.redis = LocalRedis(self.run_dir / "redis", port=free_port(), progress=progress,
                                log_path=self.logs / "redis.log")
        self.s3 = LocalS3(self.run_dir / "s3", port=free_port(), python=self.python, progress=progress,
                          log_path=self.logs / "moto.log")
        self.api: Component | None = None
        self.services: Component | None = None
        self.workers = [WorkerMachine(f"worker-{chr(ord('a') + i)}", self.run_dir / "machines" /
                                      f"worker-{chr(ord('a') + i)}") for i in range(workers)]
        self.result_storage = f"s3-bucket/{storage_block}"
        self.timings: dict[str, float] = {}
        self._started = False

    # -- addresses and environments ----------------------------------------------------------------------------------

    @property
    def api_url(self) -> str:
        return f"http://{HOST}:{self.api_port}/api"

    @property
    def ui_url(self) -> str:
        return f"http://{HOST}:{self.api_port}"

    def redis_address(self) -> RedisAddress:
        return RedisAddress(HOST, self.redis.port, self.redis.password)

    def server_env(self, home: Path) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.upper().startswith(("PREFECT_", "AWS_"))}
        env.update(server_settings(self.postgres.url, self.redis_address()))
        env.update(PREFECT_HOME=str(home), PYTHONUNBUFFERED="1",
                   PREFECT_SERVER_UI_ENABLED="true" if self.ui else "false")
        if self.ui:
            env["PREFECT_SERVER_UI_API_URL"] = self.api_url
        return env

    def client_env(self) -> dict[str, str]:
        """What a client process sets to use the stack: merge over os.environ (drop inherited PREFECT_* first)."""
        return client_settings(self.api_url, self.result_storage, self.redis_address())

    def worker_process_env(self, machine: WorkerMachine) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.upper().startswith(("PREFECT_", "AWS_"))}
        env.update(self.client_env())
        env.update(PREFECT_HOME=str(machine.home), AGENT_STATE_DIR=str(machine.state_dir), PYTHONUNBUFFERED="1",
                   PREFECT_WORKER_QUERY_SECONDS=str(self.worker_query_seconds))
        if self.launcher:
            env[SOCKET_ENV] = str(machine.launcher_socket)
        env.update(self.worker_env)
        return env

    @contextmanager
    def connected(self) -> Iterator[ScaleStack]:
        """Point THIS process's Prefect client at the stack while the block runs (settings rebuilt, then restored);
        see LocalPrefectServer.connected for why the settings must be rebuilt."""
        with prefect_settings_from({**self.client_env(), "PREFECT_HOME": str(self.run_dir / "client-home")}):
            yield self

    def components(self) -> dict[str, Component]:
        """Every started part by name, in start order."""
        found = {"postgres": self.postgres.component, "redis": self.redis.component, "s3 (moto)": self.s3.component,
                 "api": self.api, "services": self.services}
        found.update({m.name: m.component for m in self.workers})
        found.update({f"{m.name} launcher": m.launcher for m in self.workers})
        return {name: part for name, part in found.items() if part is not None}

    def pgids(self) -> list[int]:
        return [c.pid for c in self.components().values() if c.pid is not None]

    def rss_mib(self) -> dict[str, float]:
        return {name: part.rss_mib() for name, part in self.components().items()}

    # -- lifecycle ---------------------------------------------------------------------------------------------------

    def __enter__(self) -> ScaleStack:
        self.start()
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()

    def _step(self, name: str, what: str, action: Callable[[], object]) -> None:
        self._say(f"{what} ...")
        began = time.monotonic()
        action()
        self.timings[name] = time.monotonic() - began
        self._say(f"{name} ready ({self.timings[name]:.1f} s)")

    def start(self) -> ScaleStack:
        if self._started:
            raise RuntimeError("stack already started")
        self._started = True
        began = time.monotonic()
        self.logs.mkdir(parents=True, exist_ok=True)
        try:
            self._step("postgres", f"starting Postgres on {HOST}:{self.postgres.port}", self.postgres.start)
            self._step("redis", f"starting Redis on {HOST}:{self.redis.port}", self.redis.start)
            self._step("s3 (moto)", f"starting moto's S3 server on {self.s3.endpoint_url}", self._start_s3)
            self._step("migrations", "migrating the Prefect database (prefect server database upgrade)",
                       self._migrate)
            self._step("api", f"starting the Prefect API server (--no-services) on {self.api_url}", self._start_api)
            self._step("services", "starting Prefect's background services (prefect server services start)",
                       self._start_services)
            self._step("result storage", f"saving the result storage blocks ({self.result_storage})",
                       self._save_blocks)
            self._step("work pool", f"creating the process work pool {self.pool!r}", self._create_pool)
            for machine in self.workers:
                self._step(machine.name, f"starting {machine.name} (home {machine.root})",
                           lambda m=machine: self._start_worker(m))  # type: ignore[misc]
        except BaseException:
            self.stop()
            raise
        self.timings["total"] = time.monotonic() - began
        self._say(f"everything is up after {self.timings['total']:.1f} s")
        return self

    def _start_s3(self) -> None:
        self.s3.start()
        self.s3.create_bucket(self.bucket)

    def _migrate(self) -> None:
        import subprocess

        home = self.run_dir / "migrate-home"
        home.mkdir(parents=True, exist_ok=True)
        log_path = self.logs / "migrate.log"
        with open(log_path, "ab") as log:
            offset = log.tell()
            done = subprocess.run([self.python, "-m", "prefect", "server", "database", "upgrade", "-y"],
                                  stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, cwd=home,
                                  env=self.server_env(home), timeout=600, start_new_session=True)
        if done.returncode != 0:
            raise ComponentStartError("migrations", f"`prefect server database upgrade -y` exited with code "
                                                    f"{done.returncode}; last lines of {log_path}:\n"
                                                    f"{log_tail(log_path, offset)}")

    def _start_api(self) -> None:
        home = self.run_dir / "api-home"
        home.mkdir(parents=True, exist_ok=True)
        argv = [self.python, "-m", "prefect", "server", "start", "--host", HOST, "--port", str(self.api_port),
                "--no-services", "--analytics-off"]
        if not self.ui:
            argv.append("--no-ui")

        def healthy() -> bool:
            with httpx.Client(timeout=2, trust_env=False) as http:
                return http.get(f"{self.api_url}/health").status_code == 200

        self.api = Component("api", argv, log_path=self.logs / "api.log", env=self.server_env(home), cwd=home,
                             ready=healthy, startup_timeout=180, progress=self.progress)
        self.api.start()

    def _start_services(self) -> None:
        home = self.run_dir / "services-home"
        home.mkdir(parents=True, exist_ok=True)
        log_path = self.logs / "services.log"
        offset = log_path.stat().st_size if log_path.exists() else 0

        def running() -> bool:
            # Its banner, then its consumers reading Prefect's streams in Redis: the triggers and the event persister
            # on `events`, the automations' actions on `actions` (they are what turns events into work).
            with open(log_path, "rb") as log:
                log.seek(offset)
                if SERVICES_LINE not in log.read():
                    return False
            return (SERVICES_EVENT_GROUPS <= self.redis.consumer_groups("events")
                    and "actions" in self.redis.consumer_groups("actions"))

        self.services = Component("services", [self.python, "-m", "prefect", "server", "services", "start"],
                                  log_path=log_path, env=self.server_env(home), cwd=home, ready=running,
                                  startup_timeout=120, progress=self.progress)
        self.services.start()

    def _save_blocks(self) -> None:
        with self.connected():
            save_result_storage(block_name=self.storage_block_name, bucket=self.bucket, folder="results",
                                endpoint_url=self.s3.endpoint_url, access_key=self.s3.access_key,
                                secret_key=self.s3.secret_key)

    def pool_command(self) -> str | None:
        """The pool's default `command` job variable: the launcher's client, or None for Prefect's own."""
        return f"{self.python} -m prefect_micro_agents.launcher" if self.launcher else None

    def _create_pool(self) -> None:
        from prefect.workers.process import ProcessWorker

        template = ProcessWorker.get_default_base_job_template()
        template["variables"]["properties"]["command"]["default"] = self.pool_command()
        with httpx.Client(base_url=self.api_url, timeout=30, trust_env=False) as http:
            response = http.post("/work_pools/", json={"name": self.pool, "type": "process",
                                                       "base_job_template": template})
            if response.status_code not in (201, 409):  # 409: it exists (a reused database)
                raise ComponentStartError("work pool", f"POST /work_pools/ answered {response.status_code}: "
                                                       f"{response.text[:500]}")

    def registered_workers(self) -> list[str]:
        """Names of the workers the API knows in the pool."""
        with httpx.Client(base_url=self.api_url, timeout=30, trust_env=False) as http:
            response = http.post(f"/work_pools/{self.pool}/workers/filter", json={})
            response.raise_for_status()
            return [w["name"] for w in response.json()]

    def _start_worker(self, machine: WorkerMachine) -> None:
        machine.make_dirs()
        if self.launcher:
            self._start_launcher(machine)
        argv = [self.python, "-m", "prefect", "worker", "start", "--pool", self.pool, "--type", "process",
                "--name", machine.name, *(["--limit", str(self.worker_limit)] if self.worker_limit else [])]
        machine.component = Component(
            machine.name, argv, log_path=self.logs / f"{machine.name}.log", env=self.worker_process_env(machine),
            cwd=machine.workdir, ready=lambda: machine.name in self.registered_workers(), startup_timeout=120,
            progress=self.progress)
        machine.component.start()

    def _start_launcher(self, machine: WorkerMachine) -> None:
        import socket

        def listening() -> bool:
            with socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET) as probe:
                try:
                    probe.connect(str(machine.launcher_socket))
                except OSError:
                    return False
            return True

        if machine.launcher_socket.exists():
            machine.launcher_socket.unlink()
        # --grace 15: a stopped machine's runs get to finish what they do (a run that just suspended), within the
        # 20 s its parts get before SIGKILL.
        argv = [self.python, "-m", "prefect_micro_agents.launcher.server", "--socket", str(machine.launcher_socket),
                "--grace", "15"]
        machine.launcher = Component(
            f"{machine.name} launcher", argv, log_path=self.logs / f"{machine.name}-launcher.log",
            env=self.worker_process_env(machine), cwd=machine.workdir, ready=listening, startup_timeout=120,
            progress=self.progress)
        machine.launcher.start()

    def worker(self, name: str) -> WorkerMachine:
        found = next((m for m in self.workers if m.name == name), None)
        if found is None:
            raise KeyError(f"no worker {name!r}; the workers are {[m.name for m in self.workers]}")
        return found

    def stop_worker(self, name: str) -> None:
        """Stop one worker's process group (the flow runs it started included): a machine going away. Its home,
        working directory and state directory stay."""
        machine = self.worker(name)
        for part in machine.parts():
            part.stop()

    def new_machine(self, name: str) -> WorkerMachine:
        """Directories for one more machine (home, working directory, state directory) beside the workers', for a
        worker the caller starts itself with `worker_process_env(machine)`; not started, not stopped by the stack."""
        if any(m.name == name for m in self.workers):
            raise ValueError(f"{name!r} is one of the stack's workers")
        machine = WorkerMachine(name, self.run_dir / "machines" / name)
        machine.make_dirs()
        return machine

    def kill_worker(self, name: str) -> list[int]:
        """SIGKILL one worker, its launcher and the flow runs they started, at once (a machine that dies: no signal handler, no
        state change, no goodbye to the API); see Component.kill. Returns the process groups killed."""
        machine = self.worker(name)
        return kill_all(machine.parts())

    def start_worker(self, name: str) -> None:
        """Start a stopped worker again, on the same home and directories."""
        machine = self.worker(name)
        if machine.component is not None and machine.component.running:
            raise RuntimeError(f"{name} is running")
        self._start_worker(machine)

    def stop(self) -> None:
        """Stop everything, newest first; idempotent."""
        began = time.monotonic()
        parts: list[tuple[str, Callable[[], None]]] = [
            *[(part.name, part.stop) for m in reversed(self.workers) for part in m.parts()],
            *([("services", self.services.stop)] if self.services is not None else []),
            *([("api", self.api.stop)] if self.api is not None else []),
            ("s3 (moto)", self.s3.stop), ("redis", self.redis.stop), ("postgres", self.postgres.stop),
        ]
        running = [name for name, part in self.components().items() if part.running]
        if running:
            self._say(f"stopping {', '.join(reversed(running))} ...")
        for name, stop in parts:
            try:
                stop()
            except Exception as err:  # keep stopping the rest
                self._say(f"stopping {name} failed: {err}")
        if running:
            self.timings["stop"] = time.monotonic() - began
            self._say(f"stopped after {self.timings['stop']:.1f} s")

    def describe(self) -> str:
        """What is where, for people: addresses, the environment a client sets, the logs."""
        lines = [
            f"  Prefect API     {self.api_url}" + (f"   (UI {self.ui_url})" if self.ui else ""),
            f"  Postgres        {HOST}:{self.postgres.port} database {self.postgres.database} role "
            f"{self.postgres.role} (password in {self.postgres.root / 'password'}; data {self.postgres.data_dir})",
            f"  Redis           {HOST}:{self.redis.port} (db 0 messaging, db 1 docket; password in "
            f"{self.redis.root / 'redis.conf'})",
            f"  S3 (moto)       {self.s3.endpoint_url} bucket {self.bucket}; result storage block "
            f"{self.result_storage}",
            f"  Work pool       {self.pool} (process): " + ", ".join(
                f"{m.name} (home {m.root})" for m in self.workers),
            *([f"  Launchers       each worker's flow runs forked by its warm launcher (the pool's command "
               f"`{self.pool_command()}`): " + ", ".join(f"{m.name} {m.launcher_socket}" for m in self.workers)]
              if self.launcher else []),
            f"  Logs            {self.logs}",
            "  Client env      " + " ".join(f"{k}={v}" for k, v in self.client_env().items()
                                            if k.startswith("PREFECT_")),
        ]
        return "\n".join(lines)

    def _say(self, message: str) -> None:
        if self.progress is not None:
            self.progress(message)
