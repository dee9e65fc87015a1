"""Issue 2 benchmarks: tokens of our compact thread vs the OpenAI chat-messages format; reducer overhead.

Run: .venv/bin/python tests/benchmarks/bench_core.py
"""

from __future__ import annotations

import json
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")

from agents.prompts import build_messages  # noqa: E402
from agents.reducer import apply, next_action  # noqa: E402
from agents.thread import AnswerEvent, DoneEvent, ErrorEvent, ProposalEvent, Thread  # noqa: E402
from factories import AGENT, AT, NEW, decided, deploy_context, full_deploy_thread, proposal  # noqa: E402

COUNTER_MODEL = "gpt-4o-mini"


def realistic_threads() -> dict[str, Thread]:
    base = deploy_context()
    two = base.fork(2, id="trigger+prod")
    p1 = proposal("deploy_frontend_to_prod", 1, sha=NEW)
    rejected = decided(base.append(p1), p1, "rejected", "deploy the backend first")
    q = proposal("request_more_information", 1, question="Which SHA: the tag v1.2.0 or main's head?")
    asked = base.append(q, AnswerEvent(proposal_id=q.id, answer="main's head, 9f8e7d6", by="alice", at=AT))
    full = full_deploy_thread()
    errors = full.append(
        ErrorEvent(kind="malformed_output", message="not valid JSON (Expecting value at char 0): Sure! Here is"),
        ProposalEvent(id="deploy-5", intent="done_for_now", args={"message": "backend and frontend on 9f8e7d6"},
                      args_digest="x"),
        DoneEvent(proposal_id="deploy-5", message="backend and frontend on 9f8e7d6"),
    )
    return {"trigger+prod": two, "context only": base, "rejected": rejected, "question": asked, "full deploy": full,
            "full + error + done": errors}


def openai_messages(thread: Thread, system: str) -> list[dict[str, Any]]:
    """The same content as a typical agent would send it: chat roles, tool calls, JSON bodies."""
    messages: list[dict[str, Any]] = [{"role": "system", "content": system}]
    for e in thread.events:
        match e.type:
            case "trigger":
                messages.append({"role": "user", "content": e.request})
            case "context":
                messages.append({"role": "user", "content": f"{e.name}: {json.dumps(e.payload)}"})
            case "proposal":
                call = {"id": e.id, "type": "function", "function": {"name": e.intent, "arguments": json.dumps(e.args)}}
                messages.append({"role": "assistant", "content": None, "tool_calls": [call]})
            case "decision" if e.decision == "rejected":
                messages.append({"role": "tool", "tool_call_id": e.proposal_id,
                                 "content": f"The user denied this operation with feedback: {e.feedback}"})
            case "answer":
                messages.append({"role": "tool", "tool_call_id": e.proposal_id, "content": e.answer})
            case "result":
                messages.append({"role": "tool", "tool_call_id": e.proposal_id, "content": json.dumps(e.output)})
            case "error":
                messages.append({"role": "user", "content": f"Error: {e.message}"})
            case "done":
                messages.append({"role": "assistant", "content": e.message})
    return messages


def token_benchmark() -> None:
    import litellm

    print(f"tokens ({COUNTER_MODEL} tokenizer via litellm.token_counter); thread = everything but the shared system prompt")
    print(f"{'thread':<22}{'events':>7}{'ours':>7}{'openai':>8}{'saved':>8}{'ours+sys':>10}{'openai+sys':>12}{'saved':>8}")
    ratios, total_ratios = [], []
    for name, thread in realistic_threads().items():
        system, user = build_messages(AGENT, thread, AGENT.tools)
        ours_thread = litellm.token_counter(model=COUNTER_MODEL, messages=[user])
        theirs = openai_messages(thread, system["content"])
        theirs_thread = litellm.token_counter(model=COUNTER_MODEL, messages=theirs[1:])
        ours_total = litellm.token_counter(model=COUNTER_MODEL, messages=[system, user])
        theirs_total = litellm.token_counter(model=COUNTER_MODEL, messages=theirs)
        ratio, total_ratio = 1 - ours_thread / theirs_thread, 1 - ours_total / theirs_total
        ratios.append(ratio)
        total_ratios.append(total_ratio)
        print(f"{name:<22}{len(thread.events):>7}{ours_thread:>7}{theirs_thread:>8}{ratio:>8.0%}"
              f"{ours_total:>10}{theirs_total:>12}{total_ratio:>8.0%}")
    print(f"median tokens saved: thread {statistics.median(ratios):.0%}, with system prompt {statistics.median(total_ratios):.0%}"
          " (target: thread >= 30%)")


def reducer_benchmark(iterations: int = 20000) -> None:
    thread = full_deploy_thread()
    while len(thread.events) < 20:
        p = proposal("deploy_frontend_to_prod", len(thread.events), sha=NEW)
        thread = decided(thread.append(p), p, "rejected", "not yet")
    thread = thread.fork(20, id=thread.id)
    event = ErrorEvent(kind="malformed_output", message="x")
    next_action(AGENT, thread)
    started = time.perf_counter()
    for _ in range(iterations):
        next_action(AGENT, thread)
        apply(thread, event)
    per_ms = (time.perf_counter() - started) / iterations * 1000
    print(f"reducer: next_action + apply on a {len(thread.events)}-event thread: {per_ms * 1000:.1f} us per pair "
          f"({iterations} iterations; target < 1 ms)")


if __name__ == "__main__":
    token_benchmark()
    reducer_benchmark()
