"""What a confirmed payment does to an order in each state, and what a reversal does to the order and its stock.
Against the real simulator, through HTTP where a customer or staff member would act."""

from __future__ import annotations

from datetime import timedelta
from decimal import Decimal
from typing import Any

import pytest
from django.test import Client
from django.urls import reverse
from django.utils import timezone

from kulipa.catalog.models import Product
from kulipa.inventory.models import StockReservation
from kulipa.orders.models import Order
from kulipa.payments import services, tasks
from kulipa.payments.models import AttentionItem, PaymentAttempt, PaymentEvent, Reversal
from kulipa.payments.tests.conftest import Simulator, checkout, place, product, reconcile_until, status, wait_for

State = PaymentAttempt.State
PHONE_00 = "258840000000"


def give_up_on(attempt: PaymentAttempt) -> None:
    """Let the shop settle a push that is still held: its check falls due and the sweep closes it."""
    PaymentAttempt.objects.filter(pk=attempt.pk).update(next_check_at=timezone.now() - timedelta(seconds=1))
    reconcile_until(lambda: PaymentAttempt.objects.get(pk=attempt.pk).state == State.UNCONFIRMED, what="closed")


@pytest.mark.parametrize("stock_left", [True, False])
def test_payment_of_a_cancelled_order_follows_the_late_payment_policy(sim: Simulator, stock_left: bool) -> None:
    """The customer gave up (the prompt seemed lost) and cancelled; then approved the old prompt after all.
    The money is real: with the stock still there the order is paid after all; without it a person is told and a
    reversal is proposed — the order never silently becomes "paid" without its goods."""
    sim.configure(push_window=30)
    client = Client()
    item = product(stock=1)
    order = checkout(client, {item.pk: 1}, msisdn=PHONE_00)
    prompt = wait_for(lambda: sim.prompts(PHONE_00), what="prompt")[0]
    attempt = order.payment_attempts.get()
    give_up_on(attempt)
    assert status(client, order)["can_cancel"] is True
    response = client.post(reverse("payments:cancel", kwargs={"public_id": order.public_id}))
    assert response.status_code == 302
    order.refresh_from_db()
    assert order.status == Order.Status.CANCELLED
    assert order.reservations.get().state == StockReservation.State.RELEASED
    if not stock_left:
        other, _ = place({item.pk: 1}, msisdn="258840000001", token="other-buyer")
        wait_for(lambda: Order.objects.get(pk=other.pk).status == Order.Status.PAID, what="other paid")

    sim.answer(PHONE_00, prompt["conversation_id"], approve=True)  # the held push now answers: paid

    wait_for(lambda: PaymentAttempt.objects.get(pk=attempt.pk).state == State.SUCCEEDED, what="late success")
    order.refresh_from_db()
    assert order.paid_at is not None
    assert Product.objects.get(pk=item.pk).stock_on_hand == 0  # sold once, never below zero
    if stock_left:
        assert order.status == Order.Status.PAID
        assert order.reservations.get().state == StockReservation.State.COMMITTED
        assert not AttentionItem.objects.exists()
    else:
        assert order.status == Order.Status.NEEDS_ATTENTION
        flagged = AttentionItem.objects.get()
        assert flagged.kind == AttentionItem.Kind.LATE_PAYMENT and flagged.propose_reversal
        assert "verificar" in status(client, order)["message"]


def test_cancel_is_refused_while_a_payment_is_in_flight(sim: Simulator) -> None:
    sim.configure(push_window=30)
    client = Client()
    order = checkout(client, {product(stock=1).pk: 1}, msisdn=PHONE_00)
    prompt = wait_for(lambda: sim.prompts(PHONE_00), what="prompt")[0]
    assert status(client, order)["can_cancel"] is False
    response = client.post(reverse("payments:cancel", kwargs={"public_id": order.public_id}), follow=True)
    assert "pagamento em curso" in response.content.decode()
    assert Order.objects.get(pk=order.pk).status == Order.Status.AWAITING_PAYMENT
    assert Client().post(reverse("payments:cancel", kwargs={"public_id": "nope"})).status_code == 404
    sim.answer(PHONE_00, prompt["conversation_id"], approve=False)
    wait_for(lambda: status(client, order)["can_cancel"], what="declined: cancel offered")
    client.post(reverse("payments:cancel", kwargs={"public_id": order.public_id}))
    assert Order.objects.get(pk=order.pk).status == Order.Status.CANCELLED


def paid_order(stock: int = 3, quantity: int = 2) -> tuple[Order, PaymentAttempt, Product]:
    item = product(price="100.00", stock=stock)
    order, attempt = place({item.pk: quantity})
    wait_for(lambda: Order.objects.get(pk=order.pk).status == Order.Status.PAID, what="paid")
    attempt.refresh_from_db()
    assert Product.objects.get(pk=item.pk).stock_on_hand == stock - quantity
    return order, attempt, item


def reverse_now(attempt: PaymentAttempt, **kwargs: Any) -> Reversal:
    reversal = services.payment_reversal_request(attempt_id=attempt.pk, requested_by="financeiro", **kwargs)
    tasks.reverse_payment(reversal.pk)
    reversal.refresh_from_db()
    return reversal


