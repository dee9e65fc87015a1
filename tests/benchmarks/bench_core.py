"""Tokens of our thread rendering vs the best plain chat-message rendering of the same content; reducer overhead.

The token comparison is built to be fair (issue 10 item 13):
- the same threads: the starter eval suite's 38 thread prefixes (deploy and rollback agents), recorded the way the
  flow records them: context, proposals, approvals AND rejections, receipts, results, errors, answers;
- the same content: each baseline shows exactly the fields our rendering shows (receipts, proposal reasons, ids,
  digests and timestamps are shown by neither), with SHAs abbreviated to 12 characters the same way and JSON
  written compactly (separators=(",", ":"));
- the same tokenizer and accounting: tiktoken's o200k_base (the encoding of gpt-4o and gpt-4o-mini; litellm ships
  it, so it loads offline, and litellm.token_counter uses it for gpt-4o-mini: checked below), 3 tokens per message
  plus its role, a tool call's name and arguments, 3 to prime the reply (OpenAI's published chat accounting);
- the best baseline: per thread, the cheaper of (a) chat messages with tool calls and tool results (a decision and
  the result of its call share the call's one tool message) and (b) one user message of compact JSON events.

Run: .venv/bin/python tests/benchmarks/bench_core.py
"""

from __future__ import annotations

import importlib.util
import json
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Any

from _checkout import ROOT  # noqa: E402  (the checkout first on sys.path: the app is not installed)
os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")

from prefect_micro_agents.evals.suite import load_suite, resolve_agent  # noqa: E402
from prefect_micro_agents.prompts import abbreviate_hex, build_messages  # noqa: E402
from prefect_micro_agents.reducer import apply, next_action  # noqa: E402
from prefect_micro_agents.thread import ErrorEvent, Thread  # noqa: E402
from factories import AGENT, NEW, decided, full_deploy_thread, proposal  # noqa: E402

ENCODING = "o200k_base"
COUNTER_MODEL = "gpt-4o-mini"
SUITE = ROOT / "evals" / "starter.json"


def encoding() -> Any:
    """o200k_base from the copy litellm bundles (tiktoken would otherwise download it)."""
    if "TIKTOKEN_CACHE_DIR" not in os.environ:
        spec = importlib.util.find_spec("litellm")
        assert spec is not None and spec.submodule_search_locations
        os.environ["TIKTOKEN_CACHE_DIR"] = str(Path(spec.submodule_search_locations[0]) / "litellm_core_utils" / "tokenizers")
    import tiktoken

    return tiktoken.get_encoding(ENCODING)


def count(enc: Any, messages: list[dict[str, Any]]) -> int:
    total = 3  # every reply is primed with <|start|>assistant<|message|>
    for m in messages:
        total += 3 + len(enc.encode(m["role"])) + len(enc.encode(m.get("content") or ""))
        for call in m.get("tool_calls", ()):
            total += len(enc.encode(call["function"]["name"])) + len(enc.encode(call["function"]["arguments"]))
    return total


def _json(value: Any) -> str:
    return abbreviate_hex(json.dumps(value, separators=(",", ":"), ensure_ascii=False))


def shown(e: Any) -> dict[str, Any] | None:
    """The fields of one event that our rendering shows (prefect_micro_agents/templates/thread.j2); None for what it does not show."""
    match e.type:
        case "trigger":
            return {"source": e.source, "actor": e.actor, "request": e.request}
        case "context":
            return {"name": e.name, "payload": e.payload}
        case "proposal":
            return {"intent": e.intent, "args": e.args}
        case "decision":
            return {"decision": e.decision, "by": e.approver, **({"feedback": e.feedback} if e.feedback else {})}
        case "answer":
            return {"answer": e.answer, "by": e.by}
        case "result":
            return {"output": e.output}
        case "error":
            return {"kind": e.kind, "message": e.message}
        case "done":
            return {"message": e.message}
        case "escalation":
            return {"reason": e.reason}
    return None  # receipt


