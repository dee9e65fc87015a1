"""Create the sample app's git repository with a fixed, reproducible history the deploy bot and its tests rely on.

The repo also gets `post-commit` and `post-merge` git hooks (`install_push_hooks`; re-installed, idempotently, each
time `create_sample_app` finds the repo): after a commit or merge on branch `main`, the hook runs

    <this Python> -m prefect_micro_agents.cli push --sha <HEAD> --branch main --repo sample-app --pusher <committer>

in the background, so the Prefect server receives a `git.push` event and the pipeline deployment's trigger starts a
run for the new commit. The server is $PREFECT_API_URL at commit time, else the one that was set when the hooks were
installed ($PREFECT_API_AUTH_STRING is read from the environment only, never written to the hook). The hook never
slows or fails the commit: a server that is down only adds a line to `.git/microagents-push.log`. Commits on other
branches send nothing; `MICROAGENTS_PUSH_HOOK=off git commit ...` skips it; `create_sample_app(dest, hooks=False)`
or deleting `.git/hooks/post-commit` and `.git/hooks/post-merge` removes it (a hook that is not ours is never
overwritten).
"""

from __future__ import annotations

import json
import logging
import os
import shlex
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from pydantic import BaseModel

from flows.sample_app.sources import backend_source, frontend_source, readme_source

__all__ = [
    "HOOK_NAMES",
    "MANIFEST_NAME",
    "SampleAppError",
    "SampleAppManifest",
    "SampleCommit",
    "create_sample_app",
    "install_push_hooks",
    "load_manifest",
]

logger = logging.getLogger(__name__)

MANIFEST_NAME = ".sample_app.json"
HOOK_NAMES = ("post-commit", "post-merge")
REPO_NAME = "sample-app"  # the event's resource: git.repo.sample-app
_HOOK_MARKER = "# microagents push hook (installed by flows.sample_app)"
_PROJECT_ROOT = Path(__file__).resolve().parents[2]
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


def _hook_script(python: str, repo_name: str, api_url: str | None) -> str:
    fallback = (f'PREFECT_API_URL="${{PREFECT_API_URL:-{api_url}}}"\nexport PREFECT_API_URL\n'
                if api_url and "'" not in api_url and '"' not in api_url and "$" not in api_url else "")
    return f"""#!/bin/sh
{_HOOK_MARKER}
# On branch main: emit a git.push event for HEAD to the Prefect server, in the background; never fails git.
# Skip once: MICROAGENTS_PUSH_HOOK=off git commit ...   Output: <git dir>/microagents-push.log
[ "${{MICROAGENTS_PUSH_HOOK:-on}}" = off ] && exit 0
branch=$(git symbolic-ref --quiet --short HEAD 2>/dev/null) || exit 0
[ "$branch" = main ] || exit 0
sha=$(git rev-parse HEAD 2>/dev/null) || exit 0
pusher=$(git log -1 --format=%cn HEAD 2>/dev/null)
[ -n "$pusher" ] || pusher=${{USER:-unknown}}
log="$(git rev-parse --absolute-git-dir 2>/dev/null || echo .git)/microagents-push.log"
{fallback}PYTHONPATH={shlex.quote(str(_PROJECT_ROOT))}${{PYTHONPATH:+:$PYTHONPATH}}
export PYTHONPATH
{shlex.quote(python)} -m prefect_micro_agents.cli push --sha "$sha" --branch main --repo {shlex.quote(repo_name)} \\
    --pusher "$pusher" </dev/null >>"$log" 2>&1 &
exit 0
"""


def install_push_hooks(repo: str | Path, python: str | None = None, repo_name: str = REPO_NAME,
                       api_url: str | None = None) -> list[Path]:
    """Write the post-commit and post-merge hooks into `repo` (see the module docstring); returns their paths.

    `python` defaults to this interpreter (absolute; a venv's python is kept as is, not resolved out of the venv),
    `api_url` to $PREFECT_API_URL (the fallback server when the committing shell has none). Idempotent; a hook file
    that was not written by this function is left alone (logged).
    """
    hooks_dir = Path(_git(Path(repo), "rev-parse", "--absolute-git-dir")) / "hooks"
    hooks_dir.mkdir(parents=True, exist_ok=True)
    script = _hook_script(os.path.abspath(python or sys.executable), repo_name,
                          api_url if api_url is not None else os.environ.get("PREFECT_API_URL"))
    written = []
    for name in HOOK_NAMES:
        path = hooks_dir / name
        if path.exists():
            current = path.read_text(encoding="utf-8", errors="replace")
            if _HOOK_MARKER not in current:
                logger.warning("%s exists and is not the microagents push hook; left as is", path)
                continue
            if current == script and os.access(path, os.X_OK):
                written.append(path)
                continue
        tmp = path.with_name(f".{name}.{os.getpid()}.tmp")
        tmp.write_text(script, encoding="utf-8")
        tmp.chmod(0o755)
        os.replace(tmp, path)
        written.append(path)
    return written


def create_sample_app(dest: str | Path, hooks: bool = True) -> SampleAppManifest:
    """Create the sample repo in `dest` (a missing or empty dir); if `dest` already holds it, return its manifest.

    Idempotent: a second call on a directory that already contains a sample repo whose named commits all exist is a
    no-op returning the stored manifest (apart from re-installing the push hooks when `hooks`). Any other non-empty
    directory raises SampleAppError (nothing is touched).
    """
    repo = Path(dest).resolve()
    if (repo / MANIFEST_NAME).is_file() and (repo / ".git").exists():
        manifest = load_manifest(repo)
        for commit in manifest.commits.values():
            _git(repo, "cat-file", "-e", f"{commit.sha}^{{commit}}")
        if hooks:
            install_push_hooks(repo)
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
    if hooks:  # after the history: creating it must not send events
        install_push_hooks(repo)
    logger.info("created sample app in %s with %d named commits", repo, len(commits))
    return manifest
