"""The kit's modules and the imports each can run, read from the source (ast): for the import-graph tests."""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

__all__ = ["KIT", "ROOT", "imported_names", "kit_modules", "runnable_imports"]

ROOT = Path(__file__).resolve().parents[1]
KIT = ROOT / "prefect_micro_agents"


def kit_modules() -> dict[str, Path]:
    found = {}
    for path in KIT.rglob("*.py"):
        parts = list(path.relative_to(ROOT).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        found[".".join(parts)] = path
    return found


def runnable_imports(body: list[ast.stmt]) -> Iterator[ast.Import | ast.ImportFrom]:
    """Every import a module can run, at the top or inside a function (a lazy import is still a dependency);
    not the ones under `if TYPE_CHECKING:`, which never run."""
    for node in body:
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            yield from runnable_imports(node.orelse)
            continue
        if isinstance(node, ast.Import | ast.ImportFrom):
            yield node
        for field in ("body", "orelse", "finalbody"):  # functions, classes, if/for/while/with/try blocks
            yield from runnable_imports(getattr(node, field, []))
        for clause in [*getattr(node, "handlers", []), *getattr(node, "cases", [])]:  # except, case
            yield from runnable_imports(clause.body)


def imported_names(path: Path) -> Iterator[tuple[int, str]]:
    """(line, absolute module name) of every import `path` can run; relative imports are the kit's own."""
    for node in runnable_imports(ast.parse(path.read_text()).body):
        if isinstance(node, ast.Import):
            yield from ((node.lineno, alias.name) for alias in node.names)
        elif node.module is not None and node.level == 0:
            yield node.lineno, node.module
