"""The environment the scale-out stack gives each machine (prefect_micro_agents/stack/settings.py) is read by the
installed Prefect and prefect-redis as meant: every variable lands in the setting it is named for. A misspelt name
would be silently ignored by Prefect (the server would fall back to in-memory messaging), so this checks each one by
building the settings models from it. No server, no Redis."""

from __future__ import annotations

import pytest

from prefect_micro_agents.stack.settings import RedisAddress, client_settings, server_settings

REDIS = RedisAddress("127.0.0.1", 6390, "s3cret")
DB_URL = "postgresql+asyncpg://prefect:pw@127.0.0.1:5439/prefect"


def test_every_server_variable_is_a_prefect_or_prefect_redis_setting(monkeypatch: pytest.MonkeyPatch) -> None:
    from prefect.settings import Settings
    from prefect_redis.cleanup_queue import RedisWorkerCleanupQueueSettings
    from prefect_redis.client import RedisMessagingSettings

    env = server_settings(DB_URL, REDIS)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    server = Settings().server
    assert server.database.connection_url is not None
    assert server.database.connection_url.get_secret_value() == DB_URL
    assert server.database.migrate_on_start is False
    assert server.events.messaging_broker == "prefect_redis.messaging"
    assert server.events.messaging_cache == "prefect_redis.messaging"
    assert server.events.causal_ordering == "prefect_redis.ordering"
    assert server.concurrency.lease_storage == "prefect_redis.lease_storage"
    assert server.worker_channel.cleanup_queue_storage == "prefect_redis.cleanup_queue"
    assert server.docket.url == "redis://default:s3cret@127.0.0.1:6390/1"
    assert server.analytics_enabled is False
    redis = RedisMessagingSettings()
    assert (redis.host, redis.port, redis.db, redis.username, redis.password) == (
        "127.0.0.1", 6390, 0, "default", "s3cret")
    assert RedisWorkerCleanupQueueSettings().url == "redis://default:s3cret@127.0.0.1:6390/0"
    for module in ("prefect_redis.messaging", "prefect_redis.ordering", "prefect_redis.lease_storage",
                   "prefect_redis.cleanup_queue"):
        __import__(module)  # the modules the server will import by these names exist


def test_every_client_variable_is_a_prefect_setting(monkeypatch: pytest.MonkeyPatch) -> None:
    from prefect.settings import Settings

    from prefect_redis.client import RedisMessagingSettings

    from prefect_micro_agents.adapter.records import LOCK_MANAGER_ENV

    client = client_settings("http://127.0.0.1:4999/api", "s3-bucket/results", REDIS)
    for name, value in client.items():
        monkeypatch.setenv(name, value)
    # The execution ledger's lock: prefect-redis's lock manager on the messaging Redis (a file lock is refused with
    # shared result storage).
    assert client[LOCK_MANAGER_ENV] == "redis"
    redis = RedisMessagingSettings()
    assert (redis.host, redis.port, redis.db, redis.password) == ("127.0.0.1", 6390, 0, "s3cret")
    settings = Settings()
    assert settings.api.url == "http://127.0.0.1:4999/api"
    assert settings.results.default_storage_block == "s3-bucket/results"
    assert settings.results.persist_by_default is True
