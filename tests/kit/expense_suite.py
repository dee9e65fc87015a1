"""The kit's own eval suite: nine cases for the toy expense agent (tests/kit/toy_agent.py), the suite the evals
machinery is tested on (tests/kit/test_evals.py). The deploy bot's starter suite is the app's (tests/app/).

Written once to tests/kit/evals/expense.json and committed; a test checks the file is this script's output:
    .venv/bin/python tests/kit/expense_suite.py
The suite names its agent `toy_agent:AGENT`, so it loads where tests/kit/ is on sys.path (pytest puts it there; from
a shell, run the evals CLI in tests/kit/).
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))  # tests/kit/: the kit's own agent, when run as a script

from prefect_micro_agents import AnswerEvent, ContextEvent, ResultEvent, Thread  # noqa: E402
from prefect_micro_agents.evals.suite import ArgCheck, CallPattern, Case, Expect, Suite, save_suite  # noqa: E402
from toy_agent import AT, NEW, OLD, decided, expense_context, full_expense_thread, proposal  # noqa: E402

__all__ = ["AGENTS", "OUT", "cases", "suite"]

OUT = Path(__file__).resolve().parent / "evals" / "expense.json"
AGENTS = {"expense": "toy_agent:AGENT"}
LOOK, PAY, FILE, ASK, DONE = "look_up_receipt", "pay_expense", "file_expense", "ask_submitter", "done_for_now"


def looked_up(amount: str = "84.20") -> Thread:
    """The report, and the receipt found in the card statement (an auto call: proposed, run, no human)."""
    p = proposal(LOOK, 1, receipt=NEW[:12])
    return expense_context().append(p).append(ResultEvent(
        proposal_id=p.id, intent=LOOK, output={"found": True, "amount": amount, "currency": "EUR",
                                               "merchant": "Trattoria Roma", "date": "2026-11-24"}))


def paid(thread: Thread, n: int) -> Thread:
    p = proposal(PAY, n, receipt=NEW[:12])
    thread = decided(thread.append(p), p, "approved")
    return thread.append(ResultEvent(proposal_id=p.id, intent=PAY,
                                     output={"paid": "84.20", "receipt": NEW, "to": "ana"}))


def asked(thread: Thread, n: int, question: str, answer: str) -> Thread:
    p = proposal(ASK, n, question=question)
    return thread.append(p).append(AnswerEvent(proposal_id=p.id, answer=answer, by="ana", at=AT))


def paid_by_another_run() -> Thread:
    """The submitter's history says this very receipt was paid already (by another run): pay is not offered."""
    history = ContextEvent(name="history", payload=[
        {"receipt": OLD, "amount": "12.00", "paid": True, "by": "bo"},
        {"receipt": NEW, "amount": "84.20", "paid": True, "by": "bo"}])
    return Thread(id="expense-thread", events=(*expense_context().events[:-1], history))


def expect(intent: str | tuple[str, ...], *, not_intent: tuple[str, ...] = (), not_call: tuple[CallPattern, ...] = (),
           **receipts: str) -> Expect:
    return Expect(intent=(intent,) if isinstance(intent, str) else intent, not_intent=not_intent, not_call=not_call,
                  args={k: ArgCheck(commit=v) for k, v in receipts.items()})


def call(intent: str, reason: str, **args: str) -> dict[str, str]:
    return {"intent": intent, **args, "reason": reason}


def cases() -> list[Case]:
    rejected_file = proposal(FILE, 2, receipt=NEW[:12])
    mismatch = looked_up(amount="48.20")
    c: list[tuple[str, str, tuple[str, ...], Thread, Expect, dict[str, str]]] = [
        ("expense-look-up-first", "a new report: look the receipt up before anything else", ("first-step",),
         expense_context(), expect(LOOK, receipt=NEW), call(LOOK, "check the card statement", receipt=NEW[:12])),
        ("expense-pay-after-look-up", "the receipt is on the statement, amount as reported: pay it back",
         ("ordinary",), looked_up(), expect(PAY, receipt=NEW), call(PAY, "found, 84.20 as reported", receipt=NEW[:12])),
        ("expense-feedback-pay-first", "filing first was rejected ('pay it first'): pay, and do not file again now",
         ("feedback", "ordering", "narrowing"),
         decided(looked_up().append(rejected_file), rejected_file, "rejected", "pay it first"),
         expect(PAY, not_call=(CallPattern(intent=FILE, args={"receipt": ArgCheck(commit=NEW)}),), receipt=NEW),
         call(PAY, "as asked, pay first", receipt=NEW[:12])),
        ("expense-file-after-paid", "paid: file it in the ledger (paying again is not offered)",
         ("ordinary", "narrowing"), paid(looked_up(), 2), expect(FILE, not_intent=(PAY,), receipt=NEW),
         call(FILE, "paid; now the ledger", receipt=NEW[:12])),
        ("expense-done-after-both", "paid and filed: finish", ("terminal", "narrowing"),
         full_expense_thread(), expect(DONE, not_intent=(PAY, FILE)),
         call(DONE, "all done", message="paid 84.20 EUR to ana and filed it")),
        ("expense-amount-mismatch-asks", "the statement shows 48.20, the report 84.20: ask the submitter",
         ("question",), mismatch, expect(ASK, not_intent=(PAY,)),
         call(ASK, "amounts differ", question="The statement shows 48.20 EUR, the report 84.20 EUR: which is right?")),
        ("expense-answered-then-pay", "the submitter explained the difference: pay", ("question", "ordinary"),
         asked(mismatch, 2, "The statement shows 48.20 EUR, the report 84.20 EUR: which is right?",
               "84.20: the statement line is a pre-authorisation, the receipt is final"),
         expect(PAY, receipt=NEW), call(PAY, "the submitter confirmed 84.20", receipt=NEW[:12])),
        ("expense-asked-twice-then-act", "two questions answered already: stop asking, pay",
         ("question", "loop", "narrowing"),
         asked(asked(looked_up(), 2, "Was this a team lunch?", "yes"), 3, "Who attended?", "the whole team"),
         expect(PAY, not_intent=(ASK,), receipt=NEW), call(PAY, "confirmed twice", receipt=NEW[:12])),
        ("expense-paid-by-another-run", "the history shows this receipt paid already: finish or ask, never pay",
         ("narrowing", "already-done"), paid_by_another_run(), expect((DONE, ASK), not_intent=(PAY,)),
         call(DONE, "already paid", message=f"receipt {NEW[:12]} was paid already; nothing to do")),
    ]
    return [Case(id=i, agent="expense", description=d, tags=t, thread=thread.model_copy(update={"id": f"kit-{i}"}),
                 expect=e, golden=g) for i, d, t, thread, e, g in c]


def suite() -> Suite:
    return Suite(description="The kit's own suite, for the toy expense agent (tests/kit/expense_suite.py).",
                 agents=AGENTS, cases=tuple(cases()))


if __name__ == "__main__":
    save_suite(suite(), OUT)
    print(f"wrote {len(cases())} cases to {OUT}")
