"""The deploy pipeline end to end: a real Prefect server, the served deployment, real git, processes and HTTP.

Only the model is scripted. One served process for the whole module; every test deploys into its own directories.
"""

from __future__ import annotations

import json
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from prefect_micro_agents import ApprovalsClient, ThreadStore
from prefect_micro_agents.testing import LocalPrefectServer, ScriptedModel
from flows.sample_app import SampleAppManifest, create_sample_app
from flows.targets import LocalTargets
from flows.targets.httpget import http_get
from flows.targets.settings import TargetSettings
from pipeline_support import call, deploy_prod, local_settings, serve_pipeline, start
from prefect_harness import Served, flow_state, lines, next_pause, run_logs, wait_engine_exit, wait_state

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def sample(tmp_path_factory: pytest.TempPathFactory) -> SampleAppManifest:
    return create_sample_app(tmp_path_factory.mktemp("sample") / "repo")


@pytest.fixture(scope="module")
def served(prefect_server: LocalPrefectServer, http: httpx.Client,
           tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    yield from serve_pipeline(http, tmp_path_factory.mktemp("serve"))


@pytest.fixture(scope="module")
def approvals(prefect_server: LocalPrefectServer) -> Iterator[ApprovalsClient]:
    with ApprovalsClient(prefect_server.api_url, prefect_server.auth_string) as client:
        yield client


@pytest.fixture
def settings(tmp_path: Path, sample: SampleAppManifest) -> Iterator[TargetSettings]:
    """Local staging/production of the sample app under tmp_path; every process they start is stopped after."""
    yield from local_settings(tmp_path, sample)


def report_rows(http: httpx.Client, run: str) -> list[dict[str, Any]]:
    body = {"artifacts": {"key": {"any_": ["deploy-report"]}, "flow_run_id": {"any_": [run]}}}
    found = http.post("/artifacts/filter", json=body).json()
    assert len(found) == 1, found  # one version per run: replays added none
    data = found[0]["data"]
    return json.loads(data) if isinstance(data, str) else data


def prod_history(local: LocalTargets) -> list[tuple[str, str, str, str]]:
    return [(h.service, h.action, h.sha, h.status) for h in local.state("production").history]


def assert_clean_failure(http: httpx.Client, run: str, state: dict[str, Any], outcome: str) -> None:
    """A failed outcome reads as one: state Failed (Prefect's own name, so automations on Failed fire), its message
    says why, one ERROR line in the run's logs (the outcome), and no traceback from the engine."""
    assert (state["type"], state["name"]) == ("FAILED", "Failed"), state
    wait_engine_exit(run)  # every log line of the run is stored once its process is gone
    logs = run_logs(http, run)
    assert [log["message"] for log in logs if log["level"] >= 40] == [f"{outcome}: {state['message']}"], logs
    assert not [log for log in logs if "Traceback" in log["message"] or "cannot be resolved" in log["message"]]
    # The server stores events in batches (every few seconds): wait for this run's Failed event, by name.
    body = {"filter": {"any_resource": {"id": [f"prefect.flow-run.{run}"]}, "event": {"name": ["prefect.flow-run.Failed"]}},
            "limit": 5}
    deadline = time.monotonic() + 30
    while not http.post("/events/filter", json=body).json()["events"]:
        assert time.monotonic() < deadline, f"no prefect.flow-run.Failed event for {run}"
        time.sleep(0.5)


def test_happy_path_with_a_rejected_frontend_first(
    served: Served, http: httpx.Client, approvals: ApprovalsClient, scripted: ScriptedModel,
    settings: TargetSettings, sample: SampleAppManifest,
) -> None:
    local = settings.build()
    assert isinstance(local, LocalTargets)
    old, new = sample.sha("v1.0.0"), sample.sha("v1.2.0")
    deploy_prod(local, old)
    short = new[:12]  # what the model sees and passes back
    scripted.enqueue(call("deploy_frontend_to_prod", sha=short), call("deploy_backend_to_prod", sha=short),
                     call("deploy_frontend_to_prod", sha=short), call("done_for_now", message="both on v1.2.0"))
    run = start(served, http, "v1.2.0", scripted, settings)

    key1 = next_pause(http, run)
    first = approvals.show(run)
    assert "deploy agent proposes `deploy_frontend_to_prod`" in first.description
    assert "### commits_since_prod" in first.description and "### staging_e2e" in first.description
    assert local.state("staging").services["frontend"].sha == new  # staging ran before any agent
    approvals.reject(run, "alice", "deploy the backend first")
    key2 = next_pause(http, run, after=key1)
    assert "proposes `deploy_backend_to_prod`" in approvals.show(run).description
    approvals.approve(run, "bob")
    key3 = next_pause(http, run, after=key2)
    assert "proposes `deploy_frontend_to_prod`" in approvals.show(run).description
    assert local.state("production").services["backend"].sha == new
    approvals.approve(run, "carol")
    state = wait_state(http, run, {"COMPLETED"}, timeout=120)
    assert key3 not in (key1, key2), state
    assert state["message"] == (f"deployed backend {short} and frontend {short}; production e2e passes (backend on "
                                f"{short}, frontend on {short}): both on v1.2.0")

    # Production runs the new SHA for both services, over real HTTP, and is green.
    backend = http_get(local.url("production", "backend") + "/api/version").json()
    status = http_get(local.url("production", "frontend") + "/api/status").json()
    assert backend == {"sha": new, "api": 2}
    assert (status["sha"], status["backend_sha"], status["backend_compatible"]) == (new, new, True)
    assert local.run_e2e("production").passed
    # Each deploy executed once, across four executions of the flow body (first run and three resumes).
    assert prod_history(local) == [
        ("backend", "deploy", old, "succeeded"), ("frontend", "deploy", old, "succeeded"),
        ("backend", "deploy", new, "succeeded"), ("frontend", "deploy", new, "succeeded")]
    assert [(h.service, h.status) for h in local.state("staging").history] == \
        [("backend", "succeeded"), ("frontend", "succeeded")]
    # The model was asked once per proposal, and saw the pre-fetched context and the feedback.
    prompts = [r["messages"][1]["content"] for r in scripted.requests()]
    assert len(prompts) == 4
    assert f"trigger (git.push, ci): deploy SHA {short} to production (requested as v1.2.0)" in prompts[0]
    for name in ("prod_versions", "commits_since_prod", "tags", "staging_e2e", "recent_deploys"):
        assert f"context {name}:" in prompts[0], name
    assert "v1.2.0: frontend requires api 2" in prompts[0] and old[:12] in prompts[0]
    assert "rejected 1 by alice: deploy the backend first" in prompts[1]

    rows = report_rows(http, run)
    by_step = [(r["step"], r["by"], r["outcome"].split(":")[0]) for r in rows]
    assert ("deploy: deploy_frontend_to_prod", "rejected by alice: deploy the backend first",
            "not run (rejected)") in by_step
    assert ("deploy: deploy_backend_to_prod", "approved by bob", "ok") in by_step
    assert ("deploy: deploy_frontend_to_prod", "approved by carol", "ok") in by_step
    assert rows[-1]["step"] == "outcome" and rows[-1]["outcome"] == "deployed"
    assert all(r["at"] and r["seconds"] is not None for r in rows if r["outcome"].startswith(("ok", "passed")))
    assert rows[-1]["seconds"] > 0
    thread = ThreadStore().load(run, "deploy")
    assert thread is not None and thread.events[-1].type == "done"


def test_staging_failure_stops_before_any_agent(
    served: Served, http: httpx.Client, scripted: ScriptedModel, settings: TargetSettings,
    sample: SampleAppManifest,
) -> None:
    run = start(served, http, "special/staging-fail", scripted, settings)
    state = wait_state(http, run, {"FAILED"}, timeout=90)
    assert "staging rejected" in state["message"] and "backend_version" in state["message"]
    assert "Nothing was deployed to production" in state["message"]
    assert scripted.requests() == []
    local = settings.build()
    assert prod_history(local) == []
    assert local.state("staging").services["backend"].sha == sample.sha("staging_fail")
    rows = report_rows(http, run)
    assert [r["outcome"] for r in rows] == ["ok", "ok", "FAILED", "staging_failed"]
    assert_clean_failure(http, run, state, "staging_failed")


def test_production_failure_is_rolled_back(
    served: Served, http: httpx.Client, approvals: ApprovalsClient, scripted: ScriptedModel,
    settings: TargetSettings, sample: SampleAppManifest,
) -> None:
    local = settings.build()
    assert isinstance(local, LocalTargets)
    good, bad = sample.sha("v1.2.0"), sample.sha("prod_only_fail")
    deploy_prod(local, good)
    scripted.enqueue(call("deploy_backend_to_prod", sha=bad[:12]),
                     call("done_for_now", message="backend deployed; the frontend is unchanged"),
                     call("rollback_backend", to=good[:12]),
                     call("done_for_now", message="backend back on v1.2.0"))
    run = start(served, http, bad, scripted, settings)
    key1 = next_pause(http, run)
    approvals.approve(run, "bob")
    next_pause(http, run, after=key1, timeout=120)
    proposal = approvals.show(run)
    assert "rollback agent proposes `rollback_backend`" in proposal.description
    assert "### prod_e2e" in proposal.description and "### previous_releases" in proposal.description
    assert http_get(local.url("production", "backend") + "/api/version").status == 500  # broken until approved
    approvals.approve(run, "carol")
    state = wait_state(http, run, {"FAILED"}, timeout=120)
    assert state["message"] == (f"production e2e failed (backend_version, frontend_backend_compatible) after this "
                                f"run deployed backend {bad[:12]}; rolled back backend to {good[:12]}; production "
                                f"e2e passes again (backend on {good[:12]}, frontend on {good[:12]})")

    assert http_get(local.url("production", "backend") + "/api/version").json() == {"sha": good, "api": 2}
    assert local.run_e2e("production").passed
    assert prod_history(local)[2:] == [("backend", "deploy", bad, "succeeded"),
                                       ("backend", "rollback", good, "succeeded")]
    prompts = [r["messages"][1]["content"] for r in scripted.requests()]
    assert len(prompts) == 4
    rollback_prompt = prompts[2]
    assert "context deploy_summary:" in rollback_prompt and "approved_by" in rollback_prompt
    assert "backend_version" in rollback_prompt and f"current={bad[:12]}" in rollback_prompt
    assert "v1.2.0" in rollback_prompt  # previous releases carry their tags
    rows = report_rows(http, run)
    steps = [(r["step"], r["by"], r["outcome"].split(":")[0]) for r in rows]
    assert ("deploy: deploy_backend_to_prod", "approved by bob", "ok") in steps
    assert ("rollback: rollback_backend", "approved by carol", "ok") in steps
    assert [r["outcome"] for r in rows if r["step"].startswith("e2e production")] == ["FAILED", "passed"]
    assert rows[-1]["outcome"] == "rolled_back"
    assert_clean_failure(http, run, state, "rolled_back")


def test_every_proposal_rejected_deploys_nothing_and_starts_no_rollback(
    served: Served, http: httpx.Client, approvals: ApprovalsClient, scripted: ScriptedModel,
    settings: TargetSettings, sample: SampleAppManifest,
) -> None:
    """Production is empty and stays so: its e2e would fail, but this run changed nothing, so nothing is tested,
    blamed or rolled back, and the run says so."""
    short = sample.sha("v1.2.0")[:12]
    scripted.enqueue(call("deploy_backend_to_prod", sha=short), call("deploy_frontend_to_prod", sha=short),
                     call("done_for_now", message="nothing deployed: both rejected"))
    run = start(served, http, "v1.2.0", scripted, settings)
    key1 = next_pause(http, run)
    approvals.reject(run, "alice", "not during the freeze")
    next_pause(http, run, after=key1)
    approvals.reject(run, "bob", "not during the freeze")
    state = wait_state(http, run, {"COMPLETED"}, timeout=120)
    assert state["message"] == (
        "nothing was deployed: deploy_backend_to_prod rejected by alice (not during the freeze); "
        "deploy_frontend_to_prod rejected by bob (not during the freeze); production is unchanged (nothing runs "
        "there yet); the deploy agent said: nothing deployed: both rejected")

    local = settings.build()
    assert prod_history(local) == []
    assert len(scripted.requests()) == 3  # the deploy agent's three steps; no rollback agent was asked anything
    assert ThreadStore().load(run, "rollback") is None
    rows = report_rows(http, run)
    assert not [r for r in rows if r["step"].startswith(("e2e production", "rollback"))], rows
    assert (rows[-1]["step"], rows[-1]["outcome"]) == ("outcome", "not_deployed")
    assert "production e2e" not in rows[-1]["detail"]


def test_bad_configuration_and_unknown_sha_fail_before_anything_runs(
    served: Served, http: httpx.Client, scripted: ScriptedModel, settings: TargetSettings, tmp_path: Path,
) -> None:
    bad_config = {"kind": "command", "commands": {"environments": {"staging": {"services": {
        "backend": {"deploy": "deploy.sh {service} {version}", "health": "true"},
        "frontend": {"deploy": "deploy.sh {sha}", "health": "true"}}}}}}
    runs = {
        "unknown sha": (start(served, http, "0badc0ffee", scripted, settings),
                        "unknown revision '0badc0ffee'"),
        "bad placeholder": (start(served, http, "v1.2.0", scripted, bad_config),
                            "uses unknown placeholder(s) {version}; allowed: {env}, {service}, {sha}"),
        "missing repo": (start(served, http, "v1.2.0", scripted, {"repo": str(tmp_path / "nope")}),
                         "is not a git repository"),
    }
    for name, (run, expected) in runs.items():
        state = wait_state(http, run, {"FAILED"}, timeout=90)
        assert expected in state["message"], (name, state["message"])
    local = settings.build()
    assert local.state("staging").history == [] and prod_history(local) == []
    assert scripted.requests() == []
    assert not (tmp_path / "nope").exists()


SCRIPTS = {
    "deploy.sh": """
        # deploy.sh SERVICE ENV SHA: production deploys record start/end times; a `hold` file makes them wait
        if [ "$2" = production ]; then
          echo "start $(date +%s.%N)" >> times.log
          n=0; while [ -e hold ] && [ $n -lt 1200 ]; do sleep 0.05; n=$((n+1)); done
          echo "end $(date +%s.%N)" >> times.log
        fi
        echo "$3" > "state-$2-$1"
    """,
    "health.sh": 'test -f "state-$2-$1"\n',
}


def command_targets(work: Path, sample: SampleAppManifest) -> dict[str, Any]:
    for name, body in SCRIPTS.items():
        (work / name).write_text(textwrap.dedent(body).lstrip())
    for service in ("backend", "frontend"):
        (work / f"state-production-{service}").write_text("old\n")
    service = {"deploy": "sh deploy.sh {service} {env} {sha}", "health": "sh health.sh {service} {env}"}
    env = {"services": {"backend": service, "frontend": service}}
    config = {"defaults": {"cwd": str(work), "timeout_seconds": 90}, "repo": sample.repo,
              "state_file": str(work / "state.json"), "environments": {"staging": env, "production": env}}
    return {"kind": "command", "commands": config}


def tasks_of(http: httpx.Client, run: str, prefix: str = "", state: str | None = None) -> list[str]:
    """Names (and states) of the run's task runs that start with `prefix`, in `state` if given."""
    body: dict[str, Any] = {"flow_runs": {"id": {"any_": [run]}}}
    if state is not None:
        body["task_runs"] = {"state": {"type": {"any_": [state]}}}
    return [f"{t['name']} ({t['state_type']})" for t in http.post("/task_runs/filter", json=body).json()
            if t["name"].startswith(prefix)]


def stamp(path: Path, kind: str) -> float:
    return next(float(line.split()[1]) for line in lines(path) if line.startswith(kind))


def test_a_second_production_change_waits_for_the_first(
    served: Served, http: httpx.Client, approvals: ApprovalsClient, tmp_path: Path, sample: SampleAppManifest,
) -> None:
    """Two runs with their own targets and approved deploys that overlap: the second deploy starts only after the
    first finished, and both runs complete (waiting is not failing)."""
    sha = sample.sha("v1.1.0")
    works, models, runs = {}, {}, {}
    for name in ("a", "b"):
        works[name] = tmp_path / name
        works[name].mkdir()
        models[name] = ScriptedModel(tmp_path / f"model-{name}")
        models[name].enqueue(call("deploy_backend_to_prod", sha=sha[:12]), call("done_for_now", message="done"))
    (works["a"] / "hold").touch()
    try:
        for name in ("a", "b"):
            runs[name] = start(served, http, sha, models[name], command_targets(works[name], sample))
        for name in ("a", "b"):
            next_pause(http, runs[name])
        approvals.approve(runs["a"], "alice")
        deadline = time.monotonic() + 90
        while not lines(works["a"] / "times.log"):
            assert time.monotonic() < deadline, "run a never started its production deploy"
            time.sleep(0.1)
        approvals.approve(runs["b"], "bob")
        # Positive synchronisation: b's execute task exists (Pending) only once b reached its approved change; from
        # there to asking the server for the slot is a few lines of in-process code. If the limit did not hold b
        # back, its task would be Running and its deploy command writing times.log within milliseconds.
        deadline = time.monotonic() + 90
        while not tasks_of(http, runs["b"], "execute deploy_backend_to_prod", "PENDING"):
            assert not lines(works["b"] / "times.log"), "run b deployed to production while run a was deploying"
            assert time.monotonic() < deadline, f"run b never reached its deploy: {tasks_of(http, runs['b'])}"
            time.sleep(0.1)
        held = time.monotonic()
        while time.monotonic() - held < 3:
            assert not tasks_of(http, runs["b"], "execute deploy_backend_to_prod", "RUNNING"), \
                "run b's deploy started while run a held the slot"
            time.sleep(0.1)
        assert lines(works["b"] / "times.log") == [], "run b deployed to production while run a was deploying"
        limit = http.get("/v2/concurrency_limits/tag:production-changes").json()
        assert (limit["limit"], limit["active_slots"]) == (1, 1)
        assert flow_state(http, runs["b"])["type"] == "RUNNING"
    finally:
        (works["a"] / "hold").unlink()
    for name in ("a", "b"):
        wait_state(http, runs[name], {"COMPLETED"}, timeout=120)
    a_end, b_start = stamp(works["a"] / "times.log", "end"), stamp(works["b"] / "times.log", "start")
    assert b_start >= a_end, (a_end, b_start)
    assert (works["b"] / "state-production-backend").read_text().strip() == sha
