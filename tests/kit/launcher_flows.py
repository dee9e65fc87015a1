"""Flows the launcher tests run through prefect_micro_agents.launcher (tests/kit/test_launcher.py): each records, in
the file its `out` parameter names, what its process saw."""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

from prefect import flow


@flow(name="launcher-probe")
def probe(out: str) -> None:
    from prefect.settings import get_current_settings

    Path(out).write_text(json.dumps({
        "pid": os.getpid(), "ppid": os.getppid(), "cwd": os.getcwd(), "sys_path": sys.path,
        "marker": os.environ.get("LAUNCHER_MARKER"), "max_retries": get_current_settings().client.max_retries,
    }))
    print("the probe speaks on stdout")


@flow(name="launcher-sleeper")
def sleeper(out: str) -> None:
    Path(out).write_text(str(os.getpid()))
    time.sleep(300)
