"""Crash points: the process killed (or an exception raised) after each commit of checkout, dispatch, callback
processing and reversal. The periodic sweep (``tasks.sweep``: one pass of the worker's minute cron) brings every
record to a final state, or keeps repairing it and raises it for a person once it is too old; nothing is pushed or
reversed twice; a paid order has its units sold once, an unpaid one has none sold.

How a crash is played:

* an exception raised where the process would have died. A task's exception is logged by huey and the worker goes
  on, as the rest of the queue does when one worker dies; :class:`WorkerKilled` (a ``KeyboardInterrupt``, which
  ``except Exception`` in the services does not catch and huey treats as "exit signal, task did not finish") stops
  a task dead, with its open transaction rolled back, like a killed process;
* or the rows put directly in the state a dead process leaves them in.

Time passing is played by moving the rows' timestamps back. "Pushed" is counted twice over: the simulator's
transactions of kind ``c2b`` (it refuses a reused reference, so it cannot show a second push) and the jobs handed to
the push engine; "reversed" likewise with kind ``reversal`` and the calls to ``gateway.reversal``.
"""

from __future__ import annotations

import dataclasses
import json
import secrets
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import timedelta
from decimal import Decimal
from typing import Any

import pytest
from django.db import DatabaseError
from django.db.models import Model
from django.test import Client
from django.urls import reverse
from django.utils import timezone

from kulipa.cart.services import SESSION_KEY as CART_SESSION_KEY
from kulipa.catalog.models import Product
from kulipa.inventory.models import StockReservation
from kulipa.orders.models import Order, OrderLine
from kulipa.payments import conf, gateway, services, tasks
from kulipa.payments.models import AttentionItem, CallbackDelivery, PaymentAttempt, PaymentEvent, Reversal
from kulipa.payments.push_engine import PushEngine, PushJob
from kulipa.payments.services import callbacks as callback_service
from kulipa.payments.services import reversals as reversal_service
from kulipa.payments.tasks import engine as get_engine
from kulipa.payments.tests.conftest import Simulator, checkout, place, product, reconcile_until, status, wait_for
from kulipa.payments.transitions import delivery_transition as real_delivery_transition
from mpesa import Config, Result

State = PaymentAttempt.State
R = Reversal.State
D = CallbackDelivery.State
Kind = PaymentEvent.Kind
Res = StockReservation.State

PHONE = "258840000001"
"""The simulator's customer who approves at once."""
START_STOCK = 5
QTY = 2
CALLBACK = "/api/mpesa/callback"


class Crash(RuntimeError):
    """The injected failure."""


class WorkerKilled(KeyboardInterrupt):
    """The worker process died here (see the module docstring)."""


def crash(*_args: Any, **_kwargs: Any) -> Any:
    raise Crash("injected crash")


def kill(*_args: Any, **_kwargs: Any) -> Any:
    raise WorkerKilled


# --- what reached the gateway ------------------------------------------------------------------------------
@dataclass
class Sent:
    """Every push handed to the push engine and every reversal call, by ThirdPartyReference."""

    pushes: list[str] = field(default_factory=list)
    reversals: list[str] = field(default_factory=list)


@pytest.fixture
def sent(sim: Simulator, monkeypatch: pytest.MonkeyPatch) -> Sent:
    record = Sent()
    real_push = PushEngine.push
    real_reversal = gateway.reversal

    def push(self: PushEngine, job: PushJob) -> None:
        record.pushes.append(job.third_party_reference)
        real_push(self, job)

    def reversal(*, transaction_id: str, third_party_reference: str, amount: Decimal | None) -> Result:
        record.reversals.append(third_party_reference)
        return real_reversal(transaction_id=transaction_id, third_party_reference=third_party_reference, amount=amount)

    monkeypatch.setattr(PushEngine, "push", push)
    monkeypatch.setattr(gateway, "reversal", reversal)
    return record


def at_gateway(sim: Simulator, kind: str, reference: str | None = None) -> list[dict[str, Any]]:
    """The simulator's transactions of ``kind`` ("c2b", "reversal"), optionally with one ThirdPartyReference."""
    return [
        t
        for t in sim.transactions()
        if t["kind"] == kind and (reference is None or t["third_party_reference"] == reference)
    ]


# --- rows, time, consistency -------------------------------------------------------------------------------
def backdate(model: type[Model], pk: int, **ages: timedelta) -> None:
    """Move timestamps of one row back: ``backdate(PaymentAttempt, pk, created_at=timedelta(seconds=15))``."""
    now = timezone.now()
    assert model._default_manager.filter(pk=pk).update(**{name: now - age for name, age in ages.items()}) == 1


def fresh(attempt: PaymentAttempt) -> PaymentAttempt:
    return PaymentAttempt.objects.get(pk=attempt.pk)


def stock(item: Product) -> int:
    return Product.objects.get(pk=item.pk).stock_on_hand


