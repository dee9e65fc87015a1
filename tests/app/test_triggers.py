"""How the served pipeline is started, on the session server: the `git.push` event trigger and the cron schedule
declared in deployments/prefect.yaml and served by flows/serve.py, `microagents push`, the sample repo's git hooks,
the approver notice (a Prefect automation calling a webhook when a run suspends), and the `latest-tag` ref.

Only the model is scripted; events, automations, the runner, git and the pipeline's processes are real.
"""

from __future__ import annotations

import json
import os
import queue
import re
import select
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from prefect_micro_agents import EXHAUSTED_EVENT, ApprovalsClient, exhausted_event
from prefect_micro_agents.testing import LocalPrefectServer, ScriptedModel
from flows.sample_app import SampleAppManifest, create_sample_app
from flows.targets.errors import UnknownRevisionError
from flows.targets.settings import TargetSettings
from gate_support import call
from prefect_harness import Served, next_pause, retrying

ROOT = Path(__file__).resolve().parents[2]
NAME = "local"  # what `python -m flows.serve` serves by default
FLOW = "deploy-pipeline"
SERVING_LINE = "serving deploy-pipeline/local: cron 0 2 * * * UTC (sha=latest-tag:v*), trigger git.push on main"
_started: list[str] = []  # runs this module caused; deleted at the end




def new_runs(http: httpx.Client, since: datetime, before: set[str]) -> list[dict[str, Any]]:
    """Pipeline runs (any deployment) expected to start from `since` on and not in `before`; excludes the nightly
    runs the scheduler creates ahead of time."""
    body = {"flows": {"name": {"any_": [FLOW]}},
            "flow_runs": {"expected_start_time": {"after_": since.isoformat(),
                                                  "before_": (datetime.now(UTC) + timedelta(minutes=1)).isoformat()}},
            "limit": 200}
    response = retrying(http.post, "/flow_runs/filter", json=body)
    response.raise_for_status()
    return [r for r in response.json() if r["id"] not in before]


def run_ids(http: httpx.Client, since: datetime) -> set[str]:
    return {r["id"] for r in new_runs(http, since, set())}


def wait_runs(http: httpx.Client, since: datetime, before: set[str], count: int = 1,
              timeout: float = 30) -> list[dict[str, Any]]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = new_runs(http, since, before)
        _started.extend(r["id"] for r in found if r["id"] not in _started)
        if len(found) >= count:
            return found
        time.sleep(0.2)
    raise TimeoutError(f"no pipeline run started within {timeout}s")


def push(sha: str, branch: str = "main", pusher: str = "tester", env: dict[str, str] | None = None) -> str:
    """`microagents push` as a subprocess of the CLI; returns the event id it printed."""
    proc = subprocess.run([sys.executable, "-m", "prefect_micro_agents.cli", "push", "--sha", sha, "--branch", branch,
                           "--pusher", pusher], env=env or dict(os.environ), cwd=ROOT, capture_output=True,
                          text=True, timeout=60, check=False)
    assert proc.returncode == 0, proc.stderr
    found = re.match(r"^([0-9a-f-]{36})  git\.push sample-app@(\S+) ([0-9a-f]{12}) by (\S+)$", proc.stdout.strip())
    assert found and found.group(2) == branch and sha.startswith(found.group(3)), proc.stdout
    return found.group(1)


def wait_event(http: httpx.Client, event_id: str, timeout: float = 15) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        response = retrying(http.post, "/events/filter", json={"filter": {"id": {"id": [event_id]}}})
        response.raise_for_status()
        if events := response.json()["events"]:
            return events[0]
        time.sleep(0.2)
    raise TimeoutError(f"event {event_id} not stored after {timeout}s")


