"""Tool implementations are bound to their tool class: a type checker holds each one to it, and a runner refuses
wrong bindings before its first step."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from agents.deploybot import DEPLOY_AGENT, DeployBackendToProd, DeployFrontendToProd, DoneForNow
from agents.rollback import RollbackBackend
from factories import deploy_context
from prefect_micro_agents import ConfigurationError, ToolContext, bind
from prefect_micro_agents.runner import run_until_blocked
from prefect_micro_agents.testing.scripted import ScriptedModel

ROOT = Path(__file__).resolve().parents[2]


def deploy(call: DeployBackendToProd | DeployFrontendToProd, ctx: ToolContext) -> dict[str, Any]:
    return {"sha": call.sha}


@pytest.mark.parametrize(("tools", "says"), [
    ([bind(DeployBackendToProd, deploy)], "no implementation for: deploy_frontend_to_prod"),
    ([bind(DeployBackendToProd, deploy), bind(DeployFrontendToProd, deploy), bind(RollbackBackend, deploy)],
     "does not declare RollbackBackend"),
    ([bind(DeployBackendToProd, deploy), bind(DeployFrontendToProd, deploy), bind(DoneForNow, deploy)],
     "DoneForNow has policy 'terminal': its calls never execute"),
    ([bind(DeployBackendToProd, deploy), bind(DeployFrontendToProd, deploy), bind(DeployBackendToProd, deploy)],
     "DeployBackendToProd is bound twice"),
    ({"deploy_backend_to_prod": deploy, "deploy_frontend_to_prod": deploy}, "as bindings, e.g. .*not a mapping"),
    ([deploy], "is not a binding; make one with bind"),
])
def test_wrong_bindings_fail_before_anything_runs(tools: Any, says: str, scripted: ScriptedModel) -> None:
    with pytest.raises(ConfigurationError, match=says):
        run_until_blocked(DEPLOY_AGENT, deploy_context(), tools, scripted.model)
    assert scripted.requests() == []


CHECKED = '''
from typing import Any
from agents.deploybot import DeployBackendToProd
from agents.rollback import RollbackBackend
from prefect_micro_agents import Tool, ToolContext, bind

def deploy(call: DeployBackendToProd, ctx: ToolContext) -> dict[str, Any]:
    return {"sha": call.sha}

def rollback(call: RollbackBackend, ctx: ToolContext) -> dict[str, Any]:
    return {"to": call.to}

def any_tool(call: Tool, ctx: ToolContext) -> str:
    return "ok"

bind(DeployBackendToProd, deploy)
bind(DeployBackendToProd, any_tool)
bind(DeployBackendToProd, lambda call, ctx: call.sha)
bind(DeployBackendToProd, rollback)  # line 19: another tool's implementation
bind(DeployBackendToProd, lambda call, ctx: call.to)  # line 20: a field the tool does not have
'''


# Strict, fresh, and without reading Prefect and litellm (seconds instead of tens of seconds; the snippet needs neither).
MYPY_INI = """[mypy]
strict = True
incremental = False
follow_imports = silent
[mypy-prefect.*,litellm.*]
follow_imports = skip
ignore_missing_imports = True
"""


def test_mypy_holds_an_implementation_to_its_tool_class(tmp_path: Path) -> None:
    snippet, config = tmp_path / "bindings.py", tmp_path / "mypy.ini"
    snippet.write_text(CHECKED)
    config.write_text(MYPY_INI)
    proc = subprocess.run([sys.executable, "-m", "mypy", "--config-file", str(config), str(snippet)], cwd=ROOT,
                          capture_output=True, text=True, timeout=300)
    errors = [line.split(": error: ")[0].rsplit(":", 1)[-1] + ": " + line.split(": error: ")[1]
              for line in proc.stdout.splitlines() if ": error: " in line]
    assert errors == [
        '19: Argument 2 to "bind" has incompatible type "Callable[[RollbackBackend, ToolContext], dict[str, Any]]"; '
        'expected "Callable[[DeployBackendToProd, ToolContext], JsonValue]"  [arg-type]',
        '20: "DeployBackendToProd" has no attribute "to"  [attr-defined]',
    ], proc.stdout
