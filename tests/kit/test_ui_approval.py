"""Approval in the real Prefect UI, driven by headless Chromium: reject with feedback, approve, see the thread.

A Prefect server WITH its UI (module-scoped, its own: the session server has no UI), tests/kit/gate_flow.py (the kit's
toy expense agent) served by a runner, and the system's Chromium (Debian `chromium`) driven by Playwright. The human clicks what a human would
click; the API is used only to wait for states and to cross-check what the UI sent. Screenshots of every step go to
test-artifacts/ui/ at the repository root (or $TEST_ARTIFACTS_DIR/ui).

Needs `apt-get install -y chromium` and `pip install playwright` (never `playwright install`). Without them the test
FAILS with a message saying so: CI installs both, so a missing browser is a broken set-up, not a reason to skip.
"""

from __future__ import annotations

import os
import re
import shutil
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from prefect_micro_agents.adapter.approvals import ApprovalsClient
from prefect_micro_agents.adapter.local_server import LocalPrefectServer, ServerStartError, free_port
from prefect_micro_agents.testing.scripted import ScriptedModel
from expense_gate import DEPLOYMENT, DONE, FILE, FLOW, PAY, RECEIPT
from prefect_harness import Served, create_run, lines, next_pause, wait_state
from ui_driver import Browser, ClassicRunPage, RunPage, Screenshots, require_chromium, until

pytestmark = [pytest.mark.slow, pytest.mark.ui]

REPO = Path(__file__).resolve().parents[2]


def start_ui_server(home: Path) -> LocalPrefectServer:
    """A server with its UI on a free port. The UI's JavaScript calls the API at PREFECT_SERVER_UI_API_URL, which
    otherwise defaults to 127.0.0.1:4200 whatever `--port` says; so the port is fixed before the start (and a
    collision retried here, since LocalPrefectServer's own port retry would leave the UI on the old port)."""
    for attempt in range(3):
        port = free_port()
        server = LocalPrefectServer(home, port=port, ui=True,
                                    server_env={"PREFECT_SERVER_UI_API_URL": f"http://127.0.0.1:{port}/api"})
        try:
            return server.start()
        except ServerStartError as err:
            if "already in use" not in str(err) or attempt == 2:
                raise
    raise AssertionError("unreachable")


@pytest.fixture(scope="module")
def shots() -> Screenshots:
    directory = Path(os.environ.get("TEST_ARTIFACTS_DIR", REPO / "test-artifacts")) / "ui"
    shutil.rmtree(directory, ignore_errors=True)
    directory.mkdir(parents=True)
    print(f"\nUI screenshots: {directory}")
    return Screenshots(directory)


@pytest.fixture(scope="module")
def browser(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Browser]:
    b = Browser(tmp_path_factory.mktemp("chromium-profile")).launch()
    try:
        yield b
    finally:
        b.close()


@pytest.fixture(scope="module")
def ui_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalPrefectServer]:
    server = start_ui_server(tmp_path_factory.mktemp("prefect-ui-home"))
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="module")
def http(ui_server: LocalPrefectServer) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=ui_server.api_url, auth=ui_server.httpx_auth, timeout=30, trust_env=False) as c:
        yield c


@pytest.fixture(scope="module")
def served(
    ui_server: LocalPrefectServer, http: httpx.Client, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Served]:
    """tests/kit/gate_flow.py served against the UI server, in its own environment (the session server's env left out)."""
    state = tmp_path_factory.mktemp("ui-agent-state")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PREFECT_", "AGENT_"))}
    # The scripted model's provider hook is an AGENT_ variable too: copied, as tests/conftest.py asks of such tests.
    env.update(ui_server.client_env(), AGENT_STATE_DIR=str(state),
               AGENT_LITELLM_PROVIDERS=os.environ["AGENT_LITELLM_PROVIDERS"])
    s = Served(FLOW, env, http, DEPLOYMENT, state / "serve.log")
    try:
        s.deployment_id = s.start()  # type: ignore[attr-defined]
        yield s
    finally:
        s.stop()  # the runner before the server (a runner whose server died first can hang)


