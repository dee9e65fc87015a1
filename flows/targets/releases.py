"""Release directories from git: resolve a ref, export it with `git archive`, switch `current` atomically."""

from __future__ import annotations

import io
import logging
import os
import re
import shutil
import subprocess
import tarfile
import tempfile
from pathlib import Path

from flows.targets.errors import TargetConfigError, UnknownRevisionError

__all__ = ["current_release", "export_release", "list_releases", "resolve_ref", "switch_current"]

logger = logging.getLogger(__name__)
_SAFE_REF = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._/-]{0,199}$")


def _git(repo: Path, *args: str, text: bool = True) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith("GIT_")}
    return subprocess.run(["git", "-C", str(repo), *args], capture_output=True, text=text, check=False, env=env)


def resolve_ref(repo: Path, ref: str) -> str:
    """Full commit SHA of a full/short SHA, tag or branch in `repo`; UnknownRevisionError if there is none."""
    if not isinstance(ref, str) or not _SAFE_REF.match(ref) or ".." in ref:
        raise UnknownRevisionError(f"{ref!r} is not a valid SHA, tag or branch name")
    if not (repo / ".git").exists() and not (repo / "HEAD").exists():
        raise TargetConfigError(f"{repo} is not a git repository")
    proc = _git(repo, "rev-parse", "--verify", "--quiet", "--end-of-options", f"{ref}^{{commit}}")
    if proc.returncode != 0:
        raise UnknownRevisionError(f"unknown revision {ref!r} in {repo}: no commit, tag or branch by that name")
    return proc.stdout.strip()


def export_release(repo: Path, sha: str, releases_dir: Path) -> Path:
    """Export commit `sha` to `releases_dir/<sha>/` (with a RELEASE file holding the sha); reuse it if present."""
    target = releases_dir / sha
    if (target / "RELEASE").is_file():
        return target
    releases_dir.mkdir(parents=True, exist_ok=True)
    proc = _git(repo, "archive", "--format=tar", sha, text=False)
    if proc.returncode != 0:
        raise UnknownRevisionError(f"git archive {sha} failed: {proc.stderr.decode(errors='replace').strip()}")
    staging = Path(tempfile.mkdtemp(prefix=f".{sha[:12]}.", dir=releases_dir))
    try:
        with tarfile.open(fileobj=io.BytesIO(proc.stdout), mode="r:") as archive:
            archive.extractall(staging, filter="data")
        (staging / "RELEASE").write_text(sha + "\n", encoding="utf-8")
        if target.exists():
            shutil.rmtree(target)  # a half-exported leftover without RELEASE
        os.replace(staging, target)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    logger.info("exported %s to %s", sha[:12], target)
    return target


def switch_current(service_dir: Path, release_dir: Path) -> None:
    """Point `service_dir/current` at `release_dir` atomically (temp symlink + os.replace)."""
    link = service_dir / "current"
    tmp = service_dir / f".current.{os.getpid()}.tmp"
    tmp.unlink(missing_ok=True)
    os.symlink(os.path.relpath(release_dir, service_dir), tmp)
    os.replace(tmp, link)


def current_release(service_dir: Path) -> str | None:
    """SHA that `service_dir/current` points at, or None."""
    link = service_dir / "current"
    return Path(os.readlink(link)).name if link.is_symlink() else None


def list_releases(service_dir: Path) -> list[str]:
    """SHAs exported under `service_dir/releases`, oldest first."""
    releases = service_dir / "releases"
    if not releases.is_dir():
        return []
    found = [p for p in releases.iterdir() if p.is_dir() and (p / "RELEASE").is_file()]
    return [p.name for p in sorted(found, key=lambda p: p.stat().st_mtime)]
