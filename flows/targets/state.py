"""Deploy state on disk: one JSON file per target, flock'ed for writers, replaced atomically for lock-free readers."""

from __future__ import annotations

import fcntl
import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path

from pydantic import BaseModel, Field, ValidationError

from prefect_micro_agents.secrets import redact_data
from flows.targets.base import HistoryEntry
from flows.targets.errors import TargetConfigError

__all__ = ["ServiceRecord", "StateStore", "TargetStateFile", "atomic_write_text"]


class ServiceRecord(BaseModel):
    """What a target last did for one env/service: the current release and, for local targets, its process."""

    sha: str | None = None
    status: str = "never_deployed"
    pid: int | None = None
    pid_identity: str | None = None
    port: int | None = None
    started_at: datetime | None = None


class TargetStateFile(BaseModel):
    """Everything a target persists: ports, current records and the full history (oldest first)."""

    version: int = 1
    target: str
    repo: str | None = None
    ports: dict[str, dict[str, int]] = Field(default_factory=dict)
    services: dict[str, dict[str, ServiceRecord]] = Field(default_factory=dict)
    history: list[HistoryEntry] = Field(default_factory=list)

    def record(self, env: str, service: str) -> ServiceRecord:
        """The (created on demand) record of one env/service."""
        return self.services.setdefault(env, {}).setdefault(service, ServiceRecord())


def atomic_write_text(path: Path, text: str) -> None:
    """Write `text` to `path` via a temp file in the same directory and os.replace."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


class StateStore:
    """Reads (lock-free) and transactionally updates (flock'ed) one state file."""

    def __init__(self, path: Path, target: str) -> None:
        self.path = Path(path)
        self.target = target
        self._lock_path = self.path.with_name(self.path.name + ".lock")

    def read(self) -> TargetStateFile:
        """Current state; an empty one if the file does not exist yet."""
        try:
            text = self.path.read_text(encoding="utf-8")
        except FileNotFoundError:
            return TargetStateFile(target=self.target)
        try:
            return TargetStateFile.model_validate_json(text)
        except ValidationError as exc:
            raise TargetConfigError(f"state file {self.path} is corrupt ({exc.error_count()} errors); "
                                    f"move it away to start from an empty state") from exc

    def save(self, state: TargetStateFile) -> None:
        """Persist `state` atomically (call inside `transaction` to keep writers serialised), secrets redacted: the
        history holds command output (`DeployResult.details`) and is durable."""
        atomic_write_text(self.path, redact_data(state).model_dump_json(indent=2) + "\n")

    @contextmanager
    def transaction(self) -> Iterator[TargetStateFile]:
        """Hold the writer lock, yield the state, and save it on exit (also when the body raises)."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with open(self._lock_path, "a+", encoding="utf-8") as lock:
            fcntl.flock(lock.fileno(), fcntl.LOCK_EX)
            try:
                state = self.read()
                try:
                    yield state
                finally:
                    self.save(state)
            finally:
                fcntl.flock(lock.fileno(), fcntl.LOCK_UN)
