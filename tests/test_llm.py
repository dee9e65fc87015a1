"""One LLM step through litellm, with the scripted provider behind litellm's custom-provider boundary."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from agents import llm
from agents.errors import ConfigurationError, ProviderError
from agents.scripted import ScriptedModel
from agents.thread import ErrorEvent, ProposalEvent
from agents.tools import args_digest
from factories import AGENT, NEW, deploy_context

BACKEND = {"call": {"intent": "deploy_backend_to_prod", "sha": NEW, "reason": "backend first"}}


@pytest.mark.parametrize("mode", ["json_schema", "tools"])
def test_valid_reply_becomes_a_proposal_with_usage(scripted: ScriptedModel, mode: str) -> None:
    scripted.enqueue(BACKEND, prompt_tokens=321, completion_tokens=12)
    event = llm.step(AGENT, deploy_context(), scripted.model, mode=mode)
    assert isinstance(event, ProposalEvent)
    assert (event.intent, event.args, event.reason) == ("deploy_backend_to_prod", {"sha": NEW}, "backend first")
    assert event.args_digest == args_digest("deploy_backend_to_prod", {"sha": NEW})
    assert event.usage is not None and (event.usage.prompt_tokens, event.usage.completion_tokens) == (321, 12)
    assert event.usage.latency_ms is not None and event.usage.latency_ms >= 0
    sent = scripted.requests()[-1]
    if mode == "json_schema":
        schema = sent["optional_params"]["response_format"]["json_schema"]["schema"]
        assert schema["additionalProperties"] is False
        assert {d["title"] for d in schema["$defs"].values()} >= {"DeployBackendToProd", "DoneForNow"}
    else:
        names = [t["function"]["name"] for t in sent["optional_params"]["tools"]]
        assert names == ["deploy_backend_to_prod", "deploy_frontend_to_prod", "request_more_information", "done_for_now"]
        assert sent["optional_params"]["tool_choice"] == "required"
    assert sent["messages"][0]["role"] == "system" and f"deploy SHA {NEW[:12]} " in sent["messages"][1]["content"]


def test_proposal_ids_are_stable_for_the_same_thread(scripted: ScriptedModel) -> None:
    scripted.enqueue(BACKEND, BACKEND)
    first = llm.step(AGENT, deploy_context(), scripted.model)
    second = llm.step(AGENT, deploy_context(), scripted.model)
    assert first.id == second.id and first.digest == second.digest


@pytest.mark.parametrize(
    ("reply", "kind", "fragment"),
    [
        ("I think we should deploy the backend", "malformed_output", "not valid JSON"),
        ('{"call": {"intent": "deploy_backend_to_prod", "sha": "abc"', "malformed_output", "not valid JSON"),
        ('["deploy"]', "malformed_output", "expected"),
        ({"call": {"intent": "drop_database"}}, "unknown_intent", "choose one of: deploy_backend_to_prod"),
        ({"call": {"intent": "deploy_backend_to_prod", "sha": "not-a-sha"}}, "invalid_arguments", "sha: String should match"),
        ({"call": {"intent": "deploy_backend_to_prod"}}, "invalid_arguments", "sha: Field required"),
        ({"call": {"intent": "deploy_backend_to_prod", "sha": NEW, "force": True}}, "invalid_arguments", "force: Extra inputs"),
    ],
)
def test_bad_replies_become_one_compact_error_event(scripted: ScriptedModel, reply: object, kind: str, fragment: str) -> None:
    scripted.enqueue(reply)  # type: ignore[arg-type]
    event = llm.step(AGENT, deploy_context(), scripted.model, mode="json_schema")
    assert isinstance(event, ErrorEvent)
    assert event.kind == kind and fragment in event.message and len(event.message) < 400


def test_transient_provider_errors_are_retried(scripted: ScriptedModel) -> None:
    scripted.enqueue_error("RateLimitError", "slow down")
    scripted.enqueue_error("Timeout", "took too long")
    scripted.enqueue(BACKEND)
    event = llm.step(AGENT, deploy_context(), scripted.model, backoff_s=0.01)
    assert isinstance(event, ProposalEvent)
    assert len(scripted.requests()) == 3


def test_persistent_provider_errors_surface_as_one_clear_error(scripted: ScriptedModel) -> None:
    for _ in range(3):
        scripted.enqueue_error("ServiceUnavailableError", "down for maintenance")
    with pytest.raises(ProviderError, match=r"failed 3 times \(ServiceUnavailableError.*AGENT_MODEL"):
        llm.step(AGENT, deploy_context(), scripted.model, max_retries=2, backoff_s=0.01)
    assert len(scripted.requests()) == 3


def test_authentication_errors_are_not_retried(scripted: ScriptedModel) -> None:
    scripted.enqueue_error("AuthenticationError", "bad key")
    scripted.enqueue(BACKEND)
    with pytest.raises(ConfigurationError, match="refused the request.*API key"):
        llm.step(AGENT, deploy_context(), scripted.model, backoff_s=0.01)
    assert scripted.pending == 1


def test_model_resolution_parameter_then_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(ConfigurationError, match="set AGENT_MODEL"):
        llm.resolve_model(None)
    monkeypatch.setenv("AGENT_MODEL", "openai/gpt-4o-mini")
    assert llm.resolve_model(None) == "openai/gpt-4o-mini"
    assert llm.resolve_model("anthropic/claude-3-5-haiku-latest") == "anthropic/claude-3-5-haiku-latest"


def test_environment_model_is_used_by_a_step(scripted: ScriptedModel, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AGENT_MODEL", scripted.model)
    scripted.enqueue(BACKEND)
    assert isinstance(llm.step(AGENT, deploy_context()), ProposalEvent)


def test_rendering_and_replay_do_not_import_litellm() -> None:
    code = (
        "import sys, agents.runner, agents.reducer, agents.prompts, agents.llm\n"
        "sys.path.insert(0, 'tests')\n"
        "from factories import AGENT, full_deploy_thread\n"
        "from agents.reducer import next_action\n"
        "t = full_deploy_thread()\n"
        "agents.llm.build_request(AGENT, t, 'openai/gpt-4o-mini')\n"
        "next_action(AGENT, t)\n"
        "print(json.dumps(sorted(m for m in sys.modules if m.split('.')[0] in ('litellm', 'openai', 'prefect'))))\n"
    )
    out = subprocess.run([sys.executable, "-c", "import json\n" + code], capture_output=True, text=True, check=True)
    assert json.loads(out.stdout) == []
