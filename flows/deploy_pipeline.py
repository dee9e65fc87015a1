"""The deploy pipeline: staging deploy and e2e (no LLM), then the deploy agent, production e2e if it changed
production, and on failure the rollback agent. A thin DAG: targets live in flows.targets, context shaping in
flows.prefetch, the tools that change production in flows.production, how a run ends in flows.outcomes (decided from
what the agents executed), report rows in flows.report.

Durability rules: every step is a task with a persisted result and a run-scoped cache key built from plain data
(`run_scoped_key`), so when a suspended run resumes and this function runs again from the top, nothing already done
runs twice and the agents' threads are rebuilt byte for byte (their LLM steps are cached on the thread digest).
The pre-fetched context in particular MUST come from cached tasks: production changes while the run is suspended.
Every task that fetches context or results is `@redacted`: its return value is redacted inside the task, so what
Prefect stores is exactly what the flow (and, on replay, the rebuilt thread) sees, and nothing secret is stored.
Those tasks return the targets' pydantic models (`DeployResult`, `E2EReport`, `EnvState`, `RepoTags`), which Prefect
persists as they are; the flow and the pure modules read their fields, never a dump indexed by strings.
"""

# No `from __future__ import annotations` here: the runner loads this file from its entrypoint under another module
# name, and Prefect's parameter model could not resolve string annotations such as "TargetSettings" there.
import fnmatch
import re
from datetime import UTC, datetime
from typing import Any

from prefect import flow, get_run_logger, task
from prefect.artifacts import create_table_artifact
from prefect.context import FlowRunContext
from prefect.runtime import flow_run
from prefect.states import Completed, State

from prefect_micro_agents.adapter import failed, run_agent, run_scoped_key, with_approvers
from prefect_micro_agents.adapter.logredact import install_log_redaction
from prefect_micro_agents.adapter.recovery import begin_attempt
from agents.deploybot import DEPLOY_AGENT
from prefect_micro_agents.llm import preflight
from agents.rollback import ROLLBACK_AGENT
from prefect_micro_agents.secrets import redact, redact_data, redacted
from prefect_micro_agents.thread import Thread
from flows import outcomes, prefetch, report
from flows.production import deploy_tools, ensure_limit, rollback_tools
from flows.targets.base import SERVICES, DeployResult, E2EReport, EnvState
from flows.targets.errors import UnknownRevisionError
from flows.targets.gitinfo import RepoTags, commits_between, recent_tags, tags_by_sha
from flows.targets.settings import TargetSettings

__all__ = ["NEWEST_TAG", "REPORT_KEY", "deploy_pipeline", "is_newest_tag_ref"]

REPORT_KEY = "deploy-report"
# `sha` may be this special ref: the repository's newest tag by creation date (`latest-tag`), or the newest tag whose
# name matches a glob (`latest-tag:v*`, what the nightly schedule in deployments/prefect.yaml promotes).
NEWEST_TAG = "latest-tag"
_TAG_GLOB = re.compile(r"^[A-Za-z0-9._/*?\[\]-]{1,100}$")


def _run_id() -> str:
    return str(flow_run.get_id())


def _run_started() -> datetime:
    """When the run first started (the server's record, the same in every process that resumes it)."""
    context = FlowRunContext.get()
    started = context.flow_run.start_time if context and context.flow_run else None
    return started or datetime.now(UTC)


def is_newest_tag_ref(ref: str) -> bool:
    """`latest-tag` or `latest-tag:<glob>`."""
    return ref == NEWEST_TAG or ref.startswith(NEWEST_TAG + ":")


