"""Find processes from /proc (Linux): who listens on a loopback port, and which processes a target started.

A deploy killed between starting a service and recording its pid leaves a process nobody recorded; a reconcile
finds it here, by its command line, and a deploy proves that the process answering on the port is the one it
recorded (a health check alone would accept any process that answers 200 on that port).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from flows.targets.processes import process_identity

__all__ = ["Found", "describe", "listener_pid", "processes_with"]

_LISTEN = "0A"


@dataclass(frozen=True)
class Found:
    pid: int
    identity: str | None
    cwd: Path | None  # where it was started (resolved: a release directory, not the `current` symlink)
    argv: tuple[str, ...]


def _listening_inodes(port: int) -> set[str]:
    inodes: set[str] = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            if len(fields) > 9 and fields[3] == _LISTEN and int(fields[1].rsplit(":", 1)[1], 16) == port:
                inodes.add(fields[9])
    return inodes


def _pids() -> list[int]:
    return [int(name) for name in os.listdir("/proc") if name.isdigit()]


def listener_pid(port: int) -> int | None:
    """The pid of the process listening on TCP `port`, or None when nothing (visible to us) listens there."""
    inodes = _listening_inodes(port)
    if not inodes:
        return None
    sockets = {f"socket:[{inode}]" for inode in inodes}
    for pid in _pids():
        try:
            fds = os.listdir(f"/proc/{pid}/fd")
        except OSError:
            continue
        for fd in fds:
            try:
                if os.readlink(f"/proc/{pid}/fd/{fd}") in sockets:
                    return pid
            except OSError:
                continue
    return None


def _argv(pid: int) -> tuple[str, ...]:
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return ()
    return tuple(part.decode(errors="replace") for part in raw.split(b"\0") if part)


def processes_with(*needles: str) -> list[Found]:
    """Live processes whose command line contains every one of `needles` (as whole arguments or substrings)."""
    found = []
    for pid in _pids():
        argv = _argv(pid)
        line = "\0".join(argv)
        if not argv or not all(n in line for n in needles):
            continue
        try:
            cwd: Path | None = Path(os.readlink(f"/proc/{pid}/cwd"))
        except OSError:
            cwd = None
        found.append(Found(pid, process_identity(pid), cwd, argv))
    return found


def describe(pid: int) -> str:
    """`pid (command line)` for error messages."""
    return f"pid {pid} ({' '.join(_argv(pid))[:200] or 'unknown command'})"
