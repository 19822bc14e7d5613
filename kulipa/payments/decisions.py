"""What to do with a gateway answer: pure functions of (current state, answer, clock) → decision.

No database, no network: the services load the rows under their locks, ask here, and apply the decision. Each
function is tested as a table over every state × every answer (tests/test_decisions.py).
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from datetime import datetime, timedelta

from kulipa.inventory.services import CommitResult
from kulipa.orders.models import Order
from kulipa.payments.models import PaymentAttempt, Reversal
from mpesa import Outcome, TransactionStatus, outcome_for

S = PaymentAttempt.State
OrderStatus = Order.Status


class Act(enum.StrEnum):
    CONFIRM = "confirm"
    """The money moved: hand the attempt to ``order_mark_paid``."""
    MOVE = "move"
    """Change the attempt's state to ``to`` (and ``next_check_at``)."""
    RECHECK = "recheck"
    """Same state; ask the gateway again at ``next_check_at`` (None: stop asking)."""
    REVERSED = "reversed"
    """Completed but reversed at the gateway: never paid. Close the attempt if open (``to``) and tell a person."""
    IGNORE = "ignore"
    """Nothing to change (already final, or someone else decided first)."""


@dataclass(frozen=True, slots=True)
class Step:
    act: Act
    to: str | None = None
    next_check_at: datetime | None = None
    reason: str = ""
    tell: bool = False
    """Raise it for a person (nothing more will be asked and the answer is still not known)."""


@dataclass(frozen=True, slots=True)
class Clock:
    """The times a decision depends on, computed by the caller from settings and the attempt."""

    now: datetime
    push_deadline: datetime
    """When the customer's PIN window closes."""
    final_deadline: datetime
    """push_deadline + reconcile margin: by then an open attempt is decided, one way or the other."""
    backoff: timedelta
    """The next query delay for this attempt (grows with its check count)."""
    grace: timedelta
    """After the window, how long to wait for a callback before asking."""
    tail_next: datetime | None
    """When a closed attempt that could still complete is asked next (None: past the tail horizon)."""


FAILURE_FOR_OUTCOME: dict[Outcome, str] = {
    Outcome.DECLINED: S.DECLINED,
    Outcome.INSUFFICIENT_FUNDS: S.INSUFFICIENT_FUNDS,
    Outcome.FAILED: S.FAILED,
    Outcome.INVALID_REQUEST: S.FAILED,
    Outcome.AUTH_ERROR: S.FAILED,
}

TAILED = frozenset({S.TIMED_OUT, S.UNCONFIRMED})
"""Closed attempts that could still complete, asked again on the tail schedule (no gateway said "no")."""


def tail_next(*, closed_at: datetime, now: datetime, first: timedelta, horizon: timedelta) -> datetime | None:
    """5 min, 15 min, 45 min, 2¼ h, … after closing (each wait twice the age so far), until ``horizon`` after
    closing; then None (stop asking)."""
    at = now + max(first, 2 * (now - closed_at))
    return at if at <= closed_at + horizon else None


def _bounded(at: datetime, clock: Clock) -> datetime:
    """Never look later than the final deadline while it is ahead: the decision lands on time."""
    return min(at, clock.final_deadline) if clock.now < clock.final_deadline else at


def decide_push_answer(*, state: str, mode: str, outcome: Outcome, code: str | None, sent: bool, clock: Clock) -> Step:
    """The C2B call itself answered (sync: the result; async: accepted or refused)."""
    if state == S.SUCCEEDED:
        return Step(Act.IGNORE, reason="already paid")
    if state == S.QUEUED:
        return Step(Act.IGNORE, reason="never claimed, so never sent")
    if outcome is Outcome.SUCCESS and mode == "sync":
        return Step(Act.CONFIRM, reason="c2b_response")  # in any state: late money is real
    if state != S.PUSHING:
        return Step(Act.IGNORE, reason=f"already {state}")
    if outcome is Outcome.SUCCESS:  # async: accepted; the result comes by callback
        at = max(clock.push_deadline, clock.now) + clock.grace
        return Step(Act.MOVE, to=S.AWAITING_CALLBACK, next_check_at=_bounded(at, clock))
    if outcome is Outcome.UNKNOWN and not sent:
        return Step(Act.MOVE, to=S.NOT_SENT, reason="not sent: the gateway could not be reached")
    if outcome is Outcome.UNKNOWN:
        # INS-9: the push window closed, the gateway already knows the final status.
        at = clock.now + (timedelta(seconds=1) if code == "INS-9" else clock.backoff)
        return Step(Act.MOVE, to=S.UNKNOWN, next_check_at=_bounded(at, clock))
    return Step(Act.MOVE, to=FAILURE_FOR_OUTCOME[outcome])


def failure_for_code(code: str | None) -> str:
    """The closed state a gateway code means (a code without a failure meaning → FAILED)."""
    if not code:
        return S.FAILED
    return FAILURE_FOR_OUTCOME.get(outcome_for(code), S.FAILED)


