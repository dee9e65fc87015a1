"""run_agent: the micro-agent loop inside a Prefect flow, with approvals as flow-run suspensions.

Durability rules (why this file looks the way it does):
- On resume the flow function runs again from the top. Every step must therefore come back identical: model
  calls and tool executions are cached tasks (prefect_micro_agents.adapter.tasks), decisions are read back from the run's stored
  inputs under the same suspend keys, and their timestamps come from the server, not the clock.
- A suspend key is used for exactly one question: `approve-<proposal id>-<attempt>`. A fired key returns its stored
  answer; reusing one for another proposal would let an old approval through.
- `Pause` (raised by suspend) is a BaseException: nothing here catches it.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Iterable
from datetime import UTC, datetime, timedelta
from typing import Any
from uuid import UUID

from typing_extensions import assert_never

from prefect_micro_agents.adapter.forms import answer_form, answer_key, answer_of, approval_form, approval_key, decision_of
from prefect_micro_agents.adapter.logredact import install_log_redaction
from prefect_micro_agents.adapter.publish import artifact_key, publish_thread, request_markdown, thread_markdown
from prefect_micro_agents.adapter.store import ThreadStore
from prefect_micro_agents.adapter.tasks import execute_call, llm_step
from prefect_micro_agents.binding import Binding, ToolContext, check_bindings
from prefect_micro_agents.errors import ConfigurationError
from prefect_micro_agents.execution import idempotency_key, receipt, record, redact_thread
from prefect_micro_agents.failpoints import failpoint
from prefect_micro_agents.llm import build_request, parse_reply, resolve_model
from prefect_micro_agents.reducer import (
    AskModel,
    AwaitAnswer,
    AwaitApproval,
    Escalate,
    Execute,
    Finish,
    Halted,
    model_steps,
    next_action,
)
from prefect_micro_agents.thread import AnswerEvent, DecisionEvent, Event, ProposalEvent, ReceiptEvent, Thread
from prefect_micro_agents.tools import Agent

__all__ = ["APPROVAL_TIMEOUT_ENV", "run_agent"]

APPROVAL_TIMEOUT_ENV = "AGENT_APPROVAL_TIMEOUT_S"
DEFAULT_APPROVAL_TIMEOUT_S = 24 * 3600


def run_agent(
    agent: Agent,
    thread: Thread,
    tools: Iterable[Binding[Any]],
    *,
    model: str | None = None,
    approval_timeout_s: float | None = None,
    on_event: Callable[[Thread, Event], None] | None = None,
    **llm_options: Any,
) -> Thread:
    """Drive `agent` until it is done or escalates; suspends the flow run whenever a human must decide.

    `tools`: a binding per tool that executes (`bind(Deploy, deploy)`). `on_event(thread, event)` is called after
    each event is recorded and persisted, replayed ones included.
    """
    from prefect import get_run_logger
    from prefect.runtime import flow_run

    run_id = flow_run.get_id()
    if not run_id:
        raise ConfigurationError("run_agent must be called inside a Prefect flow run (a @flow function)")
    bound = check_bindings(agent, tools)
    install_log_redaction()  # this run's log records, to the API and the console, engine tracebacks included
    thread = redact_thread(thread)  # the pre-fetched context too, before it is stored, published or sent
    model = resolve_model(model)
    timeout = approval_timeout_s or float(os.environ.get(APPROVAL_TIMEOUT_ENV, DEFAULT_APPROVAL_TIMEOUT_S))
    logger = get_run_logger()
    store = ThreadStore()
    key = artifact_key(agent.name, run_id)

    def add(event: Event) -> None:
        nonlocal thread
        thread = record(thread, event)
        store.save(run_id, agent.name, thread)  # nothing lost: persisted before the next step starts
        if on_event is not None:
            on_event(thread, thread.events[-1])

    def publish(status: str, version: str) -> None:
        publish_thread(key=key, version=version, markdown=thread_markdown(agent.name, thread, status),
                       description=f"{agent.name} agent thread: {status}")

    store.save(run_id, agent.name, thread)
    while True:
        action = next_action(agent, thread)
        match action:
            case AskModel(step=step):
                request = build_request(agent, thread, model, **llm_options)
                reply = llm_step(request, thread.digest())
                add(parse_reply(agent, thread, reply, request.step))
                if thread.events[-1].type == "error":  # proposals are logged where they lead: wait or execute
                    logger.warning("%s step %d: %s", agent.name, step, _describe(thread.events[-1]))
            case AwaitApproval(proposal=p):
                attempt = len(thread.for_proposal(DecisionEvent, p.id))
                suspend_key = approval_key(p.id, attempt)
                publish(f"awaiting approval of {p.intent}", suspend_key)
                expires = _expires_at(timeout)
                form = approval_form(p.digest, _request(agent, thread, p, "approval.md.j2", expires), expires)
                answer = _suspend(form, suspend_key, timeout, logger, f"approval of {p.intent} {p.args}")
                # The form's answer field is named after p.digest and the server refuses any other: bound.
                decision = "approved" if decision_of(answer, p.digest) == "approve" else "rejected"
                add(DecisionEvent(proposal_id=p.id, proposal_digest=p.digest, decision=decision,
                                  feedback=answer.feedback, approver=answer.approver or "unknown",
                                  at=_answered_at(run_id, suspend_key)))
                if decision == "approved":
                    failpoint("agent.approved")
            case AwaitAnswer(proposal=p):
                attempt = len(thread.for_proposal(AnswerEvent, p.id))
                suspend_key = answer_key(p.id, attempt)
                publish(f"waiting for an answer to {p.id}", suspend_key)
                expires = _expires_at(timeout)
                form = answer_form(p.digest, _request(agent, thread, p, "question.md.j2", expires), expires)
                reply_in = _suspend(form, suspend_key, timeout, logger, f"an answer to {p.args}")
                add(AnswerEvent(proposal_id=p.id, answer=answer_of(reply_in, p.digest), by=reply_in.by or "unknown",
                                at=_answered_at(run_id, suspend_key)))
            case Execute(proposal=p):
                idem = idempotency_key(run_id, action)
                if not thread.for_proposal(ReceiptEvent, p.id) and (proof := receipt(action, idem)) is not None:
                    add(proof)
                call = agent.call(p)
                add(execute_call(bound[type(call)], call, ToolContext(idem, thread.id, p.id)))
                logger.info("%s step %d executed %s: %s", agent.name, model_steps(thread), _describe(p),
                            _describe(thread.events[-1]))
            case Finish() | Escalate():
                add(action.event)
            case Halted(outcome=outcome):
                logger.info("%s agent %s: %s", agent.name, outcome, _describe(thread.events[-1]))
                publish(outcome, f"end-{thread.digest()[:16]}")
                return thread
            case _:
                assert_never(action)


def _expires_at(timeout: float) -> str:
    return (datetime.now(UTC) + timedelta(seconds=timeout)).strftime("%Y-%m-%d %H:%M:%S UTC")


def _request(agent: Agent, thread: Thread, p: ProposalEvent, template: str, expires: str) -> str:
    return request_markdown(template, agent.name, thread, p, step=model_steps(thread), max_steps=agent.max_steps,
                            expires_at=expires)


def _suspend(form: Any, key: str, timeout: float, logger: logging.Logger | logging.LoggerAdapter, what: str) -> Any:
    """Suspend until a human answers; on replay the stored answer comes back at once.

    Prefect skips a suspension whose key already fired, but forgets the fired keys when a run leaves a final state
    (a Crashed run started again by the recovery automation, or Retry in the UI): without this check such a run
    would ask its approvers again. So an answer stored under the key is read back first, whatever restarted us.
    """
    from prefect.flow_runs import suspend_flow_run
    from prefect.input.actions import read_flow_run_input
    from prefect.input.run_input import keyset_from_base_key

    keyset = keyset_from_base_key(f"suspended-{key}")
    if read_flow_run_input(keyset["response"]) is not None:
        return form.load(keyset)
    logger.info("waiting for %s (suspend key %s): %s", what, key, _where_to_answer())
    return suspend_flow_run(wait_for_input=form, key=key, timeout=int(timeout))


def _where_to_answer() -> str:
    """Tell approvers where to go, with no notification configured: the run's UI page and the CLI."""
    from prefect.runtime import flow_run
    from prefect.settings import PREFECT_UI_URL

    from prefect_micro_agents.adapter.links import V2_HOW_TO, run_page

    run_id, ui = flow_run.get_id(), PREFECT_UI_URL.value()
    page = f"open {run_page(ui, run_id)} ({V2_HOW_TO}), or " if ui else ""
    return f"{page}run `microagents show {run_id}`"


def _answered_at(run_id: str, suspend_key: str) -> datetime:
    """When the human answered, as the server recorded it: identical on every replay."""
    from prefect.client.orchestration import get_client

    response_key = f"suspended-{suspend_key}-response"
    with get_client(sync_client=True) as client:
        found = client.filter_flow_run_input(UUID(run_id), key_prefix=response_key, limit=1, exclude_keys=set())
    created = found[0].created if found else None
    if created is None:
        raise RuntimeError(f"flow run {run_id} resumed without a stored response under {response_key}")
    return created if created.tzinfo else created.replace(tzinfo=UTC)


def _describe(event: Event) -> str:
    from prefect_micro_agents.adapter.publish import summarize

    return f"{event.type}: {summarize(event)}"
