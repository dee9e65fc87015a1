"""Approval expiry per tool (prefect_micro_agents.adapter.expiry) through the real gate (tests/kit/gate_flow.py served
against the session's Prefect server, an approvers file setting pay_expense's expiry policy): `reject` records the
expiry in the thread and the agent goes on; `fail` fails the run as before; a reminder reaches a webhook (Prefect's
CustomWebhookNotificationBlock, sent by Prefect's SendNotification action) before the deadline. The policy fields'
validation is pure and at the end."""

from __future__ import annotations

import json
import os
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest

from prefect_micro_agents.adapter.approvals import ApprovalsClient
from prefect_micro_agents.adapter.store import ThreadStore
from prefect_micro_agents.approval_policy import ApprovalPolicy, Approvers, load_approvers
from prefect_micro_agents.errors import ConfigurationError
from prefect_micro_agents.testing.scripted import ScriptedModel
from prefect_micro_agents.thread import ErrorEvent, ProposalEvent
from expense_gate import DEPLOYMENT, DONE, FLOW, PAY, start
from prefect_harness import Served, lines, next_pause, run_logs, wait_engine_exit, wait_state


def serve(tmp_path: Path, http: httpx.Client, approvers: str, **env: str) -> Served:
    """The gate flow served with an approvers file (and `env`), as a deployment that keeps one would be."""
    (tmp_path / "approvers.toml").write_text(approvers)
    full = {**{k: v for k, v in os.environ.items() if k != "AGENT_MODEL"},
            "AGENT_APPROVERS_FILE": str(tmp_path / "approvers.toml"), **env}
    served = Served(FLOW, full, http, DEPLOYMENT, tmp_path / "serve.log")
    served.deployment_id = served.start()  # type: ignore[attr-defined]
    return served


def automation_names(http: httpx.Client) -> list[str]:
    return [a["name"] for a in http.post("/automations/filter", json={}).json()]


def state_history(http: httpx.Client, run: str) -> list[tuple[str, str]]:
    return [(s["type"], s["name"]) for s in http.get("/flow_run_states/", params={"flow_run_id": run}).json()]


@pytest.mark.slow
def test_reject_policy_records_the_expiry_in_the_thread_and_the_agent_goes_on(
        prefect_server, http: httpx.Client, scripted: ScriptedModel, effects: Path, tmp_path: Path,  # noqa: ANN001
        approvals: ApprovalsClient) -> None:
    # No recoveries allowed: the expiry's restart must not be taken for a crash (recovery.begin_attempt would end the
    # run Failed; Prefect marks a run leaving Paused as resuming, so its run count stays 1).
    # A reminder is asked for, but no block is configured: none is created, and the log says so once.
    served = serve(tmp_path, http, '[tools.pay_expense]\non_expiry = "reject"\ntimeout_s = 15\nremind_before_s = 5\n',
                   AGENT_MAX_RECOVERIES="0", AGENT_APPROVAL_REMINDER_BLOCK="")
    try:
        scripted.enqueue(PAY, DONE)
        run = start(served, http, scripted, effects)
        next_pause(http, run)
        asked = time.monotonic()
        # `show` gives the policy's deadline (15 s), not Prefect's pause timeout (15 s plus a 60 s grace period)
        left = (datetime.fromisoformat(str(approvals.show(run).expires_at)) - datetime.now(UTC)).total_seconds()
        assert 0 < left <= 16, left
        wait_state(http, run, {"COMPLETED"}, timeout=120)  # raises at once if the run ends Failed
        assert time.monotonic() - asked >= 14  # not before the deadline
        wait_engine_exit(run)
    finally:
        served.stop()
    assert lines(effects / "pay.log") == []  # nothing executed
    assert ("FAILED", "Failed") not in state_history(http, run)
    assert ("SCHEDULED", "Resuming") in state_history(http, run)  # started again by the expiry automation
    thread = ThreadStore().load(run, "expense")
    assert thread is not None
    pay = thread.of_type(ProposalEvent)[0]
    expired = [e for e in thread.of_type(ErrorEvent) if e.kind == "approval_expired"]
    assert len(expired) == 1 and expired[0].proposal_id == pay.id
    reason = expired[0].message
    assert reason.startswith("nobody approved pay_expense") and "within 15 s" in reason and "(reject)" in reason
    assert "who could decide: 1 distinct approval from anyone" in reason
    requests = scripted.requests()
    assert len(requests) == 2  # the model was asked again, and saw why
    seen = ["\n".join(str(m.get("content")) for m in r["messages"]) for r in requests]
    told = "error approval_expired (call 1): nobody approved pay_expense"  # as the thread renders it for the model
    assert told in seen[1] and told not in seen[0], seen[1][-1500:]
    assert reason.split("; who could decide")[1] in seen[1]  # with who could have decided and the policy
    assert thread.events[-1].type == "done"
    logs = [entry["message"] for entry in run_logs(http, run)]
    assert sum("names no notification block" in m for m in logs) == 1
    assert not any(n.startswith("microagents: remind approvers after 10 s") for n in automation_names(http))


