"""Command-based targets: the deploy flow drives a user's own deploy/health/rollback/e2e scripts through one config."""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from prefect_micro_agents.failpoints import failpoint
from flows.targets.base import (
    SERVICES,
    DeployResult,
    E2ECheck,
    E2EReport,
    EnvState,
    HistoryEntry,
    ServiceState,
    utcnow,
    validate_env,
    validate_service,
)
from flows.targets.config import CommandSpec, CommandTargetsConfig, EnvironmentCommands, load_command_config
from flows.targets.environment import child_env
from flows.targets.errors import ReleaseNotFoundError, TargetConfigError, UnknownRevisionError
from flows.targets.history import find_entry, open_entry, previous_release, replay_result
from flows.targets.releases import resolve_ref
from flows.targets.shell import CommandResult, run_command
from flows.targets.state import StateStore, TargetStateFile

__all__ = ["CommandTargets"]

logger = logging.getLogger(__name__)
_REF = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._/-]{0,199}$")


def _last_words(run: CommandResult, limit: int = 160) -> str:
    """The end of a failed command's output (stderr, else stdout) for the message the agent reads: usually the why."""
    text = " ".join((run.stderr.strip() or run.stdout.strip()).split())
    if not text:
        return ""
    return ": " + (text if len(text) <= limit else "..." + text[-(limit - 3):])


