"""Payments that end after the shop gave up on them, and pushes that never left: through the real simulator on
real sockets, with what the customer sees read from the JSON status endpoint.

Time beyond a deadline is not slept through: :func:`elapse` moves every stored time of an order back (the
database's view of "later"), and :func:`run_clock` steps that clock from one check the shop scheduled to the next,
running the minute sweep at each, so the decision lands exactly where the shop's own schedule puts it. The
simulator keeps real time (a prompt on the phone stays open while the shop's clock moves on).
"""

from __future__ import annotations

import secrets
from datetime import datetime, timedelta
from typing import Any

import pytest
from django.db.models import F
from django.test import Client
from django.urls import reverse
from django.utils import timezone

from kulipa.catalog.models import Product
from kulipa.inventory.models import StockReservation
from kulipa.inventory.selectors import available_quantities
from kulipa.orders.models import Order
from kulipa.payments import conf, gateway, services, tasks
from kulipa.payments.models import AttentionItem, PaymentAttempt, PaymentEvent
from kulipa.payments.tasks import engine as get_engine
from kulipa.payments.tests.conftest import (
    Simulator,
    checkout,
    place,
    product,
    reconcile_until,
    shop_mpesa_settings,
    status,
    wait_for,
    wait_status,
)
from mpesa.sandbox.testing import find_free_port_offset

State = PaymentAttempt.State
Kind = PaymentEvent.Kind
PHONE_00 = "258840000000"  # waits for the answer on the simulator's phone page
CALLBACK = "/api/mpesa/callback"
TOKEN = "lateT0ken77"
PRODUCTION_TIMINGS: dict[str, Any] = {
    # The defaults of kulipa.payments.conf (the test settings shrink them to seconds).
    "PUSH_WINDOW_SECONDS": 90,
    "RECONCILE_MARGIN_SECONDS": 300,
    "RECONCILE_BACKOFF_SECONDS": 10,
    "RECONCILE_BACKOFF_MAX_SECONDS": 600,
    "CALLBACK_GRACE_SECONDS": 10,
}
MINUTE = timedelta(minutes=1)


# --- the shop's clock ---------------------------------------------------------------------------------------
def elapse(order: Order, delta: timedelta) -> None:
    """Let ``delta`` pass for ``order`` as the database sees it: every stored time of the order, its reservations,
    attempts and events moves ``delta`` into the past (NULLs stay NULL)."""
    if delta <= timedelta(0):
        return
    Order.objects.filter(pk=order.pk).update(
        created_at=F("created_at") - delta, expires_at=F("expires_at") - delta, paid_at=F("paid_at") - delta
    )
    StockReservation.objects.filter(order_id=order.pk).update(
        created_at=F("created_at") - delta, expires_at=F("expires_at") - delta
    )
    PaymentAttempt.objects.filter(order_id=order.pk).update(
        created_at=F("created_at") - delta,
        push_started_at=F("push_started_at") - delta,
        push_deadline=F("push_deadline") - delta,
        finished_at=F("finished_at") - delta,
        next_check_at=F("next_check_at") - delta,
    )
    PaymentEvent.objects.filter(order_id=order.pk).update(created_at=F("created_at") - delta)


def final_deadline(attempt: PaymentAttempt) -> datetime:
    """push deadline + reconcile margin: by then an open attempt is decided (``decisions.Clock``)."""
    assert attempt.push_deadline is not None
    return attempt.push_deadline + conf.reconcile_margin()


def run_clock(order: Order, attempt_id: int, *, steps: int = 40) -> list[timedelta]:
    """Move the shop's clock to each check it scheduled for the attempt and run the sweep there, until the attempt
    is closed. Returns, for every check seen while it was open, how far after the final deadline it was set
    (negative: before). Fails on an open attempt with no check scheduled (it would stay open for ever)."""
    offsets: list[timedelta] = []
    for _ in range(steps):
        attempt = PaymentAttempt.objects.get(pk=attempt_id)
        if not attempt.in_flight:
            return offsets
        assert attempt.next_check_at is not None, f"{attempt.state} attempt with no check scheduled"
        offsets.append(attempt.next_check_at - final_deadline(attempt))
        elapse(order, attempt.next_check_at - timezone.now())
        tasks.sweep()
    raise AssertionError(f"attempt still open after {steps} checks: {offsets}")


