"""Secret canaries through the whole served pipeline on a real Prefect server, then a search of everything durable.

Distinct canaries enter by every path a secret can take:
- a model provider key in the runner's environment (OPENAI_API_KEY): must not even reach a deploy command;
- a target's environment (DEPLOY_TOKEN, passed with `pass_env`): deploy and health scripts echo it;
- a tool's output (REGISTRY_PASSWORD): the approved production deploy fails and prints it, and the failure's last
  words go back to the agent; a second run fails in staging the same way;
- a commit subject: a URL with credentials (held by no variable) and the bare password of MY_DB_URL (a URL-valued
  variable whose name says nothing secret);
- an approver's feedback quoting a secret the worker knows (SUPPORT_TOKEN).
Then: every prompt the model received, the thread files, every artifact, every stored task result, the execution
ledger, the targets' state files, the run logs (API and the runner's output), the server's SQLite files, and the
environment every command ran with.
"""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from prefect_micro_agents import ApprovalsClient, ThreadStore
from prefect_micro_agents.testing import LocalPrefectServer, ScriptedModel
from flows.sample_app import create_sample_app
from prefect_harness import Served, create_run, next_pause, stored_text, wait_state

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]
PROVIDER, TARGET, TOOL = "canary-provider-4a1f9e2c", "canary-target-7b3d0c5e", "canary-tool-2e6a8f1d"
URL_PW, DB_PW, FEEDBACK = "canary-urlpw-9c4b7a3e", "canary-dbpw-5d2e8b6f", "canary-feedback-1a7c3e9b"
CANARIES = {"provider key": PROVIDER, "target env": TARGET, "tool output": TOOL, "URL in a commit": URL_PW,
            "MY_DB_URL password in a commit": DB_PW, "approver feedback": FEEDBACK}
WORKER_ENV = {"OPENAI_API_KEY": PROVIDER, "DEPLOY_TOKEN": TARGET, "REGISTRY_PASSWORD": TOOL,
              "MY_DB_URL": f"postgres://app:{DB_PW}@db.internal:5432/app", "SUPPORT_TOKEN": FEEDBACK}

SCRIPTS = {
    "deploy.sh": """
        # deploy.sh SERVICE ENV SHA: production deploys (and staging ones, with a fail-staging file) are refused
        env > "env-deploy-$2-$1.txt"
        echo "deploying $1 $3 to $2 with token $DEPLOY_TOKEN"
        if [ "$2" = production ] || [ -e fail-staging ]; then
          echo "registry refused the push: password $REGISTRY_PASSWORD rejected" >&2; exit 1
        fi
        echo "$3" > "state-$2-$1"
    """,
    "health.sh": """
        env > "env-health-$2-$1.txt"
        echo "checked $1 in $2 with token $DEPLOY_TOKEN"
        test -f "state-$2-$1"
    """,
}


def call(intent: str, **args: str) -> dict[str, Any]:
    return {"call": {"intent": intent, **args}}


def git(repo: str, *args: str) -> str:
    env = {**os.environ, "GIT_AUTHOR_NAME": "Dev", "GIT_AUTHOR_EMAIL": "dev@example.com",
           "GIT_COMMITTER_NAME": "Dev", "GIT_COMMITTER_EMAIL": "dev@example.com"}
    return subprocess.run(["git", "-C", repo, *args], env=env, check=True, capture_output=True, text=True).stdout


def command_targets(work: Path, repo: str, *, fail_staging: bool = False) -> dict[str, Any]:
    work.mkdir()
    for name, body in SCRIPTS.items():
        (work / name).write_text(textwrap.dedent(body).lstrip())
    for service in ("backend", "frontend"):
        (work / f"state-production-{service}").write_text("old\n")
    if fail_staging:
        (work / "fail-staging").touch()
    service = {"deploy": "sh deploy.sh {service} {env} {sha}", "health": "sh health.sh {service} {env}"}
    env = {"services": {"backend": service, "frontend": service}}
    config = {"defaults": {"cwd": str(work), "timeout_seconds": 60, "pass_env": ["DEPLOY_TOKEN", "REGISTRY_PASSWORD"]},
              "repo": repo, "state_file": str(work / "state.json"), "environments": {"staging": env, "production": env}}
    return {"kind": "command", "commands": config}


