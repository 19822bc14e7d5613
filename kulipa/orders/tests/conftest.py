from __future__ import annotations

from typing import Any

import pytest
from django.test import Client

from kulipa.cart.services import SESSION_KEY as CART_SESSION_KEY
from kulipa.orders import views
from kulipa.orders.tests.factories import attempt_make
from kulipa.payments.models import PaymentAttempt


@pytest.fixture
def payment_calls(monkeypatch: pytest.MonkeyPatch) -> list[dict[str, Any]]:
    """Replace the hand-off to kulipa.payments with a recorder that, like the real one, writes a QUEUED attempt
    (see test_checkout for the test against the real ``payment_attempt_start``)."""
    calls: list[dict[str, Any]] = []

    def fake(*, order: Any) -> None:
        calls.append({"order": order})
        attempt_make(order=order, state=PaymentAttempt.State.QUEUED)
        return None

    monkeypatch.setattr(views, "payment_start", fake)
    return calls


def put_in_cart(client: Client, quantities: dict[int, int]) -> None:
    session = client.session
    session[CART_SESSION_KEY] = {str(pid): qty for pid, qty in quantities.items()}
    session.save()
