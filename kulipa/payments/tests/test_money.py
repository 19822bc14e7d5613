"""Late money, reversals through the admin, mark-paid races, the capacity of the push engine, access rules."""

from __future__ import annotations

import functools
import threading
from datetime import timedelta
from decimal import Decimal
from typing import Any

import pytest
from django.db import connection
from django.test import Client
from django.urls import reverse
from django.utils import timezone

from kulipa.accounts.models import User
from kulipa.catalog.models import Product
from kulipa.inventory.models import StockReservation
from kulipa.orders.models import Order
from kulipa.orders.tests.factories import snapshot_for
from kulipa.payments import services, tasks
from kulipa.payments.models import AttentionItem, PaymentAttempt, PaymentEvent, Reversal
from kulipa.payments.tasks import engine as get_engine
from kulipa.payments.tests.conftest import Simulator, checkout, place, product, status, wait_for, wait_status

State = PaymentAttempt.State
Kind = PaymentEvent.Kind
PHONE_00 = "258840000000"


def expire_while_pushing(order: Order) -> PaymentAttempt:
    """The reconciler gave up on the attempt (not found past deadline + margin) and the order expired, releasing
    its stock; the customer's phone still shows the prompt."""
    attempt = order.payment_attempts.get()
    PaymentAttempt.objects.filter(pk=attempt.pk).update(state=State.UNCONFIRMED, finished_at=timezone.now())
    past = timezone.now() - timedelta(minutes=1)
    Order.objects.filter(pk=order.pk).update(expires_at=past)
    order.reservations.update(expires_at=past)
    assert services.orders_expire_due() == 1
    assert Order.objects.get(pk=order.pk).status == Order.Status.EXPIRED
    return attempt


@pytest.mark.parametrize("stock_left", [True, False])
def test_late_payment_after_expiry(sim: Simulator, stock_left: bool) -> None:
    sim.configure(push_window=30)
    client = Client()
    item = product(stock=1)
    order = checkout(client, {item.pk: 1}, msisdn=PHONE_00)
    prompt = wait_for(lambda: sim.prompts(PHONE_00), what="prompt")[0]
    attempt = expire_while_pushing(order)
    if not stock_left:  # someone else bought the last unit meanwhile
        other, other_attempt = services.checkout_place(
            quantities={item.pk: 1},
            confirmed=snapshot_for({item.pk: 1}),
            customer_name="B",
            msisdn="258840000001",
            email="",
            delivery_address="",
            user=None,
            session_key="b",
            checkout_token="other-buyer",
        )
        assert other_attempt is not None
        tasks.dispatch_payment(other_attempt.pk)
        wait_for(lambda: Order.objects.get(pk=other.pk).status == Order.Status.PAID, what="other paid")
    sim.answer(PHONE_00, prompt["conversation_id"], approve=True)  # the money arrives late
    wait_for(lambda: PaymentAttempt.objects.get(pk=attempt.pk).state == State.SUCCEEDED, what="late success")
    order.refresh_from_db()
    attempt.refresh_from_db()
    assert order.paid_at is not None and order.mpesa_transaction_id == attempt.transaction_id
    if stock_left:
        assert order.status == Order.Status.PAID
        assert Product.objects.get(pk=item.pk).stock_on_hand == 0
        decision = order.payment_events.get(kind=Kind.DECISION)
        assert decision.payload["stock"] == "reacquired"
        assert not AttentionItem.objects.exists()
        return
    assert order.status == Order.Status.NEEDS_ATTENTION
    assert "disponíveis" in order.attention_reason
    flagged = AttentionItem.objects.get()
    assert flagged.kind == AttentionItem.Kind.LATE_PAYMENT and flagged.propose_reversal
    assert flagged.attempt_id == attempt.pk
    assert Product.objects.get(pk=item.pk).stock_on_hand == 0  # not decremented twice, never negative
    data = status(client, order)
    assert data["paid"] is True and data["status"] == "needs_attention" and "verificar" in data["message"]

    # Staff reverses it from the order's page in the back office; the reversal goes to the simulator.
    staff = User.objects.create_superuser(email="admin@example.com", password="pw-123456-x")
    admin = Client()
    admin.force_login(staff)
    confirm = reverse("admin:orders_order_reverse", args=[order.pk, attempt.pk])
    reverse_all = {"amount": str(order.total), "reason": "pago sem stock", "restock": "yes", "confirm": "1"}
    response = admin.post(confirm, reverse_all)
    assert response.status_code == 302
    wait_for(
        lambda: Reversal.objects.filter(attempt=attempt, state=Reversal.State.SUCCEEDED).exists(),
        what="reversal done",
    )
    order.refresh_from_db()
    assert order.status == Order.Status.CANCELLED and order.payment_status == Order.PaymentStatus.REFUNDED
    assert order.payment_events.filter(kind=Kind.REVERSAL).count() == 2  # requested, result
    tx = sim.transaction(attempt.third_party_reference)
    assert tx is not None and tx["reversed"] is True and Decimal(tx["reversed_amount"]) == order.total
    # A second click on "reverse" sends nothing more (nothing is left to reverse).
    assert admin.post(confirm, reverse_all).status_code == 400
    assert len([t for t in sim.transactions() if t["kind"] == "reversal"]) == 1
    assert "revertido" in status(client, order)["message"] or "devolvido" in status(client, order)["message"]


