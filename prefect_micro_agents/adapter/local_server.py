"""A real Prefect server in a subprocess, for tests, demos and local runs.

Only the standard library and httpx are used; Prefect runs as ``python -m prefect server start`` and is imported
here only by ``connected()``, so importing this module is cheap.

    with LocalPrefectServer(tmp_path / "prefect-home", auth_string="admin:secret") as server:
        env = {**os.environ, **server.client_env()}
        subprocess.run([sys.executable, "my_flow.py"], env=env, check=True)

Environment variable names were checked against the settings models of prefect 3.9.1
(``prefect/settings/models``); the legacy aliases of 3.x still work, the canonical names are used here:

- server: ``PREFECT_HOME``, ``PREFECT_SERVER_DATABASE_CONNECTION_URL``, ``PREFECT_SERVER_ANALYTICS_ENABLED``,
  ``PREFECT_SERVER_UI_ENABLED``, ``PREFECT_SERVER_API_AUTH_STRING``;
- client: ``PREFECT_API_URL``, ``PREFECT_API_AUTH_STRING``, ``PREFECT_RESULTS_PERSIST_BY_DEFAULT``,
  ``PREFECT_RESULTS_LOCAL_STORAGE_PATH`` (alias ``PREFECT_LOCAL_STORAGE_PATH``), ``PREFECT_RUNNER_POLL_FREQUENCY``.
"""

from __future__ import annotations

import atexit
import logging
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from types import TracebackType

import httpx

__all__ = ["LocalPrefectServer", "ServerStartError", "free_port"]

logger = logging.getLogger(__name__)

