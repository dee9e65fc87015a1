"""Approval policies through the real gate (tests/kit/gate_flow.py served against the session's Prefect server): an
approvers file gives pay_expense a quorum of two from a group, without the person who started the run ("pytest")."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from prefect_micro_agents.adapter.approvals import ApprovalsClient, ResumeRefused
from prefect_micro_agents.adapter.store import ThreadStore
from prefect_micro_agents.testing.scripted import ScriptedModel
from prefect_micro_agents.thread import DecisionEvent, ProposalEvent, ReceiptEvent
from expense_gate import DEPLOYMENT, DONE, FLOW, PAY, RECEIPT as RECEIPT_VALUE, start
from ssh_keys import allowed_signers, keypair
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


# Signed approvals: alice's and bob's keys are in the allowed-signers file next to the approvers file.
SIGNED = """
allowed_signers = "allowed_signers"

[tools.pay_expense]
approvers = ["alice", "bob"]
signed = true
"""

# Approve with edits: the receipt may be changed by an approver; two approvals needed.
EDITABLE = """
[tools.pay_expense]
approvers = ["alice", "bob"]
quorum = 2
editable = ["receipt"]
"""
OTHER = "0a1b2c3d4e5f60718293a4b5c6d7e8f90a1b2c3d"  # the receipt an approver corrects the call to


@pytest.fixture
def policed(request: pytest.FixtureRequest, prefect_server, http: httpx.Client, tmp_path: Path):  # noqa: ANN001, ANN201
    """The gate flow served with AGENT_APPROVERS_FILE set, as a deployment that keeps its approvers file would
    (the file's text: the test's indirect parameter, else APPROVERS)."""
    (tmp_path / "approvers.toml").write_text(getattr(request, "param", APPROVERS))
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


def _cli(prefect_server, *args: str) -> subprocess.CompletedProcess[str]:  # noqa: ANN001
    env = {**os.environ, "PREFECT_API_URL": prefect_server.api_url}
    if prefect_server.auth_string:
        env["PREFECT_API_AUTH_STRING"] = prefect_server.auth_string
    return subprocess.run([sys.executable, "-m", "prefect_micro_agents.cli", *args], env=env, capture_output=True,
                          text=True, timeout=60)


@pytest.mark.parametrize("policed", [SIGNED], indirect=True)
def test_only_a_verified_signature_counts_and_tampered_ones_are_recorded_unverified(
        policed: Served, http: httpx.Client, approvals: ApprovalsClient, scripted: ScriptedModel, effects: Path,
        prefect_server, tmp_path: Path) -> None:  # noqa: ANN001
    from prefect_micro_agents.signing import sign, signed_text

    alice, bob = keypair(tmp_path, "alice"), keypair(tmp_path, "bob")
    allowed_signers(tmp_path / "allowed_signers", alice=alice, bob=bob)
    scripted.enqueue(PAY, DONE)
    run = start(policed, http, scripted, effects)
    key = next_pause(http, run)
    shown = _cli(prefect_server, "show", run)
    assert shown.returncode == 0, shown.stderr
    assert "signatures (approve --sign KEY): required" in shown.stdout
    pending = approvals.show(run)
    schema = http.get(f"/flow_runs/{run}/input/suspended-{key}-schema").json()
    schema = json.loads(schema) if isinstance(schema, str) else schema
    assert f"microagents approve {run} --digest {pending.proposal_digest[:12]}" in \
        schema["properties"]["signature"]["description"]  # the form shows the exact command to sign

    def resume_signed(text: bytes, with_key: Path, decision: str = "approve") -> None:
        current = approvals.show(run)
        approvals.resume(run, {current.field: decision, "feedback": "", "approver": "alice",
                               "signature": sign(text, with_key)})

    digest = pending.proposal_digest
    tampered = [
        ("unsigned, as from the UI", None),
        ("another digest", (signed_text(run, "0" * 64, "approve", "alice"), alice)),
        ("another key", (signed_text(run, digest, "approve", "alice"), bob)),
        ("another decision", (signed_text(run, digest, "reject", "alice"), alice)),
        ("another run", (signed_text("5b0c6c2e-0000-4000-8000-000000000000", digest, "approve", "alice"), alice)),
    ]
    for what, signed in tampered:
        if signed is None:
            approvals.approve(run, "alice")
        else:
            resume_signed(*signed)
        key = next_pause(http, run, after=key)  # not counted: asked again, nothing ran
        assert lines(effects / "pay.log") == [], what
        assert "approved by nobody yet (0 of 1)" in approvals.show(run).description, what

    done = _cli(prefect_server, "approve", run, "--as", "alice", "--sign", str(alice))
    assert done.returncode == 0, done.stderr
    wait_state(http, run, {"COMPLETED"}, timeout=120)
    assert len(lines(effects / "pay.log")) == 1
    thread = ThreadStore().load(run, "expense")
    assert thread is not None
    decisions = thread.of_type(DecisionEvent)
    assert [d.verified for d in decisions] == [False] * len(tampered) + [True]
    assert decisions[0].verification == "" and not decisions[0].signature
    assert all("does not verify for alice" in d.verification for d in decisions[1:-1])
    assert 'Good "microagents-approval" signature for alice' in decisions[-1].verification
    assert thread.of_type(ReceiptEvent)[0].approver == "alice"


@pytest.mark.parametrize("policed", [EDITABLE], indirect=True)
def test_an_approver_edits_the_call_the_edited_call_needs_the_quorum_runs_once_and_the_receipt_binds_it(
        policed: Served, http: httpx.Client, approvals: ApprovalsClient, scripted: ScriptedModel,
        effects: Path) -> None:
    scripted.enqueue(PAY, DONE)
    run = start(policed, http, scripted, effects)
    key = next_pause(http, run)
    first = approvals.show(run)
    assert first.editable == {"receipt": RECEIPT_VALUE}

    # Refused by the server before the run resumes: a value the tool's schema refuses, an argument not editable.
    for bad, why in (({"arg_receipt": "NOT A HASH"}, "does not match"), ({"arg_amount": "1"}, "arg_amount")):
        raw = http.post(f"/flow_runs/{run}/resume", json={"run_input": {
            first.field: "approve", "feedback": "", "approver": "alice", **bad}}).json()
        assert raw["status"] == "REJECT" and why in raw["details"]["reason"], raw
    with pytest.raises(ResumeRefused, match="does not let an approver change amount"):
        approvals.approve(run, "alice", edits={"amount": "1"})
    assert flow_state(http, run)["name"] == "Suspended"

    approvals.approve(run, "alice", feedback="wrong receipt", edits={"receipt": OTHER})
    key = next_pause(http, run, after=key)
    second = approvals.show(run)
    assert second.proposal_digest != first.proposal_digest  # the edited call has its own digest
    assert second.editable == {"receipt": OTHER} and second.may_approve == ("bob",)
    assert "approved by alice (1 of 2); 1 more needed from bob" in second.description
    assert lines(effects / "pay.log") == []

    approvals.approve(run, "bob")
    wait_state(http, run, {"COMPLETED"}, timeout=120)
    paid = lines(effects / "pay.log")
    assert len(paid) == 1 and paid[0].endswith(OTHER)  # the edited arguments executed, once
    thread = ThreadStore().load(run, "expense")
    assert thread is not None
    edited = [p for p in thread.of_type(ProposalEvent) if p.edited_by]
    assert [(p.edited_by, p.args["receipt"]) for p in edited] == [("alice", OTHER)]
    receipt = thread.of_type(ReceiptEvent)[0]
    assert receipt.proposal_id == edited[0].id and receipt.proposal_digest == second.proposal_digest
    assert receipt.approvers == ("alice", "bob")
    # The model's next request shows the edit: who, from what, to what.
    last = scripted.requests()[-1]
    text = json.dumps(last)
    assert "alice" in text and RECEIPT_VALUE[:12] in text and OTHER[:12] in text