def assert_sold_once(order: Order, item: Product) -> None:
    """Paid: the order's units left the shelf exactly once and one payment pays it, decided once."""
    order.refresh_from_db()
    assert order.status == Order.Status.PAID, order.status
    assert order.payment_status == Order.PaymentStatus.PAID
    assert stock(item) == START_STOCK - QTY
    assert set(order.reservations.values_list("state", flat=True)) == {Res.COMMITTED}
    assert order.payment_attempts.filter(pays_order=True, state=State.SUCCEEDED).count() == 1
    assert order.payment_events.filter(kind=Kind.DECISION, summary__startswith="paid").count() == 1


def assert_unsold(order: Order, item: Product) -> None:
    """Not paid: nothing sold, no payment recorded."""
    order.refresh_from_db()
    assert order.paid_at is None and order.status != Order.Status.PAID
    assert stock(item) == START_STOCK
    assert not order.reservations.filter(state=Res.COMMITTED).exists()
    assert not order.payment_attempts.filter(state=State.SUCCEEDED).exists()


def assert_settled(order: Order) -> None:
    """No attempt of the order left in flight: the sweep has nothing more to bring to an end."""
    assert not order.payment_attempts.filter(state__in=PaymentAttempt.IN_FLIGHT).exists()


def sweep_idle() -> dict[str, int]:
    """One sweep pass, then wait for whatever it handed to the push engine to be recorded."""
    counts = tasks.sweep()
    assert get_engine().wait_idle(20)
    return counts


def claimed(msisdn: str = PHONE) -> tuple[Product, Order, PaymentAttempt, PushJob]:
    """A checkout whose push a worker claimed (QUEUED → PUSHING, committed) and then died holding."""
    item = product(stock=START_STOCK)
    order, attempt = place({item.pk: QTY}, msisdn=msisdn, push=False)
    job = services.payment_attempt_claim_push(attempt_id=attempt.pk)
    assert job is not None and fresh(attempt).state == State.PUSHING
    return item, order, attempt, job


def send_as_dead_worker(job: PushJob) -> Result:
    """What the dead worker had sent before it died: the C2B with the attempt's own reference."""
    answer = gateway.client().c2b_payment(
        amount=job.amount,
        msisdn=job.msisdn,
        transaction_reference=job.transaction_reference,
        third_party_reference=job.third_party_reference,
    )
    assert answer.ok, answer
    return answer


def check_comes_due(attempt: PaymentAttempt) -> None:
    """The dead worker's safety check (claim + C2B read timeout + slack) comes due."""
    backdate(PaymentAttempt, attempt.pk, next_check_at=timedelta(seconds=1))


# === 1. checkout ===========================================================================================
def placed_rows() -> dict[str, int]:
    return {
        "orders": Order.objects.count(),
        "lines": OrderLine.objects.count(),
        "reservations": StockReservation.objects.count(),
        "attempts": PaymentAttempt.objects.count(),
        "events": PaymentEvent.objects.count(),
    }


NOTHING = {"orders": 0, "lines": 0, "reservations": 0, "attempts": 0, "events": 0}


def checkout_form(client: Client, quantities: dict[int, int]) -> dict[str, Any]:
    """The checkout form as the customer submits it (cart in the session, the page's signed snapshot)."""
    session = client.session
    session[CART_SESSION_KEY] = {str(pid): qty for pid, qty in quantities.items()}
    session.save()
    page = client.get(reverse("orders:checkout"))
    assert page.status_code == 200, page.content[:300]
    return {
        "customer_name": "Ana Cossa",
        "msisdn": PHONE,
        "email": "",
        "delivery_address": "Av. Julius Nyerere 100, Maputo",
        "checkout_token": secrets.token_urlsafe(24),
        "snapshot": page.context["snapshot"],
    }


@pytest.mark.parametrize(
    "crash_point",
    [
        # order, lines and reservations written; the attempt not yet
        "kulipa.payments.services.checkout.attempt_create",
        # the attempt row written too; its REQUEST event not
        "kulipa.payments.services.attempts.event_record",
    ],
    ids=["before_attempt", "after_attempt"],
)
@pytest.mark.parametrize("via", ["service", "http"])
def test_checkout_crash_commits_nothing_and_the_same_checkout_then_pays_once(
    sim: Simulator, sent: Sent, monkeypatch: pytest.MonkeyPatch, crash_point: str, via: str
) -> None:
    item = product(stock=START_STOCK)
    client = Client(raise_request_exception=False)
    form = checkout_form(client, {item.pk: QTY}) if via == "http" else {}
    token = secrets.token_urlsafe(16)

    with monkeypatch.context() as m:
        m.setattr(crash_point, crash)
        if via == "http":
            response = client.post(reverse("orders:checkout"), form)
            assert response.status_code == 500  # the injected crash: an error page, and no rows
        else:
            with pytest.raises(Crash):
                place({item.pk: QTY}, token=token)

    assert placed_rows() == NOTHING
    assert stock(item) == START_STOCK
    assert sent.pushes == [] and sim.transactions() == []
    assert tasks.sweep()["redispatched"] == 0

    # The customer presses "pay" again (same form, same token): placed once, pushed once, paid once.
    if via == "http":
        response = client.post(reverse("orders:checkout"), form)
        assert response.status_code in (302, 303), response.content[:300]
        order = Order.objects.get()
    else:
        order, _attempt = place({item.pk: QTY}, token=token)
    wait_for(lambda: Order.objects.get(pk=order.pk).status == Order.Status.PAID, what="paid")
    assert get_engine().wait_idle(10)
    attempt = order.payment_attempts.get()
    assert sent.pushes == [attempt.third_party_reference]
    assert len(at_gateway(sim, "c2b")) == 1
    assert_sold_once(order, item)


