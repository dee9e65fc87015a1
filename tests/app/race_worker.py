"""A Prefect process worker that looks at its pool once, at an agreed moment: two of these, started apart, race for
the same scheduled flow runs at the same instant (tests/app/test_scale_recovery.py). Prefect's own ProcessWorker in a
process of its own (its own PREFECT_HOME, working directory and AGENT_STATE_DIR, set by the caller's environment):
it syncs with the API (registering itself), writes the `ready` file, waits for the `go` file (a time.time() to poll
at), makes the one call the worker's loop makes each interval (`get_and_submit_flow_runs`), and leaves when the runs
it started have ended or suspended (the worker's context waits for them).

    python race_worker.py POOL NAME READY_FILE GO_FILE
"""

from __future__ import annotations

import asyncio
import sys
import time
from pathlib import Path

from prefect.workers.process import ProcessWorker


async def ready_to_submit(worker: ProcessWorker, timeout: float = 60) -> None:
    """Sync until the worker knows its pool, then once more. With Prefect's worker channel (a websocket) the pool
    arrives asynchronously, after the first sync returns, and a worker polls only once a sync has found the pool
    (before that, `get_and_submit_flow_runs` quietly returns nothing)."""
    deadline = time.monotonic() + timeout
    while True:
        await worker.sync_with_backend()
        try:
            worker.work_pool
        except RuntimeError:  # not known yet
            if time.monotonic() > deadline:
                raise
            await asyncio.sleep(0.1)
            continue
        await worker.sync_with_backend()  # now the sync finds the pool, and the worker will submit
        return


async def race(pool: str, name: str, ready: Path, go: Path) -> None:
    async with ProcessWorker(work_pool_name=pool, name=name) as worker:
        await ready_to_submit(worker)
        ready.write_text(str(time.time()))
        while not go.exists():
            await asyncio.sleep(0.005)
        await asyncio.sleep(max(0.0, float(go.read_text()) - time.time()))
        taken = await worker.get_and_submit_flow_runs()
        print(f"{name} polled at {time.time():.3f} and took {sorted(str(run.id) for run in taken)}", flush=True)


if __name__ == "__main__":
    pool, name, ready, go = sys.argv[1:5]
    asyncio.run(race(pool, name, Path(ready), Path(go)))
