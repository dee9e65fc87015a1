"""The kit stands alone: no module of `prefect_micro_agents` imports the deploy bot (agents/, flows/, prompts/,
deployments/), at the top or lazily inside a function. The installed wheel has none of them (tests/kit/test_packaging.py)."""

from __future__ import annotations

from kit_imports import ROOT, imported_names, kit_modules

APP = ("agents", "flows", "prompts", "deployments")


def test_no_module_of_the_kit_imports_the_app() -> None:
    found = [f"{path.relative_to(ROOT)}:{line}: imports {name}"
             for path in kit_modules().values() for line, name in imported_names(path)
             if name.partition(".")[0] in APP]
    assert not found, "the kit must not import the deploy bot:\n" + "\n".join(found)


def test_the_check_sees_every_kit_module() -> None:
    names = set(kit_modules())
    assert {"prefect_micro_agents", "prefect_micro_agents.adapter.loop", "prefect_micro_agents.llm.transport",
            "prefect_micro_agents.evals.suite", "prefect_micro_agents.testing.scripted"} <= names, sorted(names)
