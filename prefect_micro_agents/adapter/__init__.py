"""The Prefect adapter: run a micro-agent inside a flow, with approvals as flow-run suspensions.

`run_agent` and `run_scoped_key` import prefect when first used; the approvals client, the CLI and the local
server helper do not import prefect at all, so they start fast.
"""

from typing import Any

__all__ = ["failed", "run_agent", "run_scoped_key", "with_approvers"]


def __getattr__(name: str) -> Any:
    if name in ("run_agent", "with_approvers"):
        from prefect_micro_agents.adapter import loop

        return getattr(loop, name)
    if name == "failed":
        from prefect_micro_agents.adapter.failure import failed

        return failed
    if name == "run_scoped_key":
        from prefect_micro_agents.adapter.tasks import run_scoped_key

        return run_scoped_key
    raise AttributeError(name)
