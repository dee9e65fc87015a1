"""run_agent: the micro-agent loop (prefect_micro_agents.loop) inside a Prefect flow, with approvals as flow-run
suspensions. The loop decides what happens next; this module supplies its side effects (`_FlowRun`).

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
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal
from uuid import UUID

from prefect_micro_agents.adapter.audit_artifact import publish_audit
from prefect_micro_agents.adapter.expiry import (
    Deadline,
    announce,
    deadline_for,
    ensure_expiry_automations,
    prefect_timeout,
    unanswered,
)
from prefect_micro_agents.adapter.forms import (
    answer_form,
    answer_key,
    answer_of,
    approval_form,
    approval_key,
    argument_fields,
    decision_of,
    edited_values,
)
from prefect_micro_agents.adapter.logredact import install_log_redaction
from prefect_micro_agents.approval_policy import ApprovalPolicy, Expiry, Tally
from prefect_micro_agents.adapter.publish import artifact_key, publish_thread, request_markdown, thread_markdown
from prefect_micro_agents.adapter.ledger import ExecutionLedger
from prefect_micro_agents.adapter.store import ThreadStore
from prefect_micro_agents.adapter.tasks import approvers_snapshot, execute_call, llm_step, verify_signature
from prefect_micro_agents.binding import Binding, ToolContext
from prefect_micro_agents.edits import changed, editable_fields
from prefect_micro_agents.errors import ConfigurationError
from prefect_micro_agents.llm import build_request, parse_reply, resolve_model
from prefect_micro_agents.loop import drive
from prefect_micro_agents.signing import ALLOWED_SIGNERS_ENV, signed_text
from prefect_micro_agents.reducer import Action, AskModel, AwaitAnswer, AwaitApproval, Execute, model_steps
from prefect_micro_agents.thread import (
    AnswerEvent,
    DecisionEvent,
    ErrorEvent,
    Event,
    ProposalEvent,
    ResultEvent,
    Thread,
    canonical_json,
)
from prefect_micro_agents.tools import Agent, Tool

__all__ = ["APPROVAL_TIMEOUT_ENV", "run_agent", "with_approvers"]

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
    install_log_redaction()  # this run's log records, to the API and the console, engine tracebacks included
    ExecutionLedger().locks  # noqa: B018 - a lock that cannot cover the result storage fails here, before any step
    agent = with_approvers(agent)  # checked now: an unknown group fails before any step
    timeout = approval_timeout_s or float(os.environ.get(APPROVAL_TIMEOUT_ENV, DEFAULT_APPROVAL_TIMEOUT_S))
    for tool in agent.tools:  # a reminder due before its tool's wait begins fails now, not at the first approval
        if tool.policy in ("approve", "human"):
            agent.approval_policy(tool.intent_name()).expiry(timeout)
    effects = _FlowRun(agent, run_id, resolve_model(model), llm_options, timeout, get_run_logger(), ThreadStore(),
                       artifact_key(agent.name, run_id), on_event)
    return drive(agent, thread, tools, effects)


def with_approvers(agent: Agent) -> Agent:
    """`agent` as run_agent holds it in this flow run: with the approvers file the run read first applied (a persisted
    task: the same file on every replay). Records written after the agent ran (a report) judge its decisions by it."""
    if agent.approvers is None and (approvers := approvers_snapshot()) is not None:
        return replace(agent, approvers=approvers)
    return agent


@dataclass(frozen=True)
class _FlowRun:
    """Side effects inside a flow run: cached tasks for the model and the tools, suspensions for humans."""

    agent: Agent
    scope: str  # the flow run id
    model: str
    llm_options: dict[str, Any]
    timeout: float
    logger: logging.Logger | logging.LoggerAdapter[logging.Logger]
    store: ThreadStore
    artifact: str
    on_event: Callable[[Thread, Event], None] | None

    def ask_model(self, thread: Thread, step: int) -> ProposalEvent | ErrorEvent:
        request = build_request(self.agent, thread, self.model, **self.llm_options)
        return parse_reply(self.agent, thread, llm_step(request, thread.digest()), request.step)

    def ask_human(self, thread: Thread, wait: AwaitApproval | AwaitAnswer) -> DecisionEvent | AnswerEvent | ErrorEvent:
        p = wait.proposal
        expiry = self.agent.approval_policy(p.intent).expiry(self.timeout)
        if isinstance(wait, AwaitApproval):
            suspend_key = approval_key(p.id, len(thread.for_proposal(DecisionEvent, p.id)))
            count = self.agent.tally(thread, p)
            tool = self.agent.tool(p.intent)
            assert tool is not None  # the reducer escalates an unknown tool before asking anyone
            editable = editable_fields(tool, count.policy)
            signers = self._allowed_signers()
            sign = (f"microagents approve {self.scope} --digest {p.digest[:12]} --as <your name> --sign "
                    "~/.ssh/id_ed25519" if count.policy.signed or signers else "")
            who = ", ".join(sorted(count.may_approve)) if count.may_approve is not None else count.policy.describe()

            def approval(expires: str | None) -> Any:
                return approval_form(p.digest, _request(self.agent, thread, p, "approval.md.j2", expires, expiry, count),
                                     expires, count.may_approve, count.excluded,
                                     argument_fields(tool, p.args, editable), sign, count.policy.signed,
                                     on_expiry=expiry.on_expiry)

            self._publish(thread, f"awaiting approval of {p.intent}", suspend_key)
            answer = _suspend(approval, suspend_key, expiry, self.logger, f"approval of {p.intent} {p.args}",
                              self.scope, who)
            if isinstance(answer, Deadline):
                return _expired(p, answer, "approved")
            # The form's answer field is named after p.digest and the server refuses any other: bound.
            verdict = decision_of(answer, p.digest)
            decision: Literal["approved", "rejected"] = "approved" if verdict == "approve" else "rejected"
            approver = answer.approver or "unknown"
            edits = changed(p, edited_values(answer, editable)) if decision == "approved" else {}
            signature = str(getattr(answer, "signature", "") or "")
            verified, verification = False, ""
            if signature:
                text = signed_text(self.scope, p.digest, verdict, approver, answer.feedback, edits)
                verified, verification = verify_signature(text, signature, approver, signers, suspend_key)
            return DecisionEvent(proposal_id=p.id, proposal_digest=p.digest, decision=decision,
                                 feedback=answer.feedback, approver=approver, edits=edits, signature=signature,
                                 verified=verified, verification=verification,
                                 at=_answered_at(self.scope, suspend_key))
        suspend_key = answer_key(p.id, len(thread.for_proposal(AnswerEvent, p.id)))
        self._publish(thread, f"waiting for an answer to {p.id}", suspend_key)

        def question(expires: str | None) -> Any:
            return answer_form(p.digest, _request(self.agent, thread, p, "question.md.j2", expires, expiry), expires,
                               on_expiry=expiry.on_expiry)

        reply_in = _suspend(question, suspend_key, expiry, self.logger, f"an answer to {p.args}", self.scope,
                            "anyone who can resume the run")
        if isinstance(reply_in, Deadline):
            return _expired(p, reply_in, "answered")
        return AnswerEvent(proposal_id=p.id, answer=answer_of(reply_in, p.digest), by=reply_in.by or "unknown",
                           at=_answered_at(self.scope, suspend_key))

    def _allowed_signers(self) -> str | None:
        """The allowed-signers file: the approvers file's `allowed_signers`, else $AGENT_ALLOWED_SIGNERS."""
        found = self.agent.approvers.allowed_signers_path() if self.agent.approvers is not None else None
        where = str(found) if found is not None else os.environ.get(ALLOWED_SIGNERS_ENV) or None
        return str(Path(where).expanduser().resolve()) if where else None

    def began(self, key: str) -> bool:
        return ExecutionLedger().status(key)[0] == "started"

    def execute(self, binding: Binding[Any], call: Tool, ctx: ToolContext) -> ResultEvent | ErrorEvent:
        return execute_call(binding, call, ctx)

    def recorded(self, thread: Thread, cause: Action | None) -> None:
        self.store.save(self.scope, self.agent.name, thread)  # nothing lost: persisted before the next step starts
        if cause is None:
            return
        event = thread.events[-1]
        publish_audit(self.agent, thread, self.scope)  # a decision or an approved call's outcome: a new version
        if self.on_event is not None:
            self.on_event(thread, event)
        match cause:
            case AskModel(step=step) if isinstance(event, ErrorEvent):  # proposals are logged where they lead
                self.logger.warning("%s step %d: %s", self.agent.name, step, _describe(event))
            case Execute(proposal=p) if isinstance(event, ResultEvent | ErrorEvent):
                self.logger.info("%s step %d executed %s: %s", self.agent.name, model_steps(thread), _describe(p),
                                 _describe(event))

    def halted(self, thread: Thread, outcome: str) -> None:
        self.logger.info("%s agent %s: %s", self.agent.name, outcome, _describe(thread.events[-1]))
        self._publish(thread, outcome, f"end-{thread.digest()[:16]}")
        publish_audit(self.agent, thread, self.scope, halted=True)

    def _publish(self, thread: Thread, status: str, version: str) -> None:
        publish_thread(key=self.artifact, version=version,
                       markdown=thread_markdown(self.agent.name, thread, status, self.agent),
                       description=f"{self.agent.name} agent thread: {status}")


