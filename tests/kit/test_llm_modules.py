"""The kit's LLM code is split by job with no import cycle, and knows no test provider by name."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

from kit_imports import KIT, ROOT, runnable_imports, kit_modules

LLM_MODULES = ["config", "data", "parse", "provider", "request", "transport"]


def import_graph() -> dict[str, set[str]]:
    """module -> the kit modules it imports (`from package import submodule` counts as the submodule)."""
    modules = kit_modules()
    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        targets: set[str] = set()
        for node in runnable_imports(ast.parse(path.read_text()).body):
            if isinstance(node, ast.Import):
                targets |= {alias.name for alias in node.names}
            elif node.module is not None and node.level == 0:
                targets |= {f"{node.module}.{a.name}" if f"{node.module}.{a.name}" in modules else node.module
                            for a in node.names}
        graph[name] = {t for t in targets if t in modules and t != name}
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    found: list[list[str]] = []
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(node: str) -> None:
        state[node] = 1
        path.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                found.append([*path[path.index(nxt):], nxt])
            elif nxt not in state:
                visit(nxt)
        path.pop()
        state[node] = 2

    for node in sorted(graph):
        if node not in state:
            visit(node)
    return found


def test_the_kit_has_no_import_cycle() -> None:
    graph = import_graph()
    assert "prefect_micro_agents.llm.transport" in graph  # the walk sees the package
    assert cycles(graph) == []
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == [["a", "b", "c", "a"]]  # and would see one


def test_llm_submodules_never_import_their_own_package() -> None:
    """Only callers use the facade (`prefect_micro_agents.llm`); its parts import each other directly."""
    graph = import_graph()
    for name in LLM_MODULES:
        assert "prefect_micro_agents.llm" not in graph[f"prefect_micro_agents.llm.{name}"], name
    assert graph["prefect_micro_agents.llm.data"] <= {"prefect_micro_agents.thread"}  # the bottom: plain data


@pytest.mark.parametrize("module", ["prefect_micro_agents.llm", *(f"prefect_micro_agents.llm.{m}" for m in LLM_MODULES)])
def test_each_llm_module_imports_first_in_a_fresh_interpreter(module: str) -> None:
    """Whichever part a caller imports first, the import succeeds (a cycle shows up as a partially initialised
    module in one of these orders), and litellm is not imported by it."""
    code = f"import sys, {module}\nassert 'litellm' not in sys.modules, 'imported litellm'\n"
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr


def test_the_kit_knows_no_test_provider_by_name() -> None:
    """The scripted model registers itself through the generic provider hook; no model code checks for it."""
    for path in [*(KIT / "llm").glob("*.py"), KIT / "local_model.py"]:
        assert "scripted" not in path.read_text(), path
