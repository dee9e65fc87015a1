"""The kit's own small agent for the kit's tests (never the deploy bot): an expense agent with one tool of each
policy, `auto` (look a receipt up), `approve` (pay it; file it in the ledger), `human` (ask the submitter) and
`terminal` (done), and threads of it at a few points. Its approve tools narrow themselves: an expense this thread
already paid (or filed) is not offered again, nor the call a human has just rejected, until the agent proposes
something else; both hold the `expense-payments` tag (PAYMENTS_LIMIT) while they execute, so a Prefect tag-concurrency
limit on it would serialise payments."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Literal

from pydantic import Field

from prefect_micro_agents import (
    Agent, ContextEvent, DecisionEvent, ProposalEvent, ResultEvent, Thread, Tool, TriggerEvent, args_digest,
)
from prefect_micro_agents.commits import same_commit
from prefect_micro_agents.tools import rejected_call

__all__ = ["AGENT", "AT", "NEW", "OLD", "PAYMENTS_LIMIT", "PROMPTS", "AskSubmitter", "DoneForNow", "FileExpense",
           "LookUpReceipt", "PayExpense", "call", "decided", "expense_context", "full_expense_thread", "proposal"]

PROMPTS = Path(__file__).resolve().parent / "prompts"
NEW = "9f8e7d6c5b4a39281706f5e4d3c2b1a09f8e7d6c"  # the receipt this report is about (a content hash, hex)
OLD = "1a2b3c4d5e6f708192a3b4c5d6e7f8091a2b3c4d"  # a receipt paid last month
AT = datetime(2026, 11, 26, 12, 0, tzinfo=UTC)
PAYMENTS_LIMIT = "expense-payments"  # the tag the money-moving tools hold while they execute (a Prefect tag limit)
Receipt = Field(min_length=7, max_length=40, pattern=r"^[0-9a-f]{7,40}$", description="The receipt's hash.")


def _done(thread: Thread, intent: str, receipt: str) -> bool:
    """This thread already ran `intent` for that receipt."""
    proposals = {e.id: e for e in thread.events if isinstance(e, ProposalEvent)}
    return any(isinstance(e, ResultEvent) and e.intent == intent and (p := proposals.get(e.proposal_id)) is not None
               and same_commit(p.args.get("receipt"), receipt) for e in thread.events)


def _receipt(thread: Thread) -> str:
    payload = next((e.payload for e in reversed(thread.events) if isinstance(e, ContextEvent) and e.name == "report"),
                   None)
    return str(payload.get("receipt", "")) if isinstance(payload, dict) else ""


def _narrowed(cls: type[Tool], thread: Thread) -> bool:
    receipt, rejected = _receipt(thread), rejected_call(thread)
    just_rejected = rejected is not None and rejected.intent == cls.intent_name() and \
        same_commit(rejected.args.get("receipt"), receipt)  # a hash: abbreviated = full, as git compares them
    return not _done(thread, cls.intent_name(), receipt) and not just_rejected


class LookUpReceipt(Tool):
    """Look a receipt up in the card statement (read-only)."""

    policy = "auto"
    intent: Literal["look_up_receipt"]
    receipt: str = Receipt


def _paid_before(thread: Thread) -> bool:
    """The report's receipt is in the submitter's history as paid (by another run)."""
    receipt = _receipt(thread)
    history = next((e.payload for e in reversed(thread.events) if isinstance(e, ContextEvent) and e.name == "history"),
                   None)
    return isinstance(history, list) and any(isinstance(h, dict) and h.get("receipt") == receipt and h.get("paid")
                                             for h in history)


class PayExpense(Tool):
    """Pay an expense back to the employee who filed it."""

    policy = "approve"
    concurrency_tags = (PAYMENTS_LIMIT,)
    intent: Literal["pay_expense"]
    receipt: str = Receipt

    @classmethod
    def available(cls, thread: Thread) -> bool:
        return _narrowed(cls, thread) and not _paid_before(thread)


class FileExpense(Tool):
    """File a paid expense in the ledger."""

    policy = "approve"
    concurrency_tags = (PAYMENTS_LIMIT,)
    intent: Literal["file_expense"]
    receipt: str = Receipt

    @classmethod
    def available(cls, thread: Thread) -> bool:
        return _narrowed(cls, thread)


class AskSubmitter(Tool):
    """Ask the employee who filed the report a question when it is unclear."""

    policy = "human"
    intent: Literal["ask_submitter"]
    question: str = Field(min_length=1, max_length=500, description="One clear question for the submitter.")


class DoneForNow(Tool):
    """Finish: say what was paid and filed, or why nothing was."""

    policy = "terminal"
    intent: Literal["done_for_now"]
    message: str = Field(min_length=1, max_length=500, description="One-line summary of what was done.")


AGENT = Agent(name="expense", tools=(LookUpReceipt, PayExpense, FileExpense, AskSubmitter, DoneForNow),
              prompt="expense_agent.j2", prompts_dir=str(PROMPTS), max_steps=10)


def call(intent: str, **args: str) -> dict[str, object]:
    """A scripted model reply that calls `intent`."""
    return {"call": {"intent": intent, **args}}


def proposal(intent: str, n: int, **args: str) -> ProposalEvent:
    return ProposalEvent(id=f"expense-{n}", intent=intent, args=args, args_digest=args_digest(intent, args),
                         model="scripted/x", reason=f"step {n}")


def decided(thread: Thread, p: ProposalEvent, decision: str, feedback: str = "") -> Thread:
    return thread.append(DecisionEvent(proposal_id=p.id, proposal_digest=p.digest, decision=decision,
                                       feedback=feedback, approver="alice", at=AT))


def expense_context(receipt: str = NEW) -> Thread:
    """What a flow hands the agent before its first step: the report, and the submitter's history."""
    return Thread(id="expense-thread", events=(
        TriggerEvent(source="expense.filed", actor="ana", request=f"pay back receipt {receipt}: team lunch, 84.20 EUR"),
        ContextEvent(name="report", payload={"receipt": receipt, "employee": "ana", "amount": "84.20",
                                             "currency": "EUR", "category": "meals"}),
        ContextEvent(name="history", payload=[{"receipt": OLD, "amount": "12.00", "paid": True, "by": "bo"}]),
    ))


def full_expense_thread() -> Thread:
    """File-before-pay rejected with feedback, then pay and file approved and run."""
    t = expense_context()
    p1 = proposal("file_expense", 1, receipt=NEW)
    t = decided(t.append(p1), p1, "rejected", "pay it first")
    p2 = proposal("pay_expense", 2, receipt=NEW)
    t = decided(t.append(p2), p2, "approved")
    t = t.append(ResultEvent(proposal_id=p2.id, intent=p2.intent, output={"paid": "84.20", "receipt": NEW, "to": "ana"}))
    p3 = proposal("file_expense", 3, receipt=NEW)
    t = decided(t.append(p3), p3, "approved")
    return t.append(ResultEvent(proposal_id=p3.id, intent=p3.intent,
                                output={"filed": NEW, "ledger": "2026-11", "line": 41}))