# === 2. the dispatch message lost ==========================================================================
def queue_down(attempt_id: int) -> None:
    raise ConnectionError("queue storage unreachable")


def checkout_with_queue_down(monkeypatch: pytest.MonkeyPatch, client: Client, item: Product) -> Order:
    """Checkout commits; sending its dispatch message fails (``queue_dispatch`` logs it: the sweep repairs)."""
    with monkeypatch.context() as m:
        m.setattr(tasks, "dispatch_payment", queue_down)
        order = checkout(client, {item.pk: QTY}, msisdn=PHONE)
    assert fresh(order.payment_attempts.get()).state == State.QUEUED
    return order


def test_lost_dispatch_is_sent_by_the_sweep_while_fresh_and_pushed_once(
    sim: Simulator, sent: Sent, monkeypatch: pytest.MonkeyPatch
) -> None:
    item = product(stock=START_STOCK)
    order = checkout_with_queue_down(monkeypatch, Client(), item)
    attempt = order.payment_attempts.get()
    assert sent.pushes == [] and sim.transactions() == []
    assert sweep_idle()["redispatched"] == 0  # younger than REDISPATCH_MIN_AGE (5 s): still the queue's

    backdate(PaymentAttempt, attempt.pk, created_at=timedelta(seconds=15))
    counts = sweep_idle()
    assert counts["redispatched"] == 1 and counts["not_sent"] == 0
    wait_for(lambda: Order.objects.get(pk=order.pk).status == Order.Status.PAID, what="paid")
    for _ in range(3):  # later passes (and the original message turning up late) push nothing more
        sweep_idle()
    tasks.dispatch_payment(attempt.pk)
    assert get_engine().wait_idle(10)

    assert sent.pushes == [attempt.third_party_reference]
    assert len(at_gateway(sim, "c2b", attempt.third_party_reference)) == 1
    assert len(at_gateway(sim, "c2b")) == 1
    assert_sold_once(order, item)
    assert_settled(order)


def test_dispatch_lost_past_the_send_limit_is_closed_not_sent_and_the_customer_tries_again(
    sim: Simulator, sent: Sent, monkeypatch: pytest.MonkeyPatch
) -> None:
    client = Client()
    item = product(stock=START_STOCK)
    order = checkout_with_queue_down(monkeypatch, client, item)
    attempt = order.payment_attempts.get()

    backdate(PaymentAttempt, attempt.pk, created_at=conf.QUEUED_SEND_LIMIT + timedelta(seconds=1))
    counts = sweep_idle()
    assert counts["not_sent"] == 1 and counts["redispatched"] == 0
    assert fresh(attempt).state == State.NOT_SENT
    tasks.dispatch_payment(attempt.pk)  # the lost message turning up now sends nothing
    sweep_idle()
    assert get_engine().wait_idle(10)
    assert sent.pushes == [] and sim.transactions() == []
    assert_unsold(order, item)
    assert_settled(order)
    shown = status(client, order)
    assert shown["payment_status"] == "not_sent" and shown["can_retry"] is True and shown["final"] is True

    # "Try again": a new attempt with a new reference, pushed once, paid once; the closed one never pushed.
    response = client.post(reverse("payments:retry", kwargs={"public_id": order.public_id}), {"after": attempt.pk})
    assert response.status_code == 302
    wait_for(lambda: Order.objects.get(pk=order.pk).status == Order.Status.PAID, what="paid after retry")
    assert get_engine().wait_idle(10)
    retry = order.payment_attempts.exclude(pk=attempt.pk).get()
    assert sent.pushes == [retry.third_party_reference]
    assert at_gateway(sim, "c2b", attempt.third_party_reference) == []
    assert len(at_gateway(sim, "c2b")) == 1
    assert_sold_once(order, item)


