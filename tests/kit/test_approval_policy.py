"""Approval policies in the reducer (prefect_micro_agents.approval_policy): who may approve, how many distinct people
must, who may not, and the approvers file that overrides a tool's own policy per deployment. Pure: threads in, actions
out (the server-backed gate tests run the same rules through Prefect's suspend/resume)."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from prefect_micro_agents.approval_policy import ApprovalPolicy, Approvers, load_approvers
from prefect_micro_agents.errors import ConfigurationError
from prefect_micro_agents.execution import receipt
from prefect_micro_agents.reducer import AwaitApproval, Escalate, Execute, apply, next_action
from prefect_micro_agents.thread import ContextEvent, DecisionEvent, ProposalEvent, Thread
from toy_agent import AGENT, AT, NEW, expense_context, proposal

TEAM = """
[groups]
finance = ["alice", "bob", "carol"]

[tools.pay_expense]
approvers = ["@finance"]
quorum = 2
exclude = ["trigger_actor"]
"""


@pytest.fixture
def team(tmp_path: Path) -> Approvers:
    (tmp_path / "approvers.toml").write_text(TEAM)
    found = load_approvers(tmp_path / "approvers.toml")
    assert found is not None
    return found


def by(thread: Thread, p: ProposalEvent, who: str, decision: str = "approved", feedback: str = "") -> Thread:
    return thread.append(DecisionEvent(proposal_id=p.id, proposal_digest=p.digest, decision=decision,
                                       feedback=feedback, approver=who, at=AT))


def pay() -> tuple[Thread, ProposalEvent]:
    p = proposal("pay_expense", 1, receipt=NEW)
    return expense_context().append(p), p


def test_without_a_policy_one_approval_from_anyone_runs_the_call_as_before() -> None:
    thread, p = pay()
    action = next_action(AGENT, by(thread, p, "zoe"))
    assert isinstance(action, Execute) and action.approval is not None and action.approval.approver == "zoe"


def test_quorum_two_with_one_approval_waits_and_says_who_is_still_needed(team: Approvers) -> None:
    agent = dataclasses.replace(AGENT, approvers=team)
    thread, p = pay()
    thread = by(thread, p, "alice")
    assert next_action(agent, thread) == AwaitApproval(p)
    assert agent.tally(thread, p).status() == "approved by alice (1 of 2); 1 more needed from bob, carol"
    done = by(thread, p, "bob")
    action = next_action(agent, done)
    assert isinstance(action, Execute) and [d.approver for d in action.approvals] == ["alice", "bob"]
    proof = receipt(action, "key")
    assert proof is not None and proof.approver == "alice" and proof.approvers == ("alice", "bob")


def test_the_same_person_approving_twice_counts_once(team: Approvers) -> None:
    agent = dataclasses.replace(AGENT, approvers=team)
    thread, p = pay()
    thread = by(by(thread, p, "alice"), p, "Alice ")  # names compare without case or surrounding blanks
    assert next_action(agent, thread) == AwaitApproval(p)
    tally = agent.tally(thread, p)
    assert len(tally.approved_by) == 1
    assert tally.ignored[0][1] == "Alice  approved already; one person counts once"


def test_an_approver_outside_the_list_counts_for_nothing_not_even_a_rejection(team: Approvers) -> None:
    agent = dataclasses.replace(AGENT, approvers=team)
    thread, p = pay()
    thread = by(by(by(thread, p, "mallory"), p, "alice"), p, "mallory", "rejected", "no")
    assert next_action(agent, thread) == AwaitApproval(p)  # still waiting: nothing ran, nothing was rejected
    reasons = [why for _, why in agent.tally(thread, p).ignored]
    assert reasons == ["mallory is not among the approvers (@finance)"] * 2
    thread = apply(thread, DecisionEvent(proposal_id=p.id, proposal_digest=p.digest, decision="approved",
                                         approver="carol", at=AT), agent)  # the proposal is still open to decide
    assert isinstance(next_action(agent, thread), Execute)


def test_a_rejection_by_an_allowed_approver_rejects_even_after_an_approval(team: Approvers) -> None:
    agent = dataclasses.replace(AGENT, approvers=team)
    thread, p = pay()
    thread = by(by(thread, p, "alice"), p, "bob", "rejected", "wrong receipt")
    action = next_action(agent, thread)
    assert not isinstance(action, Execute | AwaitApproval)  # settled: back to the model
    with pytest.raises(Exception, match="pending proposal is None"):
        apply(thread, DecisionEvent(proposal_id=p.id, proposal_digest=p.digest, decision="approved",
                                    approver="carol", at=AT), agent)


def test_the_runs_trigger_actor_cannot_approve_when_excluded(team: Approvers) -> None:
    agent = dataclasses.replace(AGENT, approvers=team.model_copy(update={"groups": {"finance": ("alice", "bob", "ana")}}))
    thread, p = pay()  # the expense was filed by ana: the trigger's actor
    thread = by(by(thread, p, "ana"), p, "alice")
    assert next_action(agent, thread) == AwaitApproval(p)
    tally = agent.tally(thread, p)
    assert tally.ignored[0][1] == "ana is this run's trigger_actor, who may not approve"
    assert tally.may_approve == frozenset({"bob"})


def test_a_role_the_thread_does_not_name_escalates_instead_of_waiting_for_ever() -> None:
    strict = Approvers(tools={"pay_expense": {"exclude": ("commit_author",)}})  # type: ignore[dict-item]
    agent = dataclasses.replace(AGENT, approvers=strict)
    thread, p = pay()
    action = next_action(agent, by(thread, p, "alice"))
    assert isinstance(action, Escalate)
    assert "cannot be approved: this run names no commit_author to exclude" in action.event.reason
    named = expense_context().append(ContextEvent(name="people", payload={"commit_author": "Alice"}), p)
    assert next_action(agent, by(named, p, "alice")) == AwaitApproval(p)  # alice wrote it: excluded
    assert isinstance(next_action(agent, by(named, p, "bob")), Execute)


def test_the_file_overrides_the_tools_own_policy_field_by_field(tmp_path: Path) -> None:
    class Strict(AGENT.tools[1]):  # type: ignore[misc,valid-type]
        approval = ApprovalPolicy(approvers=("@finance",), quorum=2, exclude=("trigger_actor",))

    (tmp_path / "approvers.yaml").write_text("groups:\n  finance: [alice, bob]\ntools:\n  pay_expense:\n    quorum: 1\n")
    team = load_approvers(tmp_path / "approvers.yaml")
    tools = tuple(Strict if t is AGENT.tools[1] else t for t in AGENT.tools)
    agent = dataclasses.replace(AGENT, tools=tools, approvers=team)
    assert agent.approval_policy("pay_expense") == ApprovalPolicy(approvers=("@finance",), quorum=1,
                                                                  exclude=("trigger_actor",))


def test_the_approvers_file_comes_from_the_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    assert load_approvers() is None
    (tmp_path / "a.toml").write_text(TEAM)
    monkeypatch.setenv("AGENT_APPROVERS_FILE", str(tmp_path / "a.toml"))
    found = load_approvers()
    assert found is not None and found.groups["finance"] == ("alice", "bob", "carol")


@pytest.mark.parametrize(("text", "problem"), [
    ("[groups\n", "not valid toml"),
    ("[tools.pay_expense]\nquorum = 0\n", "tools.pay_expense.quorum: Input should be greater than or equal to 1"),
    ("[tools.pay_expense]\nwho = ['x']\n", "tools.pay_expense.who: Extra inputs are not permitted"),
    ("[tools.pay_expense]\napprovers = ['@ops']\n", "the group @ops, which no approvers file defines"),
    ("[groups]\nops = ['a']\n[tools.pay_expense]\napprovers = ['@ops']\nquorum = 2\n",
     "pay_expense needs 2 approvals but only 1 people may give one (a)"),
    ("[groups]\nops = ['']\n", "group ops: an empty name"),
])
def test_a_bad_approvers_file_is_refused_naming_the_file_and_the_problem(tmp_path: Path, text: str,
                                                                         problem: str) -> None:
    path = tmp_path / "approvers.toml"
    path.write_text(text)
    with pytest.raises(ConfigurationError) as err:
        load_approvers(path)
    assert str(path) in str(err.value) and problem in str(err.value)


def test_a_missing_file_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigurationError, match="approvers file .*nope.toml: cannot read it"):
        load_approvers(tmp_path / "nope.toml")


def test_a_tool_naming_a_group_without_a_file_fails_when_the_agent_is_declared() -> None:
    class Grouped(AGENT.tools[1]):  # type: ignore[misc,valid-type]
        approval = ApprovalPolicy(approvers=("@finance",))

    with pytest.raises(ConfigurationError, match="the group @finance, which no approvers file defines"):
        dataclasses.replace(AGENT, tools=tuple(Grouped if t is AGENT.tools[1] else t for t in AGENT.tools))


def test_records_show_a_decision_the_policy_does_not_count_as_not_counted_never_as_approved_by(
        team: Approvers) -> None:
    from prefect_micro_agents.adapter.publish import thread_markdown
    from prefect_micro_agents.prompts import render_thread

    agent = dataclasses.replace(AGENT, approvers=team.model_copy(update={"groups": {"finance": ("alice", "bob", "ana")}}))
    thread, p = pay()
    thread = by(by(by(thread, p, "mallory"), p, "ana"), p, "alice")  # outside the list; the trigger's actor; counted
    for_model = render_thread(thread, AGENT.prompts_dir, agent)
    assert "approval 1 by mallory not counted: mallory is not among the approvers (@finance)" in for_model
    assert "approval 1 by ana not counted: ana is this run's trigger_actor, who may not approve" in for_model
    assert "approved 1 by alice" in for_model
    assert "approved 1 by mallory" not in for_model and "approved 1 by ana" not in for_model
    artifact = thread_markdown("expense", thread, "awaiting approval", agent)
    assert "NOT COUNTED approval by mallory" in artifact and "approved by mallory" not in artifact
    # Without the agent (its policies unknown) the records cannot judge: they show the decisions as made.
    assert "approved 1 by mallory" in render_thread(thread, AGENT.prompts_dir)
