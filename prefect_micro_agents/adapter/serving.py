"""Serve deployments with a sub-second runner poll, so an approved run resumes quickly.

`PREFECT_RUNNER_POLL_FREQUENCY` is a whole number of seconds (minimum 1), but the Runner itself accepts a float
`query_seconds`. Each poll is one cheap API query; 0.25 s costs four queries a second per runner and took 0.5-1.7 s
off the median resume latency compared with 1 s on a loaded machine (tests/benchmarks/bench_gate.py --poll).
"""

from __future__ import annotations

import os
from typing import Any

__all__ = ["RUNNER_POLL_ENV", "serve_deployments"]

RUNNER_POLL_ENV = "AGENT_RUNNER_POLL_S"


def serve_deployments(*deployments: Any, limit: int | None = None, **runner_options: Any) -> None:
    """Like `prefect.serve`, with the runner's poll interval taken from $AGENT_RUNNER_POLL_S (default 0.25 s) and
    flow-run heartbeats every 30 s unless PREFECT_FLOWS_HEARTBEAT_FREQUENCY says otherwise."""
    from prefect import serve

    from prefect_micro_agents.adapter.recovery import enable_heartbeats

    enable_heartbeats()  # the runner's flow-run processes inherit it: a dead worker is noticed (recovery.py)
    runner_options.setdefault("query_seconds", float(os.environ.get(RUNNER_POLL_ENV, "0.25")))
    serve(*deployments, limit=limit, **runner_options)