@pytest.mark.slow
def test_fail_policy_with_a_tool_timeout_fails_the_run_and_runs_nothing(
        prefect_server, http: httpx.Client, scripted: ScriptedModel, effects: Path, tmp_path: Path) -> None:  # noqa: ANN001
    served = serve(tmp_path, http, "[tools.pay_expense]\ntimeout_s = 5\n")  # the run's own timeout is an hour
    try:
        scripted.enqueue(PAY, DONE)
        run = start(served, http, scripted, effects)
        next_pause(http, run)
        state = wait_state(http, run, {"FAILED"}, timeout=60)
    finally:
        served.stop()
    assert "paused and never resumed" in (state.get("message") or "")
    assert lines(effects / "pay.log") == []
    assert len(scripted.requests()) == 1  # the model was not asked again


class _Hook(BaseHTTPRequestHandler):
    received: list[tuple[float, dict[str, Any]]]

    def do_POST(self) -> None:  # noqa: N802
        body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
        self.received.append((time.time(), json.loads(body or b"{}")))
        self.send_response(200)
        self.end_headers()

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def webhook() -> Iterator[tuple[str, list[tuple[float, dict[str, Any]]]]]:
    received: list[tuple[float, dict[str, Any]]] = []
    handler = type("Hook", (_Hook,), {"received": received})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/hook", received
    finally:
        server.shutdown()
        server.server_close()


@pytest.mark.slow
def test_a_reminder_reaches_the_notification_block_before_the_deadline(
        prefect_server, http: httpx.Client, scripted: ScriptedModel, effects: Path, tmp_path: Path,  # noqa: ANN001
        webhook: tuple[str, list[tuple[float, dict[str, Any]]]]) -> None:
    from prefect.blocks.notifications import CustomWebhookNotificationBlock

    url, received = webhook
    CustomWebhookNotificationBlock(name="approval reminders", url=url,
                                   json_data={"subject": "{{subject}}", "body": "{{body}}"}).save(
        "expiry-test-reminders", overwrite=True)
    served = serve(tmp_path, http, '[tools.pay_expense]\non_expiry = "reject"\ntimeout_s = 40\nremind_before_s = 28\n',
                   AGENT_APPROVAL_REMINDER_BLOCK="custom-webhook/expiry-test-reminders")
    try:
        scripted.enqueue(PAY, DONE)
        run = start(served, http, scripted, effects)
        key = next_pause(http, run)
        record = http.get(f"/flow_runs/{run}/input/microagents-deadline-{key}").json()  # what the flow recorded
        deadline = datetime.fromisoformat((json.loads(record) if isinstance(record, str) else record)["at"])
        end = time.monotonic() + 35
        while not received and time.monotonic() < end:
            time.sleep(0.2)
        assert received, "no reminder arrived"
        at, message = received[0]
        assert at < deadline.timestamp()  # before the deadline
        assert at >= deadline.timestamp() - 28 - 2  # and not before it was due (12 s after asking)
        name = http.get(f"/flow_runs/{run}").json()["name"]
        assert name in message["subject"] and "pay_expense" in message["subject"]
        assert f"prefect.flow-run.{run}" in message["body"]
        assert deadline.strftime("%Y-%m-%d %H:%M:%S UTC") in message["body"]
        assert "the call is rejected" in message["body"]
        assert len(received) == 1
        http.post(f"/flow_runs/{run}/set_state", json={"state": {"type": "CANCELLED"}, "force": True})
    finally:
        served.stop()
    assert lines(effects / "pay.log") == []


