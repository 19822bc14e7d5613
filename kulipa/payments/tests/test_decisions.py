"""The pure decisions of kulipa.payments.decisions, and the transition tables they must respect, as tables.

Every expectation below is written by hand from the docstrings and the rules (docs/payments.md), not computed from
the code under test: a change to a decision or to a table is a deliberate change of a row here.

No database except the last few tests (``IllegalTransition`` needs a real row). The clock is fixed: an attempt
whose push started at ``T0``, PIN window 60 s, reconcile margin 300 s, backoff 20 s, callback grace 10 s.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from kulipa.core.transitions import IllegalTransition, TransitionTable, transition, transition_many
from kulipa.inventory.models import StockReservation
from kulipa.inventory.services import RESERVATION, CommitResult
from kulipa.orders.models import Order
from kulipa.orders.services import ORDER
from kulipa.orders.tests.factories import attempt_make, order_make, product_make
from kulipa.payments.decisions import (
    TAILED,
    Act,
    Clock,
    Hold,
    Paid,
    Step,
    decide_after_stock,
    decide_confirmed,
    decide_hold_after_close,
    decide_push_answer,
    decide_query_answer,
    decide_reversal_answer,
    decide_reversal_query,
    tail_next,
)
from kulipa.payments.models import CallbackDelivery, PaymentAttempt, Reversal
from kulipa.payments.transitions import ATTEMPT, DELIVERY, REVERSAL, attempt_transition
from mpesa import Outcome, TransactionStatus

S = PaymentAttempt.State
R = Reversal.State
D = CallbackDelivery.State
OS = Order.Status
RS = StockReservation.State
O = Outcome  # noqa: E741 - a short alias keeps the tables one row a line
TS = TransactionStatus

# --- the clock ------------------------------------------------------------------------------------------------
T0 = datetime(2025, 3, 1, 12, 0, 0, tzinfo=UTC)
"""The push started."""
PUSH_DEADLINE = T0 + timedelta(seconds=60)
FINAL_DEADLINE = T0 + timedelta(seconds=360)  # push deadline + 300 s margin
BACKOFF = timedelta(seconds=20)
GRACE = timedelta(seconds=10)


def _s(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


def _clock(now: datetime, tail: datetime | None) -> Clock:
    return Clock(
        now=now,
        push_deadline=PUSH_DEADLINE,
        final_deadline=FINAL_DEADLINE,
        backoff=BACKOFF,
        grace=GRACE,
        tail_next=tail,
    )


# Three positions of "now", each with its own tail time so a row that uses the wrong one shows.
CLOCKS: dict[str, Clock] = {
    "before_push_deadline": _clock(_s(10), tail=_s(10 + 300)),
    "before_final_deadline": _clock(_s(120), tail=_s(120 + 300)),
    "after_final_deadline": _clock(_s(400), tail=_s(400 + 600)),
}
# The instants each symbolic "next check" of the tables means, per clock, worked out by hand from the numbers above.
AT: dict[str, dict[str | None, datetime | None]] = {
    "before_push_deadline": {
        "tail": _s(310),
        "deadline+grace": _s(70),  # push deadline 60 + grace 10
        "now+backoff": _s(30),  # 10 + 20
        "now+1s": _s(11),
        None: None,
    },
    "before_final_deadline": {
        "tail": _s(420),
        "deadline+grace": _s(70),
        "now+backoff": _s(140),  # 120 + 20, before the final deadline (360)
        "now+1s": _s(121),
        "now+grace": _s(130),
        None: None,
    },
    "after_final_deadline": {
        "tail": _s(1000),
        "now+backoff": _s(420),  # past the final deadline: not held back to it
        "now+1s": _s(401),
        "now+grace": _s(410),
        None: None,
    },
}

Expect = tuple[Act, str | None, str | None]
"""(act, to, symbolic next_check_at) — resolved per clock through :data:`AT`."""

IGN: Expect = (Act.IGNORE, None, None)
CONF: Expect = (Act.CONFIRM, None, None)


def mv(to: str, at: str | None = None) -> Expect:
    return (Act.MOVE, to, at)


def rc(at: str | None) -> Expect:
    return (Act.RECHECK, None, at)


def rev(to: str | None) -> Expect:
    return (Act.REVERSED, to, None)


def _assert_step(step: Step, expect: Expect, clock_name: str) -> None:
    act, to, at = expect
    assert (step.act, step.to, step.next_check_at) == (act, to, AT[clock_name][at])


ALL_STATES = list(S)
ALL_OUTCOMES = list(O)
MODES = ["sync", "async"]


# --- decide_push_answer -----------------------------------------------------------------------------------------
# state, outcome, expected in sync mode, expected in async mode (sent=True, no code; clock before the push deadline).
# Late money is real: a sync SUCCESS confirms in every state but SUCCEEDED. Any other answer changes only PUSHING.
PUSH_ROWS: list[tuple[str, Outcome, Expect, Expect]] = [
    (S.QUEUED, O.SUCCESS, IGN, IGN),  # never claimed, so never sent
    (S.QUEUED, O.DECLINED, IGN, IGN),
    (S.QUEUED, O.INSUFFICIENT_FUNDS, IGN, IGN),
    (S.QUEUED, O.FAILED, IGN, IGN),
    (S.QUEUED, O.INVALID_REQUEST, IGN, IGN),
    (S.QUEUED, O.AUTH_ERROR, IGN, IGN),
    (S.QUEUED, O.UNKNOWN, IGN, IGN),
    (S.PUSHING, O.SUCCESS, CONF, mv(S.AWAITING_CALLBACK, "deadline+grace")),
    (S.PUSHING, O.DECLINED, mv(S.DECLINED), mv(S.DECLINED)),
    (S.PUSHING, O.INSUFFICIENT_FUNDS, mv(S.INSUFFICIENT_FUNDS), mv(S.INSUFFICIENT_FUNDS)),
    (S.PUSHING, O.FAILED, mv(S.FAILED), mv(S.FAILED)),
    (S.PUSHING, O.INVALID_REQUEST, mv(S.FAILED), mv(S.FAILED)),
    (S.PUSHING, O.AUTH_ERROR, mv(S.FAILED), mv(S.FAILED)),
    (S.PUSHING, O.UNKNOWN, mv(S.UNKNOWN, "now+backoff"), mv(S.UNKNOWN, "now+backoff")),
    (S.AWAITING_CALLBACK, O.SUCCESS, CONF, IGN),
    (S.AWAITING_CALLBACK, O.DECLINED, IGN, IGN),
    (S.AWAITING_CALLBACK, O.INSUFFICIENT_FUNDS, IGN, IGN),
    (S.AWAITING_CALLBACK, O.FAILED, IGN, IGN),
    (S.AWAITING_CALLBACK, O.INVALID_REQUEST, IGN, IGN),
    (S.AWAITING_CALLBACK, O.AUTH_ERROR, IGN, IGN),
    (S.AWAITING_CALLBACK, O.UNKNOWN, IGN, IGN),
    (S.UNKNOWN, O.SUCCESS, CONF, IGN),
    (S.UNKNOWN, O.DECLINED, IGN, IGN),
    (S.UNKNOWN, O.INSUFFICIENT_FUNDS, IGN, IGN),
    (S.UNKNOWN, O.FAILED, IGN, IGN),
    (S.UNKNOWN, O.INVALID_REQUEST, IGN, IGN),
    (S.UNKNOWN, O.AUTH_ERROR, IGN, IGN),
    (S.UNKNOWN, O.UNKNOWN, IGN, IGN),
    (S.SUCCEEDED, O.SUCCESS, IGN, IGN),
    (S.SUCCEEDED, O.DECLINED, IGN, IGN),
    (S.SUCCEEDED, O.INSUFFICIENT_FUNDS, IGN, IGN),
    (S.SUCCEEDED, O.FAILED, IGN, IGN),
    (S.SUCCEEDED, O.INVALID_REQUEST, IGN, IGN),
    (S.SUCCEEDED, O.AUTH_ERROR, IGN, IGN),
    (S.SUCCEEDED, O.UNKNOWN, IGN, IGN),
    (S.DECLINED, O.SUCCESS, CONF, IGN),
    (S.DECLINED, O.DECLINED, IGN, IGN),
    (S.DECLINED, O.INSUFFICIENT_FUNDS, IGN, IGN),
    (S.DECLINED, O.FAILED, IGN, IGN),
    (S.DECLINED, O.INVALID_REQUEST, IGN, IGN),
    (S.DECLINED, O.AUTH_ERROR, IGN, IGN),
    (S.DECLINED, O.UNKNOWN, IGN, IGN),
    (S.INSUFFICIENT_FUNDS, O.SUCCESS, CONF, IGN),
    (S.INSUFFICIENT_FUNDS, O.DECLINED, IGN, IGN),
    (S.INSUFFICIENT_FUNDS, O.INSUFFICIENT_FUNDS, IGN, IGN),
    (S.INSUFFICIENT_FUNDS, O.FAILED, IGN, IGN),
    (S.INSUFFICIENT_FUNDS, O.INVALID_REQUEST, IGN, IGN),
    (S.INSUFFICIENT_FUNDS, O.AUTH_ERROR, IGN, IGN),
    (S.INSUFFICIENT_FUNDS, O.UNKNOWN, IGN, IGN),
    (S.TIMED_OUT, O.SUCCESS, CONF, IGN),
    (S.TIMED_OUT, O.DECLINED, IGN, IGN),
    (S.TIMED_OUT, O.INSUFFICIENT_FUNDS, IGN, IGN),
    (S.TIMED_OUT, O.FAILED, IGN, IGN),
    (S.TIMED_OUT, O.INVALID_REQUEST, IGN, IGN),
    (S.TIMED_OUT, O.AUTH_ERROR, IGN, IGN),
    (S.TIMED_OUT, O.UNKNOWN, IGN, IGN),
    (S.FAILED, O.SUCCESS, CONF, IGN),
    (S.FAILED, O.DECLINED, IGN, IGN),
    (S.FAILED, O.INSUFFICIENT_FUNDS, IGN, IGN),
    (S.FAILED, O.FAILED, IGN, IGN),
    (S.FAILED, O.INVALID_REQUEST, IGN, IGN),
    (S.FAILED, O.AUTH_ERROR, IGN, IGN),
    (S.FAILED, O.UNKNOWN, IGN, IGN),
    (S.NOT_SENT, O.SUCCESS, CONF, IGN),
    (S.NOT_SENT, O.DECLINED, IGN, IGN),
    (S.NOT_SENT, O.INSUFFICIENT_FUNDS, IGN, IGN),
    (S.NOT_SENT, O.FAILED, IGN, IGN),
    (S.NOT_SENT, O.INVALID_REQUEST, IGN, IGN),
    (S.NOT_SENT, O.AUTH_ERROR, IGN, IGN),
    (S.NOT_SENT, O.UNKNOWN, IGN, IGN),
    (S.UNCONFIRMED, O.SUCCESS, CONF, IGN),
    (S.UNCONFIRMED, O.DECLINED, IGN, IGN),
    (S.UNCONFIRMED, O.INSUFFICIENT_FUNDS, IGN, IGN),
    (S.UNCONFIRMED, O.FAILED, IGN, IGN),
    (S.UNCONFIRMED, O.INVALID_REQUEST, IGN, IGN),
    (S.UNCONFIRMED, O.AUTH_ERROR, IGN, IGN),
    (S.UNCONFIRMED, O.UNKNOWN, IGN, IGN),
]

PUSH_CASES = [
    pytest.param(state, mode, outcome, expect, id=f"{state}-{outcome}-{mode}")
    for state, outcome, sync_expect, async_expect in PUSH_ROWS
    for mode, expect in (("sync", sync_expect), ("async", async_expect))
]


def test_push_table_covers_every_state_and_outcome():
    assert sorted((s, o) for s, o, _, _ in PUSH_ROWS) == sorted((s, o) for s in ALL_STATES for o in ALL_OUTCOMES)


@pytest.mark.parametrize(("state", "mode", "outcome", "expect"), PUSH_CASES)
def test_push_answer(state, mode, outcome, expect):
    clock = CLOCKS["before_push_deadline"]
    step = decide_push_answer(state=state, mode=mode, outcome=outcome, code=None, sent=True, clock=clock)
    _assert_step(step, expect, "before_push_deadline")


# UNKNOWN that never left the building: NOT_SENT, and only a PUSHING attempt can be "not sent".
PUSH_NOT_SENT_ROWS: list[tuple[str, Expect]] = [
    (S.QUEUED, IGN),
    (S.PUSHING, mv(S.NOT_SENT)),
    (S.AWAITING_CALLBACK, IGN),
    (S.UNKNOWN, IGN),
    (S.SUCCEEDED, IGN),
    (S.DECLINED, IGN),
    (S.INSUFFICIENT_FUNDS, IGN),
    (S.TIMED_OUT, IGN),
    (S.FAILED, IGN),
    (S.NOT_SENT, IGN),
    (S.UNCONFIRMED, IGN),
]


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize(("state", "expect"), [pytest.param(s, e, id=s) for s, e in PUSH_NOT_SENT_ROWS])
def test_push_unknown_not_sent(state, expect, mode):
    for code in (None, "INS-9"):  # "not sent" wins over INS-9
        clock = CLOCKS["before_push_deadline"]
        step = decide_push_answer(state=state, mode=mode, outcome=O.UNKNOWN, code=code, sent=False, clock=clock)
        _assert_step(step, expect, "before_push_deadline")


# INS-9: the PIN window closed, the gateway already knows: ask again in 1 s (not the backoff).
PUSH_INS9_ROWS: list[tuple[str, str, Expect]] = [
    ("before_push_deadline", S.PUSHING, mv(S.UNKNOWN, "now+1s")),
    ("before_final_deadline", S.PUSHING, mv(S.UNKNOWN, "now+1s")),
    ("after_final_deadline", S.PUSHING, mv(S.UNKNOWN, "now+1s")),
    ("before_final_deadline", S.AWAITING_CALLBACK, IGN),
    ("before_final_deadline", S.UNKNOWN, IGN),
    ("before_final_deadline", S.TIMED_OUT, IGN),
    ("before_final_deadline", S.SUCCEEDED, IGN),
]


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize(
    ("clock_name", "state", "expect"), [pytest.param(c, s, e, id=f"{s}-{c}") for c, s, e in PUSH_INS9_ROWS]
)
def test_push_ins9_checks_again_in_one_second(clock_name, state, expect, mode):
    step = decide_push_answer(
        state=state, mode=mode, outcome=O.UNKNOWN, code="INS-9", sent=True, clock=CLOCKS[clock_name]
    )
    _assert_step(step, expect, clock_name)


# The same PUSHING answers later in the attempt's life (the answer of a long-held push arrives late).
PUSH_LATE_ROWS: list[tuple[str, str, Outcome, Expect]] = [
    ("before_final_deadline", "async", O.SUCCESS, mv(S.AWAITING_CALLBACK, "now+grace")),
    ("before_final_deadline", "sync", O.SUCCESS, CONF),
    ("before_final_deadline", "sync", O.UNKNOWN, mv(S.UNKNOWN, "now+backoff")),
    ("before_final_deadline", "sync", O.DECLINED, mv(S.DECLINED)),
    ("after_final_deadline", "async", O.SUCCESS, mv(S.AWAITING_CALLBACK, "now+grace")),
    ("after_final_deadline", "sync", O.SUCCESS, CONF),
    ("after_final_deadline", "sync", O.UNKNOWN, mv(S.UNKNOWN, "now+backoff")),
    ("after_final_deadline", "async", O.INSUFFICIENT_FUNDS, mv(S.INSUFFICIENT_FUNDS)),
]


@pytest.mark.parametrize(
    ("clock_name", "mode", "outcome", "expect"),
    [pytest.param(c, m, o, e, id=f"{o}-{m}-{c}") for c, m, o, e in PUSH_LATE_ROWS],
)
def test_push_answer_of_a_pushing_attempt_later(clock_name, mode, outcome, expect):
    step = decide_push_answer(
        state=S.PUSHING, mode=mode, outcome=outcome, code=None, sent=True, clock=CLOCKS[clock_name]
    )
    _assert_step(step, expect, clock_name)


# --- decide_query_answer ----------------------------------------------------------------------------------------
# answer name → (query_ok, status, reversed)
ANSWERS: dict[str, tuple[bool, TransactionStatus | None, bool]] = {
    "completed": (True, TS.COMPLETED, False),
    "completed_reversed": (True, TS.COMPLETED, True),
    "cancelled": (True, TS.CANCELLED, False),
    "expired": (True, TS.EXPIRED, False),
    "not_found": (True, TS.NOT_FOUND, False),
    "other": (True, TS.OTHER, False),
    "query_failed": (False, None, False),
}
QUERY_RESULT_CODE = "INS-2006"
"""The attempt's stored result code in the main table: a Cancelled answer closes it as INSUFFICIENT_FUNDS."""

