"""The pay request's database work: one transaction with the order, its lines, its reservations, the first
attempt and its event; a handful of statements around it. Before this was counted it took 33 (23 without
BEGIN/COMMIT/SAVEPOINT) on SQLite; then 16; now 13 (issue 9: no savepoint inside the checkout's transaction, the
session saved in one autocommit statement — kulipa/core/sessions.py)."""

from __future__ import annotations

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.urls import reverse

from kulipa.orders.models import Order
from kulipa.orders.tests.conftest import put_in_cart
from kulipa.orders.tests.factories import product_make
from kulipa.payments.models import PaymentAttempt, PaymentEvent

TRANSACTION_CONTROL = ("BEGIN", "COMMIT", "ROLLBACK", "SAVEPOINT", "RELEASE")

# token check, session, product lock, order, lines, reserved stock, units held by this customer (abuse limits),
# reservations, attempt, event, session save; on PostgreSQL also the customer's advisory locks (one statement)
STATEMENTS = 11
# BEGIN and COMMIT of the one checkout transaction; no SAVEPOINT/RELEASE, no transaction around the session save.
TRANSACTION_STATEMENTS = 2


@pytest.mark.django_db(transaction=True)
def test_pay_request_statements(client, monkeypatch):
    from kulipa.payments import tasks

    queued: list[int] = []
    monkeypatch.setattr(tasks, "queue_dispatch", queued.append)
    a, b = product_make(), product_make()
    put_in_cart(client, {a.pk: 1, b.pk: 2})
    page = client.get(reverse("orders:checkout"))
    data = {
        "customer_name": "Ana Cossa",
        "msisdn": "84 123 4567",
        "email": "",
        "delivery_address": "",
        "checkout_token": page.context["form"].initial["checkout_token"],
        "snapshot": page.context["snapshot"],
    }
    with CaptureQueriesContext(connection) as ctx:
        response = client.post(reverse("orders:checkout"), data)
    assert response.status_code == 303
    statements = [q["sql"] for q in ctx.captured_queries if not q["sql"].startswith(TRANSACTION_CONTROL)]
    expected = STATEMENTS + (1 if connection.vendor == "postgresql" else 0)
    assert len(statements) <= expected, "\n".join(s[:120] for s in statements)
    control = [q["sql"] for q in ctx.captured_queries if q["sql"].startswith(TRANSACTION_CONTROL)]
    assert len(control) == TRANSACTION_STATEMENTS, control
    assert len(ctx) <= expected + TRANSACTION_STATEMENTS
    # …and they did the whole job, in one transaction: everything is there, the push queued once.
    order = Order.objects.get()
    attempt = PaymentAttempt.objects.get(order=order)
    assert PaymentEvent.objects.filter(order=order, attempt=attempt, kind="request").count() == 1
    assert order.reservations.count() == 2 and order.lines.count() == 2
    assert queued == [attempt.pk]
    print(f"pay request: {len(ctx)} queries, {len(statements)} statements")  # reported in the closing note
