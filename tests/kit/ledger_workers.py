"""What the ledger tests' worker processes do: build a ledger on the storage and locks they are told about, as a
worker on another machine would from its own configuration, and race on keys. Run in processes of their own."""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from multiprocessing.queues import Queue
from multiprocessing.synchronize import Event
from pathlib import Path
from typing import Any


@dataclass(frozen=True)
class Where:
    """Storage and locks, as plain data a process can be handed: `local` (LocalFileSystem + the kit's flock locks,
    the embedded default) or `remote` (Prefect's fsspec RemoteFileSystem + prefect-redis's RedisLockManager on `redis_port`). The remote
    storage is fsspec's `dir://` over this machine's disk: a RemoteFileSystem block, read and written through fsspec
    as S3 would be (Prefect refuses `file://` for RemoteFileSystem), shared by processes as a bucket would be."""

    kind: str
    root: str
    redis_port: int = 0
    hold_timeout_s: float = 30.0
    acquire_timeout_s: float = 60.0

    def remote_storage(self) -> Any:
        from prefect.filesystems import RemoteFileSystem

        return RemoteFileSystem(basepath="dir://records", settings={"path": self.root, "target_protocol": "file"})

    def ledger(self) -> Any:
        from prefect.filesystems import LocalFileSystem

        from prefect_micro_agents.adapter.filelocks import FlockLockManager
        from prefect_micro_agents.adapter.ledger import ExecutionLedger

        timeouts = {"hold_timeout_s": self.hold_timeout_s, "acquire_timeout_s": self.acquire_timeout_s}
        if self.kind == "local":
            storage = LocalFileSystem(basepath=self.root)
            return ExecutionLedger(storage, FlockLockManager(Path(self.root) / "microagents" / "locks"), **timeouts)
        from prefect_redis import RedisLockManager

        return ExecutionLedger(self.remote_storage(),
                               RedisLockManager(host="127.0.0.1", port=self.redis_port), **timeouts)


def race(where: Where, keys: list[str], go: Event, out: Queue[tuple[int, list[str]]]) -> None:
    """Wait for the start signal, then `begin` every key; report (pid, statuses in key order)."""
    ledger = where.ledger()
    ledger.status("warm-up")  # storage and lock clients ready before the start signal, so the race is tight
    go.wait()
    out.put((os.getpid(), [ledger.begin(key)[0] for key in keys]))


def begin_then_hang(where: Where, key: str, out: Queue[tuple[int, list[str]]]) -> None:
    """Begin `key`, report, then "run the tool" until killed: a worker that dies between started and finished."""
    status = where.ledger().begin(key)[0]
    out.put((os.getpid(), [status]))
    time.sleep(3600)


def begin_at_failpoint(where: Where, key: str, failpoints: str, out: Queue[tuple[int, list[str]]]) -> None:
    """`begin` with the `ledger.locked` failpoint armed: it blocks holding the key's lock until killed."""
    from prefect_micro_agents.failpoints import FAILPOINTS_ENV

    os.environ[FAILPOINTS_ENV] = failpoints
    out.put((os.getpid(), [where.ledger().begin(key)[0]]))  # never reached while the point is armed


def transaction_then_hang(redis_port: int, root: str, key: str, out: Queue[tuple[int, list[str]]]) -> None:
    """Enter Prefect's own SERIALIZABLE transaction on a Redis-locked result store and hang inside it."""
    from prefect.filesystems import LocalFileSystem
    from prefect.results import ResultStore
    from prefect.transactions import IsolationLevel, transaction
    from prefect_redis import RedisLockManager

    store = ResultStore(result_storage=LocalFileSystem(basepath=root),
                        lock_manager=RedisLockManager(host="127.0.0.1", port=redis_port))
    with transaction(key=key, store=store, isolation_level=IsolationLevel.SERIALIZABLE):
        out.put((os.getpid(), ["in transaction"]))
        time.sleep(3600)