# === 3. dispatch: the worker claimed the push, then died ===================================================
@pytest.mark.parametrize("reached_gateway", [False, True], ids=["died_before_sending", "died_after_sending"])
def test_worker_died_holding_a_claimed_push(sim: Simulator, sent: Sent, reached_gateway: bool) -> None:
    """PUSHING with nothing recorded. Before sending: asked until the deadlines pass, closed UNCONFIRMED, never
    pushed. After sending: the status query finds the money, paid once; not pushed again."""
    item, order, attempt, job = claimed()
    if reached_gateway:
        send_as_dead_worker(job)
    check_comes_due(attempt)

    reconcile_until(lambda: not fresh(attempt).in_flight, what="attempt settled")
    for _ in range(2):
        sweep_idle()

    assert sent.pushes == []  # the sweep never pushes a claimed attempt again
    assert len(at_gateway(sim, "c2b", attempt.third_party_reference)) == (1 if reached_gateway else 0)
    assert_settled(order)
    if reached_gateway:
        assert fresh(attempt).state == State.SUCCEEDED
        assert_sold_once(order, item)
    else:
        assert fresh(attempt).state == State.UNCONFIRMED
        assert order.payment_events.filter(kind=Kind.STATUS_QUERY).count() >= 2
        assert_unsold(order, item)
        assert Order.objects.get(pk=order.pk).payment_status == Order.PaymentStatus.UNCONFIRMED


# === 4. the push engine's recorder crashed after the answer ================================================
@pytest.mark.parametrize("error", [DatabaseError, Crash], ids=["database_error_every_try", "crash"])
def test_recorder_crashed_after_the_push_answer(
    sim: Simulator, sent: Sent, monkeypatch: pytest.MonkeyPatch, error: type[Exception]
) -> None:
    """The gateway answered "paid" and the recorder could not write it (every retry failed, or it crashed): the
    attempt stays PUSHING and its safety check makes the sweep settle it by status query."""
    item = product(stock=START_STOCK)
    tries: list[int] = []

    def broken(*, attempt_id: int, result: Result) -> PaymentAttempt:
        tries.append(attempt_id)
        raise error("recorder crashed")

    with monkeypatch.context() as m:
        m.setattr(services, "payment_attempt_record_push_answer", broken)
        order, attempt = place({item.pk: QTY})
        assert get_engine().wait_idle(30)
    assert len(tries) == (5 if error is DatabaseError else 1)
    assert fresh(attempt).state == State.PUSHING
    assert at_gateway(sim, "c2b", attempt.third_party_reference)[0]["status"] == "Completed"  # money moved
    assert_unsold(order, item)

    # The safety check falls due at push deadline + margin at the latest (3 s with the test timings; the
    # 5 database retries may already have taken that long).
    check_comes_due(attempt)
    sweep_idle()
    for _ in range(2):
        sweep_idle()

    assert fresh(attempt).state == State.SUCCEEDED
    assert sent.pushes == [attempt.third_party_reference]
    assert len(at_gateway(sim, "c2b")) == 1
    assert not order.payment_events.filter(kind=Kind.RESPONSE).exists()  # the answer was lost, not invented
    assert_sold_once(order, item)
    assert_settled(order)


# === 5. callback processing ================================================================================
def callback_body(attempt: PaymentAttempt, answer: Result) -> dict[str, str]:
    """What the gateway posts for the dead worker's push."""
    assert answer.conversation_id and answer.transaction_id
    return {
        "input_OriginalConversationID": answer.conversation_id,
        "input_ThirdPartyReference": attempt.third_party_reference,
        "input_TransactionID": answer.transaction_id,
        "input_ResultCode": "INS-0",
        "input_ResultDesc": "Request processed successfully",
    }


def receive(body: dict[str, str]) -> CallbackDelivery:
    """The web process stores and acknowledges the callback (its queue message not sent)."""
    receipt = services.callback_receive(headers={}, body=json.dumps(body).encode(), remote_ip="127.0.0.1")
    assert receipt.status == 200
    return CallbackDelivery.objects.get(pk=receipt.delivery_id)


def delivery(pk: int) -> CallbackDelivery:
    return CallbackDelivery.objects.get(pk=pk)


def killed_when_done(*, delivery_id: int, source: Any, to: str, **fields: Any) -> bool:
    """``delivery_transition`` of a worker that dies just before PROCESSING → DONE."""
    if to == D.DONE:
        raise WorkerKilled
    return real_delivery_transition(delivery_id=delivery_id, source=source, to=to, **fields)


CALLBACK_DEATHS: dict[str, tuple[str, Callable[..., Any]] | None] = {
    # the message to the worker was lost: the delivery stays QUEUED
    "queue_message_lost": None,
    # the worker claimed it (QUEUED → PROCESSING, committed) and died before logging the CALLBACK event
    "died_after_claim": ("callback_fields", kill),
    # the worker logged the CALLBACK event (committed) and died before the status query
    "died_after_logging": ("attempt_reconcile", kill),
    # the status query confirmed the payment and the order was paid (committed); the worker died before DONE
    "died_after_confirming": ("delivery_transition", killed_when_done),
}


def callback_left_behind(monkeypatch: pytest.MonkeyPatch, death: str) -> tuple[Product, Order, PaymentAttempt, int]:
    item, order, attempt, job = claimed()
    answer = send_as_dead_worker(job)  # the money moved; the push answer was lost with the worker
    received = receive(callback_body(attempt, answer))
    patch = CALLBACK_DEATHS[death]
    if patch is not None:
        with monkeypatch.context() as m:
            m.setattr(callback_service, *patch)
            tasks.process_callback(received.pk)
        assert delivery(received.pk).state == D.PROCESSING and delivery(received.pk).tries == 1
    else:
        assert delivery(received.pk).state == D.QUEUED
    paid_already = death == "died_after_confirming"
    assert (fresh(attempt).state == State.SUCCEEDED) is paid_already
    return item, order, attempt, received.pk


