"""Test helpers for users of the kit: a scripted model behind litellm's own custom-provider boundary (model string
`scripted/<directory>`), and a local Prefect server in a subprocess (`LocalPrefectServer`).

The scripted provider is registered the way any custom provider is: `register` is a provider hook, named in
`AGENT_LITELLM_PROVIDERS=prefect_micro_agents.testing:register` for the test process and the runners and workers it
starts (or passed to `prefect_micro_agents.llm.use_provider` in code). The kit itself knows nothing about it.
"""

from __future__ import annotations

from prefect_micro_agents.adapter.local_server import LocalPrefectServer
from prefect_micro_agents.testing.scripted import ScriptedModel, ScriptExhausted, register

__all__ = ["LocalPrefectServer", "ScriptExhausted", "ScriptedModel", "register"]
