"""Imported first by every benchmark script (they run as `python tests/benchmarks/<name>.py`, and the served
`bench_flows.py` as a file too): puts the checkout and tests/ at the front of sys.path. The deploy bot (agents/,
flows/) is not installed, it runs from the checkout, and OpenAI's `agents` (openai-agents, in the dev extra) would
otherwise be found first."""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path[:0] = [p for p in (str(ROOT), str(ROOT / "tests")) if p not in sys.path[:2]]
