"""Markdown for humans: the approval/question description and the thread artifact (one version per suspend)."""

from __future__ import annotations

from typing import Any

from prefect import task
from prefect.context import TaskRunContext

from prefect_micro_agents.prompts import abbreviate_hex, compact, render, render_thread
from prefect_micro_agents.reducer import DIGEST_MISMATCH, void_decisions
from prefect_micro_agents.thread import Event, ProposalEvent, Thread
from prefect_micro_agents.tools import Agent

__all__ = ["artifact_key", "publish_thread", "request_markdown", "summarize", "thread_markdown"]


def artifact_key(agent: str, run_id: str) -> str:
    """Artifact keys allow lowercase letters, digits and dashes only."""
    raw = f"{agent}-thread-{run_id}".lower()
    return "".join(c if c.isalnum() or c == "-" else "-" for c in raw)


def summarize(event: Event, *, void: bool = False, not_counted: str = "") -> str:
    """One line per event for humans; `void`: a decision made for another version of the call (it counts for nothing);
    `not_counted`: why the tool's approval policy does not count this decision."""
    match event.type:
        case "trigger":
            text = f"{event.request} (from {event.source}, {event.actor})"
        case "context":
            text = f"{event.name}: {compact(event.payload)}"
        case "proposal":
            text = f"{event.intent} {compact(event.args)}" + (f" — {event.reason}" if event.reason else "")
        case "decision":
            noun = "approval" if event.decision == "approved" else "rejection"
            verdict = f"VOID {noun}" if void else event.decision
            text = f"{verdict} by {event.approver} at {event.at:%Y-%m-%d %H:%M:%S}Z" + (
                f": {event.feedback}" if event.feedback else "")
            if void:
                text += " (made for another version of the call: not executed, asked again)"
            elif not_counted:
                text = f"NOT COUNTED {noun} by {event.approver} at {event.at:%Y-%m-%d %H:%M:%S}Z: {not_counted}"
            if event.edits:
                text += f"; edits {compact(event.edits)}" + (f" refused: {event.edit_error}" if event.edit_error else "")
            if event.signature:
                text += "; signature verified" if event.verified else "; signature NOT verified"
        case "answer":
            text = f"{event.by}: {event.answer}"
        case "receipt":
            text = (f"approved by {', '.join(event.approvers) or event.approver}; idempotency key "
                    f"{event.idempotency_key}")
        case "result":
            text = f"{event.intent}: {compact(event.output)}"
        case "error":
            text = f"{event.kind}: {event.message}"
        case "done":
            text = event.message
        case "escalation":
            text = event.reason
    return abbreviate_hex(" ".join(str(text).split())).replace("|", "\\|")[:400]


def thread_markdown(agent: str, thread: Thread, status: str, policies: Agent | None = None) -> str:
    """The thread as an artifact; `policies`: the agent whose approval policies judge its decisions."""
    void = void_decisions(thread, policies)
    rows = [{"type": e.type, "detail": summarize(e, void=void.get(i) == DIGEST_MISMATCH,
                                                 not_counted=void.get(i, "") if void.get(i) != DIGEST_MISMATCH else "")}
            for i, e in enumerate(thread.events)]
    return render("thread_artifact.md.j2", agent=agent, status=status, rows=rows, n_events=len(thread.events),
                  digest=thread.digest(), thread_json=thread.model_dump_json(indent=1))


def request_markdown(template: str, agent: str, thread: Thread, proposal: ProposalEvent, *, step: int,
                     max_steps: int, expires_at: str | None, policy: dict[str, Any] | None = None,
                     policies: Agent | None = None, on_expiry: str | None = None) -> str:
    """The description above an approval or answer form: the call, why, and the context a reviewer needs."""
    contexts = [{"name": e.name, "text": abbreviate_hex(compact(e.payload))} for e in thread.events if e.type == "context"]
    # The context is shown above; `people` stays in the story: approval policies read who holds which role from it.
    story = Thread(id=thread.id, events=tuple(e for e in thread.events if e.type != "context" or e.name == "people"))
    return render(template, agent=agent, proposal=proposal.model_dump(mode="json"), contexts=contexts,
                  thread_text=render_thread(story, agent=policies), step=step, max_steps=max_steps, expires_at=expires_at,
                  digest=proposal.digest, policy=policy, on_expiry=on_expiry)


def _publish_key(context: TaskRunContext, parameters: dict[str, Any]) -> str:
    return f"publish-{context.task_run.flow_run_id}-{parameters['key']}-{parameters['version']}"


@task(name="publish-thread", persist_result=True, cache_key_fn=_publish_key)
def publish_thread(key: str, version: str, markdown: str, description: str) -> str:
    """One artifact version per (run, version); a replay after resume hits the cache and adds nothing."""
    from prefect.artifacts import create_markdown_artifact  # imported here: it costs 0.1 s of every replay's start

    create_markdown_artifact(markdown=markdown, key=key, description=description)
    return key
