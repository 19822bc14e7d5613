"""Sync mode end to end over HTTP, against the real simulator: the worker (push engine) holds the C2B call."""

from __future__ import annotations

import json
from decimal import Decimal

import pytest
from django.test import Client
from django.urls import reverse

from kulipa.catalog.models import Product
from kulipa.inventory.models import StockReservation
from kulipa.orders.models import Order
from kulipa.payments import selectors, tasks
from kulipa.payments.models import PaymentAttempt, PaymentEvent
from kulipa.payments.tests.conftest import (
    Simulator,
    checkout,
    place,
    product,
    reconcile_until,
    status,
    wait_for,
    wait_status,
)

State = PaymentAttempt.State
Kind = PaymentEvent.Kind


def number(suffix: str) -> str:
    return f"2588400000{suffix}"


def test_success_pays_the_order_and_commits_stock(sim: Simulator) -> None:
    client = Client()
    a, b = product(price="125.50", stock=5), product(price="1000.00", stock=3)
    order = checkout(client, {a.pk: 2, b.pk: 1}, msisdn="84 000 0001")

    data = wait_status(client, order, status="paid")
    assert data["paid"] is True and data["payment_status"] == "paid" and data["can_retry"] is False
    assert data["status_label"] == "Paga · Pago"  # the page swaps it in without a reload
    order.refresh_from_db()
    attempt = order.payment_attempts.get()
    assert attempt.state == State.SUCCEEDED and attempt.result_code == "INS-0"
    assert len(attempt.third_party_reference) <= 20 and attempt.third_party_reference.isalnum()
    assert order.mpesa_transaction_id == attempt.transaction_id != ""
    assert order.paid_amount == order.total and order.paid_at is not None
    assert Product.objects.get(pk=a.pk).stock_on_hand == 3
    assert Product.objects.get(pk=b.pk).stock_on_hand == 2
    assert set(order.reservations.values_list("state", flat=True)) == {StockReservation.State.COMMITTED}
    kinds = list(order.payment_events.values_list("kind", flat=True))
    assert kinds == [Kind.REQUEST, Kind.RESPONSE, Kind.DECISION]
    # MSISDNs are stored masked, never in full.
    dumped = json.dumps(list(order.payment_events.values_list("payload", flat=True)))
    assert "258840000001" not in dumped and "25884****001" in dumped
    tx = sim.transaction(attempt.third_party_reference)
    assert tx is not None and tx["status"] == "Completed" and Decimal(tx["amount"]) == Decimal("1251.00")

    page = client.get(order.get_absolute_url())
    assert page.status_code == 200
    assert "Pagamento recebido" in page.content.decode()


def test_a_status_read_that_straddles_the_payment_commit_never_says_final_and_unpaid(sim: Simulator) -> None:
    """The status endpoint reads the order (the viewer check), then its latest attempt. A payment committed
    between the two reads must not come out as "nothing in flight, not paid": the page stops asking on "final"
    and would show "check your phone" for good. The interleaving is made exactly: the order is read before the
    push is even dispatched, the attempt after the worker recorded the payment."""
    p = product(stock=2)
    order, attempt = place({p.pk: 1}, push=False)
    read_before = Order.objects.get(pk=order.pk)
    assert read_before.status == Order.Status.AWAITING_PAYMENT

    tasks.dispatch_payment(attempt.pk)
    wait_for(lambda: Order.objects.filter(pk=order.pk, status=Order.Status.PAID).exists(), what="order paid")

    view = selectors.order_payment_view(order=read_before)
    assert view.final and view.paid
    assert view.status == "paid" and view.status_label == "Paga · Pago"
    assert "Pagamento recebido" in view.message


FAILURES = [
    # suffix, attempt state, payment_status, words of the message, needs reconciliation
    ("02", State.INSUFFICIENT_FUNDS, "insufficient_funds", "Saldo M-Pesa insuficiente", False),
    ("03", State.DECLINED, "declined", "cancelado no telemóvel", False),
    ("05", State.FAILED, "failed", "O pagamento falhou", False),
    ("04", State.TIMED_OUT, "timed_out", "não foi respondido a tempo", True),
    ("06", State.FAILED, "failed", "O pagamento falhou", True),
    # INS-16 (busy): the gateway has no such transaction; the decision lands at push deadline + margin.
    ("07", State.UNCONFIRMED, "unconfirmed", "não confirmou este pagamento", True),
]