def decision_at(attempt: PaymentAttempt, decision: str) -> datetime:
    event = PaymentEvent.objects.get(attempt=attempt, kind=Kind.DECISION, payload__decision=decision)
    return event.created_at


def retry_url(order: Order) -> str:
    return reverse("payments:retry", kwargs={"public_id": order.public_id})


def latest_attempt(order: Order) -> PaymentAttempt:
    attempt = PaymentAttempt.objects.filter(order_id=order.pk).order_by("-id").first()
    assert attempt is not None
    return attempt


def try_again(client: Client, order: Order, msisdn: str) -> PaymentAttempt:
    """The customer presses "try again" on the page (over HTTP) with ``msisdn``; returns the new attempt."""
    before = latest_attempt(order)
    response = client.post(retry_url(order), {"msisdn": msisdn, "after": before.pk})
    assert response.status_code == 302
    after = latest_attempt(order)
    assert after.pk != before.pk, f"try again created nothing: {status(client, order)}"
    return after


def async_shop(sim: Simulator, settings: Any, live_server: Any) -> None:
    """Async mode: the simulator accepts the push at once and posts the result to the live shop on its secret
    path (as in test_callbacks.py); a ``00`` prompt stays on the phone for 30 s."""
    settings.MPESA = shop_mpesa_settings(sim.sandbox, MODE="async", CALLBACK_PATH_TOKEN=TOKEN)
    sim.configure(callback_url=f"{live_server.url}{CALLBACK}/{TOKEN}", allow_insecure_callbacks=True, push_window=30)


def state_of(attempt: PaymentAttempt) -> str:
    return PaymentAttempt.objects.values_list("state", flat=True).get(pk=attempt.pk)


def wait_state(attempt: PaymentAttempt, state: str) -> PaymentAttempt:
    """Wait for ``attempt`` to reach ``state``; returns it fresh."""
    return wait_for(lambda: PaymentAttempt.objects.filter(pk=attempt.pk, state=state).first(), what=f"attempt {state}")


def state_and_next_check(attempt: PaymentAttempt) -> tuple[str, datetime | None]:
    return PaymentAttempt.objects.values_list("state", "next_check_at").get(pk=attempt.pk)


# --- 1. money that arrives after the shop gave up -----------------------------------------------------------
def test_late_approval_of_a_closed_sync_push_is_noticed_as_charged_twice(sim: Simulator, settings: Any) -> None:
    """Production timings. The customer leaves the prompt open; at push deadline + margin the shop closes the
    attempt as unconfirmed and offers "try again"; the customer pays with another number, then approves the old
    prompt too. The late sync answer is real money: the old attempt succeeds, the order stays paid by the retry,
    the stock is taken once, and the double charge is raised with a reversal proposed."""
    settings.MPESA = shop_mpesa_settings(sim.sandbox, **PRODUCTION_TIMINGS)
    sim.configure(push_window=30)
    client = Client()
    item = product(stock=3)
    order = checkout(client, {item.pk: 1}, msisdn=PHONE_00)
    prompt = wait_for(lambda: sim.prompts(PHONE_00), what="prompt on the phone")[0]
    first = wait_for(lambda: order.payment_attempts.filter(state=State.PUSHING).first(), what="pushing")

    offsets = run_clock(order, first.pk)  # the push is still held open by the worker meanwhile

    first.refresh_from_db()
    assert first.state == State.UNCONFIRMED
    assert all(offset <= timedelta(0) for offset in offsets), offsets  # never asked later than the deadline
    closed_at = decision_at(first, State.UNCONFIRMED)
    assert final_deadline(first) <= closed_at <= final_deadline(first) + MINUTE
    data = status(client, order)
    assert data["payment_status"] == "unconfirmed" and data["status"] == "awaiting_payment"
    assert data["can_retry"] is True and data["paid"] is False and data["final"] is True
    assert "não confirmou" in data["message"]
    assert sim.prompts(PHONE_00)  # the phone still shows the first request

    second = try_again(client, order, "84 000 0101")
    wait_status(client, order, status="paid")
    second.refresh_from_db()
    assert second.state == State.SUCCEEDED and second.pays_order

    sim.answer(PHONE_00, prompt["conversation_id"], approve=True)  # the customer approves the old prompt too
    wait_for(lambda: state_of(first) == State.SUCCEEDED, what="the late sync answer recorded")
    assert get_engine().wait_idle(10)

    first.refresh_from_db()
    order.refresh_from_db()
    assert first.pays_order is False
    assert first.transaction_id == sim.known_transaction(first.third_party_reference)["transaction_id"]
    assert order.status == Order.Status.PAID and order.paid_amount == order.total
    assert order.mpesa_transaction_id == second.transaction_id != first.transaction_id
    assert Product.objects.get(pk=item.pk).stock_on_hand == 2  # taken once
    flagged = AttentionItem.objects.get(kind=AttentionItem.Kind.DUPLICATE_PAYMENT)
    assert flagged.propose_reversal and flagged.attempt_id == first.pk and flagged.order_id == order.pk
    assert AttentionItem.objects.count() == 1
    decisions = list(order.payment_events.filter(kind=Kind.DECISION).values_list("attempt_id", "payload__decision"))
    assert decisions == [(first.pk, "unconfirmed"), (second.pk, "paid"), (first.pk, "duplicate")]
    completed = [t for t in sim.transactions() if t["transaction_reference"] == order.short_reference]
    assert sorted(t["status"] for t in completed) == ["Completed", "Completed"]  # charged twice, and we know it
    data = status(client, order)
    assert data["status"] == "paid" and data["paid"] is True and data["can_retry"] is False


