"""A local deploy killed at every point of its work is finished by its retry: one deploy, one process, the right one.

A child process deploys with a failpoint armed (prefect_micro_agents/failpoints.py); when it freezes there the test SIGKILLs its
process group, as a dead worker's would be (the service it may have started lives in its own session, as in
production). The same call, by idempotency key, in a fresh LocalTargets must then finish the deploy in the same
history entry, leave exactly one service process of ours, recorded and listening on the port, serving the release;
and a later deploy must really replace it.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from prefect_micro_agents.testing import FAILPOINTS_ENV, POINTS, arm
from flows.sample_app import SampleAppManifest, create_sample_app
from flows.targets import CommandTargets, LocalTargets
from flows.targets.httpget import http_get
from flows.targets.procscan import listener_pid, processes_with

ROOT = Path(__file__).resolve().parents[2]
KEY = "run-1:deploy-3-abc:0123456789abcdef"
DEPLOY_POINTS = tuple(p for p in POINTS if p.startswith("local.deploy."))  # the local target's deploy steps
assert len(DEPLOY_POINTS) >= 4, POINTS


@pytest.fixture(scope="module")
def sample(tmp_path_factory: pytest.TempPathFactory) -> SampleAppManifest:
    return create_sample_app(tmp_path_factory.mktemp("sample") / "repo")


def deploy_in_child(root: Path, repo: Path, sha: str, faults: Path, *, key: str = KEY,
                    action: str = "deploy") -> subprocess.Popen[bytes]:
    """The deploy (or rollback) as a worker would run it, its output in <faults>/child.log."""
    code = (f"from flows.targets import CommandTargets, LocalTargets\n"
            f"LocalTargets({str(root)!r}, {str(repo)!r}).{action}('backend', 'production', {sha!r}, "
            f"idempotency_key={key!r})\n")
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
@pytest.mark.parametrize("point", DEPLOY_POINTS)
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


def test_a_new_call_after_an_abandoned_one_stops_what_that_one_left(tmp_path: Path, sample: SampleAppManifest) -> None:
    """Nobody resumes the killed call (its run was given up); the next deploy, with a key of its own, finds the
    process that call started but never recorded, and stops it rather than taking its 200 for success."""
    root, faults = tmp_path / "envs", tmp_path / "faults"
    t = LocalTargets(root, sample.repo)
    try:
        t.deploy("backend", "production", "v1.0.0")
        arm(faults, "local.deploy.started")
        kill_at(deploy_in_child(root, sample.repo, sample.sha("v1.2.0"), faults, key="abandoned"), faults,
                "local.deploy.started")
        orphans = [pid for pid in ours(t) if pid != t.state("production").services["backend"].pid]
        assert orphans, "the killed call left no unrecorded process: the test proves nothing"

        result = LocalTargets(root, sample.repo).deploy("backend", "production", "v1.1.0", idempotency_key="run-2")
        assert result.ok and result.pid not in orphans, result.message
        assert assert_serves(t, sample.sha("v1.1.0")) == result.pid
    finally:
        t.stop_all()


def test_a_rollback_killed_before_its_pid_was_saved_adopts_that_process(
    tmp_path: Path, sample: SampleAppManifest
) -> None:
    root, faults = tmp_path / "envs", tmp_path / "faults"
    t = LocalTargets(root, sample.repo)
    good, bad = sample.sha("v1.2.0"), sample.sha("staging_fail")
    try:
        t.deploy("backend", "production", good)
        t.deploy("backend", "production", bad)
        arm(faults, "local.deploy.started")
        kill_at(deploy_in_child(root, sample.repo, good, faults, key="rb-1", action="rollback"), faults,
                "local.deploy.started")
        time.sleep(0.5)  # the orphan binds its port; a retry that came before would simply restart it
        back = LocalTargets(root, sample.repo).rollback("backend", "production", good, idempotency_key="rb-1")
        assert back.ok and back.action == "rollback" and back.sha == good and "adopted" in back.message, back.message
        assert assert_serves(t, good) == back.pid
        assert [h.status for h in t.state("production").history if h.idempotency_key == "rb-1"] == ["succeeded"]
    finally:
        t.stop_all()


LATE_SQUATTER = """
import os, socket, sys, time
port, trigger = int(sys.argv[1]), sys.argv[2]
sock = socket.socket()
sock.bind(("127.0.0.1", port))  # bound, not listening: the foreign-port check before the deploy sees nothing
print("bound", flush=True)
while not os.path.exists(trigger):  # the new service's log file: it is being started now
    time.sleep(0.0005)