def chat_messages(thread: Thread) -> list[dict[str, Any]]:
    """(a) An OpenAI-style chat: requests and context as user messages, calls as tool calls, one tool message per
    call holding its decision and its result (or error, or answer); SHAs abbreviated, compact JSON."""
    messages: list[dict[str, Any]] = []
    tool_message: dict[str, dict[str, Any]] = {}
    for e in thread.events:
        match e.type:
            case "trigger":
                messages.append({"role": "user", "content": abbreviate_hex(f"{e.source} {e.actor}: {e.request}")})
            case "context":
                messages.append({"role": "user", "content": f"{e.name}: {_json(e.payload)}"})
            case "proposal":
                call = {"id": e.id, "type": "function", "function": {"name": e.intent, "arguments": _json(e.args)}}
                messages.append({"role": "assistant", "content": None, "tool_calls": [call]})
            case "decision" | "answer" | "result" | "error" if getattr(e, "proposal_id", None):
                part = {"decision": lambda: f"{e.decision} by {e.approver}" + (f": {e.feedback}" if e.feedback else ""),
                        "answer": lambda: f"answer by {e.by}: {e.answer}",
                        "result": lambda: f"result: {_json(e.output)}",
                        "error": lambda: f"error {e.kind}: {abbreviate_hex(e.message)}"}[e.type]()
                if e.proposal_id not in tool_message:
                    tool_message[e.proposal_id] = {"role": "tool", "tool_call_id": e.proposal_id, "content": part}
                    messages.append(tool_message[e.proposal_id])
                else:
                    tool_message[e.proposal_id]["content"] += "; " + part
            case "error":
                messages.append({"role": "user", "content": f"error {e.kind}: {abbreviate_hex(e.message)}"})
            case "done":
                messages.append({"role": "assistant", "content": e.message})
            case "escalation":
                messages.append({"role": "user", "content": f"escalation: {e.reason}"})
    return messages


def json_events(thread: Thread) -> list[dict[str, Any]]:
    """(b) One user message: one compact JSON object per event, the fields our rendering shows."""
    lines = [_json({"type": e.type, **body}) for e in thread.events if (body := shown(e)) is not None]
    return [{"role": "user", "content": "\n".join(lines)}]


def _leaves(value: Any) -> list[str]:
    if isinstance(value, dict):
        return [leaf for v in value.values() for leaf in _leaves(v)]
    if isinstance(value, list):
        return [leaf for v in value for leaf in _leaves(v)]
    return [str(value)]


def values_only(thread: Thread) -> list[dict[str, Any]]:
    """A floor, not a rendering: every shown value once, space-separated, no keys, no structure. No rendering of
    the same content can be much shorter, so (best - floor) / best bounds what any format can save."""
    words = [leaf for e in thread.events if (body := shown(e)) is not None for leaf in _leaves(body)]
    return [{"role": "user", "content": abbreviate_hex(" ".join(words))}]


def threads() -> list[tuple[str, str, Thread]]:
    return [(c.id, c.agent_ref, c.thread) for c in load_suite(SUITE).cases]


def token_benchmark() -> None:
    import litellm

    enc = encoding()
    probe = build_messages(AGENT, full_deploy_thread(), AGENT.tools)[1]["content"]
    # litellm counts 1024-character chunks separately (a token or so more per cut); we count whole texts exactly.
    chunked = sum(len(enc.encode(probe[i:i + 1024])) for i in range(0, len(probe), 1024))
    assert litellm.token_counter(model=COUNTER_MODEL, text=probe) == chunked, "not the encoding litellm uses"
    print(f"tokens: tiktoken {ENCODING} (the encoding litellm.token_counter uses for {COUNTER_MODEL}: checked), "
          "exact; 3 per message + role, tool-call name + arguments, 3 reply priming")
    print(f"{'thread':<38}{'events':>7}{'ours':>6}{'chat':>6}{'json':>6}{'floor':>6}{'saved':>7}{'ours+sys':>10}"
          f"{'best+sys':>10}{'saved':>7}")
    ratios, total_ratios, rows, ceilings = [], [], [], []
    for name, agent_name, thread in threads():
        agent = resolve_agent(agent_name)
        system, user = build_messages(agent, thread, agent.offered(thread))
        ours = count(enc, [user])
        chat, plain = count(enc, chat_messages(thread)), count(enc, json_events(thread))
        best = min(chat, plain)
        ours_total, best_total = count(enc, [system, user]), min(count(enc, [system, *chat_messages(thread)]),
                                                                 count(enc, [system, *json_events(thread)]))
        floor = count(enc, values_only(thread))
        ceilings.append(1 - floor / best)
        ratios.append(1 - ours / best)
        total_ratios.append(1 - ours_total / best_total)
        rows.append((ours, best))
        print(f"{name:<38}{len(thread.events):>7}{ours:>6}{chat:>6}{plain:>6}{floor:>6}{ratios[-1]:>7.0%}"
              f"{ours_total:>10}{best_total:>10}{total_ratios[-1]:>7.0%}")
    pooled = 1 - sum(o for o, _ in rows) / sum(b for _, b in rows)
    print(f"{len(rows)} threads: thread tokens saved against the best plain chat rendering: median "
          f"{statistics.median(ratios):.0%} (min {min(ratios):.0%}, max {max(ratios):.0%}; all tokens pooled "
          f"{pooled:.0%}); with the system prompt: median {statistics.median(total_ratios):.0%} (target: thread >= 30%)")
    print(f"the values alone (no keys, no structure) are {1 - statistics.median(ceilings):.0%} of the best baseline's "
          f"thread tokens (median): no rendering of the same content saves more than about "
          f"{statistics.median(ceilings):.0%}")


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
