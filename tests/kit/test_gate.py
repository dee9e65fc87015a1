"""The approval gate on a real Prefect server: suspend, resume through the UI's endpoint, replay, run once. The agent is
the kit's toy expense agent (tests/kit/gate_flow.py): paying and filing an expense are its approve tools."""

from __future__ import annotations

import json
import os
import re
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from prefect_micro_agents.adapter.approvals import ApprovalsClient, ResumeRefused
from prefect_micro_agents.adapter.store import ThreadStore
from prefect_micro_agents.testing.scripted import ScriptedModel
from prefect_micro_agents.thread import DecisionEvent
from expense_gate import DEPLOYMENT, DONE, FILE, FLOW, PAY, RECEIPT, call, start
from prefect_harness import Served, flow_state, lines, next_pause, wait_state
from toy_agent import PAYMENTS_LIMIT

pytestmark = pytest.mark.slow

def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return not Path(f"/proc/{pid}/stat").read_text().split()[2] == "Z"


def gone(pids: list[int], timeout: float = 15) -> bool:
    deadline = time.monotonic() + timeout
    while any(alive(p) for p in pids):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


def test_reject_with_feedback_then_approve_runs_each_call_once(
    gate: Served, http: httpx.Client, approvals: ApprovalsClient, scripted: ScriptedModel, effects: Path
) -> None:
    scripted.enqueue(FILE, PAY, FILE, DONE)
    run = start(gate, http, scripted, effects)
    key1 = next_pause(http, run)
    assert flow_state(http, run)["name"] == "Suspended"
    assert gone([int(p) for p in lines(effects / "pids.log")])  # infrastructure released: the process exited
    first = approvals.show(run)
    assert first.kind == "approval" and "proposes `file_expense`" in first.description
    assert "### report" in first.description and f"`{RECEIPT}`" in first.description

    approvals.reject(run, "alice", "pay it first")
    key2 = next_pause(http, run, after=key1)
    assert "proposes `pay_expense`" in approvals.show(run).description
    assert lines(effects / "pay.log") == [] and lines(effects / "file.log") == []
    approvals.approve(run, "bob")
    key3 = next_pause(http, run, after=key2)
    assert "proposes `file_expense`" in approvals.show(run).description
    assert len(lines(effects / "pay.log")) == 1 and lines(effects / "file.log") == []
    approvals.approve(run, "bob")
    final = wait_state(http, run, {"COMPLETED"})
    assert final["type"] == "COMPLETED" and key3 != key1

    # Each approved call ran once; the deterministic pre-step ran once across five executions of the flow body.
    assert len(lines(effects / "pay.log")) == 1 and len(lines(effects / "file.log")) == 1
    assert lines(effects / "report.log") == [RECEIPT]
    assert len(lines(effects / "pids.log")) == 4  # first run + three resumes
    # The model was called once per distinct proposal (4), never on replay, and saw the feedback.
    prompts = [r["messages"][1]["content"] for r in scripted.requests()]
    assert len(prompts) == 4
    assert "rejected 1 by alice: pay it first" in prompts[1]
    thread = ThreadStore().load(run, "expense")
    assert thread is not None
    decisions = [(e.decision, e.approver) for e in thread.of_type(DecisionEvent)]
    assert decisions == [("rejected", "alice"), ("approved", "bob"), ("approved", "bob")]
    receipts = [e for e in thread.events if e.type == "receipt"]
    assert [r.idempotency_key.split(":")[0] for r in receipts] == [run, run]
    assert thread.events[-1].type == "done"
    # One artifact version per suspension plus the final one; replays added none.
    artifacts = http.post("/artifacts/filter", json={"artifacts": {"key": {"any_": [f"expense-thread-{run}"]}}}).json()
    assert len(artifacts) == 4
    assert "receipt paid back and filed" in max(artifacts, key=lambda a: a["created"])["data"]


