"""Local staging/production targets against the sample repo: real git exports, real processes, real HTTP."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from flows.sample_app import SampleAppManifest, create_sample_app
from flows.targets import (
    DeployTarget,
    TargetError,
    IdempotencyConflictError,
    LocalTargets,
    ReleaseNotFoundError,
    TargetConfigError,
    UnknownRevisionError,
)
from flows.targets.httpget import http_get
from flows.targets.processes import is_alive


@pytest.fixture(scope="module")
def sample(tmp_path_factory: pytest.TempPathFactory) -> SampleAppManifest:
    return create_sample_app(tmp_path_factory.mktemp("sample") / "repo")


def started_pids(targets: LocalTargets) -> set[int]:
    st = targets.store.read()
    return {h.result.pid for h in st.history if h.result and h.result.pid}


@pytest.fixture
def local(tmp_path: Path, sample: SampleAppManifest) -> Iterator[LocalTargets]:
    targets = LocalTargets(tmp_path / "envs", sample.repo, health_timeout=10)
    yield targets
    stopped = targets.stop_all()
    everything = started_pids(targets) | set(stopped)
    assert not [pid for pid in everything if is_alive(pid)], "service processes left running"
    assert all(s.pid is None for env in ("staging", "production") for s in targets.state(env).services.values())


def deploy_both(t: LocalTargets, env: str, ref: str) -> None:
    for service in ("backend", "frontend"):
        result = t.deploy(service, env, ref)
        assert result.ok and not result.noop, result.message


def failed(report) -> list[str]:
    return [c.name for c in report.checks if not c.ok]


def test_deploy_to_staging_is_green(local: LocalTargets, sample: SampleAppManifest) -> None:
    assert isinstance(local, DeployTarget)
    deploy_both(local, "staging", "v1.0.0")
    sha = sample.sha("v1.0.0")
    report = local.run_e2e("staging")
    assert report.passed and len(report.checks) == 4, report
    assert http_get(local.url("staging", "backend") + "/api/version").json() == {"sha": sha, "api": 1}
    page = http_get(local.url("staging", "frontend") + "/").body
    assert "backend compatible: yes" in page and sha in page and local.url("staging", "backend") in page
    service_dir = local.service_dir("staging", "backend")
    assert os.readlink(service_dir / "current") == f"releases/{sha}"
    assert (service_dir / "releases" / sha / "RELEASE").read_text().strip() == sha
    state = local.state("staging")
    assert {s: (v.sha, v.status, v.healthy) for s, v in state.services.items()} == \
        {"backend": (sha, "running", True), "frontend": (sha, "running", True)}
    assert [(h.service, h.action, h.status) for h in state.history] == \
        [("backend", "deploy", "succeeded"), ("frontend", "deploy", "succeeded")]
    assert local.state("production").services["backend"].status == "never_deployed"


def test_same_sha_again_is_a_noop(local: LocalTargets, sample: SampleAppManifest) -> None:
    first = local.deploy("backend", "staging", "v1.0.0")
    again = local.deploy("backend", "staging", sample.sha("v1.0.0")[:8])
    assert again.ok and again.noop and "nothing to do" in again.message
    assert again.pid == first.pid and local.state("staging").services["backend"].pid == first.pid
    assert local.state("staging").history[-1].status == "noop"


def test_frontend_before_backend_breaks_compatibility_until_backend_follows(local: LocalTargets) -> None:
    deploy_both(local, "staging", "v1.0.0")
    assert local.deploy("frontend", "staging", "v1.2.0").ok
    report = local.run_e2e("staging")
    assert not report.passed and failed(report) == ["frontend_backend_compatible"]
    assert "requires api 2" in report.checks[-1].detail and "has api 1" in report.checks[-1].detail
    assert local.deploy("backend", "staging", "v1.2.0").ok
    assert local.run_e2e("staging").passed


def test_staging_failing_commit_fails_e2e(local: LocalTargets) -> None:
    deploy_both(local, "staging", "v1.2.0")
    assert local.deploy("backend", "staging", "special/staging-fail").ok  # healthy, but broken
    report = local.run_e2e("staging")
    assert failed(report) == ["backend_version", "frontend_backend_compatible"]
    assert "HTTP 500" in report.checks[1].detail and "KeyError" in report.checks[1].detail


def test_prod_only_failure_passes_staging_and_fails_production(local: LocalTargets) -> None:
    deploy_both(local, "staging", "special/prod-only-fail")
    assert local.run_e2e("staging").passed
    deploy_both(local, "production", "special/prod-only-fail")
    report = local.run_e2e("production")
    assert failed(report) == ["backend_version", "frontend_backend_compatible"]
    assert local.url("production", "backend") != local.url("staging", "backend")
    assert local.run_e2e("staging").passed


def test_rollback_restores_previous_release(local: LocalTargets, sample: SampleAppManifest) -> None:
    deploy_both(local, "staging", "v1.2.0")
    bad = local.deploy("backend", "staging", "special/staging-fail")
    assert not local.run_e2e("staging").passed
    result = local.rollback("backend", "staging")
    good = sample.sha("v1.2.0")
    assert result.ok and result.action == "rollback" and result.sha == good and result.pid != bad.pid
    assert os.readlink(local.service_dir("staging", "backend") / "current") == f"releases/{good}"
    assert local.run_e2e("staging").passed
    with pytest.raises(ReleaseNotFoundError, match="never deployed"):
        local.rollback("backend", "staging", "v1.0.0")
    with pytest.raises(ReleaseNotFoundError, match="no previous release of frontend"):
        local.rollback("frontend", "staging")


def test_unknown_sha_or_bad_arguments_change_nothing(local: LocalTargets) -> None:
    deploy_both(local, "staging", "v1.0.0")
    before = (local.store.path.read_bytes(), sorted(str(p) for p in local.root.rglob("*")))
    for ref in ("deadbeef", "v7.7.7", "--all", "a..b"):
        with pytest.raises(UnknownRevisionError):
            local.deploy("backend", "staging", ref)
    with pytest.raises(UnknownRevisionError, match="unknown revision 'feedface'"):
        local.rollback("backend", "staging", "feedface")
    with pytest.raises(TargetConfigError, match="unknown service 'db'"):
        local.deploy("db", "staging", "v1.0.0")
    with pytest.raises(TargetConfigError, match="unknown environment 'prod'"):
        local.deploy("backend", "prod", "v1.0.0")
    assert (local.store.path.read_bytes(), sorted(str(p) for p in local.root.rglob("*"))) == before
    assert local.run_e2e("staging").passed


def test_idempotency_key_replay_does_not_restart(local: LocalTargets, sample: SampleAppManifest) -> None:
    first = local.deploy("backend", "staging", "v1.0.0", idempotency_key="approval-1")
    second = local.deploy("backend", "staging", "v1.2.0", idempotency_key="approval-2")
    history_len = len(local.state("staging").history)
    replay = local.deploy("backend", "staging", "v1.0.0", idempotency_key="approval-1")
    assert replay.replayed and replay.noop and replay.ok and replay.pid == first.pid
    assert "already finished" in replay.message
    backend = local.state("staging").services["backend"]
    assert (backend.sha, backend.pid) == (sample.sha("v1.2.0"), second.pid)
    assert local.deploy("backend", "staging", "v1.2.0", idempotency_key="approval-2").pid == second.pid
    assert len(local.state("staging").history) == history_len
    assert local.state("staging").history[0].idempotency_key == "approval-1"
    with pytest.raises(IdempotencyConflictError, match="approval-1"):
        local.deploy("frontend", "staging", "v1.0.0", idempotency_key="approval-1")
    back = local.rollback("backend", "staging", idempotency_key="rb-1")
    assert back.ok and back.sha == sample.sha("v1.0.0")
    again = local.rollback("backend", "staging", idempotency_key="rb-1")
    assert again.replayed and local.state("staging").services["backend"].pid == back.pid


def test_a_port_taken_by_a_foreign_process_is_a_clear_error_and_changes_nothing(
    local: LocalTargets, sample: SampleAppManifest
) -> None:
    port = int(local.url("staging", "backend").rsplit(":", 1)[1])
    with socket.socket() as blocker:
        blocker.bind(("127.0.0.1", port))
        blocker.listen()
        with pytest.raises(TargetError, match=rf"port {port} of backend in staging is taken by pid {os.getpid()} "
                                              r"\(.*pytest.*\), which is not a service of this target"):
            local.deploy("backend", "staging", "v1.0.0", idempotency_key="k1")
    backend = local.state("staging").services["backend"]
    assert (backend.status, backend.sha, backend.pid) == ("never_deployed", None, None)
    assert not (local.service_dir("staging", "backend") / "current").exists()
    assert [(h.status, h.result) for h in local.state("staging").history] == [("failed", None)]
    again = local.deploy("backend", "staging", "v1.0.0", idempotency_key="k1")  # port free: the same call finishes
    assert again.ok and not again.replayed
    assert [(h.idempotency_key, h.status, h.attempts) for h in local.state("staging").history] == [("k1", "succeeded", 2)]


def test_a_service_that_dies_before_it_is_healthy_is_reported_with_its_release(
    tmp_path: Path, sample: SampleAppManifest
) -> None:
    broken = LocalTargets(tmp_path / "envs", sample.repo, python=shutil.which("false"), health_timeout=10)
    result = broken.deploy("backend", "staging", "v1.0.0")
    assert not result.ok and "FAILED" in result.message and sample.sha("v1.0.0")[:12] in result.message
    assert "exited (exit code 1) before" in result.message
    backend = broken.state("staging").services["backend"]
    assert (backend.status, backend.sha, backend.pid) == ("failed", sample.sha("v1.0.0"), None)
    assert broken.state("staging").history[-1].status == "failed"


def test_crashed_service_is_restarted_and_state_survives_a_new_instance(local: LocalTargets) -> None:
    deploy_both(local, "staging", "v1.0.0")
    pid = local.state("staging").services["backend"].pid
    assert pid is not None
    os.kill(pid, signal.SIGKILL)
    deadline = time.monotonic() + 5
    while is_alive(pid) and time.monotonic() < deadline:
        time.sleep(0.02)
    assert local.state("staging").services["backend"].status == "failed"
    redeploy = local.deploy("backend", "staging", "v1.0.0")
    assert redeploy.ok and not redeploy.noop and redeploy.pid != pid
    other = LocalTargets(local.root, local.repo)
    assert other.url("staging", "frontend") == local.url("staging", "frontend")
    assert other.state("staging").services["backend"].pid == redeploy.pid
    pids = other.stop_all()
    assert redeploy.pid in pids and not any(is_alive(p) for p in pids)
    with pytest.raises(TargetConfigError, match="use another root"):
        LocalTargets(local.root, local.root)


def test_services_get_an_explicit_environment_never_the_workers(local: LocalTargets,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    """A deployed service sees flows.targets.environment.BASE_ENV and what it needs, not the model's keys."""
    from flows.targets.environment import BASE_ENV

    monkeypatch.setenv("OPENAI_API_KEY", "canary-provider-6a5b4c3d")
    monkeypatch.setenv("MY_DB_URL", "postgres://app:canary-dbpw-1e2f@db/app")
    result = local.deploy("backend", "staging", "v1.0.0")
    assert result.ok and result.pid
    raw = Path(f"/proc/{result.pid}/environ").read_bytes()
    seen = dict(item.split("=", 1) for item in raw.decode().split("\0") if "=" in item)
    assert b"canary" not in raw and "OPENAI_API_KEY" not in seen and "MY_DB_URL" not in seen
    assert set(seen) <= set(BASE_ENV) | {"PYTHONUNBUFFERED", "PYTHONDONTWRITEBYTECODE"}, seen
    assert seen["PATH"] == os.environ["PATH"] and seen["PYTHONUNBUFFERED"] == "1"
