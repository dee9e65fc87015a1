"""A warm launcher for Prefect's process worker: flow-run processes forked from a process that has already imported
Prefect, litellm and the kit, instead of each one starting a fresh interpreter and importing them again.

    python -m prefect_micro_agents.launcher.server --socket /run/microagents/launcher.sock     # once per machine
    MICROAGENTS_LAUNCHER_SOCKET=/run/microagents/launcher.sock prefect worker start --pool P  # beside it
    # the pool's (or deployment's) `command` job variable:  python -m prefect_micro_agents.launcher

The worker starts the `command` as usual; that small client (standard library only) hands its environment, working
directory, arguments and stdin/stdout/stderr to the server over a Unix socket, the server forks a child that runs
`prefect.engine` exactly as `python -m prefect.engine` would, and the client relays signals to it and exits with its
exit code, so the worker's view (a process, its pid, its exit code, SIGTERM on cancel) is unchanged. Without a
reachable server the client runs `python -m prefect.engine` itself: a launcher that is down costs speed, never a
run. Linux only (SCM_RIGHTS, prctl); the client falls back to the plain engine elsewhere.

Modules: `protocol` (the messages, shared), `server`, `client` (also `python -m prefect_micro_agents.launcher`).
Nothing here imports Prefect at module level: the client must stay cheap.
"""

SOCKET_ENV = "MICROAGENTS_LAUNCHER_SOCKET"

__all__ = ["SOCKET_ENV"]