def latest_artifact(http: httpx.Client, key: str) -> dict[str, Any]:
    def read() -> list[dict[str, Any]]:
        response = http.post("/artifacts/filter", json={"artifacts": {"key": {"any_": [key]}}})
        return response.json() if response.status_code == 200 else []

    return max(until(read, f"artifact {key} listed", timeout=30), key=lambda a: a["created"])


def printed_link(http: httpx.Client, run_id: str, line_start: str) -> str:
    """The UI link in the run's first log line starting with `line_start`, exactly as printed."""
    def find() -> str:
        logs = http.post("/logs/filter", json={"logs": {"flow_run_id": {"any_": [run_id]}}, "limit": 200}).json()
        for log in logs:
            if log["message"].startswith(line_start):
                return re.search(r"open (http\S+)", log["message"]).group(1)  # type: ignore[union-attr]
        return ""

    return until(find, f"a log line starting {line_start!r}", timeout=30)


def printed_in(log: Path, text: str) -> str:
    """`text` as it appears in a log file (waits for it); returns the URL it ends with."""
    until(lambda: text in log.read_text(errors="replace"), f"{text!r} in {log}", timeout=30)
    return text.split("View at ", 1)[1]


def ui_fixtures(request: pytest.FixtureRequest) -> tuple[Browser, Screenshots, LocalPrefectServer, Served, httpx.Client]:
    """The browser, screenshots, UI server, served gate flow and API client. The browser is checked before any
    fixture starts a server: a machine without it fails at once, and says why."""
    problem = require_chromium()
    if problem:
        pytest.fail(f"the UI approval test needs a browser: {problem}", pytrace=False)
    return (request.getfixturevalue("browser"), request.getfixturevalue("shots"), request.getfixturevalue("ui_server"),
            request.getfixturevalue("served"), request.getfixturevalue("http"))