def test_bad_input_is_refused_and_the_run_stays_suspended(
    gate: Served, http: httpx.Client, approvals: ApprovalsClient, scripted: ScriptedModel, effects: Path
) -> None:
    scripted.enqueue(PAY, DONE)
    run = start(gate, http, scripted, effects)
    key = next_pause(http, run)
    pending = approvals.show(run)
    field, digest = pending.field, pending.proposal_digest
    assert field == f"decision_{digest[:16]}" and len(digest) == 64
    # The form the server stored: no digest field for a human to guard; the decision field carries the binding,
    # is required and has no default.
    keyset = flow_state(http, run)["state_details"]["run_input_keyset"]
    schema = http.get(f"/flow_runs/{run}/input/{keyset['schema']}").json()
    schema = json.loads(schema) if isinstance(schema, str) else schema
    assert set(schema["properties"]) == {field, "feedback", "approver"}
    assert schema["required"] == [field] and "default" not in schema["properties"][field]
    assert schema["properties"][field]["title"] == "Decision" and schema["additionalProperties"] is False
    bad = {
        "wrong type": ({field: "approve", "feedback": 3}, "is not of type 'string'"),
        "extra field": ({field: "approve", "force": True}, "Additional properties"),
        "empty decision": ({field: ""}, "is not one of ['approve', 'reject']"),
        "no decision": ({"approver": "mallory"}, f"'{field}' is a required property"),
        # What the old form accepted: a decision without the binding, then a malformed or another proposal's digest.
        "omitted digest": ({"decision": "approve"}, "Additional properties"),
        "malformed digest": ({"decision_xyz": "approve"}, "Additional properties"),
        "another proposal": ({f"decision_{'f' * 16}": "approve"}, f"'decision_{'f' * 16}' was unexpected"),
    }
    for name, (run_input, reason) in bad.items():
        with pytest.raises(ResumeRefused, match=re.escape(reason)):
            approvals.resume(run, run_input)
        state = flow_state(http, run)
        assert (state["type"], state["state_details"]["pause_key"]) == ("PAUSED", key), name
    with pytest.raises(ResumeRefused, match="stale decision"):
        approvals.approve(run, "mallory", digest="0" * 64)
    with pytest.raises(ResumeRefused, match="at least 8 hex characters"):
        approvals.approve(run, "mallory", digest="abc")
    assert lines(effects / "pay.log") == []
    assert flow_state(http, run)["state_details"]["pause_key"] == key

    approvals.approve(run, "alice", digest=digest[:12])  # a prefix, as `show` prints it
    wait_state(http, run, {"COMPLETED"})
    assert len(lines(effects / "pay.log")) == 1
    thread = ThreadStore().load(run, "expense")
    assert [(e.type, getattr(e, "approver", "")) for e in thread.events if e.type in ("decision", "receipt")] == [
        ("decision", "alice"), ("receipt", "alice")]


def test_duplicate_resume_does_not_execute_twice(
    gate: Served, http: httpx.Client, approvals: ApprovalsClient, scripted: ScriptedModel, effects: Path
) -> None:
    scripted.enqueue(PAY, FILE)
    run = start(gate, http, scripted, effects)
    key = next_pause(http, run)
    first = approvals.show(run)
    answer = {first.field: "approve", "approver": "alice"}
    approvals.resume(run, answer)
    with pytest.raises(ResumeRefused, match="not paused"):
        approvals.resume(run, answer)
    key2 = next_pause(http, run, after=key)  # now waiting on the filing proposal
    with pytest.raises(ResumeRefused, match="stale decision"):
        approvals.approve(run, "alice", digest=first.proposal_digest)  # the same approval again, via the client
    # ... and straight to the endpoint, as a stale browser dialog would send it: the server refuses it.
    with pytest.raises(ResumeRefused, match="Additional properties"):
        approvals.resume(run, answer)
    assert flow_state(http, run)["state_details"]["pause_key"] == key2
    assert len(lines(effects / "pay.log")) == 1 and lines(effects / "file.log") == []


def test_an_expired_approval_never_executes(
    gate: Served, http: httpx.Client, approvals: ApprovalsClient, scripted: ScriptedModel, effects: Path
) -> None:
    scripted.enqueue(PAY)
    run = start(gate, http, scripted, effects, approval_timeout_s=2)
    next_pause(http, run)
    assert "Decide before" in approvals.show(run).description
    state = wait_state(http, run, {"FAILED"}, timeout=90)
    assert state["message"] == "The flow was paused and never resumed."
    with pytest.raises(ResumeRefused, match="not waiting for a decision .*paused and never resumed"):
        approvals.approve(run, "late")
    with pytest.raises(ResumeRefused, match="not paused"):
        approvals.resume(run, {f"decision_{'0' * 16}": "approve"})
    assert lines(effects / "pay.log") == []


