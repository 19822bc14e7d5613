"""Fault injection (issue 9): lost and garbled answers from M-Pesa, callbacks late, the gateway unreachable while
checkouts arrive. Each test ends on the same invariants (``invariants.check_invariants``): nothing lost, no order
paid without a confirmed payment, no one charged twice, stock consistent. Real simulator over real sockets; the
faults are the simulator's own (``/sandbox/faults``, mpesa/sandbox/README.md § Response faults).

The worker killed mid-push and PostgreSQL restarted mid-run are in ``test_fault_processes.py`` (real processes).
Already proven elsewhere, and not repeated here:

* callbacks delivered several times — ``test_callbacks.py::test_callback_pays_once_even_when_delivered_three_times``
  and ``::test_concurrent_callbacks_racing_the_worker_change_nothing_twice``;
* callbacks never delivered — ``test_callbacks.py::test_lost_callback_is_reconciled_after_the_push_window`` and
  ``test_late_and_unsent.py::test_late_approval_with_the_callback_lost_is_found_by_the_tail_requery``;
* one push to an unreachable gateway, refused honestly and paid on "try again" —
  ``test_late_and_unsent.py::test_push_that_never_reached_the_gateway_is_not_sent_and_retryable_at_once``;
* the gateway answering INS-16 (scenario 07) — ``test_late_and_unsent.py::test_busy_gateway_is_decided_…``.
"""

from __future__ import annotations

from typing import Any

import pytest

from kulipa.orders.models import Order
from kulipa.payments import services, tasks
from kulipa.payments.models import CallbackDelivery, PaymentAttempt
from kulipa.payments.tasks import engine as get_engine
from kulipa.payments.tests.conftest import (
    Simulator,
    place,
    product,
    reconcile_until,
    shop_mpesa_settings,
    wait_for,
)
from kulipa.payments.tests.invariants import Tally, check_invariants
from kulipa.payments.tests.workers import c2b_requests

pytestmark = pytest.mark.faults

State = PaymentAttempt.State
# fault → whether the simulator processed the push (the customer was charged) before the answer went wrong
PROCESSED = {"drop_before": False, "drop_after": True, "status_503": False, "malformed": True, "empty": True}


def settled(order_ids: list[int]) -> bool:
    return not PaymentAttempt.objects.filter(order_id__in=order_ids, state__in=PaymentAttempt.IN_FLIGHT).exists()


def check(sim: Simulator, orders: list[Order], stock: dict[int, int], **kwargs: Any) -> Tally:
    return check_invariants(
        transactions=sim.transactions(), order_ids=[o.pk for o in orders], initial_stock=stock, **kwargs
    )


# --- the push's answer lost or garbled ---------------------------------------------------------------------------
@pytest.mark.parametrize("fault", PROCESSED)
def test_a_lost_or_garbled_push_answer_is_settled_by_status_query_and_never_sent_again(
    fault: str, sim: Simulator
) -> None:
    """Two checkouts (one that pays, one with insufficient funds) whose push answers are spoiled. The shop may not
    read "no answer" as "not charged": each attempt waits, checked, until the status query tells it the truth.
    When nothing was processed the customer can try again, and pays once."""
    item = product(stock=3)
    sim.faults(c2b_fault=fault, c2b_fault_count=2)
    with c2b_requests() as received:
        paying, a = place({item.pk: 1}, msisdn="258840010001")
        poor, b = place({item.pk: 1}, msisdn="258840010002")
        assert get_engine().wait_idle(20)
        orders = [paying, poor]
        # Answered wrongly: neither is taken for a "no" (which would release the stock of a paid order). A closed
        # attempt here can only be one a status query already settled (the checker holds it to the simulator).
        check(sim, orders, {item.pk: 3}, c2b_received=received.by_reference, settled=False)
        if not PROCESSED[fault]:  # the query says N/A until the push window has passed: still waiting
            assert {PaymentAttempt.objects.get(pk=x.pk).state for x in (a, b)} == {State.UNKNOWN}

        reconcile_until(lambda: settled([paying.pk, poor.pk]), what="both settled by status query")
        tally = check(sim, orders, {item.pk: 3}, c2b_received=received.by_reference)
        assert (a.third_party_reference in tally.completed) is PROCESSED[fault]
        assert b.third_party_reference not in tally.completed

        if not PROCESSED[fault]:  # nothing charged: "try again" pushes anew, and pays
            retried, created = services.payment_attempt_start(order=paying, after_attempt_id=a.pk)
            assert created
            tasks.dispatch_payment(retried.pk)
            reconcile_until(lambda: settled([paying.pk]), what="the new attempt settled")
            tally = check(sim, orders, {item.pk: 3}, c2b_received=received.by_reference)
    paying.refresh_from_db()
    assert paying.status == Order.Status.PAID
    assert tally.paid_orders == 1 and tally.stock[item.pk]["sold"] == 1


