"""Cut eval cases from a real run: every human decision on a proposal becomes a labelled thread prefix.

The thread comes from the run's thread artifact (`<agent>-thread-<flow run id>`, latest version), whose Markdown
embeds the thread JSON. An approved proposal becomes a positive case on the prefix before it (expect that intent
and its commits); a rejected one becomes a negative case on the prefix that includes the rejection and its feedback
(the agent must not propose the same call again). Questions, terminal calls and auto tools had no human verdict on
the choice itself, so they are skipped.
"""

from __future__ import annotations

import re
from typing import Any

from pydantic import JsonValue

from prefect_micro_agents.adapter.approvals import ApprovalsClient
from prefect_micro_agents.errors import ConfigurationError
from prefect_micro_agents.evals.suite import ArgCheck, CallPattern, Case, Expect, Suite
from prefect_micro_agents.thread import DecisionEvent, ProposalEvent, Thread

__all__ = ["cases_from_thread", "fetch_threads", "merge", "thread_of_artifact"]

_JSON_BLOCK = re.compile(r"```json\n(.*?)\n```", re.S)
_SHA = re.compile(r"^[0-9a-f]{7,40}$")


def thread_of_artifact(markdown: str) -> Thread:
    found = _JSON_BLOCK.search(markdown)
    if found is None:
        raise ConfigurationError("the artifact embeds no ```json block: it is not a thread artifact")
    return Thread.model_validate_json(found.group(1))


def fetch_threads(client: ApprovalsClient, run_id: str) -> dict[str, Thread]:
    """Agent name -> its thread, from the latest version of each thread artifact of the flow run."""
    body = {"artifacts": {"flow_run_id": {"any_": [run_id]}, "key": {"like_": "-thread-"}},
            "sort": "CREATED_DESC", "limit": 200}
    response = client.request("POST", "/artifacts/filter", json=body)
    response.raise_for_status()
    suffix = f"-thread-{run_id}".lower()
    threads: dict[str, Thread] = {}
    for artifact in response.json():  # newest first: the first of each key is its latest version
        key = artifact.get("key") or ""
        agent = key[: -len(suffix)] if key.endswith(suffix) else ""
        if agent and agent not in threads:
            threads[agent] = thread_of_artifact(artifact.get("data") or "")
    if not threads:
        raise ConfigurationError(f"flow run {run_id} has no thread artifact on {client.http.base_url}: is it a run "
                                 f"of an agent flow, and is PREFECT_API_URL the server it ran on?")
    return threads


def _label(args: dict[str, Any]) -> dict[str, ArgCheck]:
    """Commits must match (abbreviated or not); other non-text values must be equal; free text is not judged."""
    checks = {}
    for name, value in args.items():
        if isinstance(value, str) and _SHA.match(value.lower()):
            checks[name] = ArgCheck(commit=value.lower())
        elif not isinstance(value, str):
            checks[name] = ArgCheck(equals=value)
    return checks


def _call(p: ProposalEvent) -> dict[str, Any]:
    return {"intent": p.intent, **p.args}


def cases_from_thread(thread: Thread, agent: str, run_id: str) -> list[Case]:
    events = thread.events
    proposals = [(i, e) for i, e in enumerate(events) if isinstance(e, ProposalEvent)]
    cases = []
    for n, (i, p) in enumerate(proposals, start=1):
        decided = [(j, d) for j, d in enumerate(events[i + 1:], start=i + 1) if isinstance(d, DecisionEvent)
                   and d.proposal_id == p.id and d.proposal_digest == p.digest]  # void (stale) decisions: no label
        if not decided:
            continue
        j, d = decided[-1]
        source: dict[str, JsonValue] = {"run": run_id, "thread": thread.id, "proposal": p.id, "decision": d.decision, "by": d.approver}
        what = " ".join([p.intent, *(f"{k}={str(v)[:12]}" for k, v in _label(p.args).items())])
        if d.decision == "approved":
            cases.append(Case(id=f"run-{run_id[:8]}-{agent}-call{n}-approved", agent=agent, thread=thread.fork(i),
                              expect=Expect(intent=(p.intent,), args=_label(p.args)), golden=_call(p), source=source,
                              description=f"{d.approver} approved call {n}: {what}", tags=("exported", "approved")))
            continue
        after = next((q for k, q in proposals if k > j), None)  # what the agent did instead, once told
        approved_next = after is not None and any(
            later.decision == "approved" and later.proposal_digest == after.digest
            for later in thread.for_proposal(DecisionEvent, after.id))
        cases.append(Case(
            id=f"run-{run_id[:8]}-{agent}-call{n}-rejected", agent=agent, thread=thread.fork(j + 1),
            expect=Expect(not_call=(CallPattern(intent=p.intent, args=_label(p.args)),)),
            golden=_call(after) if after is not None and approved_next else None, source=source,
            description=f"{d.approver} rejected call {n} ({what}): {d.feedback or 'no feedback'}; "
                        f"the agent must not propose it again", tags=("exported", "rejected")))
    return cases


def merge(existing: Suite, new: list[Case]) -> tuple[Suite, int]:
    """Add cases whose id the suite does not have yet (re-exporting a run is harmless); returns the count added."""
    known = {c.id for c in existing.cases}
    added = [c for c in new if c.id not in known]
    return existing.model_copy(update={"cases": existing.cases + tuple(added)}), len(added)
