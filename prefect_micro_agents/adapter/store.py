"""The thread store: a run's thread after every event, on the worker's local disk. A pure cache.

Nothing in a run reads it back: a resumed or retried run rebuilds its thread by replay (cached model calls and
executions in Prefect's result storage, decisions from the run's stored inputs) and rewrites it here, on whichever
worker runs it. It is for people and tests on that machine; across machines read the run's thread artifact. The
records exactly-once rests on live in Prefect's result storage (prefect_micro_agents.adapter.ledger).
Location: $AGENT_STATE_DIR, else $PREFECT_HOME/microagents.
"""

from __future__ import annotations

import os
from pathlib import Path

from prefect_micro_agents.thread import Thread

__all__ = ["ThreadStore", "state_dir"]

STATE_DIR_ENV = "AGENT_STATE_DIR"


def state_dir() -> Path:
    configured = os.environ.get(STATE_DIR_ENV)
    if configured:
        return Path(configured)
    home = os.environ.get("PREFECT_HOME") or str(Path.home() / ".prefect")
    return Path(home) / "microagents"


def _write_atomic(path: Path, text: str, *, durable: bool) -> None:
    """Readers see the old file or the new one, never half of one, even if the process is killed mid-write.
    `durable` adds an fsync so the write also survives a machine crash (about 2 ms each here)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with open(tmp, "w") as fh:
        fh.write(text)
        if durable:
            fh.flush()
            os.fsync(fh.fileno())
    os.replace(tmp, path)


def _safe(name: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in name)


class ThreadStore:
    def __init__(self, root: Path | None = None) -> None:
        self.root = (root or state_dir()) / "threads"

    def path(self, run_id: str, agent: str) -> Path:
        return self.root / _safe(run_id) / f"{_safe(agent)}.json"

    def save(self, run_id: str, agent: str, thread: Thread) -> None:
        # No fsync: after a machine crash the thread is rebuilt by replay from persisted task results.
        _write_atomic(self.path(run_id, agent), thread.to_json(), durable=False)

    def load(self, run_id: str, agent: str) -> Thread | None:
        path = self.path(run_id, agent)
        return Thread.from_json(path.read_text()) if path.exists() else None