@pytest.mark.parametrize("fault", ["drop_before", "status_503", "malformed", "empty"])
def test_garbled_status_queries_are_asked_again_and_never_decide(fault: str, sim: Simulator) -> None:
    """The push's answer is dropped after the customer paid, and the first status queries come back garbled,
    dropped or 503: none of them is read as an answer; the shop keeps asking and pays the order once."""
    item = product(stock=1)
    sim.faults(c2b_fault="drop_after", c2b_fault_count=1, query_fault=fault, query_fault_count=3)
    with c2b_requests() as received:
        order, attempt = place({item.pk: 1}, msisdn="258840010101")
        reconcile_until(lambda: settled([order.pk]), what="settled by status query")
        tally = check(sim, [order], {item.pk: 1}, c2b_received=received.by_reference)
    assert tally.attempts == {attempt.third_party_reference: State.SUCCEEDED}
    assert sim.faults()["query_fault_count"] == 0  # every spoiled answer was given, and the shop asked past them


# --- callbacks late --------------------------------------------------------------------------------------------
CALLBACK = "/api/mpesa/callback"
TOKEN = "faultT0ken9"


def test_callbacks_arriving_after_the_attempt_was_settled_change_nothing(
    sim: Simulator, settings: Any, live_server: Any
) -> None:
    """Async mode; every callback is held 3 s, long past the push window (2 s) + margin (1 s): the shop settles
    each attempt by status query first. The late callbacks (success, insufficient funds, and a copy of each)
    are then received, confirmed by a query and change nothing."""
    settings.MPESA = shop_mpesa_settings(sim.sandbox, MODE="async", CALLBACK_PATH_TOKEN=TOKEN)
    sim.configure(callback_url=f"{live_server.url}{CALLBACK}/{TOKEN}", allow_insecure_callbacks=True)
    sim.faults(delay_callbacks=3.0, duplicate_callbacks=2)
    item = product(stock=2)
    with c2b_requests() as received:
        orders = [place({item.pk: 1}, msisdn=f"258840010{n}0{s}")[0] for n, s in ((2, 1), (3, 2))]
        ids = [o.pk for o in orders]
        reconcile_until(lambda: settled(ids), what="settled before any callback")
        assert not CallbackDelivery.objects.exists()
        before = check(sim, orders, {item.pk: 2}, c2b_received=received.by_reference)

        wait_for(lambda: CallbackDelivery.objects.count() == 4, timeout=20, what="the four late callbacks")
        wait_for(
            lambda: not CallbackDelivery.objects.exclude(processed_at__isnull=False).exists(),
            what="the late callbacks processed",
        )
        assert get_engine().wait_idle(10)
        after = check(sim, orders, {item.pk: 2}, c2b_received=received.by_reference)
    assert after.attempts == before.attempts and after.stock == before.stock
    # The query cannot tell why a payment was cancelled: FAILED, and the late INS-2006 callback does not reopen it.
    assert after.states() == {State.SUCCEEDED: 1, State.FAILED: 1}, after.states()
    assert after.paid_orders == 1
