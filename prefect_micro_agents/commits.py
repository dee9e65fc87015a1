"""Git commit ids as agents see them: full or abbreviated (git shows 7-12 characters), compared by prefix."""

from __future__ import annotations

import re

__all__ = ["SHA_RE", "is_sha", "same_commit"]

SHA_RE = re.compile(r"^[0-9a-f]{7,40}$")


def is_sha(value: object) -> bool:
    return isinstance(value, str) and bool(SHA_RE.match(value.lower()))


def same_commit(a: object, b: object) -> bool:
    """Equal SHAs, either possibly abbreviated."""
    if not (is_sha(a) and is_sha(b)):
        return False
    a, b = str(a).lower(), str(b).lower()
    return a.startswith(b) or b.startswith(a)
