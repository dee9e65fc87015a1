"""Durable state outside Prefect's result cache: the thread after every event, and the execution ledger.

The ledger makes an approved call exactly-once under crashes: `started` is written before the tool runs and
`finished` (with the result) after. A re-run that finds `started` but not `finished` asks the tool to reconcile.
Default location: $AGENT_STATE_DIR, else $PREFECT_HOME/microagents (a shared filesystem when workers scale out).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Literal

from prefect_micro_agents.thread import Thread

__all__ = ["ExecutionLedger", "ThreadStore", "state_dir"]

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


class ExecutionLedger:
    def __init__(self, root: Path | None = None) -> None:
        self.root = (root or state_dir()) / "executions"

    def _path(self, key: str) -> Path:
        return self.root / f"{_safe(key)}.json"

    def status(self, key: str) -> tuple[Literal["new", "started", "finished"], Any]:
        path = self._path(key)
        if not path.exists():
            return "new", None
        record = json.loads(path.read_text())
        return record["status"], record.get("result")

    def start(self, key: str) -> None:
        _write_atomic(self._path(key), json.dumps({"status": "started"}), durable=True)

    def finish(self, key: str, result: Any) -> None:
        # No fsync: if a machine crash loses this record, the durable "started" makes the re-run reconcile instead.
        _write_atomic(self._path(key), json.dumps({"status": "finished", "result": result}), durable=False)
