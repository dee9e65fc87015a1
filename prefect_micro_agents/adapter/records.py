"""Where the kit's durable records live: Prefect's result storage block, and the lock manager that makes a
create-if-absent on it atomic. Both are configured the Prefect way; docs/durable-state.md says why.

- Storage: the storage of the current run's result store (a flow's `result_storage=`), else Prefect's default
  result storage (`PREFECT_RESULTS_DEFAULT_STORAGE_BLOCK`, the server's default storage block, else a
  LocalFileSystem at `PREFECT_RESULTS_LOCAL_STORAGE_PATH`, i.e. $PREFECT_HOME/storage). Task results go there too.
- Lock manager: `AGENT_LOCK_MANAGER` (Prefect has no setting for one; its lock managers are passed in code):
  unset or `file`: flock(2) locks on files beside the records (one machine; prefect_micro_agents.adapter.filelocks
  says why not Prefect's FileSystemLockManager);
  `redis`: prefect-redis's RedisLockManager on the Redis that Prefect's messaging uses (`PREFECT_REDIS_MESSAGING_URL`
  or `PREFECT_REDIS_MESSAGING_HOST`/`_PORT`/`_DB`/`_USERNAME`/`_PASSWORD`/`_SSL`);
  `redis-database/<block name>`: a RedisLockManager on prefect-redis's RedisDatabase block of that name.

A lock that holds on fewer machines than the storage reaches is refused (`check_reach`): shared storage with a
file-system lock would let two workers both find a key absent and both run the call.
"""

from __future__ import annotations

import os
import threading
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

from prefect_micro_agents.errors import ConfigurationError

if TYPE_CHECKING:
    from prefect.filesystems import WritableFileSystem
    from prefect.locking.protocol import LockManager

__all__ = ["LOCK_MANAGER_ENV", "RECORDS_PREFIX", "check_reach", "lock_manager", "records_storage"]

LOCK_MANAGER_ENV = "AGENT_LOCK_MANAGER"
RECORDS_PREFIX = "microagents"  # the kit's records live under this folder of the result storage

_managers: dict[str, LockManager] = {}  # one per configuration and process: Redis clients and lock caches are reused
_managers_lock = threading.Lock()


def records_storage() -> WritableFileSystem:
    """The result storage of the current run (or Prefect's default): what every worker of a deployment reads."""
    from prefect.exceptions import MissingContextError
    from prefect.results import get_default_result_storage

    try:
        from prefect.context import get_run_context

        storage = get_run_context().result_store.result_storage
    except MissingContextError:
        storage = None
    if storage is None:
        resolved: WritableFileSystem = cast(Any, get_default_result_storage)(_sync=True)  # as ResultStore calls it
        return resolved
    return storage


def lock_manager(storage: WritableFileSystem, setting: str | None = None) -> LockManager:
    """The lock manager `AGENT_LOCK_MANAGER` (or `setting`) names, checked against `storage` (`check_reach`)."""
    setting = (os.environ.get(LOCK_MANAGER_ENV, "") if setting is None else setting).strip() or "file"
    redis_env = sorted((k, v) for k, v in os.environ.items() if k.startswith("PREFECT_REDIS_MESSAGING_"))
    cache_key = f"{setting}|{_local_root(storage) or ''}|{redis_env}"
    with _managers_lock:
        manager = _managers.get(cache_key)
        if manager is None:
            manager = _managers[cache_key] = _build(setting, storage)
    check_reach(storage, manager)
    return manager


def _build(setting: str, storage: WritableFileSystem) -> LockManager:
    if setting == "file":
        from prefect_micro_agents.adapter.filelocks import FlockLockManager

        root = _local_root(storage)
        if root is None:
            raise ConfigurationError(
                f"{LOCK_MANAGER_ENV} is unset (file locks) but the result storage is {_describe(storage)}, which "
                "other machines reach: a file lock holds on one machine only. Set AGENT_LOCK_MANAGER=redis (the "
                "Redis of Prefect's messaging, PREFECT_REDIS_MESSAGING_*) or redis-database/<block name>.")
        return FlockLockManager(root / RECORDS_PREFIX / "locks")
    if setting == "redis" or setting.startswith("redis-database/"):
        try:
            from prefect_redis import RedisLockManager
        except ImportError as exc:
            raise ConfigurationError(
                f"{LOCK_MANAGER_ENV}={setting} needs prefect-redis: pip install prefect-redis") from exc
        if setting == "redis":
            from prefect_redis.client import RedisMessagingSettings

            redis = RedisMessagingSettings()
            if redis.url:
                manager: LockManager = RedisLockManager(connection_url=redis.url)
            else:
                manager = RedisLockManager(host=redis.host, port=redis.port, db=redis.db, username=redis.username,
                                           password=redis.password, ssl=redis.ssl)
            return manager
        from prefect_redis import RedisDatabase

        block = RedisDatabase.load(setting.removeprefix("redis-database/"), _sync=True)
        manager = RedisLockManager(**block.as_connection_params())
        return manager
    if setting == "memory":
        raise ConfigurationError(
            f"{LOCK_MANAGER_ENV}=memory: Prefect's MemoryLockManager holds within one process, and every flow run "
            "is a process of its own. Use file (one machine) or redis (many).")
    raise ConfigurationError(
        f"{LOCK_MANAGER_ENV}={setting!r} is not a lock manager: use file, redis or redis-database/<block name>")


def check_reach(storage: WritableFileSystem, manager: LockManager) -> None:
    """Refuse a lock that holds on fewer machines than the storage reaches.

    Memory locks hold in one process (every flow run is its own process); file locks on one machine, so only with a
    LocalFileSystem storage (a LocalFileSystem on a network mount is the user's call: docs/durable-state.md).
    """
    from prefect.locking.filesystem import FileSystemLockManager
    from prefect.locking.memory import MemoryLockManager

    from prefect_micro_agents.adapter.filelocks import FlockLockManager

    if isinstance(manager, MemoryLockManager):
        raise ConfigurationError(
            "MemoryLockManager holds within one process; the execution ledger is shared by every flow run "
            "process. Use FileSystemLockManager (one machine) or prefect-redis's RedisLockManager.")
    if isinstance(manager, FileSystemLockManager | FlockLockManager) and _local_root(storage) is None:
        raise ConfigurationError(
            f"The result storage is {_describe(storage)}, which other machines reach, but the lock manager is a "
            f"{type(manager).__name__}, which holds on one machine only. Set "
            f"{LOCK_MANAGER_ENV}=redis or redis-database/<block name> (prefect-redis).")


def _local_root(storage: WritableFileSystem) -> Path | None:
    from prefect.filesystems import LocalFileSystem

    if isinstance(storage, LocalFileSystem):
        return Path(storage.basepath or ".").expanduser().resolve()
    return None


def _describe(storage: WritableFileSystem) -> str:
    basepath = getattr(storage, "basepath", None) or getattr(storage, "bucket_name", None)
    return f"{type(storage).__name__}({basepath})" if basepath else type(storage).__name__
