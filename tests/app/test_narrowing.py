"""Factor 8 on its own: the deploy tools offered (and the schema and prompt sent) follow the facts in the thread."""

from __future__ import annotations

from agents.deploybot import DeployBackendToProd, DeployFrontendToProd, needs_deploy, target_sha
from prefect_micro_agents import ContextEvent, ResultEvent, Thread, TriggerEvent, build_request
from factories import AGENT, NEW, OLD, decided, deploy_context, proposal

ALL = ["deploy_backend_to_prod", "deploy_frontend_to_prod", "request_more_information", "done_for_now"]


def offered(thread: Thread) -> list[str]:
    return [t.intent_name() for t in AGENT.offered(thread)]


def with_prod(thread: Thread, backend: str, frontend: str) -> Thread:
    """A refreshed prod_versions context: the latest one counts."""
    return thread.append(ContextEvent(name="prod_versions", payload={"backend": {"sha": backend}, "frontend": {"sha": frontend}}))


def deployed(thread: Thread, intent: str, sha: str, n: int = 1) -> Thread:
    p = proposal(intent, n, sha=sha)
    t = decided(thread.append(p), p, "approved")
    return t.append(ResultEvent(proposal_id=p.id, intent=intent, output={"sha": sha, "noop": False}))


def test_everything_is_offered_when_prod_runs_another_commit() -> None:
    assert offered(deploy_context()) == ALL


def test_a_service_already_on_the_target_is_not_offered() -> None:
    assert offered(with_prod(deploy_context(), backend=NEW, frontend=OLD)) == [i for i in ALL if i != "deploy_backend_to_prod"]
    # prod_versions may hold abbreviated SHAs, as git prints them
    assert offered(with_prod(deploy_context(), backend=OLD, frontend=NEW[:7])) == [i for i in ALL if i != "deploy_frontend_to_prod"]
    assert offered(with_prod(deploy_context(), backend=NEW, frontend=NEW)) == ["request_more_information", "done_for_now"]


def test_a_service_deployed_in_this_thread_is_not_offered_again() -> None:
    t = deployed(deploy_context(), "deploy_backend_to_prod", NEW[:12])
    assert offered(t) == [i for i in ALL if i != "deploy_backend_to_prod"]
    t = deployed(t, "deploy_frontend_to_prod", NEW, n=2)
    assert offered(t) == ["request_more_information", "done_for_now"]


def test_a_result_for_another_commit_does_not_hide_the_tool() -> None:
    assert "deploy_backend_to_prod" in offered(deployed(deploy_context(), "deploy_backend_to_prod", OLD))


def test_a_rejected_deploy_waits_one_proposal_then_is_offered_again() -> None:
    p = proposal("deploy_backend_to_prod", 1, sha=NEW)
    rejected = decided(deploy_context().append(p), p, "rejected", "not yet")
    assert offered(rejected) == [i for i in ALL if i != "deploy_backend_to_prod"]
    q = proposal("deploy_frontend_to_prod", 2, sha=NEW)
    assert offered(decided(rejected.append(q), q, "rejected", "not that either")) == [
        i for i in ALL if i != "deploy_frontend_to_prod"]


def test_the_schema_and_prompt_sent_to_the_model_follow_the_thread() -> None:
    before = build_request(AGENT, deploy_context(), "openai/gpt-4o-mini")
    after = build_request(AGENT, with_prod(deploy_context(), backend=NEW, frontend=OLD), "openai/gpt-4o-mini")
    titles = lambda r: {d["title"] for d in r.schema_["$defs"].values()}  # noqa: E731
    assert "DeployBackendToProd" in titles(before) and "DeployBackendToProd" not in titles(after)
    assert [t["function"]["name"] for t in after.tools] == [i for i in ALL if i != "deploy_backend_to_prod"]
    assert "- deploy_backend_to_prod" in before.messages[0]["content"]
    assert "- deploy_backend_to_prod" not in after.messages[0]["content"]


def test_target_comes_from_the_target_context_else_the_trigger() -> None:
    assert target_sha(deploy_context()) == NEW  # the one SHA the trigger names
    other = "abcdef0123456789abcdef0123456789abcdef01"
    assert target_sha(deploy_context().append(ContextEvent(name="target", payload={"sha": other}))) == other
    ambiguous = Thread(id="t", events=(TriggerEvent(source="cli", actor="a", request=f"deploy {NEW} or {OLD}?"),))
    assert target_sha(ambiguous) is None
    words = Thread(id="t", events=(TriggerEvent(source="cli", actor="a", request=f"the defaced page: deploy {NEW}"),))
    assert target_sha(words) == NEW


def test_without_a_known_target_prod_versions_do_not_narrow() -> None:
    """Unsure which commit is wanted: offer the tools and let the model (or a human) decide."""
    t = Thread(id="t", events=(TriggerEvent(source="cli", actor="a", request="deploy the latest tag"),
                               ContextEvent(name="prod_versions", payload={"backend": {"sha": NEW}})))
    assert needs_deploy(t, "backend", "deploy_backend_to_prod")
    assert DeployBackendToProd.available(t) and DeployFrontendToProd.available(t)
    # ...but a deploy that already ran in this thread is still not offered twice
    assert not DeployBackendToProd.available(deployed(t, "deploy_backend_to_prod", NEW))


def test_malformed_context_never_raises() -> None:
    t = deploy_context().append(ContextEvent(name="prod_versions", payload=["not", "a", "dict"]),
                                ContextEvent(name="target", payload={"sha": 42}))
    assert offered(t) == ALL
