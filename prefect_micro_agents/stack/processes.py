"""One long-running child process of a stack: started in its own session (process group), its output in a log file,
ready when a probe says so, stopped with its whole group. Only the standard library.

A component that dies or does not get ready raises `ComponentStartError`, whose message names the component and ends
with the last lines of its log.
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

__all__ = ["Account", "Component", "ComponentStartError", "group_pids", "kill_all", "live_stats", "log_tail",
           "rss_mib"]

logger = logging.getLogger(__name__)

LOG_TAIL_LINES = 30


class ComponentStartError(RuntimeError):
    """A component of the stack did not start; the message names it and ends with its log's last lines."""

    def __init__(self, component: str, message: str) -> None:
        super().__init__(f"{component}: {message}")
        self.component = component


@dataclass(frozen=True)
class Account:
    """The unprivileged system account a component runs as (Postgres refuses to run as root)."""

    name: str
    uid: int
    gid: int
    home: str


def log_tail(path: Path, offset: int = 0, lines: int = LOG_TAIL_LINES) -> str:
    try:
        with open(path, "rb") as log:
            log.seek(offset)
            text = log.read().decode("utf-8", errors="replace")
    except OSError as err:
        return f"(log unreadable: {err})"
    return "\n".join(text.splitlines()[-lines:])


def live_stats() -> list[tuple[int, list[str]]]:
    """(pid, the fields of /proc/<pid>/stat after the command name) for every live process (Linux; empty elsewhere).
    Fields: 0 state, 1 parent pid, 2 process group, 3 session."""
    found = []
    for entry in Path("/proc").glob("[0-9]*"):
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        if fields[0] != "Z":
            found.append((int(entry.name), fields))
    return found


def group_pids(pgid: int) -> list[int]:
    """Processes whose process group is `pgid` (Linux /proc; empty elsewhere)."""
    return [pid for pid, fields in live_stats() if int(fields[2]) == pgid]


def rss_mib(pids: Sequence[int]) -> float:
    """Resident memory of these processes together, in MiB (VmRSS from /proc; a vanished process counts 0)."""
    total_kib = 0
    for pid in pids:
        try:
            for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total_kib += int(line.split()[1])
        except (OSError, ValueError):
            continue
    return total_kib / 1024


