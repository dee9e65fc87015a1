"""The kit as a user gets it: the wheel, installed (not editable) in a fresh virtual environment beside OpenAI's
`agents` package (openai-agents), running the README's own micro-agent (examples/access_request.py) from outside
the checkout.

No network: the wheel is built from a copy of the sources with the build backend already installed (the dev extra
brings setuptools and wheel), and only our wheel goes into the fresh venv (`--no-deps --no-index`). Its
dependencies come from this test run's venv through a `.pth` line naming that venv's site-packages: a directory
added that way is put on sys.path but its own `.pth` files are not run, so the editable install's finder (which maps
`prefect_micro_agents` to the checkout) stays off, and the checkout itself is never on the path.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import sysconfig
import time
import tomllib
import zipfile
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from prefect_micro_agents.testing.scripted import ScriptedModel
from prefect_harness import Served, flow_state, lines, next_pause, wait_state

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "examples"
DIST = "prefect_micro_agents"


@dataclass(frozen=True)
class Installed:
    wheel: Path
    venv: Path
    site: Path  # the fresh venv's site-packages
    outside: Path  # a working directory outside the checkout

    @property
    def python(self) -> str:
        return str(self.venv / "bin" / "python")

    def run(self, *argv: str, env: dict[str, str] | None = None, timeout: float = 120) -> subprocess.CompletedProcess[str]:
        return subprocess.run(argv, cwd=self.outside, env=env or clean_env(), capture_output=True, text=True,
                              timeout=timeout, check=False)


def clean_env() -> dict[str, str]:
    """The test's environment without anything that would put the checkout or another venv on the path."""
    return {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV", "PYTHONHOME", "AGENT_MODEL")}


def _pip(*args: str, cwd: Path) -> None:
    done = subprocess.run([sys.executable, "-m", "pip", "--disable-pip-version-check", *args], cwd=cwd,
                          env=clean_env(), capture_output=True, text=True, timeout=300, check=False)
    assert done.returncode == 0, done.stdout + done.stderr


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Installed:
    base = tmp_path_factory.mktemp("packaging")
    # Built from a copy: pip builds in the source tree, and setuptools' build/ there would outlive removed files.
    src = base / "src"
    src.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(ROOT / name, src / name)
    shutil.copytree(ROOT / DIST, src / DIST, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    _pip("wheel", "--no-deps", "--no-build-isolation", "--no-index", "-q", "-w", str(base / "dist"), str(src), cwd=base)
    [wheel] = (base / "dist").glob("*.whl")

    venv = base / "fresh-venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True, timeout=120)
    _pip("--python", str(venv / "bin" / "python"), "install", "--no-deps", "--no-index", "-q", str(wheel), cwd=base)
    site = Path(subprocess.run([str(venv / "bin" / "python"), "-c", "import sysconfig; print(sysconfig.get_paths()"
                                "['purelib'])"], capture_output=True, text=True, check=True, cwd=base).stdout.strip())
    ours = {sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"]}  # prefect, litellm, openai-agents...
    (site / "deps-from-the-test-venv.pth").write_text("".join(f"{p}\n" for p in sorted(ours)))
    outside = base / "my-project"
    outside.mkdir()
    return Installed(wheel, venv, site, outside)


PROBE = """
import importlib.metadata, importlib.util, json, sys
import agents
import prefect_micro_agents
from prefect_micro_agents import Agent, Tool, run_agent
from prefect_micro_agents.prompts import TEMPLATES_DIR, render
print(json.dumps({
    "agents_file": agents.__file__,
    "openai_agents_file": str(importlib.metadata.distribution("openai-agents").locate_file("agents/__init__.py")),
    "agents_names": [n for n in ("Agent", "Runner", "function_tool") if hasattr(agents, n)],
    "kit_file": prefect_micro_agents.__file__,
    "templates_dir": str(TEMPLATES_DIR),
    "tools_prompt": render("_tools.j2", tools=[]),
    "run_agent": run_agent.__module__,
    "editable": [m for m in sys.modules if "editable" in m],
    "app_visible": importlib.util.find_spec("flows") is not None,
    "sys_path": sys.path,
}))
"""


def test_the_installed_kit_imports_beside_openai_agents_without_the_checkout(installed: Installed) -> None:
    done = installed.run(installed.python, "-c", PROBE)
    assert done.returncode == 0, done.stderr
    seen = json.loads(done.stdout)
    # OpenAI's SDK owns the top-level name `agents`; the kit does not collide with it.
    assert seen["agents_file"] == seen["openai_agents_file"]
    assert seen["agents_names"] == ["Agent", "Runner", "function_tool"]
    # The kit is the wheel's copy in the fresh venv, templates included; the checkout is not on the path.
    assert Path(seen["kit_file"]).is_relative_to(installed.site), seen["kit_file"]
    assert Path(seen["templates_dir"]).is_relative_to(installed.site)
    assert seen["tools_prompt"].startswith("## Tools") and seen["run_agent"] == "prefect_micro_agents.adapter.loop"
    assert seen["editable"] == [] and not seen["app_visible"]
    deps = {sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"]}
    assert {p for p in seen["sys_path"] if p and Path(p).is_relative_to(ROOT)} <= deps  # no checkout directory


def test_the_wheel_holds_only_the_kit_with_its_templates(installed: Installed) -> None:
    version = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]
    info = f"{DIST}-{version}.dist-info"
    with zipfile.ZipFile(installed.wheel) as whl:
        names = set(whl.namelist())
        record = {line.split(",")[0] for line in whl.read(f"{info}/RECORD").decode().splitlines() if line}
        entry_points = whl.read(f"{info}/entry_points.txt").decode()
    assert record == names
    assert {n.split("/")[0] for n in names} == {DIST, info}
    source = {p.relative_to(ROOT).as_posix() for p in (ROOT / DIST).rglob("*")
              if p.is_file() and "__pycache__" not in p.parts}
    assert {n for n in names if not n.startswith(info)} == source  # every file of the package, nothing else
    templates = {n for n in names if n.startswith(f"{DIST}/templates/") and n.endswith(".j2")}
    assert {Path(n).name for n in templates} >= {"_tools.j2", "approval.md.j2", "question.md.j2", "thread.j2"}
    assert "microagents = prefect_micro_agents.cli:main" in entry_points


def test_the_installed_microagents_command_runs(installed: Installed) -> None:
    command = installed.venv / "bin" / "microagents"
    assert command.read_text().splitlines()[0] == f"#!{installed.python}"
    done = installed.run(str(command), "--help")
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("usage: microagents") and "approve" in done.stdout


def wait_flow_processes_exit(runner_pid: int, timeout: float = 60) -> None:
    """flow.serve runs each flow run in a multiprocessing child of the runner (not `python -m prefect.engine`)."""
    deadline = time.monotonic() + timeout
    while True:
        children = []
        for proc in Path("/proc").glob("[0-9]*"):
            try:
                ppid = int((proc / "stat").read_text().rsplit(")", 1)[1].split()[1])
                if ppid == runner_pid and b"spawn_main" in (proc / "cmdline").read_bytes():
                    children.append(int(proc.name))
            except (OSError, ValueError, IndexError):
                continue
        if not children:
            return
        assert time.monotonic() < deadline, f"flow-run processes {children} of runner {runner_pid} still run"
        time.sleep(0.1)


def call(intent: str, **args: str) -> dict[str, dict[str, str]]:
    return {"call": {"intent": intent, **args}}


@pytest.mark.slow
def test_the_readme_example_from_the_wheel_suspends_and_is_approved_from_the_cli(
    installed: Installed, prefect_server, http: httpx.Client, scripted: ScriptedModel, tmp_path: Path,  # noqa: ANN001
) -> None:
    project = installed.outside / "access"
    project.mkdir()
    for name in ("access_request.py", "access_agent.j2"):
        shutil.copy2(EXAMPLE / name, project / name)
    grants = project / "access-grants.txt"
    env = {**clean_env(), "PREFECT_RUNNER_POLL_FREQUENCY": "1"}
    served = Served(project / "access_request.py", env, http, "access-request/access", tmp_path / "serve.log",
                    python=installed.python)
    scripted.enqueue(call("look_up_group", group="billing-readonly"),
                     call("grant_access", user="erin", group="billing-readonly"),
                     call("done_for_now", message="erin can now read billing"))
    deployment = served.start()
    try:
        # Started the way the README starts it (that venv's Prefect CLI, the README's parameters).
        started = installed.run(installed.python, "-m", "prefect", "deployment", "run", "access-request/access",
                                "-p", "user=erin", "-p", "group=billing-readonly", "-p", "why=month-end close",
                                "-p", f"model={scripted.model}", env=env)
        assert started.returncode == 0, started.stdout + started.stderr
        [run] = re.findall(r"UUID: ([0-9a-f-]{36})", started.stdout)
        assert http.get(f"/flow_runs/{run}").json()["deployment_id"] == deployment
        next_pause(http, run)
        assert flow_state(http, run)["name"] == "Suspended" and not grants.exists()

        microagents = str(installed.venv / "bin" / "microagents")
        shown = installed.run(microagents, "show", run, "--json", env=env)
        assert shown.returncode == 0, shown.stderr
        pending = json.loads(shown.stdout)
        assert "proposes `grant_access`" in pending["description"] and "erin" in pending["description"]
        approved = installed.run(microagents, "approve", run, "--as", "dana", "--digest",
                                 pending["proposal_digest"][:12], env=env)
        assert approved.returncode == 0, approved.stderr
        assert approved.stdout.startswith("approved ") and "runs the call once" in approved.stdout

        wait_state(http, run, {"COMPLETED"}, timeout=120)
        wait_flow_processes_exit(served.pid)  # a runner that stops cancels runs whose processes are alive, Completed or not
    finally:
        served.stop()
    assert flow_state(http, run)["type"] == "COMPLETED"
    # The approved call ran exactly once, in the example's own directory; the auto tool's result reached the model,
    # and the resume repeated no model call.
    [grant] = lines(grants)
    assert grant.endswith(" erin billing-readonly") and grant.startswith(f"{run}:")
    prompts = [r["messages"][1]["content"] for r in scripted.requests()]
    assert len(prompts) == 3 and "alice, bob" in prompts[1]
    assert "approved 2 by dana" in prompts[2]
