"""Emit events to a Prefect server through its REST API (`POST /api/events`), the way Prefect's own clients do.

httpx only, no `import prefect`, so a git hook or a CI step pays a fraction of a second. Settings come from the
variables Prefect uses: PREFECT_API_URL and, for a server with basic auth, PREFECT_API_AUTH_STRING; the server's
transient 50x answers are retried like the approvals client does, and a server that is not up yet is retried
briefly before giving up with a clear error.

A `git.push` event starts the deploy pipeline through the deployment's event trigger (deployments/prefect.yaml):

    microagents push --sha $(git rev-parse HEAD) --branch main --repo sample-app --pusher alice

The event: name `git.push`; resource {"prefect.resource.id": "git.repo.<repo>", "prefect.resource.name": <repo>,
"git.branch": <branch>}; payload {sha, branch, repo, pusher}. The trigger matches the branch label and passes
`event.payload.sha` and `event.payload.pusher` to the run.
"""

from __future__ import annotations

import getpass
import re
import time
import uuid
from datetime import UTC, datetime
from typing import Any

import httpx

from prefect_micro_agents.adapter.approvals import ApprovalsClient
from prefect_micro_agents.errors import ConfigurationError

__all__ = ["PUSH_EVENT", "emit_events", "emit_push", "push_event"]

PUSH_EVENT = "git.push"
_SHA = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._/-]{0,199}$")  # a SHA, or a tag/branch name the pipeline resolves
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$")
_BRANCH = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._/-]{0,199}$")
_CONNECT_ATTEMPTS = 4  # about 3 s in all: a server that is restarting gets a moment, a dead one fails soon


def push_event(sha: str, branch: str = "main", repo: str = "sample-app", pusher: str | None = None) -> dict[str, Any]:
    """The `git.push` event for one commit, as the JSON the events API takes (a fresh id, occurred = now)."""
    if not isinstance(sha, str) or not _SHA.match(sha) or ".." in sha:
        raise ConfigurationError(f"--sha {sha!r} is not a SHA, tag or branch name")
    if not _BRANCH.match(branch) or ".." in branch:
        raise ConfigurationError(f"--branch {branch!r} is not a branch name")
    if not _NAME.match(repo):
        raise ConfigurationError(f"--repo {repo!r}: use letters, digits, '.', '_' and '-' (it becomes git.repo.<repo>)")
    who = (pusher or "").strip() or getpass.getuser()
    return {
        "id": str(uuid.uuid4()),
        "occurred": datetime.now(UTC).isoformat(),
        "event": PUSH_EVENT,
        "resource": {"prefect.resource.id": f"git.repo.{repo}", "prefect.resource.name": repo, "git.branch": branch},
        "related": [],
        "payload": {"sha": sha, "branch": branch, "repo": repo, "pusher": who},
    }


def emit_events(events: list[dict[str, Any]], api_url: str | None = None, auth_string: str | None = None,
                timeout: float = 10.0) -> None:
    """POST the events to `{PREFECT_API_URL}/events`; ConfigurationError if the server is unreachable or refuses."""
    with ApprovalsClient(api_url=api_url, auth_string=auth_string, timeout=timeout) as client:
        base = str(client.http.base_url)
        for attempt in range(_CONNECT_ATTEMPTS):
            try:
                response = client.request("POST", "/events", json=events)  # retries the server's 502/503/504
                break
            except httpx.ConnectError as exc:  # nothing was sent: safe to try again
                if attempt == _CONNECT_ATTEMPTS - 1:
                    raise ConfigurationError(f"cannot reach the Prefect server at {base}: {exc}; is it running? "
                                             "(PREFECT_API_URL)") from None
                time.sleep(0.4 * 2**attempt)
            except httpx.HTTPError as exc:
                raise ConfigurationError(f"sending events to {base} failed: {type(exc).__name__}: {exc}") from None
        if response.status_code >= 400:
            raise ConfigurationError(f"the Prefect server refused the events: HTTP {response.status_code}: "
                                     f"{response.text[:300]}")


def emit_push(sha: str, branch: str = "main", repo: str = "sample-app", pusher: str | None = None,
              api_url: str | None = None, auth_string: str | None = None) -> dict[str, Any]:
    """Emit one `git.push` event; returns it (its `id` is what the server stored)."""
    event = push_event(sha, branch=branch, repo=repo, pusher=pusher)
    emit_events([event], api_url=api_url, auth_string=auth_string)
    return event