CLOCK_NAMES = ["before_push_deadline", "before_final_deadline", "after_final_deadline"]
_UNKNOWN_PUSHING = (rc("deadline+grace"), mv(S.UNKNOWN, "now+backoff"), mv(S.UNCONFIRMED, "tail"))
_UNKNOWN_WAITING = (rc("now+backoff"), rc("now+backoff"), mv(S.UNCONFIRMED, "tail"))


def _all_clocks(expect: Expect) -> tuple[Expect, Expect, Expect]:
    return (expect, expect, expect)


# state, answer, expected (before push deadline, between push and final deadline, after final deadline)
QUERY_ROWS: list[tuple[str, str, tuple[Expect, Expect, Expect]]] = [
    # QUEUED was never sent: nothing a query says about its reference is about money it moved.
    (S.QUEUED, "completed", _all_clocks(IGN)),
    (S.QUEUED, "completed_reversed", _all_clocks(IGN)),
    (S.QUEUED, "cancelled", _all_clocks(IGN)),
    (S.QUEUED, "expired", _all_clocks(IGN)),
    (S.QUEUED, "not_found", _all_clocks(IGN)),
    (S.QUEUED, "other", _all_clocks(IGN)),
    (S.QUEUED, "query_failed", _all_clocks(IGN)),
    (S.PUSHING, "completed", _all_clocks(CONF)),
    (S.PUSHING, "completed_reversed", _all_clocks(rev(S.FAILED))),
    (S.PUSHING, "cancelled", _all_clocks(mv(S.INSUFFICIENT_FUNDS))),
    (S.PUSHING, "expired", _all_clocks(mv(S.TIMED_OUT, "tail"))),
    (S.PUSHING, "not_found", _UNKNOWN_PUSHING),
    (S.PUSHING, "other", _UNKNOWN_PUSHING),
    (S.PUSHING, "query_failed", _UNKNOWN_PUSHING),
    (S.AWAITING_CALLBACK, "completed", _all_clocks(CONF)),
    (S.AWAITING_CALLBACK, "completed_reversed", _all_clocks(rev(S.FAILED))),
    (S.AWAITING_CALLBACK, "cancelled", _all_clocks(mv(S.INSUFFICIENT_FUNDS))),
    (S.AWAITING_CALLBACK, "expired", _all_clocks(mv(S.TIMED_OUT, "tail"))),
    (S.AWAITING_CALLBACK, "not_found", _UNKNOWN_WAITING),
    (S.AWAITING_CALLBACK, "other", _UNKNOWN_WAITING),
    (S.AWAITING_CALLBACK, "query_failed", _UNKNOWN_WAITING),
    (S.UNKNOWN, "completed", _all_clocks(CONF)),
    (S.UNKNOWN, "completed_reversed", _all_clocks(rev(S.FAILED))),
    (S.UNKNOWN, "cancelled", _all_clocks(mv(S.INSUFFICIENT_FUNDS))),
    (S.UNKNOWN, "expired", _all_clocks(mv(S.TIMED_OUT, "tail"))),
    (S.UNKNOWN, "not_found", _UNKNOWN_WAITING),
    (S.UNKNOWN, "other", _UNKNOWN_WAITING),
    (S.UNKNOWN, "query_failed", _UNKNOWN_WAITING),
    (S.SUCCEEDED, "completed", _all_clocks(IGN)),
    (S.SUCCEEDED, "completed_reversed", _all_clocks(IGN)),
    (S.SUCCEEDED, "cancelled", _all_clocks(IGN)),
    (S.SUCCEEDED, "expired", _all_clocks(IGN)),
    (S.SUCCEEDED, "not_found", _all_clocks(IGN)),
    (S.SUCCEEDED, "other", _all_clocks(IGN)),
    (S.SUCCEEDED, "query_failed", _all_clocks(IGN)),
    (S.DECLINED, "completed", _all_clocks(CONF)),
    (S.DECLINED, "completed_reversed", _all_clocks(rev(None))),
    (S.DECLINED, "cancelled", _all_clocks(rc(None))),
    (S.DECLINED, "expired", _all_clocks(rc(None))),
    (S.DECLINED, "not_found", _all_clocks(rc(None))),
    (S.DECLINED, "other", _all_clocks(rc(None))),
    (S.DECLINED, "query_failed", _all_clocks(rc(None))),
    (S.INSUFFICIENT_FUNDS, "completed", _all_clocks(CONF)),
    (S.INSUFFICIENT_FUNDS, "completed_reversed", _all_clocks(rev(None))),
    (S.INSUFFICIENT_FUNDS, "cancelled", _all_clocks(rc(None))),
    (S.INSUFFICIENT_FUNDS, "expired", _all_clocks(rc(None))),
    (S.INSUFFICIENT_FUNDS, "not_found", _all_clocks(rc(None))),
    (S.INSUFFICIENT_FUNDS, "other", _all_clocks(rc(None))),
    (S.INSUFFICIENT_FUNDS, "query_failed", _all_clocks(rc(None))),
    (S.TIMED_OUT, "completed", _all_clocks(CONF)),
    (S.TIMED_OUT, "completed_reversed", _all_clocks(rev(None))),
    (S.TIMED_OUT, "cancelled", _all_clocks(rc("tail"))),
    (S.TIMED_OUT, "expired", _all_clocks(rc("tail"))),
    (S.TIMED_OUT, "not_found", _all_clocks(rc("tail"))),
    (S.TIMED_OUT, "other", _all_clocks(rc("tail"))),
    (S.TIMED_OUT, "query_failed", _all_clocks(rc("tail"))),
    (S.FAILED, "completed", _all_clocks(CONF)),
    (S.FAILED, "completed_reversed", _all_clocks(rev(None))),
    (S.FAILED, "cancelled", _all_clocks(rc(None))),
    (S.FAILED, "expired", _all_clocks(rc(None))),
    (S.FAILED, "not_found", _all_clocks(rc(None))),
    (S.FAILED, "other", _all_clocks(rc(None))),
    (S.FAILED, "query_failed", _all_clocks(rc(None))),
    (S.NOT_SENT, "completed", _all_clocks(CONF)),
    (S.NOT_SENT, "completed_reversed", _all_clocks(rev(None))),
    (S.NOT_SENT, "cancelled", _all_clocks(rc(None))),
    (S.NOT_SENT, "expired", _all_clocks(rc(None))),
    (S.NOT_SENT, "not_found", _all_clocks(rc(None))),
    (S.NOT_SENT, "other", _all_clocks(rc(None))),
    (S.NOT_SENT, "query_failed", _all_clocks(rc(None))),
    (S.UNCONFIRMED, "completed", _all_clocks(CONF)),
    (S.UNCONFIRMED, "completed_reversed", _all_clocks(rev(None))),
    (S.UNCONFIRMED, "cancelled", _all_clocks(rc("tail"))),
    (S.UNCONFIRMED, "expired", _all_clocks(rc("tail"))),
    (S.UNCONFIRMED, "not_found", _all_clocks(rc("tail"))),
    (S.UNCONFIRMED, "other", _all_clocks(rc("tail"))),
    (S.UNCONFIRMED, "query_failed", _all_clocks(rc("tail"))),
]

