"""The execution ledger on Prefect's storage blocks and lock managers, under real concurrency and real crashes.

Workers are processes (tests/kit/ledger_workers.py), each building its own ledger from plain configuration as a
worker on another machine would. Two set-ups: the embedded default (LocalFileSystem + the kit's flock-based
lock manager) and the scale-out one (an fsspec RemoteFileSystem + prefect-redis's RedisLockManager against
a real redis-server started here on a free loopback port).
"""

from __future__ import annotations

import json
import multiprocessing
import os
import queue
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from multiprocessing.context import ForkServerContext
from multiprocessing.process import BaseProcess
from multiprocessing.queues import Queue
from pathlib import Path
from typing import Any

import pytest
from ledger_workers import Where, begin_at_failpoint, begin_then_hang, race, transaction_then_hang

WORKERS = 8
KEYS = [f"run-{n}:proposal-{n}:0123456789abcdef" for n in range(25)]


@pytest.fixture(scope="module")
def processes() -> ForkServerContext:
    """Worker processes forked from a single-threaded server that imported Prefect once (start-up in ms, not s)."""
    ctx = multiprocessing.get_context("forkserver")
    ctx.set_forkserver_preload(["prefect.filesystems", "prefect_redis", "ledger_workers",
                                "prefect_micro_agents.adapter.ledger", "prefect_micro_agents.adapter.filelocks"])
    return ctx


