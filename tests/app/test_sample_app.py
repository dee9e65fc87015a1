"""The sample repo generator: named commits, tags, reproducible SHAs, idempotent re-creation and the CLI."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from flows.sample_app import MANIFEST_NAME, SampleAppError, create_sample_app, load_manifest

NAMES = ("v1.0.0", "v1.1.0", "v1.2.0", "staging_fail", "prod_only_fail")


def git(repo: Path, *args: str) -> str:
    return subprocess.run(["git", "-C", str(repo), *args], capture_output=True, text=True, check=True).stdout.strip()


def show(repo: Path, ref: str, path: str) -> str:
    return git(repo, "show", f"{ref}:{path}")


@pytest.fixture(scope="module")
def repo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("sample") / "repo"
    create_sample_app(path)
    return path


def test_named_commits_tags_and_branches_exist(repo: Path) -> None:
    manifest = load_manifest(repo)
    assert tuple(manifest.commits) == NAMES
    assert set(git(repo, "tag").split()) == {c.ref for c in manifest.commits.values()}
    for commit in manifest.commits.values():
        assert git(repo, "rev-parse", f"{commit.ref}^{{commit}}") == commit.sha == manifest.sha(commit.name)
    branches = git(repo, "branch", "--format=%(refname:short)").split()
    assert set(branches) == {"main", "bugfix/build-info", "feature/region-info"}
    assert git(repo, "rev-parse", "main") == manifest.sha("v1.2.0")
    assert git(repo, "status", "--porcelain") == ""  # the manifest is git-ignored
    assert (repo / MANIFEST_NAME).is_file()


def test_commit_contents_tell_the_compatibility_story(repo: Path) -> None:
    m = load_manifest(repo)
    expected = {"v1.0.0": (1, 1), "v1.1.0": (2, 1), "v1.2.0": (2, 2), "staging_fail": (2, 2), "prod_only_fail": (2, 2)}
    for name, (api, requires) in expected.items():
        assert f"API_VERSION = {api}\n" in show(repo, m.sha(name), "backend/server.py")
        assert f"REQUIRES_BACKEND_API = {requires}\n" in show(repo, m.sha(name), "frontend/server.py")
    assert 'BUILD_INFO["number"]' in show(repo, m.sha("staging_fail"), "backend/server.py")
    assert "REGION_BY_ENV[env]" in show(repo, m.sha("prod_only_fail"), "backend/server.py")
    for name in ("staging_fail", "prod_only_fail"):
        assert git(repo, "merge-base", "--is-ancestor", m.sha("v1.2.0"), m.sha(name)) == ""
    assert git(repo, "log", "-1", "--format=%an <%ae> %cn %aI", m.sha("v1.0.0")) == \
        "Sample Bot <sample-bot@example.invalid> Sample Bot 2023-11-14T22:13:20+00:00"


def test_shas_are_reproducible(repo: Path, tmp_path: Path) -> None:
    again = create_sample_app(tmp_path / "other")
    assert {n: c.sha for n, c in again.commits.items()} == {n: c.sha for n, c in load_manifest(repo).commits.items()}


def test_second_create_is_a_noop(tmp_path: Path) -> None:
    first = create_sample_app(tmp_path / "repo")
    refs = git(tmp_path / "repo", "show-ref")
    assert create_sample_app(tmp_path / "repo") == first
    assert git(tmp_path / "repo", "show-ref") == refs


def test_non_empty_dir_is_refused(tmp_path: Path) -> None:
    (tmp_path / "busy").mkdir()
    (tmp_path / "busy" / "file.txt").write_text("x")
    with pytest.raises(SampleAppError, match="not an empty directory"):
        create_sample_app(tmp_path / "busy")
    assert sorted(p.name for p in (tmp_path / "busy").iterdir()) == ["file.txt"]


def test_unknown_name_and_missing_manifest(repo: Path, tmp_path: Path) -> None:
    with pytest.raises(KeyError, match="known: prod_only_fail"):
        load_manifest(repo).sha("v9")
    with pytest.raises(SampleAppError, match="python -m flows.sample_app create"):
        load_manifest(tmp_path)


def test_cli_prints_manifest_and_reports_errors(tmp_path: Path) -> None:
    cmd = [sys.executable, "-m", "flows.sample_app", "create"]
    root = Path(__file__).resolve().parents[2]
    ok = subprocess.run([*cmd, str(tmp_path / "cli")], capture_output=True, text=True, cwd=root, check=False)
    assert ok.returncode == 0, ok.stderr
    assert json.loads(ok.stdout) == json.loads((tmp_path / "cli" / MANIFEST_NAME).read_text())
    (tmp_path / "junk").mkdir()
    (tmp_path / "junk" / "a").write_text("a")
    bad = subprocess.run([*cmd, str(tmp_path / "junk")], capture_output=True, text=True, cwd=root, check=False)
    assert bad.returncode == 1 and bad.stderr.startswith("error:") and bad.stdout == ""
