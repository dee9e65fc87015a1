"""An eval report three ways: a terminal table, Markdown (for a PR comment or a CI summary) and JSON (a baseline)."""

from __future__ import annotations

from pathlib import Path

from prefect_micro_agents.evals.results import CaseResult, Change, Report

__all__ = ["failures", "markdown", "terminal", "write_reports"]


def failures(report: Report) -> list[tuple[CaseResult, str]]:
    """Each case that failed a try, with the first failed try's reason."""
    found = []
    for case in report.cases:
        failed = [(n, t) for n, t in enumerate(case.tries, start=1) if not t.passed]
        if failed:
            n, t = failed[0]
            found.append((case, f"try {n}/{len(case.tries)}: {t.why}"))
    return found


def _tokens(case: CaseResult) -> str:
    return f"{sum(t.prompt_tokens for t in case.tries)}/{sum(t.completion_tokens for t in case.tries)}"


def _ms(case: CaseResult) -> str:
    return f"{sum(t.latency_ms for t in case.tries) / len(case.tries):.0f}"


def _change(c: Change) -> str:
    verdict = {True: "pass", False: "fail", None: "-"}
    match c.kind:
        case "changed":
            return (f"{c.id}: {c.before} -> {c.after} "
                    f"(pass^k {verdict[c.passed_before]} -> {verdict[c.passed_after]})")
        case "new":
            return f"{c.id}: new case, {c.after} ({verdict[c.passed_after]})"
        case "gone":
            return f"{c.id}: not in this run (was {c.before})"


def _overall(report: Report) -> str:
    s = report.summary
    between = "".join(f", pass^{j} {v:.3f}" for j, v in s.pass_hat.items() if 1 < j < report.k)
    return (f"{s.cases} cases x {report.k} tries, model {report.model}: pass^1 {s.pass_1:.3f}{between}, "
            f"pass^k {s.pass_k:.3f}; tokens {s.prompt_tokens} in / {s.completion_tokens} out; latency mean "
            f"{s.latency_ms_mean:.0f} ms, p95 {s.latency_ms_p95:.0f} ms")


def _gate(report: Report) -> str:
    g = report.gate
    if g is None:
        return ""
    return (f"gate ok: {g.metric} {g.value:.3f} >= {g.minimum:.3f}" if g.ok
            else f"gate FAILED: {g.metric} {g.value:.3f} < {g.minimum:.3f}")


def terminal(report: Report) -> str:
    header = ("case", "agent", "pass^1", "pass^k", "decision (majority)", "tokens in/out", "ms/step")
    rows = [header] + [(c.id, c.agent, f"{c.passes}/{len(c.tries)}", "yes" if c.pass_k == 1 else "NO", c.decision,
                        _tokens(c), _ms(c)) for c in report.cases]
    widths = [max(len(r[i]) for r in rows) for i in range(len(header))]
    lines = ["  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip() for row in rows]
    lines += ["", _overall(report)]
    lines += [f"FAILED {case.id} ({why})" for case, why in failures(report)]
    changed = [c for c in report.changes if c.kind == "changed"]
    if report.changes:
        lines += ["", f"{len(changed)} case(s) changed decision since the baseline:"]
        lines += [f"  {_change(c)}" for c in report.changes]
    return "\n".join(lines + ([_gate(report)] if report.gate else []))


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def markdown(report: Report) -> str:
    s = report.summary
    agents = [report.agent] if report.agent else sorted({c.agent for c in report.cases})
    prompt = f"`{report.prompt or 'each agent default'}`" + (f" from `{report.prompts_dir}`" if report.prompts_dir else "")
    out = [
        f"# Eval report: {', '.join(agents)}",
        "",
        f"- suites: {', '.join(f'`{p}`' for p in report.suites)}",
        f"- model: `{report.model}`; prompt: {prompt}; started {report.started_at}",
        f"- **pass^1 {s.pass_1:.3f}**, **pass^k {s.pass_k:.3f}** (k = {report.k}, {s.cases} cases)",
        f"- tokens: {s.prompt_tokens} prompt, {s.completion_tokens} completion; latency per step: mean "
        f"{s.latency_ms_mean:.0f} ms, p95 {s.latency_ms_p95:.0f} ms",
    ]
    if report.gate:
        out.append(f"- {_gate(report)}")
    out += ["", "| case | agent | pass^1 | pass^k | decision | tokens in/out | ms/step | first failure |",
            "|---|---|---|---|---|---|---|---|"]
    why = {case.id: text for case, text in failures(report)}
    out += [f"| {_cell(c.id)} | {c.agent} | {c.passes}/{len(c.tries)} | {'yes' if c.pass_k == 1 else '**no**'} | "
            f"`{_cell(c.decision)}` | {_tokens(c)} | {_ms(c)} | {_cell(why.get(c.id, ''))} |" for c in report.cases]
    if report.changes:
        changed = sum(c.kind == "changed" for c in report.changes)
        out += ["", f"## {changed} case(s) changed decision since the baseline", ""]
        out += [f"- {_cell(_change(c))}" for c in report.changes]
    return "\n".join(out) + "\n"


def write_reports(report: Report, directory: str | Path) -> tuple[Path, Path]:
    """report.json (load it as a baseline later) and report.md, side by side."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    json_path, md_path = directory / "report.json", directory / "report.md"
    json_path.write_text(report.model_dump_json(indent=1) + "\n")
    md_path.write_text(markdown(report))
    return json_path, md_path
