"""A PostgreSQL cluster of its own for a Prefect server: `initdb` into a fresh data directory, `postgres` as a child
process on 127.0.0.1 and a free port, a generated password, the `prefect` database with `pg_trgm`.

Postgres refuses to run as root. As root, the cluster belongs to an unprivileged account: Debian's `postgres` if it
exists, else a system account `microagents` created with `useradd`; its data directory must be reachable by that
account, so when the given directory is not (e.g. under a 0700 temporary directory of root's) the cluster lives in a
new directory under /tmp, removed on `stop()`. Not root: it runs as the current user.

Binaries: `bindir` if given, else `$PG_BINDIR`, else `initdb` on PATH, else the newest /usr/lib/postgresql/*/bin
(Debian, Ubuntu). Missing: `PostgresNotFound` says how to install them (`apt-get install postgresql`).
"""

from __future__ import annotations

import os
import pwd
import re
import secrets
import shutil
import signal
import stat
import subprocess
import tempfile
from collections.abc import Callable
from pathlib import Path

from prefect_micro_agents.stack.processes import Account, Component, ComponentStartError, log_tail

__all__ = ["LocalPostgres", "PostgresNotFound", "find_bindir", "unprivileged_account"]

HOST = "127.0.0.1"
NAME = "postgres"
DEFAULT_ACCOUNTS = ("postgres",)
CREATED_ACCOUNT = "microagents"
_SOCKET_PATH_MAX = 100  # sun_path is 108 bytes; Postgres appends /.s.PGSQL.<port>


class PostgresNotFound(ComponentStartError):
    def __init__(self, message: str) -> None:
        super().__init__(NAME, message)


def find_bindir(bindir: str | os.PathLike[str] | None = None) -> Path:
    """The directory holding initdb, postgres and psql."""
    candidates: list[Path] = []
    if bindir is not None:
        candidates.append(Path(bindir))
    elif os.environ.get("PG_BINDIR"):
        candidates.append(Path(os.environ["PG_BINDIR"]))
    else:
        on_path = shutil.which("initdb")
        if on_path:
            candidates.append(Path(os.path.realpath(on_path)).parent)
        versions = sorted(Path("/usr/lib/postgresql").glob("*/bin"),
                          key=lambda p: int(p.parent.name) if p.parent.name.isdigit() else 0, reverse=True)
        candidates += versions
    for folder in candidates:
        if all((folder / tool).is_file() for tool in ("initdb", "postgres", "psql")):
            return folder
    looked = ", ".join(str(c) for c in candidates) or "PATH and /usr/lib/postgresql/*/bin"
    raise PostgresNotFound(
        f"PostgreSQL's server binaries (initdb, postgres, psql) were not found (looked in {looked}). Install them: "
        "`apt-get install -y postgresql` on Debian/Ubuntu (scripts/install-system-deps does it when root), or set "
        "PG_BINDIR to the directory that holds them.")


def unprivileged_account(name: str | None = None) -> Account:
    """Who runs Postgres: the current user unless it is root; as root `name`, else Debian's `postgres` account, else
    a system account `microagents` (created)."""
    if os.geteuid() != 0:
        me = pwd.getpwuid(os.geteuid())
        return Account(me.pw_name, me.pw_uid, me.pw_gid, me.pw_dir)
    for candidate in ([name] if name else [*DEFAULT_ACCOUNTS, CREATED_ACCOUNT]):
        try:
            entry = pwd.getpwnam(candidate)
        except KeyError:
            continue
        if entry.pw_uid != 0:
            return Account(entry.pw_name, entry.pw_uid, entry.pw_gid, entry.pw_dir)
    wanted = name or CREATED_ACCOUNT
    useradd = shutil.which("useradd")
    if useradd is None:
        raise PostgresNotFound(f"running as root, Postgres needs an unprivileged account, and there is no "
                               f"{wanted!r} and no useradd to create one; create one and pass its name")
    done = subprocess.run([useradd, "--system", "--no-create-home", "--shell", "/usr/sbin/nologin", wanted],
                          capture_output=True, text=True)
    if done.returncode != 0 and "already exists" not in done.stderr:
        raise PostgresNotFound(f"could not create the account {wanted!r} for Postgres: {done.stderr.strip()}")
    entry = pwd.getpwnam(wanted)
    return Account(entry.pw_name, entry.pw_uid, entry.pw_gid, entry.pw_dir)


