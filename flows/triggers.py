"""How the deploy pipeline is started and who hears about it, in Prefect's own terms.

- `pipeline_spec()` reads the pipeline's deployment from deployments/prefect.yaml (the single source of truth for
  its cron schedule and its `git.push` event trigger); `schedules_of` and `triggers_of` turn it into the objects
  `flow.to_deployment(...)` takes, converted the way `prefect deploy` converts them, so `python -m flows.serve` and
  `prefect deploy --prefect-file deployments/prefect.yaml --all` register the same schedule and trigger.
- `ensure_approval_automation()` creates or updates (by name) a Prefect automation that tells approvers when a flow
  run enters Suspended (`prefect.flow-run.Suspended`: in this project, a run waiting for an approval or an answer):
  through a notification block named by AGENT_NOTIFY_BLOCK ("<block-type-slug>/<block-name>", e.g.
  "slack-webhook/approvers", a block you created in the UI or in Python), and/or by POSTing JSON to
  AGENT_NOTIFY_WEBHOOK_URL (a Webhook block `microagents-approvers` is created or updated for it). With neither set
  it creates nothing: the run's own log line ("waiting for approval of ...") and `microagents pending` say what
  waits. Run it once per server: `python -m flows.triggers` (flows.serve calls it at start).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Any

from prefect_micro_agents.adapter.links import V2_HOW_TO, run_page, ui_base_url
from prefect_micro_agents.adapter.recovery import EXHAUSTED_EVENT, ensure_recovery_automations

__all__ = [
    "AUTOMATION_NAME",
    "NOTIFY_BLOCK_ENV",
    "NOTIFY_WEBHOOK_ENV",
    "PIPELINE_ENTRYPOINT",
    "PREFECT_FILE",
    "SUSPENDED_EVENT",
    "WEBHOOK_BLOCK_NAME",
    "TriggerConfigError",
    "describe",
    "ensure_approval_automation",
    "ensure_automations",
    "notification_summary",
    "pipeline_spec",
    "recovery_summary",
    "schedules_of",
    "triggers_of",
]

PREFECT_FILE = Path(__file__).resolve().parent.parent / "deployments" / "prefect.yaml"
PIPELINE_ENTRYPOINT = "flows/deploy_pipeline.py:deploy_pipeline"
SUSPENDED_EVENT = "prefect.flow-run.Suspended"
AUTOMATION_NAME = "microagents: tell approvers"
WEBHOOK_BLOCK_NAME = "microagents-approvers"
NOTIFY_BLOCK_ENV = "AGENT_NOTIFY_BLOCK"
NOTIFY_WEBHOOK_ENV = "AGENT_NOTIFY_WEBHOOK_URL"


class TriggerConfigError(ValueError):
    """deployments/prefect.yaml or the notification settings are not usable; the message says what to change."""


# -- the deployment definition -------------------------------------------------------------------------------------


def pipeline_spec(prefect_file: str | Path = PREFECT_FILE, entrypoint: str = PIPELINE_ENTRYPOINT) -> dict[str, Any]:
    """The deployment entry of `prefect_file` whose entrypoint is the pipeline, with `{{ $VAR }}` placeholders
    filled from the environment exactly as `prefect deploy` fills them (unset ones are left as they are)."""
    import yaml
    from prefect.utilities.templating import apply_values

    path = Path(prefect_file)
    try:
        loaded = yaml.safe_load(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise TriggerConfigError(f"{path} not found: the pipeline's schedule and trigger are defined there") from None
    except yaml.YAMLError as exc:
        raise TriggerConfigError(f"{path} is not valid YAML: {exc}") from None
    found = [d for d in (loaded or {}).get("deployments") or [] if d.get("entrypoint") == entrypoint]
    if len(found) != 1:
        raise TriggerConfigError(f"{path} must declare exactly one deployment with entrypoint {entrypoint} "
                                 f"(found {len(found)})")
    return apply_values(found[0], dict(os.environ), remove_notset=False)


def schedules_of(spec: dict[str, Any], active: bool = True) -> list[Any]:
    """The spec's `schedules:` as `prefect.schedules.Schedule` objects (cron, interval or rrule, with their
    timezone, slug and parameters); `active=False` keeps them but switched off (e.g. `flows.serve --no-schedule`)."""
    from datetime import timedelta

    from prefect.schedules import Schedule

    made = []
    for raw in spec.get("schedules") or []:
        kinds = [k for k in ("cron", "interval", "rrule") if raw.get(k)]
        if len(kinds) != 1:
            raise TriggerConfigError(f"a schedule needs exactly one of cron, interval or rrule: {raw}")
        kind = kinds[0]
        value = timedelta(seconds=raw[kind]) if kind == "interval" and isinstance(raw[kind], int | float) else raw[kind]
        options = {k: raw[k] for k in ("timezone", "day_or", "slug") if raw.get(k) is not None}
        made.append(Schedule(**{kind: value}, **options, parameters=dict(raw.get("parameters") or {}),
                             active=bool(raw.get("active", True)) and active))
    return made


def triggers_of(spec: dict[str, Any], deployment_name: str) -> list[Any]:
    """The spec's `triggers:` as Prefect deployment triggers, validated and named as `prefect deploy` does
    (`<deployment>__automation_<n>` unless the entry has a name)."""
    from pydantic import TypeAdapter, ValidationError
    from prefect.events import DeploymentTriggerTypes

    adapter: TypeAdapter[Any] = TypeAdapter(DeploymentTriggerTypes)
    made = []
    for i, raw in enumerate(spec.get("triggers") or [], start=1):
        entry = {"name": f"{deployment_name}__automation_{i}", **raw}
        try:
            made.append(adapter.validate_python(entry))
        except ValidationError as exc:
            raise TriggerConfigError(f"trigger {i} of the pipeline deployment is invalid: {exc}") from None
    return made


def describe(flow_name: str, deployment_name: str, schedules: list[Any], triggers: list[Any]) -> str:
    """One line: `serving deploy-pipeline/local: cron 0 2 * * * UTC (sha=latest-tag:v*), trigger git.push on main`."""
    parts = []
    for s in schedules:
        when = f"cron {s.cron}" if s.cron else f"interval {s.interval}" if s.interval else f"rrule {s.rrule}"
        detail = ", ".join(f"{k}={v}" for k, v in s.parameters.items() if k == "sha") or ""
        state = "" if s.active else ", inactive"
        parts.append(f"{when} {s.timezone or 'UTC'} ({detail}{state})" if detail or state else
                     f"{when} {s.timezone or 'UTC'}")
    for t in triggers:
        expect = ", ".join(sorted(getattr(t, "expect", None) or [])) or "any event"
        match = getattr(t, "match", None)
        labels = dict(getattr(match, "root", match) or {})  # a ResourceSpecification (a pydantic RootModel)
        branch = labels.pop("git.branch", None)
        labels.pop("prefect.resource.id", None)
        where = f" on {branch}" if branch else ""
        extra = "".join(f", {k}={v}" for k, v in labels.items())
        parts.append(f"trigger {expect}{where}{extra}" + ("" if getattr(t, "enabled", True) else " (disabled)"))
    return f"{flow_name}/{deployment_name}: " + (", ".join(parts) if parts else "no schedule, no trigger")


# -- telling approvers -----------------------------------------------------------------------------------------------


def _message(ui: str | None) -> tuple[str, str, str]:
    """Subject, body (notification blocks) and JSON payload (webhook) templates, rendered by the server's Jinja."""
    link = run_page(ui, "{{ flow_run.id }}") if ui else "{{ flow_run|ui_url }}"
    # Single quotes: the webhook payload is JSON text, where a double quote would be escaped (\") and Jinja, which the
    # server runs over that text, cannot parse an escaped quote.
    gave_up = f"{{% if event.event == '{EXHAUSTED_EVENT}' %}}"
    subject = gave_up + "Gave up after crashes: {% else %}Approval needed: {% endif %}{{ flow.name }}/{{ flow_run.name }}"
    body = (gave_up + "Flow run {{ flow.name }}/{{ flow_run.name }} ({{ flow_run.id }}) crashed on every attempt and "
            "was stopped: {{ event.payload.message }}\n{% else %}"
            "Flow run {{ flow.name }}/{{ flow_run.name }} ({{ flow_run.id }}) is waiting for a decision.\n"
            f"Open it in the Prefect UI ({V2_HOW_TO}): {link}\n"
            "Or from a shell: microagents show {{ flow_run.id }}, then microagents approve|reject {{ flow_run.id }}"
            "{% endif %}")
    fields = {
        "text": gave_up + "Gave up after crashes{% else %}Approval needed{% endif %}: {{ flow.name }}/"
                          "{{ flow_run.name }}: " + link,
        "event": "{{ event.event }}",
        "flow_run_id": "{{ flow_run.id }}",
        "flow_run_name": "{{ flow_run.name }}",
        "flow_name": "{{ flow.name }}",
        "deployment_name": "{{ deployment.name }}",
        "state": "{{ flow_run.state.name }}",
        "ui_url": link,
        "cli": "microagents show {{ flow_run.id }}",
    }
    return subject, body, json.dumps(fields, indent=1)