@task(persist_result=True, cache_key_fn=run_scoped_key("newest-tag", "ref"), task_run_name="newest tag ({ref})")
@redacted
def resolve_newest_tag(targets: TargetSettings, ref: str) -> str:
    """The name of the newest tag (by creation date: the tagger date of an annotated tag, the commit date of a
    lightweight one) matching the glob after `latest-tag:` (default: any tag). A cached task: a run resumed the next
    day still deploys the tag it started with."""
    pattern = ref[len(NEWEST_TAG) + 1:] if ref.startswith(NEWEST_TAG + ":") else "*"
    if not _TAG_GLOB.match(pattern):
        raise UnknownRevisionError(f"{ref!r}: the part after '{NEWEST_TAG}:' must be a tag glob such as v*")
    repo = targets.build().repo
    if repo is None:
        raise UnknownRevisionError(f"{ref!r} needs a git repository to read tags from; set `repo:` in the "
                                   "command-target config, or pass a SHA")
    for row in recent_tags(repo, limit=100_000):  # newest first
        if fnmatch.fnmatchcase(row["tag"], pattern):
            return row["tag"]
    which = "no tags" if pattern == "*" else f"no tag matching {pattern!r}"
    raise UnknownRevisionError(f"{ref!r}: the repository {repo} has {which}; tag a release "
                               "(`git tag v1.0.0`) or pass a SHA or tag")


@task(persist_result=True, cache_key_fn=run_scoped_key("resolve-sha", "ref"), task_run_name="resolve {ref}")
@redacted
def resolve_sha(targets: TargetSettings, ref: str) -> str:
    return targets.build().resolve(ref)


@task(persist_result=True, cache_key_fn=run_scoped_key("staging-deploy", "service", "sha"),
      task_run_name="deploy {service} to staging")
@redacted
def deploy_to_staging(targets: TargetSettings, service: str, sha: str) -> DeployResult:
    return targets.build().deploy(service, "staging", sha, idempotency_key=f"{_run_id()}:staging:{service}")


@task(persist_result=True, cache_key_fn=run_scoped_key("e2e", "env", "phase"), task_run_name="e2e {env} ({phase})")
@redacted
def run_e2e(targets: TargetSettings, env: str, phase: str) -> E2EReport:
    """`phase` makes each e2e of a run its own step (after the deploy, after a rollback)."""
    return targets.build().run_e2e(env)


@task(persist_result=True, cache_key_fn=run_scoped_key("state", "env", "phase"),
      task_run_name="state of {env} ({phase})")
@redacted
def fetch_state(targets: TargetSettings, env: str, phase: str) -> EnvState:
    return targets.build().state(env)


@task(persist_result=True, cache_key_fn=run_scoped_key("tags"), task_run_name="tags")
@redacted
def fetch_tags(targets: TargetSettings) -> RepoTags:
    repo = targets.build().repo
    if repo is None:
        return RepoTags(recent="unknown: no repo in the target config", by_sha={})
    return RepoTags(recent=recent_tags(repo), by_sha=tags_by_sha(repo))


@task(persist_result=True, cache_key_fn=run_scoped_key("commits", "sha"), task_run_name="commits to {sha:.12}")
@redacted
def fetch_commits(targets: TargetSettings, sha: str, bases: list[str]) -> Any:
    repo = targets.build().repo
    if repo is None:
        return "unknown: no repo in the target config"
    return commits_between(repo, sha, bases)


@task(persist_result=True, cache_key_fn=run_scoped_key("report", "outcome"), task_run_name="report ({outcome})")
def publish_report(rows: list[dict[str, Any]], outcome: str, message: str) -> str:
    """A cached task, so a replayed or restarted run does not add a second version."""
    rows, message = redact_data(rows), redact(message)  # an artifact is durable and visible: nothing secret in it
    create_table_artifact(table=rows, key=REPORT_KEY, description=f"deploy pipeline: **{outcome}**: {message}")
    return outcome


