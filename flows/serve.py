"""Serve the deploy pipeline as a deployment (`flow.serve`): the embedded default, no work pool or worker needed.

    PREFECT_API_URL=http://127.0.0.1:4200/api python -m flows.serve            # deployment deploy-pipeline/local

The deployment gets the cron schedule and the `git.push` event trigger declared in deployments/prefect.yaml (read
from that file: the one definition `prefect deploy` uses too), so `microagents push --sha <sha>` on branch main
starts a run and the nightly schedule promotes the newest v* tag. `--no-schedule` keeps the schedule but switched
off, `--no-trigger` serves without the trigger. If AGENT_NOTIFY_BLOCK or AGENT_NOTIFY_WEBHOOK_URL is set, the
automation that tells approvers is created or updated first (flows.triggers).

Runs are also started from the UI, `prefect deployment run deploy-pipeline/local -p sha=v1.2.0`, or the API; they
suspend while waiting for approvals and resume in a new process, so the server must be a persistent one.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

__all__ = ["DEPLOYMENT_NAME", "build_deployment", "main"]

DEPLOYMENT_NAME = "local"

def build_deployment(name: str = DEPLOYMENT_NAME, *, schedule: bool = True, trigger: bool = True,
                     prefect_file: str | Path | None = None) -> tuple[object, str]:
    """The pipeline's RunnerDeployment with the prefect.yaml schedule(s) and trigger(s), and its one-line summary."""
    from flows.deploy_pipeline import deploy_pipeline
    from flows.triggers import PREFECT_FILE, describe, pipeline_spec, schedules_of, triggers_of

    spec = pipeline_spec(prefect_file or PREFECT_FILE)
    schedules = schedules_of(spec, active=schedule)
    triggers = triggers_of(spec, name) if trigger else []
    deployment = deploy_pipeline.to_deployment(
        name=name,
        schedules=schedules,
        triggers=triggers,
        parameters=dict(spec.get("parameters") or {}),
        description=spec.get("description"),
        tags=list(spec.get("tags") or []),
    )
    return deployment, describe(deploy_pipeline.name, name, schedules, triggers)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m flows.serve", description=__doc__.splitlines()[0])
    parser.add_argument("--name", default=DEPLOYMENT_NAME, help="deployment name (default: %(default)s)")
    parser.add_argument("--no-schedule", action="store_true",
                        help="keep the nightly schedule on the deployment, but inactive")
    parser.add_argument("--no-trigger", action="store_true", help="serve without the git.push event trigger")
    parser.add_argument("--no-notify", action="store_true",
                        help="do not create/update the approver notification automation")
    parser.add_argument("--prefect-file", default=None, help="where the schedule and trigger are declared "
                                                             "(default: deployments/prefect.yaml)")
    args = parser.parse_args(argv)

    from prefect_micro_agents.adapter.serving import serve_deployments
    from prefect_micro_agents.adapter.recovery import enable_heartbeats
    from flows.triggers import (
        TriggerConfigError,
        ensure_approval_automation,
        ensure_recovery_automations,
        notification_summary,
        recovery_summary,
    )

    enable_heartbeats()  # before anything reads Prefect's settings: the recovery automations expect this frequency
    try:
        deployment, summary = build_deployment(args.name, schedule=not args.no_schedule, trigger=not args.no_trigger,
                                               prefect_file=args.prefect_file)
        recovery = recovery_summary(ensure_recovery_automations())
        notice = None if args.no_notify else notification_summary(ensure_approval_automation())
    except TriggerConfigError as exc:
        sys.exit(f"error: {exc}")
    print(f"serving {summary}", flush=True)
    print(recovery, flush=True)
    if notice:
        print(notice, flush=True)
    serve_deployments(deployment)


if __name__ == "__main__":
    main()