@pytest.mark.parametrize("stock_sold", [False, True], ids=["stock-still-there", "stock-sold-meanwhile"])
def test_late_approval_with_the_callback_lost_is_found_by_the_tail_requery(
    sim: Simulator, settings: Any, live_server: Any, stock_sold: bool
) -> None:
    """Async mode. The shop closes the attempt as unconfirmed and keeps it on the tail schedule (first ask
    TAIL_FIRST after closing); the order expires and releases its stock. The customer approves late and the
    result callback is lost: only the tail re-query can notice. It finds Completed → the order is paid with its
    stock re-acquired, or, when another customer bought the unit meanwhile, needs attention with a reversal
    proposed; never sold twice."""
    async_shop(sim, settings, live_server)
    client = Client()
    item = product(stock=1)
    order = checkout(client, {item.pk: 1}, msisdn=PHONE_00)
    prompt = wait_for(lambda: sim.prompts(PHONE_00), what="prompt on the phone")[0]
    attempt = wait_for(lambda: order.payment_attempts.filter(state=State.AWAITING_CALLBACK).first(), what="accepted")

    offsets = run_clock(order, attempt.pk)

    attempt.refresh_from_db()
    assert attempt.state == State.UNCONFIRMED and all(offset <= timedelta(0) for offset in offsets), offsets
    assert attempt.finished_at is not None and attempt.next_check_at is not None
    # Closed, but not forgotten: asked again on the tail schedule.
    assert abs(attempt.next_check_at - (attempt.finished_at + conf.TAIL_FIRST)) < timedelta(seconds=1)
    assert status(client, order)["can_retry"] is True

    # The customer walks away; the reservation window passes and the order expires, releasing its stock.
    elapse(order, conf.reservation_window() + MINUTE)
    assert services.orders_expire_due() == 1
    data = status(client, order)
    assert data["status"] == "expired" and data["can_retry"] is False and data["paid"] is False
    assert available_quantities(product_ids=[item.pk]) == {item.pk: 1}
    other: Order | None = None
    if stock_sold:  # another customer buys the unit meanwhile (its callback arrives normally)
        other = checkout(Client(), {item.pk: 1}, msisdn="258840000001")
        wait_for(lambda: Order.objects.get(pk=other.pk).status == Order.Status.PAID, what="other customer paid")
        wait_for(lambda: {d["state"] for d in sim.callbacks()} == {"delivered"}, what="other callback delivered")

    sim.faults(drop_callbacks=1)
    sim.answer(PHONE_00, prompt["conversation_id"], approve=True)  # the money moves, late
    wait_for(
        lambda: any(
            d["state"] == "dropped" and d["payload"]["input_ThirdPartyReference"] == attempt.third_party_reference
            for d in sim.callbacks()
        ),
        what="the result callback lost",
    )
    assert sim.known_transaction(attempt.third_party_reference)["status"] == "Completed"
    assert state_of(attempt) == State.UNCONFIRMED  # nothing told the shop
    assert Order.objects.get(pk=order.pk).status == Order.Status.EXPIRED

    assert tasks.sweep()["reconcile"] == 1  # the tail re-query is due (TAIL_FIRST after closing has passed)

    attempt.refresh_from_db()
    order.refresh_from_db()
    assert attempt.state == State.SUCCEEDED and attempt.pays_order
    assert order.paid_at is not None and order.paid_amount == order.total
    query = order.payment_events.filter(kind=Kind.STATUS_QUERY).last()
    assert query is not None and query.payload["source"] == "status_query" and "Completed" in query.summary
    assert Product.objects.get(pk=item.pk).stock_on_hand == 0  # never below zero, never sold twice
    data = status(client, order)
    assert data["paid"] is True and data["can_retry"] is False
    if not stock_sold:
        assert order.status == Order.Status.PAID
        paid = order.payment_events.get(kind=Kind.DECISION, payload__decision="paid")
        assert paid.payload["stock"] == "reacquired"
        assert set(order.reservations.values_list("state", flat=True)) == {StockReservation.State.COMMITTED}
        assert not AttentionItem.objects.exists()
        assert data["status"] == "paid" and "Pagamento recebido" in data["message"]
        return
    assert other is not None and Order.objects.get(pk=other.pk).status == Order.Status.PAID
    assert order.status == Order.Status.NEEDS_ATTENTION
    flagged = AttentionItem.objects.get()
    assert flagged.kind == AttentionItem.Kind.LATE_PAYMENT and flagged.propose_reversal
    assert flagged.attempt_id == attempt.pk and flagged.order_id == order.pk
    assert data["status"] == "needs_attention" and "verificar" in data["message"]


