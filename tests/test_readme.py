"""The README's commands are the ones CI runs."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_ci_runs_the_readme_test_command_verbatim() -> None:
    readme = (ROOT / "README.md").read_text()
    blocks = re.findall(r"```bash\n(.*?)\n```", readme, re.S)
    test_commands = [b for b in blocks if "pytest" in b]
    assert len(test_commands) == 1, "the README has exactly one test command"
    ci = (ROOT / ".ci" / "run").read_text().splitlines()
    assert test_commands[0] in ci


def test_the_test_command_never_updates_snapshots() -> None:
    """UPDATE_SNAPSHOTS rewrites the prompt snapshots (and then fails, tests/app/test_prompts.py::check_snapshot): it is
    for a person reviewing a diff, never for the test command, CI or the pytest configuration."""
    readme = (ROOT / "README.md").read_text()
    [command] = [b for b in re.findall(r"```bash\n(.*?)\n```", readme, re.S) if "pytest" in b]
    for name, text in {"the README test command": command, ".ci/run": (ROOT / ".ci" / "run").read_text(),
                       "pyproject.toml": (ROOT / "pyproject.toml").read_text()}.items():
        assert "UPDATE_SNAPSHOTS" not in text, f"{name} mentions UPDATE_SNAPSHOTS"


def test_the_write_your_own_example_is_the_file_byte_for_byte() -> None:
    """The README shows examples/access_request.py and its prompt verbatim; tests/kit/test_packaging.py runs that file."""
    readme = (ROOT / "README.md").read_text()
    section = readme.split("\n## Write your own micro-agent\n", 1)[1].split("\n## ", 1)[0]
    blocks = {lang: re.findall(rf"^```{lang}\n(.*?)^```$", section, re.S | re.M) for lang in ("python", "jinja", "bash")}
    assert blocks["python"] == [(ROOT / "examples" / "access_request.py").read_text()]
    assert blocks["jinja"] == [(ROOT / "examples" / "access_agent.j2").read_text()]
    [commands] = blocks["bash"]
    for step in ("python examples/access_request.py", "prefect deployment run access-request/access",
                 "microagents approve <run-id>"):
        assert step in commands


def test_every_test_the_docs_cite_exists() -> None:
    """The READMEs (and docs/) cite tests as `tests/<dir>/test_x.py` or `tests/<dir>/test_x.py::name`: each file must exist and
    each named test be defined in it, so moving or renaming a test cannot leave a citation pointing nowhere."""
    cited = 0
    for doc in ("README.md", "evals/README.md", "docs/durable-state.md"):
        text = (ROOT / doc).read_text()
        for path, name in re.findall(r"(tests/[\w/]+\.py)(?:::(\w+))?", text):
            assert (ROOT / path).is_file(), f"{doc} cites {path}, which does not exist"
            if name:
                assert re.search(rf"^\s*(?:async )?def {name}\(", (ROOT / path).read_text(), re.M), \
                    f"{doc} cites {path}::{name}, which it does not define"
            cited += 1
    assert cited > 20  # the citations are there to be checked