QUERY_CASES = [
    pytest.param(state, answer, clock_name, expect, id=f"{state}-{answer}-{clock_name}")
    for state, answer, expects in QUERY_ROWS
    for clock_name, expect in zip(CLOCK_NAMES, expects, strict=True)
]


def _query(state: str, answer: str, clock: Clock, *, result_code: str = QUERY_RESULT_CODE, hint: str | None = None):
    query_ok, status, reversed_ = ANSWERS[answer]
    return decide_query_answer(
        state=state,
        query_ok=query_ok,
        status=status,
        reversed=reversed_,
        result_code=result_code,
        hint_code=hint,
        clock=clock,
    )


def test_query_table_covers_every_state_and_answer():
    assert sorted((s, a) for s, a, _ in QUERY_ROWS) == sorted((s, a) for s in ALL_STATES for a in ANSWERS)


@pytest.mark.parametrize(("state", "answer", "clock_name", "expect"), QUERY_CASES)
def test_query_answer(state, answer, clock_name, expect):
    _assert_step(_query(state, answer, CLOCKS[clock_name]), expect, clock_name)


def test_completed_and_reversed_is_never_a_confirmation():
    for state in ALL_STATES:
        for clock in CLOCKS.values():
            assert _query(state, "completed_reversed", clock).act is not Act.CONFIRM


