"""Approval policies through the real gate (tests/kit/gate_flow.py served against the session's Prefect server): an
approvers file gives pay_expense a quorum of two from a group, without the person who started the run ("pytest")."""

from __future__ import annotations

import os
from pathlib import Path

import httpx
import pytest

from prefect_micro_agents.adapter.approvals import ApprovalsClient, ResumeRefused
from prefect_micro_agents.adapter.store import ThreadStore
from prefect_micro_agents.testing.scripted import ScriptedModel
from prefect_micro_agents.thread import ReceiptEvent
from expense_gate import DEPLOYMENT, DONE, FLOW, PAY, start
from prefect_harness import Served, flow_state, lines, next_pause, wait_state

pytestmark = pytest.mark.slow

APPROVERS = """
[groups]
finance = ["alice", "bob", "pytest"]

[tools.pay_expense]
approvers = ["@finance"]
quorum = 2
exclude = ["trigger_actor"]
"""


@pytest.fixture
def policed(prefect_server, http: httpx.Client, tmp_path: Path):  # noqa: ANN001, ANN201
    """The gate flow served with AGENT_APPROVERS_FILE set, as a deployment that keeps its approvers file would."""
    (tmp_path / "approvers.toml").write_text(APPROVERS)
    env = {**{k: v for k, v in os.environ.items() if k != "AGENT_MODEL"},
           "AGENT_APPROVERS_FILE": str(tmp_path / "approvers.toml")}
    served = Served(FLOW, env, http, DEPLOYMENT, tmp_path / "serve.log")
    served.deployment_id = served.start()  # type: ignore[attr-defined]
    yield served
    served.stop()


def test_a_quorum_of_two_waits_for_two_distinct_allowed_people_and_then_runs_once(
        policed: Served, http: httpx.Client, approvals: ApprovalsClient, scripted: ScriptedModel,
        effects: Path) -> None:
    scripted.enqueue(PAY, DONE)
    run = start(policed, http, scripted, effects)
    key1 = next_pause(http, run)
    first = approvals.show(run)
    assert first.may_approve == ("alice", "bob")  # the group without the run's trigger actor
    assert "2 distinct approvals from @finance, not the person who started the run" in first.description
    assert "approved by nobody yet (0 of 2); 2 more needed from alice, bob" in first.description

    # Outside the list, or excluded: refused before the run resumes, by the client and by the server itself.
    for who in ("mallory", "pytest"):
        with pytest.raises(ResumeRefused, match=f"'{who}' may not decide on this call"):
            approvals.approve(run, who)
        raw = http.post(f"/flow_runs/{run}/resume",
                        json={"run_input": {first.field: "approve", "feedback": "", "approver": who}})
        refusal = raw.json()
        assert refusal["status"] == "REJECT", raw.text  # the server checks the form's schema before resuming
        assert f"'{who}' is not one of ['alice', 'bob']" in refusal["details"]["reason"]
    assert flow_state(http, run)["name"] == "Suspended" and lines(effects / "pay.log") == []

    approvals.approve(run, "alice")
    key2 = next_pause(http, run, after=key1)  # a new suspension for the missing approval, bound to the same digest
    second = approvals.show(run)
    assert second.proposal_digest == first.proposal_digest
    assert second.may_approve == ("bob",)
    assert "approved by alice (1 of 2); 1 more needed from bob" in second.description
    assert lines(effects / "pay.log") == []  # one approval of two: nothing ran
    with pytest.raises(ResumeRefused, match="'alice' may not decide"):  # the same person counts once
        approvals.approve(run, "alice")

    approvals.approve(run, "bob")
    wait_state(http, run, {"COMPLETED"}, timeout=120)
    assert len(lines(effects / "pay.log")) == 1  # exactly once
    thread = ThreadStore().load(run, "expense")
    assert thread is not None
    receipts = thread.of_type(ReceiptEvent)
    assert [r.approvers for r in receipts] == [("alice", "bob")]
    assert key2 != key1
