"""Keep secrets out of prompts, threads, artifacts and logs: find them, and redact them wherever text leaves."""

from __future__ import annotations

import os
import re
from collections.abc import Iterable, Mapping
from typing import Any

__all__ = ["redact", "redact_data", "register_secret", "secret_values"]

_SECRET_NAME = re.compile(r"KEY|TOKEN|SECRET|PASSWORD|PASSWD|CREDENTIAL|AUTH", re.IGNORECASE)
_MIN_LENGTH = 8  # shorter values are too likely to appear innocently (and too weak to be real secrets)
_registered: dict[str, str] = {}


def register_secret(name: str, value: str) -> None:
    """Declare a secret that does not live in an environment variable (read from a file or a vault)."""
    if len(value) >= _MIN_LENGTH:
        _registered[name] = value


def secret_values(environ: Mapping[str, str] | None = None) -> list[tuple[str, str]]:
    """(name, value) of every registered secret and every secret-looking environment variable, longest first."""
    env = os.environ if environ is None else environ
    found = dict(_registered)
    for name, value in env.items():
        if _SECRET_NAME.search(name) and len(value) >= _MIN_LENGTH and not _is_plain(value):
            found.setdefault(name, value)
    return sorted(found.items(), key=lambda item: -len(item[1]))


def _is_plain(value: str) -> bool:
    return value.lower() in {"true", "false", "none", "null"} or value.replace(".", "").isdigit()


def redact(text: str, secrets: Iterable[tuple[str, str]] | None = None) -> str:
    for name, value in secret_values() if secrets is None else secrets:
        if value in text:
            text = text.replace(value, f"[redacted:{name}]")
    return text


def redact_data(value: Any, secrets: list[tuple[str, str]] | None = None) -> Any:
    """Redact every string inside a JSON-like value (dict keys included)."""
    secrets = secret_values() if secrets is None else secrets
    if isinstance(value, str):
        return redact(value, secrets)
    if isinstance(value, dict):
        return {redact(str(k), secrets): redact_data(v, secrets) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [redact_data(v, secrets) for v in value]
    return value
