from __future__ import annotations

from typing import Any

import pytest
from django.test import Client

from kulipa.cart.services import SESSION_KEY as CART_SESSION_KEY
from kulipa.payments import tasks
from kulipa.payments.models import PaymentAttempt


@pytest.fixture
def payment_calls(monkeypatch: pytest.MonkeyPatch) -> list[dict[str, Any]]:
    """Record the pushes the checkout queues (after commit) instead of queueing them; the attempt rows are real."""
    calls: list[dict[str, Any]] = []

    def record(attempt_id: int) -> None:
        attempt = PaymentAttempt.objects.select_related("order").get(pk=attempt_id)
        calls.append({"order": attempt.order, "attempt": attempt})

    monkeypatch.setattr(tasks, "queue_dispatch", record)
    return calls


def put_in_cart(client: Client, quantities: dict[int, int]) -> None:
    session = client.session
    session[CART_SESSION_KEY] = {str(pid): qty for pid, qty in quantities.items()}
    session.save()