def test_tail_requery_finding_the_late_payment_reversed_never_pays_and_stops_asking(
    sim: Simulator, settings: Any, live_server: Any
) -> None:
    """As above, but the late payment is reversed at the gateway before the tail re-query: Completed + reversed
    never pays, a person is told, and the closed attempt is not asked again every minute (the answer cannot
    change any more)."""
    async_shop(sim, settings, live_server)
    client = Client()
    item = product(stock=1)
    order = checkout(client, {item.pk: 1}, msisdn=PHONE_00)
    prompt = wait_for(lambda: sim.prompts(PHONE_00), what="prompt on the phone")[0]
    attempt = wait_for(lambda: order.payment_attempts.filter(state=State.AWAITING_CALLBACK).first(), what="accepted")
    run_clock(order, attempt.pk)
    assert state_of(attempt) == State.UNCONFIRMED

    sim.faults(drop_callbacks=1)
    sim.answer(PHONE_00, prompt["conversation_id"], approve=True)
    wait_for(lambda: {d["state"] for d in sim.callbacks()} == {"dropped"}, what="the result callback lost")
    paid = sim.known_transaction(attempt.third_party_reference)
    reversal = gateway.client().reversal(
        transaction_id=paid["transaction_id"], third_party_reference=gateway.new_reference("R")
    )
    assert reversal.ok, reversal

    elapse(order, conf.TAIL_FIRST)
    assert tasks.sweep()["reconcile"] == 1  # the tail re-query

    attempt.refresh_from_db()
    order.refresh_from_db()
    assert attempt.state == State.UNCONFIRMED and not attempt.pays_order
    assert order.status == Order.Status.AWAITING_PAYMENT and order.paid_at is None
    assert Product.objects.get(pk=item.pk).stock_on_hand == 1
    flagged = AttentionItem.objects.get()
    assert flagged.kind == AttentionItem.Kind.REVERSED_AT_GATEWAY and flagged.attempt_id == attempt.pk
    assert status(client, order)["paid"] is False
    queries = order.payment_events.filter(kind=Kind.STATUS_QUERY).count()

    for _ in range(3):  # six minutes of sweeps: not even the tail schedule (next at ~15 min) would ask yet
        elapse(order, 2 * MINUTE)
        tasks.sweep()
    asked = order.payment_events.filter(kind=Kind.STATUS_QUERY).count() - queries
    assert asked == 0, f"asked {asked} more times; next_check_at {state_and_next_check(attempt)}"
    assert AttentionItem.objects.count() == 1


