"""The launcher server: import once, fork per flow run.

    python -m prefect_micro_agents.launcher.server --socket PATH [--preload MODULE ...] [--no-default-preload]

It imports Prefect's engine, the kit, litellm and, when installed, prefect-aws and prefect-redis (what a flow-run
process of this kit imports anyway), refuses to start if those imports left a thread running (forking a process
with threads can deadlock the child), then listens on PATH (mode 0600). For each client it forks a child that:
  * becomes the leader of a session of its own, and dies with the server (PR_SET_PDEATHSIG);
  * waits until the server has told the client its pid (a server that dies first leaves no child behind);
  * takes the client's stdin/stdout/stderr, working directory, environment and arguments;
  * rebuilds Prefect's settings and logging from that environment (Prefect reads them once, at import);
  * runs `prefect.engine` as `__main__`, as `python -m prefect.engine` does, and exits like it (atexit handlers and
    thread shutdown included: the child returns out of the server's loop before it runs the engine).
Before each fork it checks that no file it imported changed on disk (an upgrade of Prefect, litellm or the kit):
if one did, it refuses, and the client runs that flow run with a fresh interpreter instead, until the launcher is
restarted (about 10 ms per start for ~3,900 files). The server reaps each child and sends the client its exit code or signal, relays the client's signals to the child,
and SIGKILLs a child whose client went away (the worker killed it: the run must not go on unwatched).
SIGTERM or SIGINT stops the server gracefully: it stops accepting and lets running flow runs end on their own for up
to --grace seconds (a run that just suspended is finishing; stopping a worker does not stop its runs either), then
sends them SIGTERM, and SIGKILL 10 s later.
"""

from __future__ import annotations

import argparse
import ctypes
import gc
import importlib
import os
import selectors
import signal
import socket
import struct
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from prefect_micro_agents.launcher.protocol import receive, send

# Not prefect.engine itself: the child runs it as __main__, and runpy warns about a module imported before it runs.
DEFAULT_PRELOAD = ("prefect", "prefect._internal.control_listener", "prefect._internal.metrics", "prefect.flow_engine", "prefect.task_engine",
                   "prefect.runner.storage", "prefect_micro_agents.adapter", "litellm", "litellm.utils")
OPTIONAL_PRELOAD = ("prefect_aws", "prefect_aws.s3", "prefect_redis", "prefect_redis.locking")
PR_SET_PDEATHSIG = 1
MAX_SOCKET_PATH = 107  # sun_path is 108 bytes on Linux, NUL included


def _say(message: str) -> None:
    print(f"[microagents launcher] {message}", file=sys.stderr, flush=True)


@dataclass
class Job:
    """What a forked child runs once it has left the server's loop."""

    argv: list[str]
    env: dict[str, str]
    cwd: str
    fds: list[int]
    go: int  # read end of the pipe the server writes "go" to once the client knows the child's pid


@dataclass
class Child:
    pid: int
    conn: socket.socket
    run: str  # the flow run's id, for the log
    started: float = field(default_factory=time.monotonic)


