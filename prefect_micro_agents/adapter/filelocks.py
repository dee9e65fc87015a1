"""A lock manager for one machine, on flock(2), implementing Prefect's LockManager protocol.

The embedded default's locks (prefect_micro_agents.adapter.records). Not Prefect's FileSystemLockManager, which on
Prefect 3.9.1 is not safe under contention: it creates the lock file (`touch(exist_ok=False)`) and writes its
holder afterwards, so a process that loses the race and reads the file in between fails with "ValueError: EOF while
parsing" (seen in tests/kit/test_ledger.py's race, 8 processes); and it expires a lock by unlinking the file it
read, which can delete a lock another waiter has just taken. Here the kernel holds the lock: a holder that dies
(SIGKILL included) releases it at once, so no hold timeout is needed and a live holder is never pre-empted
(`hold_timeout` is accepted and ignored). Lock files are never removed, so there is no file to swap under a waiter.
Holds across processes and threads of one machine; on a network filesystem only where flock reaches the server.
"""

from __future__ import annotations

import asyncio
import fcntl
import os
import threading
import time
from pathlib import Path

__all__ = ["FlockLockManager"]

_POLL_S = 0.02


class FlockLockManager:
    """Exclusive per-key locks, one small file per key under `directory`."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory.expanduser().resolve()
        self._held: dict[str, tuple[str, int]] = {}  # key -> (holder, the fd whose open file holds the flock)
        self._guard = threading.Lock()

    def path(self, key: str) -> Path:
        name = "".join(c if c.isalnum() or c in "-_." else "_" for c in key)
        return self.directory / f"{name}.lock"

    def acquire_lock(self, key: str, holder: str, acquire_timeout: float | None = None,
                     hold_timeout: float | None = None) -> bool:
        with self._guard:
            held = self._held.get(key)
        if held is not None and held[0] == holder:
            return True  # re-entrant for the same holder, as Prefect's other lock managers are
        self.directory.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path(key), os.O_RDWR | os.O_CREAT, 0o644)
        deadline = None if acquire_timeout is None else time.monotonic() + acquire_timeout
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if deadline is not None and time.monotonic() >= deadline:
                    os.close(fd)
                    return False
                time.sleep(_POLL_S)
        os.ftruncate(fd, 0)
        os.pwrite(fd, holder.encode(), 0)  # for people looking; the flock is the lock
        with self._guard:
            self._held[key] = (holder, fd)
        return True

    async def aacquire_lock(self, key: str, holder: str, acquire_timeout: float | None = None,
                            hold_timeout: float | None = None) -> bool:
        return await asyncio.to_thread(self.acquire_lock, key, holder, acquire_timeout, hold_timeout)

    def release_lock(self, key: str, holder: str) -> None:
        with self._guard:
            held = self._held.get(key)
            if held is None or held[0] != holder:
                raise ValueError(f"No lock held by {holder} for transaction with key {key}")
            del self._held[key]
        fcntl.flock(held[1], fcntl.LOCK_UN)
        os.close(held[1])

    def is_locked(self, key: str) -> bool:
        with self._guard:
            if key in self._held:
                return True
        try:
            fd = os.open(self.path(key), os.O_RDONLY)
        except FileNotFoundError:
            return False
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return True
        finally:
            os.close(fd)  # closing drops a flock taken just now
        return False

    def is_lock_holder(self, key: str, holder: str) -> bool:
        with self._guard:
            held = self._held.get(key)
        return held is not None and held[0] == holder

    def wait_for_lock(self, key: str, timeout: float | None = None) -> bool:
        deadline = None if timeout is None else time.monotonic() + timeout
        while self.is_locked(key):
            if deadline is not None and time.monotonic() >= deadline:
                return False
            time.sleep(_POLL_S)
        return True

    async def await_for_lock(self, key: str, timeout: float | None = None) -> bool:
        return await asyncio.to_thread(self.wait_for_lock, key, timeout)