@pytest.mark.parametrize(
    "timings",
    [
        pytest.param(PRODUCTION_TIMINGS, id="production-timings"),
        pytest.param({}, id="margin-shorter-than-the-c2b-read-timeout"),  # the test settings: 2 s + 1 s
    ],
)
def test_held_sync_push_is_decided_within_a_minute_of_deadline_plus_margin(
    sim: Simulator, settings: Any, timings: dict[str, Any]
) -> None:
    """The gateway holds the push longer than the shop's window (the customer looks at the prompt and does
    nothing): the shop still decides by deadline + margin (+ a minute of sweep), whatever the margin is
    configured to, and the page offers "try again" then."""
    settings.MPESA = shop_mpesa_settings(sim.sandbox, **timings)
    sim.configure(push_window=30)
    client = Client()
    order = checkout(client, {product(stock=1).pk: 1}, msisdn=PHONE_00)
    prompt = wait_for(lambda: sim.prompts(PHONE_00), what="prompt on the phone")[0]
    attempt = wait_for(lambda: order.payment_attempts.filter(state=State.PUSHING).first(), what="pushing")
    try:
        run_clock(order, attempt.pk)
        attempt.refresh_from_db()
        assert attempt.state == State.UNCONFIRMED
        late = decision_at(attempt, State.UNCONFIRMED) - final_deadline(attempt)
        assert timedelta(0) <= late <= MINUTE, f"decided {late.total_seconds():.0f} s after deadline + margin"
        data = status(client, order)
        assert data["can_retry"] is True and data["payment_status"] == "unconfirmed"
    finally:
        sim.answer(PHONE_00, prompt["conversation_id"], approve=False)  # release the held push
        get_engine().wait_idle(10)


# --- 2. a request that never reached the gateway -------------------------------------------------------------
def test_push_that_never_reached_the_gateway_is_not_sent_and_retryable_at_once(sim: Simulator, settings: Any) -> None:
    """Nothing listens where the shop sends the push (connection refused): provably not sent. Final at once,
    never asked about, the page says plainly nothing was charged and offers "try again", which pays once the
    gateway is reachable again."""
    settings.MPESA = shop_mpesa_settings(sim.sandbox, PORT_OFFSET=find_free_port_offset())
    client = Client()
    item = product(stock=1)
    order = checkout(client, {item.pk: 1}, msisdn="258840000001")
    attempt = order.payment_attempts.get()
    wait_for(lambda: state_of(attempt) == State.NOT_SENT, what="not sent")
    assert get_engine().wait_idle(10)

    data = status(client, order)
    assert data["payment_status"] == "not_sent" and data["status"] == "awaiting_payment"
    assert data["can_retry"] is True and data["final"] is True and data["paid"] is False
    assert "Não foi possível contactar a M-Pesa" in data["message"] and "nada foi cobrado" in data["message"]
    attempt.refresh_from_db()
    assert attempt.next_check_at is None and attempt.check_count == 0 and attempt.finished_at is not None
    assert tasks.sweep()["reconcile"] == 0  # nothing to ask: it never left
    assert not order.payment_events.filter(kind=Kind.STATUS_QUERY).exists()
    assert [e.payload["decision"] for e in order.payment_events.filter(kind=Kind.DECISION)] == ["not_sent"]
    assert sim.transactions() == []
    assert order.reservations.get().state == StockReservation.State.ACTIVE  # still held for the retry

    settings.MPESA = shop_mpesa_settings(sim.sandbox)  # M-Pesa reachable again
    response = client.post(retry_url(order), {"after": data["attempt_id"]})
    assert response.status_code == 302
    wait_status(client, order, status="paid")
    assert [a.state for a in order.payment_attempts.order_by("id")] == [State.NOT_SENT, State.SUCCEEDED]
    assert [t["status"] for t in sim.transactions()] == ["Completed"]
    assert Product.objects.get(pk=item.pk).stock_on_hand == 0