@flow(name="deploy-pipeline", persist_result=True)
def deploy_pipeline(
    sha: str,
    targets: TargetSettings = TargetSettings(),  # noqa: B008 (frozen pydantic model: a safe default)
    model: str | None = None,
    approval_timeout_s: float | None = None,
    source: str = "cli",
    actor: str = "unknown",
) -> State:
    """Deploy `sha` (a SHA, short SHA or tag; `latest-tag` or `latest-tag:<glob>` for the newest tag) to staging,
    test it, let the deploy agent promote it to production with approvals, test production if the agent changed it,
    and roll back with the rollback agent's approved proposals if that fails."""
    install_log_redaction()  # before anything can log: this run's logs go to the API and the runner's output
    logger = get_run_logger()
    exhausted = begin_attempt()  # a new attempt after a crash frees what the dead one held; too many: stop here
    # Configuration first: a bad model, target config or SHA fails here, before anything is deployed.
    model = preflight(model)
    targets.build()
    ref = resolve_newest_tag(targets, sha) if is_newest_tag_ref(sha) else sha
    full = resolve_sha(targets, ref)
    requested = sha if ref == sha else f"{ref} ({sha})"
    rows: list[dict[str, Any]] = []

    def finish(ended: outcomes.Outcome) -> State:
        now = datetime.now(UTC)
        rows.append(report.outcome_row(ended.name, ended.message, at=now,
                                       seconds=(now - _run_started()).total_seconds()))
        publish_report(rows, ended.name, ended.message)
        (logger.info if ended.ok else logger.error)("%s: %s", ended.name, ended.message)
        if ended.ok:  # the message is the state's, so the UI and the run list say what happened (or did not)
            return Completed(message=ended.message, data={"outcome": ended.name, "sha": full, "message": ended.message})
        return failed(ended.name, ended.message)

    if exhausted is not None:  # the worker died on every attempt Prefect made: nothing more runs
        return finish(outcomes.Outcome("recovery_exhausted", exhausted, ok=False))
    staging = [deploy_to_staging(targets, service, full) for service in SERVICES]
    rows += [report.deploy_row(r) for r in staging]
    staging_e2e = run_e2e(targets, "staging", "staging") if all(r.ok for r in staging) else None
    if staging_e2e is not None:
        rows.append(report.e2e_row(staging_e2e))
    if (stopped := outcomes.staging_outcome(full, staging, staging_e2e)) is not None:
        return finish(stopped)
    assert staging_e2e is not None

    prod = fetch_state(targets, "production", "before-deploy")
    tags = fetch_tags(targets)
    commits = fetch_commits(targets, full, prefetch.released_shas(prod))
    thread = prefetch.deploy_thread(_run_id(), full, requested, source=source, actor=actor, prod=prod, tags=tags,
                                    commits=commits, staging_e2e=staging_e2e)
    ensure_limit()  # the tag limit the production-changing tools hold: without it Prefect would not serialise them
    deployed = run_agent(DEPLOY_AGENT, thread, deploy_tools(targets, full), model=model,
                         approval_timeout_s=approval_timeout_s)
    after = fetch_state(targets, "production", "after-deploy")
    rows += report.agent_rows("deploy", deployed, after.history, with_approvers(DEPLOY_AGENT))
    prod_e2e: E2EReport | None = None
    rollback: Thread | None = None
    final: EnvState | None = None
    again: E2EReport | None = None
    # What runs next follows what the deploy agent executed: nothing changed, nothing to test or roll back.
    if outcomes.needs_prod_e2e(deployed):
        prod_e2e = run_e2e(targets, "production", "after-deploy")
        rows.append(report.e2e_row(prod_e2e, "after deploy"))
    if prod_e2e is not None and outcomes.needs_rollback(prod_e2e):
        thread = prefetch.rollback_thread(_run_id(), full, actor=actor, deployed=deployed, prod_e2e=prod_e2e,
                                          prod=after, tags=tags, policies=with_approvers(DEPLOY_AGENT))
        rollback = run_agent(ROLLBACK_AGENT, thread, rollback_tools(targets), model=model,
                             approval_timeout_s=approval_timeout_s)
        final = fetch_state(targets, "production", "after-rollback")
        rows += report.agent_rows("rollback", rollback, final.history, with_approvers(ROLLBACK_AGENT))
        if outcomes.needs_e2e_again(rollback):
            again = run_e2e(targets, "production", "after-rollback")
            rows.append(report.e2e_row(again, "after rollback"))
    return finish(outcomes.decide(full, before=prod, deploy=deployed, after=after, prod_e2e=prod_e2e,
                                  rollback=rollback, final=final, again=again))


