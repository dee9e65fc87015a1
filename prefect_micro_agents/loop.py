"""The one agent loop: a dispatch over the reducer's actions, with every side effect supplied by a runner.

Two runners drive it: the plain-Python `prefect_micro_agents.runner.run_until_blocked` (returns when a human must
decide) and the Prefect adapter's `run_agent` (model calls and executions are cached tasks, humans answer through a
flow-run suspension). What to do next, which idempotency key a call runs under, when a receipt is recorded and when a
call is reconciled are decided here, once, for both.

**Reconcile.** A call is handed to its implementation with `ctx.reconcile=True` exactly when an earlier attempt may
have begun it, by either durable record of a beginning:
- the thread already holds the call's receipt without its result (an attempt recorded that it hands the approved
  call over, then died). The re-execution runs under the key the receipt names, not a new one, so the target's own
  idempotency check finds what that attempt did; no second receipt is recorded;
- the runner's own record of executions says the key began and never finished (`Effects.began`: the Prefect
  adapter's execution ledger, the only record that also covers `auto` calls and outlives a replay, which rebuilds
  the thread; the plain runner keeps none, its durable record is the thread its caller persists).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, Protocol

from typing_extensions import assert_never

from prefect_micro_agents.binding import Binding, ToolContext, check_bindings
from prefect_micro_agents.edits import check_edits, edited_call
from prefect_micro_agents.execution import idempotency_key, receipt, record, redact_thread
from prefect_micro_agents.failpoints import failpoint
from prefect_micro_agents.reducer import (
    Action,
    AskModel,
    AwaitAnswer,
    AwaitApproval,
    Escalate,
    Execute,
    Finish,
    Halted,
    next_action,
)
from prefect_micro_agents.thread import (
    AnswerEvent,
    DecisionEvent,
    ErrorEvent,
    Event,
    ProposalEvent,
    ReceiptEvent,
    ResultEvent,
    Thread,
)
from prefect_micro_agents.tools import Agent, Tool

__all__ = ["Effects", "drive"]


class Effects(Protocol):
    """The side effects of one agent run; a runner supplies them, the loop decides when each happens."""

    @property
    def scope(self) -> str:
        """What idempotency keys are scoped by: the flow run id (Prefect), the thread id (plain Python)."""
        ...

    def ask_model(self, thread: Thread, step: int) -> ProposalEvent | ErrorEvent:
        """The model's next call for `thread` (step `step`), or the compact error its reply became."""
        ...

    def ask_human(self, thread: Thread, wait: AwaitApproval | AwaitAnswer) -> \
            DecisionEvent | AnswerEvent | ErrorEvent | None:
        """The human's decision or answer; an `approval_expired` error when nobody decided in time and the tool's
        expiry policy rejects the call; None: nobody has answered yet, and the loop returns the thread."""
        ...

    def began(self, key: str) -> bool:
        """Whether this runner's own durable record says an attempt began the execution under `key` and did not
        finish it (see the module docstring)."""
        ...

    def execute(self, binding: Binding[Any], call: Tool, ctx: ToolContext) -> ResultEvent | ErrorEvent:
        """Run the call once (prefect_micro_agents.execution.run_tool_call), however the runner makes that hold."""
        ...

    def recorded(self, thread: Thread, cause: Action | None) -> None:
        """The thread after each event the loop recorded (`cause`: the action it came from), and once at the start
        with cause None: persist it here, before the next step starts."""
        ...

    def halted(self, thread: Thread, outcome: str) -> None:
        """The agent is done or escalated (`outcome`); the loop returns the thread next."""
        ...


def drive(agent: Agent, thread: Thread, tools: Iterable[Binding[Any]], effects: Effects) -> Thread:
    """Run `agent` on `thread` until a human must answer and has not (`ask_human` returned None) or it halted.

    The bindings are checked and the caller's thread is redacted (pre-fetched context included) before anything
    else happens: nothing secret is persisted, published, rendered or sent.
    """
    bound = check_bindings(agent, tools)
    thread = redact_thread(thread)

    def add(event: Event, cause: Action) -> None:
        nonlocal thread
        thread = record(thread, event, agent=agent)
        effects.recorded(thread, cause)

    effects.recorded(thread, None)
    while True:
        action = next_action(agent, thread)
        match action:
            case AskModel(step=step):
                add(effects.ask_model(thread, step), action)
            case AwaitApproval() | AwaitAnswer():
                answer = effects.ask_human(thread, action)
                if answer is None:
                    return thread
                if isinstance(answer, DecisionEvent) and answer.edits and not answer.edit_error:
                    # Checked before it counts: an edit the policy or the tool refuses is recorded, not approved.
                    answer = answer.model_copy(update={
                        "edit_error": check_edits(agent, thread, action.proposal, answer.edits)})
                add(answer, action)
                if isinstance(answer, DecisionEvent) and answer.edits and not answer.edit_error:
                    if agent.tally(thread, action.proposal).edited_by == answer:  # an allowed approver's edit
                        for event in edited_call(agent, thread, answer):
                            add(event, action)  # the edited call, and its editor's approval of it
                if isinstance(answer, DecisionEvent) and answer.decision == "approved":
                    failpoint("agent.approved")  # crash tests: the approval is recorded, nothing ran yet
            case Execute(proposal=p):
                call = agent.call(p)
                earlier = next(iter(thread.for_proposal(ReceiptEvent, p.id)), None)
                key = earlier.idempotency_key if earlier is not None else idempotency_key(effects.scope, action)
                reconcile = earlier is not None or effects.began(key)  # the rule: see the module docstring
                if earlier is None and (proof := receipt(action, key)) is not None:
                    add(proof, action)
                add(effects.execute(bound[type(call)], call, ToolContext(key, thread.id, p.id, reconcile)), action)
            case Finish() | Escalate():
                add(action.event, action)
            case Halted(outcome=outcome):
                effects.halted(thread, outcome)
                return thread
            case _:
                assert_never(action)