def test_reject_then_approve_in_the_prefect_ui(request: pytest.FixtureRequest, tmp_path: Path) -> None:
    browser, shots, ui_server, served, http = ui_fixtures(request)

    started = time.monotonic()
    scripted = ScriptedModel(tmp_path / "scripted-model")
    scripted.enqueue(FILE, PAY, FILE, DONE)
    effects = tmp_path / "effects"
    effects.mkdir()
    run = create_run(http, served.deployment_id,  # type: ignore[attr-defined]
                     {"receipt": RECEIPT, "effects_dir": str(effects), "model": scripted.model})
    key1 = next_pause(http, run)
    page = browser.new_page()
    retries = 0
    # The links as printed: ours in the run's log (the current UI), Prefect's own "View at" line (the classic UI).
    ours = printed_link(http, run, "waiting for approval")
    assert ours == f"{ui_server.ui_url}/v2/runs/flow-run/{run}", ours
    ui = RunPage(page, ours)

    with ApprovalsClient(ui_server.api_url, ui_server.auth_string) as approvals:
        # 1. The suspended run, its Markdown proposal, and a rejection with feedback.
        with shots.step(page, "suspended run page"):
            ui.open(state="Suspended")
        with shots.step(page, "first proposal in the resume dialog"):
            dialog = ui.resume_dialog()
            heading = dialog.proposal_heading()
            assert "proposes" in heading and "file_expense" in heading, heading
            assert dialog.root.get_by_role("heading", name="report").is_visible()  # a Markdown section of context
            # One paragraph, not broken at the template's line ends.
            assert dialog.root.get_by_text("sends your feedback to the agent, which then proposes again").is_visible()
            # No technical field to guard: the form is Decision, Feedback, Approver.
            assert dialog.root.get_by_role("textbox").count() == 2
        field1 = approvals.show(run).field
        with shots.step(page, "reject with feedback filled in"):
            dialog.choose("Decision", "reject")
            dialog.fill("Feedback", "pay it first")
            dialog.fill("Approver", "alice")
            dialog.show_form_end()
        with shots.step(page, "rejection submitted"):
            sent = dialog.submit()
        retries += dialog.retries
        assert sent == {field1: "reject", "feedback": "pay it first", "approver": "alice"}, sent

        # 2. The agent proposes again (paying first); approve it.
        key2 = next_pause(http, run, after=key1)
        assert lines(effects / "pay.log") == [] and lines(effects / "file.log") == []
        with shots.step(page, "second proposal in the resume dialog"):
            ui.open(state="Suspended")
            dialog = ui.resume_dialog()
            heading = dialog.proposal_heading()
            assert "pay_expense" in heading, heading
        field2 = approvals.show(run).field
        assert field2 != field1
        with shots.step(page, "approve the payment"):
            dialog.choose("Decision", "approve")
            dialog.fill("Approver", "bob")
            dialog.show_form_end()
        with shots.step(page, "payment approval submitted"):
            sent = dialog.submit()
        retries += dialog.retries
        assert sent == {field2: "approve", "feedback": "", "approver": "bob"}, sent

        # 3. Then the filing again; approve it in the classic UI, opened from Prefect's own printed link.
        key3 = next_pause(http, run, after=key2)
        assert len(lines(effects / "pay.log")) == 1 and lines(effects / "file.log") == []
        classic_link = printed_in(served.log, f"View at {ui_server.ui_url}/runs/flow-run/{run}")
        classic = ClassicRunPage(page, classic_link)
        with shots.step(page, "third proposal in the classic UI's resume dialog"):
            classic_dialog = classic.open(state="Suspended").resume_dialog()
            # What an approver sees first in the classic UI's scroll box (about 220 px on a 1366x768 laptop screen),
            # without scrolling: the call, its arguments and why; below the box, always on screen, the Decision
            # field says what each answer does and until when.
            box = classic_dialog.description_box()
            first = classic_dialog.first_view(
                box.get_by_role("heading", name="proposes"), box.get_by_role("table"),
                box.get_by_text("Why (the agent's words):"))
            assert first == [True, True, True], first
            decision = classic_dialog.field("Decision")
            assert decision.get_by_text(re.compile(r"approve: the call runs once, exactly as shown\..*Decide before "
                                                   r"\d{4}-\d\d-\d\d")).is_visible()
            assert "file_expense" in box.get_by_role("heading", name="proposes").inner_text()
        field3 = approvals.show(run).field
        with shots.step(page, "approve the filing in the classic UI"):
            classic_dialog.choose("Decision", "approve")
            classic_dialog.fill("Approver", "bob")
        with shots.step(page, "filing approval submitted"):
            sent = classic_dialog.submit()
        retries += classic_dialog.retries
        assert sent == {field3: "approve", "feedback": "", "approver": "bob"}, sent

    # 4. The run completes; the current UI's page shows it.
    wait_state(http, run, {"COMPLETED"})
    with shots.step(page, "run completed"):
        ui.open()
        ui.wait_for_state("Completed")
    assert key3 not in (key1, key2)
    # Every decision counted (three answers, three decisions: none refused, none asked again); each approved call
    # ran exactly once.
    assert len(lines(effects / "pay.log")) == 1 and len(lines(effects / "file.log")) == 1
    assert len(scripted.requests()) == 4

    # 5. The thread artifact, opened from the run's Artifacts tab: both decisions, with feedback and approvers.
    key = f"expense-thread-{run}"
    latest = latest_artifact(http, key)
    with shots.step(page, "thread artifact"):
        artifact = ui.open_artifact(key, latest["id"])
        artifact.heading("expense agent: done").wait_for()
        decisions = artifact.rows("decision", 3)
        receipts = artifact.rows("receipt", 2)
    assert len(decisions) == 3, decisions
    assert "rejected by alice" in decisions[0] and "pay it first" in decisions[0], decisions
    assert all("approved by bob" in d for d in decisions[1:]), decisions
    assert len(receipts) == 2 and all("approved by bob" in r for r in receipts), receipts
    print(f"\nUI approval test: {time.monotonic() - started:.1f} s after the fixtures; {len(shots.taken)} screenshots "
          f"in {shots.directory}; off-host requests blocked: {len(browser.blocked)}; Resume retried: {retries}")
    print("step seconds (step, screenshot):", shots.timings)


