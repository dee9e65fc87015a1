"""The contract every deploy target honours: result models and a small Protocol the Prefect flow programs against."""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Literal, Protocol, get_args, runtime_checkable

from pydantic import BaseModel, Field

from flows.targets.errors import TargetConfigError, TargetError

__all__ = [
    "ENVIRONMENTS",
    "SERVICES",
    "Action",
    "DeployResult",
    "DeployTarget",
    "E2ECheck",
    "E2EReport",
    "EnvState",
    "Environment",
    "HistoryEntry",
    "Service",
    "ServiceState",
    "utcnow",
    "validate_env",
    "validate_service",
]

Service = Literal["backend", "frontend"]
Environment = Literal["staging", "production"]
Action = Literal["deploy", "rollback"]
SERVICES: tuple[str, ...] = get_args(Service)
ENVIRONMENTS: tuple[str, ...] = get_args(Environment)


def utcnow() -> datetime:
    """Timezone-aware now, the only clock the state files use."""
    return datetime.now(timezone.utc)


def validate_service(service: str) -> str:
    """Reject unknown services before anything runs."""
    if service not in SERVICES:
        raise TargetConfigError(f"unknown service {service!r}; expected one of: {', '.join(SERVICES)}")
    return service


def validate_env(env: str) -> str:
    """Reject unknown environments before anything runs."""
    if env not in ENVIRONMENTS:
        raise TargetConfigError(f"unknown environment {env!r}; expected one of: {', '.join(ENVIRONMENTS)}")
    return env


class DeployResult(BaseModel):
    """Outcome of one deploy or rollback call (also stored in history so a replayed key returns it verbatim)."""

    target: str
    env: Environment
    service: Service
    action: Action
    sha: str
    previous_sha: str | None = None
    ok: bool
    noop: bool = False
    replayed: bool = False
    message: str
    details: str = ""
    pid: int | None = None
    url: str | None = None
    idempotency_key: str | None = None
    duration_ms: float = 0.0
    finished_at: datetime = Field(default_factory=utcnow)

    def raise_for_failure(self) -> DeployResult:
        """Raise TargetError if the call failed (for callers that prefer exceptions); return self otherwise."""
        if not self.ok:
            raise TargetError(f"{self.action} of {self.service} {self.sha[:12]} to {self.env} failed: {self.message}")
        return self


class HistoryEntry(BaseModel):
    """One deploy/rollback attempt on one env/service, as recorded in the state file."""

    env: Environment
    service: Service
    action: Action
    sha: str
    previous_sha: str | None = None
    status: Literal["started", "succeeded", "failed", "noop"]
    # How far a call got (local targets: begun, exported, switched, health, finished): a crash leaves "started"
    # with the last phase reached, and the same idempotency key resumes this entry instead of adding one.
    phase: str = "begun"
    attempts: int = 1  # 1 + how many times an interrupted call was resumed
    started_at: datetime
    finished_at: datetime | None = None
    idempotency_key: str | None = None
    requested: str | None = None
    message: str = ""
    result: DeployResult | None = None


class E2ECheck(BaseModel):
    """One end-to-end check and how it went."""

    name: str
    ok: bool
    detail: str = ""
    duration_ms: float = 0.0


class E2EReport(BaseModel):
    """All e2e checks of one environment; `passed` only if every check is ok and there is at least one."""

    target: str
    env: Environment
    checks: list[E2ECheck]
    passed: bool
    started_at: datetime = Field(default_factory=utcnow)
    duration_ms: float = 0.0

    @classmethod
    def from_checks(cls, target: str, env: str, checks: list[E2ECheck], started_at: datetime) -> E2EReport:
        """Build a report, deriving `passed` and the total duration."""
        duration = (utcnow() - started_at).total_seconds() * 1000
        passed = bool(checks) and all(c.ok for c in checks)
        return cls(target=target, env=env, checks=checks, passed=passed, started_at=started_at, duration_ms=duration)


class ServiceState(BaseModel):
    """What runs for one service in one environment."""

    service: Service
    sha: str | None = None
    status: Literal["running", "stopped", "failed", "unknown", "never_deployed"] = "never_deployed"
    healthy: bool | None = None
    pid: int | None = None
    url: str | None = None
    started_at: datetime | None = None
    releases: list[str] = Field(default_factory=list)


class EnvState(BaseModel):
    """Snapshot of one environment: services and their deploy history (oldest first)."""

    target: str
    env: Environment
    services: dict[str, ServiceState]
    history: list[HistoryEntry]


@runtime_checkable
class DeployTarget(Protocol):
    """What the deploy flow needs from an environment, whatever actually runs the services."""

    def deploy(self, service: str, env: str, sha: str, idempotency_key: str | None = None) -> DeployResult:
        """Make `sha` the running release of `service` in `env`."""
        ...

    def rollback(
        self, service: str, env: str, to_sha: str | None = None, idempotency_key: str | None = None
    ) -> DeployResult:
        """Switch back to a release deployed before (the previous one when `to_sha` is None)."""
        ...

    def run_e2e(self, env: str) -> E2EReport:
        """Run the end-to-end checks of `env`."""
        ...

    def state(self, env: str) -> EnvState:
        """Report what runs in `env` and its deploy history."""
        ...
