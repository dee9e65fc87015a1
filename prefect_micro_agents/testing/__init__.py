"""Test helpers for users of the kit: a scripted model behind litellm's own custom-provider boundary (model string
`scripted/<directory>`), and a local Prefect server in a subprocess (`LocalPrefectServer`).

Importing this module registers the scripted provider with litellm (`register`), the only hook the kit has for it.
"""

from __future__ import annotations

from prefect_micro_agents.adapter.local_server import LocalPrefectServer
from prefect_micro_agents.testing.scripted import ScriptedModel, ScriptExhausted, register

__all__ = ["LocalPrefectServer", "ScriptExhausted", "ScriptedModel", "register"]
