"""The prompt templates (*.j2) that ship with the project; users override them with AGENT_PROMPTS_DIR."""