class CommandTargets:
    """Deploy by running configured commands; history, idempotency and `state` live in the config's state file."""

    kind = "command"

    def __init__(self, config: CommandTargetsConfig | Mapping[str, Any] | str | Path) -> None:
        self.config = config if isinstance(config, CommandTargetsConfig) else load_command_config(config)
        for where, spec in self.config.iter_commands():
            cwd = self._cwd(spec)
            if not cwd.is_dir():
                raise TargetConfigError(f"{where}: working directory {cwd} does not exist")
        self.repo = self.config.resolve_path(self.config.repo) if self.config.repo else None
        self.store = StateStore(self.config.resolve_path(self.config.state_file), self.kind)

    def _cwd(self, spec: CommandSpec) -> Path:
        return self.config.resolve_path(spec.cwd if spec.cwd is not None else self.config.defaults.cwd)

    def _env(self, env: str) -> EnvironmentCommands:
        validate_env(env)
        if env not in self.config.environments:
            raise TargetConfigError(f"environment {env!r} is not configured; add environments.{env} to the config")
        return self.config.environments[env]  # type: ignore[index]

    def resolve(self, ref: str) -> str:
        """Full SHA via the configured repo, or the ref itself (validated as a safe name) when there is none."""
        if self.repo is not None:
            return resolve_ref(self.repo, ref)
        if not isinstance(ref, str) or not _REF.match(ref) or ".." in ref:
            raise UnknownRevisionError(f"{ref!r} is not a valid SHA, tag or branch name")
        return ref

    def _run(self, name: str, spec: CommandSpec, values: dict[str, str]) -> CommandResult:
        d = self.config.defaults
        # An explicit environment (flows/targets/environment.py): never the worker's own, with the model's keys.
        proc_env = child_env([*d.pass_env, *spec.pass_env], {**d.env, **spec.env})
        proc_env.update({f"DEPLOY_{k.upper()}": v for k, v in values.items()})
        result = run_command(name, spec.command, values, shell=d.shell if spec.shell is None else spec.shell,
                             cwd=self._cwd(spec), timeout=spec.timeout_seconds or d.timeout_seconds,
                             output_limit=d.output_limit, env=proc_env)
        logger.info("%s: %s", name, result.summary().splitlines()[0])
        return result

    def deploy(self, service: str, env: str, sha: str, idempotency_key: str | None = None) -> DeployResult:
        """Run the deploy command, then the health command; a no-op if `sha` is current and healthy."""
        cmds = self._env(env).services[validate_service(service)]  # type: ignore[index]
        full = self.resolve(sha)
        with self.store.transaction() as st:
            entry = find_entry(st.history, idempotency_key, env, service, "deploy", full)
            if entry is not None and entry.result is not None:
                return replay_result(entry)
            return self._activate(st, entry, "deploy", cmds.deploy, service, env, full, idempotency_key, sha)

    def rollback(self, service: str, env: str, to_sha: str | None = None,
                 idempotency_key: str | None = None) -> DeployResult:
        """Run the rollback command (or deploy command) for a release this target deployed before."""
        cmds = self._env(env).services[validate_service(service)]  # type: ignore[index]
        full = self.resolve(to_sha) if to_sha else None
        with self.store.transaction() as st:
            entry = find_entry(st.history, idempotency_key, env, service, "rollback", full)
            if entry is not None and entry.result is not None:
                return replay_result(entry)
            full = full or (entry.sha if entry is not None else None)
            deployed = {h.sha for h in st.history if (h.env, h.service, h.status) == (env, service, "succeeded")}
            if full is None:
                full = previous_release(st.history, env, service, st.record(env, service).sha)
                if full is None:
                    raise ReleaseNotFoundError(f"no previous release of {service} in {env} to roll back to")
            if full not in deployed:
                raise ReleaseNotFoundError(f"{full[:12]} was never deployed to {service} in {env}; deployed there: "
                                           f"{', '.join(sorted(s[:12] for s in deployed)) or 'none'}")
            return self._activate(st, entry, "rollback", cmds.rollback or cmds.deploy, service, env, full,
                                  idempotency_key, to_sha)

    def _activate(self, st: TargetStateFile, entry: HistoryEntry | None, action: str, spec: CommandSpec,
                  service: str, env: str, sha: str, key: str | None, requested: str | None) -> DeployResult:
        """Run the command, then the health command, in one history entry per idempotency key.

        A call a crash interrupted (`entry` still started) may have run its command: it is run again in the same
        entry, so a user's deploy command must be idempotent (`kubectl set image`, a deploy script that checks
        what runs first). The health command then decides the result.
        """
        start = time.monotonic()
        rec = st.record(env, service)
        values = {"service": service, "env": env, "sha": sha}
        health_spec = self.config.environments[env].services[service].health  # type: ignore[index]
        entry = open_entry(st.history, entry, env=env, service=service, action=action, sha=sha, previous_sha=rec.sha,
                           key=key, requested=requested)
        base = dict(target=self.kind, env=env, service=service, action=action, sha=sha,
                    previous_sha=entry.previous_sha, idempotency_key=key)
        if rec.sha == sha and rec.status == "running" and entry.attempts == 1:
            health = self._run(f"{service}_health", health_spec, values)
            if health.ok:
                result = DeployResult(**base, ok=True, noop=True, details=health.summary(),
                                      message=f"{sha[:12]} is already current and healthy as {service} in {env}; "
                                              f"nothing to do")
                return self._finish(entry, "noop", result)
        self.store.save(st)
        # The command learns its call's key and attempt (DEPLOY_IDEMPOTENCY_KEY, DEPLOY_ATTEMPT): a script can
        # check what an interrupted attempt of the same call already did.
        runs = [self._run(f"{service}_{action}", spec,
                          {**values, "idempotency_key": key or "", "attempt": str(entry.attempts)})]
        if runs[0].ok:
            runs.append(self._run(f"{service}_health", health_spec, values))
        failpoint("command.deploy.ran")  # ran, but nothing of it is recorded yet
        ok = all(r.ok for r in runs)
        rec.sha, rec.status, rec.started_at = sha, "running" if ok else "failed", utcnow()
        failed = next((r for r in runs if not r.ok), None)
        message = (f"{action} of {service} {sha[:12]} to {env} done" if failed is None else
                   f"{action} of {service} {sha[:12]} to {env} FAILED: {failed.name} "
                   f"{'timed out' if failed.timed_out else f'exited {failed.exit_code}'}{_last_words(failed)}")
        result = DeployResult(**base, ok=ok, message=message, details="\n".join(r.summary() for r in runs),
                              duration_ms=round((time.monotonic() - start) * 1000, 1))
        return self._finish(entry, "succeeded" if ok else "failed", result)

    @staticmethod
    def _finish(entry: HistoryEntry, status: str, result: DeployResult) -> DeployResult:
        entry.status, entry.finished_at, entry.message, entry.result = status, utcnow(), result.message, result
        (logger.info if result.ok else logger.error)("%s", result.message)
        return result

    def run_e2e(self, env: str) -> E2EReport:
        """Each service's health command, then every configured e2e command, as checks."""
        env_cfg = self._env(env)
        started = utcnow()
        runs = []
        for service in SERVICES:
            values = {"service": service, "env": env, "sha": self._sha(env, service)}
            runs.append(self._run(f"{service}_health", env_cfg.services[service].health, values))  # type: ignore[index]
        runs += [self._run(name, spec, {"env": env}) for name, spec in env_cfg.e2e.items()]
        checks = [E2ECheck(name=r.name, ok=r.ok, detail=r.summary(), duration_ms=r.duration_ms) for r in runs]
        return E2EReport.from_checks(self.kind, env, checks, started)

    def _sha(self, env: str, service: str) -> str:
        rec = self.store.read().services.get(env, {}).get(service)
        return rec.sha if rec is not None and rec.sha else ""

    def state(self, env: str) -> EnvState:
        """Last recorded release per service (no commands are run) and the history of `env`."""
        st = self.store.read()
        services = {}
        for service in SERVICES:
            rec = st.services.get(validate_env(env), {}).get(service)
            releases = list(dict.fromkeys(h.sha for h in st.history
                                          if (h.env, h.service, h.status) == (env, service, "succeeded")))
            services[service] = ServiceState(service=service, sha=rec.sha if rec else None,
                                             status=rec.status if rec else "never_deployed",
                                             started_at=rec.started_at if rec else None, releases=releases)
        return EnvState(target=self.kind, env=env, services=services, history=[h for h in st.history if h.env == env])
