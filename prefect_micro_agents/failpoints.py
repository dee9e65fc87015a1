"""Failpoints: named places where a crash test can freeze a process, to kill it exactly there (as etcd's gofail does).

Off unless $AGENT_FAILPOINTS_DIR is set; then one environment lookup per point. To arm a point, create an empty file
named after it in that directory. The process that reaches an armed point removes the file (so a retried attempt
runs through), writes `reached-<name>` holding its pid, and blocks until it is killed. A testing aid only: nothing
in production sets the variable.

Points in this project (where a crash leaves the most to reconcile):
- `agent.approved`: `run_agent` recorded an approval; nothing of the call has run;
- `ledger.locked`: the execution ledger holds a key's lock and has not looked at its records yet;
- `local.deploy.exported`: a local deploy exported the release, nothing else changed yet;
- `local.deploy.switched`: the old process is stopped and `current` points at the new release;
- `local.deploy.started`: the new service process exists but its pid is not recorded yet;
- `local.deploy.health`: the pid is recorded, the health check has not passed yet;
- `local.deploy.finished`: the deploy is done and recorded, the caller has not got the result.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

__all__ = ["DEPLOY_POINTS", "FAILPOINTS_ENV", "POINTS", "arm", "failpoint"]

FAILPOINTS_ENV = "AGENT_FAILPOINTS_DIR"
POINTS = ("agent.approved", "ledger.locked", "local.deploy.exported", "local.deploy.switched", "local.deploy.started",
          "local.deploy.health", "local.deploy.finished")
DEPLOY_POINTS = tuple(p for p in POINTS if p.startswith("local.deploy."))


def failpoint(name: str) -> None:
    """Block here until killed, if a crash test armed `name`; otherwise return at once."""
    directory = os.environ.get(FAILPOINTS_ENV)
    if not directory:
        return
    try:
        (Path(directory) / name).unlink()  # atomic: one process claims the point, and only once
    except FileNotFoundError:
        return
    (Path(directory) / f"reached-{name}").write_text(str(os.getpid()))
    while True:
        time.sleep(3600)


def arm(directory: str | os.PathLike[str], name: str) -> Path:
    """Arm `name` in `directory` (what a crash test does before it starts the work)."""
    path = Path(directory) / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.touch()
    return path
