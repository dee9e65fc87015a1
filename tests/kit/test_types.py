"""The kit type-checks under `mypy --strict` (configuration: [tool.mypy] in pyproject.toml), as part of the tests.

mypy keeps its cache in .mypy_cache at the checkout's root: the first run checks prefect, pydantic and litellm too
(about half a minute on 2 cores), later runs take a second or two.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

_ERROR = re.compile(r"^(?P<path>[^:\s]+\.py):\d+(?::\d+)?: error: ", re.MULTILINE)


def test_the_kit_passes_mypy_strict() -> None:
    out = subprocess.run([sys.executable, "-m", "mypy"], cwd=ROOT, capture_output=True, text=True, timeout=600)
    report = out.stdout + out.stderr
    assert out.returncode in (0, 1), f"mypy did not run (exit {out.returncode}):\n{report}"
    assert "error: " not in report or _ERROR.search(report), f"mypy failed in a way this test cannot read:\n{report}"
    errors = [m.group(0) for m in _ERROR.finditer(report)]
    assert not errors, f"mypy --strict found {len(errors)} errors:\n{report}"
    assert out.returncode == 0, report
