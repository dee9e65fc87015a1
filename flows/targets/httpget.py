"""Tiny proxy-free HTTP GET for loopback health and e2e checks (stdlib only, so the layer has no HTTP dependency)."""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
from typing import Any

__all__ = ["HttpAnswer", "http_get"]

_OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))


class HttpAnswer:
    """Status, body and timing of one GET; `status` 0 means no HTTP answer (see `error`)."""

    __slots__ = ("status", "body", "error", "duration_ms")

    def __init__(self, status: int, body: str, error: str, duration_ms: float) -> None:
        self.status, self.body, self.error, self.duration_ms = status, body, error, duration_ms

    def json(self) -> Any:
        """Body parsed as JSON, or None if it is not JSON."""
        try:
            return json.loads(self.body)
        except ValueError:
            return None

    def describe(self, limit: int = 300) -> str:
        """One-line summary for reports."""
        if self.status == 0:
            return f"no answer: {self.error}"
        body = self.body if len(self.body) <= limit else self.body[:limit] + "..."
        return f"HTTP {self.status}: {body}"


def http_get(url: str, timeout: float = 2.0) -> HttpAnswer:
    """GET `url` without proxies; never raises for network or HTTP errors."""
    start = time.monotonic()
    status, body, error = 0, "", ""
    try:
        with _OPENER.open(url, timeout=timeout) as resp:
            status, body = resp.status, resp.read().decode("utf-8", errors="replace")
    except urllib.error.HTTPError as exc:
        with exc:
            status, body = exc.code, exc.read().decode("utf-8", errors="replace")
    except (OSError, ValueError) as exc:
        error = f"{type(exc).__name__}: {exc}"
    return HttpAnswer(status, body, error, (time.monotonic() - start) * 1000)
