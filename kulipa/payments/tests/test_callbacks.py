"""Async mode and the callback endpoint: the simulator posts results to a live server of the shop."""

from __future__ import annotations

import json
import threading
from typing import Any

import httpx
import pytest
from django.test import Client

from kulipa.catalog.models import Product
from kulipa.orders.models import Order
from kulipa.payments.models import (
    REJECTED_BODY_BYTES,
    CallbackDelivery,
    CallbackRejection,
    PaymentAttempt,
    PaymentEvent,
)
from kulipa.payments.tasks import engine as get_engine
from kulipa.payments.tests.conftest import (
    Simulator,
    checkout,
    product,
    reconcile_until,
    shop_mpesa_settings,
    wait_for,
    wait_status,
)

State = PaymentAttempt.State
Kind = PaymentEvent.Kind
CALLBACK = "/api/mpesa/callback"
TOKEN = "pathT0ken42"


@pytest.fixture
def async_mode(sim: Simulator, settings: Any, live_server: Any) -> Simulator:
    """Async mode: the simulator answers the push at once and posts the result to the live shop, on the secret
    path (so its TransactionID is trusted once a status query confirmed the payment)."""
    settings.MPESA = shop_mpesa_settings(sim.sandbox, MODE="async", CALLBACK_PATH_TOKEN=TOKEN)
    sim.configure(callback_url=f"{live_server.url}{CALLBACK}/{TOKEN}", allow_insecure_callbacks=True)
    return sim


def all_deliveries_processed(count: int) -> bool:
    rows = list(CallbackDelivery.objects.values_list("outcome", "processed_at"))
    return len(rows) >= count and all(processed is not None for _, processed in rows)


def test_callback_pays_once_even_when_delivered_three_times(async_mode: Simulator) -> None:
    async_mode.faults(duplicate_callbacks=3)
    client = Client()
    item = product(stock=4)
    order = checkout(client, {item.pk: 2}, msisdn="258840000001")
    wait_status(client, order, status="paid")
    wait_for(lambda: all_deliveries_processed(3), what="3 deliveries processed")
    attempt = order.payment_attempts.get()
    assert attempt.state == State.SUCCEEDED and attempt.mode == "async"
    tx = async_mode.transaction(attempt.third_party_reference)
    assert tx is not None and attempt.transaction_id == tx["transaction_id"]
    assert order.payment_events.filter(kind=Kind.DECISION).count() == 1
    assert order.payment_events.filter(kind=Kind.CALLBACK).count() == 3
    assert order.payment_events.filter(kind=Kind.STATUS_QUERY).count() >= 1
    assert Product.objects.get(pk=item.pk).stock_on_hand == 2
    assert {d["state"] for d in async_mode.callbacks()} == {"delivered"}
    delivery = CallbackDelivery.objects.first()
    assert delivery is not None and delivery.remote_ip == "127.0.0.1" and "input_ResultCode" in delivery.body


