"""Real threads on a barrier against the new dedup rules: one open reversal per attempt, one open attention item
per key, one worker per callback delivery, and two sweeps at once sending nothing twice."""

from __future__ import annotations

import json

from django.test import Client

from kulipa.orders.models import Order
from kulipa.orders.tests.factories import run_concurrently
from kulipa.payments import services, tasks
from kulipa.payments.models import AttentionItem, CallbackDelivery, PaymentAttempt, PaymentEvent, Reversal
from kulipa.payments.tests.conftest import Simulator, place, product, wait_for

N = 6


def paid(stock: int = 5) -> tuple[Order, PaymentAttempt]:
    order, attempt = place({product(stock=stock).pk: 1})
    wait_for(lambda: Order.objects.get(pk=order.pk).status == Order.Status.PAID, what="paid")
    attempt.refresh_from_db()
    return order, attempt


def oks(results: list[tuple[str, object]]) -> list[object]:
    errors = [value for kind, value in results if kind != "ok"]
    assert errors == [], errors
    return [value for _kind, value in results]


def test_concurrent_reversal_requests_make_one_reversal(sim: Simulator) -> None:
    _order, attempt = paid()
    results = oks(
        run_concurrently(
            lambda i: services.payment_reversal_request(attempt_id=attempt.pk, requested_by=f"staff{i}", reason="x"),
            N,
        )
    )
    assert Reversal.objects.count() == 1
    assert {r.pk for r in results if isinstance(r, Reversal)} == {Reversal.objects.get().pk}


def test_concurrent_raises_open_one_item(sim: Simulator) -> None:
    order, attempt = paid()
    oks(
        run_concurrently(
            lambda i: services.attention_raise(
                kind=AttentionItem.Kind.STUCK, key="race:1", order_id=order.pk, attempt_id=attempt.pk, reason=f"r{i}"
            ),
            N,
        )
    )
    assert AttentionItem.objects.filter(key="race:1", resolved_at__isnull=True).count() == 1


def test_one_worker_processes_a_callback_delivery(sim: Simulator) -> None:
    order, attempt = paid()
    body = {
        "input_OriginalConversationID": attempt.conversation_id or "c" * 32,
        "input_ThirdPartyReference": attempt.third_party_reference,
        "input_ResultCode": "INS-0",
        "input_TransactionID": attempt.transaction_id,
    }
    receipt = services.callback_receive(headers={}, body=json.dumps(body).encode(), remote_ip="127.0.0.1")
    assert receipt.status == 200
    outcomes = oks(run_concurrently(lambda _i: services.callback_process(delivery_id=receipt.delivery_id), N))
    assert outcomes.count("not_claimed") == N - 1
    assert CallbackDelivery.objects.get().state == CallbackDelivery.State.DONE
    assert PaymentEvent.objects.filter(order=order, kind=PaymentEvent.Kind.CALLBACK).count() == 1


def test_two_sweeps_at_once_send_nothing_twice(sim: Simulator) -> None:
    """Two workers run the minute sweep together: a lost dispatch is pushed once, a requested reversal is sent
    once, and the order is paid once."""
    from datetime import timedelta

    from django.utils import timezone

    order_a, attempt_a = place({product(stock=2).pk: 1}, push=False)  # its dispatch message was lost
    PaymentAttempt.objects.filter(pk=attempt_a.pk).update(created_at=timezone.now() - timedelta(seconds=15))
    _order_b, attempt_b = paid()
    reversal = services.payment_reversal_request(attempt_id=attempt_b.pk, requested_by="f", reason="x")
    Reversal.objects.filter(pk=reversal.pk).update(created_at=timezone.now() - timedelta(minutes=2))

    oks(run_concurrently(lambda _i: tasks.sweep(), 2))

    wait_for(lambda: Order.objects.get(pk=order_a.pk).status == Order.Status.PAID, what="lost dispatch paid")
    kinds = [t["kind"] for t in sim.transactions()]
    assert kinds.count("reversal") == 1
    refs = [t["third_party_reference"] for t in sim.transactions() if t["kind"] == "c2b"]
    assert sorted(refs) == sorted([attempt_a.third_party_reference, attempt_b.third_party_reference])
    assert Reversal.objects.get().state == Reversal.State.SUCCEEDED
    assert Client().get(order_a.get_absolute_url()).status_code == 200
