"""Create the sample app's git repository with a fixed, reproducible history the deploy bot and its tests rely on."""

from __future__ import annotations

import json
import logging
import os
import subprocess
from dataclasses import dataclass
from pathlib import Path

from pydantic import BaseModel

from flows.sample_app.sources import backend_source, frontend_source, readme_source

__all__ = ["MANIFEST_NAME", "SampleAppError", "SampleAppManifest", "SampleCommit", "create_sample_app", "load_manifest"]

logger = logging.getLogger(__name__)

MANIFEST_NAME = ".sample_app.json"
_AUTHOR = ("Sample Bot", "sample-bot@example.invalid")
_BASE_EPOCH = 1_700_000_000  # 2023-11-14T22:13:20Z; each commit is one hour later


class SampleAppError(Exception):
    """The sample repository cannot be created where asked; the message says why."""


class SampleCommit(BaseModel):
    """One named commit of the sample repo: where to find it and what it contains."""

    name: str
    sha: str
    ref: str
    backend_api: int
    frontend_requires_api: int
    description: str


class SampleAppManifest(BaseModel):
    """What `create_sample_app` made: the repo path and its named commits (also written to `.sample_app.json`)."""

    repo: str
    commits: dict[str, SampleCommit]

    def sha(self, name: str) -> str:
        """Full SHA of a named commit (v1.0.0, v1.1.0, v1.2.0, staging_fail, prod_only_fail)."""
        if name not in self.commits:
            raise KeyError(f"no sample commit named {name!r}; known: {', '.join(sorted(self.commits))}")
        return self.commits[name].sha


@dataclass(frozen=True)
class _Step:
    name: str
    ref: str
    branch: str
    backend_api: int
    requires: int
    variant: str
    description: str


_STEPS = (
    _Step("v1.0.0", "v1.0.0", "main", 1, 1, "normal", "first release: backend api 1, frontend requires api 1"),
    _Step("v1.1.0", "v1.1.0", "main", 2, 1, "normal", "backend api 2; frontend still requires api 1"),
    _Step("v1.2.0", "v1.2.0", "main", 2, 2, "normal", "frontend requires api 2 (deploy the backend first)"),
    _Step("staging_fail", "special/staging-fail", "bugfix/build-info", 2, 2, "build_info",
          "backend /api/version returns 500 in every environment (fails staging e2e)"),
    _Step("prod_only_fail", "special/prod-only-fail", "feature/region-info", 2, 2, "region",
          "backend /api/version returns 500 only with --env production (passes staging, fails production)"),
)


def _git(repo: Path, *args: str, when: int | None = None) -> str:
    """Run git in `repo` isolated from user/system config, with fixed identity and dates."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("GIT_")}
    env.update(GIT_CONFIG_GLOBAL=os.devnull, GIT_CONFIG_NOSYSTEM="1",
               GIT_AUTHOR_NAME=_AUTHOR[0], GIT_AUTHOR_EMAIL=_AUTHOR[1],
               GIT_COMMITTER_NAME=_AUTHOR[0], GIT_COMMITTER_EMAIL=_AUTHOR[1])
    if when is not None:
        env["GIT_AUTHOR_DATE"] = env["GIT_COMMITTER_DATE"] = f"@{when} +0000"
    proc = subprocess.run(["git", *args], cwd=repo, env=env, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise SampleAppError(f"git {' '.join(args)} failed in {repo}: {proc.stderr.strip()}")
    return proc.stdout.strip()


def load_manifest(repo: str | Path) -> SampleAppManifest:
    """Read the manifest of an existing sample repo, to look up the SHAs of its named commits."""
    path = Path(repo) / MANIFEST_NAME
    try:
        return SampleAppManifest.model_validate_json(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        hint = f"python -m flows.sample_app create {repo}"
        raise SampleAppError(f"{path} not found; create the repo with `{hint}`") from None


def _write_tree(repo: Path, step: _Step) -> None:
    (repo / "backend").mkdir(exist_ok=True)
    (repo / "frontend").mkdir(exist_ok=True)
    (repo / "README.md").write_text(readme_source(), encoding="utf-8")
    (repo / ".gitignore").write_text(f"{MANIFEST_NAME}\n__pycache__/\n", encoding="utf-8")
    (repo / "backend" / "server.py").write_text(backend_source(step.backend_api, step.variant), encoding="utf-8")
    (repo / "frontend" / "server.py").write_text(frontend_source(step.requires), encoding="utf-8")


def create_sample_app(dest: str | Path) -> SampleAppManifest:
    """Create the sample repo in `dest` (a missing or empty dir); if `dest` already holds it, return its manifest.

    Idempotent: a second call on a directory that already contains a sample repo whose named commits all exist is a
    no-op returning the stored manifest. Any other non-empty directory raises SampleAppError (nothing is touched).
    """
    repo = Path(dest).resolve()
    if (repo / MANIFEST_NAME).is_file() and (repo / ".git").exists():
        manifest = load_manifest(repo)
        for commit in manifest.commits.values():
            _git(repo, "cat-file", "-e", f"{commit.sha}^{{commit}}")
        logger.info("sample app already exists in %s; nothing to do", repo)
        return manifest
    if repo.exists() and (not repo.is_dir() or any(repo.iterdir())):
        raise SampleAppError(f"{repo} exists and is not an empty directory (and holds no sample app); "
                             f"pick another path")
    repo.mkdir(parents=True, exist_ok=True)
    _git(repo, "init", "--quiet", "--initial-branch=main")
    commits: dict[str, SampleCommit] = {}
    main_tip = ""
    for index, step in enumerate(_STEPS):
        when = _BASE_EPOCH + 3600 * index
        if step.branch != "main":
            _git(repo, "checkout", "--quiet", "-B", step.branch, main_tip)
        _write_tree(repo, step)
        _git(repo, "add", "--all")
        _git(repo, "commit", "--quiet", "--no-gpg-sign", "-m", f"{step.name}: {step.description}", when=when)
        sha = _git(repo, "rev-parse", "HEAD")
        _git(repo, "tag", step.ref, sha)
        if step.branch == "main":
            main_tip = sha
        commits[step.name] = SampleCommit(name=step.name, sha=sha, ref=step.ref, backend_api=step.backend_api,
                                          frontend_requires_api=step.requires, description=step.description)
    _git(repo, "checkout", "--quiet", "main")
    manifest = SampleAppManifest(repo=str(repo), commits=commits)
    (repo / MANIFEST_NAME).write_text(json.dumps(manifest.model_dump(), indent=2) + "\n", encoding="utf-8")
    logger.info("created sample app in %s with %d named commits", repo, len(commits))
    return manifest
