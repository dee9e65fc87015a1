"""Executions of the benchmark's approved tool, one line each, counted per idempotency key.

Counting effect files cannot see a double execution when the tool appends to one file per run; a shared log with
one line per execution and its key can: a key seen twice is a call that ran twice.
"""

from __future__ import annotations

import os
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

__all__ = ["LOG_NAME", "Counts", "count", "record"]

LOG_NAME = "executions.log"  # in the effects directory


def record(log: Path, run_id: str, key: str) -> None:
    """Append `<time> <pid> <run id> <idempotency key>`: one write on an O_APPEND descriptor, so lines from
    concurrent processes never interleave."""
    line = f"{time.time()} {os.getpid()} {run_id} {key}\n".encode()
    fd = os.open(log, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, line)
    finally:
        os.close(fd)


@dataclass(frozen=True)
class Counts:
    once: int  # keys executed exactly once
    more: dict[str, int]  # key -> executions, for keys executed more than once
    never: list[str]  # runs with no execution at all (their key was executed 0 times)

    def summary(self) -> str:
        return (f"keys executed once: {self.once}; more than once: {len(self.more)}"
                f"{' ' + str(self.more) if self.more else ''}; runs with no execution (0 times): {len(self.never)}"
                f"{' ' + str(self.never[:5]) if self.never else ''}")


def count(log: Path, runs: list[str]) -> Counts:
    lines = log.read_text().splitlines() if log.exists() else []
    rows = [line.split() for line in lines if line.strip()]
    per_key = Counter(row[3] for row in rows)
    executed_runs = {row[2] for row in rows}
    return Counts(once=sum(1 for n in per_key.values() if n == 1),
                  more={k: n for k, n in per_key.items() if n > 1},
                  never=[r for r in runs if r not in executed_runs])
