"""A scripted model reply for any agent: `call(intent, **args)`."""

from __future__ import annotations

from typing import Any

__all__ = ["call"]


def call(intent: str, **args: str) -> dict[str, Any]:
    return {"call": {"intent": intent, **args}}