def test_admin_is_read_only_and_recheck_queues_a_query(sim: Simulator) -> None:
    order = checkout(Client(), {product(stock=1).pk: 1}, msisdn="258840000001")
    wait_for(lambda: Order.objects.get(pk=order.pk).status == Order.Status.PAID, what="paid")
    attempt = order.payment_attempts.get()
    event = order.payment_events.first()
    assert event is not None
    staff = User.objects.create_superuser(email="admin2@example.com", password="pw-123456-x")
    admin = Client()
    admin.force_login(staff)
    page = admin.get(reverse("admin:orders_order_change", args=[order.pk]))
    assert page.status_code == 200 and attempt.third_party_reference in page.content.decode()
    for name, obj in (("paymentattempt", attempt), ("paymentevent", event)):
        assert admin.get(reverse(f"admin:payments_{name}_changelist")).status_code == 200
        assert admin.post(reverse(f"admin:payments_{name}_delete", args=[obj.pk]), {"post": "yes"}).status_code == 403
        view = admin.get(reverse(f"admin:payments_{name}_change", args=[obj.pk])).content.decode()
        assert 'name="_save"' not in view
    assert admin.get(reverse("admin:payments_callbackdelivery_changelist")).status_code == 200
    event.summary = "rewritten"
    with pytest.raises(RuntimeError):
        event.save()
    # "recheck status" on a failed attempt queues a forced status query (it finds nothing to change here).
    failed = checkout(Client(), {product(stock=1).pk: 1}, msisdn="258840000005")
    wait_for(lambda: failed.payment_attempts.get().state == State.FAILED, what="failed")
    admin.post(
        reverse("admin:orders_order_changelist"), {"action": "recheck_payment_status", "_selected_action": [failed.pk]}
    )
    assert failed.payment_events.filter(kind=Kind.STATUS_QUERY).count() == 1
    assert failed.payment_attempts.get().state == State.FAILED


