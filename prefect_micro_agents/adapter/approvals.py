"""Approve, reject and answer suspended agent runs through the same REST endpoint the Prefect UI uses.

httpx only (no `import prefect`), so the CLI answers in a fraction of a second. Settings come from the same
environment variables Prefect uses: PREFECT_API_URL and, for a server with basic auth, PREFECT_API_AUTH_STRING.
"""

from __future__ import annotations

import json
import os
import time
import dataclasses
from dataclasses import dataclass
from typing import Any

import httpx

from prefect_micro_agents.adapter.forms import form_digest
from prefect_micro_agents.errors import AgentError, ConfigurationError

__all__ = ["ApprovalsClient", "PendingRequest", "ResumeRefused"]

_RETRY_STATUSES = {502, 503, 504}  # SQLite-backed servers answer 503 on a locked database; it passes


class ResumeRefused(AgentError):
    """The server (or the binding check) refused the answer; the run stays as it was."""


@dataclass(frozen=True)
class PendingRequest:
    run_id: str
    run_name: str
    flow_name: str
    kind: str  # "approval" | "question"
    key: str
    description: str
    proposal_digest: str
    field: str  # the form's answer field, named after the digest: the server refuses an answer without it
    expires_at: str | None
    may_approve: tuple[str, ...] | None = None  # under an approval policy naming people: who may still approve
    editable: dict[str, Any] = dataclasses.field(default_factory=dict)  # arguments an approver may edit -> the proposed value
    signable: bool = False  # the form takes a signature (`approve --sign`)
    signed_only: bool = False  # only signed approvals count

    def as_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


