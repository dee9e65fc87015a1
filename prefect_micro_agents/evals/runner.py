"""Replay each case's thread prefix k times through one real agent step and judge every try (issue 7).

An agent step is a pure function of the thread, so a recorded prefix replays exactly what the model saw then,
under today's prompt and model. Nothing is mocked: scripted answers go through litellm's custom-provider boundary
(prefect_micro_agents.testing.scripted), like every other test.
"""

from __future__ import annotations

import dataclasses
import tempfile
import time
from collections.abc import Callable, Sequence
from contextlib import ExitStack

from prefect_micro_agents.errors import ConfigurationError
from prefect_micro_agents.evals.answers import Answers
from prefect_micro_agents.evals.judge import decision_of, judge
from prefect_micro_agents.evals.results import CaseResult, TryResult
from prefect_micro_agents.evals.suite import Case, resolve_agent
from prefect_micro_agents.llm import step, use_provider
from prefect_micro_agents.testing.scripted import ScriptedModel, register
from prefect_micro_agents.thread import ProposalEvent
from prefect_micro_agents.tools import Agent

__all__ = ["run_cases", "run_try"]


def run_try(agent: Agent, case: Case, model: str | None) -> TryResult:
    """One model step on the case's thread; tokens and latency come from the proposal's usage record."""
    started = time.perf_counter()
    outcome = step(agent, case.thread, model)
    elapsed_ms = (time.perf_counter() - started) * 1000
    usage = outcome.usage if isinstance(outcome, ProposalEvent) else None  # an error event records no usage
    verdict = judge(case.expect, outcome)
    latency = usage.latency_ms if usage is not None and usage.latency_ms is not None else elapsed_ms
    return TryResult(decision=decision_of(outcome), passed=verdict.passed, why=verdict.why,
                     prompt_tokens=usage.prompt_tokens if usage else 0,
                     completion_tokens=usage.completion_tokens if usage else 0, latency_ms=round(latency, 1))


def run_cases(
    cases: Sequence[Case],
    *,
    k: int = 3,
    model: str | None = None,
    prompt: str | None = None,
    answers: Answers | None = None,
    progress: Callable[[CaseResult], None] | None = None,
) -> list[CaseResult]:
    """Every case k times, one step per try. `prompt` replaces the agents' template name; with `answers`, a
    scripted model in a temporary directory replies instead of `model`."""
    if k < 1:
        raise ConfigurationError(f"k must be at least 1, not {k}")
    agents: dict[str, Agent] = {}
    results = []
    with ExitStack() as stack:
        script = None
        if answers is not None:
            use_provider(register)  # the scripted provider, through the same hook as any custom provider
            script = ScriptedModel(stack.enter_context(tempfile.TemporaryDirectory(prefix="evals-scripted-")))
            model = script.model
        for case in cases:
            if case.agent not in agents:
                agent = resolve_agent(case.agent_ref)
                agents[case.agent] = dataclasses.replace(agent, prompt=prompt) if prompt else agent
            tries = []
            for n in range(k):
                if script is not None and answers is not None:
                    script.enqueue(answers(case, n))
                tries.append(run_try(agents[case.agent], case, model))
            result = CaseResult(id=case.id, agent=case.agent, description=case.description, tries=tries)
            results.append(result)
            if progress is not None:
                progress(result)
    return results