sock.listen()
while True:  # answer every request, /health included, with 200
    conn, _ = sock.accept()
    conn.recv(65536)
    conn.sendall(b"HTTP/1.0 200 OK\\r\\nContent-Length: 2\\r\\n\\r\\nok")
    conn.close()
"""


def test_a_health_answer_from_another_process_is_not_success(tmp_path: Path, sample: SampleAppManifest) -> None:
    """The issue's "succeeded with a dead pid": the port's 200 came from a process that is not the one started."""
    t = LocalTargets(tmp_path / "envs", sample.repo, poll_interval=0.005)  # polls while the new process starts
    sha, port = sample.sha("v1.0.0"), int(t.url("production", "backend").rsplit(":", 1)[1])
    trigger = t.service_dir("production", "backend") / "logs" / f"{sha}.log"
    squatter = subprocess.Popen([sys.executable, "-c", LATE_SQUATTER, str(port), str(trigger)],
                                stdout=subprocess.PIPE, text=True)
    try:
        assert squatter.stdout is not None and squatter.stdout.readline().strip() == "bound"
        result = t.deploy("backend", "production", sha, idempotency_key=KEY)
    finally:
        squatter.kill()
        squatter.communicate(timeout=10)
        t.stop_all()
    assert not result.ok and result.pid is None, result.message
    assert f"answered, but from pid {squatter.pid} " in result.message, result.message
    assert [h.status for h in t.state("production").history] == ["failed"]


SCRIPTS = {
    "deploy.sh": 'echo "deploy $1 $3 attempt=$DEPLOY_ATTEMPT key=$DEPLOY_IDEMPOTENCY_KEY" >> calls.log\n'
                 'echo "$3" > "state-$2-$1"\n',
    "health.sh": 'test -f "state-$2-$1"\n',
}


def test_a_command_deploy_killed_after_it_ran_runs_again_under_the_same_entry(tmp_path: Path) -> None:
    """Documented behaviour: the command may have run and only the user's script can tell, so it runs again, in the
    same history entry, told its attempt (DEPLOY_ATTEMPT) and key (DEPLOY_IDEMPOTENCY_KEY)."""
    for name, body in SCRIPTS.items():
        (tmp_path / name).write_text(body)
    service = {"deploy": "sh deploy.sh {service} {env} {sha}", "health": "sh health.sh {service} {env}"}
    config = {"defaults": {"cwd": str(tmp_path)}, "state_file": str(tmp_path / "state.json"),
              "environments": {"production": {"services": {"backend": service, "frontend": service}}}}
    (tmp_path / "deploy.json").write_text(json.dumps(config))
    faults = tmp_path / "faults"
    arm(faults, "command.deploy.ran")
    code = (f"from flows.targets import CommandTargets\n"
            f"CommandTargets({str(tmp_path / 'deploy.json')!r}).deploy('backend', 'production', 'abc1234', "
            f"idempotency_key={KEY!r})\n")
    env = {**os.environ, FAILPOINTS_ENV: str(faults), "PYTHONPATH": str(ROOT)}
    with open(faults / "child.log", "ab") as log:
        child = subprocess.Popen([sys.executable, "-c", code], cwd=ROOT, env=env, start_new_session=True,
                                 stdout=log, stderr=subprocess.STDOUT)
    kill_at(child, faults, "command.deploy.ran")

    result = CommandTargets(tmp_path / "deploy.json").deploy("backend", "production", "abc1234", idempotency_key=KEY)
    assert result.ok, result.message
    assert (tmp_path / "calls.log").read_text().splitlines() == [
        f"deploy backend abc1234 attempt=1 key={KEY}", f"deploy backend abc1234 attempt=2 key={KEY}"]
    history = json.loads((tmp_path / "state.json").read_text())["history"]
    assert [(h["status"], h["attempts"]) for h in history] == [("succeeded", 2)]
    replay = CommandTargets(tmp_path / "deploy.json").deploy("backend", "production", "abc1234", idempotency_key=KEY)
    assert replay.replayed and len((tmp_path / "calls.log").read_text().splitlines()) == 2
