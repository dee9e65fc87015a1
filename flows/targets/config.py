"""Typed configuration of command-based targets, validated up front so a typo fails before any command runs."""

from __future__ import annotations

import json
import shlex
import string
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, ValidationInfo, field_validator, model_validator

from flows.targets.base import SERVICES, Environment, Service
from flows.targets.environment import check_env, check_pass_env
from flows.targets.errors import TargetConfigError

__all__ = ["ALLOWED_PLACEHOLDERS", "CommandDefaults", "CommandSpec", "CommandTargetsConfig", "EnvironmentCommands",
           "ServiceCommands", "load_command_config", "placeholders"]

ALLOWED_PLACEHOLDERS: dict[str, frozenset[str]] = {
    "deploy": frozenset({"service", "env", "sha"}),
    "rollback": frozenset({"service", "env", "sha"}),
    "health": frozenset({"service", "env", "sha"}),
    "e2e": frozenset({"env"}),
}
_REQUIRED_PLACEHOLDERS = {"deploy": {"sha"}, "rollback": {"sha"}}


def placeholders(template: str) -> set[str]:
    """Names used as {name} in `template`; ValueError for bad brace syntax, positional `{}` or `{x!r}`/`{x:>4}`."""
    names = set()
    try:
        parsed = list(string.Formatter().parse(template))
    except ValueError as exc:
        raise ValueError(f"bad braces in {template!r} ({exc}); write {{{{ and }}}} for literal braces") from None
    for _, name, spec, conversion in parsed:
        if name is None:
            continue
        if not name.isidentifier() or spec or conversion:
            shown = name + (f"!{conversion}" if conversion else "") + (f":{spec}" if spec else "")
            raise ValueError(f"placeholder {{{shown}}} in {template!r} is not a plain {{name}}")
        names.add(name)
    return names


def _check_template(kind: str, template: str) -> None:
    allowed = ALLOWED_PLACEHOLDERS[kind]
    used = placeholders(template)
    unknown = sorted(used - allowed)
    if unknown:
        raise ValueError(f"{kind} command {template!r} uses unknown placeholder(s) "
                         f"{', '.join('{' + u + '}' for u in unknown)}; allowed: "
                         f"{', '.join('{' + a + '}' for a in sorted(allowed))}")
    missing = sorted(_REQUIRED_PLACEHOLDERS.get(kind, set()) - used)
    if missing:
        raise ValueError(f"{kind} command {template!r} must contain {', '.join('{' + m + '}' for m in missing)}")


class _ChildEnvironment(BaseModel):
    """What a command's process gets besides flows.targets.environment.BASE_ENV (never the worker's whole env)."""

    pass_env: list[str] = Field(default_factory=list, description="variables copied from the worker's environment")
    env: dict[str, str] = Field(default_factory=dict, description="fixed variables (no secrets: use pass_env)")

    @field_validator("pass_env")
    @classmethod
    def _pass_env(cls, value: list[str]) -> list[str]:
        return check_pass_env(value)

    @field_validator("env")
    @classmethod
    def _env(cls, value: dict[str, str]) -> dict[str, str]:
        return check_env(value)


class CommandSpec(_ChildEnvironment):
    """One command template; a plain string in the config is shorthand for `{command: ...}`."""

    model_config = ConfigDict(extra="forbid")
    command: str = Field(min_length=1)
    shell: bool | None = None
    timeout_seconds: float | None = Field(default=None, gt=0)
    cwd: Path | None = None

    @model_validator(mode="before")
    @classmethod
    def _from_string(cls, value: Any) -> Any:
        return {"command": value} if isinstance(value, str) else value


class CommandDefaults(_ChildEnvironment):
    """Values used by every command that does not set its own (`pass_env` and `env` add up with the command's)."""

    model_config = ConfigDict(extra="forbid")
    shell: bool = False
    timeout_seconds: float = Field(default=300.0, gt=0)
    cwd: Path | None = None
    output_limit: int = Field(default=4000, ge=200, description="characters of stdout/stderr kept per command")


class ServiceCommands(BaseModel):
    """Commands of one service in one environment; rollback defaults to the deploy command with the older SHA."""

    model_config = ConfigDict(extra="forbid")
    deploy: CommandSpec
    health: CommandSpec
    rollback: CommandSpec | None = None

    @field_validator("deploy", "health", "rollback")
    @classmethod
    def _placeholders(cls, spec: CommandSpec | None, info: ValidationInfo) -> CommandSpec | None:
        if spec is not None:
            _check_template(str(info.field_name), spec.command)
        return spec


