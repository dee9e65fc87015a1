"""Issue 6 benchmark: fresh-machine timings of the README main command.

1. install: a clean clone, `python3 -m venv .venv && .venv/bin/pip install -q -e '.[local]'` (PyPI, pip's cache as it is);
2. main command to the UI answering, and to "ready" (fresh home: first migration included);
3. a push event to the first approval request, on the embedded defaults (offline model; no AGENT_MODEL).

Run: .venv/bin/python tests/benchmarks/bench_stack.py [--skip-install]
"""

from __future__ import annotations

import argparse
import os
import re
import signal
import subprocess
import tempfile
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[2]


def wait_for(log: Path, pattern: str, proc: subprocess.Popen[bytes], timeout: float = 600) -> re.Match[str]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = re.search(pattern, log.read_text(errors="replace"))
        if found:
            return found
        if proc.poll() is not None:
            raise RuntimeError(f"stack exited:\n{log.read_text()[-3000:]}")
        time.sleep(0.1)
    raise TimeoutError(pattern)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--skip-install", action="store_true", help="use this checkout's .venv instead of a clone")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        if args.skip_install:
            project, python = ROOT, ROOT / ".venv" / "bin" / "python"
        else:
            project = tmp / "clone"
            subprocess.run(["git", "clone", "-q", str(ROOT), str(project)], check=True)
            started = time.perf_counter()
            subprocess.run("python3 -m venv .venv && .venv/bin/pip install -q -e '.[local]'", shell=True, cwd=project,
                           check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            print(f"[install] venv + pip install -e '.[local]' in a clean clone: {time.perf_counter() - started:.1f} s")
            python = project / ".venv" / "bin" / "python"
        env = {k: v for k, v in os.environ.items() if not k.startswith(("PREFECT_", "AGENT_", "DEPLOY_"))}
        env["AGENT_MODEL_CACHE"] = str(tmp / "model-cache")  # a fresh machine assembles the GGUF too
        log = tmp / "stack.log"
        port = 4299
        started = time.perf_counter()
        with open(log, "w") as out:
            proc = subprocess.Popen([str(python), "-m", "deployments.local_stack", "--home", str(tmp / ".local"), "--port",
                                     str(port)], cwd=project, env=env, stdout=out, stderr=subprocess.STDOUT,
                                    start_new_session=True)
        try:
            ui = None
            while ui is None:
                try:
                    if httpx.get(f"http://127.0.0.1:{port}/", timeout=2, follow_redirects=True).status_code == 200:
                        ui = time.perf_counter() - started
                except httpx.HTTPError:
                    time.sleep(0.1)
                if proc.poll() is not None:
                    raise RuntimeError(log.read_text()[-3000:])
            sha = wait_for(log, r"microagents push --sha ([0-9a-f]{40})", proc).group(1)
            ready = time.perf_counter() - started
            print(f"[stack] main command -> UI answering: {ui:.1f} s; -> ready (server, sample app, offline model, "
                  f"runner): {ready:.1f} s")
            pushed = time.perf_counter()
            subprocess.run([str(python), "-m", "prefect_micro_agents.cli", "push", "--sha", sha], cwd=project, check=True,
                           env={**env, "PREFECT_API_URL": f"http://127.0.0.1:{port}/api"}, stdout=subprocess.DEVNULL)
            line = wait_for(log, r"waiting for (approval|an answer): (.*)", proc).group(0)
            print(f"[push] push event -> first approval request: {time.perf_counter() - pushed:.1f} s (target <= 30 s): "
                  f"{line.strip()}")
        finally:
            os.kill(proc.pid, signal.SIGINT)
            proc.wait(120)
        print("[stack] log timeline:")
        for ln in log.read_text().splitlines():
            if ln.startswith("[stack"):
                print("   ", ln)


if __name__ == "__main__":
    main()
