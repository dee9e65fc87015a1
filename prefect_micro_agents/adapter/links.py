"""Where a human decides: the run's page in the Prefect UI, as every message of this project prints it.

Prefect 3.9 serves two UIs. The link we print opens the current one (`/v2/...`), where Resume is in the run page's
menu (button "Open menu" -> "Resume") and the form's button is "Resume"; that is what the README describes. The
runner's own "View at" line (Prefect's, not ours) opens the classic UI (`/runs/...`), where Resume is a button in
the page header and the form's button is "Submit". Both work (tests/kit/test_ui_approval.py uses each link as printed).
"""

from __future__ import annotations

import os

__all__ = ["V2_HOW_TO", "classic_run_page", "run_page", "ui_base_url"]

V2_HOW_TO = "menu: Resume"


def ui_base_url() -> str | None:
    """The UI's address for links: PREFECT_UI_URL, else PREFECT_API_URL without its `/api` suffix."""
    configured = os.environ.get("PREFECT_UI_URL", "").strip()
    if configured:
        return configured.rstrip("/")
    api = os.environ.get("PREFECT_API_URL", "").strip().rstrip("/")
    if not api:
        return None
    return api[: -len("/api")] if api.endswith("/api") else api


def run_page(ui: str, run_id: str) -> str:
    """The run's page in the current UI (what we print)."""
    return f"{ui.rstrip('/')}/v2/runs/flow-run/{run_id}"


def classic_run_page(ui: str, run_id: str) -> str:
    """The run's page in the classic UI (what Prefect's own log lines print)."""
    return f"{ui.rstrip('/')}/runs/flow-run/{run_id}"