# -- the policy fields, pure ---------------------------------------------------------------------------------------

def test_a_reminder_must_come_before_the_deadline() -> None:
    with pytest.raises(ValueError, match=r"remind_before_s \(600\) must be shorter than timeout_s \(600\)"):
        ApprovalPolicy(on_expiry="reject", timeout_s=600, remind_before_s=600)
    policy = ApprovalPolicy(remind_before_s=3600)  # the run's timeout decides, when the run starts
    with pytest.raises(ConfigurationError, match=r"shorter than the run's approval timeout \(AGENT_APPROVAL_TIMEOUT_S\)"):
        policy.expiry(1800)
    expiry = policy.expiry(7200)
    assert (expiry.on_expiry, expiry.timeout_s, expiry.remind_after_s) == ("fail", 7200, 3600)


@pytest.mark.parametrize(("fields", "problem"), [
    ({"on_expiry": "ignore"}, "on_expiry: Input should be 'fail' or 'reject'"),
    ({"timeout_s": 0}, "timeout_s: Input should be greater than or equal to 1"),
    ({"remind_before_s": -5}, "remind_before_s: Input should be greater than or equal to 1"),
    ({"timeout_s": 100 * 24 * 3600}, "timeout_s: Input should be less than or equal to 2592000"),
])
def test_bad_expiry_fields_are_refused_with_the_field_named(fields: dict[str, Any], problem: str) -> None:
    with pytest.raises(ValueError, match=problem.split(": ")[0]) as caught:
        ApprovalPolicy(**fields)
    assert problem.split(": ")[1] in str(caught.value)


def test_an_approvers_file_sets_expiry_per_tool_and_its_mistakes_name_the_file(tmp_path: Path) -> None:
    from toy_agent import PayExpense

    good = tmp_path / "good.toml"
    good.write_text('[tools.pay_expense]\non_expiry = "reject"\ntimeout_s = 7200\nremind_before_s = 1800\n')
    approvers = load_approvers(good)
    assert isinstance(approvers, Approvers)
    policy = approvers.policy("pay_expense", PayExpense.approval)
    assert (policy.on_expiry, policy.timeout_s, policy.remind_before_s) == ("reject", 7200, 1800)
    assert policy.describe() == ("1 distinct approval from anyone; if nobody decides within 2 h, the call is rejected "
                                 "(it never runs) and the agent is told why, then proposes again (a reminder goes "
                                 "out 30 min before)")
    assert ApprovalPolicy().describe() == "1 distinct approval from anyone"  # the default says nothing more

    bad = tmp_path / "bad.toml"
    bad.write_text('[tools.pay_expense]\ntimeout_s = 600\nremind_before_s = 900\n')
    with pytest.raises(ConfigurationError, match=rf"approvers file {bad}: tools.pay_expense: .*remind_before_s \(900\) "
                                                 r"must be shorter than timeout_s \(600\)"):
        load_approvers(bad)
    typo = tmp_path / "typo.toml"
    typo.write_text('[tools.pay_expense]\non_expiry = "retry"\n')
    with pytest.raises(ConfigurationError, match=rf"approvers file {typo}: tools.pay_expense.on_expiry: Input should "
                                                 "be 'fail' or 'reject'"):
        load_approvers(typo)
