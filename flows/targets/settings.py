"""Which targets a pipeline run deploys to, as one typed value (a flow parameter, so the Prefect UI shows a form).

The default needs no configuration: local staging and production under a root directory, deploying the sample app
(created on first use). Real users pass `kind="command"` with their own deploy/health/e2e command templates.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from flows.targets.base import ENVIRONMENTS
from flows.targets.command import CommandTargets
from flows.targets.config import load_command_config
from flows.targets.errors import TargetConfigError
from flows.targets.local import LocalTargets

__all__ = ["ROOT_ENV", "TargetSettings", "default_root"]

ROOT_ENV = "DEPLOY_ROOT"


def default_root() -> Path:
    """$DEPLOY_ROOT, else <PREFECT_HOME>/microagents/envs (next to the agents' state)."""
    configured = os.environ.get(ROOT_ENV, "").strip()
    if configured:
        return Path(configured).expanduser()
    home = os.environ.get("PREFECT_HOME") or str(Path.home() / ".prefect")
    return Path(home).expanduser() / "microagents" / "envs"


class TargetSettings(BaseModel):
    """Where the pipeline deploys: `local` sample environments (default) or `command` targets you configure."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    kind: Literal["local", "command"] = Field(
        default="local", description="local: release directories and loopback processes; command: your own commands.")
    root: str | None = Field(
        default=None, description=f"local: directory for staging/ and production/ (default ${ROOT_ENV}, else "
                                  "$PREFECT_HOME/microagents/envs).")
    repo: str | None = Field(
        default=None, description="local: the git repository to deploy (default: the sample app in <root>/sample-app, "
                                  "created on first use).")
    commands: dict[str, Any] | str | None = Field(
        default=None, description="command: the command-target config as a mapping, or the path of a .yaml/.json file.")

    def build(self) -> LocalTargets | CommandTargets:
        """The live target object; every problem is a TargetConfigError saying what to change, before anything runs."""
        if self.kind == "command":
            return self._command()
        if self.commands is not None:
            raise TargetConfigError("targets.commands is set but targets.kind is 'local'; set kind: command to use it")
        return self._local()

    def _local(self) -> LocalTargets:
        root = Path(self.root).expanduser() if self.root else default_root()
        if root.exists() and not root.is_dir():
            raise TargetConfigError(f"targets.root {root} is a file; point it at a directory (created if missing)")
        if self.repo:
            repo = Path(self.repo).expanduser()
            if not (repo / ".git").exists():
                raise TargetConfigError(f"targets.repo {repo} is not a git repository; point it at a clone, or "
                                        "leave it empty to deploy the sample app")
        else:
            from flows.sample_app import SampleAppError, create_sample_app

            try:
                repo = Path(create_sample_app(root / "sample-app").repo)
            except SampleAppError as exc:
                raise TargetConfigError(f"cannot create the sample app: {exc}") from None
        root.mkdir(parents=True, exist_ok=True)
        return LocalTargets(root / "environments", repo)

    def _command(self) -> CommandTargets:
        if self.commands is None:
            raise TargetConfigError("targets.kind is 'command' but targets.commands is empty; pass the config as a "
                                    "mapping or the path of a .yaml/.json file")
        if self.root or self.repo:
            raise TargetConfigError("targets.root and targets.repo are for kind 'local'; with kind 'command' put "
                                    "`repo:` and `state_file:` inside targets.commands")
        try:
            source = self.commands if isinstance(self.commands, dict) else Path(self.commands).expanduser()
            config = load_command_config(source)
        except ValidationError as exc:
            problems = "; ".join(f"{'.'.join(map(str, e['loc'])) or '(top)'}: {e['msg']}" for e in exc.errors()[:5])
            raise TargetConfigError(f"invalid command-target config ({exc.error_count()} problem(s)): {problems}") \
                from None
        missing = [env for env in ENVIRONMENTS if env not in config.environments]
        if missing:
            raise TargetConfigError(f"the pipeline deploys to staging and production; add environments."
                                    f"{' and environments.'.join(missing)} to the command-target config")
        return CommandTargets(config)
