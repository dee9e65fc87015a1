"""Failpoints: off without the variable; an armed point freezes exactly one process, once."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from prefect_micro_agents.failpoints import FAILPOINTS_ENV, arm, failpoint

ROOT = Path(__file__).resolve().parents[2]


def test_a_point_is_a_no_op_unless_armed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(FAILPOINTS_ENV, raising=False)
    arm(tmp_path, "local.deploy.exported")
    failpoint("local.deploy.exported")  # no variable: returns at once, leaves the file alone
    assert (tmp_path / "local.deploy.exported").exists()
    monkeypatch.setenv(FAILPOINTS_ENV, str(tmp_path))
    failpoint("local.deploy.switched")  # not armed: returns at once
    assert not (tmp_path / "reached-local.deploy.switched").exists()


def test_an_armed_point_freezes_one_process_once(tmp_path: Path) -> None:
    arm(tmp_path, "demo.point")
    code = "from prefect_micro_agents.failpoints import failpoint\nfailpoint('demo.point')\nprint('passed the point')\n"
    env = {**os.environ, FAILPOINTS_ENV: str(tmp_path), "PYTHONPATH": str(ROOT)}
    frozen = subprocess.Popen([sys.executable, "-c", code], env=env, cwd=ROOT, stdout=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 30
        while not (tmp_path / "reached-demo.point").exists():
            assert time.monotonic() < deadline and frozen.poll() is None
            time.sleep(0.02)
        assert (tmp_path / "reached-demo.point").read_text() == str(frozen.pid)
        assert not (tmp_path / "demo.point").exists()  # claimed: a retry runs through
        time.sleep(0.3)
        assert frozen.poll() is None  # still frozen
        retry = subprocess.run([sys.executable, "-c", code], env=env, cwd=ROOT, capture_output=True, text=True,
                               timeout=60)
        assert retry.stdout.strip() == "passed the point"
    finally:
        frozen.kill()
        frozen.communicate()