# A failed query says nothing, even when a status value came with it.
@pytest.mark.parametrize("clock_name", CLOCK_NAMES)
@pytest.mark.parametrize("state", ALL_STATES)
@pytest.mark.parametrize("reversed_", [False, True], ids=["plain", "reversed"])
def test_failed_query_ignores_the_status_it_carries(state, clock_name, reversed_):
    clock = CLOCKS[clock_name]
    stale = decide_query_answer(
        state=state,
        query_ok=False,
        status=TS.COMPLETED,
        reversed=reversed_,
        result_code=QUERY_RESULT_CODE,
        hint_code=None,
        clock=clock,
    )
    assert stale == _query(state, "query_failed", clock)


# Cancelled: the failure the attempt's own result code means; when that says nothing better than FAILED, the
# callback's code (hint) decides; with neither, FAILED.
CANCELLED_CODE_ROWS: list[tuple[str, str | None, str]] = [
    ("INS-5", None, S.DECLINED),
    ("INS-2006", None, S.INSUFFICIENT_FUNDS),
    ("INS-6", None, S.FAILED),
    ("INS-13", None, S.FAILED),  # an invalid request
    ("INS-2", None, S.FAILED),  # an auth error
    ("", None, S.FAILED),
    ("", "INS-5", S.DECLINED),
    ("", "INS-2006", S.INSUFFICIENT_FUNDS),
    ("", "INS-6", S.FAILED),
    ("INS-0", "INS-5", S.DECLINED),  # the async accept's code says nothing about the failure
    ("INS-0", None, S.FAILED),
    ("INS-9", "INS-2006", S.INSUFFICIENT_FUNDS),
    ("INS-5", "INS-2006", S.DECLINED),  # the attempt's own code wins when it means something
    ("INS-2006", "INS-5", S.INSUFFICIENT_FUNDS),
    ("NOT-A-CODE", None, S.FAILED),
]