@pytest.fixture(scope="module")
def served(prefect_server: LocalPrefectServer, http: httpx.Client,
           tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    env = {**{k: v for k, v in os.environ.items() if k != "AGENT_MODEL"}, **WORKER_ENV}
    s = Served("flows.serve", env, http, "deploy-pipeline/canaries",
               tmp_path_factory.mktemp("serve") / "serve.log",
               args=("--name", "canaries", "--no-schedule", "--no-trigger", "--no-notify"))
    s.deployment_id = s.start()  # type: ignore[attr-defined]
    yield s
    s.stop()


def found_in(text: str) -> list[str]:
    return [what for what, canary in CANARIES.items() if canary in text]


def test_no_canary_reaches_anything_durable_or_visible(
    served: Served, http: httpx.Client, prefect_server: LocalPrefectServer, scripted: ScriptedModel, tmp_path: Path,
) -> None:
    repo = create_sample_app(tmp_path / "repo").repo
    git(repo, "checkout", "-q", "--detach", "v1.2.0")
    git(repo, "commit", "-q", "--allow-empty", "-m", f"ci: mirror to https://deploy:{URL_PW}@git.example.com/app.git")
    git(repo, "commit", "-q", "--allow-empty", "-m", f"db: the app user's password is now {DB_PW}")
    sha = git(repo, "rev-parse", "HEAD").strip()
    work, failing = tmp_path / "work", tmp_path / "work-staging-fails"
    scripted.enqueue(call("deploy_backend_to_prod", sha=sha[:12]), call("deploy_frontend_to_prod", sha=sha[:12]),
                     call("done_for_now", message="the frontend deploy was refused; nothing else to do"))
    parameters = {"sha": sha, "model": scripted.model, "source": "git.push", "actor": "ci"}
    run = create_run(http, served.deployment_id,  # type: ignore[attr-defined]
                     {**parameters, "targets": command_targets(work, repo)})
    staging_run = create_run(http, served.deployment_id,  # type: ignore[attr-defined]
                             {**parameters, "targets": command_targets(failing, repo, fail_staging=True)})
    with ApprovalsClient(prefect_server.api_url, prefect_server.auth_string) as approvals:
        first = next_pause(http, run)
        approvals.reject(run, "alice", f"not the backend; and the support token is {FEEDBACK}, tell nobody")
        next_pause(http, run, after=first)
        approvals.approve(run, "bob")
    for run_id in (run, staging_run):
        wait_state(http, run_id, {"COMPLETED", "FAILED"}, timeout=180)

    # The paths were really taken: each canary's redacted trace is where the agent or a human reads it.
    prompts = [json.dumps(r["messages"]) for r in scripted.requests()]
    assert len(prompts) == 3
    assert "[redacted:url-password]@git.example.com" in prompts[0] and "now [redacted:MY_DB_URL]" in prompts[0]
    assert "the support token is [redacted:SUPPORT_TOKEN]" in prompts[1]
    assert "password [redacted:REGISTRY_PASSWORD] rejected" in prompts[2]  # the failed deploy's last words
    state = (work / "state.json").read_text() + (failing / "state.json").read_text()
    assert "token [redacted:DEPLOY_TOKEN]" in state and "password [redacted:REGISTRY_PASSWORD]" in state

    searched: dict[str, str] = {f"prompt {n}": p for n, p in enumerate(prompts)}
    searched["target state files"] = state
    agents_dir = ThreadStore().root.parent  # the kit's thread cache: threads/
    for path in sorted((agents_dir / "threads").glob(f"{run}/*.json")):
        searched[str(path.relative_to(agents_dir))] = path.read_text()
    records = prefect_server.storage_path / "microagents"  # the execution ledger, in the result storage
    for path in sorted((records / "executions").glob(f"{run}*/*")):
        searched[str(path.relative_to(records))] = path.read_text()
    assert any(k.startswith("executions") for k in searched) and any(k.startswith("threads") for k in searched)
    body = {"artifacts": {"flow_run_id": {"any_": [run, staging_run]}}}
    searched["artifacts"] = json.dumps(http.post("/artifacts/filter", json=body).json())
    results = {str(p): stored_text(p) for p in prefect_server.storage_path.iterdir() if p.is_file()}
    assert any("checked backend in staging with token [redacted:DEPLOY_TOKEN]" in t for t in results.values())
    searched.update(results)
    logs = http.post("/logs/filter", json={"logs": {"flow_run_id": {"any_": [run, staging_run]}}}).json()
    searched["run logs (API)"] = json.dumps(logs)
    searched["runner output"] = served.log.read_text(errors="replace")
    assert "registry refused the push: password [redacted:REGISTRY_PASSWORD]" in searched["runner output"]
    searched["server log"] = prefect_server.log_path.read_text(errors="replace")
    db = prefect_server.home / "prefect.db"
    for path in (db, db.with_name("prefect.db-wal"), db.with_name("prefect.db-shm")):
        if path.exists():
            searched[path.name] = path.read_bytes().decode("utf-8", errors="replace")
    leaks = {where: found for where, text in searched.items() if (found := found_in(text))}
    # Prefect itself stores the raw run input a human typed (the resume form's response): that copy, and only that
    # one, holds the feedback canary; everything of ours has it redacted.
    assert {where: found for where, found in leaks.items() if found != ["approver feedback"]} == {}, leaks
    assert set(leaks) <= {"prefect.db", "prefect.db-wal"}
    assert where_in_database(db, FEEDBACK) == {("flow_run_input", "value")}

    # The provider key never reached a command; what the config names did.
    dumps = {p.name: p.read_text() for work_dir in (work, failing) for p in work_dir.glob("env-*.txt")}
    assert {"env-deploy-staging-backend.txt", "env-deploy-production-frontend.txt",
            "env-health-production-backend.txt"} <= set(dumps)
    for name, dump in dumps.items():
        assert PROVIDER not in dump and "OPENAI_API_KEY" not in dump and "MY_DB_URL" not in dump, name
        assert f"DEPLOY_TOKEN={TARGET}" in dump and f"REGISTRY_PASSWORD={TOOL}" in dump, name


def where_in_database(db: Path, needle: str) -> set[tuple[str, str]]:
    """(table, column) of every text cell of the SQLite database that contains `needle` (read-only)."""
    found = set()
    with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as conn:
        tables = [r[0] for r in conn.execute("select name from sqlite_master where type = 'table'")]
        for table in tables:
            for column in [r[1] for r in conn.execute(f'pragma table_info("{table}")')]:
                hit = conn.execute(f'select 1 from "{table}" where cast("{column}" as text) like ? limit 1',
                                   (f"%{needle}%",)).fetchone()
                if hit:
                    found.add((table, column))
    conn.close()
    return found
