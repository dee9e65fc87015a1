"""Tool implementations are bound to their tool class: a type checker holds each one to it, and a runner refuses
wrong bindings before its first step."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any, Literal

import pytest

from prefect_micro_agents import ConfigurationError, Tool, ToolContext, bind
from prefect_micro_agents.runner import run_until_blocked
from prefect_micro_agents.testing.scripted import ScriptedModel
from toy_agent import AGENT, DoneForNow, FileExpense, LookUpReceipt, PayExpense, expense_context

ROOT = Path(__file__).resolve().parents[2]
HERE = Path(__file__).resolve().parent


class RefundCard(Tool):
    """A tool of another agent (the expense agent does not declare it)."""

    policy = "approve"
    intent: Literal["refund_card"]
    to: str


def record(call: PayExpense | FileExpense | LookUpReceipt | RefundCard, ctx: ToolContext) -> dict[str, Any]:
    return {"intent": call.intent}


LOOK = bind(LookUpReceipt, record)


@pytest.mark.parametrize(("tools", "says"), [
    ([bind(PayExpense, record), LOOK], "no implementation for: file_expense"),
    ([bind(PayExpense, record), bind(FileExpense, record), LOOK, bind(RefundCard, record)],
     "does not declare RefundCard"),
    ([bind(PayExpense, record), bind(FileExpense, record), LOOK, bind(DoneForNow, record)],
     "DoneForNow has policy 'terminal': its calls never execute"),
    ([bind(PayExpense, record), bind(FileExpense, record), LOOK, bind(PayExpense, record)],
     "PayExpense is bound twice"),
    ({"pay_expense": record, "file_expense": record, "look_up_receipt": record}, "as bindings, e.g. .*not a mapping"),
    ([record], "is not a binding; make one with bind"),
])
def test_wrong_bindings_fail_before_anything_runs(tools: Any, says: str, scripted: ScriptedModel) -> None:
    with pytest.raises(ConfigurationError, match=says):
        run_until_blocked(AGENT, expense_context(), tools, scripted.model)
    assert scripted.requests() == []


CHECKED = '''
from typing import Any
from toy_agent import LookUpReceipt, PayExpense
from prefect_micro_agents import Tool, ToolContext, bind

def pay(call: PayExpense, ctx: ToolContext) -> dict[str, Any]:
    return {"receipt": call.receipt}

def look_up(call: LookUpReceipt, ctx: ToolContext) -> dict[str, Any]:
    return {"found": call.receipt}

def any_tool(call: Tool, ctx: ToolContext) -> str:
    return "ok"

bind(PayExpense, pay)
bind(PayExpense, any_tool)
bind(PayExpense, lambda call, ctx: call.receipt)
bind(PayExpense, look_up)  # line 18: another tool's implementation
bind(PayExpense, lambda call, ctx: call.to)  # line 19: a field the tool does not have
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
                          env={**os.environ, "MYPYPATH": str(HERE)}, capture_output=True, text=True, timeout=300)
    errors = [line.split(": error: ")[0].rsplit(":", 1)[-1] + ": " + line.split(": error: ")[1]
              for line in proc.stdout.splitlines() if ": error: " in line]
    assert errors == [
        '18: Argument 2 to "bind" has incompatible type "Callable[[LookUpReceipt, ToolContext], dict[str, Any]]"; '
        'expected "Callable[[PayExpense, ToolContext], JsonValue]"  [arg-type]',
        '19: "PayExpense" has no attribute "to"  [attr-defined]',
    ], proc.stdout