@pytest.mark.parametrize("state", [S.PUSHING, S.AWAITING_CALLBACK, S.UNKNOWN])
@pytest.mark.parametrize(
    ("result_code", "hint", "final"),
    [pytest.param(c, h, f, id=f"{c or 'none'}-hint-{h or 'none'}") for c, h, f in CANCELLED_CODE_ROWS],
)
def test_cancelled_closes_with_the_failure_its_code_means(state, result_code, hint, final):
    step = _query(state, "cancelled", CLOCKS["before_final_deadline"], result_code=result_code, hint=hint)
    assert (step.act, step.to, step.next_check_at) == (Act.MOVE, final, None)


# Exactly on a deadline counts as past it.
BOUNDARY_ROWS: list[tuple[str, datetime, Expect, datetime | None]] = [
    (S.PUSHING, PUSH_DEADLINE, mv(S.UNKNOWN), PUSH_DEADLINE + BACKOFF),
    (S.AWAITING_CALLBACK, PUSH_DEADLINE, rc(None), PUSH_DEADLINE + BACKOFF),
    (S.PUSHING, FINAL_DEADLINE, mv(S.UNCONFIRMED), _s(9999)),
    (S.UNKNOWN, FINAL_DEADLINE, mv(S.UNCONFIRMED), _s(9999)),
    (S.AWAITING_CALLBACK, FINAL_DEADLINE - timedelta(seconds=5), rc(None), FINAL_DEADLINE),  # held back
    (S.PUSHING, FINAL_DEADLINE - timedelta(seconds=5), mv(S.UNKNOWN), FINAL_DEADLINE),  # held back
]


@pytest.mark.parametrize(
    ("state", "now", "expect", "at"),
    [pytest.param(s, n, e, a, id=f"{s}-at-{(n - T0).seconds}s") for s, n, e, a in BOUNDARY_ROWS],
)
def test_query_not_found_on_the_deadlines(state, now, expect, at):
    step = _query(state, "not_found", _clock(now, tail=_s(9999)))
    assert (step.act, step.to, step.next_check_at) == (expect[0], expect[1], at)


# --- the next check of an open attempt lands on time ----------------------------------------------------------
NEAR_FINAL = _clock(FINAL_DEADLINE - timedelta(seconds=5), tail=_s(9999))
"""An answer 5 s before the final deadline: the backoff (20 s) and the grace (10 s) both reach past it."""
BOUND_CLOCKS: dict[str, Clock] = {**CLOCKS, "near_final_deadline": NEAR_FINAL}
PUSH_VARIANTS: list[tuple[Outcome, str | None, bool]] = [
    *((o, None, True) for o in ALL_OUTCOMES),
    (O.UNKNOWN, "INS-9", True),
    (O.UNKNOWN, None, False),
]


def _push_bound_cases() -> list[Any]:
    cases = []
    for clock_name in BOUND_CLOCKS:
        for state in ALL_STATES:
            for mode in MODES:
                for outcome, code, sent in PUSH_VARIANTS:
                    case_id = f"{state}-{outcome}-{code or 'nocode'}-{'sent' if sent else 'unsent'}-{mode}-{clock_name}"
                    cases.append(pytest.param(clock_name, state, mode, outcome, code, sent, id=case_id))
    return cases


def _lands_on_time(state: str, step: Step, clock: Clock) -> bool:
    """An attempt still open after ``step`` is next checked no later than the final deadline, while it is ahead."""
    after = step.to if step.act is Act.MOVE else state
    if after not in PaymentAttempt.IN_FLIGHT or step.next_check_at is None or clock.now >= clock.final_deadline:
        return True
    return step.next_check_at <= clock.final_deadline


@pytest.mark.parametrize(("clock_name", "state", "mode", "outcome", "code", "sent"), _push_bound_cases())
def test_push_answer_next_check_never_after_the_final_deadline(clock_name, state, mode, outcome, code, sent):
    clock = BOUND_CLOCKS[clock_name]
    step = decide_push_answer(state=state, mode=mode, outcome=outcome, code=code, sent=sent, clock=clock)
    assert _lands_on_time(state, step, clock), step


@pytest.mark.parametrize("clock_name", list(BOUND_CLOCKS))
@pytest.mark.parametrize("answer", list(ANSWERS))
@pytest.mark.parametrize("state", ALL_STATES)
def test_query_answer_next_check_never_after_the_final_deadline(state, answer, clock_name):
    clock = BOUND_CLOCKS[clock_name]
    step = _query(state, answer, clock)
    assert _lands_on_time(state, step, clock), step


