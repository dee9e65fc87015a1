"""Evals (issue 7): suites, the judge, pass^k arithmetic, baseline diffs, the CI gate, and export from a live run."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx
import pytest

from prefect_micro_agents.adapter.approvals import ApprovalsClient
from prefect_micro_agents.errors import ConfigurationError
from prefect_micro_agents.evals.answers import golden_call
from prefect_micro_agents.evals.baseline import case_baseline, shown_commits
from prefect_micro_agents.evals.cli import main
from prefect_micro_agents.evals.judge import decision_of, judge
from prefect_micro_agents.evals.results import CaseResult, Report, TryResult, diff, pass_hat, summarize
from prefect_micro_agents.evals.runner import run_cases
from prefect_micro_agents.evals.suite import Expect, Suite, load_suite, save_suite
from prefect_micro_agents.llm import PROVIDERS_ENV
from prefect_micro_agents.testing.scripted import ScriptedModel
from prefect_micro_agents.thread import ErrorEvent, ProposalEvent
from prefect_micro_agents.tools import args_digest
from prefect_harness import Served, next_pause, wait_state
from gate_support import start

ROOT = Path(__file__).resolve().parents[2]
STARTER = ROOT / "evals" / "starter.json"
NEW = "9f8e7d6c5b4a39281706f5e4d3c2b1a09f8e7d6c"


def tries(*passed: bool, decision: str = "x") -> list[TryResult]:
    return [TryResult(decision=decision, passed=p, prompt_tokens=100, completion_tokens=10, latency_ms=10.0 * (n + 1))
            for n, p in enumerate(passed)]


def proposal(intent: str, **args: Any) -> ProposalEvent:
    return ProposalEvent(id="p", intent=intent, args=args, args_digest=args_digest(intent, args))


def run_cli(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str]:
    code = main(list(args))
    out = capsys.readouterr()
    return code, out.out + out.err


def starter_copy(tmp_path: Path, edit: Any = None) -> Path:
    data = json.loads(STARTER.read_text())
    if edit is not None:
        edit({c["id"]: c for c in data["cases"]})
    path = tmp_path / "suite.json"
    path.write_text(json.dumps(data))
    return path


def test_pass_hat_and_summary_arithmetic_on_hand_made_results() -> None:
    assert pass_hat(3, 3, 3) == 1 and pass_hat(2, 3, 3) == 0 and pass_hat(2, 3, 1) == pytest.approx(2 / 3)
    assert pass_hat(2, 4, 2) == pytest.approx(1 / 6)  # C(2,2)/C(4,2): both of 2 draws from 4 tries must pass
    with pytest.raises(ValueError):
        pass_hat(4, 3, 1)
    results = [CaseResult(id="a", agent="deploy", tries=tries(True, True, True)),
               CaseResult(id="b", agent="deploy", tries=tries(True, False, True)),
               CaseResult(id="c", agent="rollback", tries=tries(False, False, False))]
    assert [(r.passes, r.pass_1, r.pass_k) for r in results] == [(3, 1, 1), (2, pytest.approx(2 / 3), 0), (0, 0, 0)]
    s = summarize(results)
    assert (s.cases, s.tries) == (3, 9)
    assert s.pass_1 == pytest.approx(5 / 9) and s.pass_k == pytest.approx(1 / 3)
    assert s.pass_hat == {1: pytest.approx(5 / 9), 2: pytest.approx((1 + 1 / 3) / 3), 3: pytest.approx(1 / 3)}
    assert (s.prompt_tokens, s.completion_tokens, s.latency_ms_mean, s.latency_ms_p95) == (900, 90, 20.0, 30.0)
    split = CaseResult(id="d", agent="deploy", tries=[*tries(True, decision="B"), *tries(True, True, decision="A")])
    assert split.decision == "A"  # the majority; a tie goes to the first decision seen


def test_baseline_diff_lists_changed_new_and_gone_cases() -> None:
    def report(*cases: CaseResult) -> Report:
        return Report(suites=["s"], model="m", k=3, started_at="t", summary=summarize(list(cases)), cases=list(cases))

    same, moved, gone = (CaseResult(id=i, agent="deploy", tries=tries(True, True, True, decision=d))
                         for i, d in (("same", "A"), ("moved", "A"), ("gone", "A")))
    now = [same, CaseResult(id="moved", agent="deploy", tries=tries(False, False, True, decision="B")),
           CaseResult(id="new", agent="deploy", tries=tries(True, True, True))]
    changes = diff(report(same, moved, gone), now)
    assert [(c.id, c.kind, c.before, c.after, c.passed_before, c.passed_after) for c in changes] == [
        ("moved", "changed", "A", "B", True, False), ("new", "new", None, "x", None, True),
        ("gone", "gone", "A", None, True, None)]


def test_the_judge_holds_a_step_against_every_part_of_the_label() -> None:
    label = Expect.model_validate({"intent": "deploy_backend_to_prod", "args": {"sha": {"commit": NEW}},
                                   "not_call": [{"intent": "deploy_frontend_to_prod"}]})
    assert judge(label, proposal("deploy_backend_to_prod", sha=NEW[:12])).passed  # abbreviated as the prompt shows
    assert "expected same commit as 9f8e7d6c5b4a" in judge(label, proposal("deploy_backend_to_prod", sha="1a2b3c4")).why
    assert "expected deploy_backend_to_prod" in judge(label, proposal("deploy_frontend_to_prod", sha=NEW)).why
    error = ErrorEvent(kind="malformed_output", message="not valid JSON")
    assert not judge(label, error).passed and decision_of(error) == "error:malformed_output"
    negative = Expect.model_validate({"not_call": [{"intent": "deploy_frontend_to_prod", "args": {"sha": {"prefix": "9f8e"}}}]})
    assert not judge(negative, proposal("deploy_frontend_to_prod", sha=NEW)).passed
    assert judge(negative, proposal("deploy_frontend_to_prod", sha="1a2b3c4d")).passed
    assert decision_of(proposal("request_more_information", question="which one?")) == "request_more_information"
    assert decision_of(proposal("rollback_backend", to=NEW)) == "rollback_backend to=9f8e7d6c5b4a"


def test_a_bad_suite_is_refused_naming_the_file_and_each_case(tmp_path: Path) -> None:
    def break_cases(cases: dict[str, Any]) -> None:
        cases["deploy-both-services-backend-first"]["expect"] = {"intent": "deploy_database"}
        cases["deploy-tag-request"]["expect"]["args"] = {"sha": {"commit": NEW, "prefix": "9f"}}
        pending = cases["deploy-feedback-backend-first"]["thread"]["events"]
        del pending[-1]  # cut after the proposal, before its decision: the agent would not be asked
        cases["rollback-done-after-both"]["agent"] = "billing"

    path = starter_copy(tmp_path, break_cases)
    with pytest.raises(ConfigurationError) as caught:
        load_suite(path)
    text = str(caught.value)
    assert f"{path}: case 'deploy-both-services-backend-first': intent 'deploy_database' is not a tool of agent" in text
    assert "case 'deploy-tag-request': expect.args.sha: Value error, an argument check has exactly one of" in text
    assert "case 'deploy-feedback-backend-first': the thread prefix must end where the agent is asked" in text
    assert "case 'rollback-done-after-both': unknown agent 'billing'" in text


def test_the_starter_suite_passes_with_scripted_golden_answers(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    code, out = run_cli(capsys, "run", "--suite", str(STARTER), "--scripted-answers", "golden", "--k", "2",
                        "--report-dir", str(tmp_path / "reports"), "--save-baseline", str(tmp_path / "baseline.json"))
    assert code == 0, out
    report = Report.model_validate_json((tmp_path / "reports" / "report.json").read_text())
    assert report.summary.cases >= 25 and {c.agent for c in report.cases} == {"deploy", "rollback"}
    assert (report.summary.pass_1, report.summary.pass_k) == (1, 1) and report.gate and report.gate.ok
    assert report.summary.prompt_tokens == 100 * report.summary.tries  # the scripted model's usage, per step
    assert "deploy-feedback-backend-first" in out and "gate ok: pass^k 1.000 >= 1.000" in out
    assert "| deploy-feedback-backend-first | deploy | 2/2 | yes |" in (tmp_path / "reports" / "report.md").read_text()
    assert (tmp_path / "baseline.json").read_text() == (tmp_path / "reports" / "report.json").read_text()


def test_scripted_answers_need_no_provider_setting(tmp_path: Path) -> None:
    """The evals CLI registers its scripted provider itself (llm.use_provider), in a process whose environment names
    no provider hook: what a user running `--scripted-answers golden` has."""
    data = json.loads(STARTER.read_text())
    data["cases"] = data["cases"][:2]
    suite = tmp_path / "suite.json"
    suite.write_text(json.dumps(data))
    env = {k: v for k, v in os.environ.items() if k not in ("AGENT_MODEL", PROVIDERS_ENV)}
    out = subprocess.run([sys.executable, "-m", "prefect_micro_agents.evals", "run", "--suite", str(suite),
                          "--scripted-answers", "golden", "--k", "1", "--report-dir", str(tmp_path / "reports")],
                         cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "gate ok" in out.stdout


def test_recorded_answers_are_checked_before_any_model_call(tmp_path: Path) -> None:
    """A reply is a call object or raw text (or a non-empty list of them): anything else names its case at load."""
    from prefect_micro_agents.evals.answers import load_answers

    cases = [c for c in load_suite(STARTER).cases if c.agent == "rollback"][:3]
    path = tmp_path / "answers.json"
    path.write_text(json.dumps({cases[0].id: "raw text", cases[1].id: 42, cases[2].id: []}))
    with pytest.raises(ConfigurationError, match=rf"not so for: {cases[1].id}, {cases[2].id}$"):
        load_answers(str(path), cases)
    path.write_text(json.dumps({cases[0].id: "raw text", cases[1].id: ["a", {"call": {}}], cases[2].id: {}}))
    answers = load_answers(str(path), cases)
    assert [answers(cases[1], n) for n in range(3)] == ["a", {"call": {}}, "a"] and answers(cases[2], 0) == {}


def test_a_wrong_label_fails_the_run_and_names_the_case(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    def mislabel(cases: dict[str, Any]) -> None:  # the golden call (backend first) stays right; the label is wrong
        cases["deploy-both-services-backend-first"]["expect"] = {"intent": "deploy_frontend_to_prod"}

    suite = starter_copy(tmp_path, mislabel)
    n = len(load_suite(suite).cases)
    one_wrong = f"{(n - 1) / n:.3f}"  # every case passes but one, whatever the suite's size
    common = ["run", "--suite", str(suite), "--scripted-answers", "golden", "--report-dir", str(tmp_path)]
    code, out = run_cli(capsys, *common, "--k", "1")
    assert code == 1
    assert ("FAILED deploy-both-services-backend-first (try 1/1: expected deploy_frontend_to_prod, "
            "got deploy_backend_to_prod sha=9f8e7d6c5b4a)") in out
    assert f"gate FAILED: pass^k {one_wrong} < 1.000" in out
    code, out = run_cli(capsys, *common, "--metric", "pass^1", "--min-pass-rate", "0.95")
    assert code == 0 and f"gate ok: pass^1 {one_wrong} >= 0.950" in out


def test_the_chance_baseline_is_exact_and_follows_narrowing(capsys: pytest.CaptureFixture[str]) -> None:
    cases = {c.id: c for c in load_suite(STARTER).cases}
    # Nothing to deploy: request_more_information or done_for_now is offered; only done_for_now passes.
    nothing = case_baseline(cases["deploy-nothing-to-do"])
    assert nothing.offered == ("request_more_information", "done_for_now")
    assert (nothing.right_args, nothing.random_args) == (0.5, 0.5)
    # Frontend first was rejected: it is not offered at the next step, so chance is 1 in 3, not 1 in 4; with a
    # SHA drawn from the commits the prompt shows, the backend deploy must also hit the target.
    feedback = cases["deploy-feedback-backend-first"]
    shown = shown_commits(feedback)
    assert len(shown) == 5 and any(NEW.startswith(c) for c in shown)
    row = case_baseline(feedback)
    assert row.offered == ("deploy_backend_to_prod", "request_more_information", "done_for_now")
    assert (row.right_args, row.random_args) == (pytest.approx(1 / 3), pytest.approx(1 / 3 / len(shown)))
    # After two questions the question tool is gone: the new case's chance is 1 in 3 too.
    assert case_baseline(cases["deploy-asked-twice-then-act"]).right_args == pytest.approx(1 / 3)
    code, out = run_cli(capsys, "baseline", "--suite", str(STARTER), "--agent", "rollback")
    rows = [case_baseline(c) for c in cases.values() if c.agent == "rollback"]
    mean = sum(r.right_args for r in rows) / len(rows)
    assert code == 0 and f"{len(rows)} cases: a uniformly random offered tool passes {mean:.3f} with the right" in out


def test_the_baseline_diff_names_cases_whose_decision_changed(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    baseline = tmp_path / "baseline.json"
    code, _ = run_cli(capsys, "run", "--suite", str(STARTER), "--agent", "rollback", "--scripted-answers", "golden",
                      "--k", "1", "--report-dir", str(tmp_path / "a"), "--save-baseline", str(baseline))
    assert code == 0
    answers = {c.id: {"call": golden_call(c)} for c in load_suite(STARTER).cases if c.agent == "rollback"}
    answers["rollback-both-frontend-first"] = {"call": {"intent": "rollback_backend", "to": "1a2b3c4d5e6f"}}
    answers["rollback-no-previous-release"] = {"call": {"intent": "done_for_now", "message": "nothing to do"}}
    answers["rollback-did-not-help"] = "I would escalate this."  # not JSON: an error event, never a pass
    (tmp_path / "answers.json").write_text(json.dumps(answers))
    code, out = run_cli(capsys, "run", "--suite", str(STARTER), "--agent", "rollback", "--k", "1",
                        "--scripted-answers", str(tmp_path / "answers.json"), "--baseline", str(baseline),
                        "--report-dir", str(tmp_path / "b"))
    assert code == 1
    assert "3 case(s) changed decision since the baseline:" in out
    assert "rollback-both-frontend-first: rollback_frontend to=1a2b3c4d5e6f -> rollback_backend to=1a2b3c4d5e6f" in out
    assert "rollback-did-not-help: escalate -> error:malformed_output (pass^k pass -> fail)" in out
    assert "## 3 case(s) changed decision since the baseline" in (tmp_path / "b" / "report.md").read_text()
    code, out = run_cli(capsys, "run", "--suite", str(STARTER), "--scripted-answers", "golden",
                        "--baseline", str(tmp_path / "missing.json"))
    assert code == 2 and "no baseline at" in out


def test_any_model_string_and_an_overridden_prompt(
    scripted: ScriptedModel, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "prompts").mkdir()
    (tmp_path / "prompts" / "deploy_v2.j2").write_text("Deploy carefully, {{ agent }}.\n{% include '_tools.j2' %}")
    monkeypatch.setenv("AGENT_PROMPTS_DIR", str(tmp_path / "prompts"))
    case = next(c for c in load_suite(STARTER).cases if c.id == "deploy-both-services-backend-first")
    scripted.enqueue({"call": {"intent": "deploy_backend_to_prod", "sha": NEW[:12]}}, prompt_tokens=1234)
    scripted.enqueue({"call": {"intent": "deploy_frontend_to_prod", "sha": NEW[:12]}})
    [result] = run_cases([case], k=2, model=scripted.model, prompt="deploy_v2.j2")
    assert [t.passed for t in result.tries] == [True, False] and (result.pass_1, result.pass_k) == (0.5, 0)
    assert result.tries[0].prompt_tokens == 1234 and result.tries[0].latency_ms > 0
    assert scripted.requests()[0]["messages"][0]["content"].startswith("Deploy carefully, deploy.")


@pytest.mark.slow
def test_export_a_live_runs_decisions_into_cases(
    served: Served, http: httpx.Client, approvals: ApprovalsClient, scripted: ScriptedModel, effects: Path,  # noqa: F811
    capsys: pytest.CaptureFixture[str], tmp_path: Path,
) -> None:
    frontend = {"call": {"intent": "deploy_frontend_to_prod", "sha": NEW}}
    scripted.enqueue(frontend, {"call": {"intent": "deploy_backend_to_prod", "sha": NEW}}, frontend,
                     {"call": {"intent": "done_for_now", "message": "both services on the new SHA"}})
    run = start(served, http, scripted, effects)
    key = next_pause(http, run)
    approvals.reject(run, "alice", "deploy the backend first")
    key = next_pause(http, run, after=key)
    approvals.approve(run, "bob")
    next_pause(http, run, after=key)
    approvals.approve(run, "bob")
    wait_state(http, run, {"COMPLETED"})

    out_path = tmp_path / "from-run.json"
    code, out = run_cli(capsys, "export", "--run", run, "--out", str(out_path))
    assert code == 2 and "--agent-ref deploy=package.module:AGENT" in out and not out_path.exists(), out
    code, out = run_cli(capsys, "export", "--run", run, "--out", str(out_path),
                        "--agent-ref", "deploy=agents.deploybot:DEPLOY_AGENT")
    assert load_suite(out_path).agents == {"deploy": "agents.deploybot:DEPLOY_AGENT"}
    assert code == 0 and "exported 3 case(s) (2 approved, 1 rejected) from the deploy thread(s)" in out
    cases = {c.id.removeprefix(f"run-{run[:8]}-deploy-"): c for c in load_suite(out_path).cases}
    assert sorted(cases) == ["call1-rejected", "call2-approved", "call3-approved"]
    rejected = cases["call1-rejected"]
    last = rejected.thread.events[-1]
    assert last.type == "decision" and last.decision == "rejected" and last.feedback == "deploy the backend first"
    assert rejected.expect.model_dump(mode="json") == {"not_call": [{"intent": "deploy_frontend_to_prod", "args": {"sha": {"commit": NEW}}}]}
    assert rejected.golden == {"intent": "deploy_backend_to_prod", "sha": NEW}  # what the agent did instead, approved
    assert cases["call2-approved"].expect.model_dump(mode="json") == {"intent": "deploy_backend_to_prod", "args": {"sha": {"commit": NEW}}}
    assert [e.type for e in cases["call2-approved"].thread.events][-2:] == ["proposal", "decision"]
    assert cases["call3-approved"].source["by"] == "bob"

    code, out = run_cli(capsys, "run", "--suite", str(out_path), "--scripted-answers", "golden", "--k", "1",
                        "--report-dir", str(tmp_path / "r"))
    assert code == 0, out
    code, out = run_cli(capsys, "export", "--run", run, "--out", str(out_path))
    assert code == 0 and "; 0 new in" in out  # exporting again adds nothing
    code, out = run_cli(capsys, "export", "--run", "00000000-0000-0000-0000-000000000000", "--out", str(out_path))
    assert code == 2 and "has no thread artifact" in out


def test_a_yaml_suite_round_trips(tmp_path: Path) -> None:
    suite = load_suite(STARTER)
    few = Suite(description="two cases", agents=suite.agents, cases=suite.cases[:2])
    save_suite(few, tmp_path / "few.yaml")
    assert load_suite(tmp_path / "few.yaml") == few
    (tmp_path / "bad.yaml").write_text("cases: [\n")
    with pytest.raises(ConfigurationError, match="bad.yaml: not valid YAML"):
        load_suite(tmp_path / "bad.yaml")