def test_concurrent_mark_paid_pays_once_and_takes_stock_once(sim: Simulator) -> None:
    item = product(stock=3)
    order, attempt = place({item.pk: 2}, token="race-mark-paid", push=False)
    assert services.payment_attempt_claim_push(attempt_id=attempt.pk) is not None  # sent, answer pending
    n = 8
    barrier = threading.Barrier(n)
    results: list[Any] = []

    def confirm(i: int) -> None:
        try:
            barrier.wait(10)
            results.append(
                services.order_mark_paid(
                    attempt_id=attempt.pk, transaction_id="TXRACE1", confirmed_amount=order.total, source=f"t{i}"
                )
            )
        except Exception as exc:  # reported below
            results.append(exc)
        finally:
            connection.close()

    threads = [threading.Thread(target=confirm, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not any(t.is_alive() for t in threads)
    assert all(isinstance(r, services.PaidResult) for r in results), results
    assert sum(r.changed for r in results) == 1
    assert Product.objects.get(pk=item.pk).stock_on_hand == 1
    assert Order.objects.get(pk=order.pk).status == Order.Status.PAID
    assert order.payment_events.filter(kind=Kind.DECISION).count() == 1
    assert set(order.reservations.values_list("state", flat=True)) == {StockReservation.State.COMMITTED}


def test_amount_mismatch_needs_attention(sim: Simulator) -> None:
    item = product(stock=1)
    order, attempt = place({item.pk: 1}, token="mismatch", push=False)
    assert services.payment_attempt_claim_push(attempt_id=attempt.pk) is not None  # sent, answer pending
    result = services.order_mark_paid(
        attempt_id=attempt.pk, transaction_id="TXLESS1", confirmed_amount=Decimal("1.00"), source="test"
    )
    assert result.outcome is services.PaidOutcome.NEEDS_ATTENTION
    order.refresh_from_db()
    assert order.status == Order.Status.NEEDS_ATTENTION and "diferente do total" in order.attention_reason
    assert Product.objects.get(pk=item.pk).stock_on_hand == 1


def test_push_engine_holds_300_pending_pushes(sim: Simulator) -> None:
    """300 customers looking at the prompt at once (scenario 00), all held by one engine; then half approve
    and half decline on the phone API. (The 2,000 measurement is in benchmarks/.)"""
    n = 300
    sim.configure(push_window=120)
    item = product(stock=n)
    numbers = [f"25884{i:05d}00" for i in range(n)]
    orders = []
    for i, msisdn in enumerate(numbers):
        order, _attempt = place({item.pk: 1}, msisdn=msisdn, token=f"capacity-{i}")
        orders.append(order)
    engine = get_engine()
    assert engine.wait_holding(n, timeout=60), engine.stats()
    assert PaymentAttempt.objects.filter(state=State.PUSHING).count() == n
    for i, msisdn in enumerate(numbers):
        prompt = wait_for(functools.partial(sim.prompts, msisdn), what=f"prompt {msisdn}")[0]
        sim.answer(msisdn, prompt["conversation_id"], approve=i % 2 == 0)
    assert engine.wait_idle(60), engine.stats()
    assert PaymentAttempt.objects.filter(state=State.SUCCEEDED).count() == n // 2
    assert PaymentAttempt.objects.filter(state=State.DECLINED).count() == n // 2
    assert Product.objects.get(pk=item.pk).stock_on_hand == n // 2


def test_another_customers_order_is_404(sim: Simulator) -> None:
    owner = User.objects.create_user(email="owner@example.com", password="pw-123456-x")
    stranger = User.objects.create_user(email="stranger@example.com", password="pw-123456-x")
    mine = Client()
    mine.force_login(owner)
    order = checkout(mine, {product(stock=1).pk: 1}, msisdn="258840000003")
    assert mine.get(order.get_absolute_url()).status_code == 200
    other = Client()
    other.force_login(stranger)
    for client in (other, Client()):
        assert client.get(order.get_absolute_url()).status_code == 404
        assert client.get(reverse("payments:status", kwargs={"public_id": order.public_id})).status_code == 404
        retry = client.post(reverse("payments:retry", kwargs={"public_id": order.public_id}), {"after": ""})
        assert retry.status_code == 404
    assert Client().get(reverse("payments:status", kwargs={"public_id": "nope"})).status_code == 404
    wait_status(mine, order, payment_status="declined")
    assert order.payment_attempts.count() == 1


@pytest.mark.parametrize("reached_gateway", [True, False])
def test_a_reversal_whose_answer_was_lost_is_settled_by_the_sweep(sim: Simulator, reached_gateway: bool) -> None:
    """The worker died after (or before) sending the reversal: the sweep asks M-Pesa by the reversal's own
    reference, never sends it again, and only a reversal M-Pesa confirms counts as done."""
    from kulipa.payments import gateway, tasks

    order = checkout(Client(), {product(stock=1).pk: 1}, msisdn="258840000001")
    wait_for(lambda: Order.objects.get(pk=order.pk).status == Order.Status.PAID, what="paid")
    attempt = order.payment_attempts.get()
    reversal = services.payment_reversal_request(attempt_id=attempt.pk, requested_by="staff", reason="test")
    reference = reversal.reference
    long_ago = timezone.now() - timedelta(minutes=10)
    Reversal.objects.filter(pk=reversal.pk).update(state=Reversal.State.SENDING, sent_at=long_ago)
    if reached_gateway:  # what the dead worker had sent
        sent = gateway.client().reversal(transaction_id=attempt.transaction_id, third_party_reference=reference)
        assert sent.ok

    tasks.payments_sweep.call_local()

    reversal.refresh_from_db()
    order.refresh_from_db()
    reversals = [t for t in sim.transactions() if t["kind"] == "reversal"]
    assert len(reversals) == (1 if reached_gateway else 0)  # never resent
    if reached_gateway:
        assert reversal.state == Reversal.State.SUCCEEDED
        assert order.status == Order.Status.CANCELLED
        assert order.payment_status == Order.PaymentStatus.REFUNDED
    else:
        assert reversal.state == Reversal.State.UNKNOWN  # not known: still asked, never guessed
        assert order.status == Order.Status.PAID
    assert order.payment_events.filter(kind=Kind.STATUS_QUERY, summary__startswith="reversal query").count() == 1
