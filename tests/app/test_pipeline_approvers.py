"""The deploy pipeline under the sample approvers file (deployments/approvers.toml): a production deploy needs two
release managers and not the commit's author. The commit is real git, authored by a release manager (carol)."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from prefect_micro_agents import ApprovalsClient, ReceiptEvent, ResumeRefused, ThreadStore
from prefect_micro_agents.testing import LocalPrefectServer, ScriptedModel
from flows.sample_app import SampleAppManifest, create_sample_app
from flows.targets import LocalTargets
from flows.targets.settings import TargetSettings
from pipeline_support import call, deploy_prod, local_settings, serve_pipeline, start
from prefect_harness import Served, flow_state, next_pause, wait_state

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def sample(tmp_path_factory: pytest.TempPathFactory) -> SampleAppManifest:
    return create_sample_app(tmp_path_factory.mktemp("sample") / "repo")


@pytest.fixture(scope="module")
def served(prefect_server: LocalPrefectServer, http: httpx.Client,
           tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    """The pipeline served with the sample approvers file switched on, as the README says to."""
    yield from serve_pipeline(http, tmp_path_factory.mktemp("serve"),
                              AGENT_APPROVERS_FILE=str(ROOT / "deployments" / "approvers.toml"))


@pytest.fixture
def settings(tmp_path: Path, sample: SampleAppManifest) -> Iterator[TargetSettings]:
    yield from local_settings(tmp_path, sample)


def commit_by(repo: str, author: str, on: str) -> str:
    """A new commit on top of `on` (same tree), authored by `author`: what a release manager merging a change does."""
    env = {**{k: v for k, v in os.environ.items() if not k.startswith("GIT_")}, "GIT_CONFIG_GLOBAL": os.devnull,
           "GIT_AUTHOR_NAME": author, "GIT_AUTHOR_EMAIL": f"{author}@example.invalid",
           "GIT_COMMITTER_NAME": author, "GIT_COMMITTER_EMAIL": f"{author}@example.invalid"}
    sha = subprocess.run(["git", "commit-tree", f"{on}^{{tree}}", "-p", on, "-m", f"a change by {author}"], cwd=repo,
                         env=env, capture_output=True, text=True, check=True).stdout.strip()
    subprocess.run(["git", "update-ref", f"refs/heads/{author}-change", sha], cwd=repo, check=True)
    return sha


def test_a_production_deploy_needs_two_release_managers_and_not_the_commits_author(
        served: Served, http: httpx.Client, approvals: ApprovalsClient, scripted: ScriptedModel,
        settings: TargetSettings, sample: SampleAppManifest) -> None:
    local = settings.build()
    assert isinstance(local, LocalTargets)
    deploy_prod(local, sample.sha("v1.2.0"))
    sha = commit_by(sample.repo, "carol", sample.sha("v1.2.0"))
    scripted.enqueue(call("deploy_backend_to_prod", sha=sha[:12]), call("done_for_now", message="backend deployed"))
    run = start(served, http, sha, scripted, settings)

    key = next_pause(http, run, timeout=180)
    first = approvals.show(run)
    assert first.may_approve == ("alice", "bob")  # carol wrote the commit
    assert "2 distinct approvals from @release-managers, not the author of the commit" in first.description
    with pytest.raises(ResumeRefused, match="'carol' may not decide"):
        approvals.approve(run, "carol")
    approvals.approve(run, "alice")
    next_pause(http, run, after=key)
    assert "approved by alice (1 of 2); 1 more needed from bob" in approvals.show(run).description
    assert local.state("production").services["backend"].sha == sample.sha("v1.2.0")  # nothing deployed yet
    assert flow_state(http, run)["name"] == "Suspended"

    approvals.approve(run, "bob")
    wait_state(http, run, {"COMPLETED"}, timeout=180)
    assert local.state("production").services["backend"].sha == sha
    assert [h.sha for h in local.state("production").history if h.service == "backend"].count(sha) == 1
    thread = ThreadStore().load(run, "deploy")
    assert thread is not None
    assert [r.approvers for r in thread.of_type(ReceiptEvent)] == [("alice", "bob")]