@dataclass
class Server:
    path: Path
    grace: float = 300.0
    children: dict[int, Child] = field(default_factory=dict)  # by pid
    by_conn: dict[int, Child] = field(default_factory=dict)  # by the client connection's fd
    stopping: bool = False
    selector: selectors.BaseSelector = field(default_factory=selectors.DefaultSelector)
    imported: dict[str, int] = field(default_factory=dict)  # file -> mtime_ns of every module imported at start

    def serve(self) -> Job | None:
        """Accept and fork until stopped; returns None in the server, a Job in each forked child."""
        me = os.getpid()
        if len(os.fsencode(self.path)) > MAX_SOCKET_PATH:
            raise SystemExit(f"the socket path {self.path} is {len(os.fsencode(self.path))} bytes; a Unix socket's "
                             f"path may have at most {MAX_SOCKET_PATH}: choose a shorter one")
        listener = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        if self.path.exists():
            self.path.unlink()  # a stale socket of a launcher that died; connecting to it would fail anyway
        old_umask = os.umask(0o177)
        try:
            listener.bind(str(self.path))
        finally:
            os.umask(old_umask)
        listener.listen(64)
        wake_r, wake_w = os.pipe()
        os.set_blocking(wake_w, False)
        os.set_blocking(wake_r, False)
        signal.set_wakeup_fd(wake_w)
        for sig in (signal.SIGCHLD, signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, self._on_signal)
        selector = self.selector
        selector.register(listener, selectors.EVENT_READ, "accept")
        selector.register(wake_r, selectors.EVENT_READ, "wake")
        _say(f"ready on {self.path} (pid {me})")
        job: Job | None = None
        try:
            while job is None:
                if self.stopping:
                    if listener.fileno() >= 0:
                        selector.unregister(listener)
                        listener.close()
                        deadline, terminated = time.monotonic() + self.grace, False
                        if self.children:
                            _say(f"stopping: waiting up to {self.grace:.0f} s for {len(self.children)} flow-run "
                                 f"process(es)")
                    if not self.children:
                        break
                    if time.monotonic() > deadline and not terminated:
                        _say(f"{len(self.children)} flow-run process(es) still running after {self.grace:.0f} s; "
                             f"sending SIGTERM")
                        for child in self.children.values():
                            self._signal(child, signal.SIGTERM)
                        deadline, terminated = time.monotonic() + 10, True
                    elif time.monotonic() > deadline:
                        _say(f"killing {len(self.children)} flow-run process(es)")
                        for child in list(self.children.values()):
                            self._signal(child, signal.SIGKILL)
                        self._reap(block=True)
                        break
                for key, _ in selector.select(timeout=1.0):
                    if key.data == "accept":
                        job = self._accept(listener, selector)
                        if job is not None:
                            break
                    elif key.data == "wake":
                        try:
                            while os.read(wake_r, 512):
                                pass
                        except BlockingIOError:
                            pass
                    else:
                        self._from_client(key.data, selector)
                self._reap()
        finally:
            if os.getpid() == me:
                if listener.fileno() >= 0:
                    listener.close()
                try:
                    self.path.unlink()
                except FileNotFoundError:
                    pass
                _say("stopped")
            else:
                selector.close()
                listener.close()
                signal.set_wakeup_fd(-1)
                os.close(wake_r)
                os.close(wake_w)
        return job

    def _on_signal(self, signum: int, _frame: Any) -> None:
        if signum in (signal.SIGTERM, signal.SIGINT):
            self.stopping = True

    def _accept(self, listener: socket.socket, selector: selectors.BaseSelector) -> Job | None:
        conn, _ = listener.accept()
        uid = struct.unpack("3i", conn.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i")))[1]
        if uid != os.getuid():  # the socket is 0600 already; a client of another user must not run code as us
            _say(f"refused a client running as uid {uid}")
            conn.close()
            return None
        try:
            request, fds = receive(conn, max_fds=3)
        except (OSError, ValueError) as err:
            _say(f"bad request: {err}")
            conn.close()
            return None
        if request is None:
            conn.close()
            return None
        try:
            argv = [str(a) for a in request["argv"]]
            env = {str(k): str(v) for k, v in dict(request["env"]).items()}
            cwd = str(request["cwd"])
            if len(fds) != 3:
                raise ValueError(f"expected stdin, stdout and stderr, got {len(fds)} descriptors")
        except (KeyError, TypeError, ValueError) as err:
            self._refuse(conn, fds, f"malformed request: {err}")
            return None
        stale = self.changed_files()
        if stale:
            self._refuse(conn, fds, f"{len(stale)} file(s) it imported changed on disk since it started (e.g. "
                                    f"{', '.join(stale[:3])}); restart the launcher to use them")
            return None
        go_r, go_w = os.pipe()
        sys.stdout.flush()
        sys.stderr.flush()
        try:
            pid = os.fork()
        except OSError as err:
            os.close(go_r)
            os.close(go_w)
            self._refuse(conn, fds, f"fork failed: {err}")
            return None
        if pid == 0:  # the child: leave the loop; main() runs the job
            os.close(go_w)
            conn.close()
            for child in self.children.values():
                child.conn.close()
            return Job(argv=argv, env=env, cwd=cwd, fds=fds, go=go_r)
        os.close(go_r)
        for fd in fds:
            os.close(fd)
        child = Child(pid, conn, env.get("PREFECT__FLOW_RUN_ID", "(no PREFECT__FLOW_RUN_ID)"))
        _say(f"flow run {child.run}: started process {pid}")
        self.children[pid] = child
        self.by_conn[conn.fileno()] = child
        try:
            send(conn, {"pid": pid})
            os.write(go_w, b"go")
        except OSError:
            pass  # the client is gone already: the child reads EOF instead of "go" and exits; reaped below
        os.close(go_w)
        selector.register(conn, selectors.EVENT_READ, conn)
        return None

    def snapshot(self) -> None:
        """Remember every imported module's file and its modification time (changed_files compares)."""
        files = {getattr(module, "__file__", None) for module in list(sys.modules.values())}
        for name in files:
            if isinstance(name, str):
                try:
                    self.imported[name] = os.stat(name).st_mtime_ns
                except OSError:
                    pass

    def changed_files(self) -> list[str]:
        changed = []
        for name, mtime in self.imported.items():
            try:
                if os.stat(name).st_mtime_ns != mtime:
                    changed.append(name)
            except OSError:
                changed.append(name)
        return changed

    def _refuse(self, conn: socket.socket, fds: list[int], why: str) -> None:
        _say(f"refused a start: {why}")
        for fd in fds:
            os.close(fd)
        try:
            send(conn, {"error": why})
        except OSError:
            pass
        conn.close()

    def _from_client(self, conn: socket.socket, selector: selectors.BaseSelector) -> None:
        child = self.by_conn.get(conn.fileno())
        try:
            message, _ = receive(conn)
        except (OSError, ValueError):
            message = None
        if child is None:
            return
        if message is None:  # the client died (the worker killed it): the run must not go on unwatched
            selector.unregister(conn)
            if child.pid in self.children:
                _say(f"client of flow-run process {child.pid} went away; killing it")
                self._signal(child, signal.SIGKILL)
            return
        if "signal" in message:
            self._signal(child, int(message["signal"]))

    def _signal(self, child: Child, signum: int) -> None:
        if child.pid in self.children:  # not reaped yet: the pid is still this child's
            try:
                os.kill(child.pid, signum)
            except ProcessLookupError:
                pass

    def _reap(self, block: bool = False) -> None:
        while self.children:
            try:
                pid, status = os.waitpid(-1, 0 if block else os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            child = self.children.pop(pid, None)
            if child is None:
                continue
            self.by_conn.pop(child.conn.fileno(), None)
            if child.conn.fileno() in self.selector.get_map():
                self.selector.unregister(child.conn)
            reply = ({"signaled": os.WTERMSIG(status)} if os.WIFSIGNALED(status)
                     else {"exit": os.waitstatus_to_exitcode(status)})
            ended = f"signal {reply['signaled']}" if "signaled" in reply else f"exit code {reply['exit']}"
            _say(f"flow run {child.run}: process {pid} ended ({ended}) after {time.monotonic() - child.started:.1f} s")
            try:
                send(child.conn, reply)
            except OSError:
                pass
            child.conn.close()


def preload(modules: list[str]) -> list[str]:
    """Import `modules` (a missing optional one is skipped); the ones imported. litellm is imported offline, as the
    kit imports it (no cost-map download: that would also start a thread)."""
    saved = os.environ.get("LITELLM_LOCAL_MODEL_COST_MAP")
    os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
    done = []
    try:
        for name in modules:
            try:
                importlib.import_module(name)
            except ImportError:
                if name in OPTIONAL_PRELOAD:
                    continue
                raise
            done.append(name)
    finally:
        if saved is None:
            os.environ.pop("LITELLM_LOCAL_MODEL_COST_MAP", None)
    return done


def run_job(job: Job) -> None:
    """In the forked child: become the flow-run process the client stands for, then run prefect.engine."""
    os.setsid()
    try:
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    except (OSError, AttributeError):
        pass
    for sig in (signal.SIGCHLD, signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, signal.SIG_DFL)
    if os.read(job.go, 2) != b"go":  # the server died before the client learnt of us
        os._exit(75)
    os.close(job.go)
    for target, fd in enumerate(job.fds):
        os.dup2(fd, target)
        os.close(fd)
    os.chdir(job.cwd)
    os.environ.clear()
    os.environ.update(job.env)
    sys.path[0] = job.cwd  # `python -m` puts the working directory first
    from prefect.context import refresh_global_settings_context
    from prefect.logging.configuration import setup_logging

    refresh_global_settings_context()
    setup_logging(incremental=False)
    import runpy

    import warnings

    sys.argv = ["prefect.engine", *job.argv]
    with warnings.catch_warnings():  # the kit imported prefect.engine already, as `python -m prefect.engine` does later
        warnings.filterwarnings("ignore", message=r"'prefect\.engine' found in sys\.modules", category=RuntimeWarning)
        runpy.run_module("prefect.engine", run_name="__main__", alter_sys=True)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m prefect_micro_agents.launcher.server",
                                     description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--socket", required=True, type=Path, help="the Unix socket to listen on (created 0600)")
    parser.add_argument("--preload", action="append", default=[], metavar="MODULE",
                        help="one more module to import before forking (repeatable)")
    parser.add_argument("--no-default-preload", action="store_true",
                        help=f"import only --preload modules (default also: {', '.join(DEFAULT_PRELOAD)}, and "
                             f"{', '.join(OPTIONAL_PRELOAD)} when installed)")
    parser.add_argument("--grace", type=float, default=300.0,
                        help="when the server is stopped: seconds running flow runs get to end on their own before "
                             "they are sent SIGTERM (default: %(default)s)")
    args = parser.parse_args(argv)
    if not sys.platform.startswith("linux"):
        parser.error("the launcher needs Linux (SCM_RIGHTS, PR_SET_PDEATHSIG)")
    began = time.process_time()
    modules = [*([] if args.no_default_preload else [*DEFAULT_PRELOAD, *OPTIONAL_PRELOAD]), *args.preload]
    loaded = preload(modules)
    threads = [t.name for t in threading.enumerate() if t is not threading.main_thread()]
    if threads:
        _say(f"refusing to start: importing {', '.join(loaded)} left threads running ({', '.join(threads)}); a "
             f"forked child would inherit their locks but not the threads")
        sys.exit(2)
    gc.freeze()  # what exists now is shared with every child; keep the collector from touching (copying) it
    _say(f"preloaded {len(loaded)} modules in {time.process_time() - began:.2f} CPU-s: {', '.join(loaded)}")
    server = Server(args.socket, grace=args.grace)
    server.snapshot()
    job = server.serve()
    if job is not None:
        run_job(job)


if __name__ == "__main__":
    main()