def _git_env(env: dict[str, str] | None) -> dict[str, str]:
    base = {k: v for k, v in (env or os.environ).items() if not k.startswith("GIT_")}
    base.update(GIT_CONFIG_GLOBAL=os.devnull, GIT_CONFIG_NOSYSTEM="1", GIT_AUTHOR_NAME="Dana Dev",
                GIT_AUTHOR_EMAIL="dana@example.invalid", GIT_COMMITTER_NAME="Dana Dev",
                GIT_COMMITTER_EMAIL="dana@example.invalid")
    return base


def git(repo: Path, *args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["git", *args], cwd=repo, env=_git_env(env), capture_output=True, text=True, timeout=30,
                          check=True)


def git_and_its_hooks(repo: Path, *args: str, env: dict[str, str] | None = None, timeout: float = 60) -> float:
    """Run git, then wait until every process it started has exited, the hooks' background pushes included: they all
    inherit the write end of a pipe, whose read end reaches end-of-file only when the last of them is gone. Returns
    how long git itself took (the hook must not make the commit wait)."""
    read, write = os.pipe()
    try:
        started = time.monotonic()
        proc = subprocess.Popen(["git", *args], cwd=repo, env=_git_env(env), pass_fds=(write,),
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        os.close(write)
        write = -1
        _, err = proc.communicate(timeout=30)
        took = time.monotonic() - started
        assert proc.returncode == 0, err
        ready, _, _ = select.select([read], [], [], timeout)
        assert ready and os.read(read, 1) == b"", f"a process `git {args[0]}` started still runs after {timeout}s"
        return took
    finally:
        os.close(read)
        if write >= 0:
            os.close(write)


# -- "nothing else happened", proved rather than waited for ------------------------------------------------------------
#
# A check that an event started nothing must know the server has dealt with that event. Prefect's trigger service
# evaluates an event that declares `follows: <other event>` only after the other one (its causal ordering: the
# follower waits for its leader; prefect/server/events/ordering). So: emit a sentinel event that follows the event
# under test, wait until a sentinel automation has fired for it, and by then every automation has evaluated the event
# under test, and any firing it caused was published first. Firings are the server's own `prefect.automation.triggered`
# events, which name their triggering event (stored in order by the event persister).

SENTINEL_EVENT = "microagents.test.sentinel"


def firings(http: httpx.Client, event_id: str) -> list[str]:
    """Ids of the automations that fired for `event_id`, one per firing."""
    body = {"filter": {"event": {"name": ["prefect.automation.triggered"]},
                       "related": {"id": [f"prefect.event.{event_id}"], "role": ["triggering-event"]}},
            "limit": 50}
    response = retrying(http.post, "/events/filter", json=body)
    response.raise_for_status()
    return [e["resource"]["prefect.resource.id"].removeprefix("prefect.automation.") for e in response.json()["events"]]


def only_the_pipeline_fired(http: httpx.Client, event_id: str, deployment_id: str) -> None:
    """Exactly one automation fired for the event, and it is one that runs the pipeline deployment."""
    fired = firings(http, event_id)
    automations = retrying(http.post, "/automations/filter", json={}).json()
    runs_it = {a["id"] for a in automations if any(act.get("deployment_id") == deployment_id for act in a["actions"])}
    assert len(fired) == 1 and fired[0] in runs_it, f"fired for {event_id}: {fired}; the pipeline's: {runs_it}"


def automation_trail(http: httpx.Client, automation_id: Any, run_id: str) -> list[tuple[str, str, str]]:
    """The run's state events and the automation's own events (triggered, action executed or failed), oldest first:
    what to read when a notice did not arrive."""
    body = {"filter": {"any_resource": {"id": [f"prefect.flow-run.{run_id}", f"prefect.automation.{automation_id}"]}},
            "limit": 50}  # the most the events filter returns in one page
    response = retrying(http.post, "/events/filter", json=body)
    if response.status_code != 200:
        return [("", "events/filter refused", f"{response.status_code}: {response.text[:500]}")]
    return [(e["occurred"], f"{e['event']} id={e['id']} follows={e.get('follows')}",
             str(e.get("payload", {}).get("reason") or ""))
            for e in sorted(response.json()["events"], key=lambda e: e["occurred"])]


class Sentinel:
    """An automation that fires on sentinel events (and does nothing): proof that the trigger service got that far."""

    def __init__(self, http: httpx.Client) -> None:
        self.http = http
        response = retrying(http.post, "/automations/", json={
            "name": "microagents-test-sentinel", "enabled": True, "actions": [{"type": "do-nothing"}],
            "trigger": {"type": "event", "posture": "Reactive", "threshold": 1, "within": 0,
                        "expect": [SENTINEL_EVENT], "match": {"prefect.resource.id": "microagents.test.*"}}})
        response.raise_for_status()
        self.id: str = response.json()["id"]

    def emit(self, follows: str | None = None) -> str:
        event_id = str(uuid.uuid4())
        event = {"id": event_id, "occurred": datetime.now(UTC).isoformat(), "event": SENTINEL_EVENT,
                 "resource": {"prefect.resource.id": f"microagents.test.{event_id}"}, "payload": {}, "related": []}
        if follows:
            event["follows"] = follows
        retrying(self.http.post, "/events", json=[event]).raise_for_status()
        return event_id

    def fired_for(self, event_id: str, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.id in firings(self.http, event_id):
                return True
            time.sleep(0.2)
        return False

    def ready(self, timeout: float = 60) -> None:
        """Wait until the trigger service has loaded this automation (a probe fires)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.fired_for(self.emit(), timeout=8):
                return
        raise TimeoutError(f"the sentinel automation never fired within {timeout}s")

    def after(self, event_id: str, timeout: float = 60) -> None:
        """Return once every automation has evaluated `event_id` (see above); fail if that cannot be shown."""
        assert self.fired_for(self.emit(follows=event_id), timeout), \
            f"the sentinel following {event_id} did not fire within {timeout}s"

    def delete(self) -> None:
        retrying(self.http.delete, f"/automations/{self.id}")


# -- fixtures ---------------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def approvals(prefect_server: LocalPrefectServer) -> Iterator[ApprovalsClient]:
    with ApprovalsClient(prefect_server.api_url, prefect_server.auth_string) as client:
        yield client


@pytest.fixture(scope="module")
def deploy_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """DEPLOY_ROOT of the served process: runs started by events use the default targets, i.e. this directory."""
    return tmp_path_factory.mktemp("deploy-root")


@pytest.fixture(scope="module")
def sample(deploy_root: Path, prefect_server: LocalPrefectServer) -> SampleAppManifest:
    """The sample app where the default targets look for it (<DEPLOY_ROOT>/sample-app), hooks included."""
    return create_sample_app(deploy_root / "sample-app")


@pytest.fixture(scope="module")
def model(tmp_path_factory: pytest.TempPathFactory) -> ScriptedModel:
    return ScriptedModel(tmp_path_factory.mktemp("scripted-model"))


class Receiver:
    """A tiny HTTP server on 127.0.0.1 that records every POST body (the approvers' webhook)."""

    def __init__(self) -> None:
        received: queue.Queue[dict[str, Any]] = queue.Queue()

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802
                body = self.rfile.read(int(self.headers.get("content-length") or 0))
                received.put({"path": self.path, "at": time.monotonic(), "content_type":
                              self.headers.get("content-type"), "body": body.decode("utf-8", "replace")})
                self.send_response(200)
                self.end_headers()
                self.wfile.write(b"ok")

            def log_message(self, *args: Any) -> None:
                pass

        self.received = received
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/approvers"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def wait_for(self, text: str, timeout: float = 30) -> dict[str, Any]:
        """The first POST whose body contains `text` (a run id, an event name)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                item = self.received.get(timeout=0.2)
            except queue.Empty:
                continue
            if text in item["body"]:
                return item
        raise TimeoutError(f"no webhook POST about {text} within {timeout}s")

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture(scope="module")
def receiver() -> Iterator[Receiver]:
    r = Receiver()
    yield r
    r.close()


@pytest.fixture(scope="module")
def notify(prefect_server: LocalPrefectServer, http: httpx.Client, receiver: Receiver) -> Iterator[Any]:
    """The approver automation with a webhook to `receiver`; removed afterwards (it would fire on other tests)."""
    from flows.triggers import WEBHOOK_BLOCK_NAME, ensure_approval_automation

    automation = ensure_approval_automation(webhook_url=receiver.url)
    yield automation
    retrying(http.delete, f"/automations/{automation.id}")
    block = retrying(http.get, f"/block_types/slug/webhook/block_documents/name/{WEBHOOK_BLOCK_NAME}")
    if block.status_code == 200:
        retrying(http.delete, f"/block_documents/{block.json()['id']}")


@pytest.fixture(scope="module")
def sentinel(served: Served, http: httpx.Client) -> Iterator[Sentinel]:
    """Created after the pipeline deployment's trigger, and ready once a probe fired."""
    s = Sentinel(http)
    try:
        s.ready()
        yield s
    finally:
        s.delete()


@pytest.fixture(scope="module")
def served(prefect_server: LocalPrefectServer, http: httpx.Client, deploy_root: Path, sample: SampleAppManifest,
           model: ScriptedModel, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    env = {k: v for k, v in os.environ.items() if k not in ("AGENT_NOTIFY_BLOCK", "AGENT_NOTIFY_WEBHOOK_URL")}
    env.update(DEPLOY_ROOT=str(deploy_root), AGENT_MODEL=model.model)
    s = Served("flows.serve", env, http, f"{FLOW}/{NAME}", tmp_path_factory.mktemp("serve") / "serve.log")
    since = datetime.now(UTC) - timedelta(seconds=2)
    try:
        s.start()
        yield s
    finally:
        s.stop()  # the runner first, then what its runs left behind
        # Every run our pushes started (on any deployment carrying the trigger), so no later runner picks one up.
        for run in {*_started, *run_ids(http, since)}:
            retrying(http.delete, f"/flow_runs/{run}")
        if s.deployment_id:  # and its trigger, which would start a run for every later push in this session
            # (deleting a deployment leaves its trigger's automation behind, prefect 3.9.1: remove that first)
            retrying(http.delete, f"/automations/owned-by/prefect.deployment.{s.deployment_id}")
            retrying(http.delete, f"/deployments/{s.deployment_id}")
        TargetSettings(root=str(deploy_root)).build().stop_all()


# -- tests ------------------------------------------------------------------------------------------------------------


@pytest.mark.slow
def test_the_served_deployment_has_the_schedule_and_trigger_of_prefect_yaml(
    served: Served, http: httpx.Client
) -> None:
    spec = yaml.safe_load((ROOT / "deployments" / "prefect.yaml").read_text())["deployments"][0]
    declared_schedule, declared_trigger = spec["schedules"][0], spec["triggers"][0]
    assert declared_schedule["cron"] == "0 2 * * *" and declared_trigger["expect"] == ["git.push"]

    deployment = retrying(http.get, f"/deployments/name/{FLOW}/{NAME}").json()
    [schedule] = deployment["schedules"]
    assert schedule["schedule"]["cron"] == declared_schedule["cron"]
    assert schedule["schedule"]["timezone"] == declared_schedule["timezone"] == "UTC"
    assert schedule["active"] is True and schedule["slug"] == declared_schedule["slug"]
    assert schedule["parameters"] == declared_schedule["parameters"]
    assert schedule["parameters"]["sha"] == "latest-tag:v*"

    automations = retrying(http.post, "/automations/filter", json={}).json()
    owned = [a for a in automations if any(act.get("deployment_id") == served.deployment_id for act in a["actions"])]
    assert len(owned) == 1, owned
    trigger, [action] = owned[0]["trigger"], owned[0]["actions"]
    assert trigger["type"] == "event" and trigger["expect"] == ["git.push"] and trigger["posture"] == "Reactive"
    assert trigger["match"] == declared_trigger["match"] == {"prefect.resource.id": "git.repo.*", "git.branch": "main"}
    assert action["type"] == "run-deployment" and action["parameters"] == declared_trigger["parameters"]
    assert SERVING_LINE in served.log.read_text()


@pytest.mark.slow
def test_a_push_on_main_starts_exactly_one_run_that_asks_for_approval_and_notifies_approvers(
    served: Served, http: httpx.Client, approvals: ApprovalsClient, sample: SampleAppManifest,
    model: ScriptedModel, notify: Any, receiver: Receiver, sentinel: Sentinel,
) -> None:
    sha = sample.sha("v1.1.0")
    model.enqueue(call("deploy_backend_to_prod", sha=sha[:12]))
    since = datetime.now(UTC) - timedelta(seconds=2)
    before = run_ids(http, since)

    t0 = time.monotonic()
    event_id = push(sha, pusher="alice")
    [run] = wait_runs(http, since, before)
    started = time.monotonic()
    assert run["deployment_id"] == served.deployment_id
    assert {k: run["parameters"].get(k) for k in ("sha", "source", "actor")} == \
        {"sha": sha, "source": "git.push", "actor": "alice"}
    assert wait_event(http, event_id)["payload"] == {"sha": sha, "branch": "main", "repo": "sample-app",
                                                     "pusher": "alice"}

    next_pause(http, run["id"], timeout=90)
    paused = time.monotonic()
    request = approvals.show(run["id"])
    assert request.kind == "approval" and "proposes `deploy_backend_to_prod`" in request.description

    # The approvers hear about it: Prefect's automation POSTs the notice to the webhook.
    try:
        notice = receiver.wait_for(run["id"], timeout=90)
    except TimeoutError as exc:
        raise AssertionError(f"{exc}; what the server recorded: {automation_trail(http, notify.id, run['id'])}")
    body = json.loads(notice["body"])
    assert body["event"] == "prefect.flow-run.Suspended" and body["flow_run_id"] == run["id"]
    assert body["flow_name"] == FLOW and body["deployment_name"] == NAME
    assert body["ui_url"].endswith(f"/v2/runs/flow-run/{run['id']}") and body["ui_url"].startswith("http://127.0.0.1:")
    assert notice["content_type"] == "application/json"
    assert body["text"].startswith(f"Approval needed: {FLOW}/"), body["text"]

    # The same automation tells them when recovery gave up on a run (the event begin_attempt emits).
    gave_up = {"id": str(uuid.uuid4()), "occurred": datetime.now(UTC).isoformat(),
               **exhausted_event(run["id"], run["flow_id"], run["deployment_id"], "gave up after 3 recoveries")}
    retrying(http.post, "/events", json=[gave_up]).raise_for_status()
    later = json.loads(receiver.wait_for(EXHAUSTED_EVENT, timeout=90)["body"])
    assert later["event"] == EXHAUSTED_EVENT and later["flow_run_id"] == run["id"], later
    assert later["text"].startswith(f"Gave up after crashes: {FLOW}/"), later["text"]
    assert later["deployment_name"] == NAME, later

    # Exactly one: once every automation has evaluated the push, only the pipeline's trigger fired for it.
    sentinel.after(event_id)
    only_the_pipeline_fired(http, event_id, served.deployment_id)
    assert [r["id"] for r in new_runs(http, since, before)] == [run["id"]]
    print(f"\npush -> run created {started - t0:.1f}s, -> waiting for approval {paused - t0:.1f}s, "
          f"-> webhook {notice['at'] - t0:.1f}s")


@pytest.mark.slow
def test_a_run_with_the_nightly_parameters_promotes_the_newest_v_tag(
    served: Served, http: httpx.Client, approvals: ApprovalsClient, sample: SampleAppManifest,
    model: ScriptedModel,
) -> None:
    """What the scheduler starts at 02:00 UTC: a run with the schedule's parameters (read back from the server)."""
    [schedule] = retrying(http.get, f"/deployments/{served.deployment_id}").json()["schedules"]
    newest = sample.sha("v1.2.0")
    model.enqueue(call("deploy_backend_to_prod", sha=newest[:12]))
    response = retrying(http.post, f"/deployments/{served.deployment_id}/create_flow_run",
                         json={"parameters": schedule["parameters"]})
    response.raise_for_status()
    run = response.json()["id"]
    _started.append(run)
    next_pause(http, run, timeout=90)
    description = approvals.show(run).description
    assert "proposes `deploy_backend_to_prod`" in description
    assert f"trigger (schedule, nightly): deploy SHA {newest[:12]} to production (requested as v1.2.0 " \
           "(latest-tag:v*))" in description
    tasks = retrying(http.post, "/task_runs/filter", json={"flow_runs": {"id": {"any_": [run]}}}).json()
    assert {"newest tag (latest-tag:v*)", "resolve v1.2.0"} <= {t["name"] for t in tasks}


@pytest.mark.slow
def test_a_push_on_another_branch_starts_nothing(
    served: Served, http: httpx.Client, sample: SampleAppManifest, sentinel: Sentinel
) -> None:
    since = datetime.now(UTC) - timedelta(seconds=2)
    before = run_ids(http, since)
    event_id = push(sample.sha("v1.0.0"), branch="feature/region-info")
    assert wait_event(http, event_id)["resource"]["git.branch"] == "feature/region-info"
    sentinel.after(event_id)  # every automation has evaluated the push by now
    assert firings(http, event_id) == []
    assert new_runs(http, since, before) == []


@pytest.mark.slow
def test_approval_automation_is_optional_idempotent_and_says_what_is_wrong(
    prefect_server: LocalPrefectServer, http: httpx.Client, notify: Any, receiver: Receiver
) -> None:
    from flows.triggers import AUTOMATION_NAME, TriggerConfigError, ensure_approval_automation

    def names() -> list[str]:
        return [a["name"] for a in retrying(http.post, "/automations/filter", json={}).json()]

    assert ensure_approval_automation(block="", webhook_url="", name="microagents-test-unconfigured") is None
    assert "microagents-test-unconfigured" not in names()
    # No configuration: nothing changes, the existing automation is reported.
    assert ensure_approval_automation(block="", webhook_url="").id == notify.id
    again = ensure_approval_automation(webhook_url=receiver.url)
    assert again.id == notify.id and names().count(AUTOMATION_NAME) == 1
    assert again.trigger.expect == {"prefect.flow-run.Suspended", EXHAUSTED_EVENT}
    with pytest.raises(TriggerConfigError, match="<block-type-slug>/<block-name>"):
        ensure_approval_automation(block="approvers", webhook_url="", name="microagents-test-bad")
    with pytest.raises(TriggerConfigError, match="no slack-webhook block named 'nobody'"):
        ensure_approval_automation(block="slack-webhook/nobody", webhook_url="", name="microagents-test-bad")


@pytest.mark.slow
def test_the_sample_repo_hook_pushes_commits_on_main_only_and_never_blocks_git(
    served: Served, http: httpx.Client, sample: SampleAppManifest, model: ScriptedModel,
    approvals: ApprovalsClient, sentinel: Sentinel,
) -> None:
    repo = Path(sample.repo)
    hooks = [repo / ".git" / "hooks" / name for name in ("post-commit", "post-merge")]
    for hook in hooks:
        assert os.access(hook, os.X_OK)
        text = hook.read_text()
        assert f"{sys.executable} -m prefect_micro_agents.cli push" in text and "--branch main" in text
        assert "PREFECT_API_AUTH_STRING" not in text
    assert create_sample_app(repo).repo == sample.repo  # idempotent: hooks rewritten only if changed
    log = repo / ".git" / "microagents-push.log"
    since = datetime.now(UTC) - timedelta(seconds=2)
    before = run_ids(http, since)

    def sent() -> list[str]:  # one line per push the hook made (its background process's output)
        return log.read_text().splitlines() if log.exists() else []

    # A branch that is not main: nothing is sent (checked once every process the commit started has exited).
    git(repo, "checkout", "--quiet", "-b", "topic/hook-test")
    (repo / "NOTES.md").write_text("on a topic branch\n")
    git(repo, "add", "NOTES.md")
    sent_before = sent()
    git_and_its_hooks(repo, "commit", "--quiet", "-m", "topic commit")
    assert sent() == sent_before
    git(repo, "checkout", "--quiet", "main")

    # Main, with the server unreachable: the commit returns at once and succeeds; the hook only logs.
    (repo / "NOTES.md").write_text("server down\n")
    git(repo, "add", "NOTES.md")
    took = git_and_its_hooks(repo, "commit", "--quiet", "-m", "while the server is down",
                             env={**os.environ, "PREFECT_API_URL": "http://127.0.0.1:9/api"})
    assert took < 2.0
    assert "cannot reach the Prefect server" in "\n".join(sent()[len(sent_before):]), sent()

    # Main, server up: exactly one push, and exactly one run for the new HEAD, by the committer.
    (repo / "NOTES.md").write_text("a change on main\n")
    git(repo, "add", "NOTES.md")
    sent_before = sent()
    git_and_its_hooks(repo, "commit", "--quiet", "-m", "a change on main")
    head = git(repo, "rev-parse", "HEAD").stdout.strip()
    model.enqueue(call("deploy_backend_to_prod", sha=head[:12]))
    [line] = sent()[len(sent_before):]
    found = re.match(r"^([0-9a-f-]{36})  git\.push sample-app@main ([0-9a-f]{12}) by Dana Dev$", line)
    assert found and head.startswith(found.group(2)), line
    [run] = wait_runs(http, since, before)
    assert {k: run["parameters"].get(k) for k in ("sha", "source", "actor")} == \
        {"sha": head, "source": "git.push", "actor": "Dana Dev"}
    sentinel.after(found.group(1))
    only_the_pipeline_fired(http, found.group(1), served.deployment_id)
    assert [r["id"] for r in new_runs(http, since, before)] == [run["id"]]
    next_pause(http, run["id"], timeout=90)  # let it settle before the module deletes it
    assert approvals.show(run["id"]).kind == "approval"


def test_latest_tag_resolves_to_the_newest_tag(tmp_path: Path) -> None:
    from flows.deploy_pipeline import resolve_newest_tag

    manifest = create_sample_app(tmp_path / "repo", hooks=False)
    targets = TargetSettings(root=str(tmp_path / "envs"), repo=manifest.repo)
    assert resolve_newest_tag.fn(targets, "latest-tag:v*") == "v1.2.0"  # what the nightly schedule promotes
    assert resolve_newest_tag.fn(targets, "latest-tag") == "special/prod-only-fail"  # the newest of all tags
    assert resolve_newest_tag.fn(targets, "latest-tag:v1.0*") == "v1.0.0"
    with pytest.raises(UnknownRevisionError, match="no tag matching 'v9\\*'"):
        resolve_newest_tag.fn(targets, "latest-tag:v9*")
    with pytest.raises(UnknownRevisionError, match="must be a tag glob"):
        resolve_newest_tag.fn(targets, "latest-tag:$(id)")
    empty = tmp_path / "untagged"
    empty.mkdir()
    git(empty, "init", "--quiet", "--initial-branch=main")
    git(empty, "commit", "--quiet", "--allow-empty", "-m", "no tags yet")
    with pytest.raises(UnknownRevisionError, match="has no tags"):
        resolve_newest_tag.fn(TargetSettings(root=str(tmp_path / "envs2"), repo=str(empty)), "latest-tag")
