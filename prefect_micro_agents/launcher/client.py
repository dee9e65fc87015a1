"""The worker's `command`: hand this process's job to the launcher server and stand in for the child it forks.

Standard library only (it runs once per flow run; importing Prefect here would cost what the launcher saves).
Exit code: the child's; a child killed by signal N is re-raised as signal N on this process. If the server cannot be
reached or refuses, the client runs `python -m prefect.engine` in its own place (exec), with a line on stderr.
"""

from __future__ import annotations

import os
import signal
import socket
import sys
from types import FrameType

from prefect_micro_agents.launcher import SOCKET_ENV
from prefect_micro_agents.launcher.protocol import receive, send

RELAYED = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGQUIT, signal.SIGUSR1, signal.SIGUSR2)
LOST_SERVER_EXIT = 70  # EX_SOFTWARE: the server died while the child ran (the child died with it: PDEATHSIG)


def _note(message: str) -> None:
    print(f"[microagents launcher] {message}", file=sys.stderr, flush=True)


def _plain_engine(args: list[str], why: str) -> None:
    _note(f"{why}; running python -m prefect.engine directly")
    argv = [sys.executable, "-m", "prefect.engine", *args]
    os.execv(sys.executable, argv)


def _connect(path: str) -> socket.socket:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    try:
        sock.connect(path)
    except OSError:
        sock.close()
        raise
    return sock


def run(args: list[str]) -> int:
    try:
        # A session of its own, as Prefect's default command gets (isolate_process_group): a signal to the worker's
        # whole group (Ctrl-C in its terminal, a service manager stopping it) does not reach the flow run; the
        # worker's own signals to this pid still do.
        os.setsid()
    except OSError:
        pass  # already a session leader
    path = os.environ.get(SOCKET_ENV, "")
    if not path:
        _plain_engine(args, f"{SOCKET_ENV} is not set")
    if not sys.platform.startswith("linux"):
        _plain_engine(args, "the launcher needs Linux")
    try:
        sock = _connect(path)
    except OSError as err:
        _plain_engine(args, f"no launcher at {path} ({err.strerror or err})")
    request = {"argv": args, "env": dict(os.environ), "cwd": os.getcwd()}
    try:
        send(sock, request, [0, 1, 2])
        reply, _ = receive(sock)
    except OSError as err:
        reply = {"error": f"{type(err).__name__}: {err}"}
    if reply is None or "error" in reply:
        # No child was started: the server says so, or it went away before its child was told to go (the child
        # waits for that word and exits without it).
        sock.close()
        _plain_engine(args, f"the launcher at {path} did not start the run "
                            f"({reply['error'] if reply else 'connection closed'})")
    child = int(reply["pid"])  # type: ignore[index]

    def relay(signum: int, _frame: FrameType | None) -> None:
        try:
            send(sock, {"signal": signum})
        except OSError:
            pass

    for sig in RELAYED:
        signal.signal(sig, relay)
    while True:
        try:
            message, _ = receive(sock)
        except OSError:
            message = None
        if message is None:
            _note(f"the launcher went away while flow-run process {child} ran; it was killed with it")
            return LOST_SERVER_EXIT
        if "exit" in message:
            return int(message["exit"])
        if "signaled" in message:
            signum = int(message["signaled"])
            signal.signal(signum, signal.SIG_DFL)
            os.kill(os.getpid(), signum)
            return 128 + signum


def main() -> None:
    sys.exit(run(sys.argv[1:]))


if __name__ == "__main__":
    main()
