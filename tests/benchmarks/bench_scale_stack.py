"""Issue 13 item 2 benchmark: the scale-out stack (prefect_micro_agents.testing.ScaleStack) on this machine.

Per round, a fresh run directory: time to start every part (and each part's share), resident memory of each part
(its whole process group: Postgres with its background processes, each worker with anything it started) after
`--idle` seconds with nothing to do, and time to stop all of it.

Run: .venv/bin/python tests/benchmarks/bench_scale_stack.py [--rounds 3] [--workers 2] [--idle 30]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

from prefect_micro_agents.testing import ScaleStack


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--idle", type=float, default=30.0, help="seconds idle before memory is read")
    args = parser.parse_args()
    starts: list[float] = []
    stops: list[float] = []
    memory: dict[str, list[float]] = {}
    parts: dict[str, list[float]] = {}
    for round_ in range(1, args.rounds + 1):
        with tempfile.TemporaryDirectory(prefix="bench-scale-") as tmp:
            stack = ScaleStack(Path(tmp) / "run", workers=args.workers, progress=None)
            began = time.monotonic()
            try:
                stack.start()
                starts.append(time.monotonic() - began)
                for name, seconds in stack.timings.items():
                    if name != "total":
                        parts.setdefault(name, []).append(seconds)
                time.sleep(args.idle)
                for name, mib in stack.rss_mib().items():
                    memory.setdefault(name, []).append(mib)
            finally:
                stopping = time.monotonic()
                stack.stop()
                stops.append(time.monotonic() - stopping)
        print(f"round {round_}: start {starts[-1]:.1f} s, stop {stops[-1]:.1f} s", flush=True)
    print(f"\nstart (all parts ready): median {statistics.median(starts):.1f} s "
          f"({min(starts):.1f}-{max(starts):.1f}); stop: median {statistics.median(stops):.1f} s "
          f"({min(stops):.1f}-{max(stops):.1f}); {args.rounds} rounds, {args.workers} workers")
    print("start, per part (median s): " + ", ".join(f"{n} {statistics.median(v):.1f}" for n, v in parts.items()))
    print(f"idle RSS after {args.idle:.0f} s (median MiB): " + ", ".join(
        f"{n} {statistics.median(v):.0f}" for n, v in memory.items())
          + f"; total {sum(statistics.median(v) for v in memory.values()):.0f}")


if __name__ == "__main__":
    main()
