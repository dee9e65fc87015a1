"""The audit trail (issue 14): one record per decision and answer, with who, when, the digest, whether the approval
policy counts it and what ran (prefect_micro_agents.audit); published per run as a table artifact and exported by
`microagents audit` as JSON lines (the served gate flow, tests/kit/gate_flow.py, against the session's server)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest

import purity
from prefect_micro_agents.adapter.approvals import ApprovalsClient
from prefect_micro_agents.approval_policy import Approvers, PolicyOverride
from prefect_micro_agents.audit import AUDIT_FIELDS, audit_records
from prefect_micro_agents.edits import edited_call
from prefect_micro_agents.reducer import DIGEST_MISMATCH
from prefect_micro_agents.testing.scripted import ScriptedModel
from prefect_micro_agents.thread import (
    AnswerEvent, DecisionEvent, ErrorEvent, ProposalEvent, ReceiptEvent, ResultEvent, Thread,
)
from expense_gate import DONE, FILE, PAY, RECEIPT, start
from prefect_harness import Served, lines, next_pause, retrying, wait_state
from toy_agent import AGENT, AT, NEW, expense_context, proposal

LATER = AT + timedelta(minutes=5)
KEY = "run-1:expense-2:eee7f6d4091d845d"


def decision(p: ProposalEvent, verdict: str, approver: str, *, at: datetime = AT, feedback: str = "",
             digest: str | None = None) -> DecisionEvent:
    return DecisionEvent(proposal_id=p.id, proposal_digest=digest or p.digest, decision=verdict, feedback=feedback,
                         approver=approver, at=at)  # type: ignore[arg-type]


def receipt(p: ProposalEvent, key: str, *approvers: str) -> ReceiptEvent:
    return ReceiptEvent(proposal_id=p.id, proposal_digest=p.digest, args_digest=p.args_digest, approver=approvers[0],
                        approved_at=LATER, idempotency_key=key, approvers=approvers if len(approvers) > 1 else ())


def reject_then_pay_then_file() -> tuple[Thread, list[ProposalEvent]]:
    """Filing before paying rejected with feedback; paying approved and run; filing approved and failed."""
    p1, p2, p3 = (proposal("file_expense", 1, receipt=NEW), proposal("pay_expense", 2, receipt=NEW),
                  proposal("file_expense", 3, receipt=NEW))
    thread = expense_context().append(
        p1, decision(p1, "rejected", "alice", feedback="pay it first"),
        p2, decision(p2, "approved", "bob", at=LATER), receipt(p2, KEY, "bob"),
        ResultEvent(proposal_id=p2.id, intent=p2.intent, output={"paid": "84.20", "to": "ana"}, idempotency_key=KEY),
        p3, decision(p3, "approved", "bob", at=LATER), receipt(p3, "run-1:expense-3:64d319c1700f87e2", "bob"),
        ErrorEvent(kind="tool_error", message="LedgerClosed: 2026-11 is closed", proposal_id=p3.id))
    return thread, [p1, p2, p3]


def test_each_decision_is_one_record_with_who_when_the_digest_and_what_ran() -> None:
    thread, (p1, p2, p3) = reject_then_pay_then_file()
    with purity.watch() as impure:
        records = audit_records(AGENT, thread, run_id="run-1", flow_name="expense-gate", deployment="gate")
    assert impure == [], "audit_records must be pure:\n" + "\n".join(impure)

    assert [(r["seq"], r["proposal_id"], r["intent"], r["decision"], r["approver"], r["feedback"]) for r in records] == [
        (4, p1.id, "file_expense", "rejected", "alice", "pay it first"),
        (6, p2.id, "pay_expense", "approved", "bob", ""),
        (10, p3.id, "file_expense", "approved", "bob", "")]
    rejected, paid, filed = records
    assert rejected["proposal_digest"] == p1.digest and paid["proposal_digest"] == p2.digest
    assert paid["args"] == {"receipt": NEW} and paid["args_digest"] == p2.args_digest
    assert (rejected["at"], paid["at"]) == ("2026-11-26T12:00:00Z", "2026-11-26T12:05:00Z")
    assert rejected["executed"] is None and rejected["result"] is None  # a rejected call never ran
    assert paid["executed"] == {"idempotency_key": KEY, "approvers": ["bob"], "approved_at": "2026-11-26T12:05:00Z"}
    assert paid["result"] == {"output": {"paid": "84.20", "to": "ana"}}
    assert filed["result"] == {"error": {"kind": "tool_error", "message": "LedgerClosed: 2026-11 is closed"}}
    assert all(r["counted"] and r["not_counted"] == "" for r in records)
    assert {json.dumps(r["trigger"]) for r in records} == {json.dumps(
        {"source": "expense.filed", "actor": "ana", "request": f"pay back receipt {NEW}: team lunch, 84.20 EUR"})}
    assert {(r["run_id"], r["flow_name"], r["deployment"], r["agent"], r["thread_id"], r["kind"]) for r in records} == {
        ("run-1", "expense-gate", "gate", "expense", "expense-thread", "decision")}
    assert all(tuple(r) == AUDIT_FIELDS for r in records)  # stable keys, in a stable order
    assert json.loads(json.dumps(records)) == records  # JSON as it is


def test_an_approved_call_shows_no_execution_until_its_receipt_is_recorded() -> None:
    thread, (_, p2, _) = reject_then_pay_then_file()
    approved_only = thread.fork(7, id=thread.id)  # up to the approval of p2, before its receipt
    [_, paid] = audit_records(AGENT, approved_only, run_id="run-1")
    assert paid["decision"] == "approved" and paid["executed"] is None and paid["result"] is None
    handed_over = thread.fork(8, id=thread.id)  # the receipt, no result yet: handed to the tool, outcome unknown
    [_, paid] = audit_records(AGENT, handed_over, run_id="run-1")
    assert paid["executed"] is not None and paid["executed"]["idempotency_key"] == KEY and paid["result"] is None


def test_a_decision_that_does_not_count_says_why() -> None:
    """Under a policy (approvers from @finance, quorum 2, not the trigger's actor), each ignored decision is a record
    with counted false and the policy's reason; a decision bound to another version of the call too."""
    policed = replace(AGENT, approvers=Approvers(
        groups={"finance": ("alice", "bob", "ana")},
        tools={"pay_expense": PolicyOverride(approvers=("@finance",), quorum=2, exclude=("trigger_actor",))}))
    p = proposal("pay_expense", 1, receipt=NEW)
    thread = expense_context().append(
        p, decision(p, "approved", "mallory"), decision(p, "approved", "ana"),
        decision(p, "approved", "alice", digest="0" * 64), decision(p, "approved", "alice"),
        decision(p, "approved", "alice"), decision(p, "approved", "bob"),
        receipt(p, "run-2:expense-1:eee7f6d4091d845d", "alice", "bob"),
        ResultEvent(proposal_id=p.id, intent=p.intent, output={"paid": "84.20"}))
    records = audit_records(policed, thread, run_id="run-2")
    assert [(r["approver"], r["counted"], r["not_counted"]) for r in records] == [
        ("mallory", False, "mallory is not among the approvers (@finance)"),
        ("ana", False, "ana is this run's trigger_actor, who may not approve"),
        ("alice", False, DIGEST_MISMATCH),
        ("alice", True, ""),
        ("alice", False, "alice approved already; one person counts once"),
        ("bob", True, "")]
    assert records[2]["executed"] is None  # bound to a version that never ran
    assert {json.dumps(r["executed"]) for i, r in enumerate(records) if i != 2} == {json.dumps(
        {"idempotency_key": "run-2:expense-1:eee7f6d4091d845d", "approvers": ["alice", "bob"],
         "approved_at": "2026-11-26T12:05:00Z"})}


def test_an_answer_is_a_record_of_who_answered_what() -> None:
    q = proposal("ask_submitter", 1, question="Was this a client lunch?")
    thread = expense_context().append(q, AnswerEvent(proposal_id=q.id, answer="yes, with Acme", by="ana", at=LATER))
    [answer] = audit_records(AGENT, thread, run_id="run-3")
    assert (answer["kind"], answer["decision"], answer["approver"], answer["feedback"], answer["at"]) == (
        "answer", "answered", "ana", "yes, with Acme", "2026-11-26T12:05:00Z")
    assert answer["proposal_digest"] == q.digest and answer["args"] == {"question": "Was this a client lunch?"}
    assert answer["counted"] is True and answer["executed"] is None and tuple(answer) == AUDIT_FIELDS


def test_a_signed_approval_with_edits_and_the_edited_call_it_ran_are_on_record() -> None:
    """alice approves with the receipt corrected (signed, verified); the edited call replaces the original, bob
    approves it too, and it runs: the record says who edited what, who verified, and what ran for which version."""
    agent = replace(AGENT, approvers=Approvers(tools={"pay_expense": PolicyOverride(editable=("receipt",),
                                                                                        quorum=2)}))
    p = proposal("pay_expense", 1, receipt=NEW)
    other = "0a1b2c3d4e5f60718293a4b5c6d7e8f90a1b2c3d"
    edit = decision(p, "approved", "alice").model_copy(update={
        "edits": {"receipt": other}, "signature": "-----BEGIN SSH SIGNATURE-----", "verified": True,
        "verification": 'Good "microagents-approval" signature for alice'})
    thread = expense_context().append(p, edit)
    edited, alice = edited_call(agent, thread, edit)
    bob = decision(edited, "approved", "bob", at=LATER)
    key = f"run-4:{edited.id}:{edited.args_digest[:16]}"
    thread = thread.append(edited, alice, bob, ReceiptEvent(
        proposal_id=edited.id, proposal_digest=edited.digest, args_digest=edited.args_digest, approver="alice",
        approved_at=AT, approvers=("alice", "bob"), idempotency_key=key), ResultEvent(
        proposal_id=edited.id, intent="pay_expense", output={"paid": "84.20"}, idempotency_key=key))
    records = audit_records(agent, thread, run_id="run-4")
    assert all(tuple(r) == AUDIT_FIELDS for r in records)  # the fields for signatures and edits are first-class
    first, by_alice, by_bob = records
    assert (first["edits"], first["counted"], first["verified"], first["executed"]) == (
        {"receipt": other}, False, True, None)  # it replaced the original call, which never ran
    assert "approved an edited call instead" in first["not_counted"]
    assert (by_alice["proposal_id"], by_alice["proposal_edited_by"], by_alice["proposal_edited_from"]) == (
        edited.id, "alice", p.id)
    assert by_alice["args"] == {"receipt": other} and by_alice["verified"] and by_alice["counted"]
    assert by_bob["verified"] is False and by_bob["verification"] == "" and by_bob["counted"]
    assert by_bob["executed"] == {"idempotency_key": key, "approvers": ["alice", "bob"], "approved_at": "2026-11-26T12:00:00Z"}
    assert by_bob["result"] == {"output": {"paid": "84.20"}}


def audit_cli(*args: str) -> subprocess.CompletedProcess[str]:
    """`microagents audit` in its own process, against the session server (PREFECT_API_URL in the environment)."""
    return subprocess.run([sys.executable, "-m", "prefect_micro_agents.cli", "audit", *args], env=dict(os.environ),
                          capture_output=True, text=True, timeout=120)


def records_of(out: subprocess.CompletedProcess[str], run: str) -> list[dict[str, Any]]:
    assert out.returncode == 0, out.stderr
    return [r for r in map(json.loads, out.stdout.splitlines()) if r["run_id"] == run]  # other tests' runs aside


@pytest.mark.slow
def test_the_served_gate_publishes_an_audit_trail_that_microagents_audit_exports_after_the_run(
        gate: Served, http: httpx.Client, approvals: ApprovalsClient, scripted: ScriptedModel, effects: Path) -> None:
    since = (datetime.now(UTC) - timedelta(seconds=5)).isoformat()
    scripted.enqueue(FILE, PAY, DONE)
    run = start(gate, http, scripted, effects)
    key1 = next_pause(http, run)
    digest_file = approvals.show(run).proposal_digest
    approvals.reject(run, "alice", "pay it first")
    next_pause(http, run, after=key1)
    digest_pay = approvals.show(run).proposal_digest
    approvals.approve(run, "bob")
    wait_state(http, run, {"COMPLETED"}, timeout=120)
    [paid_line] = lines(effects / "pay.log")

    # One version per change of the records (the rejection; the approval; the payment's result); the resumes
    # replayed the rejection and the approval, and the end changed nothing: no duplicate rows, no extra versions.
    versions = retrying(http.post, "/artifacts/filter",
                        json={"artifacts": {"key": {"any_": [f"audit-expense-{run}"]}}}).json()
    assert len(versions) == 3 and {v["type"] for v in versions} == {"table"}
    assert len(json.loads(max(versions, key=lambda v: v["created"])["data"])) == 2

    # The trail outlives the run: its flow run is deleted, the audit artifact and the export stay.
    assert retrying(http.delete, f"/flow_runs/{run}").status_code == 204
    rejected, approved = records_of(audit_cli("--since", since), run)
    assert (rejected["decision"], rejected["approver"], rejected["feedback"], rejected["intent"]) == (
        "rejected", "alice", "pay it first", "file_expense")
    assert rejected["proposal_digest"] == digest_file and rejected["executed"] is None
    assert (approved["decision"], approved["approver"], approved["intent"], approved["args"]) == (
        "approved", "bob", "pay_expense", {"receipt": RECEIPT})
    assert approved["proposal_digest"] == digest_pay and approved["counted"] is True
    key = approved["executed"]["idempotency_key"]
    assert paid_line == f"{key} {RECEIPT}" and approved["executed"]["approvers"] == ["bob"]  # what ran, under which key
    assert approved["result"] == {"output": {"book": "pay", "receipt": RECEIPT}}
    assert (approved["flow_name"], approved["deployment"], approved["agent"]) == ("expense-gate", "gate", "expense")
    assert approved["trigger"]["actor"] == "pytest"
    at = [datetime.fromisoformat(r["at"]) for r in (rejected, approved)]
    assert datetime.fromisoformat(since) <= at[0] < at[1] <= datetime.now(UTC)  # the server's times of the answers

    assert records_of(audit_cli("--since", since, "--approver", "BOB", "--intent", "pay_expense"), run) == [approved]
    assert records_of(audit_cli("--since", since, "--until", approved["at"]), run) == [rejected]
    future = audit_cli("--since", (datetime.now(UTC) + timedelta(days=1)).date().isoformat())
    assert future.returncode == 0 and future.stdout == ""
    bad = audit_cli("--since", "last tuesday")
    assert bad.returncode != 0 and bad.stdout == ""
    assert "--since: 'last tuesday' is not an ISO date or datetime (e.g. 2026-11-26" in bad.stderr
