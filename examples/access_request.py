"""Write your own micro-agent: an access request that a human approves before anyone is added to a group."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from prefect import flow
from prefect.runtime import flow_run
from pydantic import Field

from prefect_micro_agents import Agent, DoneEvent, Thread, Tool, ToolContext, TriggerEvent, bind, run_agent

HERE = Path(__file__).resolve().parent
GROUPS = {"billing-readonly": ["alice", "bob"], "prod-admins": ["carol"]}  # your directory service here
Name = Field(pattern=r"^[a-z][a-z0-9-]{0,39}$", description="A user or group name, lowercase.")


class LookUpGroup(Tool):
    """List a group's current members (read-only)."""

    policy = "auto"  # runs as soon as the model asks for it
    intent: Literal["look_up_group"]
    group: str = Name


class GrantAccess(Tool):
    """Add a user to a group."""

    policy = "approve"  # the flow run suspends until a human approves this exact call
    intent: Literal["grant_access"]
    user: str = Name
    group: str = Name


class DoneForNow(Tool):
    """Finish: say what was granted, or why nothing was."""

    policy = "terminal"
    intent: Literal["done_for_now"]
    message: str = Field(min_length=1, max_length=300, description="One line for the requester.")


ACCESS_AGENT = Agent(name="access", tools=(LookUpGroup, GrantAccess, DoneForNow), prompt="access_agent.j2",
                     prompts_dir=str(HERE), max_steps=6)


def look_up_group(call: LookUpGroup, ctx: ToolContext) -> dict[str, Any]:
    return {"group": call.group, "exists": call.group in GROUPS, "members": GROUPS.get(call.group, [])}


def grant_access(call: GrantAccess, ctx: ToolContext) -> dict[str, Any]:
    grants = HERE / "access-grants.txt"
    if ctx.reconcile and grants.exists() and ctx.idempotency_key in grants.read_text():
        return {"granted": True, "already": True}  # a crashed attempt got this far: never grant twice
    with grants.open("a") as out:
        out.write(f"{ctx.idempotency_key} {call.user} {call.group}\n")
    return {"granted": True, "user": call.user, "group": call.group}


@flow(name="access-request", persist_result=True)
def access_request(user: str, group: str, why: str, model: str | None = None) -> str:
    thread = Thread(id=f"access-{flow_run.get_id()}",
                    events=(TriggerEvent(source="form", actor=user, request=f"add {user} to {group}: {why}"),))
    final = run_agent(ACCESS_AGENT, thread,
                      [bind(LookUpGroup, look_up_group), bind(GrantAccess, grant_access)],  # each held to its class
                      model=model)  # model None: $AGENT_MODEL, else the offline one
    done = final.of_type(DoneEvent)
    return done[-1].message if done else "escalated: see the run's access-thread artifact"


if __name__ == "__main__":
    access_request.serve(name="access")
