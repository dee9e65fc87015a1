"""The execution ledger: an approved call runs once, whichever worker runs it and whichever dies.

Per idempotency key, two write-once records in Prefect's result storage (prefect_micro_agents.adapter.records):
    microagents/executions/<key name>/started    `begin`: create-if-absent, under the key's lock
    microagents/executions/<key name>/finished   `finish`: the (redacted) result, after the tool returned
A key's status is `finished` when its finished record reads back, else `started` when its started record exists,
else `new`. `begin` takes the key's lock from the configured lock manager (file locks on one machine, Redis across
machines), reads the status and, only if it is `new`, writes `started` before it lets go: of any number of workers
racing on a key exactly one gets `new` and runs the tool; the others get `started` (reconcile: ask the tool whether
the effect exists) or `finished` (the recorded result). A worker killed after `started` leaves it for the next one.

Why the lock is held only around the check-and-write, with a hold timeout, and not by Prefect's SERIALIZABLE
transactions: docs/durable-state.md.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import socket
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from prefect_micro_agents.adapter.records import RECORDS_PREFIX, check_reach, lock_manager, records_storage
from prefect_micro_agents.errors import AgentError
from prefect_micro_agents.failpoints import failpoint

if TYPE_CHECKING:
    from prefect.filesystems import WritableFileSystem
    from prefect.locking.protocol import LockManager

__all__ = ["ExecutionLedger", "LedgerBusyError", "Status"]

log = logging.getLogger(__name__)

Status = Literal["new", "started", "finished"]


class LedgerBusyError(AgentError):
    """The key's lock was not free within the acquire timeout: nothing was recorded and nothing may run."""


class ExecutionLedger:
    """`status`, `begin` (create-if-absent of `started`) and `finish`, on `storage` under `locks`.

    Both default to the configuration (records.py): the run's result storage and AGENT_LOCK_MANAGER, resolved on
    first use. `hold_timeout_s` bounds how long a holder killed inside `begin` keeps the key locked; the critical
    section is one or two reads and one write, so it must stay well above a slow storage round trip.
    """

    def __init__(self, storage: WritableFileSystem | None = None, locks: LockManager | None = None, *,
                 acquire_timeout_s: float = 60.0, hold_timeout_s: float = 30.0) -> None:
        self._storage = storage
        self._locks = locks
        self.acquire_timeout_s = acquire_timeout_s
        self.hold_timeout_s = hold_timeout_s

    @property
    def storage(self) -> WritableFileSystem:
        if self._storage is None:
            self._storage = records_storage()
        return self._storage

    @property
    def locks(self) -> LockManager:
        if self._locks is None:
            self._locks = lock_manager(self.storage)
        else:
            check_reach(self.storage, self._locks)
        return self._locks

    @staticmethod
    def name(key: str) -> str:
        """The key as a storage and lock name: readable, and distinct for distinct keys."""
        readable = "".join(c if c.isalnum() or c in "-_" else "_" for c in key)[:96]
        return f"{readable}-{hashlib.sha256(key.encode()).hexdigest()[:12]}"

    def paths(self, key: str) -> tuple[str, str]:
        """The storage paths of the key's `started` and `finished` records."""
        folder = f"{RECORDS_PREFIX}/executions/{self.name(key)}"
        return f"{folder}/started", f"{folder}/finished"

    def lock_key(self, key: str) -> str:
        """The name `begin` locks for the key (flat: a lock manager's names are not folders)."""
        return f"{RECORDS_PREFIX}-exec-{self.name(key)}"

    def status(self, key: str) -> tuple[Status, Any]:
        """What the records say, read without the lock (`begin` decides under it)."""
        started, finished = self.paths(key)
        done = self._read(finished)
        if done is not None:
            try:
                return "finished", json.loads(done)["result"]
            except (ValueError, KeyError):  # a torn write: the tool ran, its result is lost; the tool reconciles
                log.warning("execution %s: unreadable finished record; treating it as started", key)
                return "started", None
        if self._read(started) is not None:
            return "started", None
        return "new", None

    def begin(self, key: str) -> tuple[Status, Any]:
        """Record `started` unless the key has a record; return the status found before. `new`: this caller
        started it and runs the tool; `started`: an earlier attempt began it (reconcile); `finished`: its result."""
        locks, lock_key = self.locks, self.lock_key(key)
        holder = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex}"
        if not locks.acquire_lock(lock_key, holder, acquire_timeout=self.acquire_timeout_s,
                                  hold_timeout=self.hold_timeout_s):
            raise LedgerBusyError(f"execution {key}: its lock was not free within {self.acquire_timeout_s} s")
        try:
            failpoint("ledger.locked")  # crash tests: a worker killed holding the lock
            found = self.status(key)
            if found[0] == "new":
                record = {"status": "started", "key": key, "by": holder, "at": datetime.now(UTC).isoformat()}
                self._write(self.paths(key)[0], record)
            return found
        finally:
            try:
                locks.release_lock(lock_key, holder)
            except Exception:  # noqa: BLE001 - the record is written; a lost lease is worth a loud log, not a failure
                log.error("execution %s: the lock expired before it was released (hold timeout %s s): another "
                          "worker may have begun the same key", key, self.hold_timeout_s, exc_info=True)

    def finish(self, key: str, result: Any) -> None:
        """Record the result. Written once, by the worker that ran (or reconciled) the call; no lock needed: a
        reader that catches it half-written sees `started` and reconciles, the safe side."""
        self._write(self.paths(key)[1], {"status": "finished", "key": key, "result": result})

    def _read(self, path: str) -> bytes | None:
        from prefect._internal.compatibility.blocks import call_explicitly_sync_block_method

        try:
            content: bytes = call_explicitly_sync_block_method(self.storage, "read_path", (path,), {})
        except Exception as exc:
            if _is_absent(exc):
                return None
            raise  # a storage error is not "never started": fail the task rather than run the call blindly
        return content

    def _write(self, path: str, record: dict[str, Any]) -> None:
        from prefect._internal.compatibility.blocks import call_explicitly_sync_block_method
        from prefect.filesystems import LocalFileSystem

        call_explicitly_sync_block_method(self.storage, "write_path", (path,), {"content": json.dumps(record).encode()})
        if isinstance(self.storage, LocalFileSystem):  # LocalFileSystem does not fsync; the ledger must survive a
            _fsync(self.storage._resolve_path(path))  # machine crash (remote stores are durable on acknowledgement)


def _is_absent(exc: Exception) -> bool:
    """Whether a storage block's read error means "no such record" (per block: there is no exists() on blocks)."""
    if isinstance(exc, FileNotFoundError):
        return True  # RemoteFileSystem (fsspec) and most others
    if isinstance(exc, ValueError) and "does not exist" in str(exc):
        return True  # LocalFileSystem: ValueError("Path ... does not exist.")
    error = getattr(exc, "response", None)
    code = error.get("Error", {}).get("Code") if isinstance(error, dict) else None
    return code in ("404", "NoSuchKey")  # prefect-aws S3Bucket (botocore ClientError)


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
    fd = os.open(path.parent, os.O_RDONLY)  # the directory entry too: a new record must not vanish
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
