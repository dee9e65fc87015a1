"""The deploy bot's starter eval suite (evals/starter.json) through the evals CLI, as the README runs it: the file is
its builder's output, the scripted golden run passes every case, and the chance level is what the README states.
Through `python -m prefect_micro_agents.evals` in the checkout only; the machinery itself is tested on the kit's own
suite (tests/kit/test_evals.py)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
STARTER = ROOT / "evals" / "starter.json"


def evals(*args: str) -> subprocess.CompletedProcess[str]:
    """The evals CLI in the checkout (where the suite's agents.deploybot and agents.rollback import)."""
    return subprocess.run([sys.executable, "-m", "prefect_micro_agents.evals", *args], cwd=ROOT, env=dict(os.environ),
                          capture_output=True, text=True, timeout=300)


def test_the_starter_suite_is_its_builders_output(tmp_path: Path) -> None:
    """evals/starter.json is what evals/build_starter.py writes (run here on a copy, which writes beside itself)."""
    for name in ("build_starter.py", "starter_threads.py"):
        shutil.copy(ROOT / "evals" / name, tmp_path / name)
    out = subprocess.run([sys.executable, str(tmp_path / "build_starter.py")], cwd=ROOT, env=dict(os.environ),
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stdout + out.stderr
    assert (tmp_path / "starter.json").read_text() == STARTER.read_text()


def test_the_starter_suite_passes_with_scripted_golden_answers(tmp_path: Path) -> None:
    out = evals("run", "--suite", str(STARTER), "--scripted-answers", "golden", "--k", "2",
                "--report-dir", str(tmp_path / "reports"), "--save-baseline", str(tmp_path / "baseline.json"))
    assert out.returncode == 0, out.stdout + out.stderr
    report = json.loads((tmp_path / "reports" / "report.json").read_text())
    summary, cases = report["summary"], report["cases"]
    assert summary["cases"] == len(json.loads(STARTER.read_text())["cases"]) == 38  # as both READMEs say
    assert {c["agent"] for c in cases} == {"deploy", "rollback"}
    assert (summary["pass_1"], summary["pass_k"]) == (1, 1) and report["gate"]["ok"]
    assert summary["prompt_tokens"] == 100 * summary["tries"]  # the scripted model's usage, per step
    assert "deploy-feedback-backend-first" in out.stdout and "gate ok: pass^k 1.000 >= 1.000" in out.stdout
    assert "| deploy-feedback-backend-first | deploy | 2/2 | yes |" in (tmp_path / "reports" / "report.md").read_text()
    assert (tmp_path / "baseline.json").read_text() == (tmp_path / "reports" / "report.json").read_text()


def baseline_rows(text: str) -> dict[str, tuple[int, float, float]]:
    """The CLI's per-case table: case id -> (tools offered, right args, random args)."""
    rows = {}
    for line in text.splitlines()[1:]:
        if not line.strip():
            break
        case, offered, right, random = line.split()
        rows[case] = (int(offered), float(right), float(random))
    return rows


def test_the_starter_chance_level_is_the_readmes() -> None:
    """The deploy agent's narrowing, seen in the chance level: a rejected deploy is not offered again, nor a third
    question, nor a deploy of what production runs; and the overall figures are the ones the README shows."""
    out = evals("baseline", "--suite", str(STARTER))
    assert out.returncode == 0, out.stdout + out.stderr
    rows = baseline_rows(out.stdout)
    assert len(rows) == 38
    assert rows["deploy-nothing-to-do"] == (2, 0.5, 0.5)  # no deploy offered: ask or finish, finishing passes
    assert rows["deploy-feedback-backend-first"] == (3, 0.333, 0.067)  # 1 in 3; the SHA 1 in the 5 shown
    assert rows["deploy-asked-twice-then-act"] == (3, 0.333, 0.067)  # no third question offered
    assert ("38 cases: a uniformly random offered tool passes 0.327 with the right arguments, 0.200 with SHAs drawn "
            "from the commits the prompt shows") in out.stdout
    readme = (ROOT / "README.md").read_text()
    assert "| random offered tool, right arguments | 0.316 | 0.327 |" in readme
    assert "| random offered tool, SHAs from the prompt | 0.194 | 0.200 |" in readme
    out = evals("baseline", "--suite", str(STARTER), "--agent", "rollback")
    assert out.returncode == 0, out.stdout + out.stderr
    assert sorted(baseline_rows(out.stdout)) == sorted(case for case in rows if case.startswith("rollback-"))
    assert "13 cases: a uniformly random offered tool passes 0.288 with the right arguments" in out.stdout
