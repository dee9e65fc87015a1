"""Finding and redacting secrets: values, URL credentials, events, task results and log records (no server)."""

from __future__ import annotations

import io
import logging

import pytest

from prefect_micro_agents.adapter.logredact import RedactingFilter, install_log_redaction
from prefect_micro_agents.execution import record, redact_thread
from prefect_micro_agents.secrets import MIN_LENGTH, redact, redact_data, redacted, secret_values
from prefect_micro_agents.thread import ContextEvent, ErrorEvent, Thread, TriggerEvent

CANARY = "canary-unit-3c8d1f6e"


@pytest.fixture(autouse=True)
def _token(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DEPLOY_TOKEN", CANARY)


def test_url_credentials_are_masked_by_pattern_whatever_their_length() -> None:
    text = "mirror https://ci:pw@git.example.com/a.git, db postgres://app:p@ss@db:5432/x; ssh git@github.com:o/r"
    assert redact(text, []) == ("mirror https://ci:[redacted:url-password]@git.example.com/a.git, db "
                                "postgres://app:[redacted:url-password]@db:5432/x; ssh git@github.com:o/r")
    plain = "http://host:8080/a@b and https://example.com/x"
    assert redact(plain, []) == plain


def test_the_password_of_a_url_in_a_variable_of_any_name_is_a_secret() -> None:
    env = {"MY_DB_URL": "postgres://app:hunter2-long-pw@db/app", "CACHE_URL": "redis://u:short@cache",
           "QUOTED_URL": "https://u:p%40ss-word-1@h/", "HOME": "/home/x"}
    values = dict((v, n) for n, v in secret_values(env))
    assert values["hunter2-long-pw"] == "MY_DB_URL"  # caught outside the URL too
    assert values["p@ss-word-1"] == "QUOTED_URL" and "p%40ss-word-1" in values  # as written and decoded
    assert "short" not in values  # under MIN_LENGTH: masked in URLs only, not hunted as a bare word
    assert redact("rotated to hunter2-long-pw; redis://u:short@cache", secret_values(env)) == \
        "rotated to [redacted:MY_DB_URL]; redis://u:[redacted:url-password]@cache"
    assert MIN_LENGTH == 8


def test_secret_named_variables_registered_secrets_and_plain_values() -> None:
    env = {"API_KEY": "k" * 7, "AUTH_ENABLED": "true", "RETRY_TOKEN_COUNT": "12345678", "SLACK_TOKEN": "xoxb-1234567"}
    assert [n for n, _ in secret_values(env)] == ["SLACK_TOKEN"]


def test_record_and_redact_thread_redact_every_event() -> None:
    thread = Thread(id="t", events=(TriggerEvent(source="git.push", actor="ci", request=f"deploy {CANARY}"),
                                    ContextEvent(name="log", payload={CANARY: [f"x {CANARY}"]})))
    clean = redact_thread(thread)
    assert CANARY not in clean.to_json() and clean.to_json().count("[redacted:DEPLOY_TOKEN]") == 3
    after = record(clean, ErrorEvent(kind="malformed_output", message=f"not JSON: {CANARY}"))
    assert CANARY not in after.to_json()


def test_a_redacted_task_function_returns_and_raises_nothing_secret() -> None:
    @redacted
    def fetch(kind: str) -> object:
        if kind == "raise":
            raise ValueError(f"bad token {CANARY}")
        if kind == "odd":
            raise OSError(2, f"no such token {CANARY}")  # str() built from attributes, not args alone
        return {"rows": [f"token {CANARY}", 3], "n": 1}

    assert fetch("ok") == {"rows": ["token [redacted:DEPLOY_TOKEN]", 3], "n": 1}
    with pytest.raises(ValueError, match=r"bad token \[redacted:DEPLOY_TOKEN\]"):
        fetch("raise")
    with pytest.raises(Exception) as caught:
        fetch("odd")
    assert CANARY not in str(caught.value) and CANARY not in repr(caught.value.args)
    assert redact_data(("a", CANARY)) == ["a", "[redacted:DEPLOY_TOKEN]"]


def test_the_log_filter_redacts_message_args_and_traceback() -> None:
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    logger = logging.getLogger("tests.redaction")
    logger.addHandler(handler)
    try:
        assert install_log_redaction() >= 1
        assert install_log_redaction() == 0  # idempotent
        assert any(isinstance(f, RedactingFilter) for f in handler.filters)
        logger.error("deploy used %s at %s", CANARY, "https://u:pw@h/x")
        try:
            raise RuntimeError(f"auth failed for {CANARY}")
        except RuntimeError:
            logger.exception("task failed: %r", {"token": CANARY})
    finally:
        logger.removeHandler(handler)
    out = stream.getvalue()
    assert CANARY not in out and "pw@" not in out
    assert "deploy used [redacted:DEPLOY_TOKEN] at https://u:[redacted:url-password]@h/x" in out
    assert "Traceback" in out and "RuntimeError: auth failed for [redacted:DEPLOY_TOKEN]" in out
