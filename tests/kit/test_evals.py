"""Evals (issue 7): suites, the judge, pass^k arithmetic, baseline diffs, the CI gate, and export from a live run,
on the kit's own suite for its toy expense agent (tests/kit/evals/expense.json, built by tests/kit/expense_suite.py).
The deploy bot's starter suite is tested as the app's: tests/app/test_starter_evals.py."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from expense_suite import suite
from prefect_micro_agents.adapter.approvals import ApprovalsClient
from prefect_micro_agents.errors import ConfigurationError
from prefect_micro_agents.evals.answers import golden_call, load_answers
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
from prefect_harness import Served, create_run, next_pause, wait_state
from toy_agent import NEW, OLD, call

HERE = Path(__file__).resolve().parent
SUITE = HERE / "evals" / "expense.json"
PAY_FIRST = "expense-feedback-pay-first"  # filing first was rejected: pay now, and file_expense is not offered


def tries(*passed: bool, decision: str = "x") -> list[TryResult]:
    return [TryResult(decision=decision, passed=p, prompt_tokens=100, completion_tokens=10, latency_ms=10.0 * (n + 1))
            for n, p in enumerate(passed)]


def proposal(intent: str, **args: Any) -> ProposalEvent:
    return ProposalEvent(id="p", intent=intent, args=args, args_digest=args_digest(intent, args))


def run_cli(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str]:
    code = main(list(args))
    out = capsys.readouterr()
    return code, out.out + out.err


def suite_copy(tmp_path: Path, edit: Any = None) -> Path:
    data = json.loads(SUITE.read_text())
    if edit is not None:
        edit({c["id"]: c for c in data["cases"]})
    path = tmp_path / "suite.json"
    path.write_text(json.dumps(data))
    return path


def test_the_suite_file_is_the_builders_output(tmp_path: Path) -> None:
    """tests/kit/evals/expense.json is what tests/kit/expense_suite.py writes: edit the script, then rerun it."""
    save_suite(suite(), tmp_path / "expense.json")
    assert (tmp_path / "expense.json").read_text() == SUITE.read_text()
    loaded = load_suite(SUITE)
    assert loaded.agents == {"expense": "toy_agent:AGENT"} and len(loaded.cases) == 9


def test_pass_hat_and_summary_arithmetic_on_hand_made_results() -> None:
    assert pass_hat(3, 3, 3) == 1 and pass_hat(2, 3, 3) == 0 and pass_hat(2, 3, 1) == pytest.approx(2 / 3)
    assert pass_hat(2, 4, 2) == pytest.approx(1 / 6)  # C(2,2)/C(4,2): both of 2 draws from 4 tries must pass
    with pytest.raises(ValueError):
        pass_hat(4, 3, 1)
    results = [CaseResult(id="a", agent="expense", tries=tries(True, True, True)),
               CaseResult(id="b", agent="expense", tries=tries(True, False, True)),
               CaseResult(id="c", agent="clerk", tries=tries(False, False, False))]
    assert [(r.passes, r.pass_1, r.pass_k) for r in results] == [(3, 1, 1), (2, pytest.approx(2 / 3), 0), (0, 0, 0)]
    s = summarize(results)
    assert (s.cases, s.tries) == (3, 9)
    assert s.pass_1 == pytest.approx(5 / 9) and s.pass_k == pytest.approx(1 / 3)
    assert s.pass_hat == {1: pytest.approx(5 / 9), 2: pytest.approx((1 + 1 / 3) / 3), 3: pytest.approx(1 / 3)}
    assert (s.prompt_tokens, s.completion_tokens, s.latency_ms_mean, s.latency_ms_p95) == (900, 90, 20.0, 30.0)
    split = CaseResult(id="d", agent="expense", tries=[*tries(True, decision="B"), *tries(True, True, decision="A")])
    assert split.decision == "A"  # the majority; a tie goes to the first decision seen


def test_baseline_diff_lists_changed_new_and_gone_cases() -> None:
    def report(*cases: CaseResult) -> Report:
        return Report(suites=["s"], model="m", k=3, started_at="t", summary=summarize(list(cases)), cases=list(cases))

    same, moved, gone = (CaseResult(id=i, agent="expense", tries=tries(True, True, True, decision=d))
                         for i, d in (("same", "A"), ("moved", "A"), ("gone", "A")))
    now = [same, CaseResult(id="moved", agent="expense", tries=tries(False, False, True, decision="B")),
           CaseResult(id="new", agent="expense", tries=tries(True, True, True))]
    changes = diff(report(same, moved, gone), now)
    assert [(c.id, c.kind, c.before, c.after, c.passed_before, c.passed_after) for c in changes] == [
        ("moved", "changed", "A", "B", True, False), ("new", "new", None, "x", None, True),
        ("gone", "gone", "A", None, True, None)]


def test_the_judge_holds_a_step_against_every_part_of_the_label() -> None:
    label = Expect.model_validate({"intent": "pay_expense", "args": {"receipt": {"commit": NEW}},
                                   "not_call": [{"intent": "file_expense"}]})
    assert judge(label, proposal("pay_expense", receipt=NEW[:12])).passed  # abbreviated as the prompt shows
    assert "expected same commit as 9f8e7d6c5b4a" in judge(label, proposal("pay_expense", receipt="1a2b3c4")).why
    assert "expected pay_expense" in judge(label, proposal("file_expense", receipt=NEW)).why
    error = ErrorEvent(kind="malformed_output", message="not valid JSON")
    assert not judge(label, error).passed and decision_of(error) == "error:malformed_output"
    negative = Expect.model_validate(
        {"not_call": [{"intent": "file_expense", "args": {"receipt": {"prefix": "9f8e"}}}]})
    assert "made the forbidden call file_expense" in judge(negative, proposal("file_expense", receipt=NEW)).why
    assert judge(negative, proposal("file_expense", receipt="1a2b3c4d")).passed
    either = Expect.model_validate({"intent": ["done_for_now", "ask_submitter"], "not_intent": "pay_expense"})
    assert judge(either, proposal("ask_submitter", question="paid already?")).passed
    assert "expected done_for_now or ask_submitter" in judge(either, proposal("pay_expense", receipt=NEW)).why
    forbid = Expect.model_validate({"not_intent": ["pay_expense"]})
    assert "chose pay_expense, which this case forbids" in judge(forbid, proposal("pay_expense", receipt=NEW)).why
    assert decision_of(proposal("ask_submitter", question="which one?")) == "ask_submitter"
    assert decision_of(proposal("pay_expense", receipt=OLD)) == "pay_expense receipt=1a2b3c4d5e6f"


def test_a_bad_suite_is_refused_naming_the_file_and_each_case(tmp_path: Path) -> None:
    def break_cases(cases: dict[str, Any]) -> None:
        cases["expense-look-up-first"]["expect"] = {"intent": "refund_expense"}
        cases["expense-pay-after-look-up"]["expect"]["args"] = {"receipt": {"commit": NEW, "prefix": "9f"}}
        pending = cases[PAY_FIRST]["thread"]["events"]
        del pending[-1]  # cut after the proposal, before its decision: the agent would not be asked
        cases["expense-done-after-both"]["agent"] = "billing"

    path = suite_copy(tmp_path, break_cases)
    with pytest.raises(ConfigurationError) as caught:
        load_suite(path)
    text = str(caught.value)
    assert text.startswith("invalid eval suite (4 problems):")
    assert f"{path}: case 'expense-look-up-first': intent 'refund_expense' is not a tool of agent 'expense'" in text
    assert ("case 'expense-pay-after-look-up': expect.args.receipt: Value error, an argument check has exactly "
            "one of") in text
    assert f"case '{PAY_FIRST}': the thread prefix must end where the agent is asked" in text
    assert "case 'expense-done-after-both': unknown agent 'billing'" in text


def test_the_suite_passes_with_scripted_golden_answers(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    code, out = run_cli(capsys, "run", "--suite", str(SUITE), "--scripted-answers", "golden", "--k", "2",
                        "--report-dir", str(tmp_path / "reports"), "--save-baseline", str(tmp_path / "baseline.json"))
    assert code == 0, out
    report = Report.model_validate_json((tmp_path / "reports" / "report.json").read_text())
    assert report.summary.cases == 9 and {c.agent for c in report.cases} == {"expense"}
    assert (report.summary.pass_1, report.summary.pass_k) == (1, 1) and report.gate and report.gate.ok
    assert report.summary.prompt_tokens == 100 * report.summary.tries == 1800  # the scripted model's usage, per step
    assert f"{PAY_FIRST}" in out and "gate ok: pass^k 1.000 >= 1.000" in out
    assert f"| {PAY_FIRST} | expense | 2/2 | yes |" in (tmp_path / "reports" / "report.md").read_text()
    assert (tmp_path / "baseline.json").read_text() == (tmp_path / "reports" / "report.json").read_text()


def test_scripted_answers_need_no_provider_setting(tmp_path: Path) -> None:
    """The evals CLI registers its scripted provider itself (llm.use_provider), in a process whose environment names
    no provider hook: what a user running `--scripted-answers golden` has. Run in tests/kit/, where the suite's
    `toy_agent:AGENT` imports (as a user runs it in their checkout)."""
    data = json.loads(SUITE.read_text())
    data["cases"] = data["cases"][:2]
    path = tmp_path / "suite.json"
    path.write_text(json.dumps(data))
    env = {k: v for k, v in os.environ.items() if k not in ("AGENT_MODEL", PROVIDERS_ENV)}
    out = subprocess.run([sys.executable, "-m", "prefect_micro_agents.evals", "run", "--suite", str(path),
                          "--scripted-answers", "golden", "--k", "1", "--report-dir", str(tmp_path / "reports")],
                         cwd=HERE, env=env, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "2 cases x 1 tries, model scripted:golden: pass^1 1.000" in out.stdout and "gate ok" in out.stdout


def test_recorded_answers_are_checked_before_any_model_call(tmp_path: Path) -> None:
    """A reply is a call object or raw text (or a non-empty list of them): anything else names its case at load."""
    cases = list(load_suite(SUITE).cases[:3])
    path = tmp_path / "answers.json"
    path.write_text(json.dumps({cases[0].id: "raw text", cases[1].id: 42, cases[2].id: []}))
    with pytest.raises(ConfigurationError, match=rf"not so for: {cases[1].id}, {cases[2].id}$"):
        load_answers(str(path), cases)
    path.write_text(json.dumps({cases[0].id: "raw text", cases[1].id: ["a", {"call": {}}], cases[2].id: {}}))
    answers = load_answers(str(path), cases)
    assert [answers(cases[1], n) for n in range(3)] == ["a", {"call": {}}, "a"] and answers(cases[2], 0) == {}
    path.write_text(json.dumps({cases[0].id: "raw text"}))
    with pytest.raises(ConfigurationError, match=rf"has no reply for: {cases[1].id}, {cases[2].id}$"):
        load_answers(str(path), cases)


def test_a_wrong_label_fails_the_run_and_names_the_case(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    def mislabel(cases: dict[str, Any]) -> None:  # the golden call (pay) stays right; the label is wrong
        cases["expense-pay-after-look-up"]["expect"] = {"intent": "file_expense"}

    path = suite_copy(tmp_path, mislabel)
    n = len(load_suite(path).cases)
    one_wrong = f"{(n - 1) / n:.3f}"  # every case passes but one, whatever the suite's size
    common = ["run", "--suite", str(path), "--scripted-answers", "golden", "--report-dir", str(tmp_path)]
    code, out = run_cli(capsys, *common, "--k", "1")
    assert code == 1
    assert ("FAILED expense-pay-after-look-up (try 1/1: expected file_expense, "
            "got pay_expense receipt=9f8e7d6c5b4a)") in out
    assert f"gate FAILED: pass^k {one_wrong} < 1.000" in out
    code, out = run_cli(capsys, *common, "--metric", "pass^1", "--min-pass-rate", "0.85")
    assert code == 0 and f"gate ok: pass^1 {one_wrong} >= 0.850" in out


def test_the_chance_baseline_is_exact_and_follows_narrowing(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    cases = {c.id: c for c in load_suite(SUITE).cases}
    # The first step: nothing narrowed, 1 in 5; with a receipt drawn from the two the prompt shows (the report's and
    # one paid last month), 1 in 10.
    first = case_baseline(cases["expense-look-up-first"])
    assert first.offered == ("look_up_receipt", "pay_expense", "file_expense", "ask_submitter", "done_for_now")
    assert (first.right_args, first.random_args) == (pytest.approx(1 / 5), pytest.approx(1 / 10))
    # Filing was rejected: file_expense is not offered at the next step, so chance is 1 in 4, not 1 in 5; with a
    # receipt drawn from the hashes the prompt shows, the payment must also hit the report's receipt.
    feedback = cases[PAY_FIRST]
    shown = shown_commits(feedback)
    assert len(shown) == 2 and any(NEW.startswith(c) for c in shown) and any(OLD.startswith(c) for c in shown)
    row = case_baseline(feedback)
    assert row.offered == ("look_up_receipt", "pay_expense", "ask_submitter", "done_for_now")
    assert (row.right_args, row.random_args) == (pytest.approx(1 / 4), pytest.approx(1 / 4 / len(shown)))
    # Paid by another run: pay_expense is not offered; two of the four offered (finish, ask) pass, text args or not.
    paid = case_baseline(cases["expense-paid-by-another-run"])
    assert paid.offered == ("look_up_receipt", "file_expense", "ask_submitter", "done_for_now")
    assert (paid.right_args, paid.random_args) == (0.5, 0.5)
    # After two questions the question tool is gone: 1 in 4 too.
    assert case_baseline(cases["expense-asked-twice-then-act"]).right_args == pytest.approx(1 / 4)
    # The CLI's mean, over the cases of one agent only: a second suite names the same agent directly.
    few = [c.model_copy(update={"id": f"direct-{c.id}", "agent": "toy_agent:AGENT"})
           for c in (cases["expense-look-up-first"], cases[PAY_FIRST], cases["expense-done-after-both"])]
    save_suite(Suite(cases=tuple(few)), tmp_path / "direct.json")
    code, out = run_cli(capsys, "baseline", "--suite", str(SUITE), "--suite", str(tmp_path / "direct.json"),
                        "--agent", "toy_agent:AGENT")
    mean = (1 / 5 + 1 / 4 + 1 / 3) / 3
    assert code == 0 and f"3 cases: a uniformly random offered tool passes {mean:.3f} with the right" in out
    assert "direct-expense-look-up-first" in out and "\nexpense-look-up-first" not in out


def test_the_baseline_diff_names_cases_whose_decision_changed(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    baseline = tmp_path / "baseline.json"
    code, _ = run_cli(capsys, "run", "--suite", str(SUITE), "--scripted-answers", "golden", "--k", "1",
                      "--report-dir", str(tmp_path / "a"), "--save-baseline", str(baseline))
    assert code == 0
    answers = {c.id: {"call": golden_call(c)} for c in load_suite(SUITE).cases}
    answers["expense-file-after-paid"] = call("look_up_receipt", receipt=NEW[:12])
    answers["expense-paid-by-another-run"] = call("ask_submitter", question="Was this paid twice?")  # still passes
    answers["expense-amount-mismatch-asks"] = "I would just pay it."  # not JSON: an error event, never a pass
    (tmp_path / "answers.json").write_text(json.dumps(answers))
    code, out = run_cli(capsys, "run", "--suite", str(SUITE), "--agent", "expense", "--k", "1",
                        "--scripted-answers", str(tmp_path / "answers.json"), "--baseline", str(baseline),
                        "--report-dir", str(tmp_path / "b"))
    assert code == 1
    assert "3 case(s) changed decision since the baseline:" in out
    assert ("expense-file-after-paid: file_expense receipt=9f8e7d6c5b4a -> look_up_receipt receipt=9f8e7d6c5b4a "
            "(pass^k pass -> fail)") in out
    assert "expense-paid-by-another-run: done_for_now -> ask_submitter (pass^k pass -> pass)" in out
    assert "expense-amount-mismatch-asks: ask_submitter -> error:malformed_output (pass^k pass -> fail)" in out
    assert "## 3 case(s) changed decision since the baseline" in (tmp_path / "b" / "report.md").read_text()
    code, out = run_cli(capsys, "run", "--suite", str(SUITE), "--scripted-answers", "golden",
                        "--baseline", str(tmp_path / "missing.json"))
    assert code == 2 and "no baseline at" in out


def test_any_model_string_and_an_overridden_prompt(
    scripted: ScriptedModel, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "prompts").mkdir()
    (tmp_path / "prompts" / "expense_v2.j2").write_text("Check receipts twice, {{ agent }}.\n{% include '_tools.j2' %}")
    monkeypatch.setenv("AGENT_PROMPTS_DIR", str(tmp_path / "prompts"))
    case = next(c for c in load_suite(SUITE).cases if c.id == "expense-pay-after-look-up")
    scripted.enqueue(call("pay_expense", receipt=NEW[:12]), prompt_tokens=1234)
    scripted.enqueue(call("file_expense", receipt=NEW[:12]))
    [result] = run_cases([case], k=2, model=scripted.model, prompt="expense_v2.j2")
    assert [t.passed for t in result.tries] == [True, False] and (result.pass_1, result.pass_k) == (0.5, 0)
    assert result.tries[0].prompt_tokens == 1234 and result.tries[0].latency_ms > 0
    assert "expected pay_expense, got file_expense receipt=9f8e7d6c5b4a" in result.tries[1].why
    assert scripted.requests()[0]["messages"][0]["content"].startswith("Check receipts twice, expense.")


@pytest.fixture
def expense_served(prefect_server: Any, http: httpx.Client, tmp_path: Path) -> Iterator[Served]:
    """tests/kit/expense_flow.py served by flow.serve in its own process group, stopped after the test."""
    env = {k: v for k, v in os.environ.items() if k != "AGENT_MODEL"}
    served = Served(HERE / "expense_flow.py", env, http, "expense-evals/evals", tmp_path / "serve.log")
    served.start()
    yield served
    served.stop()


@pytest.mark.slow
def test_export_a_live_runs_decisions_into_cases(
    expense_served: Served, http: httpx.Client, approvals: ApprovalsClient, scripted: ScriptedModel,
    capsys: pytest.CaptureFixture[str], tmp_path: Path,
) -> None:
    file, pay = call("file_expense", receipt=NEW), call("pay_expense", receipt=NEW)
    scripted.enqueue(call("look_up_receipt", receipt=NEW), file, pay, file,
                     call("done_for_now", message="paid and filed"))
    run = create_run(http, expense_served.deployment_id, {"model": scripted.model})
    key = next_pause(http, run)
    approvals.reject(run, "alice", "pay it first")
    key = next_pause(http, run, after=key)
    approvals.approve(run, "bob")
    next_pause(http, run, after=key)
    approvals.approve(run, "bob")
    wait_state(http, run, {"COMPLETED"})

    out_path = tmp_path / "from-run.json"
    code, out = run_cli(capsys, "export", "--run", run, "--out", str(out_path))
    assert code == 2 and "--agent-ref expense=package.module:AGENT" in out and not out_path.exists(), out
    code, out = run_cli(capsys, "export", "--run", run, "--out", str(out_path), "--agent-ref", "expense=toy_agent:AGENT")
    assert load_suite(out_path).agents == {"expense": "toy_agent:AGENT"}
    assert code == 0 and "exported 3 case(s) (2 approved, 1 rejected) from the expense thread(s)" in out
    cases = {c.id.removeprefix(f"run-{run[:8]}-expense-"): c for c in load_suite(out_path).cases}
    assert sorted(cases) == ["call2-rejected", "call3-approved", "call4-approved"]  # call 1, the auto look-up: none
    rejected = cases["call2-rejected"]
    last = rejected.thread.events[-1]
    assert last.type == "decision" and last.decision == "rejected" and last.feedback == "pay it first"
    assert rejected.expect.model_dump(mode="json") == {"not_call": [{"intent": "file_expense", "args": {"receipt": {"commit": NEW}}}]}
    assert rejected.golden == {"intent": "pay_expense", "receipt": NEW}  # what the agent did instead, approved
    assert cases["call3-approved"].expect.model_dump(mode="json") == {"intent": "pay_expense", "args": {"receipt": {"commit": NEW}}}
    assert [e.type for e in cases["call3-approved"].thread.events][-2:] == ["proposal", "decision"]
    assert cases["call4-approved"].source["by"] == "bob"

    code, out = run_cli(capsys, "run", "--suite", str(out_path), "--scripted-answers", "golden", "--k", "1",
                        "--report-dir", str(tmp_path / "r"))
    assert code == 0, out
    code, out = run_cli(capsys, "export", "--run", run, "--out", str(out_path))
    assert code == 0 and "; 0 new in" in out  # exporting again adds nothing
    code, out = run_cli(capsys, "export", "--run", "00000000-0000-0000-0000-000000000000", "--out", str(out_path))
    assert code == 2 and "has no thread artifact" in out


def test_a_yaml_suite_round_trips(tmp_path: Path) -> None:
    loaded = load_suite(SUITE)
    few = Suite(description="two cases", agents=loaded.agents, cases=loaded.cases[:2])
    save_suite(few, tmp_path / "few.yaml")
    assert load_suite(tmp_path / "few.yaml") == few
    (tmp_path / "bad.yaml").write_text("cases: [\n")
    with pytest.raises(ConfigurationError, match="bad.yaml: not valid YAML"):
        load_suite(tmp_path / "bad.yaml")
