"""A decision made for another version of a call counts for nothing, and the deploy bot's records say so.

The gate's forms make the server refuse such answers (tests/kit/test_gate.py), but a thread can still hold one (a
plain-Python runner, an imported or older thread); the report and the rollback agent's summary must never show it as
"approved by X". (The kit's own records, the model's thread and the artifact: tests/kit/test_void_approvals.py.)
"""

from __future__ import annotations

import dataclasses

from prefect_micro_agents import Approvers, DecisionEvent, ReceiptEvent, ResultEvent, Thread
from agents.deploybot import DEPLOY_AGENT
from factories import AT, NEW, deploy_context, proposal
from flows.prefetch import deploy_summary
from flows.report import agent_rows

STALE = "f" * 64


def stale_then_valid() -> Thread:
    """mallory approves with another proposal's digest (void); alice approves; it runs under alice's receipt."""
    p = proposal("deploy_backend_to_prod", 1, sha=NEW)
    return deploy_context().append(
        p,
        DecisionEvent(proposal_id=p.id, proposal_digest=STALE, decision="approved", approver="mallory", at=AT),
        DecisionEvent(proposal_id=p.id, proposal_digest=p.digest, decision="approved", approver="alice", at=AT),
        ReceiptEvent(proposal_id=p.id, proposal_digest=p.digest, args_digest=p.args_digest, approver="alice",
                     approved_at=AT, idempotency_key="run:deploy-1:abc"),
        ResultEvent(proposal_id=p.id, intent=p.intent, output={"service": "backend", "sha": NEW, "ok": True,
                                                               "noop": False}, idempotency_key="run:deploy-1:abc"),
    )


def test_the_report_and_the_rollback_summary_name_the_real_approver() -> None:
    thread = stale_then_valid()
    (row,) = agent_rows("deploy", thread, [])
    assert row["by"].startswith("VOID approval by mallory") and "approved by alice" in row["by"]
    assert "approved by mallory" not in row["by"]
    summary = deploy_summary(thread, NEW)
    assert summary["ran"] == [{"call": "deploy_backend_to_prod", "sha": NEW, "approved_by": "alice", "ok": True}]


def test_a_void_rejection_is_not_a_rejection_in_the_report_or_the_summary() -> None:
    p = proposal("deploy_frontend_to_prod", 1, sha=NEW)
    thread = deploy_context().append(p, DecisionEvent(proposal_id=p.id, proposal_digest=STALE, decision="rejected",
                                                      feedback="no", approver="mallory", at=AT))
    assert deploy_summary(thread, NEW)["rejected"] == "none"
    (row,) = agent_rows("deploy", thread, [])
    assert row["outcome"] == "proposed" and row["by"].startswith("VOID rejection by mallory")


def test_decisions_the_approval_policy_does_not_count_are_reported_as_not_counted() -> None:
    """Under a policy (alice or bob, signed), mallory's approval and alice's unsigned one count for nothing; the report
    says so and why, and the rollback agent's summary names only who counted (the receipt)."""
    policies = dataclasses.replace(DEPLOY_AGENT, approvers=Approvers.model_validate(
        {"tools": {"deploy_backend_to_prod": {"approvers": ["alice", "bob"], "signed": True}}}))
    p = proposal("deploy_backend_to_prod", 1, sha=NEW)
    thread = deploy_context().append(
        p,
        DecisionEvent(proposal_id=p.id, proposal_digest=p.digest, decision="approved", approver="mallory", at=AT),
        DecisionEvent(proposal_id=p.id, proposal_digest=p.digest, decision="approved", approver="alice", at=AT),
        DecisionEvent(proposal_id=p.id, proposal_digest=p.digest, decision="approved", approver="bob", at=AT,
                      signature="-----BEGIN SSH SIGNATURE-----", verified=True, verification="Good signature"),
        ReceiptEvent(proposal_id=p.id, proposal_digest=p.digest, args_digest=p.args_digest, approver="bob",
                     approved_at=AT, idempotency_key="run:deploy-1:abc"),
        ResultEvent(proposal_id=p.id, intent=p.intent, output={"service": "backend", "sha": NEW, "ok": True,
                                                               "noop": False}, idempotency_key="run:deploy-1:abc"),
    )
    (row,) = agent_rows("deploy", thread, [], policies)
    said = row["by"].split("; ")
    assert said[0].startswith("NOT COUNTED approval by mallory: mallory is not among the approvers"), said
    assert said[1].startswith("NOT COUNTED approval by alice: alice's approval is not verified (not signed)"), said
    assert said[2] == "approved by bob (signed, verified)", said
    assert deploy_summary(thread, NEW, policies)["ran"][0]["approved_by"] == "bob"
    (unjudged,) = agent_rows("deploy", thread, [])  # without the policy the report could not tell: it must be given
    assert "approved by mallory" in unjudged["by"]