# --- no decision asks for a move the table forbids --------------------------------------------------------------
def _every_attempt_decision() -> list[tuple[str, str, Step]]:
    """(state, description, step) for every input of the push and query tables above, at every clock."""
    out: list[tuple[str, str, Step]] = []
    for clock_name, clock in BOUND_CLOCKS.items():
        for state in ALL_STATES:
            for mode in MODES:
                for outcome, code, sent in PUSH_VARIANTS:
                    step = decide_push_answer(
                        state=state, mode=mode, outcome=outcome, code=code, sent=sent, clock=clock
                    )
                    out.append((state, f"push {outcome}/{code}/{sent}/{mode} @{clock_name}", step))
            for answer in ANSWERS:
                out.append((state, f"query {answer} @{clock_name}", _query(state, answer, clock)))
            for result_code, hint, _final in CANCELLED_CODE_ROWS:
                step = _query(state, "cancelled", clock, result_code=result_code, hint=hint)
                out.append((state, f"query cancelled {result_code}/{hint} @{clock_name}", step))
    return out


def test_every_move_decided_is_allowed_by_the_attempt_table():
    decisions = _every_attempt_decision()
    moves = [(state, step.to, why) for state, why, step in decisions if step.act is Act.MOVE]
    assert moves, "the tables produce moves"
    illegal = [(state, to, why) for state, to, why in moves if to is None or not ATTEMPT.can(state, to)]
    assert illegal == []


def _implied_target(step: Step) -> str | None:
    """The state a step writes besides MOVE: CONFIRM makes the attempt SUCCEEDED (``order_mark_paid``); REVERSED
    with ``to`` closes it (``apply_step``)."""
    if step.act is Act.CONFIRM:
        return S.SUCCEEDED
    if step.act is Act.REVERSED:
        return step.to
    return None


@pytest.mark.parametrize("state", ALL_STATES)
def test_confirm_and_reversed_write_only_allowed_states(state):
    illegal = [
        (why, step.act, target)
        for s, why, step in _every_attempt_decision()
        if s == state and (target := _implied_target(step)) is not None and not ATTEMPT.can(state, target)
    ]
    assert illegal == []


def test_every_reversal_decision_is_allowed_by_the_reversal_table():
    # The answer is applied to a SENDING reversal; the query to one whose answer was lost (UNKNOWN).
    for outcome in ALL_OUTCOMES:
        for sent in (True, False):
            to = decide_reversal_answer(outcome=outcome, sent=sent)
            assert REVERSAL.can(R.SENDING, to), (outcome, sent, to)
    for query_ok in (True, False):
        for status in [None, *TS]:
            decided = decide_reversal_query(query_ok=query_ok, status=status)
            assert decided is None or REVERSAL.can(R.UNKNOWN, decided), (query_ok, status, decided)


# --- tail_next --------------------------------------------------------------------------------------------------
TAIL_FIRST = timedelta(minutes=5)
TAIL_HORIZON = timedelta(hours=48)


def _tail(now_minutes: float) -> datetime | None:
    return tail_next(closed_at=T0, now=T0 + timedelta(minutes=now_minutes), first=TAIL_FIRST, horizon=TAIL_HORIZON)


# minutes after closing → next ask, minutes after closing (None: stop)
TAIL_ROWS: list[tuple[float, float | None]] = [
    (0, 5),
    (5, 15),
    (15, 45),
    (45, 135),  # 2¼ h
    (135, 405),
    (405, 1215),
    (1215, None),  # 3645 min > 48 h: stop
    (1, 6),  # early: at least `first`
    (2.5, 7.5),  # 2 × 2.5 = 5 = first
    (10, 30),
    (960, 2880),  # exactly the horizon (48 h): still asked
    (960.5, None),  # just past it
    (3000, None),
]


@pytest.mark.parametrize(("now", "expected"), [pytest.param(n, e, id=f"{n}min") for n, e in TAIL_ROWS])
def test_tail_next(now, expected):
    assert _tail(now) == (None if expected is None else T0 + timedelta(minutes=expected))


def test_tail_schedule_5_15_45_then_stops():
    asked_at = []
    now: datetime | None = T0
    while now is not None:
        now = tail_next(closed_at=T0, now=now, first=TAIL_FIRST, horizon=TAIL_HORIZON)
        if now is not None:
            asked_at.append(now - T0)
    assert asked_at == [timedelta(minutes=m) for m in (5, 15, 45, 135, 405, 1215)]


# --- decide_confirmed / decide_after_stock ----------------------------------------------------------------------
# order status, already paid, amount matches → plan
CONFIRMED_ROWS: list[tuple[str, bool, bool, Paid]] = [
    (OS.AWAITING_PAYMENT, False, True, Paid.COMMIT_STOCK),
    (OS.AWAITING_PAYMENT, False, False, Paid.AMOUNT_MISMATCH),
    (OS.AWAITING_PAYMENT, True, True, Paid.DUPLICATE),
    (OS.AWAITING_PAYMENT, True, False, Paid.DUPLICATE),
    (OS.PAID, False, True, Paid.DUPLICATE),
    (OS.PAID, False, False, Paid.DUPLICATE),
    (OS.PAID, True, True, Paid.DUPLICATE),
    (OS.PAID, True, False, Paid.DUPLICATE),
    (OS.NEEDS_ATTENTION, False, True, Paid.DUPLICATE),
    (OS.NEEDS_ATTENTION, False, False, Paid.DUPLICATE),
    (OS.NEEDS_ATTENTION, True, True, Paid.DUPLICATE),
    (OS.NEEDS_ATTENTION, True, False, Paid.DUPLICATE),
    (OS.EXPIRED, False, True, Paid.COMMIT_STOCK),  # late money: re-reserve when stock allows
    (OS.EXPIRED, False, False, Paid.AMOUNT_MISMATCH),
    (OS.EXPIRED, True, True, Paid.DUPLICATE),
    (OS.EXPIRED, True, False, Paid.DUPLICATE),
    (OS.CANCELLED, False, True, Paid.COMMIT_STOCK),
    (OS.CANCELLED, False, False, Paid.AMOUNT_MISMATCH),
    (OS.CANCELLED, True, True, Paid.DUPLICATE),
    (OS.CANCELLED, True, False, Paid.DUPLICATE),
]


