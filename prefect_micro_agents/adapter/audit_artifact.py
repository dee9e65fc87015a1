"""The run's audit trail (prefect_micro_agents.audit) as a Prefect table artifact, key `audit-<agent>-<run id>`:
it stays on the server after the run, its worker and its result storage are gone; `microagents audit` reads the
latest version of every such key (prefect_micro_agents.adapter.audit_export).

Durability rule: the flow re-runs from the top on every resume, so each decision and outcome is recorded again. A
version is therefore published by a cached task whose key is the run id plus the digest of the records: a replay
rebuilds the same records at the same point, hits the cache and adds no row and no version.
"""

from __future__ import annotations

from functools import cache
from typing import Any
from uuid import UUID

from prefect import task
from prefect.context import TaskRunContext

from prefect_micro_agents.audit import AUDIT_PREFIX, audit_records
from prefect_micro_agents.thread import AnswerEvent, DecisionEvent, ErrorEvent, ReceiptEvent, ResultEvent, Thread, digest_of
from prefect_micro_agents.tools import Agent

__all__ = ["audit_key", "publish_audit"]


def audit_key(agent: str, run_id: str) -> str:
    """Artifact keys allow lowercase letters, digits and dashes only."""
    raw = f"{AUDIT_PREFIX}{agent}-{run_id}".lower()
    return "".join(c if c.isalnum() or c == "-" else "-" for c in raw)


def publish_audit(agent: Agent, thread: Thread, run_id: str, *, halted: bool = False) -> None:
    """Publish the run's audit records when the event just recorded changes them (a decision, an answer, or the
    outcome of an approved call), and at the end (`halted`); a run without decisions publishes nothing."""
    if not halted and not _audited(thread):
        return
    from prefect.context import FlowRunContext

    ctx = FlowRunContext.get()
    flow_name = ctx.flow.name if ctx is not None and ctx.flow is not None else ""
    deployment_id = ctx.flow_run.deployment_id if ctx is not None and ctx.flow_run is not None else None
    records = audit_records(agent, thread, run_id=run_id, flow_name=flow_name,
                            deployment=_deployment_name(str(deployment_id)) if deployment_id else "")
    if not records:
        return
    decided = sum(1 for r in records if r["kind"] == "decision")
    _publish_table(key=audit_key(agent.name, run_id), version=digest_of(records)[:16], records=records,
                   description=f"{agent.name} agent audit trail: {decided} decision(s), {len(records) - decided} "
                               "answer(s); `microagents audit` exports it as JSON lines")


@cache
def _deployment_name(deployment_id: str) -> str:
    """Read once per process: a deployment's name does not change under its id."""
    from prefect.client.orchestration import get_client

    with get_client(sync_client=True) as client:
        return client.read_deployment(UUID(deployment_id)).name


def _audited(thread: Thread) -> bool:
    last = thread.events[-1] if thread.events else None
    if isinstance(last, DecisionEvent | AnswerEvent):
        return True
    return isinstance(last, ResultEvent | ErrorEvent) and last.proposal_id is not None and \
        bool(thread.for_proposal(ReceiptEvent, last.proposal_id))  # an approved call's outcome, not an auto tool's


def _publish_key(context: TaskRunContext, parameters: dict[str, Any]) -> str:
    return f"audit-{context.task_run.flow_run_id}-{parameters['key']}-{parameters['version']}"


@task(name="publish-audit", persist_result=True, cache_key_fn=_publish_key)
def _publish_table(key: str, version: str, records: list[dict[str, Any]], description: str) -> str:
    """One artifact version per (run, records digest)."""
    from prefect.artifacts import create_table_artifact

    create_table_artifact(table=records, key=key, description=description)
    return key
