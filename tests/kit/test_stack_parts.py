"""The scale-out stack's parts fail clearly before they start anything: a missing binary names the component and the
package to install, and a directory another account cannot reach is seen as such. Quick: no process is started
(tests/app/test_scale_stack.py starts the real ones)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from prefect_micro_agents.stack.postgres import PostgresNotFound, _reachable, find_bindir
from prefect_micro_agents.stack.processes import Account, ComponentStartError
from prefect_micro_agents.stack.redis import LocalRedis, RedisNotFound


def test_missing_postgres_binaries_name_the_component_and_the_package(tmp_path: Path) -> None:
    with pytest.raises(PostgresNotFound) as raised:
        find_bindir(tmp_path / "nowhere")
    assert isinstance(raised.value, ComponentStartError) and raised.value.component == "postgres"
    assert "apt-get install -y postgresql" in str(raised.value) and "PG_BINDIR" in str(raised.value)


def test_missing_redis_server_names_the_component_and_the_package(tmp_path: Path,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))
    monkeypatch.setattr(os.path, "exists", lambda path: False)  # not even /usr/bin/redis-server
    with pytest.raises(RedisNotFound) as raised:
        LocalRedis(tmp_path / "redis", port=1).start()
    assert raised.value.component == "redis" and "apt-get install -y redis-server" in str(raised.value)


def test_a_directory_under_a_private_one_is_unreachable_for_another_account(tmp_path: Path) -> None:
    private = tmp_path / "private"
    (private / "inside").mkdir(parents=True)
    private.chmod(0o700)
    me = os.stat(private)
    stranger = Account("stranger", me.st_uid + 4242, me.st_gid + 4242, "/nonexistent")
    owner = Account("owner", me.st_uid, me.st_gid, "/nonexistent")
    assert not _reachable(private / "inside" / "data", stranger)
    assert _reachable(private / "inside" / "data", owner)
