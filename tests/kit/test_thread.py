"""Thread: exact JSON round-trip, fork, digests, and strict parsing."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from prefect_micro_agents.thread import (
    AnswerEvent,
    ContextEvent,
    DecisionEvent,
    DoneEvent,
    ErrorEvent,
    EscalationEvent,
    ProposalEvent,
    ReceiptEvent,
    ResultEvent,
    Thread,
    TriggerEvent,
    Usage,
)
from toy_agent import full_expense_thread

text = st.text(max_size=40)
ident = st.from_regex(r"[a-z][a-z0-9_]{0,15}", fullmatch=True)
json_scalar = st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False) | text
json_value = st.recursive(
    json_scalar, lambda inner: st.lists(inner, max_size=4) | st.dictionaries(text, inner, max_size=4), max_leaves=12
)
aware = st.datetimes(timezones=st.just(UTC))
digest = st.text("0123456789abcdef", min_size=64, max_size=64)

events = st.one_of(
    st.builds(TriggerEvent, source=text, actor=text, request=text),
    st.builds(ContextEvent, name=ident, payload=json_value),
    st.builds(
        ProposalEvent,
        id=text,
        intent=ident,
        args=st.dictionaries(ident, json_value, max_size=3),
        reason=text,
        args_digest=digest,
        model=text,
        usage=st.none()
        | st.builds(Usage, prompt_tokens=st.integers(0, 10**6), completion_tokens=st.integers(0, 10**6),
                    cost_usd=st.none() | st.floats(0, 10), latency_ms=st.none() | st.floats(0, 10**5)),
    ),
    st.builds(DecisionEvent, proposal_id=text, proposal_digest=digest, decision=st.sampled_from(["approved", "rejected"]),
              feedback=text, approver=text, at=aware),
    st.builds(AnswerEvent, proposal_id=text, answer=text, by=text, at=aware),
    st.builds(ReceiptEvent, proposal_id=text, proposal_digest=digest, args_digest=digest, approver=text,
              approved_at=aware, idempotency_key=text),
    st.builds(ResultEvent, proposal_id=text, intent=ident, output=json_value, idempotency_key=text),
    st.builds(ErrorEvent, kind=st.sampled_from(["malformed_output", "unknown_intent", "invalid_arguments", "tool_error"]),
              message=text, proposal_id=st.none() | text),
    st.builds(DoneEvent, proposal_id=st.none() | text, message=text),
    st.builds(EscalationEvent, reason=text),
)
threads = st.builds(Thread, id=st.text(min_size=1, max_size=20), events=st.lists(events, max_size=12).map(tuple))


@settings(max_examples=300, deadline=None)
@given(threads)
def test_json_round_trip_is_exact(thread: Thread) -> None:
    again = Thread.from_json(thread.to_json())
    assert again == thread
    assert again.to_json() == thread.to_json()
    assert again.digest() == thread.digest()


def test_fork_keeps_the_first_n_events_under_a_new_id() -> None:
    thread = full_expense_thread()
    fork = thread.fork(5)
    assert fork.events == thread.events[:5]
    assert fork.id != thread.id and fork.id == thread.fork(5).id  # deterministic
    assert thread.fork(0).events == ()
    assert thread.fork(len(thread.events), id="copy").events == thread.events
    with pytest.raises(ValueError, match="cannot fork at 99"):
        thread.fork(99)


def test_threads_are_immutable_and_append_returns_a_new_one() -> None:
    thread = full_expense_thread()
    longer = thread.append(DoneEvent(message="ok"))
    assert len(longer.events) == len(thread.events) + 1
    with pytest.raises(ValidationError):
        thread.id = "other"  # type: ignore[misc]


def test_digest_changes_with_content() -> None:
    thread = full_expense_thread()
    assert thread.digest() != thread.fork(len(thread.events) - 1, id=thread.id).digest()


def test_unknown_event_type_and_extra_fields_are_refused() -> None:
    with pytest.raises(ValidationError, match="does not match any of the expected tags"):
        Thread.model_validate({"id": "t", "events": [{"type": "telepathy"}]})
    with pytest.raises(ValidationError, match="Extra inputs are not permitted"):
        Thread.model_validate({"id": "t", "events": [{"type": "done", "message": "x", "bonus": 1}]})


def test_decision_times_must_carry_a_timezone() -> None:
    with pytest.raises(ValidationError, match="timezone"):
        DecisionEvent(proposal_id="p", proposal_digest="d", decision="approved", approver="a", at=datetime(2026, 1, 1))
