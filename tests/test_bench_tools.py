"""Issue 10 items 14 and 15: the benchmarks measure what they say (executions per key; the --poll flag)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).parent / "benchmarks"
sys.path.insert(0, str(BENCH))

import bench_gate  # noqa: E402
import executions  # noqa: E402
from prefect_micro_agents.adapter.serving import RUNNER_POLL_ENV  # noqa: E402


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


@pytest.mark.parametrize("script", sorted(p.stem for p in BENCH.glob("*.py") if not p.stem.startswith("_")))
def test_every_benchmark_script_imports_the_way_the_readme_runs_it(script: str) -> None:
    """`python tests/benchmarks/<name>.py` (and a served bench_flows.py) sees only its own folder on sys.path: the
    app is not installed and OpenAI's `agents` would shadow ours. Importing in-process here would not show that
    (pytest has the checkout on sys.path); a fresh interpreter in that folder does."""
    proc = subprocess.run([sys.executable, "-I", "-c", f"import sys; sys.path.insert(0, ''); import {script}"], cwd=BENCH,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]


def test_the_poll_flag_sets_what_the_served_runner_reads() -> None:
    args = bench_gate.parser().parse_args(["--poll", "0.25"])
    assert bench_gate.served_env({"X": "1"}, args.poll) == {"X": "1", RUNNER_POLL_ENV: "0.25"}
    assert bench_gate.served_env({"X": "1"}, bench_gate.parser().parse_args([]).poll) == {"X": "1"}
    assert float(bench_gate.served_env({}, bench_gate.parser().parse_args(["--poll", "1"]).poll)[RUNNER_POLL_ENV]) == 1
    for bad in ("0", "-1", "soon"):
        with pytest.raises(SystemExit):
            bench_gate.parser().parse_args(["--poll", bad])


def test_the_token_baseline_carries_the_same_content_as_our_rendering() -> None:
    """Item 13: a fair baseline shows every value our rendering shows (approvals included), SHAs abbreviated the
    same way, compact JSON; the old one kept 40-character SHAs, spaced JSON, and dropped approvals."""
    import re

    import bench_core

    from prefect_micro_agents.prompts import abbreviate_hex, render_thread

    assert bench_core._json({"a": 1, "b": [1, "x y"]}) == '{"a":1,"b":[1,"x y"]}'
    threads = bench_core.threads()
    agents = {"agents.deploybot:DEPLOY_AGENT", "agents.rollback:ROLLBACK_AGENT"}
    assert len(threads) >= 30 and {a for _, a, _ in threads} == agents
    kinds = {e.type for _, _, t in threads for e in t.events}
    assert {"decision", "receipt", "result", "error", "answer"} <= kinds
    for name, _, thread in threads:
        ours = render_thread(thread)
        for rendering in (bench_core.chat_messages(thread), bench_core.json_events(thread)):
            text = "\n".join([str(m.get("content") or "") for m in rendering] +
                             [c["function"]["name"] + c["function"]["arguments"]
                              for m in rendering for c in m.get("tool_calls", ())])
            assert not re.search(r"\b[0-9a-f]{13,}\b", text), name  # abbreviated like ours
            for e in thread.events:
                body = bench_core.shown(e)
                for leaf in _leaves(body) if body is not None else ():
                    forms = [leaf, json.dumps(leaf)[1:-1]] if isinstance(leaf, str) else [json.dumps(leaf)]
                    assert any(abbreviate_hex(f) in text for f in forms), (name, e.type, leaf)  # raw or in JSON
            approvals = sum(1 for e in thread.events if e.type == "decision" and e.decision == "approved")
            assert text.count("approved") >= approvals and ours.count("\napproved ") == approvals


def _leaves(value: object) -> list[object]:
    if isinstance(value, dict):
        return [leaf for v in value.values() for leaf in _leaves(v)]
    if isinstance(value, list):
        return [leaf for v in value for leaf in _leaves(v)]
    return [value]
