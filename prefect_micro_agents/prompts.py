"""Render prompts/*.j2 (factor 2: own your prompts). No prompt text lives in Python; only data goes in."""

from __future__ import annotations

import os
import re
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING, Any

import jinja2

from prefect_micro_agents.errors import ConfigurationError

if TYPE_CHECKING:
    from prefect_micro_agents.thread import Thread
    from prefect_micro_agents.tools import Agent, Tool

__all__ = ["abbreviate_hex", "build_messages", "compact", "render", "render_thread", "tool_catalog"]

PROMPTS_DIR_ENV = "AGENT_PROMPTS_DIR"
SHORT_HEX = 12


TEMPLATES_DIR = Path(__file__).parent / "templates"  # the kit's own templates, shipped in the wheel


@lru_cache(maxsize=8)
def _environment(override: str | None, agent_dir: str | None) -> jinja2.Environment:
    loaders: list[jinja2.BaseLoader] = []
    if override:
        if not Path(override).is_dir():
            raise ConfigurationError(f"{PROMPTS_DIR_ENV}={override!r} is not a directory; point it at your prompts")
        loaders.append(jinja2.FileSystemLoader(override))
    if agent_dir:
        if not Path(agent_dir).is_dir():
            raise ConfigurationError(f"the agent's prompts_dir {agent_dir!r} is not a directory")
        loaders.append(jinja2.FileSystemLoader(agent_dir))
    loaders.append(jinja2.FileSystemLoader(TEMPLATES_DIR))
    env = jinja2.Environment(
        loader=jinja2.ChoiceLoader(loaders),
        undefined=jinja2.StrictUndefined,
        autoescape=False,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=False,
    )
    env.filters["compact"] = compact
    return env


def render(template: str, *, prompts_dir: str | Path | None = None, **context: Any) -> str:
    """Render one template; a missing variable is an error, never an empty string in a prompt.

    Templates are looked up by name in $AGENT_PROMPTS_DIR, then in `prompts_dir` (an agent's own templates), then in
    the kit's templates: a user's file of the same name overrides the kit's.
    """
    env = _environment(os.environ.get(PROMPTS_DIR_ENV) or None, str(prompts_dir) if prompts_dir else None)
    try:
        return env.get_template(template).render(**context).strip()
    except jinja2.TemplateNotFound as exc:
        where = ", ".join(x for x in (f"${PROMPTS_DIR_ENV}", str(prompts_dir or ""), str(TEMPLATES_DIR)) if x)
        raise ConfigurationError(f"prompt template {template!r} not found in {where}") from exc


def compact(value: Any, indent: int = 0) -> str:
    """A token-lean, readable rendering of JSON data: `k=v` pairs, one line per nested item."""
    pad = "  " * indent
    if isinstance(value, dict):
        if all(_is_scalar(v) for v in value.values()):
            return pad + " ".join(f"{k}={_scalar(v)}" for k, v in value.items())
        lines = []
        for k, v in value.items():
            if _is_scalar(v):
                lines.append(f"{pad}{k}={_scalar(v)}")
            elif _is_flat(v):
                lines.append(f"{pad}{k}: {compact(v)}")
            else:
                lines.append(f"{pad}{k}:\n{compact(v, indent + 1)}")
        return "\n".join(lines)
    if isinstance(value, list | tuple):
        if all(_is_scalar(v) for v in value):
            return pad + ", ".join(_scalar(v) for v in value)
        if len(value) > 1 and _is_table(value):
            columns = list(value[0])
            rows = [" | ".join(_cell(row[c]) for c in columns) for row in value]
            return "\n".join([f"{pad}[{' | '.join(columns)}]", *(pad + r for r in rows)])
        return "\n".join(f"{pad}- {compact(v, indent + 1).lstrip()}" for v in value)
    return pad + _scalar(value)


def _is_table(rows: list[Any] | tuple[Any, ...]) -> bool:
    """Rows of flat dicts with the same keys: print the keys once, as a header."""
    return len(rows[0]) > 1 and all(isinstance(r, dict) and _is_flat(r) and list(r) == list(rows[0]) for r in rows)


def _cell(value: Any) -> str:
    text = _scalar(value)
    return text[1:-1] if text.startswith("'") and "|" not in text else text


def _is_flat(value: Any) -> bool:
    items = value.values() if isinstance(value, dict) else value
    return all(_is_scalar(v) for v in items)


def _is_scalar(value: Any) -> bool:
    return not isinstance(value, dict | list | tuple) or not value


def _scalar(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, dict | list | tuple):
        return "{}" if isinstance(value, dict) else "[]"
    text = str(value)
    return text if text and " " not in text and "\n" not in text else repr(text)


def tool_catalog(tools: tuple[type[Tool], ...]) -> list[dict[str, Any]]:
    """What the prompt needs to describe each offered tool: data taken from the tool classes themselves."""
    catalog = []
    for tool in tools:
        schema = tool.model_json_schema()
        fields = [
            {"name": name, "type": prop.get("type", "object"), "description": prop.get("description", "")}
            for name, prop in schema.get("properties", {}).items()
            if name not in ("intent", "reason")
        ]
        catalog.append(
            {
                "intent": tool.intent_name(),
                "policy": tool.policy,
                "description": (tool.__doc__ or "").strip(),
                "fields": fields,
            }
        )
    return catalog


def render_thread(thread: Thread, prompts_dir: str | Path | None = None, agent: Agent | None = None) -> str:
    """Calls are referred to by their number in the thread; long hex ids (SHAs) are shown as git shows them.
    `agent`: mark decisions its approval policies do not count as such (reducer.void_decisions)."""
    from prefect_micro_agents.reducer import DIGEST_MISMATCH, void_decisions

    from prefect_micro_agents.edits import describe_edits
    from prefect_micro_agents.thread import DecisionEvent, ProposalEvent

    events = [e.model_dump(mode="json") for e in thread.events]
    ref = {e["id"]: n for n, e in enumerate((e for e in events if e["type"] == "proposal"), start=1)}
    proposals = {e.id: e for e in thread.of_type(ProposalEvent)}
    replaced = {(p.edited_from, p.edited_by) for p in proposals.values() if p.edited_by}
    edits = {i: describe_edits(proposals[e.proposal_id], e.edits) for i, e in enumerate(thread.events)
             if isinstance(e, DecisionEvent) and (e.proposal_id, e.approver) in replaced and e.edits
             and not e.edit_error}
    return abbreviate_hex(render("thread.j2", prompts_dir=prompts_dir, events=events, ref=ref, edits=edits,
                                 void=void_decisions(thread, agent), digest_mismatch=DIGEST_MISMATCH))


_LONG_HEX = re.compile(r"\b([0-9a-f]{%d})[0-9a-f]{%d,}\b" % (SHORT_HEX, 40 - SHORT_HEX))


def abbreviate_hex(text: str) -> str:
    """40-char SHAs cost ~20 tokens each and repeat all over a deploy thread; 12 chars are unambiguous in practice
    and every tool that takes a SHA resolves a prefix (git rev-parse), so nothing is lost."""
    return _LONG_HEX.sub(r"\1", text)


def build_messages(agent: Agent, thread: Thread, tools: tuple[type[Tool], ...]) -> list[dict[str, str]]:
    """System prompt (role, rules, tools) + the thread as one compact user message (factor 3)."""
    system = render(agent.prompt, prompts_dir=agent.prompts_dir, agent=agent.name, description=agent.description,
                    tools=tool_catalog(tools))
    return [
        {"role": "system", "content": system},
        {"role": "user", "content": render_thread(thread, agent.prompts_dir, agent)},
    ]
