"""The environment each machine of a scaled-out Prefect sets, as functions of where Postgres, Redis, the API and the
result storage are. The same names go on real machines (README "Scale-out stack").

Names were checked against the settings models of the installed packages (prefect 3.9.1, prefect-redis 0.3.0) and
match Prefect's "How to scale self-hosted Prefect" page; the canonical name is used where the page gives an alias:

- prefect/settings/models/server/database.py: PREFECT_SERVER_DATABASE_CONNECTION_URL (alias
  PREFECT_API_DATABASE_CONNECTION_URL), PREFECT_SERVER_DATABASE_MIGRATE_ON_START (alias
  PREFECT_API_DATABASE_MIGRATE_ON_START);
- prefect/settings/models/server/events.py: PREFECT_SERVER_EVENTS_MESSAGING_BROKER and
  PREFECT_SERVER_EVENTS_MESSAGING_CACHE (aliases PREFECT_MESSAGING_BROKER, PREFECT_MESSAGING_CACHE),
  PREFECT_SERVER_EVENTS_CAUSAL_ORDERING;
- prefect/settings/models/server/concurrency.py: PREFECT_SERVER_CONCURRENCY_LEASE_STORAGE;
- prefect/settings/models/server/docket.py: PREFECT_SERVER_DOCKET_URL (default memory://, one server only);
- prefect/settings/models/server/worker_channel.py: PREFECT_SERVER_WORKER_CHANNEL_CLEANUP_QUEUE_STORAGE (default in
  memory, "use an external storage module for high availability");
- prefect_redis/client.py (RedisMessagingSettings): PREFECT_REDIS_MESSAGING_HOST, _PORT, _DB, _USERNAME, _PASSWORD
  (or _URL); prefect_redis/cleanup_queue.py: PREFECT_REDIS_WORKER_CLEANUP_QUEUE_URL;
- prefect/settings/models/results.py: PREFECT_RESULTS_DEFAULT_STORAGE_BLOCK (`<block-type-slug>/<name>`; alias
  PREFECT_DEFAULT_RESULT_STORAGE_BLOCK), PREFECT_RESULTS_PERSIST_BY_DEFAULT;
- prefect/settings/models/worker.py: PREFECT_WORKER_QUERY_SECONDS;
- prefect/settings/models/server/ui.py, root.py, api.py: PREFECT_SERVER_UI_ENABLED, PREFECT_SERVER_UI_API_URL,
  PREFECT_SERVER_ANALYTICS_ENABLED, PREFECT_HOME, PREFECT_API_URL.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["RedisAddress", "client_settings", "server_settings"]


@dataclass(frozen=True)
class RedisAddress:
    host: str
    port: int
    password: str
    username: str = "default"

    def url(self, db: int) -> str:
        return f"redis://{self.username}:{self.password}@{self.host}:{self.port}/{db}"


MESSAGING_DB = 0  # Prefect's event streams, cache, causal ordering, leases, worker cleanup queue
DOCKET_DB = 1  # the background services' task queue (Prefect's docs suggest a database of its own)


def server_settings(database_url: str, redis: RedisAddress) -> dict[str, str]:
    """What every API server and every `prefect server services start` process sets (plus its own PREFECT_HOME)."""
    return {
        "PREFECT_SERVER_DATABASE_CONNECTION_URL": database_url,
        "PREFECT_SERVER_DATABASE_MIGRATE_ON_START": "false",  # `prefect server database upgrade -y` runs once, first
        "PREFECT_SERVER_EVENTS_MESSAGING_BROKER": "prefect_redis.messaging",
        "PREFECT_SERVER_EVENTS_MESSAGING_CACHE": "prefect_redis.messaging",
        "PREFECT_SERVER_EVENTS_CAUSAL_ORDERING": "prefect_redis.ordering",
        "PREFECT_SERVER_CONCURRENCY_LEASE_STORAGE": "prefect_redis.lease_storage",
        "PREFECT_SERVER_WORKER_CHANNEL_CLEANUP_QUEUE_STORAGE": "prefect_redis.cleanup_queue",
        "PREFECT_REDIS_MESSAGING_HOST": redis.host,
        "PREFECT_REDIS_MESSAGING_PORT": str(redis.port),
        "PREFECT_REDIS_MESSAGING_DB": str(MESSAGING_DB),
        "PREFECT_REDIS_MESSAGING_USERNAME": redis.username,
        "PREFECT_REDIS_MESSAGING_PASSWORD": redis.password,
        "PREFECT_REDIS_WORKER_CLEANUP_QUEUE_URL": redis.url(MESSAGING_DB),
        "PREFECT_SERVER_DOCKET_URL": redis.url(DOCKET_DB),
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
    }


def client_settings(api_url: str, result_storage_block: str, redis: RedisAddress) -> dict[str, str]:
    """What every worker (and every process that submits or reads runs) sets (plus its own PREFECT_HOME). The
    execution ledger's lock is prefect-redis's lock manager on the messaging Redis (`AGENT_LOCK_MANAGER=redis`,
    prefect_micro_agents.adapter.records): the result storage is shared, so a file lock would be refused."""
    return {
        "PREFECT_API_URL": api_url,
        "PREFECT_RESULTS_DEFAULT_STORAGE_BLOCK": result_storage_block,
        "PREFECT_RESULTS_PERSIST_BY_DEFAULT": "true",
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "LITELLM_LOCAL_MODEL_COST_MAP": "True",
        "AGENT_LOCK_MANAGER": "redis",
        "PREFECT_REDIS_MESSAGING_HOST": redis.host,
        "PREFECT_REDIS_MESSAGING_PORT": str(redis.port),
        "PREFECT_REDIS_MESSAGING_DB": str(MESSAGING_DB),
        "PREFECT_REDIS_MESSAGING_USERNAME": redis.username,
        "PREFECT_REDIS_MESSAGING_PASSWORD": redis.password,
    }
