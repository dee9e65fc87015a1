"""Read-only facts from the deployed repository for the pre-fetch step: tags and the commits a deploy brings."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

from pydantic import BaseModel

from flows.targets.errors import TargetError

__all__ = ["RepoTags", "commits_between", "recent_tags", "tags_by_sha"]

_SEP = "\x1f"


def _git(repo: Path, *args: str) -> str:
    env = {k: v for k, v in os.environ.items() if not k.startswith("GIT_")}
    proc = subprocess.run(["git", "-C", str(repo), *args], capture_output=True, text=True, check=False, env=env)
    if proc.returncode != 0:
        raise TargetError(f"git {' '.join(args)} failed in {repo}: {proc.stderr.strip()}")
    return proc.stdout


class RepoTags(BaseModel):
    """The repository's tags as the pre-fetch step shows them: the newest (or why they are unknown), and per SHA."""

    recent: list[dict[str, str]] | str
    by_sha: dict[str, list[str]]


def tags_by_sha(repo: Path) -> dict[str, list[str]]:
    """Commit SHA -> tag names pointing at it (annotated tags are peeled to their commit)."""
    found: dict[str, list[str]] = {}
    fmt = f"%(refname:short){_SEP}%(objectname){_SEP}%(*objectname)"
    for line in _git(repo, "for-each-ref", "refs/tags", f"--format={fmt}").splitlines():
        name, obj, peeled = line.split(_SEP)
        found.setdefault(peeled or obj, []).append(name)
    return found


def recent_tags(repo: Path, limit: int = 10) -> list[dict[str, str]]:
    """The newest tags first, as {tag, sha} rows."""
    fmt = f"%(refname:short){_SEP}%(objectname){_SEP}%(*objectname)"
    out = _git(repo, "for-each-ref", "refs/tags", "--sort=-creatordate", f"--count={limit}", f"--format={fmt}")
    rows = []
    for line in out.splitlines():
        name, obj, peeled = line.split(_SEP)
        rows.append({"tag": name, "sha": peeled or obj})
    return rows


def commits_between(repo: Path, head: str, bases: list[str], limit: int = 20) -> dict[str, object]:
    """Commits reachable from `head` but from none of `bases` (what a deploy brings), newest first, and the commits
    of `bases` that `head` lacks (what it would remove: a non-zero count means `head` is not ahead of production)."""
    fmt = f"%H{_SEP}%s{_SEP}%an{_SEP}%aI"
    excluded = [f"^{b}" for b in bases]
    out = _git(repo, "log", f"--max-count={limit}", f"--format={fmt}", head, *excluded, "--")
    commits = [dict(zip(("sha", "subject", "author", "date"), line.split(_SEP), strict=True))
               for line in out.splitlines()]
    total = int(_git(repo, "rev-list", "--count", head, *excluded, "--").strip())
    missing = sum(int(_git(repo, "rev-list", "--count", base, f"^{head}", "--").strip()) for base in set(bases))
    return {"commits": commits, "total": total, "not_in_head": missing}
