"""Prefect's distributed setup as real processes on one machine, for tests and for trying the topology before copying
it to real machines: Postgres (`postgres`), Redis (`redis`), S3-compatible result storage (`s3`, moto's server), the
environment each machine sets (`settings`), one child process of the stack (`processes`), and the whole stack with an
API server, background services, a process work pool and its workers (`scale`).

Needs the `scale` extra (prefect-redis, prefect-aws, moto[server]) and the system packages postgresql and
redis-server (scripts/install-system-deps).
"""

from prefect_micro_agents.stack.processes import ComponentStartError
from prefect_micro_agents.stack.scale import ScaleStack, WorkerMachine

__all__ = ["ComponentStartError", "ScaleStack", "WorkerMachine"]
