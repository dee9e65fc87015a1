"""A flow run that ends Failed on purpose (a deploy that did not go through): a plain Failed state, no traceback.

Why this module exists: a flow that returns a Failed state is resolved by the engine after the state is set
(`FlowRunEngine.result()` -> `State.result()` -> `get_state_exception`), and `prefect.flow_engine.run_flow` logs
whatever that raises as "Engine execution exited with unexpected exception" WITH a traceback, on every failed run
of a deployment (seen with prefect 3.9.1). With a dict as the state's data it is even a TypeError ("dict cannot be
resolved into an exception"). So the state's data is the exception Prefect expects (`OutcomeFailure`, what
`exception_to_failed_state` would store), and the run logger drops that one engine record when it carries an
`OutcomeFailure`: the flow logs its own single ERROR line. Any other exception is logged by Prefect as before.

The state keeps Prefect's standard name `Failed` on purpose: the server emits `prefect.flow-run.<state name>`
events, so a custom name (say `StagingFailed`) would be missed by automations and notifications that watch
`prefect.flow-run.Failed`. The outcome goes in the message instead.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from prefect.client.schemas.objects import State

__all__ = ["OutcomeFailure", "failed"]

_RUN_LOGGER = "prefect.flow_runs"  # the logger behind get_run_logger() and the engine's error_logger


class OutcomeFailure(Exception):
    """A failed outcome the flow decided on (not a bug): its name and the message of the Failed state."""

    def __init__(self, outcome: str, message: str) -> None:
        super().__init__(outcome, message)
        self.outcome, self.message = outcome, message

    def __str__(self) -> str:
        return f"{self.outcome}: {self.message}"


class _DropOutcomeTracebacks(logging.Filter):
    """Drops log records whose exception is an OutcomeFailure: the engine re-raising the flow's own decision."""

    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        return not isinstance(exc, OutcomeFailure)


_filter = _DropOutcomeTracebacks()


def failed(outcome: str, message: str) -> State:
    """Return this from a flow to end the run Failed with `message`, logged once by the caller, without a traceback."""
    from prefect.states import Failed

    logger = logging.getLogger(_RUN_LOGGER)
    if _filter not in logger.filters:
        logger.addFilter(_filter)
    return Failed(message=message, data=OutcomeFailure(outcome, message))
