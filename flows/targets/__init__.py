"""Deploy targets (plain Python, no Prefect): local sample-app environments and user-configured command targets."""

from __future__ import annotations

from flows.targets.base import (
    ENVIRONMENTS,
    SERVICES,
    DeployResult,
    DeployTarget,
    E2ECheck,
    E2EReport,
    EnvState,
    HistoryEntry,
    ServiceState,
)
from flows.targets.command import CommandTargets
from flows.targets.config import CommandTargetsConfig, load_command_config
from flows.targets.errors import (
    IdempotencyConflictError,
    ReleaseNotFoundError,
    TargetConfigError,
    TargetError,
    UnknownRevisionError,
)
from flows.targets.local import LocalTargets
from flows.targets.settings import TargetSettings

__all__ = [
    "ENVIRONMENTS",
    "SERVICES",
    "CommandTargets",
    "CommandTargetsConfig",
    "DeployResult",
    "DeployTarget",
    "E2ECheck",
    "E2EReport",
    "EnvState",
    "HistoryEntry",
    "IdempotencyConflictError",
    "LocalTargets",
    "ReleaseNotFoundError",
    "ServiceState",
    "TargetConfigError",
    "TargetError",
    "TargetSettings",
    "UnknownRevisionError",
    "load_command_config",
]