@pytest.mark.parametrize(("suffix", "state", "payment_status", "words", "reconciled"), FAILURES)
def test_failure_shows_status_and_try_again_with_another_number_pays(
    sim: Simulator, suffix: str, state: str, payment_status: str, words: str, reconciled: bool
) -> None:
    client = Client()
    item = product(stock=2)
    order = checkout(client, {item.pk: 1}, msisdn=number(suffix))
    attempt = order.payment_attempts.get()
    if reconciled:  # INS-9 / INS-1 / INS-16 are "unknown" until a status query settles them
        wait_for(lambda: PaymentAttempt.objects.get(pk=attempt.pk).state != State.PUSHING, what="push answered")
        assert PaymentAttempt.objects.get(pk=attempt.pk).state == State.UNKNOWN
        assert status(client, order)["payment_status"] == "verifying"
        reconcile_until(lambda: PaymentAttempt.objects.get(pk=attempt.pk).state == state, what=state)
    data = wait_status(client, order, payment_status=payment_status)
    assert data["status"] == "awaiting_payment" and data["can_retry"] is True and data["paid"] is False
    assert words in data["message"]
    order.refresh_from_db()
    assert order.status == Order.Status.AWAITING_PAYMENT
    # The phone said no or nobody answered: the stock goes back on sale at once ("try again" holds it again).
    # The gateway failed or could not say: it stays held so the customer can try again.
    released = state in (State.DECLINED, State.INSUFFICIENT_FUNDS, State.TIMED_OUT)
    expected = StockReservation.State.RELEASED if released else StockReservation.State.ACTIVE
    assert order.reservations.get().state == expected
    page = client.get(order.get_absolute_url()).content.decode()
    assert words in page and reverse("payments:retry", kwargs={"public_id": order.public_id}) in page

    response = client.post(
        reverse("payments:retry", kwargs={"public_id": order.public_id}),
        {"msisdn": "84 000 0101", "after": data["attempt_id"]},
    )
    assert response.status_code == 302
    wait_status(client, order, status="paid")
    attempts = list(order.payment_attempts.order_by("id"))
    assert [a.state for a in attempts] == [state, State.SUCCEEDED]
    assert attempts[1].msisdn == "258840000101"
    assert attempts[0].third_party_reference != attempts[1].third_party_reference
    assert Product.objects.get(pk=item.pk).stock_on_hand == 1
    decisions = list(order.payment_events.filter(kind=Kind.DECISION).values_list("payload__decision", flat=True))
    assert decisions == [state, "paid"]  # the failed attempt closed, then the retry paid


def test_dropped_response_is_unknown_then_reconciled_to_paid(sim: Simulator) -> None:
    client = Client()
    item = product(stock=1)
    order = checkout(client, {item.pk: 1}, msisdn=number("08"))
    attempt = order.payment_attempts.get()
    wait_for(lambda: PaymentAttempt.objects.get(pk=attempt.pk).state == State.UNKNOWN, what="unknown")
    assert status(client, order)["payment_status"] == "verifying"
    assert sim.known_transaction(attempt.third_party_reference)["status"] == "Completed"  # the money moved
    reconcile_until(lambda: Order.objects.get(pk=order.pk).status == Order.Status.PAID, what="reconciled")
    assert Product.objects.get(pk=item.pk).stock_on_hand == 0
    assert order.payment_events.filter(kind=Kind.STATUS_QUERY).exists()
    assert order.payment_events.filter(kind=Kind.DECISION).count() == 1
    # Never pushed twice: one C2B at the simulator for this order.
    assert len([t for t in sim.transactions() if t["transaction_reference"] == order.short_reference]) == 1