class ApprovalsClient:
    def __init__(self, api_url: str | None = None, auth_string: str | None = None, timeout: float = 30.0) -> None:
        url = api_url or os.environ.get("PREFECT_API_URL")
        if not url:
            raise ConfigurationError("no Prefect server: set PREFECT_API_URL (e.g. http://127.0.0.1:4200/api)")
        auth = auth_string if auth_string is not None else os.environ.get("PREFECT_API_AUTH_STRING")
        basic = tuple(auth.split(":", 1)) if auth else None
        if auth and len(basic or ()) != 2:
            raise ConfigurationError("PREFECT_API_AUTH_STRING must look like user:password")
        self.http = httpx.Client(base_url=url.rstrip("/"), auth=basic, timeout=timeout, trust_env=False)  # type: ignore[arg-type]

    def close(self) -> None:
        self.http.close()

    def __enter__(self) -> ApprovalsClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def request(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        """One API call with the server's transient 50x retried and a 401 turned into a clear error."""
        for attempt in range(6):
            response = self.http.request(method, path, **kwargs)
            if response.status_code not in _RETRY_STATUSES:
                break
            time.sleep(0.25 * 2**attempt)
        if response.status_code == 401:
            raise ConfigurationError("the Prefect server refused our credentials: set PREFECT_API_AUTH_STRING=user:password")
        return response

    def pending(self) -> list[PendingRequest]:
        """Every suspended run that waits for an approval or an answer, oldest first."""
        body = {"flow_runs": {"state": {"type": {"any_": ["PAUSED"]}}}, "sort": "START_TIME_ASC", "limit": 200}
        response = self.request("POST", "/flow_runs/filter", json=body)
        response.raise_for_status()
        found = []
        for run in response.json():
            request = self._pending_of(run)
            if request is not None:
                found.append(request)
        return found

    def show(self, run_id: str) -> PendingRequest:
        response = self.request("GET", f"/flow_runs/{run_id}")
        if response.status_code == 404:
            raise ResumeRefused(f"no flow run {run_id}")
        response.raise_for_status()
        run = response.json()
        request = self._pending_of(run)
        if request is None:
            state = run.get("state") or {}
            raise ResumeRefused(f"flow run {run_id} is not waiting for a decision (state: {state.get('name')}"
                                + (f": {state['message']}" if state.get("message") else "") + ")")
        return request

    def _pending_of(self, run: dict[str, Any]) -> PendingRequest | None:
        state = run.get("state") or {}
        details = state.get("state_details") or {}
        keyset = details.get("run_input_keyset") or {}
        key = details.get("pause_key") or ""
        if state.get("type") != "PAUSED" or not keyset or not key.startswith(("approve-", "answer-")):
            return None
        description = self._input(run["id"], keyset["description"]) or ""
        schema = self._input(run["id"], keyset["schema"]) or {}
        bound = form_digest(schema) if isinstance(schema, dict) else None
        if bound is None or not description:
            return None  # Prefect sets Suspended before it stores the form: not answerable yet
        field, digest = bound
        flow = self.request("GET", f"/flows/{run['flow_id']}").json().get("name", "")
        from prefect_micro_agents.adapter.expiry import deadline_key  # no Prefect import: the CLI stays light

        # The deadline the approval policy set (adapter/expiry.py), not Prefect's pause timeout, which under
        # on_expiry=reject is later by a grace period.
        recorded = self._input(run["id"], deadline_key(key))
        expires = recorded["at"] if isinstance(recorded, dict) and recorded.get("at") else details.get("pause_timeout")
        return PendingRequest(run_id=run["id"], run_name=run.get("name", ""), flow_name=flow,
                              kind="approval" if key.startswith("approve-") else "question", key=key,
                              description=description, proposal_digest=digest, field=field,
                              expires_at=expires, may_approve=_approver_choices(schema),
                              editable=_editable(schema), signable="signature" in (schema.get("properties") or {}),
                              signed_only="Required:" in str(
                                  ((schema.get("properties") or {}).get("signature") or {}).get("description", "")))

    def _input(self, run_id: str, key: str) -> Any:
        response = self.request("GET", f"/flow_runs/{run_id}/input/{key}")
        if response.status_code == 404:
            return None
        response.raise_for_status()
        value = response.json()
        return json.loads(value) if isinstance(value, str) and value[:1] in "{[" else value

    def approve(self, run_id: str, approver: str, feedback: str = "", digest: str | None = None,
                edits: dict[str, Any] | None = None, sign_with: str | None = None) -> PendingRequest:
        """Approve what the run waits on now (or, with `digest`, only if it still waits on that proposal); `edits`:
        new values for arguments its policy lets an approver change; `sign_with`: an SSH key file to sign the
        decision with (prefect_micro_agents.signing)."""
        return self._decide(run_id, "approve", approver, feedback, digest, edits or {}, sign_with)

    def reject(self, run_id: str, approver: str, feedback: str, digest: str | None = None,
               sign_with: str | None = None) -> PendingRequest:
        return self._decide(run_id, "reject", approver, feedback, digest, {}, sign_with)

    def _decide(self, run_id: str, decision: str, approver: str, feedback: str, digest: str | None,
                edits: dict[str, Any], sign_with: str | None) -> PendingRequest:
        from prefect_micro_agents.adapter.forms import ARG_PREFIX
        from prefect_micro_agents.thread import canonical_json

        current = self.show(run_id)
        if current.kind != "approval":
            raise ResumeRefused(f"flow run {run_id} asks a question; answer it instead")
        _check_digest(digest, current)
        if current.may_approve is not None and approver not in current.may_approve:
            # The server would refuse it too (the form's approver field lists them); say why in our words.
            raise ResumeRefused(f"{approver!r} may not decide on this call: its approval policy leaves "
                                f"{', '.join(current.may_approve)} (pass --as with your name; `show` says who "
                                "approved so far)")
        refused = sorted(set(edits) - set(current.editable))
        if refused:  # the server would refuse them too: the form has no field for them
            raise ResumeRefused(f"this call does not let an approver change {', '.join(refused)} ("
                                + (f"editable: {', '.join(current.editable)})" if current.editable else
                                   "its approval policy allows no edits)"))
        edits = {k: v for k, v in edits.items() if canonical_json(v) != canonical_json(current.editable[k])}
        run_input: dict[str, Any] = {current.field: decision, "feedback": feedback, "approver": approver,
                                     **{ARG_PREFIX + k: v for k, v in edits.items()}}
        if sign_with is not None:
            from prefect_micro_agents.signing import sign, signed_text

            if not current.signable:
                raise ResumeRefused("this run's approval form takes no signature: its tool's policy does not ask for "
                                    "signed approvals and no allowed-signers file is configured")
            run_input["signature"] = sign(signed_text(current.run_id, current.proposal_digest, decision, approver,
                                                      feedback, edits), sign_with)
        self.resume(run_id, run_input)
        return current

    def answer(self, run_id: str, answer: str, by: str, digest: str | None = None) -> PendingRequest:
        current = self.show(run_id)
        if current.kind != "question":
            raise ResumeRefused(f"flow run {run_id} waits for an approval, not an answer")
        _check_digest(digest, current)
        self.resume(run_id, {current.field: answer, "by": by})
        return current

    def resume(self, run_id: str, run_input: dict[str, Any]) -> None:
        """POST /flow_runs/{id}/resume, exactly what the UI sends; the server's refusal reason is raised as is."""
        response = self.request("POST", f"/flow_runs/{run_id}/resume", json={"run_input": run_input})
        if response.status_code == 409:
            raise ResumeRefused(self._lost_race(run_id, response))
        if response.status_code >= 400:
            raise ResumeRefused(f"server answered HTTP {response.status_code}: {response.text[:300]}")
        result = response.json()
        if result.get("status") != "ACCEPT":
            reason = (result.get("details") or {}).get("reason") or result.get("status")
            raise ResumeRefused(f"server refused: {reason}")

    def _lost_race(self, run_id: str, response: httpx.Response) -> str:
        """Why a resume got 409. Two answers to one request at once (two people, two tabs) both try to store their
        answer under the request's key; on a Postgres-backed server the later insert hits the unique key and the
        server answers 409 "Data integrity conflict". The other answer is the one stored; this one was not."""
        current = self.request("GET", f"/flow_runs/{run_id}")
        state = (current.json().get("state") or {}) if current.status_code == 200 else {}
        where = state.get("name") or state.get("type") or "unknown"
        return (f"another answer to this request was stored first, at the same moment; yours was not recorded "
                f"(server: HTTP 409 {response.text[:120]}). The run is now {where}: run `show` to see what it "
                "waits for")


_MIN_DIGEST_PREFIX = 8


def _approver_choices(schema: dict[str, Any]) -> tuple[str, ...] | None:
    """The people an approval form lets approve (its approver field's choices), or None when anyone may."""
    prop = (schema.get("properties") or {}).get("approver")
    if not isinstance(prop, dict):
        return None
    if "$ref" in prop:  # pydantic puts a Literal with several values in $defs
        prop = (schema.get("definitions") or schema.get("$defs") or {}).get(prop["$ref"].rsplit("/", 1)[-1], {})
    choices = prop.get("enum") or ([prop["const"]] if "const" in prop else None)
    return tuple(str(c) for c in choices) if choices else None


def _editable(schema: dict[str, Any]) -> dict[str, Any]:
    """The arguments an approval form lets an approver edit, with the proposed values (the fields' defaults)."""
    from prefect_micro_agents.adapter.forms import ARG_PREFIX

    return {name[len(ARG_PREFIX):]: prop.get("default") for name, prop in (schema.get("properties") or {}).items()
            if name.startswith(ARG_PREFIX) and isinstance(prop, dict)}


def _check_digest(digest: str | None, current: PendingRequest) -> None:
    """A decision made on what `show` printed must not land on a proposal that replaced it in the meantime."""
    if digest is None:
        return
    digest = digest.strip().lower()
    if len(digest) < _MIN_DIGEST_PREFIX or any(c not in "0123456789abcdef" for c in digest):
        raise ResumeRefused(f"--digest {digest!r}: give at least {_MIN_DIGEST_PREFIX} hex characters of the digest "
                            "that `show` prints")
    if not current.proposal_digest.startswith(digest):
        raise ResumeRefused(f"stale decision: you decided on proposal digest {digest[:12]}, but the run now "
                            f"waits on {current.proposal_digest[:12]}; run `show` again and decide on what it shows")