def decide_query_answer(
    *,
    state: str,
    query_ok: bool,
    status: TransactionStatus | None,
    reversed: bool,
    result_code: str,
    hint_code: str | None,
    clock: Clock,
) -> Step:
    """A transaction status query about an attempt answered (``query_ok``: the query itself worked)."""
    known = status if query_ok else None
    if state == S.SUCCEEDED:
        return Step(Act.IGNORE, reason="already paid")
    if state == S.QUEUED:
        return Step(Act.IGNORE, reason="never sent")
    if known is TransactionStatus.COMPLETED and reversed:
        return Step(Act.REVERSED, to=S.FAILED if state in PaymentAttempt.IN_FLIGHT else None, reason="reversed")
    if known is TransactionStatus.COMPLETED:
        return Step(Act.CONFIRM, reason="status_query")
    if state not in PaymentAttempt.IN_FLIGHT:  # closed: only the tail keeps asking
        if state in TAILED and clock.tail_next is None and not query_ok:
            why = "the tail ended and M-Pesa never answered a status query about this payment"
            return Step(Act.RECHECK, next_check_at=None, reason=why, tell=True)
        if state in TAILED:
            return Step(Act.RECHECK, next_check_at=clock.tail_next)
        return Step(Act.RECHECK, next_check_at=None)
    if known is TransactionStatus.CANCELLED:
        final = failure_for_code(result_code)
        if final == S.FAILED and hint_code:
            final = failure_for_code(hint_code)
        return Step(Act.MOVE, to=final)
    if known is TransactionStatus.EXPIRED:
        return Step(Act.MOVE, to=S.TIMED_OUT, next_check_at=clock.tail_next, reason="expired: not answered in time")
    # Not found, still waiting, a value we do not know, or the query itself failed.
    if state == S.PUSHING and clock.now < clock.push_deadline:
        return Step(Act.RECHECK, next_check_at=clock.push_deadline + clock.grace)
    if clock.now >= clock.final_deadline:
        why = "not found after the push deadline" if query_ok else "the gateway did not answer the status query"
        return Step(Act.MOVE, to=S.UNCONFIRMED, next_check_at=clock.tail_next, reason=why)
    at = _bounded(clock.now + clock.backoff, clock)
    if state == S.PUSHING:  # the worker went quiet past the window (died?): unknown from now on
        return Step(Act.MOVE, to=S.UNKNOWN, next_check_at=at)
    return Step(Act.RECHECK, next_check_at=at)


class Hold(enum.StrEnum):
    """What happens to an unpaid order's stock when one of its pushes closes without money."""

    RELEASE = "release"
    """Let it go now (reservations → RELEASED): the phone said no, or nobody answered. "Try again" holds it again
    if it is still there, or says what is gone."""
    SHRINK = "shrink"
    """Keep it, back to the reservation window (a little time to try again): the gateway failed, never got the
    push, or could not say what happened (money may still come)."""


RELEASE_AFTER = frozenset({S.DECLINED, S.INSUFFICIENT_FUNDS, S.TIMED_OUT})
"""Closed by the customer's phone: cancelled, no balance, or no answer within the PIN window."""


def decide_hold_after_close(*, state: str) -> Hold:
    """A push of an order awaiting payment closed in ``state`` (not succeeded): its stock hold. One person's
    phone answering "no" (or nothing) must not keep units from other customers until the order expires."""
    return Hold.RELEASE if state in RELEASE_AFTER else Hold.SHRINK


class Paid(enum.StrEnum):
    COMMIT_STOCK = "commit_stock"
    """Sell the reserved (or still available) stock, then decide with :func:`decide_after_stock`."""
    DUPLICATE = "duplicate"
    """The order was already paid by another payment: keep the order, propose reversing this one."""
    AMOUNT_MISMATCH = "amount_mismatch"
    """Paid, but not the total: the order needs a person; the stock is not sold."""


def decide_confirmed(*, order_status: str, already_paid: bool, amount_matches: bool) -> Paid:
    """A payment of this order is confirmed by the gateway. ``already_paid``: the order has a paying payment."""
    if already_paid or order_status in (OrderStatus.PAID, OrderStatus.NEEDS_ATTENTION):
        return Paid.DUPLICATE
    if not amount_matches:
        return Paid.AMOUNT_MISMATCH
    return Paid.COMMIT_STOCK  # awaiting payment, or late (expired, cancelled): re-reserve when stock allows


def decide_after_stock(*, commit: CommitResult) -> str:
    """The order's status once its stock was (or could not be) sold."""
    return OrderStatus.NEEDS_ATTENTION if commit is CommitResult.OUT_OF_STOCK else OrderStatus.PAID


RS = Reversal.State


def decide_reversal_answer(*, outcome: Outcome, sent: bool) -> str:
    """The reversal call answered: its new state."""
    if outcome is Outcome.SUCCESS:
        return RS.SUCCEEDED
    if outcome is Outcome.UNKNOWN and sent:
        return RS.UNKNOWN
    return RS.FAILED  # refused by the gateway, or never sent: nothing moved, staff may ask again


def decide_reversal_query(*, query_ok: bool, status: TransactionStatus | None) -> str | None:
    """A status query about a reversal whose answer was lost: its new state, or None (still unknown)."""
    if not query_ok:
        return None
    if status is TransactionStatus.COMPLETED:
        return RS.SUCCEEDED
    if status in (TransactionStatus.CANCELLED, TransactionStatus.EXPIRED):
        return RS.FAILED
    return None