def test_confirmed_table_covers_every_input():
    assert sorted((s, p, m) for s, p, m, _ in CONFIRMED_ROWS) == sorted(
        (s, p, m) for s in OS for p in (False, True) for m in (False, True)
    )


@pytest.mark.parametrize(
    ("order_status", "already_paid", "amount_matches", "plan"),
    [
        pytest.param(s, p, m, plan, id=f"{s}-{'paid' if p else 'unpaid'}-{'match' if m else 'mismatch'}")
        for s, p, m, plan in CONFIRMED_ROWS
    ],
)
def test_decide_confirmed(order_status, already_paid, amount_matches, plan):
    assert decide_confirmed(order_status=order_status, already_paid=already_paid, amount_matches=amount_matches) is plan


AFTER_STOCK_ROWS: list[tuple[CommitResult, str]] = [
    (CommitResult.COMMITTED, OS.PAID),
    (CommitResult.REACQUIRED, OS.PAID),
    (CommitResult.OUT_OF_STOCK, OS.NEEDS_ATTENTION),
]


def test_after_stock_table_covers_every_result():
    assert {c for c, _ in AFTER_STOCK_ROWS} == set(CommitResult)


@pytest.mark.parametrize(("commit", "status"), [pytest.param(c, s, id=c.value) for c, s in AFTER_STOCK_ROWS])
def test_decide_after_stock(commit, status):
    assert decide_after_stock(commit=commit) == status
    assert ORDER.can(OS.AWAITING_PAYMENT, status)


# --- decide_hold_after_close -----------------------------------------------------------------------------------
# the state a push of an unpaid order closed in (without money) → what happens to the order's stock
HOLD_ROWS: list[tuple[str, Hold]] = [
    (S.DECLINED, Hold.RELEASE),  # the phone said no
    (S.INSUFFICIENT_FUNDS, Hold.RELEASE),  # the phone said no (no balance)
    (S.TIMED_OUT, Hold.RELEASE),  # nobody answered the prompt
    (S.FAILED, Hold.SHRINK),  # the gateway failed (or the payment was reversed): not the customer's answer
    (S.NOT_SENT, Hold.SHRINK),  # never reached the phone: try again at once
    (S.UNCONFIRMED, Hold.SHRINK),  # M-Pesa could not say: money may still come
]


def test_hold_table_covers_every_closing_state():
    closing = {t for s, t in ATTEMPT.pairs() if s in PaymentAttempt.IN_FLIGHT and t not in PaymentAttempt.IN_FLIGHT}
    assert {s for s, _ in HOLD_ROWS} == closing - {S.SUCCEEDED}


@pytest.mark.parametrize(("state", "hold"), [pytest.param(s, h, id=s) for s, h in HOLD_ROWS])
def test_decide_hold_after_close(state, hold):
    assert decide_hold_after_close(state=state) is hold


# --- reversals --------------------------------------------------------------------------------------------------
REVERSAL_ANSWER_ROWS: list[tuple[Outcome, bool, str]] = [
    (O.SUCCESS, True, R.SUCCEEDED),
    (O.SUCCESS, False, R.SUCCEEDED),
    (O.DECLINED, True, R.FAILED),
    (O.DECLINED, False, R.FAILED),
    (O.INSUFFICIENT_FUNDS, True, R.FAILED),
    (O.INSUFFICIENT_FUNDS, False, R.FAILED),
    (O.FAILED, True, R.FAILED),
    (O.FAILED, False, R.FAILED),
    (O.INVALID_REQUEST, True, R.FAILED),
    (O.INVALID_REQUEST, False, R.FAILED),  # refused before sending
    (O.AUTH_ERROR, True, R.FAILED),
    (O.AUTH_ERROR, False, R.FAILED),
    (O.UNKNOWN, True, R.UNKNOWN),  # may have moved: ask
    (O.UNKNOWN, False, R.FAILED),  # never left: nothing moved, staff may ask again
]


def test_reversal_answer_table_covers_every_input():
    assert sorted((o, s) for o, s, _ in REVERSAL_ANSWER_ROWS) == sorted((o, s) for o in O for s in (False, True))


@pytest.mark.parametrize(
    ("outcome", "sent", "state"),
    [pytest.param(o, s, st, id=f"{o}-{'sent' if s else 'unsent'}") for o, s, st in REVERSAL_ANSWER_ROWS],
)
def test_decide_reversal_answer(outcome, sent, state):
    assert decide_reversal_answer(outcome=outcome, sent=sent) == state


REVERSAL_QUERY_ROWS: list[tuple[bool, TransactionStatus | None, str | None]] = [
    (True, TS.COMPLETED, R.SUCCEEDED),
    (True, TS.CANCELLED, R.FAILED),
    (True, TS.EXPIRED, R.FAILED),
    (True, TS.NOT_FOUND, None),
    (True, TS.OTHER, None),
    (True, None, None),
    (False, TS.COMPLETED, None),  # the query itself failed: its status means nothing
    (False, TS.CANCELLED, None),
    (False, TS.EXPIRED, None),
    (False, TS.NOT_FOUND, None),
    (False, TS.OTHER, None),
    (False, None, None),
]


def test_reversal_query_table_covers_every_input():
    assert sorted((q, str(s)) for q, s, _ in REVERSAL_QUERY_ROWS) == sorted(
        (q, str(s)) for q in (False, True) for s in [None, *TS]
    )


@pytest.mark.parametrize(
    ("query_ok", "status", "state"),
    [pytest.param(q, s, st, id=f"{'ok' if q else 'failed'}-{s}") for q, s, st in REVERSAL_QUERY_ROWS],
)
def test_decide_reversal_query(query_ok, status, state):
    assert decide_reversal_query(query_ok=query_ok, status=status) == state