def test_full_reversal_returns_the_stock_and_cancels_the_order(sim: Simulator) -> None:
    order, attempt, item = paid_order()
    reversal = reverse_now(attempt, reason="produto danificado")
    assert reversal.state == Reversal.State.SUCCEEDED and reversal.restock is True
    order.refresh_from_db()
    assert order.status == Order.Status.CANCELLED and order.payment_status == Order.PaymentStatus.REFUNDED
    assert Product.objects.get(pk=item.pk).stock_on_hand == 3  # back on the shelf
    assert set(order.reservations.values_list("state", flat=True)) == {StockReservation.State.RETURNED}
    restocked = order.payment_events.get(kind=PaymentEvent.Kind.DECISION, payload__decision="restocked")
    assert restocked.payload["units"] == {str(item.pk): 2}
    tx = sim.known_transaction(attempt.third_party_reference)
    assert Decimal(tx["reversed_amount"]) == Decimal("200.00")
    assert "devolvido" in status(Client(), order)["message"]
    # Nothing is left to give back; asking again is refused and sends nothing.
    with pytest.raises(services.ReversalNotAllowed):
        services.payment_reversal_request(attempt_id=attempt.pk, requested_by="financeiro")
    assert len([t for t in sim.transactions() if t["kind"] == "reversal"]) == 1


@pytest.mark.parametrize("restock", [None, True])
def test_partial_reversal_keeps_the_stock_unless_asked(sim: Simulator, restock: bool | None) -> None:
    order, attempt, item = paid_order()
    reversal = reverse_now(attempt, amount=Decimal("50.00"), reason="desconto", restock=restock)
    assert reversal.state == Reversal.State.SUCCEEDED
    order.refresh_from_db()
    assert order.status == Order.Status.PAID and order.payment_status == Order.PaymentStatus.PARTIALLY_REFUNDED
    expected_stock = 3 if restock else 1
    assert Product.objects.get(pk=item.pk).stock_on_hand == expected_stock
    assert order.payment_events.filter(payload__decision="restocked").exists() is bool(restock)
    # At most what is left can still go back: 150.00.
    with pytest.raises(services.ReversalNotAllowed):
        services.payment_reversal_request(attempt_id=attempt.pk, requested_by="f", amount=Decimal("150.01"))
    rest = reverse_now(attempt, amount=Decimal("150.00"), reason="resto", restock=False)
    assert rest.state == Reversal.State.SUCCEEDED
    order.refresh_from_db()
    assert order.status == Order.Status.CANCELLED and order.payment_status == Order.PaymentStatus.REFUNDED
    assert Decimal(sim.known_transaction(attempt.third_party_reference)["reversed_amount"]) == Decimal("200.00")


def test_a_second_payment_of_a_refunded_order_is_a_duplicate_and_changes_nothing(sim: Simulator) -> None:
    """A refunded (cancelled) order must not flip back to "paid" or "needs attention" when another payment of it
    is confirmed: that money is a duplicate, proposed for reversal."""
    order, attempt, item = paid_order()
    reverse_now(attempt, reason="cliente desistiu")
    order.refresh_from_db()
    assert order.status == Order.Status.CANCELLED
    second = PaymentAttempt.objects.create(
        order=order, third_party_reference="KDUPLICATE000001", msisdn=attempt.msisdn, amount=order.total, mode="sync"
    )
    assert services.payment_attempt_claim_push(attempt_id=second.pk) is not None
    result = services.order_mark_paid(
        attempt_id=second.pk, transaction_id="TXSECOND1", confirmed_amount=order.total, source="test"
    )
    assert result.outcome is services.PaidOutcome.DUPLICATE
    order.refresh_from_db()
    assert order.status == Order.Status.CANCELLED and order.payment_status == Order.PaymentStatus.REFUNDED
    assert Product.objects.get(pk=item.pk).stock_on_hand == 3
    flagged = AttentionItem.objects.get(attempt=second)
    assert flagged.kind == AttentionItem.Kind.DUPLICATE_PAYMENT and flagged.propose_reversal


def test_try_again_is_not_offered_when_a_push_no_longer_fits_before_the_hold_cap(sim: Simulator) -> None:
    """A push started seconds before the cap would lose its stock hold mid-prompt: the page offers a new order
    instead, and a retry posted anyway creates nothing."""
    client = Client()
    order = checkout(client, {product(stock=1).pk: 1}, msisdn="258840000003")
    wait_for(lambda: status(client, order)["can_retry"], what="declined: retry offered")
    attempt = order.payment_attempts.get()
    almost_capped = timezone.now() - timedelta(minutes=30) + timedelta(seconds=1)  # 1 s left, the window is 2 s
    Order.objects.filter(pk=order.pk).update(created_at=almost_capped)
    assert status(client, order)["can_retry"] is False
    response = client.post(
        reverse("payments:retry", kwargs={"public_id": order.public_id}), {"after": attempt.pk}, follow=True
    )
    assert "nova encomenda" in response.content.decode()
    assert order.payment_attempts.count() == 1