# --- 3. a busy gateway ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("backoff", [1, 120], ids=["backoff-1s", "backoff-longer-than-a-minute"])
def test_busy_gateway_is_decided_within_a_minute_of_deadline_plus_margin(
    sim: Simulator, settings: Any, backoff: int
) -> None:
    """INS-16 (07): the gateway took nothing; the status query keeps saying N/A. Real time: the shop asks a few
    times, never later than deadline + margin while the attempt is open, and closes it as unconfirmed within a
    minute of it; the page offers "try again"."""
    settings.MPESA = shop_mpesa_settings(
        sim.sandbox, RECONCILE_BACKOFF_SECONDS=backoff, RECONCILE_BACKOFF_MAX_SECONDS=600
    )
    client = Client()
    order = checkout(client, {product(stock=1).pk: 1}, msisdn="258840000007")
    attempt = order.payment_attempts.get()
    wait_for(lambda: state_of(attempt) == State.UNKNOWN, what="busy answer recorded")
    assert get_engine().wait_idle(10)
    assert status(client, order)["payment_status"] == "verifying"
    attempt.refresh_from_db()
    final = final_deadline(attempt)
    open_checks: list[datetime | None] = [attempt.next_check_at]

    def settled() -> bool:
        now = PaymentAttempt.objects.get(pk=attempt.pk)
        if now.in_flight:
            open_checks.append(now.next_check_at)
        return not now.in_flight

    reconcile_until(settled, what="decided")

    attempt.refresh_from_db()
    assert attempt.state == State.UNCONFIRMED
    assert all(at is not None and at <= final for at in open_checks), (final, open_checks)
    late = decision_at(attempt, State.UNCONFIRMED) - final
    assert timedelta(0) <= late <= MINUTE, late
    queries = order.payment_events.filter(kind=Kind.STATUS_QUERY).count()
    assert 1 <= queries <= 4, queries
    data = status(client, order)
    assert data["payment_status"] == "unconfirmed" and data["can_retry"] is True and data["final"] is True
    assert sim.transactions() == []  # the gateway never took it


# --- 4. a push that waited too long in the queue -------------------------------------------------------------
def test_push_still_queued_30_s_after_the_customer_asked_is_not_sent_late(sim: Simulator) -> None:
    item = product(stock=1)
    order, attempt = place({item.pk: 1}, token=secrets.token_urlsafe(16), push=False)  # the queue is slow
    late = timezone.now() - conf.QUEUED_SEND_LIMIT - timedelta(seconds=1)
    PaymentAttempt.objects.filter(pk=attempt.pk).update(created_at=late)
    submitted = get_engine().stats().submitted

    assert tasks.dispatch_payment.call_local(attempt.pk) is False  # the worker finally runs it: too late
    tasks.dispatch_payment(attempt.pk)  # through the queue (immediate here; no result is stored): same
    assert state_of(attempt) == State.QUEUED
    counts = tasks.sweep()

    assert counts["not_sent"] == 1 and counts["redispatched"] == 0
    attempt.refresh_from_db()
    assert attempt.state == State.NOT_SENT and attempt.next_check_at is None
    data = status(Client(), order)
    assert data["payment_status"] == "not_sent" and data["can_retry"] is True and data["paid"] is False
    assert "nada foi cobrado" in data["message"]
    assert get_engine().stats().submitted == submitted  # nothing handed to the push engine
    assert sim.transactions() == []
    assert not order.payment_events.filter(kind=Kind.STATUS_QUERY).exists()


# --- 5. one customer cannot hold the last unit ----------------------------------------------------------------
def assert_hold_within(order: Order, *, created: datetime, declined_at: datetime | None = None) -> datetime:
    """While a push is on, the order's hold and its reservation's are the same, never past checkout + the hold
    cap. After a decline the unit is not held at all (released; "try again" holds it again), and the order may be
    tried again no later than max(checkout + reservation window, decline + RETRY_GRACE)."""
    order.refresh_from_db()
    reservation = order.reservations.get()
    assert order.expires_at <= created + conf.hold_cap(), order.expires_at - created
    if declined_at is None:
        assert reservation.state == StockReservation.State.ACTIVE
        assert reservation.expires_at == order.expires_at
    else:
        assert reservation.state == StockReservation.State.RELEASED
        bound = max(created + conf.reservation_window(), declined_at + conf.RETRY_GRACE)
        assert order.expires_at <= bound, (order.expires_at, bound)
    return order.expires_at