def test_concurrent_callbacks_racing_the_worker_change_nothing_twice(async_mode: Simulator, live_server: Any) -> None:
    """The simulator's own callbacks (duplicated) race the worker recording the push's answer, and eight copies
    of the same callback are replayed at once from threads: one payment, one decision, stock taken once."""
    async_mode.faults(duplicate_callbacks=2)
    client = Client()
    item = product(stock=1)
    order = checkout(client, {item.pk: 1}, msisdn="258840000001")
    attempt = order.payment_attempts.get()
    original = wait_for(lambda: [d for d in async_mode.callbacks() if d["state"] == "delivered"], what="callback")
    payload = original[0]["payload"]
    barrier = threading.Barrier(8)
    statuses: list[int] = []

    def replay() -> None:
        barrier.wait(10)
        response = httpx.post(f"{live_server.url}{CALLBACK}/{TOKEN}", json=payload, timeout=30)
        statuses.append(response.status_code)

    threads = [threading.Thread(target=replay) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert statuses == [200] * 8
    wait_for(lambda: all_deliveries_processed(10), timeout=30, what="10 deliveries processed")
    get_engine().wait_idle(10)
    order.refresh_from_db()
    assert order.status == Order.Status.PAID
    assert PaymentAttempt.objects.get(pk=attempt.pk).state == State.SUCCEEDED
    assert order.payment_events.filter(kind=Kind.DECISION).count() == 1
    assert Product.objects.get(pk=item.pk).stock_on_hand == 0
    assert order.payment_events.filter(kind=Kind.RESPONSE).count() == 1


def test_lost_callback_is_reconciled_after_the_push_window(async_mode: Simulator) -> None:
    async_mode.faults(drop_callbacks=1)
    client = Client()
    item = product(stock=1)
    order = checkout(client, {item.pk: 1}, msisdn="258840000001")
    attempt = order.payment_attempts.get()
    wait_for(lambda: PaymentAttempt.objects.get(pk=attempt.pk).state == State.AWAITING_CALLBACK, what="accepted")
    assert wait_status(client, order, payment_status="pending")["seconds_left"] is not None
    reconcile_until(lambda: Order.objects.get(pk=order.pk).status == Order.Status.PAID, what="paid by query")
    assert CallbackDelivery.objects.count() == 0


@pytest.mark.parametrize(
    ("suffix", "state", "payment_status"),
    [("02", State.INSUFFICIENT_FUNDS, "insufficient_funds"), ("03", State.DECLINED, "declined")],
)
def test_async_failure_arrives_by_callback(async_mode: Simulator, suffix: str, state: str, payment_status: str) -> None:
    client = Client()
    item = product(stock=1)
    order = checkout(client, {item.pk: 1}, msisdn=f"2588400000{suffix}")
    data = wait_status(client, order, payment_status=payment_status)
    assert data["can_retry"] is True
    assert order.payment_attempts.get().state == state


# --- the endpoint itself (posted by the test client: no simulator callback needed) ------------------------
def post_callback(client: Client, body: Any, path: str = CALLBACK, **extra: Any) -> Any:
    content = body if isinstance(body, bytes | str) else json.dumps(body)
    return client.post(path, content, content_type="application/json", **extra)


def forged(attempt: PaymentAttempt, code: str = "INS-0") -> dict[str, str]:
    return {
        "input_OriginalConversationID": attempt.conversation_id or "0" * 32,
        "input_TransactionID": "FORGED123",
        "input_ThirdPartyReference": attempt.third_party_reference,
        "input_ResultCode": code,
        "input_ResultDesc": "Request processed successfully",
    }


def test_forged_success_callback_for_an_unpaid_order_changes_nothing(sim: Simulator) -> None:
    """The customer is still looking at the prompt (scenario 00): a forged INS-0 is acknowledged, confirmed by a
    status query (N/A: not completed) and changes nothing. Same for an attempt that already failed."""
    sim.configure(push_window=30)
    shopper = Client()
    item = product(stock=1)
    pending_order = checkout(shopper, {item.pk: 1}, msisdn="258840000000")
    pending = pending_order.payment_attempts.get()
    wait_for(lambda: sim.prompts("258840000000"), what="prompt")
    failed_order = checkout(Client(), {product(stock=1).pk: 1}, msisdn="258840000003")
    wait_for(lambda: failed_order.payment_attempts.get().state == State.DECLINED, what="declined")
    failed = failed_order.payment_attempts.get()

    attacker = Client()
    for attempt in (pending, failed):
        response = post_callback(attacker, forged(attempt))
        assert response.status_code == 200
        assert response.json()["output_ResponseCode"] == "0"
        assert response.json()["output_ResponseDesc"] == "Successfully Accepted Result"
    wait_for(lambda: all_deliveries_processed(2), what="processed")
    for order, attempt, state in ((pending_order, pending, State.PUSHING), (failed_order, failed, State.DECLINED)):
        order.refresh_from_db()
        assert order.status == Order.Status.AWAITING_PAYMENT and order.paid_at is None
        assert PaymentAttempt.objects.get(pk=attempt.pk).state == state
        assert not order.payment_events.filter(kind=Kind.DECISION, summary__startswith="paid").exists()
        assert order.payment_events.filter(kind=Kind.CALLBACK).count() == 1
        assert order.payment_events.filter(kind=Kind.STATUS_QUERY).count() == 1
    assert Product.objects.get(pk=item.pk).stock_on_hand == 1
    # The real answer still works afterwards.
    prompt = sim.prompts("258840000000")[0]
    sim.answer("258840000000", prompt["conversation_id"], approve=True)
    wait_status(shopper, pending_order, status="paid")
    assert PaymentAttempt.objects.get(pk=pending.pk).transaction_id not in ("", "FORGED123")


def test_async_mode_without_a_path_token_refuses_callbacks_and_settles_by_status_query(
    sim: Simulator, settings: Any, live_server: Any
) -> None:
    """Async mode with no ``CALLBACK_PATH_TOKEN``: the gateway's callbacks on the tokenless path are refused (404)
    and counted, whoever sends them; the payment still settles by status query after the push window, and no
    transaction id nobody vouched for is recorded (so no reversal is offered against one)."""
    settings.MPESA = shop_mpesa_settings(sim.sandbox, MODE="async")
    sim.configure(callback_url=f"{live_server.url}{CALLBACK}", allow_insecure_callbacks=True)
    client = Client()
    order = checkout(client, {product(stock=1).pk: 1}, msisdn="258840000001")
    wait_for(lambda: [d for d in sim.callbacks() if d["state"] == "failed"], what="the simulator gives up")
    reconcile_until(lambda: Order.objects.get(pk=order.pk).status == Order.Status.PAID, what="paid by query")
    delivery = sim.callbacks()[0]
    assert {a["status"] for a in delivery["attempts"]} == {404}
    assert CallbackRejection.objects.get(reason="no_token").count == len(delivery["attempts"])
    assert CallbackDelivery.objects.count() == 0
    assert not order.payment_events.filter(kind=Kind.CALLBACK).exists()
    attempt = order.payment_attempts.get()
    assert attempt.state == State.SUCCEEDED and attempt.transaction_id == ""


def test_unknown_reference_is_refused_with_no_side_effect(sim: Simulator) -> None:
    order = checkout(Client(), {product(stock=1).pk: 1}, msisdn="258840000003")
    wait_for(lambda: order.payment_attempts.get().state == State.DECLINED, what="declined")
    events_before = PaymentEvent.objects.count()
    body = {
        "input_OriginalConversationID": "f" * 32,
        "input_TransactionID": "abc123",
        "input_ThirdPartyReference": "KNOSUCHREF000000",
        "input_ResultCode": "INS-0",
        "input_ResultDesc": "ok",
    }
    response = post_callback(Client(), body)
    assert response.status_code == 404
    delivery = CallbackDelivery.objects.get()
    assert delivery.outcome == "unknown_reference" and delivery.attempt is None
    assert delivery.state == CallbackDelivery.State.REJECTED
    assert json.loads(delivery.body) == body
    assert PaymentEvent.objects.count() == events_before
    assert CallbackRejection.objects.get(reason="unknown_reference").count == 1
    # A big one with padding is kept only in part: unknown senders cannot fill the disk.
    padded = {**body, "input_ResultDesc": "x" * 50_000}
    assert post_callback(Client(), padded).status_code == 404
    kept = CallbackDelivery.objects.latest("id")
    assert len(kept.body.encode()) <= REJECTED_BODY_BYTES
    assert CallbackRejection.objects.get(reason="unknown_reference").count == 2


@pytest.mark.parametrize(
    "body",
    [
        b"not json",
        b"[1, 2]",
        {"input_ThirdPartyReference": "KABC"},  # no result code
        {"input_ResultCode": "INS-0"},  # no reference
        {"input_ResultCode": "INS-0", "input_ThirdPartyReference": 12},
        {"input_ResultCode": "INS-0", "input_ThirdPartyReference": "K' OR 1=1"},
        b"[" * 20_000 + b"]" * 20_000,  # nested deeper than the parser's recursion limit
        b'{"a":' * 6_000 + b"1" + b"}" * 6_000,
    ],
)
def test_malformed_body_is_refused_stored_capped_and_counted(sim: Simulator, body: Any) -> None:
    response = post_callback(Client(), body, HTTP_COOKIE="sessionid=secret", HTTP_AUTHORIZATION="Bearer x")
    assert response.status_code == 400
    delivery = CallbackDelivery.objects.get()
    assert delivery.state == CallbackDelivery.State.REJECTED
    assert len(delivery.body.encode()) <= REJECTED_BODY_BYTES  # garbage cannot fill the disk
    assert not {k.lower() for k in delivery.headers} & {"cookie", "authorization"}
    assert PaymentEvent.objects.count() == 0
    assert CallbackRejection.objects.get().count == 1
    post_callback(Client(), body)
    assert CallbackRejection.objects.get().count == 2


def test_callback_only_accepts_post(sim: Simulator) -> None:
    assert Client().get(CALLBACK).status_code == 405


def test_secret_path_token_and_ip_allow_list(sim: Simulator, settings: Any) -> None:
    order = checkout(Client(), {product(stock=1).pk: 1}, msisdn="258840000003")
    attempt = wait_for(lambda: order.payment_attempts.filter(state=State.DECLINED).first(), what="declined")
    settings.MPESA = shop_mpesa_settings(sim.sandbox, CALLBACK_PATH_TOKEN="s3cr3tT0ken")
    client = Client()
    assert post_callback(client, forged(attempt)).status_code == 404
    assert post_callback(client, forged(attempt), f"{CALLBACK}/wrong").status_code == 404
    assert CallbackDelivery.objects.count() == 0
    assert CallbackRejection.objects.get(reason="bad_token").count == 2
    assert post_callback(client, forged(attempt), f"{CALLBACK}/s3cr3tT0ken").status_code == 200

    settings.MPESA = shop_mpesa_settings(sim.sandbox, CALLBACK_ALLOWED_IPS=["10.9.8.7"])
    assert post_callback(client, forged(attempt)).status_code == 403
    assert CallbackRejection.objects.get(reason="ip_not_allowed").count == 1
    assert post_callback(client, forged(attempt), REMOTE_ADDR="10.9.8.7").status_code == 200
    assert post_callback(client, forged(attempt), f"{CALLBACK}/s3cr3tT0ken").status_code == 404
    assert CallbackRejection.objects.get(reason="bad_token").count == 3
    wait_for(lambda: all_deliveries_processed(2), what="processed")
    assert CallbackDelivery.objects.count() == 2
    assert PaymentAttempt.objects.get(pk=attempt.pk).state == State.DECLINED
