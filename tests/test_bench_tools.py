"""Issue 10 items 14 and 15: the benchmarks measure what they say (executions per key; the --poll flag)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).parent / "benchmarks"
sys.path.insert(0, str(BENCH))

import bench_gate  # noqa: E402
import executions  # noqa: E402
from agents.adapter.serving import RUNNER_POLL_ENV  # noqa: E402


def test_executions_are_counted_per_idempotency_key_so_a_double_run_shows(tmp_path: Path) -> None:
    log = tmp_path / executions.LOG_NAME
    executions.record(log, "run-a", "run-a:deploy-1:abc")
    executions.record(log, "run-a", "run-a:deploy-1:abc")  # the same approved call, executed twice
    executions.record(log, "run-b", "run-b:deploy-1:def")
    counts = executions.count(log, ["run-a", "run-b", "run-c"])
    assert counts.once == 1 and counts.more == {"run-a:deploy-1:abc": 2} and counts.never == ["run-c"]
    assert "more than once: 1" in counts.summary() and "runs with no execution (0 times): 1" in counts.summary()


def test_concurrent_processes_never_lose_or_mangle_a_line(tmp_path: Path) -> None:
    log = tmp_path / executions.LOG_NAME
    code = ("import sys; sys.path.insert(0, sys.argv[1]); import executions, pathlib\n"
            "for i in range(100): executions.record(pathlib.Path(sys.argv[2]), sys.argv[3], f'{sys.argv[3]}:{i}')")
    procs = [subprocess.Popen([sys.executable, "-c", code, str(BENCH), str(log), f"run-{n}"]) for n in range(4)]
    assert [p.wait(timeout=60) for p in procs] == [0, 0, 0, 0]
    counts = executions.count(log, [f"run-{n}" for n in range(4)])
    assert (counts.once, counts.more, counts.never) == (400, {}, [])


def test_the_poll_flag_sets_what_the_served_runner_reads() -> None:
    args = bench_gate.parser().parse_args(["--poll", "0.25"])
    assert bench_gate.served_env({"X": "1"}, args.poll) == {"X": "1", RUNNER_POLL_ENV: "0.25"}
    assert bench_gate.served_env({"X": "1"}, bench_gate.parser().parse_args([]).poll) == {"X": "1"}
    assert float(bench_gate.served_env({}, bench_gate.parser().parse_args(["--poll", "1"]).poll)[RUNNER_POLL_ENV]) == 1
    for bad in ("0", "-1", "soon"):
        with pytest.raises(SystemExit):
            bench_gate.parser().parse_args(["--poll", bad])