class EnvironmentCommands(BaseModel):
    """Commands of one environment: both services, plus named e2e commands (a single string means one named 'e2e')."""

    model_config = ConfigDict(extra="forbid")
    services: dict[Service, ServiceCommands]
    e2e: dict[str, CommandSpec] = Field(default_factory=dict)

    @field_validator("e2e", mode="before")
    @classmethod
    def _single_e2e(cls, value: Any) -> Any:
        return {"e2e": value} if isinstance(value, (str, CommandSpec)) else value

    @field_validator("e2e")
    @classmethod
    def _e2e_placeholders(cls, value: dict[str, CommandSpec]) -> dict[str, CommandSpec]:
        for name, spec in value.items():
            try:
                _check_template("e2e", spec.command)
            except ValueError as exc:
                raise ValueError(f"e2e.{name}: {exc}") from None
        return value

    @field_validator("services")
    @classmethod
    def _both_services(cls, value: dict[str, ServiceCommands]) -> dict[str, ServiceCommands]:
        missing = [s for s in SERVICES if s not in value]
        if missing:
            raise ValueError(f"missing commands for service(s) {', '.join(missing)}; configure all of: "
                             f"{', '.join(SERVICES)}")
        return value


class CommandTargetsConfig(BaseModel):
    """Top-level config: defaults, per-environment commands, optional git repo (to resolve tags) and state file."""

    model_config = ConfigDict(extra="forbid")
    defaults: CommandDefaults = Field(default_factory=CommandDefaults)
    environments: dict[Environment, EnvironmentCommands] = Field(min_length=1)
    repo: Path | None = None
    state_file: Path = Path(".deploy-state.json")
    _base_dir: Path = PrivateAttr(default_factory=Path.cwd)

    @model_validator(mode="after")
    def _splittable(self) -> CommandTargetsConfig:
        for where, spec in self.iter_commands():
            if not (self.defaults.shell if spec.shell is None else spec.shell):
                try:
                    shlex.split(spec.command)
                except ValueError as exc:
                    raise ValueError(f"{where}: cannot split {spec.command!r} into arguments ({exc}); "
                                     f"fix the quoting or set shell: true") from None
        return self

    def iter_commands(self) -> list[tuple[str, CommandSpec]]:
        """Every command with its dotted location in the config (for messages)."""
        found: list[tuple[str, CommandSpec]] = []
        for env, env_cfg in self.environments.items():
            for service, cmds in env_cfg.services.items():
                for kind in ("deploy", "health", "rollback"):
                    spec = getattr(cmds, kind)
                    if spec is not None:
                        found.append((f"environments.{env}.services.{service}.{kind}", spec))
            found += [(f"environments.{env}.e2e.{name}", spec) for name, spec in env_cfg.e2e.items()]
        return found

    @property
    def base_dir(self) -> Path:
        """Directory relative paths are resolved against (the config file's directory, or the cwd for dicts)."""
        return self._base_dir

    def resolve_path(self, path: Path | None) -> Path:
        """`path` made absolute against `base_dir` (None -> base_dir)."""
        if path is None:
            return self._base_dir
        path = path.expanduser()
        return path if path.is_absolute() else (self._base_dir / path)


def load_command_config(
    source: str | Path | Mapping[str, Any], base_dir: str | Path | None = None
) -> CommandTargetsConfig:
    """Load from a .yaml/.yml/.json file or a dict (flow parameters); pydantic ValidationError or TargetConfigError."""
    if isinstance(source, Mapping):
        data: Any = dict(source)
        base = Path(base_dir) if base_dir is not None else Path.cwd()
    else:
        path = Path(source)
        if not path.is_file():
            raise TargetConfigError(f"command target config {path} does not exist")
        text = path.read_text(encoding="utf-8")
        try:
            if path.suffix == ".json":
                data = json.loads(text)
            elif path.suffix in (".yaml", ".yml"):
                data = yaml.safe_load(text)
            else:
                raise TargetConfigError(f"{path}: use a .json, .yaml or .yml file")
        except (ValueError, yaml.YAMLError) as exc:
            raise TargetConfigError(f"{path} is not valid {path.suffix[1:].upper()}: {exc}") from None
        base = Path(base_dir) if base_dir is not None else path.parent
    if not isinstance(data, dict):
        raise TargetConfigError(f"command target config must be a mapping with 'environments', "
                                f"got {type(data).__name__}")
    config = CommandTargetsConfig.model_validate(data)
    config._base_dir = base.resolve()
    return config