HOST = "127.0.0.1"
LOG_FILE_NAME = "server.log"
DB_FILE_NAME = "prefect.db"
STORAGE_DIR_NAME = "storage"
_PORT_RETRIES = 3
_LOG_TAIL_LINES = 40


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago (the OS picks it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((HOST, 0))
        return int(sock.getsockname()[1])


class ServerStartError(RuntimeError):
    """The Prefect server process died or did not answer /api/health in time; the message ends with its log tail."""


def _print_progress(message: str) -> None:
    print(f"[prefect-server] {message}", file=sys.stderr, flush=True)


@contextmanager
def prefect_settings_from(env: Mapping[str, str]) -> Iterator[None]:
    """`env` set in ``os.environ`` and Prefect's settings rebuilt from it while the block runs, both put back after:
    Prefect reads its settings once, at import, so a variable set later is not seen without the rebuild."""
    from prefect.context import refresh_global_settings_context

    saved = {name: os.environ.get(name) for name in env}
    os.environ.update(env)
    refresh_global_settings_context()
    try:
        yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
        refresh_global_settings_context()


class LocalPrefectServer:
    """A Prefect server (API, services and optionally the UI) running as a child process group.

    The SQLite database, the server log (``server.log``) and the shared result storage live under ``home``.
    Inherited ``PREFECT_*`` variables are dropped from the server's environment so a caller's profile or database
    URL never leaks in. Use it as a context manager, or call ``start()`` and ``stop()``; ``stop()`` is idempotent
    and is also registered with ``atexit`` while the server runs.
    """

    def __init__(
        self,
        home: str | os.PathLike[str],
        *,
        port: int | None = None,
        ui: bool = False,
        auth_string: str | None = None,
        startup_timeout: float = 120.0,
        stop_timeout: float = 15.0,
        runner_poll_frequency: int = 1,
        python: str | None = None,
        server_env: Mapping[str, str] | None = None,
        progress: Callable[[str], None] | None = _print_progress,
        progress_interval: float = 5.0,
    ) -> None:
        """Configure (but do not start) the server.

        ``auth_string`` is ``"user:password"`` for HTTP basic auth. ``server_env`` adds or overrides variables in
        the server's environment only (e.g. ``PREFECT_SERVER_SERVICES_PAUSE_EXPIRATIONS_LOOP_SECONDS``).
        ``progress`` receives a line every ``progress_interval`` seconds while waiting (None: log only).
        """
        if auth_string is not None and ":" not in auth_string:
            raise ValueError("auth_string must look like 'user:password'")
        if runner_poll_frequency < 1:
            raise ValueError("runner_poll_frequency must be a whole number of seconds >= 1")
        self.home = Path(home).expanduser().resolve()
        self.ui = ui
        self.auth_string = auth_string
        self.startup_timeout = startup_timeout
        self.stop_timeout = stop_timeout
        self.runner_poll_frequency = runner_poll_frequency
        self.python = python or sys.executable
        self.server_env = dict(server_env or {})
        self.progress = progress
        self.progress_interval = progress_interval
        self._auto_port = port is None
        self._port = free_port() if port is None else port
        self._proc: subprocess.Popen[bytes] | None = None
        self._pid: int | None = None

    # -- addresses and environment -------------------------------------------------------------------------------

    @property
    def port(self) -> int:
        return self._port

    @property
    def api_url(self) -> str:
        """``http://127.0.0.1:<port>/api``: the value for PREFECT_API_URL."""
        return f"http://{HOST}:{self._port}/api"

    @property
    def ui_url(self) -> str:
        """``http://127.0.0.1:<port>``: the UI's address (it is only served when ``ui=True``)."""
        return f"http://{HOST}:{self._port}"

    @property
    def pid(self) -> int | None:
        """PID (and process group id) of the server process last started, None before ``start()``."""
        return self._pid

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    @property
    def log_path(self) -> Path:
        return self.home / LOG_FILE_NAME

    @property
    def storage_path(self) -> Path:
        """Result storage shared by every client process (PREFECT_RESULTS_LOCAL_STORAGE_PATH)."""
        return self.home / STORAGE_DIR_NAME

    @property
    def httpx_auth(self) -> tuple[str, str] | None:
        """``(user, password)`` for ``httpx``'s ``auth=`` argument, None without auth."""
        if self.auth_string is None:
            return None
        user, _, password = self.auth_string.partition(":")
        return (user, password)

    def client_env(self) -> dict[str, str]:
        """Variables a client, runner or ``flow.serve()`` process needs; merge them over ``os.environ``."""
        env = {
            "PREFECT_API_URL": self.api_url,
            "PREFECT_HOME": str(self.home),
            "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
            "PREFECT_RESULTS_PERSIST_BY_DEFAULT": "true",
            "PREFECT_RESULTS_LOCAL_STORAGE_PATH": str(self.storage_path),
            "PREFECT_RUNNER_POLL_FREQUENCY": str(self.runner_poll_frequency),
            "LITELLM_LOCAL_MODEL_COST_MAP": "True",
        }
        if self.auth_string is not None:
            env["PREFECT_API_AUTH_STRING"] = self.auth_string
        return env

    @contextmanager
    def connected(self) -> Iterator[LocalPrefectServer]:
        """Point THIS process's Prefect client at the server while the block runs: ``client_env()`` set in
        ``os.environ`` and Prefect's settings rebuilt from it, both put back afterwards. Prefect reads its settings
        once, when it is imported; a ``PREFECT_API_URL`` set later is not seen, and ``get_client()`` quietly starts
        a temporary server of its own, on the same ``PREFECT_HOME`` database, whose changes the real server's
        trigger service learns about late or never (an automation created that way did not fire)."""
        with prefect_settings_from(self.client_env()):
            yield self

    def _server_process_env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.upper().startswith("PREFECT_")}
        env.update(
            {
                "PREFECT_HOME": str(self.home),
                "PREFECT_SERVER_DATABASE_CONNECTION_URL": f"sqlite+aiosqlite:///{self.home / DB_FILE_NAME}",
                "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
                "PREFECT_SERVER_UI_ENABLED": "true" if self.ui else "false",
                # Concurrency leases on disk under the home, not in memory: a restarted server still knows who
                # holds a slot, so a dead holder's slot is released (by its expiry, or by the run's next attempt)
                # instead of staying taken for good.
                "PREFECT_SERVER_CONCURRENCY_LEASE_STORAGE": "prefect.server.concurrency.lease_storage.filesystem",
                # The trigger service's memory of processed events, plus what an earlier server process stored: after
                # a restart, a run's next state event is not held 15 minutes for a leader it will never see again.
                "PREFECT_SERVER_EVENTS_CAUSAL_ORDERING": "prefect_micro_agents.adapter.ordering",
                "PREFECT_RESULTS_LOCAL_STORAGE_PATH": str(self.storage_path),
                "LITELLM_LOCAL_MODEL_COST_MAP": "True",
                "PYTHONUNBUFFERED": "1",
            }
        )
        if self.auth_string is not None:
            env["PREFECT_SERVER_API_AUTH_STRING"] = self.auth_string
        if self.ui:  # the UI's JavaScript calls 127.0.0.1:4200 unless told where the API is
            env["PREFECT_SERVER_UI_API_URL"] = self.api_url
        env.update(self.server_env)
        return env

    # -- lifecycle ---------------------------------------------------------------------------------------------------

    def __enter__(self) -> LocalPrefectServer:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def start(self) -> LocalPrefectServer:
        """Start the server and block until GET /api/health answers; raise ServerStartError otherwise."""
        if self._proc is not None:
            raise RuntimeError(f"server already started (pid {self._pid})")
        self.home.mkdir(parents=True, exist_ok=True)
        self.storage_path.mkdir(parents=True, exist_ok=True)
        attempts = _PORT_RETRIES if self._auto_port else 1
        for attempt in range(1, attempts + 1):
            try:
                self._start_once()
                return self
            except _PortInUse as err:
                if attempt == attempts:
                    raise ServerStartError(str(err)) from None
                self._port = free_port()
                self._report(f"port was taken, retrying on {self._port}")
        raise AssertionError("unreachable")  # pragma: no cover

    def _start_once(self) -> None:
        cmd = [
            self.python, "-m", "prefect", "server", "start",
            "--host", HOST, "--port", str(self._port), "--analytics-off",
        ]  # fmt: skip
        if not self.ui:
            cmd.append("--no-ui")
        with open(self.log_path, "ab") as log:
            log_offset = log.tell()
            log.write(f"\n=== {time.strftime('%Y-%m-%d %H:%M:%S')} {' '.join(cmd)}\n".encode())
            log.flush()
            self._proc = subprocess.Popen(
                cmd,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=self.home,  # keep a project's .env / prefect.toml out of the server's settings
                env=self._server_process_env(),
                start_new_session=True,  # own session and process group (pgid == pid), so stop() gets all of it
            )
        self._pid = self._proc.pid
        atexit.register(self.stop)
        self._report(f"starting on {self.api_url} (pid {self._pid}, home {self.home}, log {self.log_path})")
        try:
            self._wait_healthy(log_offset)
        except BaseException:  # including KeyboardInterrupt: never leave a half-started server behind
            self.stop()
            raise

    def _wait_healthy(self, log_offset: int) -> None:
        assert self._proc is not None
        started = time.monotonic()
        deadline = started + self.startup_timeout
        next_report = started + self.progress_interval
        health_url = f"{self.api_url}/health"
        with httpx.Client(timeout=2.0, trust_env=False, auth=self.httpx_auth) as http:
            while True:
                returncode = self._proc.poll()
                if returncode is not None:
                    tail = self._log_tail(log_offset)
                    self.stop()
                    if "already in use" in tail:
                        raise _PortInUse(f"port {self._port} is already in use\n{tail}")
                    raise ServerStartError(
                        f"Prefect server exited with code {returncode} before answering {health_url}; "
                        f"last lines of {self.log_path}:\n{tail}"
                    )
                try:
                    if http.get(health_url).status_code == 200:
                        self._report(f"ready on {self.api_url} after {time.monotonic() - started:.1f} s")
                        return
                except httpx.HTTPError:
                    pass
                now = time.monotonic()
                if now >= deadline:
                    tail = self._log_tail(log_offset)
                    self.stop()
                    raise ServerStartError(
                        f"Prefect server did not answer {health_url} within {self.startup_timeout:.0f} s; "
                        f"last lines of {self.log_path}:\n{tail}"
                    )
                if now >= next_report:
                    self._report(f"waiting for {health_url} ({now - started:.0f} s elapsed)")
                    next_report += self.progress_interval
                time.sleep(0.25)

    def stop(self) -> None:
        """Terminate the server's whole process group: SIGTERM, then SIGKILL after ``stop_timeout``. Idempotent."""
        proc, self._proc = self._proc, None
        if proc is None:
            return
        atexit.unregister(self.stop)
        pgid = proc.pid  # start_new_session=True made the server its group's leader
        if proc.poll() is None:
            _signal_group(pgid, signal.SIGTERM)
            try:
                proc.wait(timeout=self.stop_timeout)
            except subprocess.TimeoutExpired:
                logger.warning("Prefect server pid %s ignored SIGTERM for %.0f s; killing it", pgid, self.stop_timeout)
                _signal_group(pgid, signal.SIGKILL)
                proc.wait(timeout=10)
        # Anything the server spawned into its group and left behind.
        _signal_group(pgid, signal.SIGKILL)
        logger.info("Prefect server pid %s stopped", pgid)

    # -- helpers -----------------------------------------------------------------------------------------------------

    def _report(self, message: str) -> None:
        logger.info("%s", message)
        if self.progress is not None:
            self.progress(message)

    def _log_tail(self, offset: int = 0, lines: int = _LOG_TAIL_LINES) -> str:
        try:
            with open(self.log_path, "rb") as log:
                log.seek(offset)
                text = log.read().decode("utf-8", errors="replace")
        except OSError as err:
            return f"(log unreadable: {err})"
        return "\n".join(text.splitlines()[-lines:])

    def __repr__(self) -> str:
        state = "running" if self.running else "stopped"
        return f"LocalPrefectServer({self.api_url!r}, pid={self._pid}, {state}, home={str(self.home)!r})"


class _PortInUse(Exception):
    pass


def _signal_group(pgid: int, sig: signal.Signals) -> None:
    try:
        os.killpg(pgid, sig)
    except (ProcessLookupError, PermissionError):
        pass