@pytest.mark.parametrize("death", list(CALLBACK_DEATHS))
def test_callback_left_behind_is_processed_by_the_sweep(
    sim: Simulator, sent: Sent, monkeypatch: pytest.MonkeyPatch, death: str
) -> None:
    """The delivery is the only thing that knows about the money here (the attempt's own check is minutes
    away): the sweep puts a dead worker's delivery back, confirms it by status query and the order is paid once."""
    item, order, attempt, delivery_id = callback_left_behind(monkeypatch, death)
    assert sweep_idle()["callbacks"] == 0  # a worker may still be on it
    assert delivery(delivery_id).state in (D.QUEUED, D.PROCESSING)

    if death == "queue_message_lost":
        backdate(CallbackDelivery, delivery_id, received_at=conf.REQUEUE_AFTER + timedelta(seconds=1))
    else:
        stale = conf.REVERSAL_STUCK_SENDING + timedelta(minutes=5)
        backdate(CallbackDelivery, delivery_id, received_at=stale, updated_at=stale)
    assert sweep_idle()["callbacks"] == 1
    for _ in range(2):
        sweep_idle()

    done = delivery(delivery_id)
    outcome = "already_final" if death == "died_after_confirming" else "paid"
    assert done.state == D.DONE and done.outcome == outcome, (done.state, done.outcome, done.error)
    assert done.tries == (1 if death == "queue_message_lost" else 2)
    assert fresh(attempt).state == State.SUCCEEDED
    assert sent.pushes == [] and len(at_gateway(sim, "c2b")) == 1
    assert_sold_once(order, item)
    assert_settled(order)
    assert not AttentionItem.objects.exists()