def test_declines_and_retries_never_hold_the_last_unit_past_the_cap(sim: Simulator, settings: Any) -> None:
    # Production margin: a push's own hold (window + margin + slack, 5.5 min) reaches past the cap near its end.
    settings.MPESA = shop_mpesa_settings(sim.sandbox, RECONCILE_MARGIN_SECONDS=300)
    # Six pushes of one order, five to one number, in seconds: not what the abuse limits are for (test_limits.py).
    settings.LIMIT_ATTEMPTS_PER_ORDER = 0
    settings.LIMIT_PROMPTS_PER_PHONE = ""
    sim.configure(push_window=30)
    client = Client()
    item = product(stock=1)
    order = checkout(client, {item.pk: 1}, msisdn="258840000003")
    first = order.payment_attempts.get()
    wait_status(client, order, payment_status="declined", can_retry=True)
    first.refresh_from_db()
    assert first.finished_at is not None
    assert_hold_within(order, created=order.created_at, declined_at=first.finished_at)

    # The customer has been at it for 25 minutes.
    Order.objects.filter(pk=order.pk).update(created_at=F("created_at") - timedelta(minutes=25))
    order.refresh_from_db()
    created = order.created_at
    for _ in range(4):
        attempt = try_again(client, order, "84 000 0003")
        assert_hold_within(order, created=created)
        attempt = wait_state(attempt, State.DECLINED)
        assert attempt.finished_at is not None
        assert_hold_within(order, created=created, declined_at=attempt.finished_at)
        assert status(client, order)["can_retry"] is True

    # One more, left open on the phone: while it is pushed the hold reaches the cap, not beyond.
    attempt = try_again(client, order, "84 000 0000")
    prompt = wait_for(lambda: sim.prompts(PHONE_00), what="prompt on the phone")[0]
    assert state_of(attempt) == State.PUSHING
    assert assert_hold_within(order, created=created) == created + conf.hold_cap()
    assert available_quantities(product_ids=[item.pk]) == {item.pk: 0}
    sim.answer(PHONE_00, prompt["conversation_id"], approve=False)
    wait_for(lambda: state_of(attempt) == State.DECLINED, what="declined on the phone")
    assert get_engine().wait_idle(10)
    attempt.refresh_from_db()
    assert attempt.finished_at is not None
    assert_hold_within(order, created=created, declined_at=attempt.finished_at)

    # The cap passes: no more tries, and the sweep gives the unit back.
    elapse(order, created + conf.hold_cap() - timezone.now() + timedelta(seconds=1))
    data = status(client, order)
    assert data["can_retry"] is False and data["status"] == "awaiting_payment"
    attempts = order.payment_attempts.count()
    client.post(retry_url(order), {"msisdn": "84 000 0003", "after": latest_attempt(order).pk})
    assert order.payment_attempts.count() == attempts
    assert tasks.sweep()["expired_orders"] == 1
    assert status(client, order)["status"] == "expired"
    assert available_quantities(product_ids=[item.pk]) == {item.pk: 1}
    other_client = Client()
    other = checkout(other_client, {item.pk: 1}, msisdn="258840000001")
    wait_status(other_client, other, status="paid")
    assert Product.objects.get(pk=item.pk).stock_on_hand == 0


