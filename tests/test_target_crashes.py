"""A local deploy killed at every point of its work is finished by its retry: one deploy, one process, the right one.

A child process deploys with a failpoint armed (agents/failpoints.py); when it freezes there the test SIGKILLs its
process group, as a dead worker's would be (the service it may have started lives in its own session, as in
production). The same call, by idempotency key, in a fresh LocalTargets must then finish the deploy in the same
history entry, leave exactly one service process of ours, recorded and listening on the port, serving the release;
and a later deploy must really replace it.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from agents.failpoints import FAILPOINTS_ENV, POINTS, arm
from flows.sample_app import SampleAppManifest, create_sample_app
from flows.targets import LocalTargets
from flows.targets.httpget import http_get
from flows.targets.procscan import listener_pid, processes_with

ROOT = Path(__file__).resolve().parents[1]
KEY = "run-1:deploy-3-abc:0123456789abcdef"


@pytest.fixture(scope="module")
def sample(tmp_path_factory: pytest.TempPathFactory) -> SampleAppManifest:
    return create_sample_app(tmp_path_factory.mktemp("sample") / "repo")


def deploy_in_child(root: Path, repo: Path, sha: str, faults: Path) -> subprocess.Popen[bytes]:
    """The deploy as a worker would run it, its output in <faults>/child.log."""
    code = (f"from flows.targets import LocalTargets\n"
            f"LocalTargets({str(root)!r}, {str(repo)!r}).deploy('backend', 'production', {sha!r}, "
            f"idempotency_key={KEY!r})\n")
    env = {**os.environ, FAILPOINTS_ENV: str(faults), "PYTHONPATH": str(ROOT)}
    with open(faults / "child.log", "ab") as log:
        return subprocess.Popen([sys.executable, "-c", code], cwd=ROOT, env=env, start_new_session=True,
                                stdout=log, stderr=subprocess.STDOUT)


def kill_at(child: subprocess.Popen[bytes], faults: Path, point: str, timeout: float = 60) -> None:
    reached = faults / f"reached-{point}"
    deadline = time.monotonic() + timeout
    while not reached.exists():
        if child.poll() is not None:
            raise AssertionError(f"the deploy ended before {point}: {(faults / 'child.log').read_text()[-2000:]}")
        assert time.monotonic() < deadline, f"{point} not reached"
        time.sleep(0.02)
    os.killpg(child.pid, signal.SIGKILL)
    child.wait(10)


def ours(t: LocalTargets) -> list[int]:
    port = int(t.url("production", "backend").rsplit(":", 1)[1])
    return sorted(p.pid for p in processes_with(f"{t.service_dir('production', 'backend')}/", f"--port\0{port}\0"))


def assert_serves(t: LocalTargets, sha: str) -> int:
    """Exactly one process of ours for production/backend: recorded, alive, listening on the port, serving `sha`."""
    rec = t.state("production").services["backend"]
    port = int(t.url("production", "backend").rsplit(":", 1)[1])
    assert rec.pid is not None and rec.sha == sha and rec.healthy, rec
    assert listener_pid(port) == rec.pid, "the process answering on the port is not the one recorded"
    assert ours(t) == [rec.pid], f"orphans: {ours(t)} (recorded {rec.pid})"
    assert http_get(t.url("production", "backend") + "/api/version").json()["sha"] == sha
    return rec.pid


@pytest.mark.parametrize("replacing", [False, True], ids=["first-deploy", "replacing-a-release"])
@pytest.mark.parametrize("point", POINTS)
def test_a_deploy_killed_at_any_point_is_finished_by_its_retry(
    tmp_path: Path, sample: SampleAppManifest, point: str, replacing: bool
) -> None:
    root, faults = tmp_path / "envs", tmp_path / "faults"
    t = LocalTargets(root, sample.repo)
    try:
        old = assert_serves(t, t.resolve("v1.0.0")) if replacing and t.deploy(
            "backend", "production", "v1.0.0").ok else None
        new = sample.sha("v1.1.0")
        arm(faults, point)
        kill_at(deploy_in_child(root, sample.repo, new, faults), faults, point)

        again = LocalTargets(root, sample.repo).deploy("backend", "production", new, idempotency_key=KEY)
        assert again.ok, again.message
        assert again.replayed is (point == "local.deploy.finished")  # finished and recorded before the kill
        entries = [h for h in t.state("production").history if h.idempotency_key == KEY]
        assert [(h.status, h.attempts) for h in entries] == \
            [("succeeded", 1 if point == "local.deploy.finished" else 2)], entries
        pid = assert_serves(t, new)
        assert pid != old

        later = t.deploy("backend", "production", "v1.2.0", idempotency_key="run-2:deploy-1:x")
        assert later.ok and not later.noop, later.message
        assert assert_serves(t, sample.sha("v1.2.0")) != pid
    finally:
        t.stop_all()
    assert ours(t) == []