def _reachable(path: Path, account: Account) -> bool:
    """Can `account` traverse every directory above `path`?"""
    for folder in path.parents:
        st = folder.stat()
        if st.st_uid == account.uid:
            bit = stat.S_IXUSR
        elif st.st_gid == account.gid:
            bit = stat.S_IXGRP
        else:
            bit = stat.S_IXOTH
        if not st.st_mode & bit:
            return False
    return True


class LocalPostgres:
    """A Postgres cluster in `root` (data directory `root/data`, log `root/postgres.log`) for the `prefect` role and
    database. `url` is the value for PREFECT_SERVER_DATABASE_CONNECTION_URL once started."""

    def __init__(
        self,
        root: Path,
        *,
        port: int,
        account: str | None = None,
        bindir: str | os.PathLike[str] | None = None,
        database: str = "prefect",
        role: str = "prefect",
        progress: Callable[[str], None] | None = None,
        log_path: Path | None = None,
        startup_timeout: float = 60.0,
    ) -> None:
        self.root = root.resolve()
        self.port = port
        self.account_name = account
        self.bindir_arg = bindir
        self.database = database
        self.role = role
        self.progress = progress
        self.startup_timeout = startup_timeout
        self.log_path = log_path or self.root / "postgres.log"
        self.password = ""
        self.data_dir = self.root / "data"
        self.account: Account | None = None
        self.component: Component | None = None
        self._temporary: Path | None = None

    @property
    def url(self) -> str:
        return f"postgresql+asyncpg://{self.role}:{self.password}@{HOST}:{self.port}/{self.database}"

    def libpq_env(self) -> dict[str, str]:
        """PG* variables for psql and other libpq clients (the password included)."""
        return {"PGHOST": HOST, "PGPORT": str(self.port), "PGUSER": self.role, "PGPASSWORD": self.password,
                "PGDATABASE": self.database}

    def start(self) -> LocalPostgres:
        try:
            return self._start()
        except BaseException:  # a temporary cluster directory or a half-started server is not left behind
            self.stop()
            raise

    def _start(self) -> LocalPostgres:
        bindir = find_bindir(self.bindir_arg)
        self.bindir = bindir
        self.account = account = unprivileged_account(self.account_name)
        self.root.mkdir(parents=True, exist_ok=True)
        if not _reachable(self.data_dir, account):
            self._temporary = Path(tempfile.mkdtemp(prefix="microagents-postgres-"))
            os.chown(self._temporary, account.uid, account.gid)
            self.data_dir = self._temporary / "data"
            self._say(f"{self.root} is not reachable by the account {account.name!r}; the cluster goes in "
                      f"{self.data_dir} (removed on stop)")
        password_file = self.root / "password"
        if (self.data_dir / "PG_VERSION").exists() and password_file.exists():
            self.password = password_file.read_text().strip()
        else:
            self.password = secrets.token_hex(16)
            self._initdb(bindir, account)
            password_file.write_text(self.password + "\n")
            password_file.chmod(0o600)
        socket_dir = str(self.data_dir) if len(str(self.data_dir)) < _SOCKET_PATH_MAX else ""
        argv = [str(bindir / "postgres"), "-D", str(self.data_dir), "-p", str(self.port),
                "-c", f"listen_addresses={HOST}", "-c", f"unix_socket_directories={socket_dir}"]
        self.component = Component(
            NAME, argv, log_path=self.log_path, env=_plain_env(account), cwd=self.data_dir.parent,
            ready=self._answers, startup_timeout=self.startup_timeout,
            stop_signal=signal.SIGINT,  # "fast" shutdown: SIGTERM ("smart") waits for every client to leave
            account=account, progress=self.progress)
        self.component.start()
        self._create_database()
        return self

    def _initdb(self, bindir: Path, account: Account) -> None:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        os.chown(self.data_dir, account.uid, account.gid)
        self.data_dir.chmod(0o700)
        if any(self.data_dir.iterdir()):
            raise ComponentStartError(NAME, f"{self.data_dir} is not empty but holds no cluster; remove it")
        pwfile = self.data_dir.parent / f".pw-{secrets.token_hex(4)}"
        pwfile.write_text(self.password + "\n")
        os.chown(pwfile, account.uid, account.gid)
        pwfile.chmod(0o600)
        argv = [str(bindir / "initdb"), "-D", str(self.data_dir), "-U", self.role, f"--pwfile={pwfile}",
                "--auth-host=scram-sha-256", "--auth-local=scram-sha-256", "--encoding=UTF8", "--no-locale"]
        self._say(f"initdb {self.data_dir} (as {account.name}) ...")
        try:
            with open(self.log_path, "ab") as log:
                done = subprocess.run(argv, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                                      cwd=self.data_dir.parent, env=_plain_env(account), timeout=300,
                                      user=account.uid if account.uid != os.geteuid() else None,
                                      group=account.gid if account.uid != os.geteuid() else None,
                                      extra_groups=[] if account.uid != os.geteuid() else None)
        finally:
            pwfile.unlink(missing_ok=True)
        if done.returncode != 0:
            raise ComponentStartError(NAME, f"initdb failed (code {done.returncode}); last lines of "
                                            f"{self.log_path}:\n{log_tail(self.log_path)}")

    def psql(self, sql: str, *, database: str | None = None, timeout: float = 30) -> str:
        """Run one SQL statement with psql over TCP as the `prefect` role; its unaligned output."""
        env = {**_plain_env(None), **self.libpq_env(), "PGDATABASE": database or self.database,
               "PGCONNECT_TIMEOUT": "5"}
        done = subprocess.run([str(self.bindir / "psql"), "-v", "ON_ERROR_STOP=1", "-tAc", sql],
                              capture_output=True, text=True, env=env, timeout=timeout)
        if done.returncode != 0:
            raise RuntimeError(f"psql failed: {done.stderr.strip()}")
        return done.stdout.strip()

    def _answers(self) -> bool:
        return self.psql("select 1", database="postgres", timeout=10) == "1"

    def _create_database(self) -> None:
        if not re.fullmatch(r"[a-z_][a-z0-9_]*", self.database):
            raise ValueError(f"database name {self.database!r}: lowercase letters, digits and _ only")
        exists = self.psql(f"select 1 from pg_database where datname = '{self.database}'", database="postgres")
        if exists != "1":
            self.psql(f"create database {self.database}", database="postgres")
        # Prefect's migrations create pg_trgm (contrib) themselves; created here first so that a missing contrib
        # package fails here, naming Postgres, rather than in the middle of a migration.
        self.psql("create extension if not exists pg_trgm")

    def stop(self) -> None:
        if self.component is not None:
            self.component.stop()
        if self._temporary is not None:
            shutil.rmtree(self._temporary, ignore_errors=True)
            self._temporary = None

    def _say(self, message: str) -> None:
        if self.progress is not None:
            self.progress(message)


def _plain_env(account: Account | None) -> dict[str, str]:
    """A small, explicit environment for Postgres' programs (no PG* or PREFECT_* of the caller's)."""
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "LANG": "C", "LC_ALL": "C"}
    if account is not None:
        env.update(HOME=account.home, USER=account.name, LOGNAME=account.name)
    return env