def _expired(p: ProposalEvent, deadline: Deadline, what: str) -> ErrorEvent:
    """The reason the agent reads when nobody decided in time under a `reject` expiry policy."""
    return ErrorEvent(kind="approval_expired", proposal_id=p.id, message=(
        f"nobody {what} {p.intent} {canonical_json(p.args)} within {deadline.timeout_s} s (deadline {deadline.text()}; "
        f"who could decide: {deadline.who}); under this tool's expiry policy ({deadline.on_expiry}) the call was not "
        "run. Propose again only if it is still needed, or finish and say it was not approved."))


def _request(agent: Agent, thread: Thread, p: ProposalEvent, template: str, expires: str | None,
             expiry: Expiry, count: Tally | None = None) -> str:
    """The form's description; `count`: the approval's tally, which the caller has already taken."""
    policy = None
    if count is not None:
        if count.policy != ApprovalPolicy() or count.ignored:  # the default policy needs no words
            policy = {"rule": count.policy.describe(), "quorum": count.policy.quorum, "status": count.status(),
                      "ignored": [why for _, why in count.ignored]}
    return request_markdown(template, agent.name, thread, p, step=model_steps(thread), max_steps=agent.max_steps,
                            expires_at=expires, policy=policy, policies=agent, on_expiry=expiry.on_expiry)