def _block_id(client: Any, ref: str) -> Any:
    from prefect.exceptions import ObjectNotFound

    slug, sep, name = ref.partition("/")
    if not sep or not slug or not name:
        raise TriggerConfigError(f"{NOTIFY_BLOCK_ENV}={ref!r}: use <block-type-slug>/<block-name>, e.g. "
                                 "slack-webhook/approvers")
    try:
        return client.read_block_document_by_name(name=name, block_type_slug=slug).id
    except ObjectNotFound:
        raise TriggerConfigError(f"{NOTIFY_BLOCK_ENV}={ref!r}: no {slug} block named {name!r} on this server; "
                                 "create it in the UI (Blocks) or in Python, e.g. "
                                 f"SlackWebhook(url=...).save({name!r})") from None


def _webhook_block_id(url: str) -> Any:
    if not url.startswith(("http://", "https://")):
        raise TriggerConfigError(f"{NOTIFY_WEBHOOK_ENV}={url!r} is not an http(s) URL")
    from prefect.blocks.webhook import Webhook

    block = Webhook(method="POST", url=url, headers={"Content-Type": "application/json"})
    return block.save(WEBHOOK_BLOCK_NAME, overwrite=True)


def ensure_approval_automation(
    block: str | None = None,
    webhook_url: str | None = None,
    *,
    name: str = AUTOMATION_NAME,
    flow_names: list[str] | None = None,
    ui_url: str | None = None,
) -> Any | None:
    """Create or update the automation `name`: when a flow run enters Suspended, send the approval notice through
    the notification block `block` ($AGENT_NOTIFY_BLOCK) and/or POST it as JSON to `webhook_url`
    ($AGENT_NOTIFY_WEBHOOK_URL). Only runs of `flow_names` if given. Returns the automation. Idempotent: calling
    it again updates the automation in place. When neither is configured it creates and changes nothing, and returns
    the automation of that name a previous configuration left on the server (None if there is none)."""
    from prefect.client.orchestration import get_client

    block = (block if block is not None else os.environ.get(NOTIFY_BLOCK_ENV, "")).strip()
    webhook_url = (webhook_url if webhook_url is not None else os.environ.get(NOTIFY_WEBHOOK_ENV, "")).strip()
    if not block and not webhook_url:
        with get_client(sync_client=True) as client:
            found = client.read_automations_by_name(name)
        return found[0] if found else None

    from prefect.events.actions import CallWebhook, SendNotification
    from prefect.events.schemas.automations import AutomationCore, EventTrigger, Posture

    subject, body, payload = _message(ui_url or ui_base_url())
    related = ([{"prefect.resource.role": "flow", "prefect.resource.name": list(flow_names)}] if flow_names else [])
    trigger = EventTrigger(expect={SUSPENDED_EVENT, EXHAUSTED_EVENT}, match={"prefect.resource.id": "prefect.flow-run.*"},
                           match_related=related, posture=Posture.Reactive, threshold=1)
    with get_client(sync_client=True) as client:
        actions: list[Any] = []
        if block:
            actions.append(SendNotification(block_document_id=_block_id(client, block), subject=subject, body=body))
        if webhook_url:
            actions.append(CallWebhook(block_document_id=_webhook_block_id(webhook_url), payload=payload))
        automation = AutomationCore(
            name=name, description="Tells approvers that a flow run waits for a decision (created by "
                                   "flows.triggers.ensure_approval_automation)",
            enabled=True, trigger=trigger, actions=actions)
        existing = client.read_automations_by_name(name)
        if existing:
            client.update_automation(existing[0].id, automation)
            for extra in existing[1:]:
                client.delete_automation(extra.id)
            automation_id = existing[0].id
        else:
            automation_id = client.create_automation(automation)
        return client.read_automation(automation_id)