def test_a_question_is_answered_and_the_agent_continues(
    gate: Served, http: httpx.Client, approvals: ApprovalsClient, scripted: ScriptedModel, effects: Path
) -> None:
    scripted.enqueue(call("ask_submitter", question="A team lunch, or a client dinner?"), DONE)
    run = start(gate, http, scripted, effects)
    next_pause(http, run)
    asked = approvals.show(run)
    assert asked.kind == "question" and "A team lunch, or a client dinner?" in asked.description
    with pytest.raises(ResumeRefused, match="asks a question"):
        approvals.approve(run, "alice")
    with pytest.raises(ResumeRefused, match="should be non-empty|is too short"):
        approvals.answer(run, "", "alice")
    approvals.answer(run, "A team lunch, four of us.", "alice")
    wait_state(http, run, {"COMPLETED"})
    assert "answer 1 by alice: A team lunch, four of us." in scripted.requests()[1]["messages"][1]["content"]
    assert len(scripted.requests()) == 2


POINTS = ("approval", "mid", "after")


def crashed_then_retried(http: httpx.Client, run_id: str) -> list[str]:
    """The run's state history (names) as the server recorded it."""
    response = http.get("/flow_run_states/", params={"flow_run_id": run_id})
    response.raise_for_status()
    return [s["name"] for s in sorted(response.json(), key=lambda s: s["timestamp"])]


def test_killed_worker_is_recovered_by_prefect_and_never_runs_an_approved_call_twice(
    gate: Served, http: httpx.Client, approvals: ApprovalsClient, tmp_path: Path
) -> None:
    """Three runs frozen at three points (right after the approval, mid-execution, after the effect but before the
    result is recorded), then ONE SIGKILL of the serving process group, as a dying worker. The test then only
    restarts the runner (what a supervisor does) and changes no state: Prefect's automation notices each run
    when its heartbeats stop and start it again; each completes and the effect exists exactly once."""
    # The payment tools hold the `expense-payments` tag while they execute (their execute task carries it, checked
    # below): a tag concurrency limit of one on it would make two runs frozen inside a call wait on each other, so
    # none may be left on the server; without it, all can freeze at once. Serialization and recovery with a limit in
    # place: tests/app/test_recovery.py (the deploy bot's `production-changes`).
    http.delete(f"/concurrency_limits/tag/{PAYMENTS_LIMIT}")
    runs: dict[str, tuple[str, Path, ScriptedModel]] = {}
    for point in POINTS:
        effects, scripted = tmp_path / f"effects-{point}", ScriptedModel(tmp_path / f"model-{point}")
        effects.mkdir()
        scripted.enqueue(PAY, DONE)
        (effects / "fault").write_text(point)
        run = start(gate, http, scripted, effects)
        runs[point] = (run, effects, scripted)
    for point, (run, _, _) in runs.items():
        next_pause(http, run)
        approvals.approve(run, "alice")
    deadline = time.monotonic() + 90
    while not all((effects / f"reached-{point}").exists() for point, (_, effects, _) in runs.items()):
        assert time.monotonic() < deadline, "not every fault point was reached"
        time.sleep(0.05)
    gate.kill()
    killed = time.monotonic()
    for point, (run, effects, _) in runs.items():
        assert flow_state(http, run)["type"] == "RUNNING"  # the server does not know yet: a dead worker
        assert len(lines(effects / "pay.log")) == {"approval": 0, "mid": 0, "after": 1}[point]

    gate.start()  # a supervisor restarting the worker; nothing else is done to the runs
    for point, (run, effects, scripted) in runs.items():
        final = wait_state(http, run, {"COMPLETED"}, timeout=240, passing=frozenset({"CRASHED"}))
        history = crashed_then_retried(http, run)
        assert "AwaitingRetry" in history, history  # Prefect's automation started it again
        assert http.get(f"/flow_runs/{run}").json()["run_count"] == 2
        assert len(lines(effects / "pay.log")) == 1, point
        assert len(scripted.requests()) == 2  # PAY and DONE, none repeated by the new attempt
        thread = ThreadStore().load(run, "expense")
        results = [e for e in thread.events if e.type == "result"]
        assert len(results) == 1 and len([e for e in thread.events if e.type == "receipt"]) == 1
        assert results[0].output.get("reconciled", False) is (point == "after")
        assert final["type"] == "COMPLETED"
        task_runs = http.post("/task_runs/filter", json={"flow_runs": {"id": {"any_": [run]}}}).json()
        executions = [t for t in task_runs if t["name"].startswith("execute pay_expense")]
        assert executions and all(PAYMENTS_LIMIT in t["tags"] for t in executions), (point, task_runs)
    print(f"\nkill -> all three completed: {time.monotonic() - killed:.1f} s")


