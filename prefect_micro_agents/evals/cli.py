"""`python -m prefect_micro_agents.evals`: run eval suites against a prompt and a model (a CI gate), print a suite's chance
baseline, or cut cases from a run."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

from prefect_micro_agents.errors import AgentError, ConfigurationError
from prefect_micro_agents.evals.answers import load_answers
from prefect_micro_agents.evals.results import CaseResult, Gate, Report, diff, load_report, summarize
from prefect_micro_agents.evals.suite import Case, Suite, load_suite, save_suite

__all__ = ["main"]

METRICS = ("pass^k", "pass^1")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m prefect_micro_agents.evals", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="replay every case k times; report pass^1/pass^k; exit 1 below the threshold")
    run.add_argument("--suite", action="append", required=True, help="suite file, JSON or YAML (repeatable)")
    run.add_argument("--agent", help="only this agent's cases (its name in the suite, e.g. deploy)")
    run.add_argument("--k", type=int, default=3, help="tries per case (default 3)")
    run.add_argument("--model", help="any litellm model string (default: $AGENT_MODEL, else the embedded local model)")
    run.add_argument("--prompt", help="template name to use instead of the agent's own, e.g. deploy_agent_v2.j2")
    run.add_argument("--prompts-dir", help="directory searched first for templates (sets AGENT_PROMPTS_DIR)")
    run.add_argument("--scripted-answers", metavar="golden|FILE",
                     help="no model: a scripted model replies with each case's golden call, or with the replies in a "
                          "JSON file {case id: call or [call per try]}; checks the machinery, not a model")
    run.add_argument("--baseline", help="an earlier report.json: list the cases whose majority decision changed")
    run.add_argument("--save-baseline", metavar="PATH", help="also write this run's JSON report to PATH")
    run.add_argument("--report-dir", default="evals/reports", help="where report.json and report.md go")
    run.add_argument("--min-pass-rate", type=float, default=1.0, help="gate threshold, 0..1 (default 1.0)")
    run.add_argument("--metric", choices=METRICS, default="pass^k", help="what the gate compares (default pass^k)")
    baseline = sub.add_parser("baseline", help="the chance baseline: expected pass^1 of a uniformly random offered "
                                               "tool (exact; no model)")
    baseline.add_argument("--suite", action="append", required=True, help="suite file, JSON or YAML (repeatable)")
    baseline.add_argument("--agent", help="only this agent's cases")
    export = sub.add_parser("export", help="turn a finished run's human decisions into eval cases")
    export.add_argument("--run", dest="run_id", required=True, help="flow run id")
    export.add_argument("--out", required=True, help="suite file to write; an existing one gets the new cases added")
    export.add_argument("--agent", help="only this agent's thread")
    export.add_argument("--agent-ref", action="append", default=[], metavar="NAME=package.module:AGENT",
                        help="where the agent NAME (as in the run's `<NAME>-thread-<run>` artifact) is, written to "
                             "the suite's `agents` map so its cases load (repeatable)")
    export.add_argument("--api-url", help="Prefect API URL (default: $PREFECT_API_URL; auth: $PREFECT_API_AUTH_STRING)")
    return parser


def _cases(paths: list[str], agent: str | None) -> list[Case]:
    cases = [c for p in paths for c in load_suite(p).cases if agent is None or c.agent == agent]
    ids = [c.id for c in cases]
    if dupes := sorted({i for i in ids if ids.count(i) > 1}):
        raise ConfigurationError(f"case ids appear in more than one suite: {', '.join(dupes)}")
    if not cases:
        raise ConfigurationError(f"no cases{f' for agent {agent!r}' if agent else ''} in {', '.join(paths)}")
    return cases


def _progress(total: int) -> Callable[[CaseResult], None]:
    done = 0

    def show(result: CaseResult) -> None:
        nonlocal done
        done += 1
        print(f"[{done}/{total}] {result.id}: {result.passes}/{len(result.tries)} passed", file=sys.stderr, flush=True)

    return show


def _run(args: argparse.Namespace) -> int:
    from prefect_micro_agents.evals.report import terminal, write_reports
    from prefect_micro_agents.evals.runner import run_cases
    from prefect_micro_agents.llm import preflight
    from prefect_micro_agents.prompts import PROMPTS_DIR_ENV

    if not 0 <= args.min_pass_rate <= 1:
        raise ConfigurationError(f"--min-pass-rate is a fraction between 0 and 1, not {args.min_pass_rate}")
    if args.scripted_answers and args.model:
        raise ConfigurationError("--scripted-answers replies instead of a model; drop --model (or the other)")
    if args.prompts_dir:
        os.environ[PROMPTS_DIR_ENV] = args.prompts_dir  # read by the prompt renderer at each step
    cases = _cases(args.suite, args.agent)
    if args.prompt and len({c.agent for c in cases}) > 1:
        raise ConfigurationError("--prompt replaces one agent's template; add --agent to pick that agent's cases")
    answers = load_answers(args.scripted_answers, cases) if args.scripted_answers else None
    model = f"scripted:{args.scripted_answers}" if answers else preflight(args.model)
    baseline = load_report(args.baseline) if args.baseline else None
    started = datetime.now(UTC).isoformat(timespec="seconds")
    results = run_cases(cases, k=args.k, model=None if answers else model, prompt=args.prompt, answers=answers,
                        progress=_progress(len(cases)))
    summary = summarize(results)
    value = summary.pass_k if args.metric == "pass^k" else summary.pass_1
    report = Report(suites=args.suite, agent=args.agent, model=model, prompt=args.prompt,
                    prompts_dir=args.prompts_dir, k=args.k, started_at=started, summary=summary, cases=results,
                    changes=diff(baseline, results) if baseline else [],
                    gate=Gate(metric=args.metric, minimum=args.min_pass_rate, value=value,
                              ok=value >= args.min_pass_rate - 1e-9))
    print(terminal(report))
    json_path, md_path = write_reports(report, args.report_dir)
    if args.save_baseline:
        Path(args.save_baseline).write_text(report.model_dump_json(indent=1) + "\n")
    print(f"reports: {json_path}, {md_path}" + (f"; baseline saved to {args.save_baseline}" if args.save_baseline else ""))
    return 0 if report.gate and report.gate.ok else 1


def _baseline(args: argparse.Namespace) -> int:
    from prefect_micro_agents.evals.baseline import table

    text, _, _ = table(_cases(args.suite, args.agent))
    print(text)
    return 0


def _export(args: argparse.Namespace) -> int:
    import httpx

    from prefect_micro_agents.adapter.approvals import ApprovalsClient
    from prefect_micro_agents.evals.export import cases_from_thread, fetch_threads, merge

    with ApprovalsClient(api_url=args.api_url) as client:
        try:
            threads = fetch_threads(client, args.run_id)
        except httpx.HTTPError as exc:
            raise ConfigurationError(f"cannot read flow run {args.run_id} from {client.http.base_url} "
                                     f"({type(exc).__name__}: {exc}); check PREFECT_API_URL and the run id") from exc
    new = [c for agent, thread in sorted(threads.items()) if args.agent in (None, agent)
           for c in cases_from_thread(thread, agent, args.run_id)]
    refs = dict(ref.partition("=")[::2] for ref in args.agent_ref)
    out = Path(args.out)
    existing = load_suite(out) if out.exists() else Suite(description=f"cases cut from flow run {args.run_id}")
    existing = existing.model_copy(update={"agents": {**existing.agents, **refs}})
    if unnamed := sorted({c.agent for c in new} - set(existing.agents)):
        raise ConfigurationError(f"{out} would not load: say where agent {', '.join(map(repr, unnamed))} is defined, "
                                 f"e.g. --agent-ref {unnamed[0]}=package.module:AGENT (nothing was written)")
    suite, added = merge(existing, new)
    save_suite(suite, out)
    load_suite(out)  # what we wrote must load: names resolve, every prefix ends where the agent is asked
    positives = sum("approved" in c.tags for c in new)
    print(f"exported {len(new)} case(s) ({positives} approved, {len(new) - positives} rejected) from the "
          f"{', '.join(sorted(threads))} thread(s) of flow run {args.run_id}; {added} new in {out}")
    return 0


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        return {"run": _run, "baseline": _baseline, "export": _export}[args.command](args)
    except AgentError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
