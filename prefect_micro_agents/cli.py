"""`microagents`: list, show, approve, reject and answer suspended agent runs (Prefect 3 has no resume command),
`runs`: list runs that are stuck, crashed, recovering or gave up, with what they executed (prefect_micro_agents.adapter.troubled),
`audit`: export the audit trail, every decision with who, when, the digest and what ran, as JSON lines
(prefect_micro_agents.audit, read from the runs' audit artifacts), and `push`: emit the `git.push` event that starts the deploy pipeline (prefect_micro_agents.events; a git hook calls it)."""

from __future__ import annotations

import argparse
import getpass
import json
import sys
from datetime import datetime

from prefect_micro_agents.adapter.approvals import ApprovalsClient, PendingRequest, ResumeRefused
from prefect_micro_agents.errors import AgentError, ConfigurationError

__all__ = ["main"]


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="microagents",
        description="Decide on agent proposals waiting in a Prefect server, or emit a push event "
                    "(PREFECT_API_URL, PREFECT_API_AUTH_STRING).",
    )
    parser.add_argument("--api-url", help="Prefect API URL (default: $PREFECT_API_URL)")
    sub = parser.add_subparsers(dest="command", required=True)
    pending = sub.add_parser("pending", help="list runs waiting for an approval or an answer")
    pending.add_argument("--json", action="store_true", help="machine-readable output")
    show = sub.add_parser("show", help="show what one run waits for (the proposal and its context)")
    show.add_argument("run_id")
    show.add_argument("--json", action="store_true")
    for name, text in (("approve", "approve the pending proposal: it runs once"),
                       ("reject", "reject it; your feedback goes back to the agent")):
        cmd = sub.add_parser(name, help=text)
        cmd.add_argument("run_id")
        cmd.add_argument("--feedback", "-f", default="", required=name == "reject")
        cmd.add_argument("--as", dest="who", default=None, help="your name, recorded with the decision")
        cmd.add_argument("--digest", help="only decide if the run still waits on the proposal with this digest (at "
                                          "least 8 hex characters, as `show` prints them); without it, the decision "
                                          "applies to whatever the run waits on at this moment")
        cmd.add_argument("--sign", metavar="KEY", default=None,
                         help="sign the decision with this SSH key (e.g. ~/.ssh/id_ed25519, or its .pub when the key "
                              "is in ssh-agent): `ssh-keygen -Y sign`; the flow verifies it against the team's "
                              "allowed-signers file, as the name given with --as")
        if name == "approve":
            cmd.add_argument("--edit", metavar="NAME=VALUE", action="append", default=[],
                             help="approve with this argument changed (repeatable; VALUE is JSON, or text): only "
                                  "arguments the tool's approval policy lists as editable; `show` lists them")
    answer = sub.add_parser("answer", help="answer an agent's question")
    answer.add_argument("run_id")
    answer.add_argument("text", help="your answer (quote it)")
    answer.add_argument("--as", dest="who", default=None, help="your name, recorded with the answer")
    answer.add_argument("--digest", help="only answer if the run still asks the question with this digest")
    runs = sub.add_parser("runs", help="list runs that are stuck, crashed, recovering or gave up, with what each "
                                       "already executed",
                          description="Runs whose worker died (stuck: Running without heartbeats), that Prefect marked "
                                      "Crashed, that are starting again after a crash, or that gave up after the last "
                                      "allowed recovery (AGENT_MAX_RECOVERIES); each with its executed tool calls.")
    runs.add_argument("--hours", type=float, default=24.0,
                      help="also list crashed and given-up runs that ended this many hours ago (default: %(default)s)")
    runs.add_argument("--json", action="store_true", help="machine-readable output")
    audit = sub.add_parser(
        "audit", help="print every decision since a date as JSON lines: who, verified or not, when, the digest, the "
                      "decision, feedback, and what executed with its result",
        description="Print the audit trail as JSON lines, one decision (or answer) per line, oldest first, read from "
                    "the latest version of every run's audit artifact (audit-<agent>-<run id>). Fields: see "
                    "prefect_micro_agents.audit. Dates are ISO 8601: a date (midnight UTC) or a datetime (UTC "
                    "unless it names a zone).")
    audit.add_argument("--since", required=True, type=_when,
                       help="decisions made at or after this ISO date or datetime (e.g. 2026-11-26)")
    audit.add_argument("--until", type=_when, help="and before this one (default: no end)")
    audit.add_argument("--intent", help="only decisions on this tool (e.g. deploy_backend_to_prod)")
    audit.add_argument("--approver", help="only decisions by this person (case-insensitive)")
    push = sub.add_parser("push", help="emit a git.push event: the deploy pipeline's trigger starts a run for the SHA",
                          description="Emit a git.push event to the Prefect server. A deployment with the pipeline's "
                                      "trigger (deployments/prefect.yaml) starts a run for SHA when BRANCH is main.")
    push.add_argument("--sha", required=True, help="the commit SHA (or a tag) to deploy")
    push.add_argument("--branch", default="main", help="the branch pushed to (default: %(default)s)")
    push.add_argument("--repo", default="sample-app", help="repository name: resource git.repo.<repo> "
                                                           "(default: %(default)s)")
    push.add_argument("--pusher", default=None, help="who pushed (default: your login name)")
    return parser