def test_callback_event_is_logged_once_even_when_the_first_worker_died_before_logging(
    sim: Simulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    _item, order, _attempt, delivery_id = callback_left_behind(monkeypatch, "died_after_claim")
    stale = conf.REVERSAL_STUCK_SENDING + timedelta(minutes=5)
    backdate(CallbackDelivery, delivery_id, received_at=stale, updated_at=stale)
    sweep_idle()
    assert delivery(delivery_id).state == D.DONE
    assert order.payment_events.filter(kind=Kind.CALLBACK).count() == 1


def test_callback_whose_processing_always_fails_retries_gives_up_and_is_raised_while_the_payment_settles(
    sim: Simulator, sent: Sent, monkeypatch: pytest.MonkeyPatch
) -> None:
    item, order, attempt, job = claimed()
    answer = send_as_dead_worker(job)
    monkeypatch.setattr(callback_service, "attempt_reconcile", crash)
    response = Client().post(CALLBACK, json.dumps(callback_body(attempt, answer)), content_type="application/json")
    assert response.status_code == 200 and response.json()["output_ResponseCode"] == "0"
    first = CallbackDelivery.objects.get()
    assert first.state == D.RETRY and first.tries == 1 and "Crash" in first.error

    check_comes_due(attempt)  # the attempt's own check: it settles the payment whatever the callback does
    delays: list[float] = []
    for n in range(2, conf.DELIVERY_MAX_TRIES + 1):
        before = delivery(first.pk)
        assert before.next_try_at is not None
        delays.append((before.next_try_at - before.updated_at).total_seconds())
        sweep_idle()
        assert delivery(first.pk).tries == n - 1  # not due yet: waits its backoff
        backdate(CallbackDelivery, first.pk, next_try_at=timedelta(seconds=1))
        sweep_idle()
        assert delivery(first.pk).tries == n
    assert [round(d) for d in delays] == [10, 30, 90, 270, 810, 2430, 3600]

    gave_up = delivery(first.pk)
    assert gave_up.state == D.GAVE_UP and gave_up.processed_at is not None
    for _ in range(2):
        sweep_idle()
    assert delivery(first.pk).tries == conf.DELIVERY_MAX_TRIES  # never picked up again
    flagged = AttentionItem.objects.get()
    assert flagged.kind == AttentionItem.Kind.CALLBACK_FAILED and flagged.order_id == order.pk
    assert flagged.attempt_id == attempt.pk and flagged.resolved_at is None
    assert f"callback {first.pk}" in flagged.reason
    assert fresh(attempt).state == State.SUCCEEDED
    assert sent.pushes == [] and len(at_gateway(sim, "c2b")) == 1
    assert_sold_once(order, item)
    assert_settled(order)


def test_a_delivery_whose_worker_dies_every_time_is_given_up_and_raised(
    sim: Simulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    _item, order, attempt, delivery_id = callback_left_behind(monkeypatch, "died_after_logging")
    monkeypatch.setattr(callback_service, "attempt_reconcile", kill)  # a poison delivery: the worker dies on it
    received = conf.STUCK_AFTER + timedelta(minutes=30)
    backdate(CallbackDelivery, delivery_id, received_at=received)
    backdate(PaymentAttempt, attempt.pk, created_at=received)
    check_comes_due(attempt)
    for _ in range(conf.DELIVERY_MAX_TRIES + 2):
        backdate(CallbackDelivery, delivery_id, updated_at=conf.REVERSAL_STUCK_SENDING + timedelta(minutes=1))
        sweep_idle()

    assert fresh(attempt).state == State.SUCCEEDED  # the money side is settled by the attempt's own check
    left = delivery(delivery_id)
    assert (left.state, left.tries) == (D.GAVE_UP, conf.DELIVERY_MAX_TRIES)  # never claimed more than allowed
    raised = AttentionItem.objects.get(order_id=order.pk, resolved_at__isnull=True)
    assert raised.kind == AttentionItem.Kind.CALLBACK_FAILED and f"callback {delivery_id}" in raised.reason


# === 6. reversals ==========================================================================================
def paid_order(sim: Simulator) -> tuple[Product, Order, PaymentAttempt]:
    item = product(stock=START_STOCK)
    order, attempt = place({item.pk: QTY})
    wait_for(lambda: Order.objects.get(pk=order.pk).status == Order.Status.PAID, what="paid")
    assert get_engine().wait_idle(10)
    attempt = fresh(attempt)
    assert attempt.transaction_id
    return item, order, attempt


def assert_reversed_once(sim: Simulator, order: Order, item: Product, reversal: Reversal) -> None:
    reversal.refresh_from_db()
    assert reversal.state == R.SUCCEEDED and reversal.finished_at is not None
    reversals = at_gateway(sim, "reversal")
    assert [t["third_party_reference"] for t in reversals] == [reversal.reference]
    original = sim.known_transaction(reversal.attempt.third_party_reference)
    assert Decimal(original["reversed_amount"]) == reversal.amount == order.total
    order.refresh_from_db()
    assert order.status == Order.Status.CANCELLED and order.payment_status == Order.PaymentStatus.REFUNDED
    assert stock(item) == START_STOCK  # sold once, restocked once
    assert set(order.reservations.values_list("state", flat=True)) == {Res.RETURNED}
    assert order.payment_events.filter(kind=Kind.DECISION, summary__startswith="restocked").count() == 1


def test_reversal_whose_queue_message_was_lost_is_sent_by_the_sweep_once(sim: Simulator, sent: Sent) -> None:
    item, order, attempt = paid_order(sim)
    reversal = services.payment_reversal_request(attempt_id=attempt.pk, requested_by="staff", reason="crash test")
    assert sweep_idle()["reversals_sent"] == 0  # younger than REQUEUE_AFTER: still the queue's
    assert Reversal.objects.get(pk=reversal.pk).state == R.REQUESTED

    backdate(Reversal, reversal.pk, created_at=conf.REQUEUE_AFTER + timedelta(seconds=1))
    assert sweep_idle()["reversals_sent"] == 1
    for _ in range(2):
        sweep_idle()
    tasks.reverse_payment(reversal.pk)  # the lost message turning up late sends nothing

    assert sent.reversals == [reversal.reference]
    assert_reversed_once(sim, order, item, reversal)


def lose_the_answer(monkeypatch: pytest.MonkeyPatch, how: str) -> None:
    """The reversal reached the gateway and the worker lost what happened next."""
    if how == "gateway_answer_lost":  # the call went out; the worker died before it had the answer
        real = gateway.reversal

        def sent_then_died(**kwargs: Any) -> Result:
            real(**kwargs)
            raise Crash("died after the gateway received the reversal")

        monkeypatch.setattr(gateway, "reversal", sent_then_died)
    else:  # the answer came back; the transaction recording it was rolled back
        monkeypatch.setattr(reversal_service, "_reversal_settle", crash)


@pytest.mark.parametrize("how", ["gateway_answer_lost", "recording_rolled_back", "rows_left_sending"])
def test_reversal_sent_and_then_lost_is_settled_by_query_and_never_resent(
    sim: Simulator, sent: Sent, monkeypatch: pytest.MonkeyPatch, how: str
) -> None:
    item, order, attempt = paid_order(sim)
    reversal = services.payment_reversal_request(attempt_id=attempt.pk, requested_by="staff", reason="crash test")
    if how == "rows_left_sending":  # the worker won REQUESTED → SENDING, sent it, died: play what it sent
        Reversal.objects.filter(pk=reversal.pk).update(state=R.SENDING, sent_at=timezone.now())
        answer = gateway.client().reversal(
            transaction_id=attempt.transaction_id, third_party_reference=reversal.reference
        )
        assert answer.ok
    else:
        with monkeypatch.context() as m:
            lose_the_answer(m, how)
            tasks.queue_reversal(reversal.pk)  # as the admin action does, after commit
    assert Reversal.objects.get(pk=reversal.pk).state == R.SENDING
    assert len(at_gateway(sim, "reversal")) == 1

    counts = sweep_idle()
    assert counts["reversals_sent"] == 0 and counts["reversals_queried"] == 0  # a worker may still be waiting
    backdate(Reversal, reversal.pk, sent_at=conf.REVERSAL_STUCK_SENDING + timedelta(minutes=5))
    assert sweep_idle()["reversals_queried"] == 1
    for _ in range(2):
        sweep_idle()

    assert sent.reversals == ([] if how == "rows_left_sending" else [reversal.reference])
    assert_reversed_once(sim, order, item, reversal)
    assert not AttentionItem.objects.exists()


@pytest.mark.parametrize("how", ["crash_before_the_call", "rows_left_sending"])
def test_reversal_that_died_before_sending_is_never_resent_and_raised_when_stuck(
    sim: Simulator, sent: Sent, monkeypatch: pytest.MonkeyPatch, how: str
) -> None:
    """Nobody knows whether it left: it is asked about (never sent again), stays UNKNOWN while the gateway has
    nothing, and a person is told once it is older than ``STUCK_AFTER``; the order stays paid, its stock sold."""
    item, order, attempt = paid_order(sim)
    reversal = services.payment_reversal_request(attempt_id=attempt.pk, requested_by="staff", reason="crash test")
    if how == "rows_left_sending":
        Reversal.objects.filter(pk=reversal.pk).update(state=R.SENDING, sent_at=timezone.now())
    else:
        with monkeypatch.context() as m:
            m.setattr(gateway, "reversal", crash)
            tasks.queue_reversal(reversal.pk)
    assert Reversal.objects.get(pk=reversal.pk).state == R.SENDING

    backdate(Reversal, reversal.pk, sent_at=conf.REVERSAL_STUCK_SENDING + timedelta(minutes=5))
    assert sweep_idle()["reversals_queried"] == 1
    reconcile_until(lambda: Reversal.objects.get(pk=reversal.pk).check_count >= 3, what="asked again")
    left = Reversal.objects.get(pk=reversal.pk)
    assert left.state == R.UNKNOWN and left.next_check_at is not None
    assert not AttentionItem.objects.exists()  # young: still only repaired

    backdate(Reversal, reversal.pk, created_at=conf.STUCK_AFTER + timedelta(minutes=1))
    for _ in range(3):
        assert sweep_idle()["stuck"] == 1
    stuck = AttentionItem.objects.get()  # raised once, while it keeps being asked about
    assert stuck.kind == AttentionItem.Kind.STUCK and stuck.key == f"stuck-reversal:{reversal.pk}"
    assert stuck.order_id == order.pk and stuck.attempt_id == attempt.pk
    reconcile_until(lambda: Reversal.objects.get(pk=reversal.pk).check_count > left.check_count, what="still asked")
    assert AttentionItem.objects.count() == 1

    assert sent.reversals == [] and at_gateway(sim, "reversal") == []  # never (re)sent
    assert Reversal.objects.get(pk=reversal.pk).state == R.UNKNOWN
    assert_sold_once(order, item)
    assert not at_gateway(sim, "c2b", attempt.third_party_reference)[0]["reversed"]


# === 7. an exception inside order_mark_paid after the stock was sold =======================================
@pytest.mark.parametrize("path", ["push_answer", "status_query"])
def test_crash_inside_mark_paid_rolls_everything_back_and_the_next_reconcile_pays_once(
    sim: Simulator, sent: Sent, monkeypatch: pytest.MonkeyPatch, path: str
) -> None:
    """``paid.event_record`` runs after ``reservations_commit`` and the order's move to PAID, in the same
    transaction: raising there must leave no unit sold and the attempt unpaid."""
    if path == "push_answer":
        item = product(stock=START_STOCK)
        with monkeypatch.context() as m:
            m.setattr("kulipa.payments.services.paid.event_record", crash)
            order, attempt = place({item.pk: QTY})
            assert get_engine().wait_idle(20)
    else:
        item, order, attempt, job = claimed()
        send_as_dead_worker(job)
        check_comes_due(attempt)
        with monkeypatch.context() as m:
            m.setattr("kulipa.payments.services.paid.event_record", crash)
            sweep_idle()
        assert fresh(attempt).check_count == 0  # the STATUS_QUERY and its count rolled back too
        assert not order.payment_events.filter(kind=Kind.STATUS_QUERY).exists()

    crashed = fresh(attempt)
    assert crashed.state == State.PUSHING and not crashed.pays_order and crashed.transaction_id == ""
    assert set(order.reservations.values_list("state", flat=True)) == {Res.ACTIVE}
    assert_unsold(order, item)
    assert Order.objects.get(pk=order.pk).status == Order.Status.AWAITING_PAYMENT
    assert not order.payment_events.filter(kind=Kind.DECISION).exists()

    check_comes_due(attempt)  # the reconciler's lease (status query) or the claim's safety check (push answer)
    for _ in range(3):
        sweep_idle()
    assert fresh(attempt).state == State.SUCCEEDED
    assert_sold_once(order, item)
    assert_settled(order)
    assert sent.pushes == ([attempt.third_party_reference] if path == "push_answer" else [])
    assert len(at_gateway(sim, "c2b")) == 1


# === none waits forever ====================================================================================
def test_every_state_a_crash_leaves_ends_final_or_raised_once_even_with_the_gateway_unreachable(
    sim: Simulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    """One record in each intermediate state a crash can leave, all older than ``STUCK_AFTER``, and M-Pesa not
    answering at all: the sweep still ends each one (final state) or keeps repairing it and raises it once."""
    old = conf.STUCK_AFTER + timedelta(hours=1)
    attempts: dict[str, PaymentAttempt] = {}
    unpaid: list[tuple[Order, Product]] = []
    for state in (State.QUEUED, State.PUSHING, State.AWAITING_CALLBACK, State.UNKNOWN):
        item = product(stock=START_STOCK)
        order, attempt = place({item.pk: QTY}, push=False)
        unpaid.append((order, item))
        if state != State.QUEUED:
            assert services.payment_attempt_claim_push(attempt_id=attempt.pk) is not None
            PaymentAttempt.objects.filter(pk=attempt.pk).update(state=state)
            backdate(PaymentAttempt, attempt.pk, push_started_at=old, push_deadline=old, next_check_at=old)
        backdate(PaymentAttempt, attempt.pk, created_at=old)
        attempts[state] = attempt
    reversals: dict[str, Reversal] = {}
    deliveries: dict[str, int] = {}
    paid_orders: list[tuple[Order, Product]] = []
    for r_state, d_state in ((R.REQUESTED, D.QUEUED), (R.SENDING, D.PROCESSING), (R.UNKNOWN, D.RETRY)):
        item, order, paid = paid_order(sim)
        paid_orders.append((order, item))
        reversal = services.payment_reversal_request(attempt_id=paid.pk, requested_by="staff", reason="crash test")
        Reversal.objects.filter(pk=reversal.pk).update(state=r_state)
        backdate(Reversal, reversal.pk, created_at=old, sent_at=old, next_check_at=old)
        reversals[r_state] = reversal
        answer = sim.known_transaction(paid.third_party_reference)
        received = receive(
            {
                "input_OriginalConversationID": answer["conversation_id"],
                "input_ThirdPartyReference": paid.third_party_reference,
                "input_TransactionID": answer["transaction_id"],
                "input_ResultCode": "INS-0",
                "input_ResultDesc": "Request processed successfully",
            }
        )
        CallbackDelivery.objects.filter(pk=received.pk).update(state=d_state, tries=1 if d_state != D.QUEUED else 0)
        backdate(CallbackDelivery, received.pk, received_at=old, updated_at=old, next_try_at=old)
        deliveries[d_state] = received.pk
    c2b_before = len(at_gateway(sim, "c2b"))

    real_config = gateway.build_config

    def unreachable() -> Config:  # nothing listens on ports 12-14: connection refused, asked once per query
        config = real_config()
        return dataclasses.replace(config, ports=config.ports.shifted(-18340), query_retries=0)

    monkeypatch.setattr(gateway, "build_config", unreachable)

    def raised(key: str) -> int:
        return AttentionItem.objects.filter(key=key, resolved_at__isnull=True).count()

    def unsettled() -> list[str]:
        left = [f"attempt {a.state}" for a in map(fresh, attempts.values()) if a.in_flight]
        left += [
            f"reversal {r.state}"
            for r in Reversal.objects.filter(pk__in=[r.pk for r in reversals.values()], state__in=Reversal.OPEN)
            if not raised(f"stuck-reversal:{r.pk}")
        ]
        left += [
            f"delivery {d.state}"
            for d in CallbackDelivery.objects.filter(pk__in=deliveries.values())
            if d.state not in (D.DONE, D.GAVE_UP) and not raised(f"delivery:{d.pk}")
        ]
        return left

    reconcile_until(lambda: not unsettled(), what="every record final or raised")
    for _ in range(2):
        sweep_idle()
    assert unsettled() == []
    for attempt in attempts.values():
        assert not fresh(attempt).in_flight
        assert raised(f"stuck-attempt:{attempt.pk}") <= 1
    for reversal in Reversal.objects.filter(pk__in=[r.pk for r in reversals.values()]):
        if reversal.state in Reversal.OPEN:
            assert raised(f"stuck-reversal:{reversal.pk}") == 1
        elif reversal.state == R.FAILED:
            assert raised(f"reversal:{reversal.pk}") == 1
    assert len(at_gateway(sim, "c2b")) == c2b_before  # nothing pushed meanwhile
    assert at_gateway(sim, "reversal") == []
    for order, item in unpaid:
        assert_unsold(order, item)
    for order, item in paid_orders:  # no reversal went through: still paid, sold once
        assert_sold_once(order, item)