def _suspend(form_for: Callable[[str | None], Any], key: str, expiry: Expiry,
             logger: logging.Logger | logging.LoggerAdapter[logging.Logger], what: str, run_id: str,
             who: str) -> Any:
    """Suspend until a human answers; on replay the stored answer comes back at once. Returns the Deadline instead
    when the wait under `key` is over without an answer (the expiry automation started the run again).

    Prefect skips a suspension whose key already fired, but forgets the fired keys when a run leaves a final state
    (a Crashed run started again by the recovery automation, or Retry in the UI): without this check such a run
    would ask its approvers again. So an answer stored under the key is read back first, whatever restarted us.
    A key that fired with no answer cannot be suspended under again (the server refuses it and Prefect would then
    load an input that does not exist): the wait expired, and the caller records that.
    """
    from prefect.flow_runs import suspend_flow_run
    from prefect.input.actions import read_flow_run_input
    from prefect.input.run_input import keyset_from_base_key

    keyset = keyset_from_base_key(f"suspended-{key}")
    if read_flow_run_input(keyset["response"]) is not None:
        return form_for(None).load(keyset)
    deadline, first = deadline_for(key, expiry, who)
    if not first and unanswered(run_id, key, deadline):
        logger.warning("nobody decided on %s by %s: under its expiry policy (%s) %s", what, deadline.text(),
                       deadline.on_expiry, expiry.describe())
        return deadline
    where = _where_to_answer(run_id)
    ensure_expiry_automations(expiry, logger)  # before the event: a trigger sees only events after it exists
    announce(run_id, key, expiry, deadline, what, where)
    logger.info("waiting for %s (suspend key %s) until %s: %s", what, key, deadline.text(), where)
    return suspend_flow_run(wait_for_input=form_for(deadline.text()), key=key, timeout=prefect_timeout(expiry, deadline))


def _where_to_answer(run_id: str) -> str:
    """Tell approvers where to go, with no notification configured: the run's UI page and the CLI."""
    from prefect.settings import PREFECT_UI_URL

    from prefect_micro_agents.adapter.links import V2_HOW_TO, run_page

    ui = PREFECT_UI_URL.value()
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