EDIT_AND_QUORUM = """
[tools.pay_expense]
approvers = ["alice", "bob"]
quorum = 2
editable = ["receipt"]
"""
CORRECTED = "0a1b2c3d4e5f60718293a4b5c6d7e8f90a1b2c3d"  # the receipt alice corrects the payment to


def test_approve_with_an_edit_and_a_quorum_of_two_in_the_prefect_ui(request: pytest.FixtureRequest,
                                                                     tmp_path: Path) -> None:
    browser, shots, ui_server, served, http = ui_fixtures(request)

    (tmp_path / "approvers.toml").write_text(EDIT_AND_QUORUM)
    scripted = ScriptedModel(tmp_path / "scripted-model")
    scripted.enqueue(PAY, DONE)
    effects = tmp_path / "effects"
    effects.mkdir()
    run = create_run(http, served.deployment_id,  # type: ignore[attr-defined]
                     {"receipt": RECEIPT, "effects_dir": str(effects), "model": scripted.model,
                      "approvers_file": str(tmp_path / "approvers.toml")})
    key1 = next_pause(http, run)
    page = browser.new_page()
    ui = RunPage(page, f"{ui_server.ui_url}/v2/runs/flow-run/{run}")
    with ApprovalsClient(ui_server.api_url, ui_server.auth_string) as approvals:
        field1 = approvals.show(run).field
        with shots.step(page, "quorum 1 - the proposal with its policy and an editable receipt"):
            dialog = ui.open(state="Suspended").resume_dialog()
            assert "pay_expense" in dialog.proposal_heading()
            assert dialog.root.get_by_text("2 distinct approvals from alice, bob").first.is_visible()
            assert dialog.value("receipt (edit to change)") == RECEIPT  # pre-filled with the proposed value
        with shots.step(page, "quorum 1 - alice approves with the receipt corrected"):
            dialog.choose("Decision", "approve")
            dialog.fill("receipt (edit to change)", CORRECTED)
            dialog.fill("Feedback", "wrong receipt: this is the lunch")
            dialog.choose("Approver", "alice")
            dialog.show_form_end()
        with shots.step(page, "quorum 1 - submitted"):
            sent = dialog.submit()
        assert sent[field1] == "approve" and sent["arg_receipt"] == CORRECTED and sent["approver"] == "alice", sent

        key2 = next_pause(http, run, after=key1)
        assert lines(effects / "pay.log") == []  # one approval of two: nothing ran
        second = approvals.show(run)
        assert second.field != field1 and second.may_approve == ("bob",)
        with shots.step(page, "quorum 2 - the edited call, approved by alice, waiting for bob"):
            dialog = ui.open(state="Suspended").resume_dialog()
            assert "pay_expense" in dialog.proposal_heading()  # waits for the description to render
            assert dialog.root.get_by_text("approved by alice (1 of 2); 1 more needed from bob").first.is_visible()
            assert dialog.value("receipt (edit to change)") == CORRECTED
        with shots.step(page, "quorum 2 - bob approves the edited call"):
            dialog.choose("Decision", "approve")
            dialog.choose("Approver", "bob")
            dialog.show_form_end()
        with shots.step(page, "quorum 2 - submitted"):
            sent = dialog.submit()
        assert sent[second.field] == "approve" and sent["approver"] == "bob", sent

    wait_state(http, run, {"COMPLETED"}, timeout=120)
    assert key2 != key1
    paid = lines(effects / "pay.log")
    assert len(paid) == 1 and paid[0].endswith(CORRECTED), paid  # the edited call, once
    with shots.step(page, "edited payment completed"):
        ui.open()
        ui.wait_for_state("Completed")