def test_a_run_past_its_last_allowed_recovery_ends_failed_with_what_it_executed(
    prefect_server: Any, http: httpx.Client, approvals: ApprovalsClient, tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """AGENT_MAX_RECOVERIES=0 for deployments with a tag of their own: the worker dies mid-execution, Prefect marks
    the run Crashed and starts it once more, and that attempt runs nothing: the run ends Failed with a message that
    says what happened and what executed (a Crashed call: maybe half done), approvers get the
    `microagents.recovery.exhausted` event, and `microagents runs` lists it as given up."""
    from prefect_micro_agents.adapter.recovery import EXHAUSTED_EVENT, ensure_recovery_automations
    from prefect_micro_agents.cli import main

    http.delete(f"/concurrency_limits/tag/{PAYMENTS_LIMIT}")  # as in the test above: no slot to wait for
    tag = "gate-exhaustion-test"
    automations = ensure_recovery_automations(tag, recoveries=0)
    env = {k: v for k, v in os.environ.items() if k != "AGENT_MODEL"}
    env.update({"GATE_RECOVER_TAG": tag, "AGENT_MAX_RECOVERIES": "0"})
    served = Served(FLOW, env, http, DEPLOYMENT, tmp_path / "serve.log")
    try:
        served.deployment_id = served.start()  # type: ignore[attr-defined]
        effects, scripted = tmp_path / "effects", ScriptedModel(tmp_path / "model")
        effects.mkdir()
        scripted.enqueue(PAY, DONE)
        (effects / "fault").write_text("mid")
        run = start(served, http, scripted, effects)
        next_pause(http, run)
        approvals.approve(run, "alice")
        deadline = time.monotonic() + 90
        while not (effects / "reached-mid").exists():
            assert time.monotonic() < deadline, "the run never reached the middle of its tool call"
            time.sleep(0.05)
        served.kill()
        served.start()
        final = wait_state(http, run, {"FAILED"}, timeout=240, passing=frozenset({"CRASHED"}))
        message = final["message"] or ""
        assert message.startswith("gave up after 0 automatic recoveries: the worker running this flow run died 1 "
                                  "time. What it executed before: execute pay_expense"), message
        assert "execute pay_expense" in message and ": Crashed" in message, message
        assert "check the targets before you run it again" in message
        assert crashed_then_retried(http, run).count("AwaitingRetry") == 1
        assert http.get(f"/flow_runs/{run}").json()["run_count"] == 2
        assert lines(effects / "pay.log") == [] and len(scripted.requests()) == 1  # nothing ran again
        body = {"filter": {"event": {"name": [EXHAUSTED_EVENT]}, "resource": {"id": [f"prefect.flow-run.{run}"]}}}
        deadline = time.monotonic() + 30
        while not (events := http.post("/events/filter", json=body).json()["events"]):
            assert time.monotonic() < deadline, "no exhausted event"
            time.sleep(0.2)
        assert events[0]["payload"]["message"] == message
        flow_run = http.get(f"/flow_runs/{run}").json()
        related = {(r["prefect.resource.role"], r["prefect.resource.id"]) for r in events[0]["related"]}
        assert related >= {("flow", f"prefect.flow.{flow_run['flow_id']}"),
                           ("deployment", f"prefect.deployment.{flow_run['deployment_id']}")}, related
        capsys.readouterr()
        assert main(["runs", "--json"]) == 0
        listed = {r["run_id"]: r for r in json.loads(capsys.readouterr().out)}
        assert listed[run]["status"] == "gave up"
        assert [name for name, _ in listed[run]["executed"]][0].startswith("execute pay_expense")
    finally:
        served.stop()
        for automation in automations:
            http.delete(f"/automations/{automation.id}")