def ensure_automations(block: str | None = None, webhook_url: str | None = None) -> tuple[Any | None, list[Any]]:
    """Everything the pipeline's deployments rely on, created or updated in one place: the automations that detect
    and retry a run whose worker died (always) and the one that tells approvers (when configured)."""
    recovery = ensure_recovery_automations()
    return ensure_approval_automation(block, webhook_url), recovery


def recovery_summary(automations: list[Any]) -> str:
    """A line for people: what happens when a worker dies."""
    from prefect_micro_agents.adapter.recovery import RECOVER_TAG, heartbeat_seconds, max_recoveries

    names = ", ".join(repr(a.name) for a in automations)
    return (f"recovery: runs tagged {RECOVER_TAG} heartbeat every {heartbeat_seconds()} s; without one for "
            f"{2 * heartbeat_seconds()} s they are marked Crashed and started again, at most {max_recoveries()} times "
            f"(automations {names})")


def notification_summary(automation: Any | None) -> str:
    """A line for people: where approval notices go."""
    if automation is None:
        return (f"approvers: no notification configured ({NOTIFY_BLOCK_ENV} / {NOTIFY_WEBHOOK_ENV} unset); "
                "waiting runs are listed by `microagents pending` and in the UI")
    kinds = ", ".join(a.type for a in automation.actions)
    state = "" if automation.enabled else " (disabled)"
    return f"approvers: automation {automation.name!r} ({kinds}) on {SUSPENDED_EVENT}{state}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m flows.triggers",
                                     description="Create or update the automations the pipeline relies on: "
                                                 "recovery of runs whose worker died, and telling approvers "
                                                 f"(from ${NOTIFY_BLOCK_ENV} / ${NOTIFY_WEBHOOK_ENV}).")
    parser.add_argument("--block", default=None, help=f"<block-type-slug>/<block-name> (default ${NOTIFY_BLOCK_ENV})")
    parser.add_argument("--webhook-url", default=None, help=f"URL to POST JSON to (default ${NOTIFY_WEBHOOK_ENV})")
    args = parser.parse_args(argv)
    try:
        automation, recovery = ensure_automations(args.block, args.webhook_url)
    except TriggerConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(recovery_summary(recovery))
    print(notification_summary(automation))
    return 0


if __name__ == "__main__":
    sys.exit(main())