@pytest.fixture(scope="module")
def redis_port(tmp_path_factory: pytest.TempPathFactory) -> Iterator[int]:
    """A real redis-server, a child of this test process on a free 127.0.0.1 port, stopped at the end."""
    server = shutil.which("redis-server")
    if server is None:
        pytest.skip("redis-server is not installed (Debian: apt-get install -y redis-server)")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    workdir = tmp_path_factory.mktemp("redis")
    proc = subprocess.Popen([server, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
                             "--dir", str(workdir)], stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
    try:
        import redis

        client = redis.Redis(host="127.0.0.1", port=port)
        deadline = time.monotonic() + 15
        while True:
            try:
                client.ping()
                break
            except redis.ConnectionError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise
                time.sleep(0.05)
        client.close()
        yield port
    finally:
        proc.terminate()
        proc.wait(timeout=10)


@pytest.fixture(params=["local", "remote"])
def where(request: pytest.FixtureRequest, tmp_path: Path) -> Where:
    if request.param == "local":
        return Where("local", str(tmp_path / "storage"))
    return Where("remote", str(tmp_path / "storage"), redis_port=request.getfixturevalue("redis_port"))


def start(processes: ForkServerContext, target: Callable[..., None], *args: Any) -> BaseProcess:
    proc = processes.Process(target=target, args=args, daemon=True)
    proc.start()
    return proc


def reports(out: Queue[tuple[int, list[str]]], workers: list[BaseProcess], timeout: float = 120) -> list[list[str]]:
    """Every worker's report; fails at once if a worker died without one."""
    got: list[list[str]] = []
    deadline = time.monotonic() + timeout
    while len(got) < len(workers):
        try:
            got.append(out.get(timeout=0.5)[1])
        except queue.Empty:
            dead = [p.exitcode for p in workers if p.exitcode not in (None, 0)]
            assert not dead and time.monotonic() < deadline, f"workers died ({dead}) or hung; see their stderr"
    return got


def kill(proc: BaseProcess) -> None:
    assert proc.pid is not None
    os.kill(proc.pid, signal.SIGKILL)
    proc.join(10)
    assert proc.exitcode == -signal.SIGKILL


def test_of_many_processes_racing_on_a_key_exactly_one_begins_it(processes: ForkServerContext, where: Where) -> None:
    out: Queue[tuple[int, list[str]]] = processes.Queue()
    go = processes.Event()
    workers = [start(processes, race, where, KEYS, go, out) for _ in range(WORKERS)]
    time.sleep(1.0)  # every worker has its ledger ready and waits
    go.set()
    found = reports(out, workers)
    for proc in workers:
        proc.join(10)
    for n, key in enumerate(KEYS):
        statuses = sorted(statuses[n] for statuses in found)
        assert statuses == ["new"] + ["started"] * (WORKERS - 1), (key, statuses)
    assert where.ledger().status(KEYS[0]) == ("started", None)


def test_a_worker_killed_between_started_and_finished_leaves_started_for_the_next(
        processes: ForkServerContext, where: Where) -> None:
    out: Queue[tuple[int, list[str]]] = processes.Queue()
    key = "run-a:proposal-1:0123456789abcdef"
    worker = start(processes, begin_then_hang, where, key, out)
    assert reports(out, [worker], 60) == [["new"]]  # it began the call and is "running the tool"
    kill(worker)

    ledger = where.ledger()  # the next worker
    assert ledger.status(key) == ("started", None)
    assert ledger.begin(key) == ("started", None)  # -> the tool is asked to reconcile
    ledger.finish(key, {"type": "result", "output": {"deployed": "abc"}})
    assert where.ledger().begin(key) == ("finished", {"type": "result", "output": {"deployed": "abc"}})


def test_a_worker_killed_holding_the_lock_frees_the_key_after_the_hold_timeout(
        processes: ForkServerContext, where: Where, tmp_path: Path) -> None:
    from prefect_micro_agents.failpoints import arm

    out: Queue[tuple[int, list[str]]] = processes.Queue()
    key = "run-b:proposal-1:0123456789abcdef"
    hold = Where(where.kind, where.root, where.redis_port, hold_timeout_s=2.0, acquire_timeout_s=20.0)
    failpoints = tmp_path / "failpoints"
    arm(failpoints, "ledger.locked")
    worker = start(processes, begin_at_failpoint, hold, key, str(failpoints), out)
    deadline = time.monotonic() + 60
    while not (failpoints / "reached-ledger.locked").exists():  # it holds the key's lock, inside begin
        assert worker.exitcode is None and time.monotonic() < deadline
        time.sleep(0.02)
    kill(worker)
    waited = time.monotonic()
    assert hold.ledger().begin(key) == ("new", None)  # nothing was recorded: the next worker begins it afresh
    waited = time.monotonic() - waited
    if where.kind == "local":
        assert waited < 1.0, waited  # the kernel dropped the dead holder's flock at once
    else:
        assert 0.5 < waited < 10, waited  # Redis: it waited out the dead holder's lease (2 s), not forever


def test_prefect_serializable_transaction_killed_inside_leaves_its_redis_lock_forever(
        processes: ForkServerContext, redis_port: int, tmp_path: Path) -> None:
    """Why the ledger takes locks itself, with a hold timeout: Prefect's SERIALIZABLE transaction acquires without
    one (Transaction.begin -> ResultStore.acquire_lock(key, holder)), so a holder killed inside it leaves a lock
    with no expiry, and every later transaction on that key waits for ever."""
    import redis

    out: Queue[tuple[int, list[str]]] = processes.Queue()
    worker = start(processes, transaction_then_hang, redis_port, str(tmp_path / "storage"), "txn-key", out)
    assert reports(out, [worker], 60) == [["in transaction"]]
    kill(worker)
    client = redis.Redis(host="127.0.0.1", port=redis_port)
    assert client.exists("lock:txn-key") == 1
    assert client.ttl("lock:txn-key") == -1  # no expiry
    client.close()


def test_a_torn_finished_record_reads_as_started_and_a_storage_error_is_not_absence(tmp_path: Path) -> None:
    ledger = Where("local", str(tmp_path / "storage")).ledger()
    key = "run-c:proposal-1:0123456789abcdef"
    assert ledger.begin(key) == ("new", None)
    started, finished = ledger.paths(key)
    (tmp_path / "storage" / finished).write_text('{"status": "fini')  # a machine crash mid-write
    assert ledger.status(key) == ("started", None)  # the tool ran, its result is lost: reconcile
    assert json.loads((tmp_path / "storage" / started).read_text())["status"] == "started"

    other = "run-d:proposal-1:0123456789abcdef"
    (tmp_path / "storage" / ledger.paths(other)[1]).mkdir(parents=True)  # unreadable, not absent
    with pytest.raises(ValueError, match="is not a file"):
        ledger.status(other)  # fail the task; never take an unreadable record for "never started"
    with pytest.raises(ValueError, match="is not a file"):
        ledger.begin(other)


def test_a_lock_that_holds_on_fewer_machines_than_the_storage_reaches_is_refused(
        tmp_path: Path, redis_port: int, monkeypatch: pytest.MonkeyPatch) -> None:
    from prefect.filesystems import LocalFileSystem
    from prefect.locking.filesystem import FileSystemLockManager
    from prefect.locking.memory import MemoryLockManager

    from prefect_micro_agents.adapter.filelocks import FlockLockManager
    from prefect_micro_agents.adapter.ledger import ExecutionLedger
    from prefect_micro_agents.adapter.records import LOCK_MANAGER_ENV, check_reach, lock_manager
    from prefect_micro_agents.errors import ConfigurationError

    local = LocalFileSystem(basepath=str(tmp_path / "local"))
    shared = Where("remote", str(tmp_path / "shared")).remote_storage()
    monkeypatch.delenv(LOCK_MANAGER_ENV, raising=False)
    assert isinstance(lock_manager(local), FlockLockManager)  # the embedded default
    with pytest.raises(ConfigurationError, match="holds on one machine only. Set AGENT_LOCK_MANAGER=redis"):
        lock_manager(shared)
    with pytest.raises(ConfigurationError, match="FileSystemLockManager, which holds on one machine only"):
        ExecutionLedger(shared, FileSystemLockManager(tmp_path / "locks")).begin("k")
    with pytest.raises(ConfigurationError, match="FlockLockManager, which holds on one machine only"):
        ExecutionLedger(shared, FlockLockManager(tmp_path / "locks")).begin("k")
    with pytest.raises(ConfigurationError, match="MemoryLockManager holds within one process"):
        check_reach(local, MemoryLockManager())
    with pytest.raises(ConfigurationError, match="every flow run is a process of its own"):
        lock_manager(local, "memory")
    with pytest.raises(ConfigurationError, match="'zookeeper' is not a lock manager"):
        lock_manager(local, "zookeeper")

    monkeypatch.setenv(LOCK_MANAGER_ENV, "redis")  # the Redis of Prefect's messaging, from its settings
    monkeypatch.setenv("PREFECT_REDIS_MESSAGING_HOST", "127.0.0.1")
    monkeypatch.setenv("PREFECT_REDIS_MESSAGING_PORT", str(redis_port))
    ledger = ExecutionLedger(shared)
    assert type(ledger.locks).__name__ == "RedisLockManager"
    assert ledger.begin("k") == ("new", None) and ledger.begin("k") == ("started", None)


@pytest.mark.slow
def test_in_a_flow_run_the_ledger_uses_the_runs_result_storage_and_the_configured_lock(
        prefect_server: Any, redis_port: int, tmp_path: Path) -> None:
    """Configured the Prefect way only: the flow's result storage block (shared: a RemoteFileSystem) and
    AGENT_LOCK_MANAGER=redis with prefect-redis's messaging settings. Unset, the file lock is refused."""
    script = Path(__file__).with_name("ledger_flow.py")
    env = {**os.environ, **prefect_server.client_env(), "PREFECT_REDIS_MESSAGING_HOST": "127.0.0.1",
           "PREFECT_REDIS_MESSAGING_PORT": str(redis_port), "AGENT_LOCK_MANAGER": "redis"}
    run = subprocess.run([sys.executable, str(script), str(tmp_path), "run-e:p:0123"], env=env, capture_output=True,
                         text=True, timeout=180)
    assert run.returncode == 0, run.stderr[-3000:]
    seen = json.loads(run.stdout.strip().splitlines()[-1])
    assert seen == {"first": "new", "second": "started", "locks": "RedisLockManager", "storage": "RemoteFileSystem",
                    "started": seen["started"]}
    assert json.loads((tmp_path / "records" / seen["started"]).read_text())["status"] == "started"

    del env["AGENT_LOCK_MANAGER"]
    run = subprocess.run([sys.executable, str(script), str(tmp_path), "run-f:p:0123"], env=env, capture_output=True,
                         text=True, timeout=180)
    assert run.returncode != 0
    assert "RemoteFileSystem(dir://records), which other machines reach: a file lock holds on one machine" in run.stderr
