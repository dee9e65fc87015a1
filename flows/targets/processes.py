"""Start, watch and stop service processes by PID, so a later step can stop what a deploy started."""

from __future__ import annotations

import logging
import os
import signal
import socket
import subprocess
import time
from pathlib import Path

from flows.targets.httpget import http_get

__all__ = ["find_free_ports", "is_alive", "log_tail", "process_identity", "start_process", "stop_process",
           "wait_for_health"]

logger = logging.getLogger(__name__)

# Popen objects of the children this interpreter started: kept so they are reaped (no zombies) and never
# garbage-collected while running (which would emit a ResourceWarning).
_CHILDREN: dict[int, subprocess.Popen[bytes]] = {}


def find_free_ports(count: int) -> list[int]:
    """`count` distinct loopback ports that were free a moment ago (bound to port 0 together, then released)."""
    sockets = [socket.socket(socket.AF_INET, socket.SOCK_STREAM) for _ in range(count)]
    try:
        for sock in sockets:
            sock.bind(("127.0.0.1", 0))
        return [sock.getsockname()[1] for sock in sockets]
    finally:
        for sock in sockets:
            sock.close()


def process_identity(pid: int) -> str | None:
    """Kernel start time of `pid` (Linux /proc), recorded with the PID so a reused PID is never signalled."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text(encoding="ascii", errors="replace")
    except OSError:
        return None
    fields = stat.rsplit(")", 1)[-1].split()
    return fields[19] if len(fields) > 19 else None


def _is_zombie(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text(encoding="ascii", errors="replace")
    except OSError:
        return False
    return stat.rsplit(")", 1)[-1].split()[:1] == ["Z"]


def is_alive(pid: int, identity: str | None = None) -> bool:
    """True if `pid` runs (not a zombie) and, when `identity` is given, is still the process we started."""
    child = _CHILDREN.get(pid)
    if child is not None and child.poll() is not None:
        _CHILDREN.pop(pid, None)
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass
    if _is_zombie(pid):
        return False
    return identity is None or process_identity(pid) in (None, identity)


def start_process(
    argv: list[str], cwd: Path, log_path: Path, env: dict[str, str] | None = None
) -> tuple[int, str | None]:
    """Start `argv` in its own session with output appended to `log_path`; return (pid, identity)."""
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with open(log_path, "ab") as log:
        proc = subprocess.Popen(argv, cwd=cwd, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                                env=env, start_new_session=True, close_fds=True)
    _CHILDREN[proc.pid] = proc
    logger.info("started pid %d: %s (cwd %s)", proc.pid, " ".join(argv), cwd)
    return proc.pid, process_identity(proc.pid)


def stop_process(pid: int, identity: str | None = None, timeout: float = 5.0) -> bool:
    """SIGTERM the process group of `pid`, SIGKILL after `timeout`; False if it was not running (or not ours)."""
    if not is_alive(pid, identity):
        _CHILDREN.pop(pid, None)
        return False
    for sig in (signal.SIGTERM, signal.SIGKILL):
        try:
            os.killpg(pid, sig)  # our services lead their own session; a process that does not gets signalled alone
        except (ProcessLookupError, PermissionError):
            try:
                os.kill(pid, sig)
            except ProcessLookupError:
                break
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            child = _CHILDREN.get(pid)
            if child is not None:
                try:
                    child.wait(timeout=max(0.0, deadline - time.monotonic()))
                except subprocess.TimeoutExpired:
                    continue
            if not is_alive(pid):
                _CHILDREN.pop(pid, None)
                logger.info("stopped pid %d", pid)
                return True
            time.sleep(0.02)
        logger.warning("pid %d ignored %s for %.1fs", pid, sig.name, timeout)
    _CHILDREN.pop(pid, None)
    return True


def log_tail(path: Path, limit: int = 2000) -> str:
    """Last `limit` characters of a log file (empty if missing), for error reports."""
    try:
        data = path.read_bytes()
    except OSError:
        return ""
    return data[-limit:].decode("utf-8", errors="replace")


def wait_for_health(url: str, pid: int, timeout: float, interval: float = 0.05) -> tuple[bool, str]:
    """Poll `url` every `interval` s until it answers 200, the process exits, or `timeout` passes; return (ok, why)."""
    deadline = time.monotonic() + timeout
    last_error = "no answer yet"
    while True:
        child = _CHILDREN.get(pid)  # before is_alive, which forgets a child it finds exited
        if not is_alive(pid):
            _CHILDREN.pop(pid, None)
            code = child.returncode if child is not None else None
            return False, f"process {pid} exited (exit code {code}) before {url} answered"
        answer = http_get(url, timeout=min(0.5, max(timeout, 0.1)))
        if answer.status == 200:
            return True, f"{url} answered 200"
        last_error = answer.describe()
        if time.monotonic() >= deadline:
            return False, f"{url} not healthy after {timeout:.1f}s (last error: {last_error})"
        time.sleep(interval)