def _when(text: str) -> datetime:
    from prefect_micro_agents.adapter.audit_export import parse_when

    try:
        return parse_when(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _audit(client: ApprovalsClient, args: argparse.Namespace) -> None:
    from prefect_micro_agents.adapter.audit_export import audit_trail

    if args.until is not None and args.until <= args.since:
        raise ConfigurationError(f"--until ({args.until.isoformat()}) must be after --since ({args.since.isoformat()})")
    for record in audit_trail(client, args.since, args.until, intent=args.intent, approver=args.approver):
        print(json.dumps(record, ensure_ascii=False))


def _title(req: PendingRequest) -> str:
    return next((ln.strip("# ").strip() for ln in req.description.splitlines() if ln.startswith("#")), req.key)


def _line(req: PendingRequest) -> str:
    return (f"{req.run_id}  {req.flow_name}/{req.run_name}  {req.kind:<8}  {_title(req)}  "
            f"(digest {req.proposal_digest[:12]}, expires {req.expires_at or 'never'})")


def _runs(client: ApprovalsClient, args: argparse.Namespace) -> None:
    from datetime import timedelta

    from prefect_micro_agents.adapter.troubled import troubled_runs

    if args.hours <= 0:
        raise ConfigurationError(f"--hours must be positive, not {args.hours}")
    found = troubled_runs(client, since=timedelta(hours=args.hours))
    if args.json:
        print(json.dumps([t.as_dict() for t in found], indent=1))
        return
    if not found:
        print("no run is stuck, crashed or recovering")
    for t in found:
        print(f"{t.run_id}  {t.name}  {t.status:<10}  {t.state} (attempt {t.attempt})  {t.why}")
        for name, state in t.executed or [("no tool call executed", "")]:
            print(f"    {name}{': ' + state if state else ''}")


def _options(req: PendingRequest) -> str:
    """What `approve` accepts beyond a decision: edits, a signature."""
    lines = []
    if req.editable:
        lines.append("editable (approve --edit NAME=VALUE): " + ", ".join(
            f"{k} (proposed {json.dumps(v)})" for k, v in req.editable.items()))
    if req.signable:
        lines.append("signatures (approve --sign KEY): " + ("required: an unsigned approval does not count"
                                                           if req.signed_only else "verified if given"))
    return "".join(f"{line}\n" for line in lines)


def _edits(pairs: list[str]) -> dict[str, object]:
    """`--edit NAME=VALUE` pairs: VALUE parsed as JSON when it is JSON (3, true, "x", [1]), else taken as text."""
    found: dict[str, object] = {}
    for pair in pairs:
        name, sep, value = pair.partition("=")
        if not sep or not name.strip():
            raise ConfigurationError(f"--edit {pair!r}: expected NAME=VALUE")
        try:
            found[name.strip()] = json.loads(value)
        except json.JSONDecodeError:
            found[name.strip()] = value
    return found


def _push(args: argparse.Namespace) -> None:
    from prefect_micro_agents.events import emit_push

    event = emit_push(args.sha, branch=args.branch, repo=args.repo, pusher=args.pusher, api_url=args.api_url)
    payload = event["payload"]
    print(f"{event['id']}  git.push {payload['repo']}@{payload['branch']} {payload['sha'][:12]} "
          f"by {payload['pusher']}")


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        if args.command == "push":
            _push(args)
            return 0
        with ApprovalsClient(api_url=args.api_url) as client:
            match args.command:
                case "runs":
                    _runs(client, args)
                case "audit":
                    _audit(client, args)
                case "pending":
                    found = client.pending()
                    if args.json:
                        print(json.dumps([r.as_dict() for r in found], indent=1))
                    else:
                        print("\n".join(_line(r) for r in found) if found else "nothing is waiting for a decision")
                case "show":
                    req = client.show(args.run_id)
                    print(json.dumps(req.as_dict(), indent=1) if args.json else f"{_line(req)}\n{_options(req)}\n"
                                                                               f"{req.description}")
                case "approve":
                    edits = _edits(args.edit)
                    req = client.approve(args.run_id, args.who or getpass.getuser(), args.feedback, args.digest,
                                         edits, args.sign)
                    print(f"approved {_title(req)} (digest {req.proposal_digest[:12]})"
                          + (f" with edits {json.dumps(edits, sort_keys=True)}" if edits else "")
                          + (", signed" if args.sign else "")
                          + f": flow run {args.run_id} resumes and runs the call once, when its approval policy "
                            "is met (`show` says who else must approve)")
                case "reject":
                    req = client.reject(args.run_id, args.who or getpass.getuser(), args.feedback, args.digest,
                                        args.sign)
                    print(f"rejected {_title(req)} (digest {req.proposal_digest[:12]}): flow run {args.run_id} "
                          "resumes; the agent sees your feedback")
                case "answer":
                    req = client.answer(args.run_id, args.text, args.who or getpass.getuser(), args.digest)
                    print(f"answered {_title(req)} (digest {req.proposal_digest[:12]}): flow run {args.run_id} "
                          "resumes with your answer")
    except ResumeRefused as exc:
        print(f"refused: {exc}", file=sys.stderr)
        return 2
    except AgentError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
