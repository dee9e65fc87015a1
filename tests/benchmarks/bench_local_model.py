"""Issue 5 benchmark: the embedded local model (Gemma 3 270M on llama.cpp) deciding real deploy-agent steps.

Prints the cold start (GGUF assembly if not cached, server start, first decision: each part separately), then per
decision latency (median, p90), prompt and generation tokens/s, and how many answers were schema-valid tool calls.

Run: .venv/bin/python tests/benchmarks/bench_local_model.py [--decisions 20] [--cold-cache]
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import _checkout  # noqa: E402,F401  (the checkout first on sys.path: the app is not installed)
os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")

import jsonschema  # noqa: E402

from prefect_micro_agents import llm, local_model  # noqa: E402
from prefect_micro_agents.llm import provider, transport  # noqa: E402
from prefect_micro_agents.thread import AnswerEvent, ContextEvent, ErrorEvent, ProposalEvent, ResultEvent, Thread  # noqa: E402
from factories import AGENT, AT, NEW, OLD, decided, deploy_context, proposal  # noqa: E402


def threads(n: int) -> list[Thread]:
    """`n` realistic threads at five points of a deploy; each group of five shares a SHA and its context, as the
    successive steps of one run do (llama.cpp reuses the common prompt prefix), and no two prompts are equal."""
    out: list[Thread] = []
    for i in range(n):
        sha = f"{i // 5:02x}{NEW[2:]}"
        base = deploy_context(sha)
        match i % 5:
            case 0:
                t = base
            case 1:
                p = proposal("deploy_frontend_to_prod", 1, sha=sha)
                t = decided(base.append(p), p, "rejected", "deploy the backend first")
            case 2:
                p = proposal("deploy_backend_to_prod", 1, sha=sha)
                t = decided(base.append(p), p, "approved").append(
                    ResultEvent(proposal_id=p.id, intent=p.intent, output={"service": "backend", "sha": sha, "noop": False}))
            case 3:
                q = proposal("request_more_information", 1, question="Which SHA: the tag v1.2.0 or main's head?")
                t = base.append(q, AnswerEvent(proposal_id=q.id, answer=f"main's head, {sha[:7]}", by="alice", at=AT))
            case _:
                t = base.append(ContextEvent(name="prod_versions", payload={"backend": {"sha": sha}, "frontend": {"sha": OLD}}),
                                ErrorEvent(kind="malformed_output", message="not valid JSON (Expecting value at char 0)"))
        out.append(t)
    return out


def decide(thread: Thread) -> dict[str, Any]:
    """One decision exactly as llm.call_model makes it, keeping llama.cpp's timings from the raw response."""
    request = llm.build_request(AGENT, thread)
    target = llm.litellm_target(request.model)
    started = time.perf_counter()
    response = provider.complete(request.messages, 600, **target, **transport.output_kwargs(request))
    latency = time.perf_counter() - started
    reply = provider.to_reply(response, request.model, latency * 1000)
    try:
        jsonschema.validate(json.loads(reply.text), request.schema_)
        event = llm.parse_reply(AGENT, thread, reply, request.step)
        valid = isinstance(event, ProposalEvent)
        intent = event.intent if isinstance(event, ProposalEvent) else event.kind
    except (ValueError, jsonschema.ValidationError) as exc:
        valid, intent = False, type(exc).__name__
    timings = getattr(response, "timings", None) or {}
    return {"latency_s": latency, "valid": valid, "intent": intent, "timings": timings, "text": reply.text}


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--decisions", type=int, default=20)
    parser.add_argument("--cold-cache", action="store_true", help="assemble the GGUF into a fresh temp cache first")
    args = parser.parse_args()
    os.environ.pop(local_model.URL_ENV, None)
    os.environ.pop(llm.MODEL_ENV, None)
    tmp = tempfile.TemporaryDirectory(prefix="bench-model-cache-") if args.cold_cache else None
    if tmp is not None:
        os.environ[local_model.CACHE_ENV] = tmp.name

    print(f"machine: {len(os.sched_getaffinity(0))} cores, load average {os.getloadavg()[0]:.2f} (1 min) at start; "
          f"llama.cpp threads: {local_model._threads()}")
    started = time.perf_counter()
    provider.supports_schema("openai/x")  # the first litellm call: imports it
    print(f"import litellm: {time.perf_counter() - started:.2f} s (paid by any model, not part of the cold start below)")

    cached = (local_model.cache_dir() / "gemma-3-270m-q4_k_m.gguf.sha256").exists()
    t0 = time.perf_counter()
    local_model.gguf_path()
    t1 = time.perf_counter()
    local_model.endpoint()
    t2 = time.perf_counter()
    first = decide(threads(1)[0])
    t3 = time.perf_counter()
    print(f"cold start: {t3 - t0:.2f} s = GGUF {'verified from cache' if cached else 'assembled + checksummed'} "
          f"{t1 - t0:.2f} s + server start {t2 - t1:.2f} s + first decision {t3 - t2:.2f} s "
          f"({first['timings'].get('prompt_n', '?')} prompt tokens, nothing cached; valid={first['valid']})")

    results = [decide(t) for t in threads(args.decisions)]
    latencies = [r["latency_s"] for r in results]
    timings = [r["timings"] for r in results if r["timings"]]
    prompt_n = sum(t["prompt_n"] for t in timings)
    prompt_s = sum(t["prompt_ms"] for t in timings) / 1000
    gen_n = sum(t["predicted_n"] for t in timings)
    gen_s = sum(t["predicted_ms"] for t in timings) / 1000
    cached_n = sum(t.get("cache_n", 0) for t in timings)
    valid = sum(r["valid"] for r in results)
    print(f"\n{args.decisions} decisions: {args.decisions // 5} deploys x 5 steps (prompt prefix cache on, temperature 0):")
    print(f"  latency per decision: median {statistics.median(latencies):.2f} s, p90 {pct(latencies, 0.9):.2f} s, "
          f"min {min(latencies):.2f} s, max {max(latencies):.2f} s")
    print(f"  prompt: {prompt_n} tokens evaluated ({cached_n} more reused from cache), {prompt_n / prompt_s:.0f} tokens/s")
    print(f"  generation: {gen_n} tokens, {gen_n / gen_s:.1f} tokens/s ({gen_n / len(timings):.0f} tokens per answer)")
    print(f"  schema-valid tool calls: {valid}/{len(results)} ({100 * valid / len(results):.0f}%)")
    print(f"  intents chosen: {dict(collections.Counter(r['intent'] for r in results))}")
    print(f"  example answer: {results[0]['text']}")
    print(f"load average {os.getloadavg()[0]:.2f} (1 min) at end")
    local_model.shutdown()
    if tmp is not None:
        tmp.cleanup()
    return 0 if valid == len(results) else 1


if __name__ == "__main__":
    sys.exit(main())
