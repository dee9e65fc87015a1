"""Reply -> event: a valid call of a tool offered now becomes a proposal; anything else one short error event.

Pure: validation against the tools offered now, and the refusal of the call a human just rejected, live here and
not in the prompt, so a weak model cannot talk its way past them (tests/kit/test_loop_limits.py).
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING

from pydantic import ValidationError

from prefect_micro_agents.llm.data import LLMReply, excerpt
from prefect_micro_agents.thread import ErrorEvent, ProposalEvent
from prefect_micro_agents.tools import args_digest

if TYPE_CHECKING:
    from prefect_micro_agents.thread import Thread
    from prefect_micro_agents.tools import Agent

__all__ = ["parse_reply"]


def parse_reply(agent: Agent, thread: Thread, reply: LLMReply, step: int) -> ProposalEvent | ErrorEvent:
    """Validate the reply against what is offered now (tools, and the call a human just rejected is not); anything
    wrong becomes one short error event."""
    offered = {t.intent_name(): t for t in agent.offered(thread)}
    try:
        data = json.loads(reply.text) if reply.text.strip() else None
    except json.JSONDecodeError as exc:
        return ErrorEvent(kind="malformed_output",
                          message=f"not valid JSON ({exc.msg} at char {exc.pos}): {excerpt(reply.text, 120)}")
    if reply.tool_name is not None:
        data = {"intent": reply.tool_name, **(data or {})} if isinstance(data, dict) or data is None else data
    if isinstance(data, dict) and isinstance(data.get("call"), dict):
        data = data["call"]
    if not isinstance(data, dict) or "intent" not in data:
        return ErrorEvent(kind="malformed_output",
                          message=f'expected {{"call": {{"intent": ...}}}}, got: {excerpt(reply.text, 120)}')
    intent = data["intent"]
    if intent not in offered:
        return ErrorEvent(kind="unknown_intent",
                          message=f"no tool {excerpt(str(intent), 60)!r} now; choose one of: {', '.join(offered)}")
    try:
        call = offered[intent].model_validate(data)
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(map(str, err['loc'])) or 'call'}: {err['msg']}" for err in exc.errors()[:5])
        return ErrorEvent(kind="invalid_arguments", message=f"{intent}: {problems}")
    args = call.arguments()
    if (why := agent.refusal(thread, intent, args)) is not None:
        return ErrorEvent(kind="invalid_arguments", message=f"{intent}: {why}")
    return ProposalEvent(
        id=f"{agent.name}-{step}-{thread.digest()[:8]}",
        intent=intent,
        args=args,
        reason=call.reason,
        args_digest=args_digest(intent, args),
        model=reply.model,
        usage=reply.usage,
    )
