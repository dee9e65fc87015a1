"""The sample app's end-to-end suite: real HTTP checks against one environment's backend and frontend."""

from __future__ import annotations

from collections.abc import Callable

from flows.targets.base import E2ECheck, E2EReport, utcnow
from flows.targets.httpget import HttpAnswer, http_get

__all__ = ["run_http_e2e"]


def _check(name: str, url: str, judge: Callable[[HttpAnswer], tuple[bool, str]], timeout: float) -> E2ECheck:
    answer = http_get(url, timeout=timeout)
    ok, detail = judge(answer) if answer.status else (False, answer.describe())
    return E2ECheck(name=name, ok=ok, detail=f"GET {url}: {detail}", duration_ms=round(answer.duration_ms, 2))


def _health(answer: HttpAnswer) -> tuple[bool, str]:
    body = answer.json()
    ok = answer.status == 200 and isinstance(body, dict) and body.get("status") == "ok"
    return ok, answer.describe()


def _version(answer: HttpAnswer) -> tuple[bool, str]:
    body = answer.json()
    ok = answer.status == 200 and isinstance(body, dict) and isinstance(body.get("api"), int) and bool(body.get("sha"))
    return ok, answer.describe()


def _compatible(answer: HttpAnswer) -> tuple[bool, str]:
    body = answer.json()
    if answer.status != 200 or not isinstance(body, dict):
        return False, answer.describe()
    ok = body.get("backend_compatible") is True
    detail = (f"backend compatible: {'yes' if ok else 'no'} (frontend {str(body.get('sha'))[:12]} requires api "
              f"{body.get('requires_backend_api')}, backend {str(body.get('backend_sha'))[:12]} has api "
              f"{body.get('backend_api')})")
    if body.get("backend_error"):
        detail += f"; backend error: {body['backend_error']}"
    return ok, detail


def run_http_e2e(target: str, env: str, backend_url: str, frontend_url: str, timeout: float = 3.0) -> E2EReport:
    """Check backend health and version, frontend health, and that the frontend finds its backend compatible."""
    started = utcnow()
    checks = [
        _check("backend_health", f"{backend_url}/health", _health, timeout),
        _check("backend_version", f"{backend_url}/api/version", _version, timeout),
        _check("frontend_health", f"{frontend_url}/health", _health, timeout),
        _check("frontend_backend_compatible", f"{frontend_url}/api/status", _compatible, timeout),
    ]
    return E2EReport.from_checks(target, env, checks, started)