# --- the transition tables themselves ---------------------------------------------------------------------------
EXPECTED_PAIRS: dict[str, list[tuple[str, str]]] = {
    "attempt": [
        ("queued", "pushing"),
        ("queued", "not_sent"),
        ("pushing", "awaiting_callback"),
        ("pushing", "unknown"),
        ("pushing", "not_sent"),
        ("pushing", "succeeded"),
        ("pushing", "declined"),
        ("pushing", "insufficient_funds"),
        ("pushing", "failed"),
        ("pushing", "timed_out"),
        ("pushing", "unconfirmed"),
        ("awaiting_callback", "succeeded"),
        ("awaiting_callback", "declined"),
        ("awaiting_callback", "insufficient_funds"),
        ("awaiting_callback", "failed"),
        ("awaiting_callback", "timed_out"),
        ("awaiting_callback", "unconfirmed"),
        ("unknown", "succeeded"),
        ("unknown", "declined"),
        ("unknown", "insufficient_funds"),
        ("unknown", "failed"),
        ("unknown", "timed_out"),
        ("unknown", "unconfirmed"),
        # late money is real: every closed failure can still become SUCCEEDED
        ("declined", "succeeded"),
        ("insufficient_funds", "succeeded"),
        ("failed", "succeeded"),
        ("timed_out", "succeeded"),
        ("unconfirmed", "succeeded"),
        ("not_sent", "succeeded"),
    ],
    "reversal": [
        ("requested", "sending"),
        ("sending", "succeeded"),
        ("sending", "failed"),
        ("sending", "unknown"),
        ("unknown", "succeeded"),
        ("unknown", "failed"),
    ],
    "delivery": [
        ("queued", "processing"),
        ("processing", "done"),
        ("processing", "retry"),
        ("processing", "gave_up"),
        ("processing", "queued"),
        ("retry", "processing"),
    ],
    "order": [
        ("awaiting_payment", "paid"),
        ("awaiting_payment", "needs_attention"),
        ("awaiting_payment", "expired"),
        ("awaiting_payment", "cancelled"),
        ("expired", "paid"),
        ("expired", "needs_attention"),
        ("cancelled", "paid"),
        ("cancelled", "needs_attention"),
        ("paid", "cancelled"),
        ("needs_attention", "paid"),
        ("needs_attention", "cancelled"),
    ],
    "reservation": [
        ("active", "committed"),
        ("active", "released"),
        ("released", "committed"),
        ("released", "active"),  # "try again" after a push that ended released it early
        ("committed", "returned"),
    ],
}

TABLES: dict[str, tuple[TransitionTable, str, list[str]]] = {
    # name → (table, field it writes, every value of that field)
    "attempt": (ATTEMPT, "state", list(S)),
    "reversal": (REVERSAL, "state", list(R)),
    "delivery": (DELIVERY, "state", list(D)),
    "order": (ORDER, "status", list(OS)),
    "reservation": (RESERVATION, "state", list(RS)),
}

FINAL_STATES: list[tuple[str, str]] = [
    ("attempt", S.SUCCEEDED),
    ("reversal", R.SUCCEEDED),
    ("reversal", R.FAILED),
    ("delivery", D.DONE),
    ("delivery", D.REJECTED),
    ("delivery", D.GAVE_UP),
    ("reservation", RS.RETURNED),
]


@pytest.mark.parametrize("name", list(TABLES))
def test_table_pairs(name):
    table, field, values = TABLES[name]
    assert table.pairs() == sorted(EXPECTED_PAIRS[name])
    assert table.field == field
    named = {s for pair in table.pairs() for s in pair}
    assert named <= set(values), f"{name} names states its model does not have: {named - set(values)}"


@pytest.mark.parametrize(("name", "state"), [pytest.param(n, s, id=f"{n}-{s}") for n, s in FINAL_STATES])
def test_final_states_have_no_way_out(name, state):
    table, _field, values = TABLES[name]
    assert state not in table.allowed
    assert [target for target in values if table.can(state, target)] == []


def test_a_state_never_moves_to_itself():
    for name, (table, _field, _values) in TABLES.items():
        assert [(s, t) for s, t in table.pairs() if s == t] == [], name


@pytest.mark.django_db
def test_illegal_transition_is_refused_and_writes_nothing():
    product = product_make(stock=3)
    order = order_make({product.pk: 1})
    paid = attempt_make(order=order, state=S.SUCCEEDED)

    with pytest.raises(IllegalTransition, match=r"attempt\.state: succeeded → pushing"):
        transition(PaymentAttempt.objects, pk=paid.pk, table=ATTEMPT, source=S.SUCCEEDED, target=S.PUSHING)
    # One illegal source among several is enough to refuse the whole move.
    with pytest.raises(IllegalTransition):
        transition(PaymentAttempt.objects, pk=paid.pk, table=ATTEMPT, source=[S.QUEUED, S.SUCCEEDED], target=S.PUSHING)
    with pytest.raises(IllegalTransition):
        transition_many(PaymentAttempt.objects.filter(order=order), table=ATTEMPT, source=S.SUCCEEDED, target=S.FAILED)
    with pytest.raises(IllegalTransition):
        attempt_transition(attempt=paid, to=S.QUEUED)
    with pytest.raises(IllegalTransition, match=r"order\.status: awaiting_payment → awaiting_payment"):
        transition(Order.objects, pk=order.pk, table=ORDER, source=OS.AWAITING_PAYMENT, target=OS.AWAITING_PAYMENT)

    paid.refresh_from_db()
    order.refresh_from_db()
    assert paid.state == S.SUCCEEDED
    assert order.status == OS.AWAITING_PAYMENT

    # A legal move from a stale source changes nothing and says so (no exception).
    assert transition(Order.objects, pk=order.pk, table=ORDER, source=OS.EXPIRED, target=OS.PAID) is False
    order.refresh_from_db()
    assert order.status == OS.AWAITING_PAYMENT


def test_tailed_states_are_closed_ones():
    assert set(TAILED) == {S.TIMED_OUT, S.UNCONFIRMED}
    assert not set(TAILED) & set(PaymentAttempt.IN_FLIGHT)


# --- the end of the tail: a person is told when M-Pesa never answered -----------------------------------------
PAST_HORIZON = _clock(_s(3 * 24 * 3600), tail=None)


@pytest.mark.parametrize("state", sorted(TAILED))
@pytest.mark.parametrize(
    ("answer", "tell"),
    [
        ("query_failed", True),  # never an answer: nobody knows whether the money moved
        ("not_found", False),  # M-Pesa does not know it: nothing moved
        ("expired", False),
        ("cancelled", False),
    ],
)
def test_the_tail_ends_and_tells_a_person_only_when_mpesa_never_answered(state, answer, tell):
    step = _query(state, answer, PAST_HORIZON)
    assert (step.act, step.next_check_at, step.tell) == (Act.RECHECK, None, tell)


def test_only_the_end_of_the_tail_tells():
    told = [
        (state, answer, name)
        for name, clock in BOUND_CLOCKS.items()
        for state in ALL_STATES
        for answer in ANSWERS
        if _query(state, answer, clock).tell
    ]
    assert told == []  # every other clock still has a next question to ask
