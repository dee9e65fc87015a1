"""Evals: replay recorded thread prefixes against a prompt and a model, and report decision agreement (issue 7).

Suites (`suite`), the judge of one step (`judge`), the runner (`runner`), pass^1/pass^k and baseline diffs
(`results`), reports (`report`), cases cut from real runs (`export`), scripted answers (`answers`); the CLI is
`python -m prefect_micro_agents.evals` (`cli`).
"""

from prefect_micro_agents.evals.judge import Verdict, decision_of, judge
from prefect_micro_agents.evals.results import CaseResult, Report, TryResult, diff, pass_hat, summarize
from prefect_micro_agents.evals.suite import Case, Expect, Suite, load_suite, save_suite

__all__ = ["Case", "CaseResult", "Expect", "Report", "Suite", "TryResult", "Verdict", "decision_of", "diff",
           "judge", "load_suite", "pass_hat", "save_suite", "summarize"]