class Component:
    """A child process in its own process group, logging to `log_path`.

    `ready()` is polled until it returns True (then `start()` returns), the process exits, or `startup_timeout`
    passes (both raise `ComponentStartError` with the log's tail). `stop()` sends `stop_signal` to the group, waits
    `stop_timeout`, then SIGKILLs whatever is left in the group. Idempotent.
    """

    def __init__(
        self,
        name: str,
        argv: Sequence[str],
        *,
        log_path: Path,
        env: Mapping[str, str],
        cwd: Path,
        ready: Callable[[], bool] | None = None,
        startup_timeout: float = 120.0,
        stop_signal: signal.Signals = signal.SIGTERM,
        stop_timeout: float = 20.0,
        account: Account | None = None,
        progress: Callable[[str], None] | None = None,
    ) -> None:
        self.name = name
        self.argv = list(argv)
        self.log_path = log_path
        self.env = dict(env)
        self.cwd = cwd
        self.ready = ready
        self.startup_timeout = startup_timeout
        self.stop_signal = stop_signal
        self.stop_timeout = stop_timeout
        self.account = account
        self.progress = progress
        self.proc: subprocess.Popen[bytes] | None = None
        self.started_after: float | None = None  # seconds from spawn to ready

    @property
    def pid(self) -> int | None:
        return None if self.proc is None else self.proc.pid

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def pids(self) -> list[int]:
        """Every live process of this component's group (the component and what it started)."""
        return [] if self.proc is None else group_pids(self.proc.pid)

    def rss_mib(self) -> float:
        return rss_mib(self.pids())

    def start(self) -> Component:
        if self.proc is not None:
            raise RuntimeError(f"{self.name} already started (pid {self.proc.pid})")
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        switch = self.account if self.account is not None and self.account.uid != os.geteuid() else None
        with open(self.log_path, "ab") as log:
            offset = log.tell()
            log.write(f"\n=== {time.strftime('%Y-%m-%d %H:%M:%S')} {' '.join(self.argv)}\n".encode())
            log.flush()
            try:
                self.proc = subprocess.Popen(
                    self.argv,
                    stdin=subprocess.DEVNULL,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    cwd=self.cwd,
                    env=self.env,
                    start_new_session=True,  # pgid == pid: stop() reaches everything it starts
                    user=switch.uid if switch else None,
                    group=switch.gid if switch else None,
                    extra_groups=[] if switch else None,
                )
            except OSError as err:
                raise ComponentStartError(self.name, f"could not run {self.argv[0]}: {err}") from None
        started = time.monotonic()
        try:
            self._wait_ready(offset, started)
        except BaseException:  # KeyboardInterrupt included: never leave a half-started process behind
            self.stop()
            raise
        self.started_after = time.monotonic() - started
        return self

    def _wait_ready(self, offset: int, started: float) -> None:
        assert self.proc is not None
        deadline = started + self.startup_timeout
        next_report = started + 10
        while True:
            code = self.proc.poll()
            if code is not None:
                raise ComponentStartError(
                    self.name, f"exited with code {code} while starting; last lines of {self.log_path}:\n"
                               f"{log_tail(self.log_path, offset)}")
            try:
                if self.ready is None or self.ready():
                    return
            except Exception as err:  # a probe that fails is "not yet"; its last error is in the timeout message
                logger.debug("%s not ready yet: %s", self.name, err)
            now = time.monotonic()
            if now >= deadline:
                raise ComponentStartError(
                    self.name, f"not ready after {self.startup_timeout:.0f} s; last lines of {self.log_path}:\n"
                               f"{log_tail(self.log_path, offset)}")
            if self.progress is not None and now >= next_report:
                self.progress(f"still waiting for {self.name} ({now - started:.0f} s)")
                next_report += 10
            time.sleep(0.2)

    def stop(self) -> None:
        proc, self.proc = self.proc, None
        if proc is None:
            return
        pgid = proc.pid
        if proc.poll() is None:
            _signal_group(pgid, self.stop_signal)
            try:
                proc.wait(timeout=self.stop_timeout)
            except subprocess.TimeoutExpired:
                logger.warning("%s (pid %s) ignored %s for %.0f s; killing it", self.name, pgid,
                               self.stop_signal.name, self.stop_timeout)
                _signal_group(pgid, signal.SIGKILL)
                proc.wait(timeout=10)
        # Anything it started into its group and left behind (a Prefect flow run, a Postgres backend).
        deadline = time.monotonic() + self.stop_timeout
        while group_pids(pgid) and time.monotonic() < deadline:
            _signal_group(pgid, signal.SIGKILL)
            time.sleep(0.05)

    def kill(self) -> list[int]:
        """SIGKILL, no warning: the process group, and the process groups its direct children lead (what Prefect's
        process worker starts a flow run in: a session of its own). A machine that dies, as far as this process is
        concerned; processes those children started into sessions of their own (services a deploy started, on other
        machines in reality) are left. Returns the groups killed."""
        return kill_all([self])

    def kill_targets(self) -> list[int]:
        """The process groups `kill` takes: its own, and those its direct children lead (empty when not running)."""
        if self.proc is None:
            return []
        pid = self.proc.pid
        return [pid] + [child for child, fields in live_stats() if int(fields[1]) == pid and int(fields[2]) == child]

    def __repr__(self) -> str:
        return f"Component({self.name!r}, pid={self.pid}, {'running' if self.running else 'stopped'})"


def kill_all(components: Sequence[Component]) -> list[int]:
    """Component.kill for several at once: every group is found first, then all are SIGKILLed together, so none of
    them sees another die first (a launcher whose client died would kill its child itself, a worker whose flow run
    died would report it). Returns the groups killed."""
    groups = [g for part in components for g in part.kill_targets()]
    procs = [part.proc for part in components if part.proc is not None]
    for part in components:
        part.proc = None
    for pgid in groups:
        _signal_group(pgid, signal.SIGKILL)
    for proc in procs:
        proc.wait(timeout=10)
    deadline = time.monotonic() + 10
    while any(group_pids(g) for g in groups) and time.monotonic() < deadline:
        for pgid in groups:
            _signal_group(pgid, signal.SIGKILL)
        time.sleep(0.05)
    return groups


def _signal_group(pgid: int, sig: signal.Signals) -> None:
    try:
        os.killpg(pgid, sig)
    except (ProcessLookupError, PermissionError):
        pass
