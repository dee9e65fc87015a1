"""The flagship application's agents: the deploy agent and the rollback agent, built on the `prefect_micro_agents` kit.

Their prompts are the templates in the checkout's `prompts/` folder (`PROMPTS_DIR`).
"""

from pathlib import Path

PROMPTS_DIR = str(Path(__file__).resolve().parent.parent / "prompts")
