"""Test helpers for users of the kit: a scripted model behind litellm's own custom-provider boundary (model string
`scripted/<directory>`), and a local Prefect server in a subprocess (`LocalPrefectServer`).

The scripted provider is registered the way any custom provider is: `register` is a provider hook, named in
`AGENT_LITELLM_PROVIDERS=prefect_micro_agents.testing:register` for the test process and the runners and workers it
starts (or passed to `prefect_micro_agents.llm.use_provider` in code). The kit itself knows nothing about it.

For crash tests of your own tools: `arm(directory, point)` freezes the next process (with `$AGENT_FAILPOINTS_DIR`,
`FAILPOINTS_ENV`, set to that directory) that reaches a named point (`POINTS`) so the test can kill it there; `free_port`
picks a loopback port for a `LocalPrefectServer`.

`ScaleStack` is Prefect's distributed setup as real processes on one machine (Postgres, Redis, moto's S3 server, an API
server without services, `prefect server services start`, a process work pool and its workers; see
`prefect_micro_agents.stack`); it needs the `scale` extra and the system packages postgresql and redis-server.
"""

from __future__ import annotations

from prefect_micro_agents.adapter.local_server import LocalPrefectServer, free_port
from prefect_micro_agents.failpoints import FAILPOINTS_ENV, POINTS, arm
from prefect_micro_agents.stack import ComponentStartError, ScaleStack
from prefect_micro_agents.testing.scripted import ScriptedModel, ScriptExhausted, register

__all__ = ["FAILPOINTS_ENV", "POINTS", "ComponentStartError", "LocalPrefectServer", "ScaleStack", "ScriptExhausted",
           "ScriptedModel", "arm", "free_port", "register"]
