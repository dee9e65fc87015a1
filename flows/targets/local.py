"""Local staging/production: git-exported releases, an atomic `current` symlink, one loopback process per service."""

from __future__ import annotations

import logging
import sys
import time
from pathlib import Path

from prefect_micro_agents.failpoints import failpoint
from flows.targets.base import (
    ENVIRONMENTS,
    SERVICES,
    DeployResult,
    E2EReport,
    EnvState,
    HistoryEntry,
    ServiceState,
    utcnow,
    validate_env,
    validate_service,
)
from flows.targets.e2e import run_http_e2e
from flows.targets.environment import child_env
from flows.targets.errors import ReleaseNotFoundError, TargetConfigError, TargetError
from flows.targets.history import find_entry, open_entry, previous_release, replay_result
from flows.targets.httpget import http_get
from flows.targets.processes import find_free_ports, is_alive, log_tail, start_process, stop_process, wait_for_health
from flows.targets.procscan import Found, describe, listener_pid, processes_with
from flows.targets.releases import export_release, list_releases, resolve_ref, switch_current
from flows.targets.state import ServiceRecord, StateStore, TargetStateFile

__all__ = ["LocalTargets"]

logger = logging.getLogger(__name__)


class LocalTargets:
    """Staging and production as directories under `root`, deploying commits of the git repo `repo`.

    Layout: `<root>/<env>/<service>/releases/<sha>/`, `<root>/<env>/<service>/current -> releases/<sha>`,
    `<root>/<env>/<service>/logs/<sha>.log`, and `<root>/state.json` (ports, PIDs, history).
    """

    kind = "local"

    def __init__(self, root: str | Path, repo: str | Path, *, python: str | None = None,
                 health_timeout: float = 10.0, poll_interval: float = 0.05, stop_timeout: float = 5.0) -> None:
        self.root = Path(root).resolve()
        self.repo = Path(repo).resolve()
        self.python = python or sys.executable
        self.health_timeout, self.poll_interval, self.stop_timeout = health_timeout, poll_interval, stop_timeout
        self.store = StateStore(self.root / "state.json", self.kind)
        with self.store.transaction() as st:
            if st.repo and st.repo != str(self.repo):
                raise TargetConfigError(f"{self.root} deploys {st.repo}, not {self.repo}; use another root")
            st.repo = str(self.repo)
            if not st.ports:  # first initialisation: pick the fixed ports of every env/service
                free = iter(find_free_ports(len(ENVIRONMENTS) * len(SERVICES)))
                st.ports = {env: {service: next(free) for service in SERVICES} for env in ENVIRONMENTS}
            self._ports = st.ports

    def url(self, env: str, service: str) -> str:
        """Base URL of a service in an environment (its port never changes for this root)."""
        return f"http://127.0.0.1:{self._ports[validate_env(env)][validate_service(service)]}"

    def service_dir(self, env: str, service: str) -> Path:
        """Directory holding the releases, `current` link and logs of one env/service."""
        return self.root / env / service

    def resolve(self, ref: str) -> str:
        """Full SHA of a full/short SHA or tag; UnknownRevisionError otherwise."""
        return resolve_ref(self.repo, ref)

    def deploy(self, service: str, env: str, sha: str, idempotency_key: str | None = None) -> DeployResult:
        """Export `sha`, switch `current` to it and restart the service; a no-op if it already runs healthy.

        A call with the key of one that a crash interrupted finishes that call (see `_activate`)."""
        validate_service(service)
        validate_env(env)
        full = self.resolve(sha)
        with self.store.transaction() as st:
            entry = find_entry(st.history, idempotency_key, env, service, "deploy", full)
            if entry is not None and entry.result is not None:
                return replay_result(entry)
            result = self._activate(st, entry, "deploy", service, env, full, idempotency_key, sha)
        failpoint("local.deploy.finished")
        return result

    def rollback(self, service: str, env: str, to_sha: str | None = None,
                 idempotency_key: str | None = None) -> DeployResult:
        """Switch `current` back to an already deployed release (default: the previous one) and restart."""
        validate_service(service)
        validate_env(env)
        full = self.resolve(to_sha) if to_sha else None
        with self.store.transaction() as st:
            entry = find_entry(st.history, idempotency_key, env, service, "rollback", full)
            if entry is not None and entry.result is not None:
                return replay_result(entry)
            full = full or (entry.sha if entry is not None else None)
            if full is None:
                full = previous_release(st.history, env, service, st.record(env, service).sha)
                if full is None:
                    raise ReleaseNotFoundError(f"no previous release of {service} in {env} to roll back to")
            if not (self.service_dir(env, service) / "releases" / full / "RELEASE").is_file():
                known = ", ".join(s[:12] for s in list_releases(self.service_dir(env, service))) or "none"
                raise ReleaseNotFoundError(f"{full[:12]} was never deployed to {service} in {env}; "
                                           f"releases there: {known}")
            result = self._activate(st, entry, "rollback", service, env, full, idempotency_key, to_sha)
        failpoint("local.deploy.finished")
        return result

    def _activate(self, st: TargetStateFile, entry: HistoryEntry | None, action: str, service: str, env: str,
                  sha: str, key: str | None, requested: str | None) -> DeployResult:
        """Make `sha` the running release of env/service, recording each phase as it completes.

        Crash safety: every phase is saved before the next begins, and the service's pid right after it starts, but
        a worker can die between any two steps. So this converges from whatever is there rather than assuming a
        clean slate: it finds every process of ours for env/service (recorded or left by an interrupted attempt),
        adopts one that already serves `sha` healthily on the service's port, stops the rest, and starts a new
        process only when none is left; it never reports success unless the process answering on the port is
        the one it recorded. An interrupted call (`entry` still started) is finished in its own history entry.
        """
        start = time.monotonic()
        rec = st.record(env, service)
        url, port, service_dir = self.url(env, service), self._ports[env][service], self.service_dir(env, service)
        entry = open_entry(st.history, entry, env=env, service=service, action=action, sha=sha, previous_sha=rec.sha,
                           key=key, requested=requested)
        base = dict(target=self.kind, env=env, service=service, action=action, sha=sha,
                    previous_sha=entry.previous_sha, url=url, idempotency_key=key)
        ours = self._ours(env, service)
        serving = next((p for p in ours if self._serves(p, service_dir / "releases" / sha, port, url)), None)
        if serving is not None and serving.pid == rec.pid and rec.sha == sha and entry.attempts == 1:
            result = DeployResult(**base, ok=True, noop=True, pid=rec.pid,
                                  message=f"{sha[:12]} already runs healthy as {service} in {env} "
                                          f"(pid {rec.pid}); nothing to do")
            return self._finish(entry, "noop", result)
        try:
            pid, ok, why, details = self._converge(st, entry, rec, service, env, sha, ours, serving)
        except Exception as exc:
            entry.status, entry.finished_at, entry.message = "failed", utcnow(), f"{type(exc).__name__}: {exc}"
            raise
        duration = (time.monotonic() - start) * 1000
        if ok:
            message = f"{action} of {service} {sha[:12]} to {env} done (pid {pid}, {why})"
        else:
            message = (f"{action} of {service} {sha[:12]} to {env} FAILED: {why}. Release {sha} is current "
                       f"but not running; roll back or deploy a fixed release")
        result = DeployResult(**base, ok=ok, pid=pid if ok else None, message=message, details=details,
                              duration_ms=round(duration, 1))
        return self._finish(entry, "succeeded" if ok else "failed", result)

    def _phase(self, st: TargetStateFile, entry: HistoryEntry, phase: str) -> None:
        """Record that a phase completed (durably: the state file is fsynced), then let a crash test stop here."""
        entry.phase = phase
        self.store.save(st)
        failpoint(f"local.deploy.{phase}")

    def _converge(self, st: TargetStateFile, entry: HistoryEntry, rec: ServiceRecord, service: str, env: str,
                  sha: str, ours: list[Found], serving: Found | None) -> tuple[int, bool, str, str]:
        service_dir, port = self.service_dir(env, service), self._ports[env][service]
        squatter = listener_pid(port)
        if squatter is not None and squatter not in {p.pid for p in ours}:
            raise TargetError(f"port {port} of {service} in {env} is taken by {describe(squatter)}, which is not a "
                              f"service of this target; stop it, then deploy again (nothing was changed)")
        release = export_release(self.repo, sha, service_dir / "releases")
        self._phase(st, entry, "exported")
        keep = serving.pid if serving is not None else None
        for process in ours:
            if process.pid != keep:
                stop_process(process.pid, process.identity, self.stop_timeout)
        if rec.pid is not None and rec.pid != keep:  # recorded but not found by its command line: stop it anyway
            stop_process(rec.pid, rec.pid_identity, self.stop_timeout)
        rec.pid, rec.pid_identity, rec.status = None, None, "stopped"
        switch_current(service_dir, release)
        rec.sha, rec.port = sha, port
        self._phase(st, entry, "switched")
        if serving is not None:  # an interrupted attempt already started it, and it is healthy: adopt it
            rec.pid, rec.pid_identity, rec.started_at, rec.status = serving.pid, serving.identity, utcnow(), "running"
            self.store.save(st)
            logger.warning("adopted pid %d, which already served %s %s in %s", serving.pid, service, sha[:12], env)
            return serving.pid, True, f"adopted: it already served {sha[:12]} on port {port}", ""
        current = service_dir / "current"
        argv = [self.python, str(current / service / "server.py"), "--port", str(port), "--env", env]
        if service == "frontend":
            argv += ["--backend-url", self.url(env, "backend")]
        log_path = service_dir / "logs" / f"{sha}.log"
        # An explicit environment (flows/targets/environment.py): the sample services need nothing of the worker's.
        proc_env = child_env(env={"PYTHONUNBUFFERED": "1", "PYTHONDONTWRITEBYTECODE": "1"})
        pid, identity = start_process(argv, cwd=current, log_path=log_path, env=proc_env)
        failpoint("local.deploy.started")  # the worst moment to die: a process nobody has recorded yet
        rec.pid, rec.pid_identity, rec.started_at, rec.status = pid, identity, utcnow(), "running"
        self._phase(st, entry, "health")
        ok, why = wait_for_health(f"{self.url(env, service)}/health", pid, self.health_timeout, self.poll_interval)
        answering = listener_pid(port) if ok else None
        if ok and answering != pid:
            ok, why = False, f"{self.url(env, service)} answered, but from {describe(answering or 0)}, not pid {pid}"
        if not ok:
            stop_process(pid, identity, self.stop_timeout)
            rec.pid, rec.pid_identity, rec.status = None, None, "failed"
        return pid, ok, why, "" if ok else log_tail(log_path)

    def _ours(self, env: str, service: str) -> list[Found]:
        """Every live process of this env/service: started from its directory, on its port."""
        return processes_with(f"{self.service_dir(env, service)}/", f"--port\0{self._ports[env][service]}\0")

    @staticmethod
    def _serves(process: Found, release: Path, port: int, url: str) -> bool:
        """Runs `release`, is the process listening on `port`, and answers its health check."""
        return (process.cwd is not None and process.cwd == release.resolve() and listener_pid(port) == process.pid
                and http_get(f"{url}/health", timeout=1.0).status == 200)

    @staticmethod
    def _finish(entry: HistoryEntry, status: str, result: DeployResult) -> DeployResult:
        entry.status, entry.finished_at, entry.message, entry.result = status, utcnow(), result.message, result
        entry.phase = "finished"
        (logger.info if result.ok else logger.error)("%s", result.message)
        return result

    def run_e2e(self, env: str) -> E2EReport:
        """Run the sample app's HTTP e2e suite against `env`."""
        return run_http_e2e(self.kind, validate_env(env), self.url(env, "backend"), self.url(env, "frontend"))

    def state(self, env: str) -> EnvState:
        """What runs in `env` (sha, pid, live health) and its history, read without taking the writer lock."""
        st = self.store.read()
        services: dict[str, ServiceState] = {}
        for service in SERVICES:
            rec = st.services.get(validate_env(env), {}).get(service, ServiceRecord())
            alive = rec.pid is not None and is_alive(rec.pid, rec.pid_identity)
            status = "failed" if rec.status == "running" and not alive else rec.status
            healthy = alive and http_get(f"{self.url(env, service)}/health", timeout=0.5).status == 200
            services[service] = ServiceState(
                service=service, sha=rec.sha, status=status, healthy=healthy if rec.sha else None,
                pid=rec.pid if alive else None, url=self.url(env, service), started_at=rec.started_at,
                releases=list_releases(self.service_dir(env, service)))
        return EnvState(target=self.kind, env=env, services=services, history=[h for h in st.history if h.env == env])

    def stop_all(self) -> list[int]:
        """Stop every service process of these environments (recorded, or left by an interrupted deploy); return
        their pids."""
        pids: list[int] = []
        with self.store.transaction() as st:
            for env in ENVIRONMENTS:
                for service in SERVICES:
                    for process in self._ours(env, service):
                        stop_process(process.pid, process.identity, self.stop_timeout)
                        pids.append(process.pid)
            for env_records in st.services.values():
                for rec in env_records.values():
                    if rec.pid is not None and rec.pid not in pids:
                        stop_process(rec.pid, rec.pid_identity, self.stop_timeout)
                        pids.append(rec.pid)
                    rec.pid, rec.pid_identity = None, None
                    rec.status = "stopped" if rec.status == "running" else rec.status
        return pids
