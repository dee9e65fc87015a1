"""The test suite is split like the code: tests/kit/ tests `prefect_micro_agents` with agents of its own and never
imports the deploy bot (agents/, flows/, deployments/, examples/); tests/app/ tests the deploy bot through the kit's
public API only (`prefect_micro_agents.__all__` and `prefect_micro_agents.testing`). Read from the source (ast), with
the shared helpers in tests/ that a test file imports read too (a helper's imports are the test's imports)."""

from __future__ import annotations

import ast
from pathlib import Path

import prefect_micro_agents
from kit_imports import ROOT, imported_names

TESTS = ROOT / "tests"
APP = ("agents", "flows", "deployments", "examples", "prompts")
PUBLIC_MODULES = ("prefect_micro_agents", "prefect_micro_agents.testing")
APP_DATA = ("starter.json",)  # evals/: the deploy bot's starter suite


def shown(path: Path) -> str:
    return str(path.relative_to(ROOT)) if path.is_relative_to(ROOT) else path.name


def local_module(name: str, beside: Path) -> Path | None:
    """The test helper an import names (a file beside the test or in tests/), if it is one."""
    for folder in (beside.parent, TESTS):
        if (folder / f"{name}.py").is_file():
            return folder / f"{name}.py"
    return None


def imports_of(path: Path, seen: set[Path] | None = None) -> list[tuple[str, int, ast.ImportFrom | ast.Import]]:
    """(file, line, node) of every import `path` makes, itself or through the tests' helpers it imports or names
    (a flow file a test serves or runs in another process, `HERE / "gate_flow.py"`, imports for it)."""
    seen = set() if seen is None else seen
    if path in seen:
        return []
    seen.add(path)
    found: list[tuple[str, int, ast.ImportFrom | ast.Import]] = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Constant) and isinstance(node.value, str) and node.value.endswith(".py") \
                and "/" not in node.value and (helper := local_module(node.value[:-3], path)) is not None:
            found += imports_of(helper, seen)
        if isinstance(node, ast.Import | ast.ImportFrom) and not getattr(node, "level", 0):
            found.append((shown(path), node.lineno, node))
            for name in ([a.name for a in node.names] if isinstance(node, ast.Import) else [node.module or ""]):
                helper = local_module(name, path)
                if helper is not None and helper.name != "conftest.py":
                    found += imports_of(helper, seen)
    return found


def modules(node: ast.Import | ast.ImportFrom) -> list[str]:
    return [a.name for a in node.names] if isinstance(node, ast.Import) else [node.module or ""]


def kit_problems(path: Path) -> list[str]:
    found = [f"{where}:{line}: imports {name}" for where, line, node in imports_of(path) for name in modules(node)
             if name.partition(".")[0] in APP]
    return found + [f"{shown(path)}:{node.lineno}: reads the app's {node.value}"
                    for node in ast.walk(ast.parse(path.read_text()))
                    if isinstance(node, ast.Constant) and node.value in APP_DATA]


def app_problems(path: Path) -> list[str]:
    public = set(prefect_micro_agents.__all__)
    found = []
    for where, line, node in imports_of(path):
        for name in modules(node):
            if name.partition(".")[0] != "prefect_micro_agents":
                continue
            if name not in PUBLIC_MODULES:
                found.append(f"{where}:{line}: imports {name}, not the kit's public API")
            elif name == "prefect_micro_agents" and isinstance(node, ast.ImportFrom):
                found += [f"{where}:{line}: imports {a.name} from the kit, not in its __all__"
                          for a in node.names if a.name not in public]
    return found




def test_the_kit_tests_never_import_the_app() -> None:
    files = sorted((TESTS / "kit").glob("*.py"))
    assert len(files) > 15, files
    # The fixtures the kit's tests get from tests/conftest.py (a flow they serve, a helper they import) count too.
    found = {path.name: kit_problems(path) for path in [*files, TESTS / "conftest.py"]}
    bad = [problem for problems in found.values() for problem in problems]
    assert not bad, "tests/kit/ must use agents of its own, not the deploy bot:\n" + "\n".join(bad)


def test_the_app_tests_use_only_the_kits_public_api() -> None:
    files = sorted((TESTS / "app").glob("*.py"))
    assert len(files) > 10, files
    found = [problem for path in files for problem in app_problems(path)]
    assert not found, "tests/app/ must use prefect_micro_agents' public API:\n" + "\n".join(found)


def test_the_check_sees_what_it_must_refuse(tmp_path: Path) -> None:
    """Bad imports written the ways a test can write them, directly and through a helper, are all found."""
    kit, app = tmp_path / "kit", tmp_path / "app"
    kit.mkdir(), app.mkdir()
    (kit / "helper.py").write_text("def f():\n    from flows.targets import LocalTargets\n")
    (kit / "test_a.py").write_text("import agents.deploybot\nimport helper\nfrom examples import access_request\n")
    assert [p.split(": ", 1)[1] for p in kit_problems(kit / "test_a.py")] == [
        "imports agents.deploybot", "imports flows.targets", "imports examples"]
    (kit / "served_flow.py").write_text("from agents.rollback import ROLLBACK_AGENT\n")
    (kit / "test_c.py").write_text("SERVED = 'served_flow.py'\nSUITE = ('evals', 'starter.json')\n")
    assert [p.split(": ", 1)[1] for p in kit_problems(kit / "test_c.py")] == [
        "imports agents.rollback", "reads the app's starter.json"]
    (app / "test_b.py").write_text(
        "from prefect_micro_agents import Agent, bind\nfrom prefect_micro_agents.testing import ScriptedModel\n"
        "from prefect_micro_agents.reducer import next_action\nfrom prefect_micro_agents import reducer\n"
        "import prefect_micro_agents.testing.scripted\n")
    assert [p.split(": ", 1)[1] for p in app_problems(app / "test_b.py")] == [
        "imports prefect_micro_agents.reducer, not the kit's public API",
        "imports reducer from the kit, not in its __all__",
        "imports prefect_micro_agents.testing.scripted, not the kit's public API"]