# --- 6. reversed at the gateway -------------------------------------------------------------------------------
def test_status_query_saying_reversed_never_pays(sim: Simulator, settings: Any) -> None:
    """08: the money moved but the answer was lost (unknown). Before the shop asks, the payment is reversed at
    the gateway. The query then says Completed + reversed: never paid, the attempt closed as failed, a person
    told; the page does not say paid."""
    # A 2 s backoff keeps the first (scheduled) check clear of the moment the test moves it.
    settings.MPESA = shop_mpesa_settings(sim.sandbox, RECONCILE_BACKOFF_SECONDS=2)
    client = Client()
    item = product(stock=1)
    order = checkout(client, {item.pk: 1}, msisdn="258840000008")
    attempt = order.payment_attempts.get()
    wait_for(lambda: state_of(attempt) == State.UNKNOWN, what="answer lost")
    assert get_engine().wait_idle(10)
    PaymentAttempt.objects.filter(pk=attempt.pk).update(next_check_at=timezone.now() + timedelta(hours=1))
    assert status(client, order)["payment_status"] == "verifying"

    paid = sim.known_transaction(attempt.third_party_reference)
    assert paid["status"] == "Completed"
    reversal = gateway.client().reversal(
        transaction_id=paid["transaction_id"], third_party_reference=gateway.new_reference("R")
    )
    assert reversal.ok, reversal
    assert sim.known_transaction(attempt.third_party_reference)["reversed"] is True

    PaymentAttempt.objects.filter(pk=attempt.pk).update(next_check_at=timezone.now())
    reconcile_until(lambda: not PaymentAttempt.objects.get(pk=attempt.pk).in_flight, what="settled")

    attempt.refresh_from_db()
    order.refresh_from_db()
    assert attempt.state == State.FAILED and not attempt.pays_order and attempt.next_check_at is None
    assert order.status == Order.Status.AWAITING_PAYMENT and order.paid_at is None
    assert order.payment_status != Order.PaymentStatus.PAID and order.mpesa_transaction_id == ""
    assert Product.objects.get(pk=item.pk).stock_on_hand == 1
    assert order.reservations.get().state == StockReservation.State.ACTIVE
    flagged = AttentionItem.objects.get()
    assert flagged.kind == AttentionItem.Kind.REVERSED_AT_GATEWAY
    assert flagged.attempt_id == attempt.pk and flagged.order_id == order.pk
    query = order.payment_events.filter(kind=Kind.STATUS_QUERY).last()
    assert query is not None and "(reversed)" in query.summary
    assert not order.payment_events.filter(kind=Kind.DECISION, payload__decision="paid").exists()
    data = status(client, order)
    assert data["paid"] is False and data["status"] == "awaiting_payment" and data["payment_status"] != "paid"
    assert "Pagamento recebido" not in data["message"]
    assert "Pagamento recebido" not in client.get(order.get_absolute_url()).content.decode()

    tasks.sweep()  # asked again later: still nothing changes
    assert state_of(attempt) == State.FAILED
    assert Order.objects.get(pk=order.pk).paid_at is None


def test_the_tail_ends_by_telling_a_person_when_mpesa_never_answered(sim: Simulator, settings: Any) -> None:
    """A push whose fate M-Pesa never told us (every status query unanswered) is closed for the customer at the
    final deadline and asked about for 48 h; then a person is told, once, and nothing is asked any more."""
    item = product(stock=1)
    order, attempt = place({item.pk: 1}, push=False)
    assert services.payment_attempt_claim_push(attempt_id=attempt.pk) is not None  # the worker died mid-push
    settings.MPESA = shop_mpesa_settings(sim.sandbox, PORT_OFFSET=find_free_port_offset())  # M-Pesa unreachable
    long_ago = timezone.now() - timedelta(hours=1)
    PaymentAttempt.objects.filter(pk=attempt.pk).update(
        push_started_at=long_ago, push_deadline=long_ago, next_check_at=long_ago
    )
    tasks.sweep()
    assert state_of(attempt) == State.UNCONFIRMED and not AttentionItem.objects.exists()
    closed_long_ago = timezone.now() - conf.TAIL_HORIZON - timedelta(hours=1)
    PaymentAttempt.objects.filter(pk=attempt.pk).update(finished_at=closed_long_ago, next_check_at=long_ago)
    tasks.sweep()
    told = AttentionItem.objects.get()
    assert told.kind == AttentionItem.Kind.STUCK and told.attempt_id == attempt.pk
    assert "never answered" in told.reason
    assert PaymentAttempt.objects.get(pk=attempt.pk).next_check_at is None
    queries = order.payment_events.filter(kind=PaymentEvent.Kind.STATUS_QUERY).count()
    tasks.sweep()
    assert order.payment_events.filter(kind=PaymentEvent.Kind.STATUS_QUERY).count() == queries  # nothing more
    assert sim.transactions() == []