def test_approve_and_decline_on_the_phone_page(sim: Simulator) -> None:
    sim.configure(push_window=30)
    client = Client()
    item = product(stock=3)
    order = checkout(client, {item.pk: 1}, msisdn=number("00"))
    data = wait_status(client, order, payment_status="pending")
    assert data["seconds_left"] is not None and 0 < data["seconds_left"] <= 2
    page = client.get(order.get_absolute_url()).content.decode()
    assert f"{sim.sandbox.control_url}/phone/258840000000" in page  # the sandbox phone link
    prompt = wait_for(lambda: sim.prompts("258840000000"), what="prompt on the phone")[0]
    sim.answer("258840000000", prompt["conversation_id"], approve=False)
    data = wait_status(client, order, payment_status="declined")
    client.post(reverse("payments:retry", kwargs={"public_id": order.public_id}), {"after": data["attempt_id"]})
    prompt = wait_for(lambda: sim.prompts("258840000000"), what="second prompt")[0]
    sim.answer("258840000000", prompt["conversation_id"], approve=True)
    wait_status(client, order, status="paid")


def test_double_click_try_again_yields_one_attempt(sim: Simulator) -> None:
    client = Client()
    item = product(stock=3)
    order = checkout(client, {item.pk: 1}, msisdn=number("02"))
    data = wait_status(client, order, payment_status="insufficient_funds")
    url = reverse("payments:retry", kwargs={"public_id": order.public_id})
    for _ in range(3):
        client.post(url, {"msisdn": "840000002", "after": data["attempt_id"]})
    wait_status(client, order, payment_status="insufficient_funds", can_retry=True)
    assert order.payment_attempts.count() == 2


def test_invalid_number_on_try_again_is_refused(sim: Simulator) -> None:
    client = Client()
    item = product(stock=3)
    order = checkout(client, {item.pk: 1}, msisdn=number("03"))
    data = wait_status(client, order, payment_status="declined")
    response = client.post(
        reverse("payments:retry", kwargs={"public_id": order.public_id}),
        {"msisdn": "82 123 4567", "after": data["attempt_id"]},
        follow=True,
    )
    assert "Número M-Pesa inválido" in response.content.decode()
    assert order.payment_attempts.count() == 1


def test_try_again_requires_csrf(sim: Simulator) -> None:
    client = Client(enforce_csrf_checks=True)
    item = product(stock=3)
    order = checkout(Client(), {item.pk: 1}, msisdn=number("03"))
    response = client.post(reverse("payments:retry", kwargs={"public_id": order.public_id}), {"after": ""})
    assert response.status_code == 403


def test_worker_died_mid_push_is_settled_by_the_reconciler(sim: Simulator) -> None:
    """The attempt was claimed (PUSHING) but the process died before sending: the sweep queries it after its
    deadline; N/A past deadline + margin → failed, and it is never pushed again."""
    from datetime import timedelta

    from django.utils import timezone

    from kulipa.payments import services

    item = product(stock=2)
    order, attempt = place({item.pk: 1}, token="died-mid-push", push=False)
    # Claim it as a worker would, then "die" before sending.
    claimed = services.payment_attempt_claim_push(attempt_id=attempt.pk)
    assert claimed is not None and services.payment_attempt_claim_push(attempt_id=attempt.pk) is None
    PaymentAttempt.objects.filter(pk=attempt.pk).update(next_check_at=timezone.now() - timedelta(seconds=1))
    reconcile_until(lambda: PaymentAttempt.objects.get(pk=attempt.pk).state == State.UNCONFIRMED, what="closed")
    assert sim.transactions() == []  # nothing was ever sent
    assert Order.objects.get(pk=order.pk).payment_status == "unconfirmed"


def test_a_lost_dispatch_is_sent_by_the_sweep_while_fresh(sim: Simulator) -> None:
    from datetime import timedelta

    from django.utils import timezone

    item = product(stock=2)
    order, attempt = place({item.pk: 1}, token="lost-dispatch", push=False)  # the queue "loses" the task
    PaymentAttempt.objects.filter(pk=attempt.pk).update(created_at=timezone.now() - timedelta(seconds=15))
    reconcile_until(lambda: Order.objects.get(pk=order.pk).status == Order.Status.PAID, what="paid")
    assert len(sim.transactions()) == 1
